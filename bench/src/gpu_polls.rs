//! GPU polling cost: 1,000 polls of the agent's NVML reader against the
//! fake libnvidia-ml with 64 processes on two GPUs, alone and with the
//! agent's attribution of every process (/proc, digest cache, rules).

use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

use anyhow::Context;
use vigil_agent::detect::detector::{Detection, Detector};
use vigil_agent::detect::file_digest::sha256_reader;
use vigil_agent::detect::process_table::ProcessTable;
use vigil_agent::gpu::NvmlReader;
use vigil_agent::procfs::Procfs;
use vigil_detection::BuiltinRules;
use vigil_domain::ApprovedWorkloads;

use crate::report::{Figure, Report};

const POLLS: u32 = 1_000;
const PROCESSES: usize = 64;

struct Sleepers(Vec<Child>);

impl Drop for Sleepers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn gpu_polls(root: &Path, work: &Path, report: &mut Report) -> anyhow::Result<()> {
    let lib = work.join("libnvidia-ml.so.1");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(root.join("agent/fake-nvml/fake_nvml.c"))
        .status()
        .context("running cc for the fake NVML library")?;
    anyhow::ensure!(status.success(), "compiling the fake NVML library");
    // Real processes, so attribution reads real /proc entries.
    let sleepers = Sleepers(
        (0..PROCESSES)
            .map(|_| Command::new("sleep").arg("600").spawn())
            .collect::<Result<_, _>>()?,
    );
    let mut config = String::from(
        "gpu GPU-0a 1 00000000:01:00.0 85899345920 0 0 NVIDIA H100 80GB HBM3\n\
         gpu GPU-0b 2 00000000:02:00.0 85899345920 0 0 NVIDIA H100 80GB HBM3\n",
    );
    for (i, c) in sleepers.0.iter().enumerate() {
        config.push_str(&format!("proc {} compute {} {}\n", i % 2, c.id(), 64 << 20));
        config.push_str(&format!("util {} {} 50 10\n", i % 2, c.id()));
    }
    let path = work.join("nvml.conf");
    std::fs::write(&path, config)?;
    std::env::set_var("VIGIL_FAKE_NVML_CONFIG", &path);
    let mut reader = NvmlReader::open(&lib).map_err(anyhow::Error::msg)?;
    let first = reader.read();
    anyhow::ensure!(
        first.uses.len() == PROCESSES && first.status.is_empty(),
        "the fake NVML answered {} processes, status {:?}",
        first.uses.len(),
        first.status
    );

    let started = Instant::now();
    for _ in 0..POLLS {
        std::hint::black_box(reader.read());
    }
    let nvml_only = started.elapsed().as_secs_f64();

    // Side by side: the same GPUs with nobody on them.
    let idle = work.join("nvml-idle.conf");
    std::fs::write(
        &idle,
        "gpu GPU-0a 1 00000000:01:00.0 85899345920 0 0 NVIDIA H100 80GB HBM3\n\
         gpu GPU-0b 2 00000000:02:00.0 85899345920 0 0 NVIDIA H100 80GB HBM3\n",
    )?;
    std::env::set_var("VIGIL_FAKE_NVML_CONFIG", &idle);
    reader.read();
    let started = Instant::now();
    for _ in 0..POLLS {
        std::hint::black_box(reader.read());
    }
    let no_processes = started.elapsed().as_secs_f64();
    std::env::set_var("VIGIL_FAKE_NVML_CONFIG", &path);
    anyhow::ensure!(
        reader.read().uses.len() == PROCESSES,
        "the fake NVML reloads"
    );

    let procfs = Procfs::default();
    let mut table = ProcessTable::new(65_536);
    table.seed(&procfs)?;
    let mut detector = Detector::new(
        BuiltinRules::new(ApprovedWorkloads::new(std::iter::empty::<String>())),
        procfs,
        std::process::id(),
    );
    let started = Instant::now();
    for _ in 0..POLLS {
        let r = reader.read();
        for u in &r.uses {
            let (detection, attributed) = detector.on_gpu_use(u.pid, &u.gpu, &mut table, 0);
            std::hint::black_box(attributed);
            // As the agent does off its loop: hash a new binary once.
            if let Some(Detection::NeedsDigest(mut pending)) = detection {
                let digest = sha256_reader(&mut pending.exe).ok();
                std::hint::black_box(detector.complete(pending, digest));
            }
        }
    }
    let attributed = started.elapsed().as_secs_f64();
    let cmd = "make bench";
    report.push(
        Figure::ratio(
            "1,000 NVML polls, 64 processes on 2 GPUs (fake libnvidia-ml) / 1 s goal",
            nvml_only,
            1.0,
            "s",
            cmd,
        )
        .goal_max(1.0),
    );
    report.push(Figure::ratio(
        "1,000 NVML polls: 64 processes / no processes on the same 2 GPUs (same run)",
        nvml_only,
        no_processes,
        "s",
        cmd,
    ));
    report.push(
        Figure::ratio(
            "1,000 NVML polls with attribution of all 64 processes (/proc, digest, rules) / 1 s goal",
            attributed,
            1.0,
            "s",
            cmd,
        )
        .goal_max(1.0),
    );
    report.push(Figure::ratio(
        "1,000 NVML polls: with attribution / NVML only (same run)",
        attributed,
        nvml_only,
        "s",
        cmd,
    ));
    Ok(())
}
