//! `vigilctl siem otlp` (the OTLP/gRPC forwarder of the SIEM export): how
//! many events a second it pushes to a collector, from a backlog.
//!
//! `EVENTS` findings are committed first (raw agent sessions, batches of
//! `BATCH`); then, per round and in alternating order, a fresh forwarder
//! (the release `vigilctl`, cursor file from 0, default batching) pushes
//! them all to:
//! - the Python OTLP receiver (`integration/python/otlp_receiver.py`:
//!   grpcio with OpenTelemetry's generated stubs, counting records), the
//!   collector a user would more likely run than ours;
//! - a Rust receiver in this process (tonic, counting records): the
//!   forwarder's own ceiling, the baseline;
//! - and, for what the forwarding costs over reading, a bare SIEM
//!   subscriber in this process draining the same backlog.
//!
//! A forwarder's time runs from its spawn until its cursor file names the
//! newest event (so it includes the process start and the last batch's
//! acknowledgement and fsync). Medians of `ROUNDS`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_stream::wrappers::TcpListenerStream;
use vigil_integration::siem_clients::{complete_lines, OtlpReceiver};
use vigil_integration::{free_port, try_binary, ControlPlane, Killed};
use vigil_proto::otlp::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use vigil_proto::otlp::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};

use crate::report::{Figure, Report};
use crate::siem_backlog::{preload, subscribe_from_start};
use crate::Settings;

const EVENTS: u64 = 30_000;
const BATCH: u64 = 500;
const AGENTS: u64 = 2;
const ROUNDS: usize = 3;
const CMD: &str = "make bench (VIGIL_BENCH_ONLY=siem-otlp)";

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    Python,
    Rust,
    Bare,
}

pub fn siem_otlp(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let work = s.work.path().join("siem-otlp");
    std::fs::create_dir_all(&work)?;
    let cp = ControlPlane::try_start(&work.join("cp"), free_port(), &[])?;
    s.rt.block_on(cp.try_wait_leader())?;
    s.rt.block_on(preload(&cp, EVENTS, AGENTS, BATCH, "otlp-bench"))?;
    let (events, head) = s.rt.block_on(drain(&cp.endpoint()))?.1;
    anyhow::ensure!(events >= EVENTS, "only {events} events in the export");
    let rust_records = Arc::new(AtomicU64::new(0));
    let rust_url =
        s.rt.block_on(serve_counting_receiver(rust_records.clone()))?;

    let (mut python, mut rust, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let mut order = [Sink::Python, Sink::Rust, Sink::Bare];
        order.rotate_left(round % 3);
        for sink in order {
            let dir = work.join(format!("round-{round}"));
            std::fs::create_dir_all(&dir)?;
            match sink {
                Sink::Python => {
                    let out = dir.join("python-receiver.jsonl");
                    let receiver = OtlpReceiver::try_start(
                        free_port(),
                        &out,
                        &dir.join("python-receiver.log"),
                        true,
                    )?;
                    let secs = push(&cp.endpoint(), &receiver.endpoint(), head, &dir, "python")?;
                    let got: u64 = complete_lines(&out)
                        .iter()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        .filter_map(|v| v["records"].as_u64())
                        .sum();
                    anyhow::ensure!(got >= events, "the Python receiver got {got} of {events}");
                    python.push(events as f64 / secs);
                }
                Sink::Rust => {
                    let before = rust_records.load(Ordering::Relaxed);
                    let secs = push(&cp.endpoint(), &rust_url, head, &dir, "rust")?;
                    let got = rust_records.load(Ordering::Relaxed) - before;
                    anyhow::ensure!(got >= events, "the Rust receiver got {got} of {events}");
                    rust.push(events as f64 / secs);
                }
                Sink::Bare => {
                    let (secs, _) = s.rt.block_on(drain(&cp.endpoint()))?;
                    bare.push(events as f64 / secs);
                }
            }
        }
    }
    let (python, rust, bare) = (
        super::median(&mut python),
        super::median(&mut rust),
        super::median(&mut bare),
    );
    println!(
        "vigilctl siem otlp events/s from a backlog of {events}: to the Python receiver {python:.0}, to a Rust receiver {rust:.0}; a bare SIEM subscriber drains {bare:.0}"
    );
    report.push(Figure::ratio(
        &format!("OTLP push events/s (vigilctl siem otlp, backlog of {EVENTS}): Python OTLP receiver (grpcio, opentelemetry-proto) / Rust in-process receiver (same run)"),
        python,
        rust,
        "events/s",
        CMD,
    ));
    report.push(Figure::ratio(
        &format!("OTLP push events/s (vigilctl siem otlp → Rust receiver, backlog of {EVENTS}) / bare SIEM subscriber drain (same run)"),
        rust,
        bare,
        "events/s",
        CMD,
    ));
    Ok(())
}

/// Seconds from spawning a forwarder (cursor file from 0) to `collector`
/// until its cursor file names `head`.
fn push(cp: &str, collector: &str, head: u64, dir: &Path, name: &str) -> anyhow::Result<f64> {
    let cursor_file = dir.join(format!("{name}.cursor"));
    let log = std::fs::File::create(dir.join(format!("{name}-vigilctl.log")))?;
    let start = Instant::now();
    let _forwarder = Killed(
        std::process::Command::new(try_binary("vigilctl")?)
            .args(["--endpoint", cp, "siem", "otlp", "--collector", collector])
            .arg("--cursor-file")
            .arg(&cursor_file)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()?,
    );
    let deadline = start + Duration::from_secs(300);
    loop {
        let saved: u64 = std::fs::read_to_string(&cursor_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if saved >= head {
            return Ok(start.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the forwarder to {name} reached cursor {saved} of {head} in 300 s; its log: {}",
            std::fs::read_to_string(dir.join(format!("{name}-vigilctl.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A bare subscriber reading every event from cursor 0 to the head:
/// seconds taken, and (events, newest cursor).
async fn drain(endpoint: &str) -> anyhow::Result<(f64, (u64, u64))> {
    let channel = vigil_integration::try_connect(endpoint).await?;
    let start = Instant::now();
    let mut stream = subscribe_from_start(channel, true).await?;
    let (mut n, mut head) = (0u64, 0u64);
    while let Some(ev) = stream.message().await? {
        n += 1;
        head = ev.cursor;
    }
    Ok((start.elapsed().as_secs_f64(), (n, head)))
}

/// An OTLP logs receiver in this process that counts records; its URL.
async fn serve_counting_receiver(records: Arc<AtomicU64>) -> anyhow::Result<String> {
    struct Counting(Arc<AtomicU64>);
    #[tonic::async_trait]
    impl LogsService for Counting {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            let n: usize = request
                .get_ref()
                .resource_logs
                .iter()
                .flat_map(|r| &r.scope_logs)
                .map(|s| s.log_records.len())
                .sum();
            self.0.fetch_add(n as u64, Ordering::Relaxed);
            Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                LogsServiceServer::new(Counting(records)).max_decoding_message_size(16 << 20),
            )
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Ok(format!("http://{addr}"))
}
