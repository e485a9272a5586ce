//! The agent's sensor: eBPF when the kernel allows it, else procfs polling.

use std::time::Duration;

use vigil_domain::{SensorCounters, SensorMode};

use super::procfs_poller::ProcfsPoller;
use super::{path_filter, EbpfOptions, EbpfSensor, SensorEvent};
use crate::procfs::Procfs;

/// How often the eBPF ring is drained when nothing woke the agent.
const EBPF_DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// Which sensor to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SensorChoice {
    /// eBPF, falling back to procfs polling (degraded) when it cannot load.
    Auto,
    /// eBPF or nothing: fail when it cannot load.
    Ebpf,
    /// procfs polling only (degraded).
    Procfs,
}

pub enum Sensor {
    Ebpf(Box<EbpfSensor>),
    Procfs(ProcfsPoller),
}

impl Sensor {
    /// Starts the chosen sensor.
    pub fn start(
        choice: SensorChoice,
        ebpf: EbpfOptions,
        poll_interval: Duration,
    ) -> anyhow::Result<Sensor> {
        if choice != SensorChoice::Procfs {
            let loaded = path_filter::default_filters()
                .map_err(anyhow::Error::from)
                .and_then(|filters| {
                    EbpfSensor::load(&filters, &path_filter::default_ports(), ebpf)
                        .map_err(anyhow::Error::from)
                });
            match loaded {
                Ok(s) => return Ok(Sensor::Ebpf(Box::new(s))),
                Err(e) if choice == SensorChoice::Ebpf => {
                    return Err(e.context("loading the eBPF sensors (root and a kernel with BTF are needed)"))
                }
                Err(e) => tracing::error!(
                    error = format!("{e:#}"),
                    "eBPF sensors could not load; DEGRADED MODE: polling /proc, short-lived processes and brief file opens will be missed"
                ),
            }
        }
        Ok(Sensor::Procfs(ProcfsPoller::new(
            Procfs::default(),
            poll_interval,
        )))
    }

    pub fn mode(&self) -> SensorMode {
        match self {
            Sensor::Ebpf(_) => SensorMode::Ebpf,
            Sensor::Procfs(_) => SensorMode::ProcfsDegraded,
        }
    }

    pub fn hooks(&self) -> Vec<String> {
        match self {
            Sensor::Ebpf(s) => s.hooks().to_vec(),
            Sensor::Procfs(p) => vec![p.hook()],
        }
    }

    /// Waits for and decodes the next events into `out`. The eBPF ring is
    /// also drained every `EBPF_DRAIN_INTERVAL`, for records that did not
    /// wake the agent.
    pub async fn next_batch(&mut self, out: &mut Vec<SensorEvent>) -> anyhow::Result<()> {
        match self {
            Sensor::Ebpf(s) => {
                tokio::select! {
                    r = s.next_batch(out) => r?,
                    _ = tokio::time::sleep(EBPF_DRAIN_INTERVAL) => s.drain(out),
                }
                Ok(())
            }
            Sensor::Procfs(p) => Ok(p.next_batch(out).await?),
        }
    }

    /// The kernel's verdicts on executable files (eBPF with library checks).
    pub fn library_verdicts(&self) -> Option<super::LibraryVerdicts> {
        match self {
            Sensor::Ebpf(s) => s.library_verdicts(),
            Sensor::Procfs(_) => None,
        }
    }

    pub fn counters(&self) -> SensorCounters {
        match self {
            Sensor::Ebpf(s) => s.counters(),
            Sensor::Procfs(_) => SensorCounters::default(),
        }
    }

    /// Records lost for a full ring, by process (tgid); none when polling.
    pub fn drops_by_process(&self) -> Vec<(u32, u64)> {
        match self {
            Sensor::Ebpf(s) => s.drops_by_process(),
            Sensor::Procfs(_) => Vec::new(),
        }
    }

    pub fn decode_errors(&self) -> u64 {
        match self {
            Sensor::Ebpf(s) => s.decode_errors(),
            Sensor::Procfs(_) => 0,
        }
    }
}
