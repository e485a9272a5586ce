//! SIEM export (issue #25): how fast subscribers drain the event stream,
//! what that costs the control plane in memory, and how long a real
//! sensor event takes to reach a subscriber.
//!
//! Throughput: `EVENTS` findings are committed first (raw agent sessions,
//! batches of `BATCH`), then 1 and then 10 SIEM subscribers read them all
//! from cursor 0; the baseline, side by side on the same control plane and
//! backlog, is as many admin `FollowAlerts` feeds (the same alerts, typed,
//! without OCSF or filtering). Rounds alternate which goes first; medians.
//!
//! Latency: a real agent (eBPF where it loads) sees a process open model
//! files; a SIEM subscriber and an admin feed, attached together, each time
//! the finding from the syscall (`observed_at`) to its arrival.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vigil_integration::{free_port, ControlPlane};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;
use vigil_proto::siem::v1 as siem_pb;
use vigil_proto::siem::v1::siem_export_client::SiemExportClient;

use crate::report::{Figure, Report};
use crate::siem_backlog::{preload, subscribe_from_start};
use crate::Settings;

const EVENTS: u64 = 60_000;
const BATCH: u64 = 500;
const AGENTS: u64 = 4;
const ROUNDS: usize = 3;
const CMD: &str = "make bench (VIGIL_BENCH_ONLY=siem)";

pub fn siem(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let cp = ControlPlane::try_start(&s.work.path().join("cp-siem"), free_port(), &[])?;
    s.rt.block_on(cp.try_wait_leader())?;
    let pid = cp.daemon.id();
    s.rt.block_on(preload(&cp, EVENTS, AGENTS, BATCH, "siem-bench"))?;
    let idle_rss = super::rss_mib(pid, "VmRSS:");
    for subscribers in [1usize, 10] {
        let (mut siem, mut feed, mut peak) = (Vec::new(), Vec::new(), idle_rss);
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for is_siem in order {
                let watch = RssWatch::start(pid);
                let secs = s.rt.block_on(drain(&cp.endpoint(), subscribers, is_siem))?;
                let rate = (EVENTS as f64 * subscribers as f64) / secs;
                if is_siem {
                    peak = peak.max(watch.peak());
                    siem.push(rate);
                } else {
                    feed.push(rate);
                }
            }
        }
        let (siem, feed) = (super::median(&mut siem), super::median(&mut feed));
        let name = format!(
            "SIEM export events/s to {subscribers} subscriber{} from a backlog of {EVENTS}: SiemExport (OCSF) / admin FollowAlerts (same run)",
            if subscribers == 1 { "" } else { "s" }
        );
        println!("{name}: {siem:.0} / {feed:.0}");
        report.push(Figure::ratio(&name, siem, feed, "events/s", CMD));
        if subscribers == 1 {
            report.push(
                Figure::ratio(
                    "SIEM export events/s to 1 subscriber / 50,000 goal",
                    siem,
                    50_000.0,
                    "events/s",
                    CMD,
                )
                .goal(1.0),
            );
        }
        report.push(Figure::ratio(
            &format!(
                "control-plane RSS peak while {subscribers} SIEM subscriber{} drain / RSS before (same run)",
                if subscribers == 1 { "" } else { "s" }
            ),
            peak,
            idle_rss,
            "MiB",
            CMD,
        ));
    }
    drop(cp);
    latency(s, report)
}

/// Seconds until `n` subscribers (SIEM or admin feeds) each read `EVENTS`
/// events from the start.
async fn drain(endpoint: &str, n: usize, is_siem: bool) -> anyhow::Result<f64> {
    let channel = vigil_integration::try_connect(endpoint).await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..n {
        let channel = channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = 0u64;
            if is_siem {
                let mut stream = subscribe_from_start(channel, false).await?;
                while let Some(ev) = stream.message().await? {
                    if ev.kind == siem_pb::EventKind::Finding as i32 || ev.alert.is_some() {
                        got += 1;
                    }
                    if got == EVENTS {
                        break;
                    }
                }
            } else {
                let mut stream = follow_alerts_from_start(channel).await?;
                while stream.message().await?.is_some() {
                    got += 1;
                    if got == EVENTS {
                        break;
                    }
                }
            }
            anyhow::ensure!(got == EVENTS, "the stream ended after {got} of {EVENTS}");
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The admin feed of alerts from the first (the baseline of the SIEM
/// export).
async fn follow_alerts_from_start(
    channel: tonic::transport::Channel,
) -> anyhow::Result<tonic::Streaming<vigil_proto::types::v1::Alert>> {
    Ok(AdminServiceClient::new(channel)
        .follow_alerts(admin_pb::QueryAlertsRequest {
            after_index: 0,
            limit: 0,
        })
        .await?
        .into_inner())
}

/// Samples a process's RSS every 10 ms until dropped.
struct RssWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peak: std::sync::Arc<std::sync::Mutex<f64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let peak = std::sync::Arc::new(std::sync::Mutex::new(0.0f64));
        let thread = std::thread::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let now = super::rss_mib(pid, "VmRSS:");
                    if let Ok(mut p) = peak.lock() {
                        *p = p.max(now);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        RssWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.lock().map(|p| *p).unwrap_or(0.0)
    }
}

/// A real agent's findings, syscall → SIEM subscriber and → admin feed.
fn latency(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let cp = ControlPlane::try_start(&s.work.path().join("cp-siem-latency"), free_port(), &[])?;
    s.rt.block_on(cp.try_wait_leader())?;
    let agent = super::start_agent_with(
        s,
        &cp.endpoint(),
        "siem-latency",
        &["--max-findings-per-signal", "1000000"],
    )?;
    let dir = s.work.path().join("siem-latency");
    std::fs::create_dir_all(&dir)?;
    // First sight of this binary waits for its digest: not timed.
    std::fs::File::create(dir.join("first-sight.onnx"))?;
    std::thread::sleep(Duration::from_secs(2));
    let endpoint = cp.endpoint();
    let (siem_tx, mut siem_rx) = mpsc::unbounded_channel::<(String, i64, i64)>();
    let (feed_tx, mut feed_rx) = mpsc::unbounded_channel::<(String, i64, i64)>();
    let _siem = s.rt.spawn({
        let endpoint = endpoint.clone();
        async move {
            let channel = vigil_integration::try_connect(&endpoint).await?;
            let mut stream = SiemExportClient::new(channel)
                .subscribe(siem_pb::SubscribeRequest {
                    cursor: 0,
                    include_record: true,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(ev) = stream.message().await? {
                if let Some(a) = ev.alert {
                    let f = a.finding.unwrap_or_default();
                    let path = f.file.map(|f| f.path).unwrap_or_default();
                    let _ = siem_tx.send((path, f.observed_at_unix_nanos, unix_nanos()));
                }
            }
            anyhow::Ok(())
        }
    });
    let _feed = s.rt.spawn(async move {
        let channel = vigil_integration::try_connect(&endpoint).await?;
        let mut stream = follow_alerts_from_start(channel).await?;
        while let Some(a) = stream.message().await? {
            let f = a.finding.unwrap_or_default();
            let path = f.file.map(|f| f.path).unwrap_or_default();
            let _ = feed_tx.send((path, f.observed_at_unix_nanos, unix_nanos()));
        }
        anyhow::Ok(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let probes = 300;
    for i in 0..probes {
        std::fs::File::create(dir.join(format!("probe-{i}.onnx")))?;
        std::thread::sleep(Duration::from_millis(10));
    }
    let collect = |rx: &mut mpsc::UnboundedReceiver<(String, i64, i64)>| {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
        let deadline = Instant::now() + Duration::from_secs(30);
        while h.len() < probes && Instant::now() < deadline {
            match rx.try_recv() {
                Ok((path, observed, arrived)) => {
                    if path.contains("/siem-latency/probe-") && observed > 0 {
                        let _ = h.record(((arrived - observed).max(0) / 1000) as u64);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        h
    };
    let siem = collect(&mut siem_rx);
    let feed = collect(&mut feed_rx);
    anyhow::ensure!(
        siem.len() > probes * 9 / 10 && feed.len() > probes * 9 / 10,
        "only {} (SIEM) and {} (admin feed) of {probes} probes arrived",
        siem.len(),
        feed.len()
    );
    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "sensor event → SIEM subscriber: p50 {:.2} ms, p99 {:.2} ms; → admin feed p50 {:.2} ms, p99 {:.2} ms ({} probes)",
        ms(&siem, 0.5),
        ms(&siem, 0.99),
        ms(&feed, 0.5),
        ms(&feed, 0.99),
        siem.len()
    );
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        report.push(Figure::ratio(
            &format!("sensor event → SIEM subscriber latency {label}: SiemExport / admin FollowAlerts (same run)"),
            ms(&siem, q),
            ms(&feed, q),
            "ms",
            CMD,
        ));
    }
    report.push(
        Figure::ratio(
            "sensor event → SIEM subscriber latency p99 / 100 ms goal",
            ms(&siem, 0.99),
            100.0,
            "ms",
            CMD,
        )
        .goal_max(1.0),
    );
    drop(agent);
    drop(cp);
    Ok(())
}

fn unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
