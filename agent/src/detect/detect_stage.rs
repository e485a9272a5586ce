//! The detect stage's own task: applies each sensor batch to the process
//! table and the detector, finishes what needed a digest or a probe, and
//! hands one `Detections` batch per input to the respond stage.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch, Semaphore};
use vigil_detection::{BuiltinRules, Observation};
use vigil_domain::{
    ApprovedWorkloads, Finding, GpuInventory, ModelIdentity, ProcessInfo, WorkloadApproval,
};

use super::detector::{
    DetectLimits, Detection, Detector, PendingFinding, PendingModel, UncachedExe,
};
use super::file_digest::{sha256_within, FileKey, HashBudget, NotHashed};
use super::model_examination::examine;
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
/// Files hashed at once (each on a blocking thread).
const HASHES_IN_FLIGHT: usize = 4;
/// Hashes admitted (in flight or waiting for a turn), at most: beyond, a
/// file is not hashed and its finding says so.
const HASH_QUEUE: usize = 1024;
/// Largest emptied sensor batch handed back for reuse (events).
const RECYCLED_BATCH_CAPACITY: usize = 4096;
/// How long a listener has to answer the model-serving routes, in all.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// Listeners probed at once.
const PROBES_IN_FLIGHT: usize = 8;
/// Probes admitted (in flight or waiting for a turn), at most: a process
/// that opens listeners by the thousand costs bounded work, and a listener
/// past the bound is not probed (counted, and said in the log).
const PROBE_QUEUE: usize = 256;

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

/// A probed listener: the process, its address, the serving API it
/// answered as, when it was seen, and its executable's digest when it was
/// hashed for the probe.
type ProbeResult = (
    ProcessInfo,
    std::net::SocketAddr,
    Option<vigil_detection::ServingApi>,
    i64,
    Option<(FileKey, String)>,
);
type Hashed = Result<String, NotHashed>;

pub struct DetectStage {
    detector: Detector,
    table: ProcessTable,
    memory: SignalMemory,
    /// Polling sees open files and mappings only as they are now: rescan
    /// the running processes after every batch.
    rescan_after_batch: bool,
    /// Executables being hashed, with the findings waiting on the same file.
    hashing: HashMap<FileKey, Vec<PendingFinding>>,
    hashed_tx: mpsc::Sender<(PendingFinding, Hashed)>,
    hashed: mpsc::Receiver<(PendingFinding, Hashed)>,
    model_examined_tx: mpsc::Sender<(PendingModel, Option<ModelIdentity>)>,
    model_examined: mpsc::Receiver<(PendingModel, Option<ModelIdentity>)>,
    /// Turns to hash: `HASHES_IN_FLIGHT` at a time.
    hash_turns: Arc<Semaphore>,
    /// Hashes admitted and not yet finished (at most `HASH_QUEUE`).
    hashes_admitted: usize,
    /// Files not hashed because the queue was full.
    hashes_refused: u64,
    probed_tx: mpsc::Sender<ProbeResult>,
    probed: mpsc::Receiver<ProbeResult>,
    /// Turns to probe: `PROBES_IN_FLIGHT` at a time.
    probe_turns: Arc<Semaphore>,
    /// Probes admitted and not yet answered (at most `PROBE_QUEUE`).
    probes_admitted: usize,
    /// Listeners not probed because the queue was full.
    probes_refused: u64,
    /// What the current input led to.
    out: Detections,
    /// New findings' (process, signal, object), remembered on disk once
    /// the batch is handed on.
    to_remember: Vec<(u32, vigil_domain::SignalKind, String)>,
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
        Self::open_with(config, db, sensors, metrics, Vec::new())
    }

    /// As [`DetectStage::open`], with the agent's own approvals (its
    /// inference sidecars), kept beside the control plane's and in force
    /// before the scan of what is already running.
    pub fn open_with(
        config: &AgentConfig,
        db: &sled::Db,
        sensors: &mut SensorStage,
        metrics: AgentMetrics,
        local_approvals: Vec<WorkloadApproval>,
    ) -> anyhow::Result<Self> {
        let procfs = Procfs::default();
        let mut table = ProcessTable::new(config.process_table_capacity);
        table.seed(&procfs).context("reading /proc")?;
        sensors.assume_known(table.pids());
        let mut memory =
            SignalMemory::open(db, procfs.clone()).context("opening the agent's signal memory")?;
        let mut approved = ApprovedWorkloads::new(config.approved_exe_sha256.iter().cloned());
        approved.set_local_records(local_approvals);
        let limits = DetectLimits {
            hash: HashBudget {
                max_bytes: config.max_hash_bytes,
                max_time: std::time::Duration::from_secs(config.max_hash_secs.max(1)),
            },
            inspect: vigil_modelinspect::Budget {
                max_bytes: config.max_model_header_bytes,
                max_time: std::time::Duration::from_millis(config.max_model_header_millis.max(1)),
                ..Default::default()
            },
            max_objects_per_signal: config.max_findings_per_signal,
            max_objects_per_uid: config
                .max_findings_per_uid
                .unwrap_or(config.max_findings_per_signal.saturating_mul(4)),
            tracked_processes: config.max_tracked_processes,
        };
        let mut detector = Detector::new(BuiltinRules::new(approved), procfs, std::process::id())
            .with_limits(limits)
            .with_probe_exclusions(&config.serving_probe_exclude_ports)
            .with_library_verdicts(sensors.library_verdicts());
        let restored = memory
            .restore()
            .context("restoring the signals of running processes")?;
        tracing::info!(
            processes = restored.len(),
            "restored the signals of processes still running"
        );
        detector.restore_reported(restored);
        let (hashed_tx, hashed) = mpsc::channel(COMPLETIONS);
        let (model_examined_tx, model_examined) = mpsc::channel(COMPLETIONS);
        let (probed_tx, probed) = mpsc::channel(COMPLETIONS);
        let mut stage = Self {
            detector,
            table,
            memory,
            rescan_after_batch: sensors.is_polling(),
            hashing: HashMap::new(),
            hashed_tx,
            hashed,
            model_examined_tx,
            model_examined,
            hash_turns: Arc::new(Semaphore::new(HASHES_IN_FLIGHT)),
            hashes_admitted: 0,
            hashes_refused: 0,
            probed_tx,
            probed,
            probe_turns: Arc::new(Semaphore::new(PROBES_IN_FLIGHT)),
            probes_admitted: 0,
            probes_refused: 0,
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
                    // A batch that grew in a burst is not kept for reuse.
                    if batch.capacity() <= RECYCLED_BATCH_CAPACITY {
                        let _ = drained.try_send(batch);
                    }
                }
                Some(update) = gpu.recv() => self.on_gpu_update(update, &outputs.inventory),
                Some(records) = workloads.recv() => {
                    tracing::info!(count = records.len(), "approved workloads updated");
                    self.detector.set_workload_records(records);
                }
                Some((pending, hashed)) = self.hashed.recv() => {
                    self.hashes_admitted -= 1;
                    self.exe_hashed(pending, hashed);
                }
                Some((pending, examined)) = self.model_examined.recv() => {
                    self.hashes_admitted -= 1;
                    let event_boot_ns = pending.event_boot_ns;
                    for finding in self.detector.complete_model(pending, examined) {
                        self.push_finding(finding, event_boot_ns);
                    }
                }
                Some((mut process, local, api, at, digest)) = self.probed.recv() => {
                    self.probes_admitted -= 1;
                    if let Some((key, digest)) = digest {
                        self.hashes_admitted -= 1;
                        if !digest.is_empty() {
                            self.detector.insert_digest(key, digest.clone());
                            process.exe_sha256 = digest;
                        }
                    }
                    let answered = api.map_or("none", vigil_detection::ServingApi::as_str);
                    tracing::info!(pid = process.pid, port = local.port(), api = %answered, "listener probed");
                    let obs = Observation::Listening { address: local.ip().to_string(), port: local.port(), api };
                    if let Some(finding) = self.detector.finding(&process, obs, at) {
                        self.push_finding(finding, clock::boot_now_ns());
                    }
                }
            }
            self.hand_on(&outputs.detections).await?;
        }
        Ok(())
    }

    /// An executable's digest (or why there is none) for every finding
    /// that waited on it.
    fn exe_hashed(&mut self, pending: PendingFinding, hashed: Hashed) {
        let waiting = self.hashing.remove(&pending.key()).unwrap_or_default();
        for mut p in std::iter::once(pending).chain(waiting) {
            let event_boot_ns = p.event_boot_ns;
            let digest = match &hashed {
                Ok(d) => Some(d.clone()),
                Err(why) => {
                    if !matches!(why, NotHashed::Unreadable(_)) {
                        p.not_hashed(why);
                    }
                    None
                }
            };
            if let Some(d) = self.detector.complete(p, digest) {
                self.dispatch(d, event_boot_ns);
            }
        }
    }

    /// Whether one more hash may be queued; counts a refusal.
    /// Whether a listener may be probed now (the queue has room).
    fn admit_probe(&mut self, port: u16) -> bool {
        if self.probes_admitted >= PROBE_QUEUE {
            self.probes_refused += 1;
            if self.probes_refused == 1 || self.probes_refused.is_power_of_two() {
                tracing::warn!(
                    refused = self.probes_refused,
                    queue = PROBE_QUEUE,
                    port,
                    "probe queue full: new listeners are not asked what they serve"
                );
            }
            return false;
        }
        self.probes_admitted += 1;
        true
    }

    fn admit_hash(&mut self) -> bool {
        if self.hashes_admitted >= HASH_QUEUE {
            self.hashes_refused += 1;
            if self.hashes_refused == 1 || self.hashes_refused.is_power_of_two() {
                tracing::warn!(
                    refused = self.hashes_refused,
                    queue = HASH_QUEUE,
                    "hash queue full: files are reported unhashed"
                );
            }
            return false;
        }
        self.hashes_admitted += 1;
        true
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
                uncached_exe,
            } => {
                if !self.admit_probe(local.port()) {
                    return;
                }
                let tx = self.probed_tx.clone();
                // A new listener's executable is hashed first, in turn.
                let exe = uncached_exe.filter(|_| self.admit_hash());
                let turns = self.hash_turns.clone();
                let probe_turns = self.probe_turns.clone();
                let budget = self.detector.limits().hash;
                tokio::spawn(async move {
                    let mut digest = None;
                    if let Some(UncachedExe {
                        mut file,
                        key,
                        size,
                    }) = exe
                    {
                        let hashed = in_turn(
                            turns,
                            move || sha256_within(&mut file, size, budget),
                            Err(NotHashed::OutOfTime(budget.max_time)),
                        )
                        .await;
                        // Admitted: always answered with a digest, maybe empty.
                        digest = Some((key, hashed.unwrap_or_default()));
                    }
                    let api = match probe_turns.acquire_owned().await {
                        Ok(_turn) => {
                            crate::detect::serving_probe::serving_api(local, PROBE_TIMEOUT).await
                        }
                        Err(_) => None,
                    };
                    let _ = tx
                        .send((process, local, api, observed_at_unix_nanos, digest))
                        .await;
                });
            }
            Detection::Findings(findings) => {
                for finding in findings {
                    self.push_finding(finding, event_boot_ns);
                }
            }
            Detection::NeedsModelExamination(mut pending) => {
                // Model files can be large: examined once per file version,
                // off the loop, in turn, within budget.
                if !self.admit_hash() {
                    let event_boot_ns = pending.event_boot_ns;
                    pending.not_examined(&NotHashed::QueueFull);
                    for finding in self.detector.complete_model(pending, None) {
                        self.push_finding(finding, event_boot_ns);
                    }
                    return;
                }
                let file = pending.file.try_clone();
                let (size, name) = (pending.size, pending.name.clone());
                let limits = self.detector.limits();
                let job = move || {
                    let mut file = file.ok()?;
                    Some(examine(&mut file, size, &name, limits.inspect, limits.hash))
                };
                self.spawn_in_turn(job, None, pending, self.model_examined_tx.clone());
            }
            Detection::NeedsDigest(pending) => match self.hashing.entry(pending.key()) {
                Entry::Occupied(mut waiting) => waiting.get_mut().push(pending),
                Entry::Vacant(slot) => {
                    slot.insert(Vec::new());
                    if !self.admit_hash() {
                        self.exe_hashed(pending, Err(NotHashed::QueueFull));
                        return;
                    }
                    let (file, size) = (pending.exe.try_clone(), pending.size);
                    self.spawn_hash(file, size, pending, self.hashed_tx.clone());
                }
            },
        }
    }

    /// Hashes `file` (`size` bytes) off the loop, in turn and within the
    /// budget, and sends the result back with what waits on it.
    fn spawn_hash<P: Send + 'static>(
        &self,
        file: std::io::Result<std::fs::File>,
        size: u64,
        pending: P,
        tx: mpsc::Sender<(P, Hashed)>,
    ) {
        let budget = self.detector.limits().hash;
        let job = move || match file {
            Ok(mut file) => sha256_within(&mut file, size, budget),
            Err(e) => Err(NotHashed::Unreadable(e)),
        };
        let stopping = Err(NotHashed::Unreadable(std::io::Error::other(
            "stage stopping",
        )));
        self.spawn_in_turn(job, stopping, pending, tx);
    }

    /// Runs `job` (a hash or a model examination) on a blocking thread
    /// once one of the turns is free, and sends its result back with what
    /// waits on it (`stopping` if it cannot get a thread).
    fn spawn_in_turn<P: Send + 'static, T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
        stopping: T,
        pending: P,
        tx: mpsc::Sender<(P, T)>,
    ) {
        let turns = self.hash_turns.clone();
        // A free turn: straight to a blocking thread, which sends the
        // result itself. Each task in between is a wake-up (20-50 µs on
        // this VM) on the path of every finding that waits on a digest.
        if let Ok(turn) = turns.clone().try_acquire_owned() {
            tokio::task::spawn_blocking(move || {
                let done = job();
                drop(turn);
                let _ = tx.blocking_send((pending, done));
            });
            return;
        }
        tokio::spawn(async move {
            let done = in_turn(turns, job, stopping).await;
            let _ = tx.send((pending, done)).await;
        });
    }

    fn push_finding(&mut self, finding: Finding, event_boot_ns: u64) {
        self.to_remember
            .push((finding.process.pid, finding.signal, finding.object()));
        self.out.findings.push(TimedFinding {
            finding,
            event_boot_ns,
        });
    }

    /// Hands what the input led to on to the respond stage, then remembers
    /// the signals of processes with new findings on disk, so a restarted
    /// agent neither forgets nor repeats them.
    async fn hand_on(&mut self, detections: &mpsc::Sender<Detections>) -> anyhow::Result<()> {
        // Floods' aggregate findings: reported, not remembered as objects.
        let now = clock::boot_now_ns();
        for finding in self.detector.take_flood_findings() {
            self.out.findings.push(TimedFinding {
                finding,
                event_boot_ns: now,
            });
        }
        if self.out.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.out);
        detections
            .send(batch)
            .await
            .map_err(|_| anyhow::anyhow!("the respond stage stopped"))?;
        for (pid, signal, object) in self.to_remember.drain(..) {
            self.memory
                .remember(pid, signal, &object)
                .context("updating the signal memory")?;
        }
        self.metrics
            .set_suppressed_duplicates(self.detector.suppressed_duplicates());
        Ok(())
    }
}

/// Runs `job` on a blocking thread once a turn is free; `stopping` when
/// it cannot get one.
async fn in_turn<T: Send + 'static>(
    turns: Arc<Semaphore>,
    job: impl FnOnce() -> T + Send + 'static,
    stopping: T,
) -> T {
    let Ok(_turn) = turns.acquire_owned().await else {
        return stopping;
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(done) => done,
        Err(_) => stopping,
    }
}
