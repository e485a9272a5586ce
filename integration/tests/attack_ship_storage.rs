//! Issue #19, the control plane's disk full: findings sent over a raw agent
//! stream fill its data dir (a small tmpfs). With a free-space reserve (the
//! default) the node refuses writes before the disk is full, says
//! NOT_SERVING, and takes writes again by itself once space is freed; with
//! none, raft's writes fail (or sled's flush sticks) and health still turns
//! NOT_SERVING. Either way the process stays up and every finding it acked
//! is still there when it restarts.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use vigil_integration::raw_agent::{self, hello, model_file_finding, RawAgentStream};
use vigil_integration::{free_port, privileged, try_wait_for, ControlPlane, Tmpfs};
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

/// Waits up to 30 s for health to say `want`; panics with the last answer,
/// the file system's use and the control plane's log.
async fn wait_health(cp: &ControlPlane, data: &std::path::Path, want: ServingStatus) {
    let last_seen = std::sync::Mutex::new(None);
    let turned = try_wait_for(
        &format!("health {want:?}"),
        Duration::from_secs(30),
        || async {
            let status = health(cp).await;
            *last_seen.lock().unwrap() = Some(status);
            status.filter(|s| *s == want as i32)
        },
    )
    .await;
    if let Err(e) = turned {
        let df = std::process::Command::new("df")
            .arg(data)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "{e}; health last answered {:?}\n{df}\ncontrol plane log:\n{}",
            last_seen.lock().unwrap(),
            std::fs::read_to_string(&cp.log).unwrap_or_default()
        );
    }
}

/// Floods findings from one raw agent session until the control plane
/// stops acking them; returns (the highest seq acked, the highest sent).
async fn flood_until_refused(cp: &ControlPlane, agent: &str) -> (u64, u64) {
    let RawAgentStream { tx, mut inbound } =
        RawAgentStream::open(cp, 4, vec![hello(agent, "h")]).await;
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
    (acked, seq)
}

/// Every seq in 1..=`acked` from `agent` is among `cp`'s alerts.
async fn assert_none_lost(cp: &ControlPlane, agent: &str, acked: u64) {
    let alerts = cp.alerts().await;
    let seqs: std::collections::BTreeSet<u64> = alerts
        .iter()
        .filter(|a| a.agent_id == agent)
        .filter_map(|a| Some(a.finding.as_ref()?.seq))
        .collect();
    let missing: Vec<u64> = (1..=acked).filter(|s| !seqs.contains(s)).collect();
    assert!(missing.is_empty(), "acked but lost: {missing:?}");
}

fn assert_running(cp: &mut ControlPlane) {
    assert!(
        matches!(cp.daemon.child.try_wait(), Ok(None)),
        "the control plane exited:\n{}",
        std::fs::read_to_string(&cp.log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_near_its_disk_reserve_refuses_writes_and_takes_them_again_when_space_returns(
) {
    if !privileged(
        "a_control_plane_near_its_disk_reserve_refuses_writes_and_takes_them_again_when_space_returns",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cp");
    let fs = Tmpfs::mount(&data, "8m");
    let mut cp = ControlPlane::start_with(&data, free_port(), &["--min-free-disk-mib", "3"]);
    cp.wait_leader().await;
    wait_health(&cp, &data, ServingStatus::Serving).await;

    let (acked, sent) = flood_until_refused(&cp, "flood-agent").await;
    wait_health(&cp, &data, ServingStatus::NotServing).await;
    assert_running(&mut cp);
    let log = std::fs::read_to_string(&cp.log).unwrap_or_default();
    assert!(
        log.contains("not serving: storage") && log.contains("below the"),
        "the reason is logged:\n{log}"
    );
    // The reserve kept sled off a full disk: no write of its failed.
    assert!(
        !log.contains("No space left on device"),
        "the disk filled anyway:\n{log}"
    );

    // Space returns: the node serves again and acks the next finding,
    // with no restart.
    fs.resize("64m");
    wait_health(&cp, &data, ServingStatus::Serving).await;
    let mut again = RawAgentStream::open(&cp, 4, vec![hello("flood-agent", "h")]).await;
    again
        .send(raw_agent::findings(vec![finding(sent + 1)]))
        .await;
    loop {
        if let pb::control_message::Body::Ack(a) = again.next_answer().await {
            if a.up_to_seq == sent + 1 {
                break;
            }
        }
    }
    assert_running(&mut cp);

    // Restarted, it holds every finding it acked.
    cp.daemon.kill();
    let cp = ControlPlane::start(&data, free_port());
    cp.wait_leader().await;
    assert_none_lost(&cp, "flood-agent", acked).await;
    drop(fs);
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
    // No reserve: sled itself meets the full disk.
    let mut cp = ControlPlane::start_with(&data, free_port(), &["--min-free-disk-mib", "0"]);
    cp.wait_leader().await;
    wait_health(&cp, &data, ServingStatus::Serving).await;

    let (acked, _) = flood_until_refused(&cp, "flood-agent").await;
    // A failed write stops raft; a stuck flush is noticed after 10 s.
    wait_health(&cp, &data, ServingStatus::NotServing).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_running(&mut cp);
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
    assert_none_lost(&cp, "flood-agent", acked).await;
}
