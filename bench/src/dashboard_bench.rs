//! The SOC dashboard at issue #26's scale: one control plane (single
//! node, plaintext on loopback) holding 2,000 hosts and 1,000,000
//! findings, its dashboard's JSON API timed page by page as a viewer
//! sees it, against the issue's 300 ms goal.
//!
//! Load: 2,000 raw agent sessions (agent id `dash-NNNN`, hostname
//! `ws-NNNN.bench`), 16 at a time over 16 connections; each says hello,
//! sends a heartbeat and its 500 findings in one batch (rules, severities,
//! signals, executables and model paths varied), and waits for the ack
//! after commit. The sessions stay open; each sends a second heartbeat
//! once all are loaded, so no host reads as offline while the pages are
//! timed.
//!
//! Pages: a viewer logs in over HTTP (POST /api/login), then each API is
//! asked [`REQUESTS`] times, one request at a time (a fresh connection
//! each, read to its end), after [`WARMUP`] untimed ones; p50 and p99 in
//! ms. Then the control plane's RSS.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigil_integration::raw_agent::{findings, heartbeat, hello};
use vigil_integration::{free_port, ControlPlane};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;
use vigil_proto::types::v1 as types_pb;

use crate::report::{Figure, Report};
use crate::Settings;

const HOSTS: usize = 2_000;
const FINDINGS: u64 = 1_000_000;
const PER_HOST: u64 = FINDINGS / HOSTS as u64;
/// Agent sessions loading at once (one connection each).
const WORKERS: usize = 16;
const REQUESTS: usize = 50;
const WARMUP: usize = 2;
const GOAL_MS: f64 = 300.0;
const CMD: &str = "make bench (VIGIL_BENCH_ONLY=dashboard)";

const RULES: [&str; 12] = [
    "model-file-opened",
    "llm-runtime-exec",
    "gguf-loaded",
    "safetensors-read",
    "onnx-runtime",
    "pickle-model-loaded",
    "cuda-context",
    "ollama-serving",
    "openai-egress",
    "hf-hub-download",
    "vllm-serving",
    "torch-import",
];
const EXES: [&str; 10] = [
    "/usr/bin/python3",
    "/usr/local/bin/ollama",
    "/opt/conda/bin/python",
    "/usr/bin/llama-server",
    "/home/dev/.venv/bin/python",
    "/usr/local/bin/vllm",
    "/usr/bin/node",
    "/opt/lmstudio/lms",
    "/usr/bin/java",
    "/snap/bin/jupyter",
];

fn agent_id(h: usize) -> String {
    format!("dash-{h:04}")
}

fn hostname(h: usize) -> String {
    format!("ws-{h:04}.bench")
}

/// Finding `k` (0-based) of host `h`, seq `k + 1`.
fn finding(h: usize, k: u64) -> types_pb::Finding {
    let g = h as u64 * PER_HOST + k;
    let runtime = g % 5 == 4;
    types_pb::Finding {
        seq: k + 1,
        rule_id: RULES[((g * 7 + h as u64) % RULES.len() as u64) as usize].into(),
        // Info .. critical, skewed to the low end.
        severity: [1, 1, 2, 2, 2, 3, 3, 4, 4, 5][(g % 10) as usize],
        signal: if runtime {
            types_pb::SignalKind::AiRuntime as i32
        } else {
            types_pb::SignalKind::ModelFile as i32
        },
        observed_at_unix_nanos: 1,
        process: Some(types_pb::Process {
            pid: 1000 + (g % 50) as u32,
            ppid: 1,
            exe: EXES[((g / 3 + h as u64) % EXES.len() as u64) as usize].into(),
            ..Default::default()
        }),
        file: (!runtime).then(|| types_pb::FileObject {
            path: format!("/models/m{:04}.gguf", (g * 31) % 5_000),
            model: None,
        }),
        net: None,
        gpu: None,
        action: String::new(),
        summary: "bench finding".into(),
    }
}

fn counters() -> pb::Heartbeat {
    pb::Heartbeat {
        counters: Some(types_pb::SensorCounters::default()),
        ..Default::default()
    }
}

/// An agent session kept open: its sender (the stream lasts while it is
/// held) and what the control plane sends back.
type Session = (
    mpsc::Sender<pb::AgentMessage>,
    tonic::Streaming<pb::ControlMessage>,
);

/// Hosts `h` with `h % WORKERS == w`, one after another on one channel.
async fn load_worker(
    channel: tonic::transport::Channel,
    w: usize,
    started: Instant,
) -> anyhow::Result<Vec<Session>> {
    let mut client = AgentServiceClient::new(channel);
    let mut sessions = Vec::new();
    for h in (w..HOSTS).step_by(WORKERS) {
        let (tx, rx) = mpsc::channel(4);
        tx.send(hello(&agent_id(h), &hostname(h))).await?;
        tx.send(heartbeat(counters())).await?;
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        let batch: Vec<_> = (0..PER_HOST).map(|k| finding(h, k)).collect();
        tx.send(findings(batch)).await?;
        crate::transport_bench::acked_up_to(&mut inbound, PER_HOST).await?;
        sessions.push((tx, inbound));
        if w == 0 && (sessions.len() % 25 == 0) {
            eprintln!(
                "dashboard bench: ~{} hosts, ~{} findings committed ({:.0} s)",
                sessions.len() * WORKERS,
                sessions.len() as u64 * WORKERS as u64 * PER_HOST,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(sessions)
}

/// One HTTP/1.1 request on a fresh connection, read to its end: (status,
/// head, body).
async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<(u16, String, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf))
        .await
        .context("no whole answer within 60 s")??;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("an answer without a head")?;
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, head, buf[split + 4..].to_vec()))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

/// `VmRSS` of a process in MiB.
fn rss_mib(pid: u32) -> f64 {
    crate::rss_mib(pid, "VmRSS:")
}

pub fn dashboard(s: &Settings, report: &mut Report) -> anyhow::Result<()> {
    let dash_port = free_port();
    let listen = format!("127.0.0.1:{dash_port}");
    let cp = ControlPlane::try_start(
        &s.work.path().join("cp-dashboard"),
        free_port(),
        &["--dashboard-listen", &listen],
    )?;
    s.rt.block_on(cp.try_wait_leader())?;
    let pid = cp.daemon.id();
    let rss_idle = rss_mib(pid);
    s.rt.block_on(run(&cp, dash_port, pid, rss_idle, report))
}

async fn run(
    cp: &ControlPlane,
    port: u16,
    pid: u32,
    rss_idle: f64,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Load.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let channel = vigil_integration::try_connect(&cp.endpoint()).await?;
        tasks.push(tokio::spawn(load_worker(channel, w, started)));
    }
    let mut sessions = Vec::new();
    for t in tasks {
        sessions.extend(t.await??);
    }
    let load_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "dashboard bench: {HOSTS} hosts, {FINDINGS} findings committed in {load_secs:.1} s ({:.0} findings/s)",
        FINDINGS as f64 / load_secs
    );
    for (tx, _) in &sessions {
        tx.send(heartbeat(counters())).await?;
    }

    // A viewer.
    cp.admin()
        .await
        .put_user(admin_pb::PutUserRequest {
            name: "bench-viewer".into(),
            role: "viewer".into(),
            password: Some("bench-viewer-password".into()),
            disabled: None,
            create_only: false,
        })
        .await?;
    let (status, head, body) = http(
        port,
        "POST",
        "/api/login",
        &[("content-type", "application/json")],
        br#"{"name":"bench-viewer","password":"bench-viewer-password"}"#,
    )
    .await?;
    if status != 200 {
        bail!("login: {status} {}", String::from_utf8_lossy(&body));
    }
    let cookie = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        })
        .and_then(|(_, v)| v.trim().split(';').next())
        .context("no session cookie")?
        .to_string();
    let get = |path: String| {
        let cookie = cookie.clone();
        async move {
            let (status, _, body) = http(port, "GET", &path, &[("cookie", &cookie)], b"").await?;
            if status != 200 {
                bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
            }
            anyhow::Ok(serde_json::from_slice::<serde_json::Value>(&body)?)
        }
    };

    // Every host in the list, none offline, every finding counted.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = get("/api/overview".into()).await?;
        let total = o["hosts"]["total"].as_u64().unwrap_or(0);
        let offline = o["hosts"]["offline"].as_u64().unwrap_or(u64::MAX);
        let last = o["last_index"].as_u64().unwrap_or(0);
        if total == HOSTS as u64 && offline == 0 && last >= FINDINGS {
            break;
        }
        if Instant::now() > deadline {
            bail!("overview after the load: {total} hosts, {offline} offline, last index {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let hosts = get("/api/hosts".into()).await?;
    let listed = hosts["hosts"].as_array().map_or(0, |v| v.len());
    if listed != HOSTS {
        bail!("/api/hosts lists {listed} hosts, not {HOSTS}");
    }
    let rss_loaded = rss_mib(pid);

    // A host in the middle of the fleet: its findings are far behind the
    // newest, so its filtered page scans as far as a page may.
    let mid = HOSTS / 2;
    let pages: [(&str, String); 8] = [
        ("overview", "/api/overview".into()),
        ("findings, first page", "/api/findings".into()),
        (
            "findings, a page deep (before index 500,000)",
            "/api/findings?before=500000".into(),
        ),
        (
            "findings filtered by host",
            format!("/api/findings?host={}", hostname(mid)),
        ),
        ("hosts list (all 2,000)", "/api/hosts".into()),
        ("one host's page", format!("/api/hosts/{}", agent_id(mid))),
        ("inventory, first page", "/api/inventory".into()),
        ("audit, first page", "/api/audit".into()),
    ];
    for (name, path) in pages {
        for _ in 0..WARMUP {
            get(path.clone()).await?;
        }
        let mut ms = Vec::with_capacity(REQUESTS);
        let mut bytes = 0;
        for _ in 0..REQUESTS {
            let t = Instant::now();
            let (status, _, body) = http(port, "GET", &path, &[("cookie", &cookie)], b"").await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                bail!("GET {path}: {status}");
            }
            bytes = body.len();
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        let (p50, p99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
        eprintln!("dashboard bench: {path}: p50 {p50:.1} ms p99 {p99:.1} ms ({bytes} bytes)");
        for (q, v) in [("p50", p50), ("p99", p99)] {
            report.push(
                Figure::ratio(
                    &format!("dashboard, {HOSTS} hosts and {FINDINGS} findings: GET {} ({name}), {q} of {REQUESTS} one at a time / 300 ms goal", path),
                    v,
                    GOAL_MS,
                    "ms",
                    CMD,
                )
                .goal_max(1.0),
            );
        }
    }
    eprintln!(
        "dashboard bench: control plane RSS {rss_idle:.0} MiB idle → {rss_loaded:.0} MiB loaded → {:.0} MiB after the pages",
        rss_mib(pid)
    );
    report.push(Figure::ratio(
        &format!("dashboard: control plane RSS holding {HOSTS} hosts and {FINDINGS} findings / its RSS just started"),
        rss_loaded,
        rss_idle,
        "MiB",
        CMD,
    ));
    drop(sessions);
    Ok(())
}
