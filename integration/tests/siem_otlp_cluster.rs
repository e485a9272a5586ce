//! `vigilctl siem otlp` through node kills: three control-plane nodes take
//! a steady stream of writes (certificate revocations, each an audit
//! event) while the forwarder, given all three endpoints, pushes the export
//! to the Python OTLP receiver. The node it follows is killed (SIGKILL),
//! then the leader, each started again; between the two the forwarder
//! itself is SIGKILLed and started again. Every committed event reaches the
//! receiver at least once, each cursor with the OCSF every node exports for
//! it (nothing uncommitted was forwarded), and the cursor file never names
//! an event the receiver did not get. Unprivileged: processes and loopback;
//! needs `make deps` (.vigil/deps/siem).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vigil_integration::loopback_cluster::{leader, revoke_until_stopped, LoopbackCluster};
use vigil_integration::siem_clients::{complete_lines, read_cursor, OtlpReceiver};
use vigil_integration::{binary, free_port, try_connect, try_wait_for, Killed};
use vigil_proto::siem::v1 as siem_pb;
use vigil_proto::siem::v1::siem_export_client::SiemExportClient;

/// Every event node `port` exports, cursor → OCSF JSON, up to its head.
async fn export_of(port: u16) -> Option<BTreeMap<u64, String>> {
    let channel = try_connect(&format!("http://127.0.0.1:{port}"))
        .await
        .ok()?;
    let mut stream = SiemExportClient::new(channel)
        .subscribe(siem_pb::SubscribeRequest {
            stop_at_head: true,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let mut out = BTreeMap::new();
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .ok()?
        .ok()?
    {
        out.insert(ev.cursor, ev.ocsf_json);
    }
    Some(out)
}

/// What the receiver got: cursor → the bodies it got for it.
fn received(path: &Path) -> BTreeMap<u64, Vec<String>> {
    let mut out: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for line in complete_lines(path) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        out.entry(v["cursor"].as_u64().unwrap())
            .or_default()
            .push(v["body"].as_str().unwrap().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_forwarder_follows_the_next_node_and_forwards_only_committed_events() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut cluster = LoopbackCluster::start(dir, 3, &[]).await;
    let ports = cluster.ports.clone();

    let out = dir.join("otlp.jsonl");
    let receiver = OtlpReceiver::start(free_port(), &out, &dir.join("receiver.log"));
    let cursor_file = dir.join("otlp.cursor");
    let log = dir.join("vigilctl-otlp.log");
    // Node 3 first: the one it follows until it is killed.
    let endpoints = [2, 0, 1]
        .map(|i| format!("http://127.0.0.1:{}", ports[i]))
        .join(",");
    let spawn_forwarder = || {
        Killed(
            Command::new(binary("vigilctl"))
                .args(["--control-plane", &endpoints, "siem", "otlp"])
                .args(["--collector", &receiver.endpoint()])
                .arg("--cursor-file")
                .arg(&cursor_file)
                .args(["--max-batch-delay-ms", "20", "--max-backoff-ms", "500"])
                .stdout(Stdio::null())
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .unwrap(),
                )
                .spawn()
                .unwrap(),
        )
    };
    let mut forwarder = spawn_forwarder();

    // The writer: one revocation at a time, to whichever node answers.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(revoke_until_stopped(
        ports.clone(),
        stop.clone(),
        |k| format!("7e{k:06x}"),
        "agent otlp-test",
        "siem otlp cluster test",
    ));

    for victim in ["followed", "leader"] {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let id = match victim {
            "followed" => 3,
            _ => try_wait_for("a leader", Duration::from_secs(10), || leader(&ports))
                .await
                .unwrap(),
        };
        cluster.kill(id);
        eprintln!("node {id} ({victim}) killed");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.start_node(id, None);
        if victim == "followed" {
            // The forwarder itself dies (SIGKILL) and starts again from its
            // cursor file.
            drop(forwarder);
            forwarder = spawn_forwarder();
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.unwrap().len();
    assert!(acked > 0, "no write was acknowledged");

    // Every node's export, once they agree on the head.
    let reference = try_wait_for("every node at one head", Duration::from_secs(30), || {
        let ports = &ports;
        async move {
            let mut exports = Vec::new();
            for &port in ports {
                exports.push(export_of(port).await?);
            }
            exports
                .iter()
                .all(|e| e == &exports[0])
                .then(|| exports[0].clone())
        }
    })
    .await
    .unwrap();
    let head = *reference.keys().last().unwrap();
    assert_eq!(
        reference.keys().copied().collect::<Vec<_>>(),
        (1..=head).collect::<Vec<_>>()
    );
    try_wait_for(
        "the forwarder's cursor file at the head",
        Duration::from_secs(30),
        || async {
            let saved = read_cursor(&cursor_file);
            let got = received(&out);
            let delivered = got.keys().last().copied().unwrap_or(0);
            assert!(
                saved <= delivered,
                "the cursor file ({saved}) names an event the receiver did not get ({delivered})"
            );
            (saved >= head).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}; its log:\n{}", std::fs::read_to_string(&log).unwrap()));

    let got = received(&out);
    let missing: Vec<u64> = (1..=head).filter(|c| !got.contains_key(c)).collect();
    assert!(missing.is_empty(), "cursors never delivered: {missing:?}");
    for (cursor, bodies) in &got {
        let Some(committed) = reference.get(cursor) else {
            continue; // after the head the nodes agreed on
        };
        for body in bodies {
            assert_eq!(
                body, committed,
                "cursor {cursor}: the forwarder sent an event no node exports"
            );
        }
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let follows = text
        .matches("following the SIEM export after cursor")
        .count();
    assert!(follows >= 3, "it followed again after each kill:\n{text}");
    drop(forwarder);
    let sent: usize = got.values().map(Vec::len).sum();
    eprintln!(
        "{head} events, {sent} records delivered ({} sent twice), {acked} writes acknowledged, {follows} subscriptions",
        sent - got.len()
    );
}
