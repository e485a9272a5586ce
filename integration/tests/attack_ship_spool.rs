//! Issue #19, the spool under attack: a flood of findings while the control
//! plane is away, or a disk filled by a local user, must not stop the agent
//! nor grow its spool without bound. The agent keeps the newest findings in
//! memory, says `spool-full` and how many it dropped in its heartbeats, sends
//! one alert per episode, and ships again once there is room.

use std::path::Path;
use std::time::Duration;

use vigil_integration::alert_filter::{is_about_pid, is_of_rule};
use vigil_integration::unprivileged::{python_as_nobody, shared_dir};
use vigil_integration::{free_port, privileged, python_opens, Agent, ControlPlane, Tmpfs};

const SPOOL_FULL_RULE: &str = "vigil.agent.spool-full";

/// Opens `n` distinct model files, each from its own python3 process; their pids.
fn open_models(dir: &Path, prefix: &str, n: usize) -> Vec<u32> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let model = dir.join(format!("{prefix}-{i}.gguf"));
            std::fs::write(&model, b"GGUF").unwrap();
            python_opens(&model)
        })
        .collect()
}

fn alive(agent: &mut Agent) -> bool {
    matches!(agent.daemon.child.try_wait(), Ok(None))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_with_the_control_plane_away_hits_the_quota_not_the_agent() {
    if !privileged("a_flood_with_the_control_plane_away_hits_the_quota_not_the_agent") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    // No control plane yet: every finding stays in the spool.
    let mut agent = Agent::start_with(
        &tmp.path().join("agent"),
        &endpoint,
        "quota-agent",
        &["--spool-max-findings", "4", "--spool-memory-findings", "3"],
    )
    .await;
    let models = tmp.path().join("models");
    let flood = open_models(&models, "flood", 12);
    agent
        .wait_for_log(
            "the agent to say spool-full",
            Duration::from_secs(30),
            "spool-full",
        )
        .await;
    assert!(alive(&mut agent), "the agent exited:\n{}", agent.log_text());

    // The control plane comes: the agent record says what was dropped, the
    // alert says the spool was full, and the findings held flow.
    let cp = ControlPlane::start(&tmp.path().join("cp"), port);
    cp.wait_leader().await;
    let summary = cp
        .wait_agent_summary(
            "a heartbeat counting dropped findings",
            Duration::from_secs(30),
            "quota-agent",
            |a| a.spool_dropped > 0,
        )
        .await;
    // 12 findings, 4 spooled, 3 held: at least 5 dropped (the spool-full
    // alert itself goes over the quota).
    assert!(summary.spool_dropped >= 5, "{summary:?}");
    let alerts = cp
        .wait_alerts_with("the spool-full alert", Duration::from_secs(30), |a| {
            is_of_rule(a, SPOOL_FULL_RULE)
        })
        .await;
    let spool_full_alerts = alerts
        .iter()
        .filter(|a| is_of_rule(a, SPOOL_FULL_RULE))
        .count();
    assert_eq!(spool_full_alerts, 1, "one alert per episode");
    // The first (spooled) and the last (held in memory) findings arrive.
    for pid in [flood[0], flood[11]] {
        cp.wait_alerts_with("a flood finding", Duration::from_secs(30), |a| {
            is_about_pid(a, pid)
        })
        .await;
    }
    // And the spool takes findings again: a new one is shipped, the
    // heartbeat no longer says spool-full.
    let after = open_models(&models, "after", 1)[0];
    cp.wait_alerts_with(
        "a finding after the episode",
        Duration::from_secs(30),
        |a| is_about_pid(a, after),
    )
    .await;
    cp.wait_agent_summary(
        "spool-full cleared",
        Duration::from_secs(30),
        "quota-agent",
        |a| !a.spool_full,
    )
    .await;
    assert!(alive(&mut agent), "the agent exited:\n{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_the_agent_and_it_recovers_when_space_returns() {
    if !privileged("a_full_disk_degrades_the_agent_and_it_recovers_when_space_returns") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    // The agent's data dir is a small tmpfs (its log lies beside it).
    let data = tmp.path().join("agent");
    let _fs = Tmpfs::mount(&data, "4m");
    let mut agent = Agent::start(&data, &cp.endpoint(), "disk-agent").await;
    let models = tmp.path().join("models");
    let before = open_models(&models, "before", 1)[0];
    cp.wait_alerts_with(
        "a finding before the disk fills",
        Duration::from_secs(30),
        |a| is_about_pid(a, before),
    )
    .await;

    // A local user fills the disk (here: all but 512 KiB of it).
    let filler = data.join("filler");
    {
        use std::io::Write;
        let st = nix::sys::statvfs::statvfs(&data).unwrap();
        let free = st.blocks_available() * st.fragment_size();
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let mut left = free.saturating_sub(512 << 10);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = f.sync_all();
    }
    let during = open_models(&models, "during", 5);
    let summary = cp
        .wait_agent_summary(
            "the agent record to say spool-full",
            Duration::from_secs(30),
            "disk-agent",
            |a| a.spool_full,
        )
        .await;
    eprintln!("while the disk is full: {summary:?}");
    assert!(alive(&mut agent), "the agent exited:\n{}", agent.log_text());

    // Space returns: the findings held in memory flow, and new ones too.
    std::fs::remove_file(&filler).unwrap();
    let after = open_models(&models, "after", 1)[0];
    for pid in during.iter().copied().chain([after]) {
        cp.wait_alerts_with(
            "a finding held while the disk was full",
            Duration::from_secs(30),
            |a| is_about_pid(a, pid),
        )
        .await;
    }
    let alerts = cp.alerts().await;
    assert_eq!(
        alerts
            .iter()
            .filter(|a| is_of_rule(a, SPOOL_FULL_RULE))
            .count(),
        1,
        "one spool-full alert for the episode"
    );
    cp.wait_agent_summary(
        "spool-full cleared",
        Duration::from_secs(30),
        "disk-agent",
        |a| !a.spool_full,
    )
    .await;
    assert!(alive(&mut agent), "the agent exited:\n{}", agent.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_while_the_spool_is_full_does_not_push_out_an_earlier_finding() {
    if !privileged("a_flood_while_the_spool_is_full_does_not_push_out_an_earlier_finding") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    // No control plane yet: two findings fill the spool, eight wait in memory.
    let mut agent = Agent::start_with(
        &tmp.path().join("agent"),
        &endpoint,
        "overflow-agent",
        &["--spool-max-findings", "2", "--spool-memory-findings", "8"],
    )
    .await;
    let models = tmp.path().join("models");
    open_models(&models, "fill", 2);
    // The real finding: held in memory, the spool being full.
    let real = open_models(&models, "real", 1)[0];
    agent
        .wait_for_log(
            "the agent to say spool-full",
            Duration::from_secs(30),
            "spool-full",
        )
        .await;
    // Then nobody floods: 100 distinct model names from one process, 64
    // findings one by one and the aggregates, far more than 8.
    let dir = shared_dir(tmp.path(), "flood");
    let status = python_as_nobody(
        "import sys\nfor i in range(100):\n    open(f'{sys.argv[1]}/m{i}.onnx', 'w').close()",
    )
    .arg(&dir)
    .status()
    .expect("setpriv and python3");
    assert!(status.success(), "the flood ran: {status}");
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The control plane comes: the real finding, and the flood's
    // aggregate, were kept; the flood's own findings were dropped.
    let cp = ControlPlane::start(&tmp.path().join("cp"), port);
    cp.wait_leader().await;
    cp.wait_alerts_with(
        "the finding held before the flood",
        Duration::from_secs(30),
        |a| is_about_pid(a, real),
    )
    .await;
    cp.wait_alerts_with("the flood's aggregate", Duration::from_secs(30), |a| {
        let f = a.finding.as_ref().unwrap();
        f.summary.starts_with("flood: ") && f.process.as_ref().is_some_and(|p| p.uid == 65534)
    })
    .await;
    let summary = cp
        .wait_agent_summary(
            "a heartbeat counting dropped findings",
            Duration::from_secs(30),
            "overflow-agent",
            |a| a.spool_dropped > 0,
        )
        .await;
    assert!(summary.spool_dropped >= 50, "{summary:?}");
    assert!(alive(&mut agent), "the agent exited:\n{}", agent.log_text());
}
