//! Alert retention (issue #21: bounded state): with
//! `--alert-retention-count 5`, the leader prunes the oldest alerts on its
//! timer, every node keeps the same newest five, the removal is audited,
//! and an agent's new findings still get the next indexes. Unprivileged.

use std::time::Duration;

use vigil_integration::raw_agent::{findings, hello, model_file_finding, RawAgentStream};
use vigil_integration::{free_port, wait_for, ControlPlane};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::agent::v1 as pb;
use vigil_proto::types::v1 as types_pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_keeps_the_newest_alerts_and_audits_what_it_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_with(
        &tmp.path().join("cp"),
        free_port(),
        &[
            "--alert-retention-count",
            "5",
            "--alert-retention-every-secs",
            "1",
        ],
    );
    cp.wait_leader().await;
    let high = types_pb::Severity::High as i32;
    let mut agent = RawAgentStream::open(
        &cp,
        8,
        vec![
            hello("retention-agent", "retention-host"),
            findings((1..=12).map(|s| model_file_finding(s, high)).collect()),
        ],
    )
    .await;
    loop {
        if let Some(pb::control_message::Body::Ack(a)) = agent.next_message().await.body {
            if a.up_to_seq == 12 {
                break;
            }
        }
    }
    let kept = wait_for("five alerts kept", Duration::from_secs(15), || async {
        let alerts = cp.alerts().await;
        (alerts.len() == 5).then_some(alerts)
    })
    .await;
    assert_eq!(
        kept.iter().map(|a| a.index).collect::<Vec<_>>(),
        vec![8, 9, 10, 11, 12]
    );
    let audit = cp
        .admin()
        .await
        .list_audit(admin_pb::ListAuditRequest {
            after_index: 0,
            limit: 100,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let prune = audit
        .iter()
        .find(|e| e.action == "alerts.prune")
        .expect("the removal is audited");
    assert_eq!(prune.subject, "7 alerts");

    // New findings get the next indexes, and the oldest go again.
    agent
        .send(findings(vec![model_file_finding(13, high)]))
        .await;
    let kept = wait_for("the newest five again", Duration::from_secs(15), || async {
        let alerts = cp.alerts().await;
        (alerts.first().map(|a| a.index) == Some(9)).then_some(alerts)
    })
    .await;
    assert_eq!(
        kept.iter().map(|a| a.index).collect::<Vec<_>>(),
        vec![9, 10, 11, 12, 13]
    );
}
