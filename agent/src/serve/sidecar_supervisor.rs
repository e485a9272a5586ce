//! One task per model name: keeps a `vigil-sidecar` serving the version
//! [`ModelChoice`] picks. It starts the sidecar in its cgroup, hands it
//! the verified model (a sealed memfd over the control socket), checks
//! its health every interval (the store file's stamp, re-verified when it
//! changed; KServe ServerLive and ModelReady; the control socket's
//! status), restarts it with backoff when it dies (an OOM kill told apart
//! by `memory.events`, a port someone else holds by the exit status, never
//! blamed on the version), rolls back to the next version that verifies when
//! the served one fails, and stops it when the name is no longer
//! deployed. Every such event is a finding.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use vigil_domain::{ModelDeployment, ModelListen, ModelRecord, ProcessInfo};

use super::control_channel::{ChannelError, ControlChannel};
use super::control_messages::{Reply, Request};
use super::kserve_health::{self, SidecarAddress};
use super::listen_holder;
use super::load_deaths::{DeathCause, LoadDeaths, Verdict};
use super::model_choice::ModelChoice;
use super::model_store::{FileStamp, StoreError, VerifiedModel};
use super::restart_backoff::RestartBackoff;
use super::sidecar_cgroup::{Limits, SidecarCgroup, SidecarCgroups};
use super::sidecar_findings::{model_file, sidecar_finding, SidecarEvent};
use super::sidecar_process::{describe_exit, fresh_work_dir, listen_arg, SidecarCommand};
use super::sidecar_socket::{SocketDirs, SocketLedger, SocketPath};
use super::store_filler::{FetchFailure, StoreFiller};
use crate::detect::TimedFinding;

/// How long a host with nothing running waits for the preferred version's
/// first fetch before it starts a fallback it already has.
const WAIT_FOR_PREFERRED: Duration = Duration::from_secs(10);
/// Health checks failed in a row before the sidecar is restarted.
const HEALTH_FAILURES_TO_RESTART: u32 = 3;
/// How long a sidecar may take to answer a status request.
const STATUS_WITHIN: Duration = Duration::from_secs(2);
/// A fetch that failed waits this long, doubling to `FETCH_RETRY_MAX`.
const FETCH_RETRY_FIRST: Duration = Duration::from_secs(1);
const FETCH_RETRY_MAX: Duration = Duration::from_secs(60);

/// What every supervisor shares.
pub struct ServeContext {
    pub command: SidecarCommand,
    /// The sidecar binary's sha256, computed when the agent started.
    pub sidecar_sha256: String,
    pub cgroups: SidecarCgroups,
    pub filler: StoreFiller,
    /// The agent's data directory (each sidecar starts in an empty
    /// `DATA_DIR/sidecars/<name>`).
    pub data_dir: std::path::PathBuf,
    /// Where sidecars' unix sockets may be (`DATA_DIR/models` first, the
    /// default).
    pub socket_dirs: SocketDirs,
    /// The sockets the agent's sidecars made (the only ones it removes).
    pub sockets: SocketLedger,
    pub default_memory_max: u64,
    pub health_interval: Duration,
    pub stop_grace: Duration,
    pub findings: mpsc::Sender<Vec<TimedFinding>>,
    /// The agent itself: the process of a finding when no sidecar runs.
    pub agent: ProcessInfo,
}

/// What the serve stage wants of a supervisor.
#[derive(Debug, Clone)]
pub enum Desired {
    Serve(Box<ModelDeployment>),
    /// Stop the sidecar (and the supervisor), for this reason.
    Stop(String),
}

/// The version a running sidecar has loaded.
#[derive(Debug, Clone)]
struct Loaded {
    record: ModelRecord,
    stamp: FileStamp,
}

struct Running {
    child: tokio::process::Child,
    pid: u32,
    channel: ControlChannel,
    cgroup: SidecarCgroup,
    listen: ModelListen,
    address: SidecarAddress,
    loaded: Option<Loaded>,
    /// memory.events' oom_kill when it started.
    oom_kills_at_start: u64,
    /// Why the agent is killing it, when it is (the exit then says so).
    killing: Option<String>,
}

/// A restart waiting for its backoff.
struct PendingRestart {
    at: tokio::time::Instant,
    why: String,
    waited: Duration,
}

/// A failed version being replaced: from which record, and why.
struct Failing {
    from: ModelRecord,
    why: String,
}

enum Served {
    /// Serving (or waiting for a restart): nothing more to do now.
    Done,
    /// The version failed (marked): plan again.
    Failed,
}

pub struct Supervisor {
    ctx: Arc<ServeContext>,
    name: String,
    choice: ModelChoice,
    sidecar: Option<Running>,
    backoff: RestartBackoff,
    restart: Option<PendingRestart>,
    /// Why the sidecar last died, for the restart finding.
    restarted_after: Option<(String, Duration)>,
    restarts: u64,
    health_failures: u32,
    failing: Option<Failing>,
    /// Digests being fetched; those waiting to be tried again (until
    /// when); the wait each failed fetch last got.
    fetching: BTreeMap<String, Instant>,
    fetch_due: BTreeMap<String, tokio::time::Instant>,
    fetch_wait: BTreeMap<String, Duration>,
    /// Fetch refusals already reported (once per record set).
    fetch_reported: BTreeSet<String>,
    /// Deaths in a row while loading a digest (before the sidecar said it
    /// loaded it).
    load_deaths: LoadDeaths,
    /// A listen failure already reported (until the sidecar serves again).
    listen_failure_reported: bool,
}

type FetchDone = (String, Result<FileStamp, FetchFailure>);

impl Supervisor {
    pub fn new(ctx: Arc<ServeContext>, deployment: ModelDeployment) -> Supervisor {
        Supervisor {
            name: deployment.active.name.clone(),
            ctx,
            choice: ModelChoice::new(deployment),
            sidecar: None,
            backoff: RestartBackoff::default(),
            restart: None,
            restarted_after: None,
            restarts: 0,
            health_failures: 0,
            failing: None,
            fetching: BTreeMap::new(),
            fetch_due: BTreeMap::new(),
            fetch_wait: BTreeMap::new(),
            fetch_reported: BTreeSet::new(),
            load_deaths: LoadDeaths::default(),
            listen_failure_reported: false,
        }
    }

    /// Runs until told to stop (or the serve stage is gone).
    pub async fn run(mut self, mut desired: watch::Receiver<Desired>) {
        let mut tick = tokio::time::interval(self.ctx.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fetches: JoinSet<FetchDone> = JoinSet::new();
        self.reconcile(&mut fetches).await;
        loop {
            let restart_at = self.restart.as_ref().map(|r| r.at);
            let retry_at = self.fetch_due.values().min().copied();
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                changed = desired.changed() => {
                    let wanted = match changed {
                        Ok(()) => desired.borrow_and_update().clone(),
                        Err(_) => Desired::Stop("the agent is stopping".into()),
                    };
                    match wanted {
                        Desired::Stop(why) => {
                            fetches.abort_all();
                            self.stop(&why, true).await;
                            return;
                        }
                        Desired::Serve(deployment) => {
                            if self.choice.update(*deployment) {
                                self.fetch_due.clear();
                                self.fetch_wait.clear();
                                self.fetch_reported.clear();
                            }
                        }
                    }
                }
                status = wait_child(&mut self.sidecar) => {
                    self.died(status);
                }
                _ = tick.tick() => self.health().await,
                () = tokio::time::sleep_until(restart_at.unwrap_or(far)), if restart_at.is_some() => {
                    if let Some(r) = self.restart.take() {
                        tracing::debug!(name = %self.name, why = %r.why, waited_ms = r.waited.as_millis() as u64, "restart due");
                    }
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {
                    let now = tokio::time::Instant::now();
                    self.fetch_due.retain(|_, at| *at > now);
                }
                Some(done) = fetches.join_next(), if !fetches.is_empty() => {
                    if let Ok(done) = done {
                        self.fetched(done);
                    }
                }
            }
            self.reconcile(&mut fetches).await;
        }
    }

    async fn send(&self, finding: TimedFinding) {
        if self.ctx.findings.send(vec![finding]).await.is_err() {
            tracing::warn!(name = %self.name, "the ship stage is gone: a sidecar finding is not spooled");
        }
    }

    /// A finding about `record`'s version, naming the running sidecar.
    async fn report_version(&self, event: SidecarEvent, record: &ModelRecord, summary: String) {
        let pid = self.sidecar.as_ref().map_or(0, |r| r.pid);
        self.send(sidecar_finding(
            event,
            self.process(pid),
            Some(self.file(record)),
            summary,
        ))
        .await;
    }

    /// The first version that failed in this round of serving, for the
    /// finding that says what is served instead.
    fn keep_first_failure(&mut self, record: ModelRecord, why: String) {
        if self.failing.is_none() {
            self.failing = Some(Failing { from: record, why });
        }
    }

    /// The sidecar's process as findings name it (known without reading
    /// /proc, which may already be gone); the agent's when none runs
    /// (`pid` 0).
    fn process(&self, pid: u32) -> ProcessInfo {
        if pid == 0 {
            return self.ctx.agent.clone();
        }
        let cmd = &self.ctx.command;
        ProcessInfo {
            pid,
            ppid: std::process::id(),
            uid: rustix::process::geteuid().as_raw(),
            exe: cmd.binary.display().to_string(),
            argv: vec![
                cmd.binary.display().to_string(),
                "--ort-lib".into(),
                cmd.ort_lib.display().to_string(),
            ],
            comm: "vigil-sidecar".into(),
            exe_sha256: self.ctx.sidecar_sha256.clone(),
            cgroup_path: format!("{}/{}", self.ctx.cgroups.prefix(), self.name),
            ..Default::default()
        }
    }

    fn file(&self, record: &ModelRecord) -> vigil_domain::FileObject {
        model_file(
            &self
                .ctx
                .filler
                .store()
                .path(&record.sha256)
                .display()
                .to_string(),
            record,
        )
    }

    fn limits(&self, record: &ModelRecord) -> Limits {
        Limits {
            memory_max_bytes: if record.memory_max_bytes == 0 {
                self.ctx.default_memory_max
            } else {
                record.memory_max_bytes
            },
            cpu_millicores: record.cpu_millicores,
        }
    }

    fn listen(&self, record: &ModelRecord) -> ModelListen {
        match ModelListen::parse(&record.listen) {
            Ok(Some(listen)) => listen,
            // Records are checked before they reach here; the default
            // otherwise.
            _ => ModelListen::Unix {
                path: self
                    .ctx
                    .socket_dirs
                    .default_dir()
                    .join(format!("{}.sock", self.name))
                    .display()
                    .to_string(),
            },
        }
    }

    /// Brings serving in line with the plan: fetches what is missing,
    /// serves the version chosen (trying the next when one fails), or
    /// stops the sidecar when no version can be served.
    async fn reconcile(&mut self, fetches: &mut JoinSet<FetchDone>) {
        // Each pass either ends or marks one more digest failed.
        for _ in 0..=self.choice.deployment().records().count() + 1 {
            let store = self.ctx.filler.store().clone();
            let plan = self.choice.plan(|d| store.contains(d));
            for digest in &plan.fetch {
                if self.fetching.contains_key(digest) || self.fetch_due.contains_key(digest) {
                    continue;
                }
                let Some(record) = self.choice.record(digest).cloned() else {
                    continue;
                };
                self.fetching.insert(digest.clone(), Instant::now());
                let filler = self.ctx.filler.clone();
                fetches.spawn(async move {
                    let result = filler.fill(&record).await;
                    (record.sha256, result)
                });
            }
            // Nothing running yet and a preferred version in its first
            // fetch (for a few seconds): wait for it rather than start an
            // older one only to switch a moment later.
            let first_fetch = plan.better_missing.iter().any(|d| {
                !self.fetch_wait.contains_key(d)
                    && self
                        .fetching
                        .get(d)
                        .is_some_and(|since| since.elapsed() < WAIT_FOR_PREFERRED)
            });
            if self.sidecar.is_none() && first_fetch {
                return;
            }
            let Some(record) = plan.serve else {
                self.nothing_to_serve(!plan.fetch.is_empty()).await;
                return;
            };
            if let Some(run) = &self.sidecar {
                let same = run.loaded.as_ref().is_some_and(|l| {
                    l.record.sha256 == record.sha256 && l.record.version == record.version
                });
                if same && run.listen == self.listen(&record) {
                    if let Some(f) = self
                        .failing
                        .take()
                        .filter(|f| f.from.sha256 != record.sha256)
                    {
                        // The sidecar kept the version it had: serving went
                        // back to it.
                        let pid = run.pid;
                        self.send(sidecar_finding(
                            SidecarEvent::Rollback,
                            self.process(pid),
                            Some(self.file(&record)),
                            format!(
                                "model {}: v{} failed ({}); rolled back to v{}, which the sidecar kept serving",
                                self.name, f.from.version, f.why, record.version
                            ),
                        ))
                        .await;
                    }
                    return;
                }
            } else if self
                .restart
                .as_ref()
                .is_some_and(|r| r.at > tokio::time::Instant::now())
            {
                return;
            }
            match self.serve(record).await {
                Served::Done => return,
                Served::Failed => continue,
            }
        }
    }

    /// No version can be served now: stop a running sidecar, saying why.
    async fn nothing_to_serve(&mut self, fetching: bool) {
        let failing = self.failing.take();
        if let Some(f) = &failing {
            let summary = format!(
                "model {}: v{} failed ({}) and no approved fallback verifies on this host{}",
                self.name,
                f.from.version,
                f.why,
                if fetching {
                    "; fetching the approved versions again"
                } else {
                    ""
                }
            );
            self.report_version(SidecarEvent::Refused, &f.from, summary)
                .await;
        }
        if self.sidecar.is_some() {
            let why = match &failing {
                Some(f) => format!("v{} failed and no fallback can be served", f.from.version),
                None => "no approved version can be served".to_string(),
            };
            self.stop(&why, false).await;
        }
    }

    /// Serves `record`: verified from the store, loaded into the running
    /// sidecar (hot) or a new one, and ready by KServe's ModelReady.
    async fn serve(&mut self, record: ModelRecord) -> Served {
        let listen = self.listen(&record);
        let socket = match self.socket_of(&listen) {
            Ok(socket) => socket,
            Err(why) => {
                let why = format!("its listen address is refused: {why}");
                self.fail(&record, why.clone(), false);
                let summary = format!(
                    "model {} v{} not served: {why}",
                    record.name, record.version
                );
                self.report_version(SidecarEvent::Refused, &record, summary)
                    .await;
                self.keep_first_failure(record, why);
                return Served::Failed;
            }
        };
        let verified = match self.verify(&record).await {
            Ok(v) => v,
            Err(e) => {
                let why = format!("its store file does not verify: {e}");
                self.fail(
                    &record,
                    why.clone(),
                    e.is_tamper() || matches!(e, StoreError::Missing { .. }),
                );
                if e.is_tamper() {
                    let summary = format!(
                        "model {} v{}: {why}; dropped, fetched again, not served until the control plane sends a new record set",
                        record.name, record.version
                    );
                    self.report_version(SidecarEvent::Tampered, &record, summary)
                        .await;
                }
                self.keep_first_failure(record, why);
                return Served::Failed;
            }
        };
        if self.sidecar.as_ref().is_some_and(|r| r.listen != listen) {
            self.stop(
                &format!("v{} listens on {}", record.version, record.listen),
                false,
            )
            .await;
        }
        let limits = self.limits(&record);
        let fresh = self.sidecar.is_none();
        if fresh {
            if let Some(socket) = &socket {
                if let Err(why) = self.ctx.sockets.clear_for(&self.name, socket) {
                    tracing::error!(name = %self.name, %why, "the sidecar's socket path is not free");
                    self.listen_failed(0, &listen, &why).await;
                    self.schedule_restart(format!("its socket path is not free: {why}"));
                    return Served::Done;
                }
            }
            if let Err(why) = self.start(&record, &listen, &limits) {
                tracing::error!(name = %self.name, %why, "could not start the sidecar");
                self.schedule_restart(format!("could not start: {why}"));
                return Served::Done;
            }
        } else if let Some(run) = &self.sidecar {
            if let Err(e) = run.cgroup.set_limits(&limits) {
                tracing::warn!(name = %self.name, error = %e, "could not change the sidecar's limits");
            }
        }
        let loaded = self.load(&record, verified).await;
        // The sidecar binds before it answers on its control socket: what
        // is at the path now is its socket (the directory is the agent's
        // alone, and the path was free when it started).
        if let Some(socket) = &socket {
            self.ctx.sockets.remember(&self.name, socket);
        }
        match loaded {
            LoadResult::Ready(stamp) => {
                self.load_deaths.loaded(&record.sha256);
                self.listen_failure_reported = false;
                self.served(record, stamp, fresh).await;
                Served::Done
            }
            LoadResult::VersionFailed(why) => {
                self.fail(&record, why.clone(), false);
                let summary = format!(
                    "model {} v{} not served: {why}",
                    record.name, record.version
                );
                self.report_version(SidecarEvent::Refused, &record, summary)
                    .await;
                // Serving goes back to what was loaded before, or the next.
                self.keep_first_failure(record, why);
                Served::Failed
            }
            LoadResult::Died { status, confirmed } => {
                let (why, cause) = self.died(status);
                // A death after the sidecar said it loaded the model is a
                // crash: restarted. Before, the version is at fault only
                // as `LoadDeaths` says (never for a port someone else
                // holds; for an OOM kill only when it happens again).
                if confirmed {
                    self.load_deaths.loaded(&record.sha256);
                    return Served::Done;
                }
                let why = match self.load_deaths.died_loading(&record.sha256, cause, &why) {
                    Verdict::Restart => return Served::Done,
                    Verdict::VersionFailed(why) => why,
                };
                self.fail(&record, why.clone(), false);
                self.keep_first_failure(record, why);
                Served::Failed
            }
        }
    }

    /// A unix `listen`, checked: a plain name in one of the agent's socket
    /// directories (None for TCP).
    fn socket_of(&self, listen: &ModelListen) -> Result<Option<SocketPath>, String> {
        match listen {
            ModelListen::Unix { path } => self.ctx.socket_dirs.check(path).map(Some),
            ModelListen::Tcp { .. } => Ok(None),
        }
    }

    /// The sidecar cannot listen on `listen` (`why`): a high finding, once
    /// until it serves again, naming who holds a TCP port when /proc says.
    async fn listen_failed(&mut self, pid: u32, listen: &ModelListen, why: &str) {
        if let Some(finding) = self.listen_failure(pid, listen, why) {
            self.send(finding).await;
        }
    }

    fn listen_failure(
        &mut self,
        pid: u32,
        listen: &ModelListen,
        why: &str,
    ) -> Option<TimedFinding> {
        if self.listen_failure_reported {
            return None;
        }
        self.listen_failure_reported = true;
        let holder = match listen {
            ModelListen::Tcp { port, .. } => {
                format!(
                    "; {}",
                    listen_holder::describe(&listen_holder::tcp_port_holders(*port))
                )
            }
            ModelListen::Unix { .. } => String::new(),
        };
        Some(sidecar_finding(
            SidecarEvent::ListenFailed,
            self.process(pid),
            None,
            format!(
                "sidecar for model {} cannot listen on {} ({why}){holder}; the version is not blamed, the sidecar is restarted with backoff until the address is free",
                self.name,
                listen_arg(listen)
            ),
        ))
    }

    /// `record`'s digest failed here; its file goes when `drop_file`.
    fn fail(&mut self, record: &ModelRecord, why: String, drop_file: bool) {
        tracing::warn!(name = %self.name, version = record.version, sha256 = %record.sha256, %why, "model version failed");
        self.choice.fail(&record.sha256, why);
        if drop_file {
            self.ctx.filler.store().remove(&record.sha256);
        }
    }

    async fn verify(&self, record: &ModelRecord) -> Result<VerifiedModel, StoreError> {
        let store = self.ctx.filler.store().clone();
        let (sha256, size, name) = (record.sha256.clone(), record.size, record.name.clone());
        tokio::task::spawn_blocking(move || store.open_verified(&sha256, size, &name))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path: "(verification task)".into(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    fn start(
        &mut self,
        record: &ModelRecord,
        listen: &ModelListen,
        limits: &Limits,
    ) -> Result<(), String> {
        let work_dir = fresh_work_dir(&self.ctx.data_dir, &self.name)?;
        let cgroup = self.ctx.cgroups.create(&self.name, limits)?;
        let oom_kills_at_start = cgroup.oom_kills();
        let child = self.ctx.command.spawn(listen, &cgroup, &work_dir)?;
        tracing::info!(name = %self.name, version = record.version, pid = child.pid, listen = %listen_arg(listen), cgroup = %cgroup.dir().display(), "sidecar started");
        self.sidecar = Some(Running {
            child: child.child,
            pid: child.pid,
            channel: child.channel,
            cgroup,
            address: SidecarAddress::of(listen),
            listen: listen.clone(),
            loaded: None,
            oom_kills_at_start,
            killing: None,
        });
        self.health_failures = 0;
        self.restart = None;
        Ok(())
    }

    /// A load on the running sidecar, its answer, then ModelReady.
    async fn load(&mut self, record: &ModelRecord, verified: VerifiedModel) -> LoadResult {
        let Some(run) = self.sidecar.as_mut() else {
            return LoadResult::VersionFailed("no sidecar is running".into());
        };
        let request = Request::Load {
            name: record.name.clone(),
            version: record.version,
            sha256: record.sha256.clone(),
            size: record.size,
        };
        // Generous: a large model takes time to load (and to optimise).
        let within = Duration::from_secs(60) + Duration::from_secs(record.size / (20 << 20));
        let channel = &run.channel;
        let child = &mut run.child;
        let asked = async {
            channel
                .send(&request, Some(std::os::fd::AsFd::as_fd(&verified.memfd)))
                .await?;
            loop {
                match channel.recv().await? {
                    Reply::Loaded { name, version, .. }
                        if name == record.name && (version == record.version || version == 0) =>
                    {
                        return Ok(Ok(()))
                    }
                    Reply::Refused { reason, .. } => {
                        return Ok(Err(format!("the sidecar refused it: {reason}")))
                    }
                    Reply::Error { reason } => {
                        return Ok(Err(format!("the sidecar answered an error: {reason}")))
                    }
                    other => {
                        tracing::debug!(name = %record.name, ?other, "sidecar message while loading")
                    }
                }
            }
        };
        let answer: Result<Result<(), String>, ChannelError> = tokio::select! {
            a = tokio::time::timeout(within, asked) => match a {
                Ok(a) => a,
                Err(_) => Ok(Err(format!("no answer to the load within {} s", within.as_secs()))),
            },
            status = child.wait() => return LoadResult::Died { status, confirmed: false },
        };
        drop(verified.memfd);
        let timed_out_or_refused = match answer {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(why),
            Err(e) => {
                // The socket failed: the sidecar is dying; its exit says how.
                tracing::warn!(name = %record.name, error = %e, "control socket failed during a load");
                let status = tokio::time::timeout(Duration::from_secs(5), run.child.wait()).await;
                return match status {
                    Ok(status) => LoadResult::Died {
                        status,
                        confirmed: false,
                    },
                    Err(_) => {
                        run.cgroup.kill_all();
                        LoadResult::Died {
                            status: run.child.wait().await,
                            confirmed: false,
                        }
                    }
                };
            }
        };
        if let Some(why) = timed_out_or_refused {
            if why.starts_with("no answer") {
                // A sidecar stuck in a load is restarted.
                run.killing = Some(format!("stuck loading v{}", record.version));
                run.cgroup.kill_all();
            }
            return LoadResult::VersionFailed(why);
        }
        // Ready through the same door as clients: the gRPC server may come
        // up just after the first load.
        let until = Instant::now() + self.ctx.health_interval.max(Duration::from_secs(5));
        let timeout = self
            .ctx
            .health_interval
            .min(Duration::from_secs(2))
            .max(Duration::from_millis(200));
        loop {
            match kserve_health::check(&run.address, &record.name, record.version, timeout).await {
                Ok(()) => return LoadResult::Ready(verified.stamp),
                Err(why) if Instant::now() >= until => {
                    return LoadResult::VersionFailed(format!("loaded, but not ready: {why}"))
                }
                Err(_) => {
                    if let Ok(Some(status)) = run.child.try_wait() {
                        return LoadResult::Died {
                            status: Ok(status),
                            confirmed: true,
                        };
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// `record` is ready: the finding that says how it came to be served.
    async fn served(&mut self, record: ModelRecord, stamp: FileStamp, fresh: bool) {
        let Some(run) = self.sidecar.as_mut() else {
            return;
        };
        let previous = run.loaded.replace(Loaded {
            record: record.clone(),
            stamp,
        });
        let pid = run.pid;
        let listen = listen_arg(&run.listen);
        let limits = self.limits(&record);
        let failing = self.failing.take();
        let restarted_after = if fresh {
            self.restarted_after.take()
        } else {
            None
        };
        let (event, summary) = if let Some(f) = failing.filter(|f| f.from.sha256 != record.sha256) {
            (
                SidecarEvent::Rollback,
                format!(
                    "model {}: rolled back from v{} to v{} ({}): {}",
                    self.name,
                    f.from.version,
                    record.version,
                    if fresh {
                        "new sidecar"
                    } else {
                        "hot, the sidecar kept answering"
                    },
                    f.why
                ),
            )
        } else if fresh {
            match restarted_after {
                Some((why, waited)) => (
                    SidecarEvent::Restart,
                    format!(
                        "sidecar for model {} restarted (restart {}) {} ms after it ended ({why}); serving v{} on {listen}",
                        self.name,
                        self.restarts,
                        waited.as_millis(),
                        record.version
                    ),
                ),
                None => (
                    SidecarEvent::Start,
                    format!(
                        "sidecar for model {} started: serving v{} ({}) on {listen}, memory.max {} bytes, cpu {}",
                        self.name,
                        record.version,
                        record.sha256,
                        limits.memory_max_bytes,
                        if limits.cpu_millicores == 0 {
                            "unlimited".to_string()
                        } else {
                            format!("{} millicores", limits.cpu_millicores)
                        }
                    ),
                ),
            }
        } else {
            (
                SidecarEvent::Load,
                format!(
                    "model {}: switched from {} to v{} (hot)",
                    self.name,
                    previous.map_or("nothing".to_string(), |p| format!("v{}", p.record.version)),
                    record.version
                ),
            )
        };
        self.send(sidecar_finding(
            event,
            self.process(pid),
            Some(self.file(&record)),
            summary,
        ))
        .await;
    }

    /// The sidecar ended (`status`): an OOM kill is reported, and so is
    /// an address it cannot listen on; a restart is scheduled after the
    /// backoff. Returns why it ended, and its cause.
    fn died(&mut self, status: std::io::Result<std::process::ExitStatus>) -> (String, DeathCause) {
        let Some(run) = self.sidecar.take() else {
            return ("no sidecar was running".into(), DeathCause::Other);
        };
        let oom = run.cgroup.oom_kills() > run.oom_kills_at_start;
        let exit = match &status {
            Ok(s) => describe_exit(s),
            Err(e) => format!("could not be waited for ({e})"),
        };
        let cause = DeathCause::of(status.as_ref().ok().and_then(|s| s.code()), oom);
        let limit = run.cgroup.memory_limit();
        let why = match (&run.killing, oom) {
            (_, true) => {
                format!("killed by the kernel's OOM killer at memory.max {limit} bytes ({exit})")
            }
            (Some(k), false) => format!("killed by the agent: {k} ({exit})"),
            (None, false) => match cause {
                DeathCause::CannotListen => format!("{exit}: it cannot listen"),
                DeathCause::RuntimeLibrary => {
                    format!("{exit}: the ONNX Runtime library did not load")
                }
                _ => exit,
            },
        };
        // Whatever it left in its cgroup goes with it.
        if run.cgroup.is_populated() {
            run.cgroup.kill_all();
        }
        // A socket it bound and could not remove (killed) is its own: the
        // next start may remove it.
        if let Ok(Some(socket)) = self.socket_of(&run.listen) {
            self.ctx.sockets.remember(&self.name, &socket);
        }
        let serving = run.loaded.as_ref().map_or("no model yet".to_string(), |l| {
            format!("v{}", l.record.version)
        });
        tracing::warn!(name = %self.name, pid = run.pid, %why, %serving, "sidecar ended");
        if oom {
            let finding = sidecar_finding(
                SidecarEvent::Oom,
                self.process(run.pid),
                run.loaded.as_ref().map(|l| self.file(&l.record)),
                format!(
                    "sidecar for model {} (pid {}, serving {serving}) {why}",
                    self.name, run.pid
                ),
            );
            // Sent without waiting (died() runs inside other awaits): the
            // channel is bounded, and a full one means the ship stage is
            // far behind; the log line above stays.
            if self.ctx.findings.try_send(vec![finding]).is_err() {
                tracing::warn!(name = %self.name, "could not queue the OOM finding");
            }
        }
        if cause == DeathCause::CannotListen {
            if let Some(finding) = self.listen_failure(run.pid, &run.listen, &why) {
                if self.ctx.findings.try_send(vec![finding]).is_err() {
                    tracing::warn!(name = %self.name, "could not queue the listen finding");
                }
            }
        }
        self.health_failures = 0;
        self.schedule_restart(why.clone());
        (why, cause)
    }

    fn schedule_restart(&mut self, why: String) {
        let delay = self.backoff.died(Instant::now());
        self.restarts += 1;
        tracing::info!(name = %self.name, delay_ms = delay.as_millis() as u64, "sidecar restarts after its backoff");
        self.restarted_after = Some((why.clone(), delay));
        self.restart = Some(PendingRestart {
            at: tokio::time::Instant::now() + delay,
            why,
            waited: delay,
        });
    }

    /// One health interval: the served file's stamp (re-verified when it
    /// changed), then KServe and the control socket.
    async fn health(&mut self) {
        let Some(loaded) = self.sidecar.as_ref().and_then(|r| r.loaded.clone()) else {
            return;
        };
        let store = self.ctx.filler.store();
        let changed = match store.stamp(&loaded.record.sha256) {
            Ok(now) => now != loaded.stamp,
            Err(_) => true,
        };
        if changed {
            match self.verify(&loaded.record).await {
                Ok(v) => {
                    tracing::info!(name = %self.name, version = loaded.record.version, "store file changed and verified again");
                    if let Some(l) = self.sidecar.as_mut().and_then(|r| r.loaded.as_mut()) {
                        l.stamp = v.stamp;
                    }
                }
                Err(e) => {
                    let why = format!("its store file changed and no longer verifies: {e}");
                    self.fail(&loaded.record, why.clone(), true);
                    self.failing = Some(Failing {
                        from: loaded.record.clone(),
                        why,
                    });
                    // reconcile() rolls back, hot.
                    return;
                }
            }
        }
        let Some(run) = self.sidecar.as_mut() else {
            return;
        };
        let timeout = self
            .ctx
            .health_interval
            .min(Duration::from_secs(2))
            .max(Duration::from_millis(200));
        let mut result = kserve_health::check(
            &run.address,
            &loaded.record.name,
            loaded.record.version,
            timeout,
        )
        .await;
        if result.is_ok() {
            result = control_status(&run.channel, &loaded.record).await;
        }
        match result {
            Ok(()) => {
                self.health_failures = 0;
                self.backoff.healthy(Instant::now());
            }
            Err(why) => {
                self.health_failures += 1;
                tracing::warn!(name = %self.name, pid = run.pid, failures = self.health_failures, %why, "sidecar health check failed");
                if self.health_failures >= HEALTH_FAILURES_TO_RESTART && run.killing.is_none() {
                    run.killing = Some(format!(
                        "{} health checks failed in a row, the last: {why}",
                        self.health_failures
                    ));
                    run.cgroup.kill_all();
                }
            }
        }
    }

    /// A fetch ended.
    fn fetched(&mut self, (digest, result): FetchDone) {
        self.fetching.remove(&digest);
        match result {
            Ok(_) => {
                self.fetch_due.remove(&digest);
                self.fetch_wait.remove(&digest);
                tracing::info!(name = %self.name, sha256 = %digest, "model stored");
            }
            Err(failure) => {
                let wait = self
                    .fetch_wait
                    .get(&digest)
                    .map_or(FETCH_RETRY_FIRST, |w| (*w * 2).min(FETCH_RETRY_MAX));
                tracing::warn!(name = %self.name, sha256 = %digest, reason = %failure.reason, retry_in_ms = wait.as_millis() as u64, "fetching a model failed");
                self.fetch_due
                    .insert(digest.clone(), tokio::time::Instant::now() + wait);
                self.fetch_wait.insert(digest.clone(), wait);
                if failure.refused && self.fetch_reported.insert(digest.clone()) {
                    if let Some(record) = self.choice.record(&digest).cloned() {
                        let finding = sidecar_finding(
                            SidecarEvent::Refused,
                            self.process(0),
                            Some(self.file(&record)),
                            format!(
                                "model {} v{}: the control plane's copy was refused: {}",
                                record.name, record.version, failure.reason
                            ),
                        );
                        if self.ctx.findings.try_send(vec![finding]).is_err() {
                            tracing::warn!(name = %self.name, "could not queue a refusal finding");
                        }
                    }
                }
            }
        }
    }

    /// Stops the sidecar: SIGTERM and its control socket closed, SIGKILL
    /// (the whole cgroup) after the grace; the cgroup goes when `for_good`.
    async fn stop(&mut self, why: &str, for_good: bool) {
        self.restart = None;
        let Some(mut run) = self.sidecar.take() else {
            if for_good {
                let _ = self.ctx.cgroups.of(&self.name).remove();
            }
            return;
        };
        let pid = run.pid;
        if pid != 0 {
            // Not reaped yet, so the pid is still this child's.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        drop(run.channel);
        let exit = match tokio::time::timeout(self.ctx.stop_grace, run.child.wait()).await {
            Ok(status) => status.map_or_else(|e| e.to_string(), |s| describe_exit(&s)),
            Err(_) => {
                run.cgroup.kill_all();
                let status = run.child.wait().await;
                format!(
                    "killed after {} ms ({})",
                    self.ctx.stop_grace.as_millis(),
                    status.map_or_else(|e| e.to_string(), |s| describe_exit(&s))
                )
            }
        };
        let removed = if for_good {
            match run.cgroup.remove() {
                Ok(()) => "; its cgroup removed".to_string(),
                Err(e) => format!("; its cgroup stays: {e}"),
            }
        } else {
            if run.cgroup.is_populated() {
                run.cgroup.kill_all();
            }
            String::new()
        };
        if let Ok(Some(socket)) = self.socket_of(&run.listen) {
            self.ctx.sockets.remember(&self.name, &socket);
            self.ctx.sockets.remove(&self.name, &socket);
        }
        let serving = run.loaded.as_ref().map(|l| l.record.clone());
        self.send(sidecar_finding(
            SidecarEvent::Stop,
            self.process(pid),
            serving.as_ref().map(|r| self.file(r)),
            format!(
                "sidecar for model {} (pid {pid}, serving {}) stopped: {why}; it {exit}{removed}",
                self.name,
                serving.map_or("nothing".to_string(), |r| format!("v{}", r.version)),
            ),
        ))
        .await;
    }
}

enum LoadResult {
    Ready(FileStamp),
    /// The version is at fault (refused, not ready, stuck).
    VersionFailed(String),
    /// The sidecar ended; `confirmed`: after it said it loaded the model.
    Died {
        status: std::io::Result<std::process::ExitStatus>,
        confirmed: bool,
    },
}

/// The control socket's status must list `record` loaded.
async fn control_status(channel: &ControlChannel, record: &ModelRecord) -> Result<(), String> {
    let asked = async {
        channel.send(&Request::Status, None).await?;
        loop {
            match channel.recv().await? {
                Reply::Status { models } => return Ok(models),
                Reply::Error { reason } => {
                    return Err(ChannelError::Malformed(format!("status: {reason}")))
                }
                other => tracing::debug!(?other, "sidecar message before its status"),
            }
        }
    };
    let models = tokio::time::timeout(STATUS_WITHIN, asked)
        .await
        .map_err(|_| format!("no status on the control socket within {STATUS_WITHIN:?}"))?
        .map_err(|e| e.to_string())?;
    if models
        .iter()
        .any(|m| m.name == record.name && m.version == record.version && m.sha256 == record.sha256)
    {
        Ok(())
    } else {
        let listed: Vec<String> = models
            .iter()
            .map(|m| format!("{} v{}", m.name, m.version))
            .collect();
        Err(format!(
            "the control socket's status lists [{}], not {} v{}",
            listed.join(", "),
            record.name,
            record.version
        ))
    }
}

/// The running sidecar's exit (pending while none runs).
async fn wait_child(sidecar: &mut Option<Running>) -> std::io::Result<std::process::ExitStatus> {
    match sidecar {
        Some(run) => run.child.wait().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "sidecar_supervisor_tests.rs"]
mod tests;
