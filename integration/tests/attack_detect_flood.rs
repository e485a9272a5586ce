//! A local user cannot flood the agent with distinct model-file names
//! (issue #19): past the per-process cap they are counted into one
//! aggregate finding, the agent's memory stays bounded, and other
//! processes are still reported. Runs as root.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::alert_filter::pid_of;
use vigil_integration::policy_fixture::{
    python_copy, write_gguf, write_signed_bundle, HOLD_MODEL_OPEN,
};
use vigil_integration::unprivileged::{python_as_nobody, shared_dir};
use vigil_integration::{privileged, python_opens, wait_for, Agent, ControlPlane, Killed};
use vigil_policy::SigningKey;
use vigil_proto::types::v1::{Alert, Finding, SignalKind};

/// Distinct model-file names the flood creates.
const FLOOD: u32 = 20_000;
/// Objects per (process, signal) reported one by one (the agent's default).
const CAP: usize = 64;

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The count an aggregate finding states: "... opened N model files; ...".
fn stated_count(summary: &str) -> Option<u64> {
    let rest = &summary[summary.find(" opened ")? + " opened ".len()..];
    rest.split(' ').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_model_file_names_is_counted_not_reported_one_by_one() {
    if !privileged("a_flood_of_model_file_names_is_counted_not_reported_one_by_one") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let agent = Agent::start(&tmp.path().join("agent"), &cp.endpoint(), "attack-flood").await;
    let agent_pid = agent.daemon.id();
    let dir = shared_dir(tmp.path(), "flood");
    // Settle, then measure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = vm_rss_kib(agent_pid);

    // An unprivileged user creates (and so opens) 20,000 distinct names.
    let mut flood = python_as_nobody(&format!(
        "import sys\nfor i in range({FLOOD}):\n    open(f'{{sys.argv[1]}}/m{{i}}.onnx', 'w').close()"
    ))
    .arg(&dir)
        .spawn()
        .expect("setpriv and python3");
    let flood_pid = flood.id();
    let status = flood.wait().unwrap();
    assert!(status.success(), "the flood ran: {status}");

    // Another process's model open is still reported.
    let model = tmp.path().join("unrelated.gguf");
    std::fs::write(&model, b"GGUF\x03\x00\x00\x00").unwrap();
    let other = python_opens(&model);
    wait_for(
        "the unrelated model open",
        Duration::from_secs(30),
        || async {
            cp.alerts().await.into_iter().find(|a| {
                pid_of(a) == other && a.finding.as_ref().unwrap().signal() == SignalKind::ModelFile
            })
        },
    )
    .await;

    // The aggregate, sent again at the flood's exit, states the count.
    let counted = wait_for(
        "the flood's aggregate finding",
        Duration::from_secs(30),
        || async {
            cp.alerts()
                .await
                .iter()
                .filter(|a| pid_of(a) == flood_pid)
                .filter_map(|a| stated_count(&a.finding.as_ref().unwrap().summary))
                .max()
                .filter(|n| *n >= u64::from(FLOOD) / 2)
        },
    )
    .await;
    assert!(counted <= u64::from(FLOOD), "stated {counted}");
    // Let anything still in flight arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts = cp.alerts().await;
    let of_flood: Vec<&Alert> = alerts.iter().filter(|a| pid_of(a) == flood_pid).collect();
    assert!(
        of_flood.len() <= CAP + 5,
        "{} alerts for the flooding process (cap {CAP}, plus its aggregates)",
        of_flood.len()
    );
    let aggregates = of_flood
        .iter()
        .filter(|a| a.finding.as_ref().unwrap().summary.starts_with("flood:"))
        .count();
    assert!(aggregates >= 1, "an aggregate finding says the cap was hit");

    let rss_after = vm_rss_kib(agent_pid);
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    assert!(
        growth_mib < 64,
        "the agent grew by {growth_mib} MiB ({rss_before} kB -> {rss_after} kB)"
    );
}

/// Processes the per-user flood forks, and distinct names each opens.
const FORKS: u32 = 50;
const NAMES_PER_FORK: u32 = 100;
/// Objects per (uid, signal) reported one by one (the agent's default:
/// 4 × the per-process cap).
const UID_CAP: usize = 4 * CAP;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_by_many_processes_of_one_user_is_capped_per_user() {
    if !privileged("a_flood_by_many_processes_of_one_user_is_capped_per_user") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let _agent = Agent::start(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "attack-uid-flood",
    )
    .await;
    let dir = shared_dir(tmp.path(), "uid-flood");

    // Under the per-process cap alone, 50 processes × 64 = 3,200 findings.
    let mut flood = python_as_nobody(&format!(
        "import os, sys\n\
         for p in range({FORKS}):\n\
         \x20   if os.fork() == 0:\n\
         \x20       for i in range({NAMES_PER_FORK}):\n\
         \x20           open(f'{{sys.argv[1]}}/p{{p}}-{{i}}.onnx', 'w').close()\n\
         \x20       os._exit(0)\n\
         \x20   os.wait()\n"
    ))
    .arg(&dir)
    .spawn()
    .expect("setpriv and python3");
    assert!(flood.wait().unwrap().success(), "the flood ran");

    let of_nobody = |alerts: &[Alert]| -> Vec<Alert> {
        alerts
            .iter()
            .filter(|a| {
                let f = a.finding.as_ref().unwrap();
                f.signal() == SignalKind::ModelFile
                    && f.process.as_ref().is_some_and(|p| p.uid == 65534)
            })
            .cloned()
            .collect()
    };
    // The user's aggregate, sent again as its processes exit, names the
    // uid and counts nearly everything past the cap.
    let expected = u64::from(FORKS * NAMES_PER_FORK) - UID_CAP as u64 - 1000;
    let summary = wait_for(
        "the user's aggregate finding",
        Duration::from_secs(60),
        || async {
            of_nobody(&cp.alerts().await)
                .into_iter()
                .map(|a| a.finding.unwrap().summary)
                .filter(|s| s.starts_with("flood: uid 65534 "))
                .find(|s| stated_count(s).is_some_and(|n| n >= expected))
        },
    )
    .await;
    assert!(summary.contains("busiest: pid "), "{summary}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts = of_nobody(&cp.alerts().await);
    let one_by_one = alerts
        .iter()
        .filter(|a| !a.finding.as_ref().unwrap().summary.starts_with("flood:"))
        .count();
    // Past the user's cap each process's first is still its own finding
    // (a new process's model load is never hidden in the aggregate).
    assert!(
        one_by_one <= UID_CAP + FORKS as usize,
        "{one_by_one} findings reported one by one for uid 65534 (cap {UID_CAP}, plus one per process)"
    );
    // Each process's first, the user's aggregate again as each exits.
    assert!(
        alerts.len() <= UID_CAP + 2 * FORKS as usize + 10,
        "{} alerts for uid 65534",
        alerts.len()
    );
}

/// Decoy processes that spend the per-user cap (4 × 64 = 256) with
/// distinct GGUF-headed files, then fill the aggregate's "busiest" list.
const DECOYS: &str = "import os, sys\n\
hdr = b'GGUF\\x03\\x00\\x00\\x00' + b'\\x00' * 56\n\
def decoy(prefix, n):\n\
\x20   for i in range(n):\n\
\x20       p = f'{sys.argv[1]}/{prefix}_{i}.gguf'\n\
\x20       with open(p, 'wb') as f: f.write(hdr)\n\
\x20       os.close(os.open(p, os.O_RDONLY))\n\
for k in range(5):\n\
\x20   if os.fork() == 0:\n\
\x20       decoy(f'w{k}', 60)\n\
\x20       os._exit(0)\n\
\x20   os.wait()\n\
for k in range(6):\n\
\x20   if os.fork() == 0:\n\
\x20       decoy(f'x{k}', 5)\n\
\x20       os._exit(0)\n\
\x20   os.wait()\n";

/// Kills the real loader, by its name; reports every other model file.
const KILL_THE_LOADER: &str = "id: test.flood-loader\ndescription: d\nseverity: critical\nwhen: [model_file]\ncondition: process.name == \"secret-loader\"\naction: kill\n---\nid: test.model-files\ndescription: d\nseverity: high\nwhen: [model_file]\n";

/// Issue #19 (review H1): a user spends the per-user cap on decoys, then a
/// new process loads the real model. The load is still a finding naming
/// the loader and the model, and a kill rule kills the loader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_load_after_a_users_decoy_flood_is_named_and_killed() {
    if !privileged("a_model_load_after_a_users_decoy_flood_is_named_and_killed") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let bundle = tmp.path().join("bundle.json");
    write_signed_bundle(&bundle, &key, 1, KILL_THE_LOADER);
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "attack-flood-cover",
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
        ],
    )
    .await;
    let dir = shared_dir(tmp.path(), "flood-cover");
    let mut decoys = python_as_nobody(DECOYS)
        .arg(&dir)
        .spawn()
        .expect("setpriv and python3");
    assert!(decoys.wait().unwrap().success(), "the decoys ran");
    // The user's cap is spent: its aggregate is out.
    wait_for(
        "the user's aggregate finding",
        Duration::from_secs(30),
        || async {
            cp.alerts().await.into_iter().find(|a| {
                a.finding
                    .as_ref()
                    .unwrap()
                    .summary
                    .starts_with("flood: uid 65534 ")
            })
        },
    )
    .await;

    // A new process of the same user loads the real model.
    let real = dir.join("llama-3-8b-secret.gguf");
    write_gguf(&real);
    let loader = python_copy(&dir, "secret-loader");
    let mut loader = Killed(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&loader)
            .args(["-c", HOLD_MODEL_OPEN])
            .arg(&real)
            .stdout(Stdio::null())
            .spawn()
            .expect("setpriv and the loader"),
    );
    let loader_pid = loader.0.id();
    let real_path = real.to_str().unwrap().to_string();
    let finding = wait_for(
        "a finding naming the loader and the model",
        Duration::from_secs(30),
        || async {
            cp.alerts().await.into_iter().find_map(|a| {
                let f = a.finding.unwrap();
                (pid_of_finding(&f) == loader_pid
                    && f.signal() == SignalKind::ModelFile
                    && f.file.as_ref().is_some_and(|o| o.path == real_path)
                    && !f.summary.starts_with("flood:"))
                .then_some(f)
            })
        },
    )
    .await;
    assert_eq!(finding.rule_id, "test.flood-loader", "{finding:?}");
    let status = wait_for("the loader killed", Duration::from_secs(30), || {
        let status = loader.0.try_wait().unwrap();
        async move { status }
    })
    .await;
    assert_eq!(status.signal(), Some(9), "{status:?}");
}

fn pid_of_finding(f: &Finding) -> u32 {
    f.process.as_ref().map_or(0, |p| p.pid)
}
