//! Policy enforcement on the real kernel and real cgroups: signed bundles
//! whose rules kill, freeze or refuse GPU devices; an approved workload
//! left alone; and bundles that must be refused (tampered, unknown signer,
//! bad CEL, unknown field) while the previous one stays in force. Root.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::policy_fixture::python_copy;
use vigil_integration::{
    cgroup2_mount, free_port, privileged, sha256_file, wait_for, Agent, ControlPlane, Killed,
};
use vigil_policy::{PolicySource, SigningKey};
use vigil_proto::types::v1::Alert;

const POLICY: &str = r#"id: test.kill-renamed-python
description: a renamed interpreter loading weights is killed
severity: critical
when: [model_file]
condition: process.name == "logrotate-helper"
action: kill
---
id: test.freeze
description: frozen until an operator looks
severity: high
when: [model_file]
condition: process.name == "freeze-me"
action: freeze
---
id: test.deny-gpu
description: no GPU for this one
severity: high
when: [model_file]
condition: process.name == "deny-gpu-me"
action: deny_gpu
---
lists:
  blocked: ["127.0.0.2"]
---
id: test.block-egress
description: no traffic to the blocked hosts
severity: high
when: [model_file]
condition: process.name == "egress-me"
action: block_egress
hosts: blocked
---
id: test.everything-else
description: the rest is reported
severity: medium
when: [model_file, ai_runtime, gpu_device, gpu_use, ai_egress, ai_serving]
"#;

fn policy(text: &str) -> PolicySource {
    [("rules.yaml".to_string(), text.to_string())].into()
}

fn gguf(path: &Path) {
    std::fs::write(
        path,
        b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    )
    .unwrap();
}

fn rule_alerts(alerts: &[Alert], pid: u32) -> Vec<&Alert> {
    alerts
        .iter()
        .filter(|a| a.finding.as_ref().unwrap().process.as_ref().unwrap().pid == pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_freeze_and_deny_gpu_rules_act_and_approved_workloads_are_untouched() {
    if !privileged("kill_freeze_and_deny_gpu_rules_act") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(dir.join("approved")).unwrap();
    let key = SigningKey::generate();
    let bundle = tmp.path().join("bundle.json");
    std::fs::write(&bundle, key.sign(1, policy(POLICY)).to_json()).unwrap();

    // The approved twin: the same interpreter, one byte longer (another
    // digest), under the same name.
    let approved = python_copy(&dir.join("approved"), "logrotate-helper");
    let mut bytes = std::fs::read(&approved).unwrap();
    bytes.push(0);
    std::fs::write(&approved, bytes).unwrap();
    let approved_digest = sha256_file(&approved);

    let cp = ControlPlane::start(&tmp.path().join("cp"), free_port());
    cp.wait_leader().await;
    let agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "enforce-host",
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
            "--approved-exe-sha256",
            &approved_digest,
        ],
    )
    .await;
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("policy bundle active"), "{log}");

    // kill: the renamed interpreter maps GGUF and would sleep a minute.
    let model = dir.join("cache.gguf");
    gguf(&model);
    let hold = "import sys, time\nf = open(sys.argv[1], 'rb')\nf.read(4)\nprint('opened', flush=True)\ntime.sleep(60)\n";
    let twin = Killed(
        Command::new(&approved)
            .args(["-c", hold])
            .arg(&model)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let helper = python_copy(&dir, "logrotate-helper");
    let started = std::time::Instant::now();
    let mut victim = Command::new(&helper)
        .args(["-c", hold])
        .arg(&model)
        .spawn()
        .unwrap();
    let status = victim.wait().unwrap();
    let lived = started.elapsed();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status:?}");
    let victim_pid = victim.id();
    let alerts = wait_for("the kill's alerts", Duration::from_secs(15), || async {
        let all = cp.alerts().await;
        let mine: Vec<Alert> = rule_alerts(&all, victim_pid).into_iter().cloned().collect();
        (mine.len() >= 2).then_some(mine)
    })
    .await;
    let texts: Vec<String> = alerts
        .iter()
        .map(|a| a.finding.as_ref().unwrap().summary.clone())
        .collect();
    assert!(
        alerts
            .iter()
            .all(|a| a.finding.as_ref().unwrap().rule_id == "test.kill-renamed-python"),
        "{texts:?}"
    );
    let action = texts
        .iter()
        .find(|t| t.starts_with("action kill"))
        .unwrap_or_else(|| panic!("no action alert: {texts:?}"));
    assert!(
        action.contains(&format!("killed pid {victim_pid}")),
        "{action}"
    );
    eprintln!("victim lived {lived:?}; {action}");

    // The approved twin did the same and is untouched.
    let mut line = String::new();
    let mut twin = twin;
    std::io::BufReader::new(twin.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "opened");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        twin.0.try_wait().unwrap().is_none(),
        "the approved twin was touched"
    );
    assert!(
        rule_alerts(&cp.alerts().await, twin.0.id()).is_empty(),
        "the approved twin made alerts"
    );

    // freeze: the process stays frozen (cgroup.events says so).
    let freezer = python_copy(&dir, "freeze-me");
    let frozen = Killed(
        Command::new(&freezer)
            .args(["-c", hold])
            .arg(&model)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let fpid = frozen.0.id();
    let events = cgroup2_mount().join(format!("vigil/frozen-{fpid}/cgroup.events"));
    wait_for("the freeze", Duration::from_secs(15), || async {
        let e = std::fs::read_to_string(&events).ok()?;
        e.lines().any(|l| l == "frozen 1").then_some(())
    })
    .await;
    let cgroup = std::fs::read_to_string(format!("/proc/{fpid}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("0::/vigil/frozen-{fpid}")),
        "{cgroup}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let still = std::fs::read_to_string(&events).unwrap();
    assert!(
        still.lines().any(|l| l == "frozen 1"),
        "thawed by itself: {still}"
    );

    // deny_gpu: a later open of a GPU-like device node (major 195) fails
    // with EPERM; before the rule it fails with ENXIO (no driver here).
    let node_dir = dir.join("dev");
    std::fs::create_dir_all(&node_dir).unwrap();
    let node = node_dir.join("nvidia0");
    let mknod = Command::new("mknod")
        .arg(&node)
        .args(["c", "195", "0"])
        .status()
        .unwrap();
    assert!(mknod.success());
    let probe = "import errno, os, sys, time\ndef err():\n    try:\n        os.close(os.open(sys.argv[2], os.O_RDWR))\n        return 'opened'\n    except OSError as e:\n        return errno.errorcode[e.errno]\nprint('before', err(), flush=True)\nf = open(sys.argv[1], 'rb')\nfor _ in range(250):\n    e = err()\n    if e == 'EPERM':\n        break\n    time.sleep(0.02)\nprint('after', e, flush=True)\n";
    let denier = python_copy(&dir, "deny-gpu-me");
    let out = Command::new(&denier)
        .args(["-c", probe])
        .arg(&model)
        .arg(&node)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("before ENXIO"), "{text}");
    assert!(text.contains("after EPERM"), "{text}");

    // block_egress: datagrams to 127.0.0.2 fail with EPERM once the rule
    // acts; 127.0.0.1 is still reachable from the same process. (Sockets
    // belong to the cgroup they were created in: new ones are blocked.)
    let egress = "import socket, sys, time\ndef send(ip):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    try:\n        s.sendto(b'x', (ip, 9))\n        return 'sent'\n    except PermissionError:\n        return 'EPERM'\nprint('before', send('127.0.0.2'), flush=True)\nopen(sys.argv[1], 'rb').read(4)\nfor _ in range(250):\n    r = send('127.0.0.2')\n    if r == 'EPERM':\n        break\n    time.sleep(0.02)\nprint('after', r, 'other', send('127.0.0.1'), flush=True)\n";
    let sender = python_copy(&dir, "egress-me");
    let out = Command::new(&sender)
        .args(["-c", egress])
        .arg(&model)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("before sent"), "{text}");
    assert!(text.contains("after EPERM other sent"), "{text}");
    drop(frozen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bundles_name_their_cause_and_the_previous_bundle_stays_in_force() {
    if !privileged("refused_bundles_name_their_cause") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let key = SigningKey::generate();
    let good = key.sign(1, policy(POLICY));
    let write = |name: &str, bytes: Vec<u8>| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let good_path = write("good.json", good.to_json());

    // One byte of a rule changed after signing.
    let v2 = key.sign(2, policy(POLICY)).to_json();
    let text = String::from_utf8(v2).unwrap();
    let tampered = text.replacen("action: kill", "action: kilL", 1);
    assert_ne!(tampered, text);
    let bad: Vec<(&str, PathBuf, String)> = vec![
        (
            "tampered",
            write("tampered.json", tampered.into_bytes()),
            "policy bundle version 2 refused: the signature does not verify".to_string(),
        ),
        (
            "unknown signer",
            write("stranger.json", SigningKey::generate().sign(3, policy(POLICY)).to_json()),
            "which is not a trusted policy key".to_string(),
        ),
        (
            "CEL syntax error",
            write(
                "cel.json",
                key.sign(
                    4,
                    policy("id: bad.cel\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.name ==\n"),
                )
                .to_json(),
            ),
            "it does not compile: rules.yaml:5:".to_string(),
        ),
        (
            "unknown field",
            write(
                "field.json",
                key.sign(
                    5,
                    policy("id: bad.field\ndescription: d\nseverity: high\nwhen: [model_file]\nactoin: kill\n"),
                )
                .to_json(),
            ),
            "rules.yaml:5:1: unknown field `actoin`".to_string(),
        ),
    ];

    let cp = ControlPlane::start(&tmp.path().join("cp"), free_port());
    cp.wait_leader().await;
    let agent_dir = tmp.path().join("agent");
    let start = |bundle: &Path| {
        let bundle = bundle.to_str().unwrap().to_string();
        let key = key.public_hex();
        let agent_dir = agent_dir.clone();
        let endpoint = cp.endpoint();
        async move {
            Agent::start_with(
                &agent_dir,
                &endpoint,
                "bundle-host",
                &["--trusted-policy-key", &key, "--policy-bundle", &bundle],
            )
            .await
        }
    };
    let mut agent = start(&good_path).await;
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("policy bundle active version=1"), "{log}");
    for (what, path, expected) in &bad {
        let status = agent.daemon.terminate();
        assert!(
            status.success(),
            "{what}: the agent stops cleanly ({status:?})\n{}",
            std::fs::read_to_string(&agent.log).unwrap_or_default()
        );
        drop(agent);
        let log_len = std::fs::metadata(agent_dir.with_extension("log"))
            .map(|m| m.len())
            .unwrap_or(0) as usize;
        agent = start(path).await;
        let log = std::fs::read_to_string(&agent.log).unwrap();
        let this_run = &log[log_len.min(log.len())..];
        assert!(
            this_run.contains("policy bundle restored version=1"),
            "{what}: the previous bundle is restored first\n{this_run}"
        );
        let refusal = this_run
            .lines()
            .find(|l| l.contains("policy bundle refused"))
            .unwrap_or_else(|| panic!("{what}: no refusal in\n{this_run}"));
        assert!(refusal.contains(expected.as_str()), "{what}: {refusal}");
        eprintln!("{what}: {refusal}");
    }

    // After four refusals, version 1 still kills.
    let model = dir.join("weights.gguf");
    gguf(&model);
    let helper = python_copy(&dir, "logrotate-helper");
    let status = Command::new(&helper)
        .args([
            "-c",
            "import sys, time\nopen(sys.argv[1], 'rb').read(4)\ntime.sleep(60)\n",
        ])
        .arg(&model)
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(9),
        "version 1 still enforced: {status:?}"
    );
}

fn vigilctl(cp: &ControlPlane, args: &[&str]) -> (bool, String, String) {
    let out = cp.vigilctl(args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_policies_reach_the_agent_and_rollback_unfreeze_and_refusals_work() {
    if !privileged("pushed_policies_reach_the_agent") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(dir.join("policy")).unwrap();
    let key_file = tmp.path().join("admin.key");
    let out = Command::new(vigil_integration::binary("vigilctl"))
        .args(["policy", "keygen", "--out"])
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let cp = ControlPlane::start_with(
        &tmp.path().join("cp"),
        free_port(),
        &["--trusted-policy-key", &public],
    );
    cp.wait_leader().await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "push-host",
        &["--trusted-policy-key", &public],
    )
    .await;

    // v1: kill renamed interpreters. Signed with the CLI, pushed through raft.
    let sign_push = |version: u64, rules: &str| {
        std::fs::write(dir.join("policy/rules.yaml"), rules).unwrap();
        let bundle = tmp.path().join(format!("v{version}.json"));
        let (ok, _, err) = vigilctl(
            &cp,
            &[
                "policy",
                "sign",
                dir.join("policy").to_str().unwrap(),
                "--key",
                key_file.to_str().unwrap(),
                "--version",
                &version.to_string(),
                "--out",
                bundle.to_str().unwrap(),
            ],
        );
        assert!(ok, "{err}");
        let (ok, stdout, err) = vigilctl(&cp, &["policy", "push", bundle.to_str().unwrap()]);
        assert!(ok, "{err}");
        assert!(
            stdout.contains(&format!("policy version {version} is active")),
            "{stdout}"
        );
        bundle
    };
    let agent_on = |version: u64| {
        let cp = &cp;
        async move {
            wait_for(
                &format!("the agent on policy version {version}"),
                Duration::from_secs(15),
                || async {
                    let (_, show, _) = vigilctl(cp, &["agents", "show", "push-host"]);
                    show.contains(&format!("policy: version {version}\n"))
                        .then_some(())
                },
            )
            .await
        }
    };
    let v1 = sign_push(1, POLICY);
    agent_on(1).await;
    let model = dir.join("m.gguf");
    gguf(&model);
    let helper = python_copy(&dir, "logrotate-helper");
    let hold = "import sys, time\nopen(sys.argv[1], 'rb').read(4)\ntime.sleep(60)\n";
    let status = Command::new(&helper)
        .args(["-c", hold])
        .arg(&model)
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "v1 kills: {status:?}");

    // Refused at the control plane: a tampered bundle, one from another key.
    let text = std::fs::read_to_string(&v1)
        .unwrap()
        .replace("\"version\": 1", "\"version\": 9");
    let tampered = tmp.path().join("tampered.json");
    std::fs::write(&tampered, text).unwrap();
    let (ok, _, err) = vigilctl(&cp, &["policy", "push", tampered.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bundle refused: the signature does not verify"),
        "{err}"
    );
    let stranger = tmp.path().join("stranger.json");
    std::fs::write(
        &stranger,
        SigningKey::generate().sign(10, policy(POLICY)).to_json(),
    )
    .unwrap();
    let (ok, _, err) = vigilctl(&cp, &["policy", "push", stranger.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not a trusted policy key"), "{err}");

    // v2: freeze instead of kill; an operator unfreezes.
    sign_push(2, &POLICY.replace("action: kill", "action: freeze"));
    agent_on(2).await;
    let frozen = Killed(
        Command::new(&helper)
            .args(["-c", hold])
            .arg(&model)
            .spawn()
            .unwrap(),
    );
    let pid = frozen.0.id();
    let events = cgroup2_mount().join(format!("vigil/frozen-{pid}/cgroup.events"));
    let state = |want: &'static str| {
        let events = events.clone();
        async move {
            wait_for(want, Duration::from_secs(15), || async {
                let e = std::fs::read_to_string(&events).ok()?;
                e.lines().any(|l| l == want).then_some(())
            })
            .await
        }
    };
    state("frozen 1").await;
    // The start time, as the freeze finding says it (field 22 of stat).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start_time = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(19)
        .unwrap()
        .to_string();
    let (ok, _, err) = vigilctl(
        &cp,
        &[
            "agent",
            "unfreeze",
            "push-host",
            &pid.to_string(),
            "--start-time",
            &start_time.to_string(),
            "--key",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    state("frozen 0").await;
    drop(frozen);

    // Rollback to v1: a new version (3) with v1's rules, noted as such.
    let (ok, stdout, err) = vigilctl(
        &cp,
        &[
            "policy",
            "rollback",
            "1",
            "--key",
            key_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    assert!(
        stdout.contains("policy version 3 is active: the rules of version 1"),
        "{stdout}"
    );
    agent_on(3).await;
    let (_, list, _) = vigilctl(&cp, &["policy", "list"]);
    let active: Vec<&str> = list.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(active.len(), 1, "{list}");
    assert!(
        active[0].contains("v3") && active[0].contains("rollback to 1"),
        "{list}"
    );
    let (ok, verify, err) = vigilctl(&cp, &["audit", "verify"]);
    assert!(
        ok && verify.starts_with("audit chain intact"),
        "{verify}{err}"
    );
    let (_, audit, _) = vigilctl(&cp, &["audit", "list"]);
    for action in [
        "policy.push",
        "policy.rollback",
        "enforce.kill",
        "enforce.freeze",
        "agent.unfreeze",
    ] {
        assert!(
            audit.contains(action),
            "no {action} in the audit log:\n{audit}"
        );
    }
    let (_, diff, _) = vigilctl(&cp, &["policy", "diff", "2", "3"]);
    assert!(
        diff.contains("-action: freeze") && diff.contains("+action: kill"),
        "{diff}"
    );
    let status = Command::new(&helper)
        .args(["-c", hold])
        .arg(&model)
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "v3 (v1's rules) kills again: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_floods_findings_is_rolled_back_automatically() {
    if !privileged("a_bundle_that_floods_findings_is_rolled_back") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let cp = ControlPlane::start_with(
        &tmp.path().join("cp"),
        free_port(),
        &["--trusted-policy-key", &key.public_hex()],
    );
    cp.wait_leader().await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "flood-host",
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-auto-rollback-per-minute",
            "5",
        ],
    )
    .await;
    let push = |version: u64, rules: &str| {
        let path = tmp.path().join(format!("v{version}.json"));
        std::fs::write(&path, key.sign(version, policy(rules)).to_json()).unwrap();
        let (ok, _, err) = vigilctl(&cp, &["policy", "push", path.to_str().unwrap()]);
        assert!(ok, "{err}");
    };
    let on = |want: &'static str| {
        let cp = &cp;
        async move {
            wait_for(want, Duration::from_secs(15), || async {
                let (_, show, _) = vigilctl(cp, &["agents", "show", "flood-host"]);
                show.contains(want).then_some(show)
            })
            .await
        }
    };
    // v1 reports only model servers; v2 reports every model file.
    push(
        1,
        "id: quiet\ndescription: d\nseverity: high\nwhen: [ai_serving]\n",
    );
    on("policy: version 1\n").await;
    push(
        2,
        "id: loud\ndescription: d\nseverity: low\nwhen: [model_file]\n",
    );
    on("policy: version 2\n").await;
    let dir = tmp.path().join("models");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..8 {
        let m = dir.join(format!("m{i}.gguf"));
        gguf(&m);
        let status = Command::new("/bin/cat")
            .arg(&m)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    }
    let show = on("the last bundle was REFUSED: version 2 was rolled back automatically").await;
    assert!(show.contains("policy: version 1;"), "{show}");
    let alert = wait_for("the rollback alert", Duration::from_secs(15), || async {
        cp.alerts()
            .await
            .into_iter()
            .find(|a| a.finding.as_ref().unwrap().rule_id == "vigil.policy.auto-rollback")
    })
    .await;
    let summary = alert.finding.unwrap().summary;
    assert!(
        summary.contains("policy version 2 rolled back automatically to version 1"),
        "{summary}"
    );
    // The control plane still has 2 active, and offers it again on
    // reconnect: the agent does not take it back.
    let (_, list, _) = vigilctl(&cp, &["policy", "list"]);
    assert!(list.lines().any(|l| l.starts_with("* v2")), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_approved_through_the_control_plane_make_no_findings_until_revoked() {
    if !privileged("workloads_approved_through_the_control_plane") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    // A lab: the approvals below are unsigned.
    let cp = ControlPlane::start_with(&tmp.path().join("cp"), free_port(), &["--allow-unsigned"]);
    cp.wait_leader().await;
    let recorded = tmp.path().join("events.jsonl");
    let agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "approve-host",
        &["--record-events", recorded.to_str().unwrap()],
    )
    .await;
    let server = python_copy(&dir, "model-server");
    let open_model = |i: u32| {
        let m = dir.join(format!("m{i}.gguf"));
        gguf(&m);
        let mut child = Command::new(&server)
            .args(["-c", "import sys; open(sys.argv[1], 'rb').read(4)"])
            .arg(&m)
            .spawn()
            .unwrap();
        assert!(child.wait().unwrap().success());
        child.id()
    };
    let marker = |i: u32| {
        let m = dir.join(format!("marker{i}.gguf"));
        gguf(&m);
        let mut child = Command::new("/bin/cat")
            .arg(&m)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        assert!(child.wait().unwrap().success());
        child.id()
    };
    let alerts_for = |pid: u32| {
        let cp = &cp;
        async move { rule_alerts(&cp.alerts().await, pid).len() }
    };
    let logged = |needle: String| {
        let log = agent.log.clone();
        async move {
            wait_for(&needle.clone(), Duration::from_secs(15), || async {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                text.contains(&needle).then_some(())
            })
            .await
        }
    };

    let pid = open_model(1);
    wait_for(
        "the unapproved server's alert",
        Duration::from_secs(15),
        || async { (alerts_for(pid).await == 1).then_some(()) },
    )
    .await;

    let (ok, out, err) = vigilctl(
        &cp,
        &[
            "workload",
            "approve",
            "--exe",
            server.to_str().unwrap(),
            "--note",
            "the model server",
        ],
    );
    assert!(ok, "{err}");
    let id = out.split_whitespace().nth(2).unwrap().to_string();
    logged("approved workloads updated count=1".into()).await;
    let (_, list, _) = vigilctl(&cp, &["workload", "list"]);
    assert!(
        list.contains(&id) && list.contains(&sha256_file(&server)),
        "{list}"
    );

    let approved_pid = open_model(2);
    let m = marker(1);
    wait_for("the marker", Duration::from_secs(15), || async {
        (alerts_for(m).await == 1).then_some(())
    })
    .await;
    assert_eq!(
        alerts_for(approved_pid).await,
        0,
        "the approved server made an alert"
    );

    let (ok, _, err) = vigilctl(&cp, &["workload", "revoke", &id]);
    assert!(ok, "{err}");
    logged("approved workloads updated count=0".into()).await;
    let pid = open_model(3);
    wait_for(
        "the alert after the revocation",
        Duration::from_secs(15),
        || async { (alerts_for(pid).await == 1).then_some(()) },
    )
    .await;
    let (ok, _, err) = vigilctl(&cp, &["workload", "revoke", &id]);
    assert!(!ok && err.contains("no approved workload"), "{err}");

    // The recorded events replay against a policy directory.
    let pack = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default");
    let (ok, out, err) = vigilctl(
        &cp,
        &[
            "policy",
            "test",
            pack.to_str().unwrap(),
            "--events",
            recorded.to_str().unwrap(),
        ],
    );
    assert!(ok, "{err}");
    let fired = out
        .lines()
        .filter(|l| {
            l.contains("model_file") && l.contains("-> vigil.default.model-file high alert")
        })
        .count();
    assert!(fired >= 3, "{out}");
}
