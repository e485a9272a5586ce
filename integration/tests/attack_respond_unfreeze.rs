//! Issue #19, the respond stage under attack: whoever reaches the control
//! plane's port asks it to thaw a process a freeze rule froze. An unfreeze
//! is an admin's signed order (`vigilctl agent unfreeze --key`): the agent
//! carries out only an order a trusted policy key signed, for itself, not
//! expired and not seen before, and says what became of every order in a
//! finding; the control plane, when it has trusted keys, refuses a bad
//! order before it reaches an agent. An order names the process by pid
//! and start time (the freeze finding says both): one for another start
//! time (a pid recycled and frozen again) is refused. Root (a freeze rule).

use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::policy_fixture::python_copy;
use vigil_integration::{
    cgroup2_mount, free_port, privileged, wait_for, Agent, ControlPlane, Killed,
};
use vigil_policy::{PolicySource, SigningKey};
use vigil_proto::admin::v1 as admin_pb;

const RULES: &str = "id: test.freeze\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.name == \"unfreeze-me\"\naction: freeze\n";
const AGENT: &str = "unfreeze-host";
const UNFREEZE_RULE: &str = "vigil.respond.unfreeze";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// When `pid` started, in clock ticks since boot (field 22 of
/// /proc/PID/stat): what an unfreeze order names.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    after_name.split(' ').nth(19).unwrap().parse().unwrap()
}

/// The summaries of the agent's unfreeze findings, oldest first.
async fn unfreeze_summaries(cp: &ControlPlane) -> Vec<String> {
    cp.alerts()
        .await
        .into_iter()
        .filter_map(|a| a.finding)
        .filter(|f| f.rule_id == UNFREEZE_RULE)
        .map(|f| f.summary)
        .collect()
}

/// Sends `request`, which the control plane (no trusted keys) passes on,
/// and waits for the agent's `want`-th unfreeze finding: a refusal for `why`.
async fn refused(
    cp: &ControlPlane,
    pid: u32,
    want: &mut usize,
    request: admin_pb::UnfreezeRequest,
    why: &str,
) {
    *want += 1;
    cp.admin()
        .await
        .unfreeze(request)
        .await
        .expect("the control plane (no trusted keys) passes the order on");
    let n = *want;
    let summaries = wait_for(
        &format!("the agent's refusal ({why})"),
        Duration::from_secs(15),
        || async {
            let s = unfreeze_summaries(cp).await;
            (s.len() >= n).then_some(s)
        },
    )
    .await;
    let summary = &summaries[n - 1];
    assert!(
        summary.contains(&format!("unfreeze of pid {pid}"))
            && summary.contains("REFUSED")
            && summary.contains(why),
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_fresh_signed_unfreeze_for_this_agent_thaws_and_only_once() {
    if !privileged("only_a_fresh_signed_unfreeze_thaws") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let bundle = tmp.path().join("bundle.json");
    let files: PolicySource = [("rules.yaml".to_string(), RULES.to_string())].into();
    std::fs::write(&bundle, key.sign(1, files).to_json()).unwrap();
    // The control plane has no trusted keys: it passes every order on, and
    // the agent alone decides.
    let cp = ControlPlane::start(&tmp.path().join("cp"), free_port());
    cp.wait_leader().await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        AGENT,
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
        ],
    )
    .await;
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("m.gguf");
    std::fs::write(
        &model,
        b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    )
    .unwrap();
    let offender = python_copy(&dir, "unfreeze-me");
    let hold = "import sys, time\nopen(sys.argv[1], 'rb').read(4)\ntime.sleep(120)\n";
    let frozen = Killed(
        Command::new(&offender)
            .args(["-c", hold])
            .arg(&model)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = frozen.0.id();
    let start = start_time(pid);
    let events = cgroup2_mount().join(format!("vigil/frozen-{pid}/cgroup.events"));
    let freeze_state = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("frozen "))
            .unwrap_or("")
            .to_string()
    };
    // Frozen, and the agent's session up (its outcome reached the control plane).
    let freeze_summary = wait_for("the freeze reported", Duration::from_secs(30), || async {
        let reported = cp
            .alerts()
            .await
            .into_iter()
            .filter_map(|a| a.finding)
            .find(|f| f.action == "freeze" && f.summary.contains(&format!("froze pid {pid} ")));
        reported
            .filter(|_| freeze_state() == "frozen 1")
            .map(|f| f.summary)
    })
    .await;
    // The operator copies the start time from the freeze finding.
    assert!(
        freeze_summary.contains(&format!("start time {start};")),
        "{freeze_summary}"
    );

    let mut admin = cp.admin().await;
    let mut refusals = 0;
    // Unsigned (a raw AdminService call).
    refused(
        &cp,
        pid,
        &mut refusals,
        admin_pb::UnfreezeRequest {
            agent: AGENT.into(),
            pid,
            ..Default::default()
        },
        "not signed",
    )
    .await;
    assert_eq!(freeze_state(), "frozen 1", "thawed by an unsigned order");
    // Signed by a key the agent does not trust.
    let stranger = SigningKey::generate().sign_unfreeze(AGENT, pid, start, unix_now() + 300);
    refused(
        &cp,
        pid,
        &mut refusals,
        stranger.into(),
        "not a trusted policy key",
    )
    .await;
    assert_eq!(freeze_state(), "frozen 1", "thawed by an unknown key");
    // Expired.
    let expired = key.sign_unfreeze(AGENT, pid, start, unix_now() - 60);
    refused(&cp, pid, &mut refusals, expired.into(), "expired").await;
    assert_eq!(freeze_state(), "frozen 1", "thawed by an expired order");
    // Changed after it was signed (another pid).
    let mut changed =
        admin_pb::UnfreezeRequest::from(key.sign_unfreeze(AGENT, 1, start, unix_now() + 300));
    changed.pid = pid;
    refused(&cp, pid, &mut refusals, changed, "does not verify").await;
    assert_eq!(freeze_state(), "frozen 1", "thawed by a changed order");
    // Signed, for this pid, but for another process than the frozen one
    // (one that had the pid before, say): refused.
    let other_process = key.sign_unfreeze(AGENT, pid, start - 1, unix_now() + 300);
    refused(
        &cp,
        pid,
        &mut refusals,
        other_process.into(),
        &format!("the frozen one started at {start}"),
    )
    .await;
    assert_eq!(
        freeze_state(),
        "frozen 1",
        "thawed by an order for another start time"
    );
    // Changed after it was signed (another start time).
    let mut changed =
        admin_pb::UnfreezeRequest::from(key.sign_unfreeze(AGENT, pid, start - 1, unix_now() + 300));
    changed.start_time = start;
    refused(&cp, pid, &mut refusals, changed, "does not verify").await;
    assert_eq!(freeze_state(), "frozen 1", "thawed by a changed order");

    // The valid one thaws.
    let valid =
        admin_pb::UnfreezeRequest::from(key.sign_unfreeze(AGENT, pid, start, unix_now() + 300));
    admin.unfreeze(valid.clone()).await.unwrap();
    wait_for("thawed", Duration::from_secs(15), || async {
        (freeze_state() == "frozen 0").then_some(())
    })
    .await;
    let done = wait_for(
        "the agent's unfreeze finding",
        Duration::from_secs(15),
        || async {
            let s = unfreeze_summaries(&cp).await;
            (s.len() > refusals).then_some(s)
        },
    )
    .await;
    assert!(
        done[refusals].contains(&format!("unfroze pid {pid}")),
        "{}",
        done[refusals]
    );
    refusals += 1;
    // Replayed: refused the second time.
    refused(&cp, pid, &mut refusals, valid, "a replay").await;
    drop(frozen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_with_trusted_keys_refuses_a_bad_unfreeze_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let cp = ControlPlane::start_with(
        &tmp.path().join("cp"),
        free_port(),
        &["--trusted-policy-key", &key.public_hex()],
    );
    cp.wait_leader().await;
    let mut admin = cp.admin().await;
    let now = unix_now();
    for (request, why) in [
        (
            admin_pb::UnfreezeRequest {
                agent: AGENT.into(),
                pid: 4242,
                ..Default::default()
            },
            "not signed",
        ),
        (
            SigningKey::generate()
                .sign_unfreeze(AGENT, 4242, 1, now + 300)
                .into(),
            "not a trusted policy key",
        ),
        (
            key.sign_unfreeze(AGENT, 4242, 1, now - 60).into(),
            "expired",
        ),
    ] {
        let status = admin.unfreeze(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("unfreeze refused") && status.message().contains(why),
            "{status:?}"
        );
    }
    // A good order passes the check (and then finds no such agent).
    let status = admin
        .unfreeze(admin_pb::UnfreezeRequest::from(key.sign_unfreeze(
            AGENT,
            4242,
            1,
            now + 300,
        )))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
}

const REFREEZE_RULES: &str = "id: test.refreeze\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.name == \"refreeze-me\"\naction: freeze\n";
const REFREEZE_AGENT: &str = "refreeze-agent-id";

/// Opens argv[1] (a model), then, once argv[3] exists, argv[2]; holds on.
const OPEN_TWICE: &str = "import os, sys, time\nopen(sys.argv[1], 'rb').read(4)\nwhile not os.path.exists(sys.argv[3]):\n    time.sleep(0.05)\nopen(sys.argv[2], 'rb').read(4)\ntime.sleep(120)\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_spent_before_a_restart_stays_spent_and_a_hostname_names_no_agent() {
    if !privileged("an_order_spent_before_a_restart_stays_spent") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let bundle = tmp.path().join("bundle.json");
    let files: PolicySource = [("rules.yaml".to_string(), REFREEZE_RULES.to_string())].into();
    std::fs::write(&bundle, key.sign(1, files).to_json()).unwrap();
    let cp = ControlPlane::start(&tmp.path().join("cp"), free_port());
    cp.wait_leader().await;
    let flags = [
        "--trusted-policy-key".to_string(),
        key.public_hex(),
        "--policy-bundle".to_string(),
        bundle.to_str().unwrap().to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let data = tmp.path().join("agent");
    let agent = Agent::start_with(&data, &cp.endpoint(), REFREEZE_AGENT, &flags).await;
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let header = b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let (first, second) = (dir.join("m1.gguf"), dir.join("m2.gguf"));
    std::fs::write(&first, header).unwrap();
    std::fs::write(&second, header).unwrap();
    let go = dir.join("go");
    let offender = python_copy(&dir, "refreeze-me");
    let frozen = Killed(
        Command::new(&offender)
            .args(["-c", OPEN_TWICE])
            .args([&first, &second, &go])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = frozen.0.id();
    let events = cgroup2_mount().join(format!("vigil/frozen-{pid}/cgroup.events"));
    let freeze_state = || {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("frozen "))
            .unwrap_or("")
            .to_string()
    };
    let freezes = || async {
        cp.alerts()
            .await
            .into_iter()
            .filter_map(|a| a.finding)
            .filter(|f| f.action == "freeze" && f.summary.contains(&format!("froze pid {pid} ")))
            .count()
    };
    wait_for("the first freeze", Duration::from_secs(30), || async {
        (freezes().await >= 1 && freeze_state() == "frozen 1").then_some(())
    })
    .await;

    // An order naming the host by its hostname: every agent with that
    // hostname would take it. Refused.
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let mut admin = cp.admin().await;
    let mut answered = 0;
    if hostname != REFREEZE_AGENT {
        refused(
            &cp,
            pid,
            &mut answered,
            key.sign_unfreeze(&hostname, pid, start_time(pid), unix_now() + 300)
                .into(),
            "not this one",
        )
        .await;
        assert_eq!(freeze_state(), "frozen 1", "thawed by a hostname's order");
    }

    // A good order thaws.
    let valid = admin_pb::UnfreezeRequest::from(key.sign_unfreeze(
        REFREEZE_AGENT,
        pid,
        start_time(pid),
        unix_now() + 300,
    ));
    admin.unfreeze(valid.clone()).await.unwrap();
    wait_for("thawed", Duration::from_secs(15), || async {
        (freeze_state() == "frozen 0").then_some(())
    })
    .await;
    answered += 1;
    wait_for("the thaw's finding", Duration::from_secs(15), || async {
        (unfreeze_summaries(&cp).await.len() >= answered).then_some(())
    })
    .await;

    // The agent restarts; the process offends again and is frozen again.
    drop(agent);
    let _agent = Agent::start_with(&data, &cp.endpoint(), REFREEZE_AGENT, &flags).await;
    std::fs::write(&go, b"").unwrap();
    wait_for("the second freeze", Duration::from_secs(30), || async {
        (freezes().await >= 2 && freeze_state() == "frozen 1").then_some(())
    })
    .await;
    // The order spent before the restart, replayed: refused, still frozen.
    refused(&cp, pid, &mut answered, valid, "a replay").await;
    assert_eq!(freeze_state(), "frozen 1", "thawed by a replayed order");
    drop(frozen);
}
