//! The replicated control plane (issue #21), three nodes each in a network
//! namespace of its own, mutual TLS, on this 2-core host:
//! - committed findings/s and latency with 1, 16, 256 and 500 agents, one
//!   finding in flight each, sessions spread over the three nodes: shared
//!   raft entries (`batch.v1`) against one entry each
//!   (`--no-write-coalescing`), two rounds each, alternating;
//! - reads that must be current (the read index through the leader)
//!   against local reads (`ClusterStatus`), 16 readers over the nodes;
//! - leader failover over 20 kills (SIGKILL): kill → a write commits
//!   through a survivor;
//! - a node joining a leader that holds 1,000,000 alerts and has purged
//!   its log: snapshot install time against copying the snapshot file,
//!   and the joiner's peak RSS against its RSS before.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigil_integration::netns_cluster::{NetnsCluster, NodeConnector};
use vigil_integration::raw_agent::{findings, hello, model_file_finding};
use vigil_pki::Identity;
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;

use crate::report::{Figure, Report};
use crate::Settings;

const CLIENTS: [usize; 4] = [1, 16, 256, 500];
const ROUNDS: usize = 2;
const FOR: Duration = Duration::from_secs(3);

/// `VIGIL_BENCH_CLUSTER_SECS`: how long each write load runs (default 3 s;
/// longer to profile one).
fn load_for() -> Duration {
    std::env::var("VIGIL_BENCH_CLUSTER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(FOR, Duration::from_secs)
}
const KILLS: usize = 20;
const SNAPSHOT_ALERTS: u64 = 1_000_000;
const CMD: &str = "make bench (VIGIL_BENCH_ONLY=cluster)";

struct Load {
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn median(v: &[f64]) -> f64 {
    let mut x = v.to_vec();
    x.sort_by(|a, b| a.total_cmp(b));
    (x[(x.len() - 1) / 2] + x[x.len() / 2]) / 2.0
}

/// `VIGIL_BENCH_CLUSTER=writes,reads,snapshot` (a comma list; default
/// all) runs only those parts, for working on one of them.
fn part(name: &str) -> bool {
    std::env::var("VIGIL_BENCH_CLUSTER")
        .map(|v| v.split(',').any(|p| p.trim() == name))
        .unwrap_or(true)
}

pub fn cluster(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    s.rt.block_on(async {
        if part("writes") {
            writes(s, report).await?;
        }
        if part("reads") {
            reads_and_failover(s, report).await?;
        }
        if part("snapshot") {
            snapshot_install(s, report).await?;
        }
        Ok(())
    })
}

async fn start(s: &Settings, name: &str, flags: &[&str]) -> anyhow::Result<NetnsCluster> {
    let dir = s.work.path().join(name);
    std::fs::create_dir_all(&dir)?;
    NetnsCluster::start(&dir, 3, flags)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// `clients` agent sessions (agent `i` on node `i % 3 + 1`), each sending
/// one finding at a time and waiting for its ack, for [`FOR`].
async fn agent_load(c: &NetnsCluster, tag: &str, clients: usize) -> anyhow::Result<Load> {
    let mut channels = Vec::new();
    let mut tasks = Vec::new();
    // One certificate per agent (its id), one channel per agent.
    let mut connectors = Vec::new();
    for i in 0..clients {
        let id = format!("bench-{tag}-{i}");
        let who = c.fleet.issue(Identity::agent(&id)?);
        connectors.push((id, c.connector_as(&who), (i % 3) as u8 + 1));
    }
    for (id, connector, node) in &connectors {
        let ch = connector
            .channel(*node)
            .await
            .ok_or_else(|| anyhow::anyhow!("node {node} unreachable"))?;
        channels.push((id.clone(), ch));
    }
    let start = Instant::now();
    for (agent_id, channel) in channels {
        tasks.push(tokio::spawn(crate::ingest_bench::one_finding_at_a_time(
            channel,
            agent_id,
            start,
            load_for(),
        )));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(Load {
        per_sec: all.len() as f64 / secs,
        p50_ms: percentile(&all, 0.5),
        p99_ms: percentile(&all, 0.99),
    })
}

async fn writes(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    // [shared, each][client count] → loads over rounds.
    let mut loads: [Vec<Vec<Load>>; 2] = [
        CLIENTS.iter().map(|_| Vec::new()).collect(),
        CLIENTS.iter().map(|_| Vec::new()).collect(),
    ];
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for mode in order {
            let flags: &[&str] = if mode == 0 {
                &[]
            } else {
                &["--no-write-coalescing"]
            };
            let c = start(s, &format!("writes-{round}-{mode}"), flags).await?;
            for (k, &clients) in CLIENTS.iter().enumerate() {
                let load = agent_load(&c, &format!("{round}{mode}{k}"), clients).await?;
                eprintln!(
                    "cluster writes: {} {clients} clients: {:.0}/s p50 {:.2} ms p99 {:.2} ms",
                    if mode == 0 { "shared" } else { "each" },
                    load.per_sec,
                    load.p50_ms,
                    load.p99_ms
                );
                loads[mode][k].push(load);
            }
        }
    }
    // The issue's target for the cluster: 20,000 batched writes/s, p99
    // under 20 ms (500 agents).
    let last = CLIENTS.len() - 1;
    let shared = |f: fn(&Load) -> f64| median(&loads[0][last].iter().map(f).collect::<Vec<_>>());
    report.push(
        Figure::ratio(
            &format!(
                "3 nodes: committed findings/s, {} agents, shared entries / 20,000 target",
                CLIENTS[last]
            ),
            shared(|l| l.per_sec),
            20_000.0,
            "findings/s",
            CMD,
        )
        .goal(1.0),
    );
    report.push(
        Figure::ratio(
            &format!(
                "3 nodes: finding latency p99, {} agents, shared entries / 20 ms target",
                CLIENTS[last]
            ),
            shared(|l| l.p99_ms),
            20.0,
            "ms",
            CMD,
        )
        .goal_max(1.0),
    );
    for (k, &clients) in CLIENTS.iter().enumerate() {
        let m = |mode: usize, f: fn(&Load) -> f64| {
            median(&loads[mode][k].iter().map(f).collect::<Vec<_>>())
        };
        report.push(Figure::ratio(
            &format!("3 nodes (netns, mTLS): committed findings/s, {clients} agents one in flight each: shared raft entries / one entry each (same run)"),
            m(0, |l| l.per_sec),
            m(1, |l| l.per_sec),
            "findings/s",
            CMD,
        ));
        report.push(Figure::ratio(
            &format!("3 nodes: finding latency p50, {clients} agents, send → ack after commit: shared / each"),
            m(0, |l| l.p50_ms),
            m(1, |l| l.p50_ms),
            "ms",
            CMD,
        ));
        report.push(Figure::ratio(
            &format!("3 nodes: finding latency p99, {clients} agents: shared / each"),
            m(0, |l| l.p99_ms),
            m(1, |l| l.p99_ms),
            "ms",
            CMD,
        ));
    }
    Ok(())
}

/// Reads per second by 16 readers spread over the nodes, for [`FOR`].
async fn reads_per_sec(connector: &NodeConnector, fresh: bool) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..16u8 {
        let mut admin = connector
            .admin_of(r % 3 + 1)
            .await
            .ok_or_else(|| anyhow::anyhow!("node unreachable"))?;
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while start.elapsed() < FOR {
                if fresh {
                    admin
                        .list_revoked_certificates(admin_pb::ListRevokedCertificatesRequest {})
                        .await?;
                } else {
                    admin
                        .cluster_status(admin_pb::ClusterStatusRequest {})
                        .await?;
                }
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

async fn leader_of(c: &NetnsCluster) -> Option<u8> {
    for i in 1..=c.nodes() {
        if !c.is_up(i) {
            continue;
        }
        if let Some(st) = c.status(i).await {
            if st.leader_id != 0 && c.is_up(st.leader_id as u8) {
                return Some(st.leader_id as u8);
            }
        }
    }
    None
}

async fn reads_and_failover(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let mut c = start(s, "failover", &[]).await?;
    let connector = c.connector();
    let (mut fresh, mut local) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            fresh.push(reads_per_sec(&connector, true).await?);
            local.push(reads_per_sec(&connector, false).await?);
        } else {
            local.push(reads_per_sec(&connector, false).await?);
            fresh.push(reads_per_sec(&connector, true).await?);
        }
    }
    report.push(Figure::ratio(
        "3 nodes: reads that must be current (read index via the leader), 16 readers: reads/s / local reads/s (ClusterStatus, same run)",
        median(&fresh),
        median(&local),
        "reads/s",
        CMD,
    ));

    let mut failovers = Vec::new();
    let mut serial = 0u64;
    for kill in 0..KILLS {
        let leader = leader_of(&c)
            .await
            .ok_or_else(|| anyhow::anyhow!("no leader before kill {kill}"))?;
        let survivor = (1..=3).find(|i| *i != leader).unwrap();
        let mut admin = connector
            .admin_of(survivor)
            .await
            .ok_or_else(|| anyhow::anyhow!("node {survivor} unreachable"))?;
        c.kill(leader);
        let killed = Instant::now();
        loop {
            serial += 1;
            let call = admin.revoke_certificate(admin_pb::RevokeCertificateRequest {
                serial: format!("{serial:x}"),
                identity: "bench".into(),
                reason: "failover bench".into(),
            });
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), call).await {
                break;
            }
            if killed.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("no write committed within 30 s of killing {leader}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failovers.push(killed.elapsed().as_secs_f64() * 1000.0);
        c.start_node(leader, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        c.equal_digests(Duration::from_secs(30))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    failovers.sort_by(|a, b| a.total_cmp(b));
    eprintln!("failovers (ms): {failovers:.0?}");
    for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
        report.push(
            Figure::ratio(
                &format!("3 nodes: leader SIGKILLed → a write commits through a survivor, {name} over {KILLS} kills / 2 s goal"),
                percentile(&failovers, q),
                2000.0,
                "ms",
                CMD,
            )
            .goal_max(1.0),
        );
    }
    Ok(())
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn snapshot_install(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let dir = s.work.path().join("snapshot");
    std::fs::create_dir_all(&dir)?;
    let flags = ["--snapshot-every", "200", "--alert-retention-count", "0"];
    let mut c = NetnsCluster::start_first(&dir, 2, &flags)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // 1,000,000 alerts: 8 agents, batches of 1,000 findings.
    let filled = Instant::now();
    let agents = 8u64;
    let per_agent = SNAPSHOT_ALERTS / agents;
    let mut tasks = Vec::new();
    for a in 0..agents {
        let id = format!("fill-{a}");
        let who = c.fleet.issue(Identity::agent(&id)?);
        let channel = c
            .connector_as(&who)
            .channel(1)
            .await
            .ok_or_else(|| anyhow::anyhow!("node 1 unreachable"))?;
        tasks.push(tokio::spawn(async move {
            let mut client = AgentServiceClient::new(channel);
            let (tx, rx) = mpsc::channel(4);
            tx.send(hello(&id, &id)).await?;
            let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
            let mut seq = 0;
            while seq < per_agent {
                let batch: Vec<_> = (seq + 1..=(seq + 1000).min(per_agent))
                    .map(|q| model_file_finding(q, 3))
                    .collect();
                seq += batch.len() as u64;
                tx.send(findings(batch)).await?;
                crate::transport_bench::acked_up_to(&mut inbound, seq).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    eprintln!(
        "snapshot bench: {SNAPSHOT_ALERTS} alerts committed in {:?}",
        filled.elapsed()
    );
    // Let the leader snapshot what it holds and purge its log.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let leader_snapshot = std::fs::read_dir(c.data_dir(1).join("snapshots.v1"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("snapshot-"))
        })
        .ok_or_else(|| anyhow::anyhow!("the leader has no snapshot file"))?;
    let size = std::fs::metadata(&leader_snapshot)?.len();

    // Baseline: copying the snapshot file, synced.
    let copy = dir.join("copy.snap");
    let copied = Instant::now();
    std::fs::copy(&leader_snapshot, &copy)?;
    std::fs::File::open(&copy)?.sync_all()?;
    let copy_secs = copied.elapsed().as_secs_f64();
    std::fs::remove_file(&copy)?;

    let joined = Instant::now();
    c.start_node(2, Some(c.net.ip(1)))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pid = c
        .pid(2)
        .ok_or_else(|| anyhow::anyhow!("node 2 not running"))?;
    let rss_before = status_kib(pid, "VmRSS").unwrap_or(0);
    let mut admin = c
        .admin_of(1)
        .await
        .ok_or_else(|| anyhow::anyhow!("node 1 unreachable"))?;
    admin
        .add_node(admin_pb::AddNodeRequest {
            node_id: 2,
            address: c.address(2),
        })
        .await?;
    c.equal_digests(Duration::from_secs(600))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let install_secs = joined.elapsed().as_secs_f64();
    let peak = status_kib(pid, "VmHWM").unwrap_or(0);
    let log = std::fs::read_to_string(dir.join("node-2.log")).unwrap_or_default();
    if !log.contains("installed a snapshot") {
        anyhow::bail!("node 2 caught up without a snapshot");
    }
    eprintln!(
        "snapshot bench: {size} bytes; install {install_secs:.1} s vs copy {copy_secs:.2} s; joiner RSS {rss_before} KiB → peak {peak} KiB"
    );
    report.push(Figure::ratio(
        &format!("node joining a leader with {SNAPSHOT_ALERTS} alerts (snapshot {:.0} MiB, log purged): add → equal state / copying the snapshot file", size as f64 / 1048576.0),
        install_secs,
        copy_secs,
        "s",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!("joiner's peak RSS while installing the {SNAPSHOT_ALERTS}-alert snapshot / its RSS before"),
        peak as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        "MiB",
        CMD,
    ));
    Ok(())
}
