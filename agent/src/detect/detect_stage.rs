//! The detect stage's own task: applies each sensor batch to the process
//! table and the detector, finishes what needed a digest or a probe, and
//! hands one `Detections` batch per input to the respond stage.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use vigil_detection::{BuiltinRules, Observation};
use vigil_domain::{ApprovedWorkloads, Finding, GpuInventory, ProcessInfo, WorkloadApproval};

use super::detector::{Detection, Detector, PendingFinding, PendingModel};
use super::file_digest::{sha256_reader, FileKey};
use super::process_table::ProcessTable;
use super::signal_memory::SignalMemory;
use crate::clock;
use crate::config::AgentConfig;
use crate::gpu::GpuUpdate;
use crate::metrics::AgentMetrics;
use crate::procfs::Procfs;
use crate::sensors::{SensorEvent, SensorStage};

/// Completed digests and probes waiting for the stage's loop, at most.
const COMPLETIONS: usize = 256;
/// How long a listener has to answer OpenAI-style routes.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A finding with the kernel time of the event behind it, from which the
/// ship stage measures its latency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedFinding {
    pub finding: Finding,
    pub event_boot_ns: u64,
}

/// What one input (a sensor batch, a GPU reading, a finished digest) led
/// to, in order: findings, and the processes that exited among them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Detections {
    pub findings: Vec<TimedFinding>,
    /// Exited pids, each with how many of `findings` came before its exit.
    pub exits: Vec<(u32, usize)>,
}

impl Detections {
    pub fn is_empty(&self) -> bool {
        self.findings.is_empty() && self.exits.is_empty()
    }
}

pub struct DetectInputs {
    pub sensor_batches: mpsc::Receiver<Vec<SensorEvent>>,
    /// Where drained batches go back to the sensor stage, for reuse.
    pub drained: mpsc::Sender<Vec<SensorEvent>>,
    pub gpu: mpsc::Receiver<GpuUpdate>,
    /// Every approved workload (verified), replacing the previous set.
    pub workloads: mpsc::Receiver<Vec<WorkloadApproval>>,
}

pub struct DetectOutputs {
    pub detections: mpsc::Sender<Detections>,
    /// The host's GPU inventory as last read (None before the first reading).
    pub inventory: watch::Sender<Option<GpuInventory>>,
}

/// A probed listener: the process, its address, whether it answered
/// OpenAI-style routes, and when it was seen.
type ProbeResult = (ProcessInfo, std::net::SocketAddr, bool, i64);

pub struct DetectStage {
    detector: Detector,
    table: ProcessTable,
    memory: SignalMemory,
    /// Polling sees open files and mappings only as they are now: rescan
    /// the running processes after every batch.
    rescan_after_batch: bool,
    /// Executables being hashed, with the findings waiting on the same file.
    hashing: HashMap<FileKey, Vec<PendingFinding>>,
    hashed_tx: mpsc::Sender<(PendingFinding, Option<String>)>,
    hashed: mpsc::Receiver<(PendingFinding, Option<String>)>,
    model_hashed_tx: mpsc::Sender<(PendingModel, Option<String>)>,
    model_hashed: mpsc::Receiver<(PendingModel, Option<String>)>,
    probed_tx: mpsc::Sender<ProbeResult>,
    probed: mpsc::Receiver<ProbeResult>,
    /// What the current input led to.
    out: Detections,
    /// Processes with a new finding: their signals are remembered on disk
    /// once the batch is handed on.
    to_remember: Vec<u32>,
    metrics: AgentMetrics,
}

impl DetectStage {
    /// Snapshots the running processes (after the sensors attached: a
    /// process that starts in between is seen by both, never by neither),
    /// restores the signals already reported, and scans what was running
    /// before the sensors (its findings are the stage's first output).
    pub fn open(
        config: &AgentConfig,
        db: &sled::Db,
        sensors: &mut SensorStage,
        metrics: AgentMetrics,
    ) -> anyhow::Result<Self> {
        let procfs = Procfs::default();
        let mut table = ProcessTable::new(config.process_table_capacity);
        table.seed(&procfs).context("reading /proc")?;
        sensors.assume_known(table.pids());
        let mut memory =
            SignalMemory::open(db, procfs.clone()).context("opening the agent's signal memory")?;
        let approved = ApprovedWorkloads::new(config.approved_exe_sha256.iter().cloned());
        let mut detector = Detector::new(BuiltinRules::new(approved), procfs, std::process::id());
        let restored = memory
            .restore()
            .context("restoring the signals of running processes")?;
        tracing::info!(
            processes = restored.len(),
            "restored the signals of processes still running"
        );
        detector.restore_reported(restored);
        let (hashed_tx, hashed) = mpsc::channel(COMPLETIONS);
        let (model_hashed_tx, model_hashed) = mpsc::channel(COMPLETIONS);
        let (probed_tx, probed) = mpsc::channel(COMPLETIONS);
        let mut stage = Self {
            detector,
            table,
            memory,
            rescan_after_batch: sensors.is_polling(),
            hashing: HashMap::new(),
            hashed_tx,
            hashed,
            model_hashed_tx,
            model_hashed,
            probed_tx,
            probed,
            out: Detections::default(),
            to_remember: Vec::new(),
            metrics,
        };
        let running = stage.detector.scan_running(&mut stage.table);
        tracing::info!(
            findings = running.len(),
            "scanned processes that were running before the sensors"
        );
        for finding in running {
            stage.push_finding(finding, clock::boot_now_ns());
        }
        Ok(stage)
    }

    /// Processes in the table.
    pub fn processes(&self) -> usize {
        self.table.len()
    }

    /// Runs until the sensor stage stops (or the respond stage is gone).
    pub async fn run(mut self, inputs: DetectInputs, outputs: DetectOutputs) -> anyhow::Result<()> {
        let DetectInputs {
            mut sensor_batches,
            drained,
            mut gpu,
            mut workloads,
        } = inputs;
        self.hand_on(&outputs.detections).await?;
        loop {
            tokio::select! {
                batch = sensor_batches.recv() => {
                    let Some(mut batch) = batch else { break };
                    self.on_sensor_batch(&mut batch)?;
                    // The sensor stage allocates anew when none comes back.
                    let _ = drained.try_send(batch);
                }
                Some(update) = gpu.recv() => self.on_gpu_update(update, &outputs.inventory),
                Some(records) = workloads.recv() => {
                    tracing::info!(count = records.len(), "approved workloads updated");
                    self.detector.set_workload_records(records);
                }
                Some((pending, digest)) = self.hashed.recv() => {
                    let waiting = self.hashing.remove(&pending.key()).unwrap_or_default();
                    for p in std::iter::once(pending).chain(waiting) {
                        let event_boot_ns = p.event_boot_ns;
                        if let Some(d) = self.detector.complete(p, digest.clone()) {
                            self.dispatch(d, event_boot_ns);
                        }
                    }
                }
                Some((pending, digest)) = self.model_hashed.recv() => {
                    let event_boot_ns = pending.event_boot_ns;
                    if let Some(finding) = self.detector.complete_model(pending, digest) {
                        self.push_finding(finding, event_boot_ns);
                    }
                }
                Some((process, local, openai_routes, at)) = self.probed.recv() => {
                    tracing::info!(pid = process.pid, port = local.port(), openai_routes, "listener probed");
                    let obs = Observation::Listening { address: local.ip().to_string(), port: local.port(), openai_routes };
                    if let Some(finding) = self.detector.finding(&process, obs, at) {
                        self.push_finding(finding, clock::boot_now_ns());
                    }
                }
            }
            self.hand_on(&outputs.detections).await?;
        }
        Ok(())
    }

    fn on_sensor_batch(&mut self, batch: &mut Vec<SensorEvent>) -> anyhow::Result<()> {
        for ev in batch.drain(..) {
            if let SensorEvent::Exit { ctx, .. } = &ev {
                self.memory
                    .forget(ctx.pid)
                    .context("updating the signal memory")?;
                self.out.exits.push((ctx.pid, self.out.findings.len()));
            }
            if let Some(d) = self.detector.on_event(&ev, &mut self.table) {
                self.dispatch(d, ev.ctx().ktime_boot_ns);
            }
        }
        if self.rescan_after_batch {
            for finding in self.detector.scan_running(&mut self.table) {
                self.push_finding(finding, clock::boot_now_ns());
            }
        }
        Ok(())
    }

    fn on_gpu_update(
        &mut self,
        update: GpuUpdate,
        inventory_tx: &watch::Sender<Option<GpuInventory>>,
    ) {
        let inventory = match update {
            GpuUpdate::Unavailable(status) => {
                GpuInventory::unavailable(status, clock::unix_now_nanos())
            }
            GpuUpdate::Reading(reading) => {
                let at = clock::unix_now_nanos();
                let mut processes = Vec::with_capacity(reading.uses.len());
                for u in &reading.uses {
                    let (d, attributed) =
                        self.detector.on_gpu_use(u.pid, &u.gpu, &mut self.table, at);
                    processes.push(attributed);
                    if let Some(d) = d {
                        self.dispatch(d, clock::boot_now_ns());
                    }
                }
                GpuInventory {
                    status: reading.status,
                    driver_version: reading.driver_version,
                    cuda_driver_version: reading.cuda_driver_version,
                    gpus: reading.gpus,
                    processes,
                    observed_at_unix_nanos: at,
                }
            }
        };
        let last = inventory_tx.borrow();
        if !last
            .as_ref()
            .is_none_or(|l| l.differs_materially(&inventory))
        {
            return;
        }
        if last.as_ref().is_none_or(|l| l.status != inventory.status) {
            for line in &inventory.status {
                tracing::warn!(status = %line, "GPU status");
            }
        }
        drop(last);
        tracing::info!(
            gpus = inventory.gpus.len(),
            processes = inventory.processes.len(),
            "GPU inventory changed"
        );
        inventory_tx.send_replace(Some(inventory));
    }

    /// Acts on what the detector decided: keep a finding, probe a listener,
    /// or hash a file off the loop (an executable once per file version at
    /// a time; later findings on the same file wait on it).
    fn dispatch(&mut self, detection: Detection, event_boot_ns: u64) {
        match detection {
            Detection::Finding(finding) => self.push_finding(finding, event_boot_ns),
            Detection::ProbeListener {
                process,
                local,
                observed_at_unix_nanos,
            } => {
                let tx = self.probed_tx.clone();
                tokio::spawn(async move {
                    let yes =
                        crate::detect::serving_probe::serves_openai_routes(local, PROBE_TIMEOUT).await;
                    let _ = tx.send((process, local, yes, observed_at_unix_nanos)).await;
                });
            }
            Detection::NeedsModelDigest(mut pending) => {
                // Model files can be large: hashed once per file version, off the loop.
                let tx = self.model_hashed_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let digest = sha256_reader(&mut pending.file).ok();
                    let _ = tx.blocking_send((pending, digest));
                });
            }
            Detection::NeedsDigest(mut pending) => match self.hashing.entry(pending.key()) {
                Entry::Occupied(mut waiting) => waiting.get_mut().push(pending),
                Entry::Vacant(slot) => {
                    slot.insert(Vec::new());
                    let tx = self.hashed_tx.clone();
                    tokio::task::spawn_blocking(move || {
                        let digest = sha256_reader(&mut pending.exe).ok();
                        let _ = tx.blocking_send((pending, digest));
                    });
                }
            },
        }
    }

    fn push_finding(&mut self, finding: Finding, event_boot_ns: u64) {
        self.to_remember.push(finding.process.pid);
        self.out.findings.push(TimedFinding {
            finding,
            event_boot_ns,
        });
    }

    /// Hands what the input led to on to the respond stage, then remembers
    /// the signals of processes with new findings on disk, so a restarted
    /// agent neither forgets nor repeats them.
    async fn hand_on(&mut self, detections: &mpsc::Sender<Detections>) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.out);
        detections
            .send(batch)
            .await
            .map_err(|_| anyhow::anyhow!("the respond stage stopped"))?;
        for pid in self.to_remember.drain(..) {
            if let Some(signals) = self.detector.reported(pid) {
                self.memory
                    .remember(pid, signals)
                    .context("updating the signal memory")?;
            }
        }
        self.metrics
            .set_suppressed_duplicates(self.detector.suppressed_duplicates());
        Ok(())
    }
}
