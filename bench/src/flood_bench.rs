//! The agent under a flood (issue #19): one unprivileged process creates,
//! closes and unlinks up to 1M distinct model-file names (a tmpfs
//! directory) for at most 60 s. Figures: the agent's RSS and CPU, and the
//! detection latency of an unrelated model open (another process, every
//! 50 ms) during the flood, each against the same measure taken idle, with
//! the same probes, in the same run.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vigil_integration::{log_number, ControlPlane};

use super::report::{Figure, Report};
use super::{cpu_seconds, percentile, rss_mib, start_agent, Settings};

/// Distinct names the flooding process creates, at most.
const NAMES: u64 = 1_000_000;
/// How long it may take, at most.
const FLOOD_SECS: u64 = 60;
/// Between two probes (model opens by another process).
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// Probes of the idle baseline.
const IDLE_PROBES: usize = 100;
const COMMAND: &str = "VIGIL_BENCH_ONLY=flood target/release/vigil-bench";

/// Creates, closes and unlinks names `m<i>.onnx` in `argv[1]` until
/// `argv[2]` names or `argv[3]` seconds; prints how many.
const FLOOD: &str = r#"
import os, sys, time
d, n, end = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
i = 0
while i < n and time.monotonic() < end:
    for _ in range(1000):
        p = f'{d}/m{i}.onnx'
        os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))
        os.unlink(p)
        i += 1
print(i)
"#;

/// One probe: a fresh process (`touch`) creates `dir/<tag>-<i>.onnx`.
fn probe(dir: &Path, tag: &str, i: usize) -> anyhow::Result<()> {
    let status = Command::new("touch")
        .arg(dir.join(format!("{tag}-{i}.onnx")))
        .status()
        .context("touch")?;
    if !status.success() {
        bail!("touch failed: {status}");
    }
    Ok(())
}

/// The agent's syscall → finding latencies (µs) of the probes tagged `tag`.
fn latencies(log: &str, tag: &str) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
    let needle = format!("/flood-probes/{tag}-");
    for line in log
        .lines()
        .filter(|l| l.contains(" finding") && l.contains(&needle))
    {
        if let Some(us) = log_number(line, "latency_us=") {
            h.record(us)?;
        }
    }
    Ok(h)
}

pub fn flood(s: &Settings, cp: &ControlPlane, report: &mut Report) -> anyhow::Result<()> {
    let mut agent = start_agent(s, &cp.endpoint(), "flood")?;
    let pid = agent.daemon.id();
    let probes = s.work.path().join("flood-probes");
    std::fs::create_dir_all(&probes)?;
    // First sight of `touch` waits for its digest: not a probe.
    probe(&probes, "warmup", 0)?;
    std::thread::sleep(Duration::from_secs(2));

    // Idle, with the same probes.
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    for i in 0..IDLE_PROBES {
        probe(&probes, "idle", i)?;
        std::thread::sleep(PROBE_EVERY);
    }
    let idle_cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    let idle_rss = rss_mib(pid, "VmRSS:");

    // The flood: nobody, in a tmpfs directory.
    let flood_dir = tempfile::Builder::new()
        .prefix("vigil-flood-")
        .tempdir_in("/dev/shm")?;
    std::fs::set_permissions(flood_dir.path(), std::fs::Permissions::from_mode(0o777))?;
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    let flooder = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            FLOOD,
        ])
        .arg(flood_dir.path())
        .arg(NAMES.to_string())
        .arg(FLOOD_SECS.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .context("setpriv and /usr/bin/python3")?;
    let running = Arc::new(AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let running = running.clone();
        move || {
            let mut peak = 0f64;
            while running.load(Ordering::Relaxed) {
                peak = peak.max(rss_mib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        }
    });
    let prober = std::thread::spawn({
        let running = running.clone();
        let probes = probes.clone();
        move || -> anyhow::Result<usize> {
            let mut i = 0;
            while running.load(Ordering::Relaxed) {
                probe(&probes, "flood", i)?;
                i += 1;
                std::thread::sleep(PROBE_EVERY);
            }
            Ok(i)
        }
    });
    let out = flooder.wait_with_output()?;
    let flood_secs = t0.elapsed().as_secs_f64();
    let flood_cpu = (cpu_seconds(pid) - c0) / flood_secs;
    running.store(false, Ordering::Relaxed);
    let peak_rss = sampler
        .join()
        .expect("RSS sampler")
        .max(rss_mib(pid, "VmRSS:"));
    let flood_probes = prober.join().expect("prober")?;
    if !out.status.success() {
        bail!("the flood failed: {}", out.status);
    }
    let names: u64 = String::from_utf8_lossy(&out.stdout).trim().parse()?;
    let dropped =
        s.rt.block_on(cp.agent_summary(super::BENCH_AGENT))?
            .and_then(|a| a.counters)
            .map(|c| c.dropped)
            .unwrap_or(0);
    eprintln!(
        "flood: {names} names in {flood_secs:.1} s ({:.0}/s), {flood_probes} probes, {dropped} records dropped",
        names as f64 / flood_secs
    );

    // Latencies from the agent's log, once the last findings are out.
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(&agent.log)?;
    agent.daemon.terminate();
    let idle = latencies(&log, "idle")?;
    let busy = latencies(&log, "flood")?;
    if idle.len() < IDLE_PROBES as u64 / 2 || busy.len() < flood_probes as u64 / 2 {
        bail!(
            "too few probe findings in the agent log: idle {} of {IDLE_PROBES}, flood {} of {flood_probes}",
            idle.len(),
            busy.len()
        );
    }

    report.push(Figure::ratio(
        &format!("flood: names created by one unprivileged process in {flood_secs:.0} s / 1M"),
        names as f64,
        NAMES as f64,
        "names",
        COMMAND,
    ));
    report.push(Figure::ratio(
        "flood: agent peak RSS during the flood / idle RSS (same run)",
        peak_rss,
        idle_rss,
        "MiB",
        COMMAND,
    ));
    report.push(
        Figure::ratio(
            "flood: agent peak RSS during the flood / 64 MiB goal",
            peak_rss,
            64.0,
            "MiB",
            COMMAND,
        )
        .goal_max(1.0),
    );
    report.push(Figure::ratio(
        "flood: agent CPU during the flood / idle with the same probes (same run)",
        flood_cpu * 100.0,
        idle_cpu * 100.0,
        "% of a core",
        COMMAND,
    ));
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        report.push(Figure::ratio(
            &format!(
                "flood: detection latency {label} of an unrelated model open during the flood / idle (same run)"
            ),
            percentile(&busy, q) / 1000.0,
            percentile(&idle, q) / 1000.0,
            "ms",
            COMMAND,
        ));
    }
    report.push(
        Figure::ratio(
            "flood: detection latency p99 of an unrelated model open during the flood / 10 ms goal",
            percentile(&busy, 0.99) / 1000.0,
            10.0,
            "ms",
            COMMAND,
        )
        .goal_max(1.0),
    );
    Ok(())
}
