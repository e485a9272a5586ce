//! SIEM export through a leader kill (issue #25 with the cluster of #21):
//! three nodes take a steady stream of writes (certificate revocations, each
//! an audit event) while a subscriber follows the export on a follower and,
//! when its stream breaks, resumes on the next node from the last cursor it
//! processed. The leader is killed with SIGKILL twice, and started again.
//! The subscriber sees every committed event exactly once, in order, with
//! no gap (the stream is unfiltered); every acknowledged write is among
//! them; and what it saw is byte for byte what every node exports at the
//! end, so it never saw an event that was not committed. Unprivileged:
//! processes and loopback.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vigil_integration::loopback_cluster::{
    leader, revoke_until_stopped, state_digests, LoopbackCluster,
};
use vigil_integration::{try_connect, try_wait_for};
use vigil_proto::siem::v1 as siem_pb;
use vigil_proto::siem::v1::siem_export_client::SiemExportClient;

/// Every event a node exports from the start, as (cursor, OCSF JSON), up
/// to the head it names when the subscription opens (`vigil-head-cursor`).
async fn export_of(port: u16) -> Option<Vec<(u64, String)>> {
    let channel = try_connect(&format!("http://127.0.0.1:{port}"))
        .await
        .ok()?;
    let response = SiemExportClient::new(channel)
        .subscribe(siem_pb::SubscribeRequest::default())
        .await
        .ok()?;
    let head: u64 = response
        .metadata()
        .get("vigil-head-cursor")?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let mut stream = response.into_inner();
    let mut out = Vec::new();
    while out.last().map_or(head > 0, |(c, _)| *c < head) {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .ok()?
            .ok()??;
        out.push((ev.cursor, ev.ocsf_json));
    }
    Some(out)
}

#[tokio::test]
async fn a_subscriber_sees_every_committed_event_once_in_order_through_leader_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cluster = LoopbackCluster::start(dir, 3, &["--snapshot-every", "50"]).await;
    let ports = cluster.ports.clone();

    // The writer: unique serials, each sent until a node answers.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(revoke_until_stopped(
        ports.clone(),
        stop.clone(),
        |k| format!("5e{k:06x}"),
        "agent siem-test",
        "siem cluster test",
    ));

    // The subscriber: starts on node 3, moves to the next node when its
    // stream breaks, always from the last cursor it processed.
    let seen: Arc<Mutex<Vec<(u64, String, String)>>> = Arc::new(Mutex::new(Vec::new()));
    let subscriber = {
        let (seen, ports) = (seen.clone(), ports.clone());
        tokio::spawn(async move {
            let mut at = 2usize;
            loop {
                let cursor = seen.lock().unwrap().last().map_or(0, |e| e.0);
                let port = ports[at % 3];
                let stream = async {
                    let channel = try_connect(&format!("http://127.0.0.1:{port}"))
                        .await
                        .ok()?;
                    SiemExportClient::new(channel)
                        .subscribe(siem_pb::SubscribeRequest {
                            cursor,
                            include_record: true,
                            ..Default::default()
                        })
                        .await
                        .ok()
                };
                let Some(stream) = stream.await else {
                    at += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let mut stream = stream.into_inner();
                while let Ok(Some(ev)) = stream.message().await {
                    // "certificate SERIAL" for a revocation.
                    let subject = ev
                        .audit
                        .map(|a| a.subject.trim_start_matches("certificate ").to_string())
                        .unwrap_or_default();
                    seen.lock()
                        .unwrap()
                        .push((ev.cursor, ev.ocsf_json, subject));
                }
                at += 1;
            }
        })
    };

    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let id = try_wait_for("a leader", Duration::from_secs(10), || leader(&ports))
            .await
            .unwrap();
        cluster.kill(id);
        eprintln!("round {round}: leader {id} killed");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.start_node(id, None);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(!acked.is_empty(), "no write was acknowledged");

    // The head every node reaches once caught up.
    let head = try_wait_for("equal digests", Duration::from_secs(30), || async {
        let seen = state_digests(&ports).await?;
        seen.iter()
            .all(|d| d.sha256 == seen[0].sha256)
            .then_some(())
    })
    .await;
    assert!(head.is_ok(), "the nodes did not converge");
    let reference = try_wait_for("node 1's export", Duration::from_secs(30), || {
        export_of(ports[0])
    })
    .await
    .unwrap();
    let head = reference.last().map_or(0, |e| e.0);
    try_wait_for(
        "the subscriber at the head",
        Duration::from_secs(30),
        || async { (seen.lock().unwrap().last().map_or(0, |e| e.0) >= head).then_some(()) },
    )
    .await
    .unwrap();
    subscriber.abort();
    let seen = seen.lock().unwrap().clone();

    // Exactly once, in order, without a gap.
    for (i, w) in seen.windows(2).enumerate() {
        assert_eq!(
            w[1].0,
            w[0].0 + 1,
            "event {i}: cursor {} followed by {}",
            w[0].0,
            w[1].0
        );
    }
    assert_eq!(
        seen.first().map(|e| e.0),
        Some(1),
        "the stream did not start at 1"
    );
    // Every acknowledged write, once.
    let revoked: Vec<&String> = seen
        .iter()
        .map(|e| &e.2)
        .filter(|s| acked.contains(*s))
        .collect();
    let distinct: BTreeSet<&String> = revoked.iter().copied().collect();
    assert_eq!(revoked.len(), distinct.len(), "a write exported twice");
    let missing: Vec<&String> = acked.iter().filter(|s| !distinct.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged writes not exported: {missing:?}"
    );
    // Committed: what the subscriber saw is what every node exports.
    for &port in &ports {
        let export = export_of(port).await.expect("a node's export");
        assert_eq!(
            export.last().map(|e| e.0),
            Some(head),
            "node on port {port}"
        );
        let ours: Vec<(u64, &String)> = seen
            .iter()
            .take(export.len())
            .map(|e| (e.0, &e.1))
            .collect();
        let theirs: Vec<(u64, &String)> = export.iter().map(|e| (e.0, &e.1)).collect();
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a, b, "node on port {port} exports another event at {}", a.0);
        }
    }
    eprintln!(
        "{} events seen once each through two leader kills; {} writes acknowledged",
        seen.len(),
        acked.len()
    );
}
