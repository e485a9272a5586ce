//! Agent → control plane over mutual TLS against plaintext, side by side
//! in the same run (issue #20: target ≥ 0.9× plaintext).
//!
//! One agent session per control plane (a raw gRPC stream, as the agent's
//! shipper speaks it) sends model-file findings: for latency, one finding
//! at a time, timed from the send to its ack (the ack comes after raft
//! committed and applied it), the two sessions taking turns probe by
//! probe; for throughput, batches of 100 with up to 10 batches in flight
//! for a fixed time, rounds alternating which side goes first; the
//! throughput figure is the median round.

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

const ROUNDS: usize = 4;
const LATENCY_PROBES: u64 = 1000;
const THROUGHPUT_FOR: Duration = Duration::from_secs(4);
const BATCH: u64 = 100;
const IN_FLIGHT: u64 = 10;

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
    let (mut plain_session, mut tls_session) = s.rt.block_on(async {
        let plain = Session::open(
            vigil_integration::try_connect(&plain.endpoint()).await?,
            "bench-plain",
        )
        .await?;
        let tls = Session::open(fleet.channel(tls_port, &agent_cert).await?, "bench-tls").await?;
        anyhow::Ok((plain, tls))
    })?;
    // Latency: one finding at a time, alternating between the two
    // sessions probe by probe (which one goes first flips every probe),
    // so a burst of noise on this shared VM or the other control plane's
    // background work (sled flushing after a throughput round) falls on
    // both sides alike.
    let mut plain_hist = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut tls_hist = hdrhistogram::Histogram::<u64>::new(3)?;
    s.rt.block_on(async {
        for i in 0..LATENCY_PROBES * ROUNDS as u64 {
            if i % 2 == 0 {
                plain_hist.record(plain_session.one_finding().await?)?;
                tls_hist.record(tls_session.one_finding().await?)?;
            } else {
                tls_hist.record(tls_session.one_finding().await?)?;
                plain_hist.record(plain_session.one_finding().await?)?;
            }
        }
        anyhow::Ok(())
    })?;
    // Throughput: rounds in the order plain, TLS, TLS, plain, ... so
    // neither side always runs right after the other's burst.
    let mut plain_runs = Vec::new();
    let mut tls_runs = Vec::new();
    s.rt.block_on(async {
        for round in 0..ROUNDS {
            if round % 2 == 0 {
                plain_runs.push(plain_session.throughput().await?);
                tls_runs.push(tls_session.throughput().await?);
            } else {
                tls_runs.push(tls_session.throughput().await?);
                plain_runs.push(plain_session.throughput().await?);
            }
        }
        anyhow::Ok(())
    })?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[(v.len() - 1) / 2] + v[v.len() / 2]) / 2.0
    };
    let cmd = "make bench (VIGIL_BENCH_ONLY=transport)";
    report.push(
        Figure::ratio(
            "findings/s agent → committed, mutual TLS / plaintext (same run)",
            median(&mut tls_runs),
            median(&mut plain_runs),
            "findings/s",
            cmd,
        )
        .goal(0.9),
    );
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        report.push(
            Figure::ratio(
                &format!(
                    "latency {label} of one finding, send → ack after commit, mutual TLS / plaintext (same run)"
                ),
                tls_hist.value_at_quantile(q) as f64 / 1000.0,
                plain_hist.value_at_quantile(q) as f64 / 1000.0,
                "ms",
                cmd,
            )
            .goal_max(1.0 / 0.9),
        );
    }
    drop((plain_session, tls_session));
    drop((plain, tls));
    Ok(())
}

/// One agent session, as the agent's shipper speaks it; `seq` is the
/// agent's last seq (seqs are consecutive, as an agent's are).
struct Session {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ControlMessage>,
    seq: u64,
}

impl Session {
    async fn open(channel: Channel, agent_id: &str) -> anyhow::Result<Session> {
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(64);
        tx.send(hello(agent_id, agent_id)).await?;
        let inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Session {
            tx,
            inbound,
            seq: 0,
        })
    }

    /// Sends one finding and waits for its ack: microseconds.
    async fn one_finding(&mut self) -> anyhow::Result<u64> {
        self.seq += 1;
        let sent = Instant::now();
        self.tx
            .send(findings(vec![model_file_finding(self.seq, 3)]))
            .await?;
        acked_up_to(&mut self.inbound, self.seq).await?;
        Ok(sent.elapsed().as_micros() as u64)
    }

    /// Batches with a window, like the shipper, for a fixed time:
    /// findings per second acked.
    async fn throughput(&mut self) -> anyhow::Result<f64> {
        let start = Instant::now();
        let first = self.seq;
        let mut sent_batches = 0u64;
        let mut acked_batches = 0u64;
        while start.elapsed() < THROUGHPUT_FOR {
            while sent_batches - acked_batches < IN_FLIGHT {
                let batch = (0..BATCH)
                    .map(|_| {
                        self.seq += 1;
                        model_file_finding(self.seq, 3)
                    })
                    .collect();
                self.tx.send(findings(batch)).await?;
                sent_batches += 1;
            }
            acked_up_to(&mut self.inbound, first + (acked_batches + 1) * BATCH).await?;
            acked_batches += 1;
        }
        while acked_batches < sent_batches {
            acked_up_to(&mut self.inbound, first + (acked_batches + 1) * BATCH).await?;
            acked_batches += 1;
        }
        Ok((acked_batches * BATCH) as f64 / start.elapsed().as_secs_f64())
    }
}

/// Reads the stream until an ack covers `want`.
pub async fn acked_up_to(
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
