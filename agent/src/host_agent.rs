//! The agent's main loop: sensors → process table → detector → spool, with
//! the shipper running beside it.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use vigil_detection::{BuiltinRules, Observation};
use vigil_domain::{ApprovedWorkloads, Finding, GpuInventory, ProcessInfo};
use vigil_policy::{HostFacts, TrustedKeys};
use vigil_proto::agent::v1 as pb;
use vigil_proto::types::v1 as types_pb;

use crate::clock;
use crate::config::{hostname, AgentConfig};
use crate::detector::{Detection, Detector, PendingFinding, PendingModel};
use crate::exe_digest::FileKey;
use crate::governor::{Governor, Verdict};
use crate::gpu::{spawn_gpu_poller, GpuUpdate};
use crate::process_table::ProcessTable;
use crate::procfs::Procfs;
use crate::sensors::{Sensor, SensorEvent};
use crate::shipper::{self, AgentHealth, ControlRequest, ShipperConfig, ShipperLinks};
use crate::signal_memory::SignalMemory;
use crate::spool::Spool;

pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let spool_dir = config.data_dir.join("spool");
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("creating {}", spool_dir.display()))?;
    let spool = Spool::open(&spool_dir)
        .with_context(|| format!("opening the spool in {}", spool_dir.display()))?;

    let procfs = Procfs::default();
    let mut table = ProcessTable::new(config.process_table_capacity);
    // Attach first, then snapshot: a process that starts in between is seen
    // by both, never by neither.
    let poll = std::time::Duration::from_millis(config.procfs_poll_ms.max(10));
    let mut sensor = Sensor::start(config.sensor_mode, config.ebpf_options(), poll)?;
    let seeded = table.seed(&procfs).context("reading /proc")?;
    if let Sensor::Procfs(poller) = &mut sensor {
        poller.assume_known(table.pids());
    }
    tracing::info!(mode = sensor.mode().as_str(), hooks = ?sensor.hooks(), processes = seeded, spooled = spool.len(), "sensors attached");

    let approved = ApprovedWorkloads::new(config.approved_exe_sha256.iter().cloned());
    let mut memory = SignalMemory::open(spool.database(), procfs.clone())
        .context("opening the agent's signal memory")?;
    let mut detector = Detector::new(
        BuiltinRules::new(approved),
        procfs.clone(),
        std::process::id(),
    );
    let restored = memory
        .restore()
        .context("restoring the signals of running processes")?;
    tracing::info!(
        processes = restored.len(),
        "restored the signals of processes still running"
    );
    detector.restore_reported(restored);
    let trusted =
        TrustedKeys::from_hex(&config.trusted_policy_keys).context("--trusted-policy-key")?;
    let recorder = match &config.record_events {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    let host_facts = HostFacts {
        hostname: hostname(),
        agent_id: config.resolved_agent_id(),
    };
    let mut governor = Governor::new(
        trusted,
        host_facts,
        procfs.clone(),
        recorder,
        Some(spool.database()),
    );
    if let Some(path) = &config.policy_bundle {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        match governor.accept(&bytes) {
            Ok(v) => tracing::info!(version = v, path = %path.display(), "policy bundle active"),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "policy bundle refused; keeping the previous policy")
            }
        }
    }
    if config.policy_auto_rollback_per_minute > 0 {
        governor.set_auto_rollback(Some(crate::governor::AutoRollback {
            per_minute: config.policy_auto_rollback_per_minute,
            watch: std::time::Duration::from_secs(config.policy_auto_rollback_watch_secs),
        }));
    }
    let mut pipeline = Pipeline::new(spool.clone(), governor);
    let running = detector.scan_running(&mut table);
    tracing::info!(
        findings = running.len(),
        "scanned processes that were running before the sensors"
    );
    for finding in running {
        record(
            &mut pipeline,
            &mut memory,
            &detector,
            finding,
            clock::boot_now_ns(),
        )?;
    }

    let (health_tx, health_rx) = watch::channel(AgentHealth::default());
    let (inventory_tx, inventory_rx) = watch::channel(None::<GpuInventory>);
    let initial_status = pipeline.governor.active().map(|a| pb::PolicyStatus {
        active_version: a.version,
        error: String::new(),
        refused_version: 0,
    });
    let (policy_status_tx, policy_status_rx) = watch::channel(initial_status);
    let (requests_tx, mut requests) = mpsc::channel::<ControlRequest>(16);
    let mut gpu_updates = spawn_gpu_poller(config.nvml_library.clone(), config.gpu_poll())
        .context("starting the GPU poller thread")?;
    let hello = pb::Hello {
        agent_id: config.resolved_agent_id(),
        hostname: hostname(),
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        sensor_mode: types_pb::SensorMode::from(sensor.mode()) as i32,
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        hooks: sensor.hooks(),
    };
    let shipper = tokio::spawn(shipper::run(
        spool.clone(),
        ShipperConfig {
            endpoint: config.control_plane.clone(),
            hello,
            heartbeat: config.heartbeat(),
            batch_size: 256,
            window: 4096,
            max_backoff: config.max_backoff(),
        },
        ShipperLinks {
            health: health_rx,
            inventory: inventory_rx,
            policy_status: policy_status_rx,
            requests: requests_tx,
        },
    ));
    println!(
        "vigil-agent ready: {} sensors attached ({})",
        sensor.hooks().len(),
        sensor.mode().as_str()
    );

    let mut events = Vec::with_capacity(1024);
    let mut counters_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut dropped_reported = 0u64;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            r = sensor.next_batch(&mut events) => {
                r.context("reading the sensors")?;
                for ev in events.drain(..) {
                    if let SensorEvent::Exit { ctx, .. } = &ev {
                        memory.forget(ctx.pid).context("updating the signal memory")?;
                        pipeline.governor.forget(ctx.pid);
                    }
                    if let Some(d) = detector.on_event(&ev, &mut table) {
                        dispatch(d, ev.ctx().ktime_boot_ns, &mut pipeline, &mut memory, &detector)?;
                    }
                }
                // Polling sees open files and mappings only as they are now.
                if matches!(sensor, Sensor::Procfs(_)) {
                    for finding in detector.scan_running(&mut table) {
                        record(&mut pipeline, &mut memory, &detector, finding, clock::boot_now_ns())?;
                    }
                }
            }
            Some(update) = gpu_updates.recv() => {
                let inventory = match update {
                    GpuUpdate::Unavailable(status) => {
                        GpuInventory::unavailable(status, clock::unix_now_nanos())
                    }
                    GpuUpdate::Reading(reading) => {
                        let at = clock::unix_now_nanos();
                        let mut processes = Vec::with_capacity(reading.uses.len());
                        for u in &reading.uses {
                            let (d, attributed) = detector.on_gpu_use(u.pid, &u.gpu, &mut table, at);
                            processes.push(attributed);
                            if let Some(d) = d {
                                dispatch(d, clock::boot_now_ns(), &mut pipeline, &mut memory, &detector)?;
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
                let changed = inventory_tx.borrow().as_ref().is_none_or(|last| last.differs_materially(&inventory));
                if changed {
                    if inventory_tx.borrow().as_ref().is_none_or(|last| last.status != inventory.status) {
                        for line in &inventory.status {
                            tracing::warn!(status = %line, "GPU status");
                        }
                    }
                    tracing::info!(gpus = inventory.gpus.len(), processes = inventory.processes.len(), "GPU inventory changed");
                    inventory_tx.send_replace(Some(inventory));
                }
            }
            Some(request) = requests.recv() => match request {
                ControlRequest::Policy { version, bundle } => {
                    let current = pipeline.governor.active().map(|a| a.version).unwrap_or(0);
                    if version == current {
                        continue;
                    }
                    let status = match pipeline.governor.accept(&bundle) {
                        Ok(v) => {
                            tracing::info!(version = v, "policy bundle active (from the control plane)");
                            pb::PolicyStatus { active_version: v, error: String::new(), refused_version: 0 }
                        }
                        Err(e) => {
                            tracing::error!(version, error = %e, "policy bundle refused; keeping the previous policy");
                            pb::PolicyStatus { active_version: current, error: e, refused_version: version }
                        }
                    };
                    policy_status_tx.send_replace(Some(status));
                }
                ControlRequest::Workloads(records) => {
                    let records = pipeline.governor.verified_workloads(records);
                    tracing::info!(count = records.len(), "approved workloads updated");
                    detector.set_workload_records(records);
                }
                ControlRequest::Unfreeze { pid } => {
                    let outcome = pipeline.governor.unfreeze(pid);
                    tracing::warn!(pid, outcome = %outcome.describe(), "unfreeze requested by an operator");
                }
            },
            Some((pending, digest)) = pipeline.hashed.recv() => {
                let waiting = pipeline.hashing.remove(&pending.key()).unwrap_or_default();
                for p in std::iter::once(pending).chain(waiting) {
                    let event_boot_ns = p.event_boot_ns;
                    if let Some(d) = detector.complete(p, digest.clone()) {
                        dispatch(d, event_boot_ns, &mut pipeline, &mut memory, &detector)?;
                    }
                }
            }
            Some((pending, digest)) = pipeline.model_hashed.recv() => {
                let event_boot_ns = pending.event_boot_ns;
                if let Some(finding) = detector.complete_model(pending, digest) {
                    record(&mut pipeline, &mut memory, &detector, finding, event_boot_ns)?;
                }
            }
            Some((process, local, openai_routes, at)) = pipeline.probed.recv() => {
                tracing::info!(pid = process.pid, port = local.port(), openai_routes, "listener probed");
                let obs = Observation::Listening { address: local.ip().to_string(), port: local.port(), openai_routes };
                if let Some(finding) = detector.finding(&process, obs, at) {
                    record(&mut pipeline, &mut memory, &detector, finding, clock::boot_now_ns())?;
                }
            }
            _ = counters_tick.tick() => {
                if let Some(v) = pipeline.policy_rolled_back.take() {
                    let refused = policy_status_tx.borrow().as_ref().map(|s| s.active_version).unwrap_or(0);
                    policy_status_tx.send_replace(Some(pb::PolicyStatus {
                        active_version: v,
                        error: format!("version {refused} was rolled back automatically (too many findings after it became active)"),
                        refused_version: refused,
                    }));
                }
                let counters = sensor.counters();
                if counters.dropped > dropped_reported {
                    tracing::warn!(
                        dropped = counters.dropped - dropped_reported,
                        total_dropped = counters.dropped,
                        emitted = counters.emitted,
                        "the kernel's ring buffer was full: sensor records lost (raise --ring-buffer-kib)"
                    );
                    dropped_reported = counters.dropped;
                }
                health_tx.send_replace(AgentHealth { counters });
            }
            _ = &mut shutdown => break,
        }
    }
    shipper.abort();
    spool.flush().await?;
    tracing::info!(
        spooled = spool.len(),
        decode_errors = sensor.decode_errors(),
        "agent stopped"
    );
    Ok(())
}

/// What runs beside the event loop for it: executable digests (computed
/// off the loop; `hashing` parks findings whose file is already being
/// hashed) and listener probes, each reporting back on a channel.
struct Pipeline {
    spool: Spool,
    governor: Governor,
    /// The agent itself, as the process behind its own findings.
    agent_process: ProcessInfo,
    /// Set when the governor rolled a bundle back: the version now active.
    policy_rolled_back: Option<u64>,
    hashing: HashMap<FileKey, Vec<PendingFinding>>,
    hashed_tx: mpsc::UnboundedSender<(PendingFinding, Option<String>)>,
    hashed: mpsc::UnboundedReceiver<(PendingFinding, Option<String>)>,
    probed_tx: mpsc::UnboundedSender<ProbeResult>,
    probed: mpsc::UnboundedReceiver<ProbeResult>,
    model_hashed_tx: mpsc::UnboundedSender<(PendingModel, Option<String>)>,
    model_hashed: mpsc::UnboundedReceiver<(PendingModel, Option<String>)>,
}

/// A probed listener: the process, its address, whether it answered
/// OpenAI-style routes, and when it was seen.
type ProbeResult = (ProcessInfo, std::net::SocketAddr, bool, i64);

impl Pipeline {
    fn new(spool: Spool, governor: Governor) -> Self {
        let (hashed_tx, hashed) = mpsc::unbounded_channel();
        let (probed_tx, probed) = mpsc::unbounded_channel();
        let (model_hashed_tx, model_hashed) = mpsc::unbounded_channel();
        let me = std::process::id();
        let agent_process = Procfs::default().process(me).unwrap_or(ProcessInfo {
            pid: me,
            comm: "vigil-agent".into(),
            ..Default::default()
        });
        Self {
            spool,
            governor,
            agent_process,
            policy_rolled_back: None,
            hashing: HashMap::new(),
            hashed_tx,
            hashed,
            probed_tx,
            probed,
            model_hashed_tx,
            model_hashed,
        }
    }
}

/// Acts on what the detector decided: spool a finding, probe a listener,
/// or hash an executable (one hash per file version at a time; later
/// findings wait on it).
fn dispatch(
    detection: Detection,
    event_boot_ns: u64,
    p: &mut Pipeline,
    memory: &mut SignalMemory,
    detector: &Detector,
) -> anyhow::Result<()> {
    match detection {
        Detection::Finding(finding) => record(p, memory, detector, finding, event_boot_ns)?,
        Detection::ProbeListener {
            process,
            local,
            observed_at_unix_nanos,
        } => {
            let tx = p.probed_tx.clone();
            tokio::spawn(async move {
                let yes = crate::serving_probe::serves_openai_routes(
                    local,
                    std::time::Duration::from_secs(3),
                )
                .await;
                let _ = tx.send((process, local, yes, observed_at_unix_nanos));
            });
        }
        Detection::NeedsModelDigest(mut pending) => {
            // Model files can be large: hashed once per file version, off the loop.
            let tx = p.model_hashed_tx.clone();
            tokio::task::spawn_blocking(move || {
                let digest = crate::exe_digest::sha256_reader(&mut pending.file).ok();
                let _ = tx.send((pending, digest));
            });
        }
        Detection::NeedsDigest(mut pending) => match p.hashing.entry(pending.key()) {
            Entry::Occupied(mut waiting) => waiting.get_mut().push(pending),
            Entry::Vacant(slot) => {
                slot.insert(Vec::new());
                let tx = p.hashed_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let digest = crate::exe_digest::sha256_reader(&mut pending.exe).ok();
                    let _ = tx.send((pending, digest));
                });
            }
        },
    }
    Ok(())
}

/// Puts a finding through the policy (which may allow it, or re-rate it
/// and act on the process), spools what stands, then remembers the
/// process's signals so a restarted agent neither forgets nor repeats them.
fn record(
    p: &mut Pipeline,
    memory: &mut SignalMemory,
    detector: &Detector,
    finding: Finding,
    event_boot_ns: u64,
) -> anyhow::Result<()> {
    let pid = finding.process.pid;
    if let Verdict::Report { finding, action } = p.governor.decide(finding) {
        // Act first: a kill should not wait for the disk.
        let acted = action.map(|plan| p.governor.enforce(&finding, &plan, event_boot_ns));
        spool_finding(&p.spool, *finding, event_boot_ns)?;
        if let Some(f) = acted {
            spool_finding(&p.spool, f, event_boot_ns)?;
        }
        if let Some(f) = p.governor.watch_rate(&p.agent_process) {
            spool_finding(&p.spool, f, event_boot_ns)?;
            p.policy_rolled_back = Some(p.governor.active().map(|a| a.version).unwrap_or(0));
        }
    }
    if let Some(signals) = detector.reported(pid) {
        memory
            .remember(pid, signals)
            .context("updating the signal memory")?;
    }
    Ok(())
}

/// Spools a finding and logs it with its latency from the syscall
/// (`event_boot_ns`, on the kernel's clock) to the spool.
fn spool_finding(spool: &Spool, finding: Finding, event_boot_ns: u64) -> anyhow::Result<()> {
    let (rule, pid, summary) = (
        finding.rule_id.clone(),
        finding.process.pid,
        finding.summary.clone(),
    );
    let detected_us = clock::boot_now_ns().saturating_sub(event_boot_ns) / 1_000;
    let seq = spool
        .push(finding)
        .context("writing a finding to the spool")?;
    let latency_us = clock::boot_now_ns().saturating_sub(event_boot_ns) / 1_000;
    tracing::info!(%rule, pid, seq, detected_us, latency_us, %summary, "finding");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when first polled: a SIGTERM right after "ready" must not
/// take the default action and kill the agent uncleanly.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
