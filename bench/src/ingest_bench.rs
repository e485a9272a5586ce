//! Many agents at once (issue #21): one control plane lets the heartbeats
//! and finding batches that arrive together share a raft entry
//! (`batch.v1`), the other gives each its own (`--no-write-coalescing`),
//! side by side in the same run. Each of `AGENTS` raw agent sessions (the
//! shipper's stream, plaintext on loopback) sends one finding at a time
//! and waits for its ack (after commit), for a fixed time; rounds
//! alternate which control plane goes first; figures are medians.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigil_integration::raw_agent::{findings, hello, model_file_finding};
use vigil_integration::{free_port, ControlPlane};
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;

use crate::report::{Figure, Report};
use crate::Settings;

const AGENTS: usize = 200;
const ROUNDS: usize = 2;
const FOR: Duration = Duration::from_secs(4);

struct Round {
    findings_per_sec: f64,
    p99_ms: f64,
}

pub fn ingest(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let shared = ControlPlane::try_start(&s.work.path().join("cp-shared"), free_port(), &[])?;
    let each = ControlPlane::try_start(
        &s.work.path().join("cp-each"),
        free_port(),
        &["--no-write-coalescing"],
    )?;
    s.rt.block_on(shared.try_wait_leader())?;
    s.rt.block_on(each.try_wait_leader())?;
    let (mut shared_rounds, mut each_rounds) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let order: [(&ControlPlane, &mut Vec<Round>, &str); 2] = if round % 2 == 0 {
            [
                (&shared, &mut shared_rounds, "s"),
                (&each, &mut each_rounds, "e"),
            ]
        } else {
            [
                (&each, &mut each_rounds, "e"),
                (&shared, &mut shared_rounds, "s"),
            ]
        };
        for (cp, rounds, tag) in order {
            rounds.push(s.rt.block_on(one_round(cp, &format!("{tag}{round}")))?);
        }
    }
    let median = |v: &[Round], f: fn(&Round) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(|a, b| a.total_cmp(b));
        (x[(x.len() - 1) / 2] + x[x.len() / 2]) / 2.0
    };
    let cmd = "make bench (VIGIL_BENCH_ONLY=ingest)";
    report.push(Figure::ratio(
        &format!("findings/s from {AGENTS} agents, one in flight each: shared raft entries / one entry each (same run)"),
        median(&shared_rounds, |r| r.findings_per_sec),
        median(&each_rounds, |r| r.findings_per_sec),
        "findings/s",
        cmd,
    ));
    report.push(Figure::ratio(
        &format!("latency p99 of a finding from {AGENTS} agents, send → ack after commit: shared entries / one entry each (same run)"),
        median(&shared_rounds, |r| r.p99_ms),
        median(&each_rounds, |r| r.p99_ms),
        "ms",
        cmd,
    ));
    drop((shared, each));
    Ok(())
}

async fn one_round(cp: &ControlPlane, tag: &str) -> anyhow::Result<Round> {
    let channel = vigil_integration::try_connect(&cp.endpoint()).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..AGENTS {
        let channel = channel.clone();
        let agent_id = format!("ingest-{tag}-{i}");
        tasks.push(tokio::spawn(one_finding_at_a_time(
            channel, agent_id, start, FOR,
        )));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    let p99 = all
        .get(((all.len() as f64) * 0.99) as usize)
        .copied()
        .unwrap_or(0.0);
    Ok(Round {
        findings_per_sec: all.len() as f64 / secs,
        p99_ms: p99,
    })
}

/// One agent session on `channel`: sends one finding, waits for its ack
/// (after commit), and again, until `for_` after `start`; the latencies in
/// ms.
pub async fn one_finding_at_a_time(
    channel: tonic::transport::Channel,
    agent_id: String,
    start: Instant,
    for_: Duration,
) -> anyhow::Result<Vec<f64>> {
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(hello(&agent_id, &agent_id)).await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut latencies = Vec::new();
    let mut seq = 0;
    while start.elapsed() < for_ {
        seq += 1;
        let sent = Instant::now();
        tx.send(findings(vec![model_file_finding(seq, 3)])).await?;
        crate::transport_bench::acked_up_to(&mut inbound, seq).await?;
        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(latencies)
}
