//! The serve stage's own task: follows the approved models the shipper
//! publishes (verified there, and verified here again: zero trust), and
//! runs one [`Supervisor`] per model name this host serves; a name no
//! longer deployed, or an empty set (the host became untrusted, or every
//! model was revoked), stops its sidecar. Without a sidecar binary, an
//! ONNX Runtime library or a cgroup v2 hierarchy, sidecars are off: the
//! reason is logged, and said in a finding when models are approved.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sha2::Digest;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use vigil_domain::{ModelDeployment, ModelRecord, ModelState, ProcessInfo, WorkloadApproval};
use vigil_policy::TrustedKeys;

use super::model_store::ModelStore;
use super::sidecar_cgroup::SidecarCgroups;
use super::sidecar_findings::{model_file, sidecar_finding, SidecarEvent};
use super::sidecar_process::{socket_dir, SidecarCommand};
use super::sidecar_socket::{SocketDirs, SocketLedger};
use super::sidecar_supervisor::{Desired, ServeContext, Supervisor};
use super::store_filler::{ModelSource, StoreFiller};
use super::store_key::{KeySource, StoreKey};
use crate::attest::Tpm;
use crate::config::AgentConfig;
use crate::detect::TimedFinding;
use crate::procfs::Procfs;
use crate::ship::approved_models::ModelDeployments;

/// The id of the agent's own approval of its sidecars.
pub const SIDECAR_APPROVAL_ID: &str = "local:vigil-sidecar";

/// The ONNX Runtime library `scripts/install-deps.sh` installs into the
/// source tree: the default `--ort-lib` when it exists.
pub const SOURCE_TREE_ORT_LIB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../.vigil/deps/python/onnxruntime/capi/libonnxruntime.so.1.32.0"
);

/// What the stage needs besides its configuration.
pub struct ServeLinks {
    pub deployments: ModelDeployments,
    /// Into the ship stage, as the respond stage's findings.
    pub findings: mpsc::Sender<Vec<TimedFinding>>,
    /// Where model files come from (the shipper's fetcher).
    pub source: Arc<dyn ModelSource>,
    /// Fired when the agent stops: every sidecar is stopped.
    pub stop: oneshot::Receiver<()>,
}

/// Everything sidecars need, found at start.
struct Setup {
    data_dir: PathBuf,
    /// `--sidecar-socket-dir`: where else a record may put its socket.
    socket_dirs: Vec<PathBuf>,
    command: SidecarCommand,
    sidecar_sha256: String,
    cgroups: SidecarCgroups,
    key_source: KeySource,
    trusted: TrustedKeys,
    agent_id: String,
    default_memory_max: u64,
    health_interval: Duration,
    stop_grace: Duration,
}

pub struct ServeStage {
    setup: Result<Setup, String>,
    agent: ProcessInfo,
}

impl ServeStage {
    /// Finds the sidecar binary, the ONNX Runtime library and the cgroup
    /// hierarchy; hashes the sidecar binary (its digest is what the local
    /// approval names). Sidecars are off, with the reason, when one is
    /// missing.
    pub fn open(config: &AgentConfig) -> ServeStage {
        let procfs = Procfs::default();
        let me = std::process::id();
        let agent = procfs.process(me).unwrap_or(ProcessInfo {
            pid: me,
            comm: "vigil-agent".into(),
            ..Default::default()
        });
        let setup = setup(config, &procfs);
        match &setup {
            Ok(s) => tracing::info!(
                sidecar = %s.command.binary.display(),
                sha256 = %s.sidecar_sha256,
                ort_lib = %s.command.ort_lib.display(),
                cgroups = %s.cgroups.prefix(),
                "inference sidecars ready to serve approved models"
            ),
            Err(why) => {
                tracing::warn!(%why, "inference sidecars are off: approved models are not served on this host")
            }
        }
        ServeStage { setup, agent }
    }

    /// Why sidecars are off, if they are.
    pub fn off_reason(&self) -> Option<&str> {
        self.setup.as_ref().err().map(String::as_str)
    }

    /// The agent's own approval of its sidecars, merged into the approved
    /// workloads the detectors use: a process running the sidecar binary
    /// the agent hashed, from its path, inside the sidecars' cgroups is
    /// not shadow AI (its runtime library, model and port included).
    pub fn local_approvals(&self) -> Vec<WorkloadApproval> {
        let Ok(s) = &self.setup else {
            return Vec::new();
        };
        vec![WorkloadApproval {
            id: SIDECAR_APPROVAL_ID.into(),
            exe_sha256: s.sidecar_sha256.clone(),
            path: Some(s.command.binary.display().to_string()),
            uid: None,
            cgroup_prefix: Some(s.cgroups.prefix()),
            models: Vec::new(),
            gpus: Vec::new(),
            hosts: Vec::new(),
            approved_by: "vigil-agent".into(),
            note: "the agent's own inference sidecars (approved models only)".into(),
            approved_at_unix_nanos: crate::clock::unix_now_nanos(),
            signer: String::new(),
            signature: String::new(),
        }]
    }

    /// Runs until `links.stop` fires (or the shipper is gone and it fires).
    pub async fn run(self, links: ServeLinks) -> anyhow::Result<()> {
        let ServeLinks {
            mut deployments,
            findings,
            source,
            mut stop,
        } = links;
        let setup = match self.setup {
            Ok(s) => s,
            Err(why) => {
                return run_off(why, self.agent, deployments, findings, stop).await;
            }
        };
        let mut stage = Running {
            setup,
            agent: self.agent,
            findings,
            source,
            ctx: None,
            supervisors: BTreeMap::new(),
            refused: BTreeSet::new(),
            store_error: None,
        };
        loop {
            tokio::select! {
                _ = &mut stop => break,
                changed = deployments.changed() => {
                    if changed.is_err() {
                        // The shipper is gone: the agent is stopping.
                        let _ = (&mut stop).await;
                        break;
                    }
                    let set = deployments.borrow_and_update().clone();
                    if let Some(set) = set {
                        stage.apply(set).await;
                    }
                }
            }
        }
        stage.stop_all("the agent is stopping").await;
        Ok(())
    }
}

fn setup(config: &AgentConfig, procfs: &Procfs) -> Result<Setup, String> {
    let binary = match &config.sidecar_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("finding the agent's own executable: {e}"))?
            .with_file_name("vigil-sidecar"),
    };
    let binary = std::fs::canonicalize(&binary).map_err(|e| {
        format!(
            "no sidecar binary at {} ({e}; --sidecar-bin)",
            binary.display()
        )
    })?;
    let ort_lib = match &config.ort_lib {
        Some(p) => p.clone(),
        None if Path::new(SOURCE_TREE_ORT_LIB).exists() => PathBuf::from(SOURCE_TREE_ORT_LIB),
        None => {
            return Err(
                "no ONNX Runtime library: give --ort-lib (libonnxruntime.so), or run scripts/install-deps.sh in the source tree".into(),
            )
        }
    };
    let ort_lib = std::fs::canonicalize(&ort_lib)
        .map_err(|e| format!("--ort-lib {}: {e}", ort_lib.display()))?;
    let sidecar_sha256 = sha256_file(&binary)
        .map_err(|e| format!("hashing the sidecar binary {}: {e}", binary.display()))?;
    let mount = procfs
        .cgroup2_mount()
        .ok_or("no cgroup v2 hierarchy is mounted: sidecars need one for their limits")?;
    let cgroups = SidecarCgroups::prepare(mount)?;
    let trusted = TrustedKeys::from_hex(&config.trusted_policy_keys)
        .map_err(|e| format!("--trusted-policy-key: {e}"))?;
    let key_source = match config.tpm.resolve() {
        Some(target) => KeySource::Tpm {
            tpm: Tpm::new(target),
            pcrs: config.model_store_pcrs.clone(),
        },
        None => KeySource::File,
    };
    Ok(Setup {
        data_dir: config.data_dir.clone(),
        socket_dirs: config.sidecar_socket_dir.clone(),
        command: SidecarCommand {
            binary,
            ort_lib,
            intra_threads: config.sidecar_intra_threads,
        },
        sidecar_sha256,
        cgroups,
        key_source,
        trusted,
        agent_id: config.resolved_agent_id(),
        default_memory_max: config.sidecar_memory_max_mib.saturating_mul(1 << 20),
        health_interval: Duration::from_millis(config.sidecar_health_interval_ms.max(100)),
        stop_grace: Duration::from_millis(config.sidecar_stop_grace_ms),
    })
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Sidecars are off: approved models are said to be unserved, once per
/// set that has any.
async fn run_off(
    why: String,
    agent: ProcessInfo,
    mut deployments: ModelDeployments,
    findings: mpsc::Sender<Vec<TimedFinding>>,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let mut said: Option<Vec<ModelDeployment>> = None;
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            changed = deployments.changed() => {
                if changed.is_err() {
                    let _ = (&mut stop).await;
                    return Ok(());
                }
                let set = deployments.borrow_and_update().clone();
                let Some(set) = set.filter(|s| !s.is_empty()) else { continue };
                if said.as_ref() == Some(&set) {
                    continue;
                }
                let names: Vec<String> = set.iter().map(|d| format!("{} v{}", d.active.name, d.active.version)).collect();
                let finding = sidecar_finding(
                    SidecarEvent::Refused,
                    agent.clone(),
                    None,
                    format!("approved models not served on this host ({}): inference sidecars are off: {why}", names.join(", ")),
                );
                findings.send(vec![finding]).await.context("the ship stage is gone")?;
                said = Some(set);
            }
        }
    }
}

struct Running {
    setup: Setup,
    agent: ProcessInfo,
    findings: mpsc::Sender<Vec<TimedFinding>>,
    source: Arc<dyn ModelSource>,
    /// Made when the first model is approved (the key may need the TPM).
    ctx: Option<Arc<ServeContext>>,
    /// Per model name, its supervisor: what it should do, and its task.
    supervisors: BTreeMap<String, (watch::Sender<Desired>, JoinHandle<()>)>,
    /// Records refused by this agent's own checks (reported once each).
    refused: BTreeSet<(String, u64, String)>,
    /// Why the store could not be opened, as last reported (once each).
    store_error: Option<String>,
}

impl Running {
    async fn send(&self, finding: TimedFinding) {
        if self.findings.send(vec![finding]).await.is_err() {
            tracing::warn!("the ship stage is gone: a sidecar finding is not spooled");
        }
    }

    /// Why this agent does not take `r` (zero trust: the shipper checked
    /// it too), if it does not.
    fn refusal(&self, r: &ModelRecord, name: &str) -> Option<String> {
        let s = &self.setup;
        if let Err(e) = r.check() {
            return Some(format!("the record is invalid ({e})"));
        }
        if r.name != name {
            return Some(format!(
                "the record names {} in the deployment of {name}",
                r.name
            ));
        }
        if r.state != ModelState::Approved {
            return Some(format!("it is {}, not approved", r.state));
        }
        if !r.covers_agent(&s.agent_id) {
            return Some("it is not scoped to this host".into());
        }
        if let Err(e) = s.trusted.verify_model(r) {
            return Some(format!("its signature does not verify: {e}"));
        }
        None
    }

    /// The records of `set` this agent verifies; refusals reported.
    async fn verified(&mut self, set: Vec<ModelDeployment>) -> Vec<ModelDeployment> {
        let mut out = Vec::with_capacity(set.len());
        let mut refused_now = BTreeSet::new();
        for d in set {
            let name = d.active.name.clone();
            let mut kept = Vec::new();
            for r in d.records() {
                match self.refusal(r, &name) {
                    None => kept.push(r.clone()),
                    Some(why) => {
                        let key = (r.name.clone(), r.version, r.sha256.clone());
                        if !self.refused.contains(&key) {
                            let summary = format!(
                                "model {} v{} ({}) is never loaded: {why}",
                                vigil_domain::cut_text(&r.name, 64),
                                r.version,
                                vigil_domain::cut_text(&r.sha256, 64)
                            );
                            self.send(sidecar_finding(
                                SidecarEvent::Refused,
                                self.agent.clone(),
                                Some(model_file(&r.sha256, r)),
                                summary,
                            ))
                            .await;
                        }
                        refused_now.insert(key);
                    }
                }
            }
            let mut kept = kept.into_iter();
            if let Some(active) = kept.next() {
                out.push(ModelDeployment {
                    active,
                    fallbacks: kept.collect(),
                });
            }
        }
        self.refused = refused_now;
        out
    }

    /// The key and the store, made once.
    async fn context(&mut self) -> Result<Arc<ServeContext>, String> {
        if let Some(ctx) = &self.ctx {
            return Ok(ctx.clone());
        }
        let s = &self.setup;
        let (source, dir) = (s.key_source.clone(), s.data_dir.clone());
        let opened = tokio::task::spawn_blocking(move || source.open(&dir))
            .await
            .map_err(|e| format!("opening the model store key: {e}"))?
            .map_err(|e| format!("the model store key: {e}"))?;
        let key: Arc<StoreKey> = Arc::new(opened.key);
        let dir = s.data_dir.clone();
        let (store, dropped) = tokio::task::spawn_blocking(move || ModelStore::open(&dir, key))
            .await
            .map_err(|e| format!("opening the model store: {e}"))?
            .map_err(|e| format!("opening the model store: {e}"))?;
        if let Some(reset) = opened.reset {
            self.send(sidecar_finding(
                SidecarEvent::StoreReset,
                self.agent.clone(),
                None,
                format!("{reset} ({} files dropped)", dropped.len()),
            ))
            .await;
        } else if !dropped.is_empty() {
            tracing::warn!(
                files = dropped.len(),
                "dropped model store files under another key; they are fetched again"
            );
        }
        let filler = StoreFiller::new(self.source.clone(), store, &s.data_dir)?;
        tracing::info!(
            store = %filler.store().dir().display(),
            key = %filler_key_origin(&s.key_source),
            scratch = %filler.scratch_dir().display(),
            in_memory = filler.scratch_in_memory(),
            "model store open"
        );
        let ctx = Arc::new(ServeContext {
            command: s.command.clone(),
            sidecar_sha256: s.sidecar_sha256.clone(),
            cgroups: s.cgroups.clone(),
            filler,
            data_dir: s.data_dir.clone(),
            socket_dirs: SocketDirs::new(socket_dir(&s.data_dir)?, &s.socket_dirs),
            sockets: SocketLedger::open(s.data_dir.join("sidecar-sockets")),
            default_memory_max: s.default_memory_max,
            health_interval: s.health_interval,
            stop_grace: s.stop_grace,
            findings: self.findings.clone(),
            agent: self.agent.clone(),
        });
        self.ctx = Some(ctx.clone());
        Ok(ctx)
    }

    /// A new set from the control plane.
    async fn apply(&mut self, set: Vec<ModelDeployment>) {
        let verified = self.verified(set).await;
        let names: BTreeSet<String> = verified.iter().map(|d| d.active.name.clone()).collect();
        let gone: Vec<String> = self
            .supervisors
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        let mut stopping = Vec::new();
        for name in gone {
            let why = if verified.is_empty() {
                "the control plane's approved set for this host is empty (the host is untrusted, or no model is approved for it)".to_string()
            } else {
                format!("model {name} is no longer approved for this host (revoked, or its host scope changed)")
            };
            if let Some((tx, task)) = self.supervisors.remove(&name) {
                tx.send_replace(Desired::Stop(why));
                stopping.push(task);
            }
        }
        // Stopped before anything new starts (a name may come back, into
        // the same cgroup).
        for task in stopping {
            let _ = task.await;
        }
        if verified.is_empty() {
            return;
        }
        let ctx = match self.context().await {
            Ok(ctx) => ctx,
            Err(why) => {
                tracing::error!(%why, "approved models cannot be served");
                // Every session start resends the set: said once per reason.
                if self.store_error.as_ref() != Some(&why) {
                    self.send(sidecar_finding(
                        SidecarEvent::Refused,
                        self.agent.clone(),
                        None,
                        format!("approved models not served on this host: {why}"),
                    ))
                    .await;
                    self.store_error = Some(why);
                }
                return;
            }
        };
        // Files no approved record names go.
        let wanted: BTreeSet<&str> = verified
            .iter()
            .flat_map(|d| d.records())
            .map(|r| r.sha256.as_str())
            .collect();
        for digest in ctx.filler.store().digests() {
            if !wanted.contains(digest.as_str()) {
                tracing::info!(sha256 = %digest, "dropping a model no approved record names");
                ctx.filler.store().remove(&digest);
            }
        }
        for d in verified {
            let name = d.active.name.clone();
            match self.supervisors.get(&name) {
                Some((tx, _)) => {
                    tx.send_replace(Desired::Serve(Box::new(d)));
                }
                None => {
                    let (tx, rx) = watch::channel(Desired::Serve(Box::new(d.clone())));
                    let supervisor = Supervisor::new(ctx.clone(), d);
                    let task = tokio::spawn(supervisor.run(rx));
                    self.supervisors.insert(name, (tx, task));
                }
            }
        }
    }

    /// Stops every sidecar and waits for them.
    async fn stop_all(&mut self, why: &str) {
        let all = std::mem::take(&mut self.supervisors);
        for (tx, _) in all.values() {
            tx.send_replace(Desired::Stop(why.to_string()));
        }
        for (_, (_, task)) in all {
            let _ = task.await;
        }
    }
}

fn filler_key_origin(source: &KeySource) -> &'static str {
    match source {
        KeySource::File => "key file",
        KeySource::Tpm { .. } => "sealed to the TPM",
    }
}
