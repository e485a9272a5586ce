//! Issue #19, the control plane's disk full: findings sent over a raw agent
//! stream fill its data dir (a small tmpfs) until raft's writes fail. gRPC
//! health then says NOT_SERVING (not SERVING because a leader is known),
//! the process stays up, and every finding it acked is still there when it
//! restarts on a bigger disk.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vigil_integration::raw_agent::{self, hello, model_file_finding, RawAgentStream};
use vigil_integration::{free_port, privileged, wait_for, ControlPlane, Tmpfs};
use vigil_proto::agent::v1 as pb;
use vigil_proto::types::v1 as types_pb;

fn finding(seq: u64) -> types_pb::Finding {
    types_pb::Finding {
        file: Some(types_pb::FileObject {
            path: format!("/m/model-{seq}.onnx"),
            model: None,
        }),
        summary: "x".repeat(2000),
        ..model_file_finding(seq, types_pb::Severity::High as i32)
    }
}

async fn health(cp: &ControlPlane) -> Option<i32> {
    let mut client = HealthClient::new(vigil_integration::try_connect(&cp.endpoint()).await.ok()?);
    let r = client
        .check(HealthCheckRequest {
            service: "vigil.agent.v1.AgentService".into(),
        })
        .await
        .ok()?;
    Some(r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_control_plane_disk_turns_health_not_serving_and_loses_no_acked_finding() {
    if !privileged("a_full_control_plane_disk_turns_health_not_serving_and_loses_no_acked_finding")
    {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cp");
    let fs = Tmpfs::mount(&data, "6m");
    let mut cp = ControlPlane::start(&data, free_port());
    cp.wait_leader().await;
    assert_eq!(health(&cp).await, Some(ServingStatus::Serving as i32));

    // A raw agent floods findings until the control plane stops acking.
    let RawAgentStream { tx, mut inbound } =
        RawAgentStream::open(&cp, 4, vec![hello("flood-agent", "h")]).await;
    let mut acked = 0u64;
    let mut seq = 0u64;
    'flood: for _ in 0..2_000 {
        let findings: Vec<_> = (0..20)
            .map(|_| {
                seq += 1;
                finding(seq)
            })
            .collect();
        if tx.send(raw_agent::findings(findings)).await.is_err() {
            break;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(5), inbound.message()).await {
                Ok(Ok(Some(m))) => {
                    if let Some(pb::control_message::Body::Ack(a)) = m.body {
                        acked = acked.max(a.up_to_seq);
                        if a.up_to_seq == seq {
                            break;
                        }
                    }
                }
                // An error, the end of the stream, or no ack: writes fail.
                _ => break 'flood,
            }
        }
    }
    assert!(acked > 0, "nothing was acked");
    assert!(acked < seq, "the disk never filled ({seq} findings acked)");
    eprintln!("acked {acked} of {seq} findings before writes failed");

    let status = wait_for("health NOT_SERVING", Duration::from_secs(30), || async {
        health(&cp)
            .await
            .filter(|s| *s == ServingStatus::NotServing as i32)
    })
    .await;
    assert_eq!(status, ServingStatus::NotServing as i32);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        matches!(cp.daemon.child.try_wait(), Ok(None)),
        "the control plane exited:\n{}",
        std::fs::read_to_string(&cp.log).unwrap_or_default()
    );
    let log = std::fs::read_to_string(&cp.log).unwrap_or_default();
    assert!(log.contains("not serving"), "the reason is logged:\n{log}");

    // Restarted on a bigger disk, it holds every finding it acked.
    cp.daemon.kill();
    let bigger = tmp.path().join("cp-bigger");
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&data)
        .arg(&bigger)
        .status()
        .unwrap();
    assert!(copied.success());
    drop(fs);
    let cp = ControlPlane::start(&bigger, free_port());
    cp.wait_leader().await;
    let alerts = cp.alerts().await;
    let seqs: std::collections::BTreeSet<u64> = alerts
        .iter()
        .filter(|a| a.agent_id == "flood-agent")
        .filter_map(|a| Some(a.finding.as_ref()?.seq))
        .collect();
    let missing: Vec<u64> = (1..=acked).filter(|s| !seqs.contains(s)).collect();
    assert!(missing.is_empty(), "acked but lost: {missing:?}");
}
