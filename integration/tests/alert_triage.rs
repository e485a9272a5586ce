//! Alert triage (issue #26) against a real control plane over mutual TLS:
//! an analyst acknowledges, assigns, comments on and resolves alerts an
//! agent's findings made (each step audited, the comment stored
//! verbatim), a viewer's certificate is refused (PERMISSION_DENIED), an
//! unknown alert is NOT_FOUND, and retention removes the triage of the
//! alerts it prunes. Unprivileged: processes and loopback only.

use std::time::Duration;

use tonic::Code;
use vigil_integration::raw_agent::{findings, hello, model_file_finding, RawAgentStream};
use vigil_integration::tls_fleet::TlsFleet;
use vigil_integration::{free_port, wait_for, wait_leader_of};
use vigil_pki::{Identity, OperatorRole};
use vigil_proto::admin::v1 as pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;
use vigil_proto::agent::v1 as agent_pb;
use vigil_proto::types::v1 as types_pb;

fn step(index: u64, action: &str, assignee: &str, comment: &str) -> pb::TriageAlertRequest {
    pb::TriageAlertRequest {
        index,
        action: action.into(),
        assignee: assignee.into(),
        comment: comment.into(),
    }
}

/// Waits for the ack of the agent's findings up to `seq`.
async fn acked(agent: &mut RawAgentStream, seq: u64) {
    loop {
        if let Some(agent_pb::control_message::Body::Ack(a)) = agent.next_message().await.body {
            if a.up_to_seq >= seq {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_triage_alerts_viewers_cannot_and_retention_prunes_triage() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TlsFleet::new(tmp.path(), "triage");
    let port = free_port();
    let _cp = fleet.start_control_plane(
        &tmp.path().join("cp"),
        port,
        &[
            "--alert-retention-count",
            "3",
            "--alert-retention-every-secs",
            "1",
        ]
        .map(String::from),
    );
    let admin_cert = fleet.issue(Identity::operator(OperatorRole::Admin, "root").unwrap());
    let mut admin = AdminServiceClient::new(fleet.channel(port, &admin_cert).await.unwrap());
    wait_leader_of(&admin).await;
    let analyst_cert = fleet.issue(Identity::operator(OperatorRole::Analyst, "ann").unwrap());
    let mut analyst = AdminServiceClient::new(fleet.channel(port, &analyst_cert).await.unwrap());
    let viewer_cert = fleet.issue(Identity::operator(OperatorRole::Viewer, "vic").unwrap());
    let mut viewer = AdminServiceClient::new(fleet.channel(port, &viewer_cert).await.unwrap());
    // A dashboard user to assign alerts to.
    admin
        .put_user(pb::PutUserRequest {
            name: "bob".into(),
            role: "analyst".into(),
            password: Some("bob's long password".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    // Three alerts of an agent (retention keeps three).
    let agent_cert = fleet.issue(Identity::agent("triage-agent").unwrap());
    let (high, low, critical) = (
        types_pb::Severity::High as i32,
        types_pb::Severity::Low as i32,
        types_pb::Severity::Critical as i32,
    );
    let mut agent = RawAgentStream::open_on(
        fleet.channel(port, &agent_cert).await.unwrap(),
        8,
        vec![
            hello("triage-agent", "triage-host"),
            findings(vec![
                model_file_finding(1, high),
                model_file_finding(2, low),
                model_file_finding(3, critical),
            ]),
        ],
    )
    .await;
    acked(&mut agent, 3).await;

    // The analyst's steps.
    let script = "<script>alert(1)</script> \"and\" 'quotes' & <img src=x onerror=alert(1)>";
    let t = analyst
        .triage_alert(step(1, "ack", "", ""))
        .await
        .unwrap()
        .into_inner()
        .triage
        .unwrap();
    assert_eq!(t.state, "acknowledged");
    analyst
        .triage_alert(step(1, "assign", "bob", ""))
        .await
        .unwrap();
    let t = analyst
        .triage_alert(step(1, "comment", "", script))
        .await
        .unwrap()
        .into_inner()
        .triage
        .unwrap();
    assert_eq!(t.assignee, "bob");
    assert_eq!(t.history_total, 3);
    assert_eq!(t.history[2].comment, script, "stored verbatim");
    assert!(t.history[0].actor.contains("ann"), "{:?}", t.history[0]);
    analyst
        .triage_alert(step(2, "resolve", "", ""))
        .await
        .unwrap();

    // Refusals, each with its code and nothing stored.
    let e = analyst
        .triage_alert(step(99, "ack", "", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = analyst
        .triage_alert(step(3, "assign", "nobody", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("no such enabled user"), "{e:?}");
    let e = analyst
        .triage_alert(step(2, "ack", "", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = analyst
        .triage_alert(step(3, "comment", "", &"x".repeat(4097)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = analyst
        .triage_alert(step(3, "shred", "", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A viewer may read but not triage.
    let e = viewer
        .triage_alert(step(3, "ack", "", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("analyst role"), "{e:?}");

    // vigilctl takes the same steps (as the analyst).
    let flags = fleet.vigilctl_flags(port, "ann", &analyst_cert);
    let out = std::process::Command::new(vigil_integration::binary("vigilctl"))
        .args(&flags)
        .args(["alerts", "resolve", "3"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.starts_with("alert 3: resolved, assigned to no one; last: resolve by "),
        "{said}"
    );
    let out = std::process::Command::new(vigil_integration::binary("vigilctl"))
        .args(&flags)
        .args(["alerts", "ack", "99"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    analyst
        .triage_alert(step(3, "reopen", "", ""))
        .await
        .unwrap();

    // The alert list carries the triage of the triaged alerts only.
    let page = viewer
        .query_alerts(pb::QueryAlertsRequest {
            after_index: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.alerts.len(), 3);
    let triaged: Vec<(u64, String)> = page
        .triage
        .iter()
        .map(|t| (t.alert_index, t.state.clone()))
        .collect();
    assert_eq!(
        triaged,
        [
            (1, "acknowledged".to_string()),
            (2, "resolved".to_string()),
            (3, "open".to_string())
        ]
    );

    // Every step that took effect is audited under the analyst's identity.
    let audit: Vec<(String, String, String)> = admin
        .list_audit(pb::ListAuditRequest {
            after_index: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .filter(|e| e.action == "alert.triage")
        .map(|e| (e.actor, e.subject, e.detail))
        .collect();
    assert_eq!(audit.len(), 6, "{audit:?}");
    assert!(audit.iter().all(|(actor, _, _)| actor.contains("ann")));
    assert_eq!(audit[1].2, "assign to bob");
    assert_eq!(audit[2].2, format!("comment: {script}"));

    // Two more alerts: retention removes alerts 1 and 2, and their triage.
    agent
        .send(findings(vec![
            model_file_finding(4, high),
            model_file_finding(5, high),
        ]))
        .await;
    acked(&mut agent, 5).await;
    wait_for("alerts 1 and 2 pruned", Duration::from_secs(15), || {
        let mut viewer = viewer.clone();
        async move {
            let page = viewer
                .query_alerts(pb::QueryAlertsRequest {
                    after_index: 0,
                    limit: 0,
                })
                .await
                .ok()?
                .into_inner();
            (page.alerts.first().map(|a| a.index) == Some(3)).then_some(page)
        }
    })
    .await;
    let page = viewer
        .query_alerts(pb::QueryAlertsRequest {
            after_index: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let left: Vec<u64> = page.triage.iter().map(|t| t.alert_index).collect();
    assert_eq!(left, [3], "only the kept alert's triage is left");
    let e = analyst
        .triage_alert(step(1, "reopen", "", ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("removed by retention"), "{e:?}");
}
