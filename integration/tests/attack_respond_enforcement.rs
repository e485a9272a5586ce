//! Issue #19, the respond stage under attack: a local user starts many
//! offending processes at once so a kill rule acts en masse (on a bad
//! bundle, a self-inflicted outage). Each rule acts at most N times a
//! minute, says so once, and reports the rest. Root.

use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::alert_filter::alerts_of_rule as of_rule;
use vigil_integration::policy_fixture::{
    python_copy, write_gguf, write_signed_bundle, HOLD_MODEL_OPEN,
};
use vigil_integration::{privileged, wait_for, Agent, ControlPlane, Killed};
use vigil_policy::SigningKey;

const RULES: &str = "id: test.limit\ndescription: d\nseverity: critical\nwhen: [model_file]\ncondition: process.name == \"limit-me\"\naction: kill\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_rule_past_its_action_limit_reports_once_and_kills_no_more() {
    if !privileged("a_kill_rule_past_its_action_limit") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let bundle = tmp.path().join("bundle.json");
    write_signed_bundle(&bundle, &key, 1, RULES);
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "limit-host",
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
            "--max-actions-per-rule-per-minute",
            "3",
        ],
    )
    .await;
    let dir = tmp.path().join("work");
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("m.gguf");
    write_gguf(&model);
    let offender = python_copy(&dir, "limit-me");
    let mut children: Vec<Killed> = (0..10)
        .map(|_| {
            Killed(
                Command::new(&offender)
                    .args(["-c", HOLD_MODEL_OPEN])
                    .arg(&model)
                    .stdout(Stdio::null())
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.0.id()).collect();
    // Every offender reported; three kills; one limit finding.
    let alerts = wait_for(
        "ten findings, three kills, one limit",
        Duration::from_secs(30),
        || async {
            let all = cp.alerts().await;
            let reported = of_rule(&all, "test.limit")
                .iter()
                .filter(|a| !a.finding.as_ref().unwrap().summary.starts_with("action "))
                .count();
            let limit = of_rule(&all, "vigil.respond.action-limit").len();
            (reported >= 10 && limit >= 1).then_some(all)
        },
    )
    .await;
    let kills: Vec<String> = of_rule(&alerts, "test.limit")
        .iter()
        .map(|a| a.finding.as_ref().unwrap().summary.clone())
        .filter(|s| s.starts_with("action kill"))
        .collect();
    assert_eq!(kills.len(), 3, "{kills:?}");
    let limits = of_rule(&alerts, "vigil.respond.action-limit");
    assert_eq!(limits.len(), 1, "one limit finding");
    let summary = &limits[0].finding.as_ref().unwrap().summary;
    assert!(
        summary.contains("rule test.limit reached its limit of 3 actions a minute"),
        "{summary}"
    );
    let reported: std::collections::BTreeSet<u32> = of_rule(&alerts, "test.limit")
        .iter()
        .map(|a| a.finding.as_ref().unwrap().process.as_ref().unwrap().pid)
        .collect();
    for pid in &pids {
        assert!(
            reported.contains(pid),
            "pid {pid} not reported: {reported:?}"
        );
    }
    // Three dead by SIGKILL, seven alive.
    std::thread::sleep(Duration::from_millis(500));
    use std::os::unix::process::ExitStatusExt;
    let mut killed = 0;
    let mut alive = 0;
    for c in &mut children {
        match c.0.try_wait().unwrap() {
            Some(status) => {
                assert_eq!(status.signal(), Some(9), "{status:?}");
                killed += 1;
            }
            None => alive += 1,
        }
    }
    assert_eq!((killed, alive), (3, 7));
}
