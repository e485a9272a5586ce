//! Agent → control plane over mutual TLS against plaintext, side by side
//! in the same run (issue #20: target ≥ 0.9× plaintext).
//!
//! One agent session per control plane (a raw gRPC stream, as the agent's
//! shipper speaks it) sends model-file findings: for latency, one finding
//! at a time, timed from the send to its ack (the ack comes after raft
//! committed and applied it); for throughput, batches of 100 with up to
//! 10 batches in flight for a fixed time. The two control planes run one
//! after the other, alternating, `ROUNDS` times; figures are medians.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use vigil_integration::raw_agent::{findings, hello, model_file_finding};
use vigil_integration::tls_fleet::TlsFleet;
use vigil_integration::{free_port, ControlPlane};
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;

use crate::report::{Figure, Report};
use crate::Settings;

const ROUNDS: usize = 3;
const LATENCY_PROBES: u64 = 300;
const THROUGHPUT_FOR: Duration = Duration::from_secs(4);
const BATCH: u64 = 100;
const IN_FLIGHT: u64 = 10;

struct Measured {
    findings_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
}

pub fn transport(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let fleet = TlsFleet::new(s.work.path(), "bench-fleet");
    let plain_port = free_port();
    let tls_port = free_port();
    let plain = ControlPlane::try_start(&s.work.path().join("cp-plain"), plain_port, &[])?;
    let node = fleet.node_flags("bench");
    let node: Vec<&str> = node.iter().map(String::as_str).collect();
    let tls = ControlPlane::try_start(&s.work.path().join("cp-tls"), tls_port, &node)?;
    s.rt.block_on(plain.try_wait_leader())?;
    let agent_cert = fleet.issue(vigil_pki::Identity::agent("bench-tls").unwrap());
    let mut plain_runs = Vec::new();
    let mut tls_runs = Vec::new();
    let (mut plain_seq, mut tls_seq) = (0, 0);
    for _ in 0..ROUNDS {
        let channel =
            s.rt.block_on(vigil_integration::try_connect(&plain.endpoint()))?;
        plain_runs.push(s.rt.block_on(measure(channel, "bench-plain", &mut plain_seq))?);
        let channel = s.rt.block_on(fleet.channel(tls_port, &agent_cert))?;
        tls_runs.push(s.rt.block_on(measure(channel, "bench-tls", &mut tls_seq))?);
    }
    let median = |runs: &[Measured], f: fn(&Measured) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let cmd = "make bench (VIGIL_BENCH_ONLY=transport)";
    let (p, t) = (
        median(&plain_runs, |m| m.findings_per_sec),
        median(&tls_runs, |m| m.findings_per_sec),
    );
    report.push(
        Figure::ratio(
            "findings/s agent → committed, mutual TLS / plaintext (same run)",
            t,
            p,
            "findings/s",
            cmd,
        )
        .goal(0.9),
    );
    for (label, f) in [
        ("p50", (|m: &Measured| m.p50_us) as fn(&Measured) -> f64),
        ("p99", |m: &Measured| m.p99_us),
    ] {
        let (p, t) = (median(&plain_runs, f), median(&tls_runs, f));
        report.push(
            Figure::ratio(
                &format!(
                    "latency {label} of one finding, send → ack after commit, mutual TLS / plaintext (same run)"
                ),
                t / 1000.0,
                p / 1000.0,
                "ms",
                cmd,
            )
            .goal_max(1.0 / 0.9),
        );
    }
    drop((plain, tls));
    Ok(())
}

/// One round on one session; `seq` is the agent's last seq, carried
/// across rounds (seqs are consecutive, as an agent's are).
async fn measure(channel: Channel, agent_id: &str, seq: &mut u64) -> anyhow::Result<Measured> {
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(64);
    tx.send(hello(agent_id, agent_id)).await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut next = *seq;
    // Latency: one at a time.
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    for _ in 0..LATENCY_PROBES {
        next += 1;
        let sent = Instant::now();
        tx.send(findings(vec![model_file_finding(next, 3)])).await?;
        acked_up_to(&mut inbound, next).await?;
        hist.record(sent.elapsed().as_micros() as u64)?;
    }
    // Throughput: batches with a window, like the shipper.
    let start = Instant::now();
    let first = next;
    let mut sent_batches = 0u64;
    let mut acked_batches = 0u64;
    while start.elapsed() < THROUGHPUT_FOR {
        while sent_batches - acked_batches < IN_FLIGHT {
            let batch = (0..BATCH)
                .map(|_| {
                    next += 1;
                    model_file_finding(next, 3)
                })
                .collect();
            tx.send(findings(batch)).await?;
            sent_batches += 1;
        }
        acked_up_to(&mut inbound, first + (acked_batches + 1) * BATCH).await?;
        acked_batches += 1;
    }
    while acked_batches < sent_batches {
        acked_up_to(&mut inbound, first + (acked_batches + 1) * BATCH).await?;
        acked_batches += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    *seq = next;
    Ok(Measured {
        findings_per_sec: (acked_batches * BATCH) as f64 / secs,
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
    })
}

/// Reads the stream until an ack covers `want`.
async fn acked_up_to(
    inbound: &mut tonic::Streaming<pb::ControlMessage>,
    want: u64,
) -> anyhow::Result<()> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| anyhow::anyhow!("no ack within 10 s"))??
            .ok_or_else(|| anyhow::anyhow!("the stream ended"))?;
        if let Some(pb::control_message::Body::Ack(a)) = msg.body {
            if a.up_to_seq >= want {
                return Ok(());
            }
        }
    }
}
