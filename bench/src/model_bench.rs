//! Model inspection (issue #22): headers read per second per format against
//! plain reads of the same bytes, the pickle scan's throughput against
//! picklescan on the same files in the same run, and what examining a
//! model file (header and sha256, as the agent does before its finding)
//! adds to the finding for files under 1 MB.
//!
//! Files come from `bench/model_files.py`: a LLaMA-7B-shaped GGUF,
//! safetensors and torch.save zip (sparse weights), a legacy torch.save
//! pickle of 2,000 tensors, and the tests' pickle corpus.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use vigil_agent::detect::file_digest::HashBudget;
use vigil_agent::detect::model_examination::examine;
use vigil_modelinspect::{inspect, Budget};

use crate::report::{Figure, Report};

const CMD: &str = "make bench (VIGIL_BENCH_ONLY=models)";
/// How long each timed loop runs.
const FOR: Duration = Duration::from_secs(1);

struct ModelFile {
    format: String,
    path: PathBuf,
}

fn model_files(root: &Path, dir: &Path) -> anyhow::Result<Vec<ModelFile>> {
    // The TFLite file is written with the flatbuffers and tflite packages
    // install-deps puts beside the pickle scanners.
    let out = Command::new("python3")
        .env("PYTHONPATH", root.join(".vigil/deps/scanners"))
        .arg(root.join("bench/model_files.py"))
        .arg(dir)
        .output()
        .context("running bench/model_files.py")?;
    if !out.status.success() {
        bail!("model_files.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(format, name)| ModelFile {
            format: format.to_string(),
            path: dir.join(name),
        })
        .collect())
}

fn inspect_file(path: &Path) -> anyhow::Result<vigil_modelinspect::ModelReport> {
    let file = std::fs::File::open(path)?;
    let name = path.file_name().and_then(|n| n.to_str());
    inspect(file, Budget::default(), name).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Runs `f` for about `FOR`; calls per second.
fn rate(mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < FOR {
        f()?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Reads the first `n` bytes of `path` through the same buffered reader.
fn read_prefix(path: &Path, n: u64) -> anyhow::Result<()> {
    let mut r = BufReader::with_capacity(1 << 16, std::fs::File::open(path)?).take(n);
    std::io::copy(&mut r, &mut std::io::sink())?;
    Ok(())
}

pub fn models(root: &Path, work: &Path, report: &mut Report) -> anyhow::Result<()> {
    let dir = work.join("models");
    let files = model_files(root, &dir)?;
    // Headers per second, per format, against reading the same bytes.
    for f in files.iter().filter(|f| f.format != "corpus") {
        let r = inspect_file(&f.path)?;
        let bytes = r.bytes_read;
        let inspected = rate(|| inspect_file(&f.path).map(drop))?;
        let read = rate(|| read_prefix(&f.path, bytes))?;
        let what = format!(
            "{} header ({} tensors, {:.0} KiB read of a {:.1} MiB file): inspections/s / buffered reads of the same bytes/s (same run)",
            f.format,
            r.tensor_count,
            bytes as f64 / 1024.0,
            std::fs::metadata(&f.path)?.len() as f64 / (1024.0 * 1024.0),
        );
        println!("{what}: {inspected:.0} / {read:.0}");
        report.push(Figure::ratio(&what, inspected, read, "headers/s", CMD));
    }

    // Pickle scanning: vigil against picklescan, same files, in-process
    // loops on both sides (no interpreter start counted).
    let pickles: Vec<&ModelFile> = files
        .iter()
        .filter(|f| matches!(f.format.as_str(), "corpus" | "pickle" | "pytorch-zip"))
        .collect();
    let total: u64 = pickles
        .iter()
        .map(|f| std::fs::metadata(&f.path).map(|m| m.len()))
        .sum::<Result<u64, _>>()?;
    let passes = rate(|| {
        for f in &pickles {
            inspect_file(&f.path)?;
        }
        Ok(())
    })?;
    let vigil_mbs = passes * total as f64 / 1e6;
    let picklescan_mbs = picklescan_rate(root, &pickles, total)?;
    let what = format!(
        "pickle scan, {} files ({:.0} KiB; torch zips, a legacy torch.save, malicious pickles): vigil / picklescan 1.0.5, in-process loops (same run)",
        pickles.len(),
        total as f64 / 1024.0
    );
    println!("{what}: {vigil_mbs:.1} / {picklescan_mbs:.2} MB/s");
    report.push(Figure::ratio(&what, vigil_mbs, picklescan_mbs, "MB/s", CMD).goal(20.0));

    // What the finding waits for: header and sha256 of each file under
    // 1 MB, as the agent's examination does, against the sha256 alone.
    let small: Vec<&ModelFile> = files
        .iter()
        .filter(|f| std::fs::metadata(&f.path).is_ok_and(|m| m.len() < 1 << 20))
        .collect();
    let mut examined = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut hashed = hdrhistogram::Histogram::<u64>::new(3)?;
    for _ in 0..100 {
        for f in &small {
            let size = std::fs::metadata(&f.path)?.len();
            let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let mut file = std::fs::File::open(&f.path)?;
            let t = Instant::now();
            let m = examine(
                &mut file,
                size,
                name,
                Budget::default(),
                HashBudget::default(),
            );
            examined.record(t.elapsed().as_nanos() as u64)?;
            if m.sha256.is_empty() {
                bail!("{}: not examined: {}", f.path.display(), m.error);
            }
            let mut file = std::fs::File::open(&f.path)?;
            let t = Instant::now();
            vigil_agent::detect::file_digest::sha256_within(&mut file, size, HashBudget::default())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            hashed.record(t.elapsed().as_nanos() as u64)?;
        }
    }
    let p99 = |h: &hdrhistogram::Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1e6;
    let what = format!(
        "model file examination before its finding (header + sha256), p99 over {} files under 1 MB × 100 / 2 ms goal",
        small.len()
    );
    println!("{what}: {:.3} ms", p99(&examined));
    report.push(Figure::ratio(&what, p99(&examined), 2.0, "ms", CMD).goal_max(1.0));
    let what = "model file examination p99: header + sha256 / sha256 alone (same files, same run)";
    println!("{what}: {:.3} / {:.3} ms", p99(&examined), p99(&hashed));
    report.push(Figure::ratio(what, p99(&examined), p99(&hashed), "ms", CMD));
    Ok(())
}

/// picklescan's `scan_file_path` over `files` in a loop for about a
/// second, in one Python process: MB/s.
fn picklescan_rate(root: &Path, files: &[&ModelFile], total: u64) -> anyhow::Result<f64> {
    let scanners = root.join(".vigil/deps/scanners");
    if !scanners.join("picklescan").is_dir() {
        bail!(
            "picklescan is not in {} (make installs it)",
            scanners.display()
        );
    }
    let script = format!(
        "import sys, time\n\
         from picklescan.scanner import scan_file_path\n\
         files = sys.argv[1:]\n\
         start, passes = time.perf_counter(), 0\n\
         while time.perf_counter() - start < {secs}:\n    \
             for f in files: scan_file_path(f)\n    \
             passes += 1\n\
         print(passes / (time.perf_counter() - start))",
        secs = FOR.as_secs_f64()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .args(files.iter().map(|f| &f.path))
        .env("PYTHONPATH", &scanners)
        .output()?;
    if !out.status.success() {
        bail!("picklescan: {}", String::from_utf8_lossy(&out.stderr));
    }
    let passes: f64 = String::from_utf8(out.stdout)?.trim().parse()?;
    Ok(passes * total as f64 / 1e6)
}
