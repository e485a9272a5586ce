//! Issue #19, the respond stage under attack: a local user spends a kill
//! rule's action budget on decoys (processes that open a model file and
//! mean nothing) so that the real offender is only alerted on. The budget
//! is per (rule, uid): one user's decoys do not spare another user's
//! offender; and an action over the budget is queued, not dropped: it is
//! taken when the window refills, if the same process still lives. Root
//! (eBPF, a kill rule; the decoys run as nobody).

use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::alert_filter::alerts_of_rule as of_rule;
use vigil_integration::policy_fixture::{
    python_copy, write_gguf, write_signed_bundle, HOLD_MODEL_OPEN,
};
use vigil_integration::unprivileged::shared_dir;
use vigil_integration::{privileged, wait_for, Agent, ControlPlane, Killed};
use vigil_policy::SigningKey;
use vigil_proto::types::v1::{Alert, Finding};

const RULES: &str = "id: test.budget\ndescription: d\nseverity: critical\nwhen: [model_file]\ncondition: process.name == \"budget-me\"\naction: kill\n";
const RULE: &str = "test.budget";
const LIMIT_RULE: &str = "vigil.respond.action-limit";
const DECOYS: usize = 5;
const LIMIT: usize = 3;

/// The findings of the rule about `pid`.
fn about(alerts: &[Alert], pid: u32) -> Vec<Finding> {
    of_rule(alerts, RULE)
        .into_iter()
        .filter_map(|a| a.finding.clone())
        .filter(|f| f.process.as_ref().is_some_and(|p| p.pid == pid))
        .collect()
}

/// The kill outcome's summary for `pid`, once there is one.
fn kill_summary(findings: &[Finding]) -> Option<String> {
    findings
        .iter()
        .find(|f| f.action == "kill")
        .map(|f| f.summary.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decoys_delay_only_their_own_users_actions_and_queued_actions_are_taken() {
    if !privileged("decoys_delay_only_their_own_users_actions") {
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
        "budget-host",
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
            "--max-actions-per-rule-per-minute",
            &LIMIT.to_string(),
            "--action-budget-window-secs",
            "5",
        ],
    )
    .await;
    let dir = shared_dir(tmp.path(), "work");
    let model = dir.join("m.gguf");
    write_gguf(&model);
    let python = python_copy(&dir, "budget-me");
    let as_nobody = || {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&python)
            .args(["-c", HOLD_MODEL_OPEN])
            .arg(&model)
            .stdout(Stdio::null());
        c
    };
    let mut decoys: Vec<Killed> = (0..DECOYS)
        .map(|_| Killed(as_nobody().spawn().unwrap()))
        .collect();
    let decoy_pids: Vec<u32> = decoys.iter().map(|d| d.0.id()).collect();
    // The decoys spend nobody's budget: three kills, one limit finding,
    // the rest reported as queued.
    wait_for(
        "the decoys' kills and limit finding",
        Duration::from_secs(30),
        || async {
            let all = cp.alerts().await;
            let kills = decoy_pids
                .iter()
                .filter(|p| kill_summary(&about(&all, **p)).is_some())
                .count();
            let queued = decoy_pids
                .iter()
                .filter(|p| {
                    about(&all, **p)
                        .iter()
                        .any(|f| f.summary.contains("queued: action budget"))
                })
                .count();
            let limits = of_rule(&all, LIMIT_RULE).len();
            (kills >= LIMIT && queued >= DECOYS - LIMIT && limits >= 1).then_some(())
        },
    )
    .await;
    let all = cp.alerts().await;
    let limit = of_rule(&all, LIMIT_RULE)[0]
        .finding
        .as_ref()
        .unwrap()
        .summary
        .clone();
    assert!(
        limit.contains("reached its limit of 3 actions per 5 s (uid 65534)"),
        "{limit}"
    );

    // Root's offender is killed at once: nobody's decoys spent nobody's
    // budget only.
    let mut offender = Killed(
        Command::new(&python)
            .args(["-c", HOLD_MODEL_OPEN])
            .arg(&model)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = offender.0.id();
    let summary = wait_for(
        "the kill of root's offender",
        Duration::from_secs(20),
        || async { kill_summary(&about(&cp.alerts().await, pid)) },
    )
    .await;
    assert!(
        summary.contains(&format!("killed pid {pid}")) && !summary.contains("queued"),
        "{summary}"
    );
    let _ = offender.0.wait();

    // The queued kills are taken when nobody's window refills: every
    // decoy ends up killed, the late ones saying they waited.
    let summaries = wait_for(
        "the queued kills, after the window refills",
        Duration::from_secs(30),
        || async {
            let all = cp.alerts().await;
            decoy_pids
                .iter()
                .map(|p| kill_summary(&about(&all, *p)))
                .collect::<Option<Vec<String>>>()
        },
    )
    .await;
    let waited: Vec<&String> = summaries.iter().filter(|s| s.contains("[queued")).collect();
    assert_eq!(waited.len(), DECOYS - LIMIT, "{summaries:#?}");
    for (s, pid) in summaries.iter().zip(&decoy_pids) {
        assert!(s.contains(&format!("killed pid {pid}")), "{s}");
    }
    use std::os::unix::process::ExitStatusExt;
    for d in &mut decoys {
        assert_eq!(d.0.wait().unwrap().signal(), Some(9));
    }
}
