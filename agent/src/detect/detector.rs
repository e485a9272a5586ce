//! Turns sensor events into findings: the built-in rules, evaluated with the
//! process context, and the evidence a SOC needs (resolved paths, exe digest).
//!
//! Architecture invariant: one finding per (process, signal, object); a
//! process that opens the same model a thousand times is one finding.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use vigil_detection::{BuiltinRules, Observation};
use vigil_domain::{
    Finding, GpuObject, GpuProcess, ModelIdentity, ModelRisk, ProcessInfo, SignalKind,
};

use crate::clock::boot_ns_to_unix_nanos;
use crate::detect::file_digest::{file_key, FileDigestCache, FileKey, HashBudget, NotHashed};
use crate::detect::library_check::{Judgement, LibraryChecks};
use crate::detect::model_examination::ModelCache;
use crate::detect::process_table::ProcessTable;
use crate::detect::reported_signals::{Admission, ReportedSignals, Signals};
use crate::detect::untrusted_file::{open_in_root, open_regular, read_head, FinalLink};
use crate::procfs::Procfs;
use crate::sensors::{EventContext, FileIdentity, NetOp, OpenOrigin, PathMatch, SensorEvent};

/// The rule of the finding that names a process flooding the sensors.
pub const SENSOR_FLOOD_RULE: &str = "vigil.sensors.flood";

/// Bounds on what one process can make the detector do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectLimits {
    /// Hashing one executable or model file.
    pub hash: HashBudget,
    /// Reading one model file's header.
    pub inspect: vigil_modelinspect::Budget,
    /// Objects reported one by one per (process, signal); the rest are
    /// counted into one aggregate finding.
    pub max_objects_per_signal: usize,
    /// Objects reported one by one per (uid, signal) in a window, across
    /// the uid's processes; the rest are counted into one aggregate that
    /// names the uid.
    pub max_objects_per_uid: usize,
    /// Processes whose findings are remembered for deduplication.
    pub tracked_processes: usize,
}

impl Default for DetectLimits {
    fn default() -> Self {
        Self {
            hash: HashBudget::default(),
            inspect: vigil_modelinspect::Budget::default(),
            max_objects_per_signal: 64,
            max_objects_per_uid: 4 * 64,
            tracked_processes: 65_536,
        }
    }
}

/// What an event leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Detection {
    Finding(Finding),
    /// A listener on any port (not a known AI one): AI serving only if it
    /// answers a model-serving API's route, which must be asked off the
    /// event loop.
    ProbeListener {
        process: ProcessInfo,
        local: SocketAddr,
        observed_at_unix_nanos: i64,
        /// The executable when its digest is not cached (hash it, within
        /// budget, off the loop), with its size.
        uncached_exe: Option<UncachedExe>,
    },
    /// A finding that needs the executable's digest, not yet cached: hash
    /// `pending.exe` off the event loop, then `Detector::complete`.
    NeedsDigest(PendingFinding),
    /// A model file opened or mapped, not yet examined: read its header
    /// and hash it (`model_examination::examine`) off the event loop, then
    /// `Detector::complete_model`.
    NeedsModelExamination(PendingModel),
    /// Several findings of one event: a model file's, and its risk's.
    Findings(Vec<Finding>),
}

/// An executable whose digest is not cached, opened while its process lived.
#[derive(Debug)]
pub struct UncachedExe {
    pub file: std::fs::File,
    pub key: FileKey,
    /// Its size when opened, against the hashing budget.
    pub size: u64,
}

impl PartialEq for UncachedExe {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.size == other.size
    }
}

impl Eq for UncachedExe {}

/// A model-file finding waiting for the model file's examination.
#[derive(Debug)]
pub struct PendingModel {
    pub process: ProcessInfo,
    /// The model file, opened while the process had it.
    pub file: std::fs::File,
    /// Its size when opened, against the hashing budget.
    pub size: u64,
    /// Its name, for formats its content alone does not tell.
    pub name: String,
    key: FileKey,
    obs: Observation,
    at: i64,
    pub event_boot_ns: u64,
    /// Why a digest is missing, for the finding's summary.
    note: Option<String>,
    /// The model-file finding was admitted (against the per-process and
    /// per-user caps) when the open was seen, while its process lived: at
    /// completion it is made without being admitted again.
    admitted: bool,
}

impl PendingModel {
    /// The model file could not be examined: the finding says why.
    pub fn not_examined(&mut self, why: &NotHashed) {
        self.note = Some(format!("model file not inspected, {why}"));
    }

    /// The model file version being examined.
    pub fn key(&self) -> FileKey {
        self.key
    }
}

impl PartialEq for PendingModel {
    fn eq(&self, other: &Self) -> bool {
        self.process == other.process && self.key == other.key && self.obs == other.obs
    }
}

impl Eq for PendingModel {}

/// A finding waiting for its executable's digest.
#[derive(Debug)]
pub struct PendingFinding {
    pub process: ProcessInfo,
    /// The executable, opened while the process lived: hashable after it exits.
    pub exe: std::fs::File,
    /// Its size when opened, against the hashing budget.
    pub size: u64,
    key: FileKey,
    obs: Observation,
    at: i64,
    /// The triggering event's kernel timestamp, for latency accounting.
    pub event_boot_ns: u64,
    /// Why a digest is missing, for the finding's summary.
    note: Option<String>,
    /// The file the triggering open returned, for the model's digest.
    opened: Option<OpenedFile>,
}

/// The file an open returned, as the kernel saw it: the fd (while the
/// process holds it) and the file's identity. A model's digest is taken of
/// this file only, never of whatever lies at its path when the agent looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OpenedFile {
    fd: Option<i32>,
    identity: Option<FileIdentity>,
    /// An io_uring open the kernel recorded no file for (into a fixed-file
    /// slot, or sent at submission): whatever lies at the path when the
    /// agent looks may have been swapped in since, so it is never read,
    /// hashed for a model-digest approval, or cleared by its content.
    unidentified: bool,
}

/// What a finding says of an open without a kernel-recorded file.
const UNIDENTIFIED: &str = "file identity unknown (an io_uring open the kernel recorded no file for): not read, not hashed, no model-digest approval";

/// Why a file a process named was not opened for a content check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NotOpened {
    /// Gone, unreadable, not a regular file, or a planted link.
    Unreadable,
    /// Another file than the one the process opened is at its path now.
    Replaced,
}

impl PendingFinding {
    /// The executable file version whose digest is pending.
    pub fn key(&self) -> FileKey {
        self.key
    }

    /// The executable could not be hashed: the finding says why.
    pub fn not_hashed(&mut self, why: &NotHashed) {
        self.note = Some(format!("executable {why}"));
    }
}

impl PartialEq for PendingFinding {
    fn eq(&self, other: &Self) -> bool {
        self.process == other.process
            && self.key == other.key
            && self.obs == other.obs
            && self.at == other.at
    }
}

impl Eq for PendingFinding {}

/// The process behind an event, and its executable when the digest is not cached.
struct Resolved {
    process: ProcessInfo,
    event_boot_ns: u64,
    uncached_exe: Option<UncachedExe>,
    /// Why the executable has no digest when it will not get one.
    note: Option<String>,
    /// The file the event's open returned, when the event is an open.
    opened: Option<OpenedFile>,
}

pub struct Detector {
    self_pid: u32,
    rules: BuiltinRules,
    digests: FileDigestCache,
    /// Model files examined, by version.
    models: ModelCache,
    procfs: Procfs,
    limits: DetectLimits,
    reported: ReportedSignals,
    /// Aggregate findings of floods (objects over a per-process cap), for
    /// the stage to take with `take_flood_findings`.
    flood_findings: Vec<Finding>,
    /// GPU users as attributed at their first poll (digest known), until
    /// they exec or exit: NVML lists the same processes every poll.
    gpu_users: HashMap<u32, ProcessInfo>,
    /// Ports whose listeners are never probed (`--serving-probe-exclude-ports`).
    probe_excluded: Vec<u16>,
    /// Executable files under other names, judged by their ELF content.
    libraries: LibraryChecks,
}

impl Detector {
    /// Keeps model examinations of files however recently changed (tests
    /// write a file and open it at once).
    #[cfg(test)]
    pub fn keep_unsettled_models(&mut self) {
        self.models.keep_unsettled();
    }

    /// `self_pid` is the agent's own process, whose events are ignored.
    pub fn new(rules: BuiltinRules, procfs: Procfs, self_pid: u32) -> Self {
        Self {
            self_pid,
            rules,
            digests: FileDigestCache::new(4096),
            models: ModelCache::new(4096),
            procfs,
            limits: DetectLimits::default(),
            reported: ReportedSignals::new(
                DetectLimits::default().max_objects_per_signal,
                DetectLimits::default().max_objects_per_uid,
                DetectLimits::default().tracked_processes,
            ),
            flood_findings: Vec::new(),
            gpu_users: HashMap::new(),
            probe_excluded: Vec::new(),
            libraries: LibraryChecks::default(),
        }
    }

    /// The same detector, telling the kernel its verdicts on executable
    /// files (`LIBRARY_VERDICTS`).
    pub fn with_library_verdicts(
        mut self,
        verdicts: Option<crate::sensors::LibraryVerdicts>,
    ) -> Self {
        self.libraries = LibraryChecks::new(verdicts);
        self
    }

    /// The same detector with other bounds (before any event).
    /// Listeners on `ports` are not asked what they serve (a known AI
    /// serving port still makes its finding).
    pub fn with_probe_exclusions(mut self, ports: &[u16]) -> Self {
        self.probe_excluded = ports.to_vec();
        self
    }

    pub fn with_limits(mut self, limits: DetectLimits) -> Self {
        self.limits = limits;
        self.reported = ReportedSignals::new(
            limits.max_objects_per_signal,
            limits.max_objects_per_uid,
            limits.tracked_processes,
        );
        self
    }

    /// The bounds in force.
    pub fn limits(&self) -> DetectLimits {
        self.limits
    }

    /// Signals already reported for processes that were running when the
    /// agent (re)started: they are not reported again.
    pub fn restore_reported(&mut self, reported: HashMap<u32, Signals>) {
        for (pid, signals) in reported {
            self.reported.restore(pid, signals);
        }
    }

    /// Aggregate findings of floods made since last asked.
    pub fn take_flood_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.flood_findings)
    }

    /// Caches an executable's digest computed off the loop.
    pub fn insert_digest(&mut self, key: FileKey, digest: String) {
        self.digests.insert(key, digest);
    }

    /// Findings over a per-process cap, counted rather than reported.
    pub fn counted_over_cap(&self) -> u64 {
        self.reported.counted()
    }

    /// Replaces the approved workloads the control plane sent.
    pub fn set_workload_records(
        &mut self,
        records: impl IntoIterator<Item = vigil_domain::WorkloadApproval>,
    ) {
        self.rules.set_workload_records(records);
    }

    /// Replaces the agent's own approvals (its inference sidecars), kept
    /// beside the control plane's.
    pub fn set_local_approvals(
        &mut self,
        records: impl IntoIterator<Item = vigil_domain::WorkloadApproval>,
    ) {
        self.rules.approved.set_local_records(records);
    }

    /// The signals reported so far for a process.
    pub fn reported(&self, pid: u32) -> Option<&Signals> {
        self.reported.signals(pid)
    }

    /// Findings not made again for the same process, signal and object.
    pub fn suppressed_duplicates(&self) -> u64 {
        self.reported.suppressed()
    }

    /// Applies one event to the table and returns what it leads to, if anything.
    pub fn on_event(&mut self, ev: &SensorEvent, table: &mut ProcessTable) -> Option<Detection> {
        let ctx = ev.ctx();
        // The agent's own reads (content checks, probes) must never feed
        // back; the kernel already drops them, this guards the user side.
        if ctx.pid == self.self_pid {
            return None;
        }
        let at = boot_ns_to_unix_nanos(ctx.ktime_boot_ns);
        match ev {
            SensorEvent::Exec { filename, argv, .. } => {
                table.observe_exec(ctx, filename, argv);
                self.gpu_users.remove(&ctx.pid);
                // A known AI runtime or model server by its name.
                let runtime = vigil_detection::ai_runtime_binary(filename, argv)?;
                let obs = Observation::RuntimeStarted {
                    exe: filename.clone(),
                    runtime: runtime.to_string(),
                };
                let resolved = self.process(ctx, table);
                self.detect(resolved, obs, at)
            }
            SensorEvent::Exit { .. } => {
                self.gpu_users.remove(&ctx.pid);
                table.observe_exit(ctx.pid);
                let last = self.reported.remove(ctx.pid, ctx.uid, Instant::now());
                self.flood_findings.extend(last);
                None
            }
            SensorEvent::Open {
                dfd,
                matched,
                path,
                ret,
                origin,
                file,
                ..
            } => {
                let opened = OpenedFile {
                    fd: origin.fd(*ret),
                    identity: *file,
                    unidentified: file.is_none() && *origin != OpenOrigin::Syscall,
                };
                // A process already over its cap for model files is only
                // counted: no /proc walk, no read of the file.
                if *matched == PathMatch::ModelFile && *ret >= 0 {
                    let counted = self.reported.count_if_flooding(
                        ctx.pid,
                        ctx.uid,
                        SignalKind::ModelFile,
                        path,
                        Instant::now(),
                    );
                    if let Some(aggregate) = counted {
                        self.flood_findings.extend(aggregate);
                        return None;
                    }
                }
                let path = self.procfs.resolve_path(ctx.pid, *dfd, path);
                let obs = match matched {
                    PathMatch::ModelFile => {
                        // Only a successful open is a load.
                        if *ret < 0 || !vigil_detection::is_model_file_path(&path) {
                            return None;
                        }
                        // Unidentified: no content to clear it by.
                        let head = (!opened.unidentified)
                            .then(|| self.head(ctx.pid, opened.fd, &path, opened.identity))
                            .flatten();
                        Observation::FileOpened { path, head }
                    }
                    // A failed open of a GPU node is still a signal.
                    PathMatch::GpuDevice => Observation::DeviceOpened {
                        path,
                        failed: *ret < 0,
                    },
                    PathMatch::AiRuntime
                    | PathMatch::LargeMapping
                    | PathMatch::ContentRead
                    | PathMatch::ExecByContent => return None,
                };
                let mut resolved = self.process(ctx, table);
                if opened.unidentified && *matched == PathMatch::ModelFile {
                    let note = resolved.note.take();
                    resolved.note = Some(
                        note.map_or(UNIDENTIFIED.to_string(), |n| format!("{n}; {UNIDENTIFIED}")),
                    );
                }
                resolved.opened = Some(opened);
                self.detect(resolved, obs, at)
            }
            SensorEvent::FileMap {
                fd,
                matched: matched @ (PathMatch::LargeMapping | PathMatch::ContentRead),
                name,
                path: walked,
                length,
                file,
                ..
            } => {
                let path = self.mapped_path(ctx.pid, *fd, name, walked.as_deref());
                let head = self.head(ctx.pid, Some(*fd), &path, *file);
                let obs = if *matched == PathMatch::LargeMapping {
                    Observation::FileMapped {
                        path,
                        head,
                        length: *length,
                    }
                } else {
                    Observation::FileRead {
                        path,
                        head,
                        bytes: *length,
                    }
                };
                // Most such files are libraries and data files (the kernel
                // only looked at a few bytes): decided before resolving
                // the process.
                self.rules.evaluate(&ProcessInfo::default(), &obs, at)?;
                let resolved = self.process(ctx, table);
                self.detect(resolved, obs, at)
            }
            SensorEvent::FileMap {
                fd,
                matched,
                name,
                path: walked,
                file: identity,
                ..
            } => {
                // An executable mapping, named like an AI runtime or not:
                // the content decides where it can be read (an ELF file
                // with no runtime's symbols is no runtime, whatever its
                // name), the name where it cannot. Nearly every such file
                // is an ordinary library, judged once per version, before
                // resolving the process.
                let path = self.mapped_path(ctx.pid, *fd, name, walked.as_deref());
                // The file the kernel saw mapped, by its fd, by its
                // mapping (a memfd, or a loader that closed the fd), or by
                // its path; never another file put at the path since.
                let judged = self
                    .open_named(ctx.pid, Some(*fd), &path, *identity)
                    .ok()
                    .or_else(|| self.procfs.open_mapped(ctx.pid, name))
                    .map_or(Judgement::Unknown, |(file, meta)| {
                        self.libraries.judge(&file, &meta, *identity, ctx.uid)
                    });
                let obs = match judged {
                    Judgement::Runtime(found) => Observation::RuntimeLibraryIdentified {
                        path,
                        runtime: found.runtime,
                        evidence: found.evidence,
                    },
                    Judgement::Unknown if *matched == PathMatch::AiRuntime => {
                        Observation::LibraryMapped {
                            name: name.clone(),
                            path,
                        }
                    }
                    Judgement::Plain | Judgement::Unknown => return None,
                };
                let resolved = self.process(ctx, table);
                self.detect(resolved, obs, at)
            }
            SensorEvent::StreamStart {
                remote, payload, ..
            } => {
                // Decided before resolving the process: nearly every
                // stream is to a host that is no AI API's.
                let obs = if remote.port() == 53 {
                    let name = vigil_detection::question_name(payload)?;
                    vigil_detection::ai_api_host(&name)?;
                    Observation::DnsQuery {
                        name,
                        server: remote.to_string(),
                    }
                } else {
                    let vigil_detection::ClientHelloSni::Name(name) =
                        vigil_detection::client_hello_server_name(payload)
                    else {
                        return None;
                    };
                    vigil_detection::ai_api_host(&name)?;
                    Observation::TlsServerName {
                        name,
                        address: remote.ip().to_string(),
                        port: remote.port(),
                    }
                };
                let resolved = self.process(ctx, table);
                self.detect(resolved, obs, at)
            }
            SensorEvent::Dns {
                server, payload, ..
            } => {
                // Most sends to port 53 are questions for ordinary hosts:
                // decide before resolving the process.
                let name = vigil_detection::question_name(payload)?;
                vigil_detection::ai_api_host(&name)?;
                let resolved = self.process(ctx, table);
                self.detect(
                    resolved,
                    Observation::DnsQuery {
                        name,
                        server: server.to_string(),
                    },
                    at,
                )
            }
            SensorEvent::SensorFlood {
                dropped,
                dropped_total,
                ..
            } => {
                let process = self.process(ctx, table).process;
                Some(Detection::Finding(sensor_flood_finding(
                    process,
                    *dropped,
                    *dropped_total,
                    at,
                )))
            }
            SensorEvent::Net {
                op, local, remote, ..
            } => {
                let resolved = self.process(ctx, table);
                match op {
                    NetOp::Connect => {
                        let obs = Observation::Connected {
                            address: remote.ip().to_string(),
                            port: remote.port(),
                        };
                        self.detect(resolved, obs, at)
                    }
                    NetOp::Listen if vigil_detection::ai_serving_port(local.port()).is_some() => {
                        let obs = Observation::Listening {
                            address: local.ip().to_string(),
                            port: local.port(),
                            api: None,
                        };
                        self.detect(resolved, obs, at)
                    }
                    NetOp::Listen if self.probe_excluded.contains(&local.port()) => None,
                    NetOp::Listen => Some(Detection::ProbeListener {
                        process: resolved.process,
                        local: *local,
                        observed_at_unix_nanos: at,
                        uncached_exe: resolved.uncached_exe,
                    }),
                }
            }
        }
    }

    /// The first bytes of a file a process opened or mapped, for content
    /// checks: through the process's own fd while it still refers to
    /// `path`, else `path` in the process's root (its container's files),
    /// else `path` in the agent's (the process is gone). Never a FIFO or
    /// device, never through a link planted as the last component. With
    /// `identity` (the file the open returned, as the kernel saw it), only
    /// that file: another one at its path now is not read.
    fn head(
        &self,
        pid: u32,
        fd: Option<i32>,
        path: &str,
        identity: Option<FileIdentity>,
    ) -> Option<Vec<u8>> {
        let (file, _) = self.open_named(pid, fd, path, identity).ok()?;
        read_head(&file)
    }

    /// Opens the regular file `path` that process `pid` named (see `head`).
    fn open_named(
        &self,
        pid: u32,
        fd: Option<i32>,
        path: &str,
        identity: Option<FileIdentity>,
    ) -> Result<(std::fs::File, std::fs::Metadata), NotOpened> {
        let is_the_one = |(file, meta): &(std::fs::File, std::fs::Metadata)| {
            identity.is_none_or(|id| {
                let seen = FileIdentity::of(meta);
                // On overlayfs stat reports a layer's device, the kernel
                // the overlay's: the inode number is what they share.
                seen == id || (seen.ino == id.ino && on_overlayfs(file))
            })
        };
        if let Some(fd) = fd.filter(|fd| *fd >= 0) {
            // The file the process holds (or, if it closed the fd and
            // opened another since, another file it holds: never one it
            // could not open, and not read as this one when it is known).
            if let Ok(opened) = open_regular(&self.procfs.fd_handle(pid, fd), FinalLink::Follow) {
                if is_the_one(&opened) {
                    return Ok(opened);
                }
            }
        }
        if !path.starts_with('/') {
            return Err(NotOpened::Unreadable);
        }
        // Inside the process's root: a link in the path resolves as it
        // did for the process, never out of its root nor through /proc.
        let opened = match open_in_root(&self.procfs.root_handle(pid, "/"), path) {
            Ok(opened) => opened,
            // The process is gone (no /proc/PID/root), or exiting (a
            // zombie has no root to open, and a short reader such as dd is
            // one by the time its record is read): the host's file, which
            // must then be the one the kernel named.
            Err(_) if identity.is_some() || self.procfs.start_time(pid).is_none() => {
                open_in_root(std::path::Path::new("/"), path).map_err(|_| NotOpened::Unreadable)?
            }
            Err(_) => return Err(NotOpened::Unreadable),
        };
        if !is_the_one(&opened) {
            // Renamed away or replaced since the open: what lies at the
            // path now says nothing about what the process loaded.
            tracing::warn!(
                pid,
                path,
                "a file opened by a watched process was replaced at its path"
            );
            return Err(NotOpened::Replaced);
        }
        Ok(opened)
    }

    /// A mapped file's path: /proc while the process lives (its fd or
    /// mapping, in its own mount namespace), else the kernel's walk from
    /// the dentry, else the bare file name.
    fn mapped_path(&self, pid: u32, fd: i32, name: &str, walked: Option<&str>) -> String {
        let from_proc = self.procfs.mapped_library_path(pid, fd, name);
        match walked {
            Some(w) if !from_proc.starts_with('/') => w.to_string(),
            _ => from_proc,
        }
    }

    /// A process NVML says uses a GPU (`pid` is the host's): what it leads
    /// to, and the process as attributed for the inventory. `approved` is
    /// false until the executable's digest is known.
    pub fn on_gpu_use(
        &mut self,
        pid: u32,
        gpu: &GpuObject,
        table: &mut ProcessTable,
        at: i64,
    ) -> (Option<Detection>, GpuProcess) {
        let now = crate::clock::boot_now_ns();
        let resolved = match self.gpu_users.get(&pid) {
            Some(known) => Resolved {
                process: known.clone(),
                event_boot_ns: now,
                uncached_exe: None,
                note: None,
                opened: None,
            },
            None => {
                // /proc first: it has the pid the process sees in its own namespace.
                let mut process = self
                    .procfs
                    .process(pid)
                    .or_else(|| table.get(pid).map(|e| e.info.clone()))
                    .unwrap_or(ProcessInfo {
                        pid,
                        comm: "(exited)".into(),
                        ..Default::default()
                    });
                process.ancestors = table.ancestors(pid, process.ppid);
                let resolved = self.with_digest(process, pid, now);
                if resolved.uncached_exe.is_none() && !resolved.process.exe.is_empty() {
                    self.gpu_users.insert(pid, resolved.process.clone());
                }
                resolved
            }
        };
        let approved = resolved.uncached_exe.is_none()
            && self.rules.approves_on_gpu(&resolved.process, &gpu.uuid);
        let attributed = GpuProcess {
            process: resolved.process.clone(),
            gpu: gpu.clone(),
            approved,
        };
        // Approved, or already reported: nothing more to decide.
        let object = format!("gpu {}", gpu.uuid);
        if approved || self.reported.contains(pid, SignalKind::GpuUse, &object) {
            return (None, attributed);
        }
        let device_opened = self.reported.has_signal(pid, SignalKind::GpuDevice);
        let obs = Observation::GpuInUse {
            gpu: gpu.clone(),
            device_opened,
        };
        (self.detect(resolved, obs, at), attributed)
    }

    /// Findings about processes that were running before the sensors
    /// attached: model files and accelerator nodes they hold open, AI
    /// runtime libraries they have mapped.
    pub fn scan_running(&mut self, table: &mut ProcessTable) -> Vec<Finding> {
        let now = crate::clock::unix_now_nanos();
        let mut out = Vec::new();
        for pid in table.pids() {
            if pid == self.self_pid {
                continue;
            }
            let files = self.procfs.open_files(pid);
            let libraries: Vec<String> = self
                .procfs
                .mapped_files(pid)
                .into_iter()
                .filter(|p| {
                    vigil_detection::is_ai_runtime_library(p.rsplit('/').next().unwrap_or(p))
                })
                .collect();
            let relevant = |p: &String| {
                vigil_detection::is_model_file_path(p) || vigil_detection::is_gpu_device(p)
            };
            let Some(entry) = table.get(pid) else {
                continue;
            };
            // What the table has may be from before the process's exec (a
            // procfs poll between fork and exec) and has no cgroup path
            // (an exec): both as /proc says now, or an approval by path or
            // cgroup (the agent's own sidecars') would not match.
            // The exe decides whether the process matters; its cgroup is
            // read only for the few that do.
            let mut process = entry.info.clone();
            self.refresh_exe_from_proc(&mut process, pid);
            let runtime = vigil_detection::ai_runtime_binary(&process.exe, &process.argv);
            if libraries.is_empty() && !files.iter().any(relevant) && runtime.is_none() {
                continue;
            }
            self.refresh_cgroup_from_proc(&mut process, pid);
            process.ancestors = table.ancestors(pid, process.ppid);
            process.exe_sha256 = self
                .digests
                .digest(&self.procfs.exe_handle(pid), self.limits.hash)
                .unwrap_or_default();
            for path in files.into_iter().filter(|p| relevant(p)) {
                let obs = if vigil_detection::is_gpu_device(&path) {
                    Observation::DeviceOpened {
                        path,
                        failed: false,
                    }
                } else {
                    let head = self.head(pid, None, &path, None);
                    Observation::FileOpened { path, head }
                };
                if vigil_detection::is_model_content(&obs) {
                    // Its header read here (its digest at its next open):
                    // the identity, and a model-risk finding for a file
                    // that runs code, as for an open the sensors saw.
                    let examined = obs
                        .model_candidate_path()
                        .and_then(|p| self.open_named(pid, None, p, None).ok())
                        .map(|(mut file, _)| {
                            let path = obs.model_candidate_path().unwrap_or("");
                            let name = path.rsplit('/').next().unwrap_or(path);
                            super::model_examination::examine_header(
                                &mut file,
                                name,
                                self.limits.inspect,
                            )
                        });
                    out.extend(self.model_findings(&process, obs, now, examined, None));
                    continue;
                }
                out.extend(self.finding(&process, obs, now));
            }
            if let Some(runtime) = runtime {
                let obs = Observation::RuntimeStarted {
                    exe: process.exe.clone(),
                    runtime: runtime.to_string(),
                };
                out.extend(self.finding(&process, obs, now));
            }
            for path in libraries {
                let name = path.rsplit('/').next().unwrap_or(&path).to_string();
                out.extend(self.finding(&process, Observation::LibraryMapped { name, path }, now));
            }
        }
        out
    }

    /// A finding now if the digest is known; a pending one if it must be
    /// computed (and only if the finding would be new).
    fn detect(&mut self, resolved: Resolved, obs: Observation, at: i64) -> Option<Detection> {
        let Some(UncachedExe {
            file: exe,
            key,
            size,
        }) = resolved.uncached_exe
        else {
            return self.decide(
                &resolved.process,
                obs,
                at,
                resolved.event_boot_ns,
                resolved.note,
                resolved.opened,
            );
        };
        // Without a digest nothing is approved: this says whether the rules
        // fire at all, and whether it would be a duplicate. Model content
        // (a pickle by name included, which no rule fires on) goes on to be
        // examined whatever the rules say: it may run code when loaded.
        match self.rules.evaluate(&resolved.process, &obs, at) {
            Some(draft)
                if self
                    .reported
                    .contains(draft.process.pid, draft.signal, &draft.object()) =>
            {
                return None
            }
            None if !vigil_detection::is_model_content(&obs) => return None,
            _ => {}
        }
        Some(Detection::NeedsDigest(PendingFinding {
            process: resolved.process,
            exe,
            size,
            key,
            obs,
            at,
            event_boot_ns: resolved.event_boot_ns,
            note: resolved.note,
            opened: resolved.opened,
        }))
    }

    /// Finishes a pending finding with its executable's digest (None: the
    /// file could not be read, and the process counts as unapproved). It
    /// may still need the model's digest.
    pub fn complete(
        &mut self,
        pending: PendingFinding,
        digest: Option<String>,
    ) -> Option<Detection> {
        let mut process = pending.process;
        if let Some(d) = digest {
            self.digests.insert(pending.key, d.clone());
            process.exe_sha256 = d;
        }
        self.decide(
            &process,
            pending.obs,
            pending.at,
            pending.event_boot_ns,
            pending.note,
            pending.opened,
        )
    }

    /// Finishes a model-file event with the model's examination (None: it
    /// could not be examined, and no model-scoped approval applies): the
    /// model-file finding if the rules make one, and a model-risk finding
    /// for a file that runs code on load, whoever opened it.
    pub fn complete_model(
        &mut self,
        pending: PendingModel,
        examined: Option<ModelIdentity>,
    ) -> Vec<Finding> {
        if let Some(m) = &examined {
            // Read no earlier than the open.
            let opened = std::time::UNIX_EPOCH
                + std::time::Duration::from_nanos(u64::try_from(pending.at).unwrap_or(0));
            self.models.insert(pending.key, m.clone(), opened);
        }
        let admission = if pending.admitted {
            Admit::Already
        } else {
            Admit::Now
        };
        self.model_findings_admitted(
            &pending.process,
            pending.obs,
            pending.at,
            examined,
            pending.note.as_deref(),
            admission,
        )
    }

    fn model_findings(
        &mut self,
        process: &ProcessInfo,
        obs: Observation,
        at: i64,
        examined: Option<ModelIdentity>,
        note: Option<&str>,
    ) -> Vec<Finding> {
        self.model_findings_admitted(process, obs, at, examined, note, Admit::Now)
    }

    fn model_findings_admitted(
        &mut self,
        process: &ProcessInfo,
        obs: Observation,
        at: i64,
        examined: Option<ModelIdentity>,
        note: Option<&str>,
        admission: Admit,
    ) -> Vec<Finding> {
        let digest = examined
            .as_ref()
            .map(|m| m.sha256.as_str())
            .filter(|d| !d.is_empty());
        let path = obs.model_candidate_path().unwrap_or("").to_string();
        let mut out = Vec::new();
        let made = match admission {
            Admit::Now => self.finding_with_model(process, obs, at, digest, note),
            Admit::Already => self.unadmitted_finding(process, obs, at, digest, note),
        };
        if let Some(mut f) = made {
            if let (Some(m), Some(file)) = (&examined, f.file.as_mut()) {
                f.summary = format!("{}; {}, risk {}", f.summary, m.describe(), m.risk.as_str());
                file.model = Some(Box::new(m.clone()));
            }
            out.push(f);
        }
        if let Some(m) = examined.filter(|m| m.risk == ModelRisk::Dangerous) {
            let risk = vigil_detection::model_runs_code(process, &path, m, at);
            if let Admission::New = self.reported.admit(&risk, Instant::now()) {
                out.push(risk);
            }
        }
        out
    }

    fn model_detection(mut findings: Vec<Finding>) -> Option<Detection> {
        match findings.len() {
            0 => None,
            1 => findings.pop().map(Detection::Finding),
            _ => Some(Detection::Findings(findings)),
        }
    }

    /// With the executable's digest known: a finding now, or, for a model
    /// file not examined yet, a wait for its examination (header and
    /// digest), which every model-file finding carries and a model-scoped
    /// approval depends on.
    fn decide(
        &mut self,
        process: &ProcessInfo,
        obs: Observation,
        at: i64,
        event_boot_ns: u64,
        note: Option<String>,
        opened: Option<OpenedFile>,
    ) -> Option<Detection> {
        // An open without a kernel-recorded file is never hashed: what lies
        // at its path now may not be what the process opened.
        let identified = !opened.is_some_and(|o| o.unidentified);
        let worth_examining =
            self.rules.needs_model_digest(process) || vigil_detection::is_model_content(&obs);
        let path = match obs.model_candidate_path() {
            Some(path) if identified && worth_examining => path,
            _ => {
                return self
                    .finding_with_model(process, obs, at, None, note.as_deref())
                    .map(Detection::Finding)
            }
        };
        // The process's fd only when the kernel said which file it is: an
        // fd closed and reused since must not stand for the model.
        let (fd, identity) = opened.map_or((None, None), |o| (o.identity.and(o.fd), o.identity));
        let (file, meta) = match self.open_named(process.pid, fd, path, identity) {
            Ok(opened) => opened,
            Err(why) => {
                // No digest: no model-scoped approval applies.
                let note = match why {
                    NotOpened::Replaced => {
                        let changed =
                            "model file replaced at its path after the open: not inspected or hashed";
                        Some(note.map_or(changed.to_string(), |n| format!("{n}; {changed}")))
                    }
                    NotOpened::Unreadable => note,
                };
                return self
                    .finding_with_model(process, obs, at, None, note.as_deref())
                    .map(Detection::Finding);
            }
        };
        let key = file_key(&meta);
        if let Some(m) = self.models.get(&key).cloned() {
            let found = self.model_findings(process, obs, at, Some(m), note.as_deref());
            return Self::model_detection(found);
        }
        // Admitted now, while the process lives (a short-lived one has
        // exited by the time its model is examined, and the caps forget
        // an exited process): a duplicate or an open counted into a flood
        // is not examined, as it is not reported. Only where no approval
        // may depend on the model's digest, which the examination brings.
        let mut admitted = false;
        if !self.rules.needs_model_digest(process) {
            if let Some(draft) = self.rules.evaluate_with_model(process, &obs, at, None) {
                match self.reported.admit(&draft, Instant::now()) {
                    Admission::New => admitted = true,
                    Admission::Duplicate => return None,
                    Admission::Counted(aggregate) => {
                        if let Some(aggregate) = aggregate {
                            self.flood_findings.push(*aggregate);
                        }
                        return None;
                    }
                }
            }
        }
        let name = path.rsplit('/').next().unwrap_or(path).to_string();
        Some(Detection::NeedsModelExamination(PendingModel {
            process: process.clone(),
            file,
            size: meta.len(),
            name,
            key,
            obs,
            at,
            event_boot_ns,
            note,
            admitted,
        }))
    }

    /// Evaluates the rules and drops a finding already made for this
    /// process, signal and object.
    pub fn finding(&mut self, process: &ProcessInfo, obs: Observation, at: i64) -> Option<Finding> {
        self.finding_with_model(process, obs, at, None, None)
    }

    /// The rules' finding, not admitted (it was, when the event was seen).
    fn unadmitted_finding(
        &self,
        process: &ProcessInfo,
        obs: Observation,
        at: i64,
        model_sha256: Option<&str>,
        note: Option<&str>,
    ) -> Option<Finding> {
        let mut finding = self
            .rules
            .evaluate_with_model(process, &obs, at, model_sha256)?;
        if let Some(note) = note {
            finding.summary = format!("{} ({note})", finding.summary);
        }
        Some(finding)
    }

    fn finding_with_model(
        &mut self,
        process: &ProcessInfo,
        obs: Observation,
        at: i64,
        model_sha256: Option<&str>,
        note: Option<&str>,
    ) -> Option<Finding> {
        let finding = self.unadmitted_finding(process, obs, at, model_sha256, note)?;
        match self.reported.admit(&finding, Instant::now()) {
            Admission::New => Some(finding),
            Admission::Duplicate => None,
            Admission::Counted(aggregate) => {
                if let Some(aggregate) = aggregate {
                    tracing::warn!(pid = process.pid, signal = %finding.signal, summary = %aggregate.summary, "finding cap reached");
                    self.flood_findings.push(*aggregate);
                }
                None
            }
        }
    }

    /// The process behind an event, with what /proc adds while it lives:
    /// the binary the kernel really runs (symlinks resolved) and its digest
    /// when cached. An uncached binary is opened now, to be hashed later.
    fn process(&mut self, ctx: &EventContext, table: &mut ProcessTable) -> Resolved {
        let mut process = table.resolve(ctx, &self.procfs);
        process.ancestors = table.ancestors(process.pid, process.ppid);
        self.with_digest(process, ctx.pid, ctx.ktime_boot_ns)
    }

    /// Fills in the binary /proc says `pid` runs and its digest when cached;
    /// an uncached binary is opened now, to be hashed later.
    fn with_digest(&mut self, mut process: ProcessInfo, pid: u32, event_boot_ns: u64) -> Resolved {
        self.refresh_from_proc(&mut process, pid);
        let mut note = None;
        let uncached_exe = match open_regular(&self.procfs.exe_handle(pid), FinalLink::Follow) {
            Ok((file, meta)) => match self.digests.get(&file_key(&meta)) {
                Some(d) => {
                    process.exe_sha256 = d.clone();
                    None
                }
                None if meta.len() > self.limits.hash.max_bytes => {
                    let why = NotHashed::OverBudget {
                        size: meta.len(),
                        max: self.limits.hash.max_bytes,
                    };
                    note = Some(format!("executable {why}"));
                    None
                }
                None => Some(UncachedExe {
                    file,
                    key: file_key(&meta),
                    size: meta.len(),
                }),
            },
            Err(_) => None,
        };
        Resolved {
            process,
            event_boot_ns,
            uncached_exe,
            note,
            opened: None,
        }
    }
}

impl Detector {
    /// The binary /proc says `pid` runs, and its cgroup path when the
    /// table has none (a process seen at exec) and an approval narrows by
    /// cgroup (the agent's approval of its own sidecars does).
    fn refresh_from_proc(&self, process: &mut ProcessInfo, pid: u32) {
        self.refresh_exe_from_proc(process, pid);
        self.refresh_cgroup_from_proc(process, pid);
    }

    fn refresh_exe_from_proc(&self, process: &mut ProcessInfo, pid: u32) {
        if let Some(exe) = self.procfs.exe(pid) {
            process.exe = exe;
        }
    }

    fn refresh_cgroup_from_proc(&self, process: &mut ProcessInfo, pid: u32) {
        if process.cgroup_path.is_empty() && self.rules.approved.narrows_by_cgroup() {
            if let Some(path) = self.procfs.cgroup_path(pid) {
                process.cgroup_path = path;
            }
        }
    }
}

/// The one finding of a sensor-flood episode (the sensor stage sends one
/// event per episode): whoever floods the ring buffer blinds the sensors to
/// other processes' events too.
fn sensor_flood_finding(
    process: ProcessInfo,
    dropped: u64,
    dropped_total: u64,
    at: i64,
) -> Finding {
    Finding {
        seq: 0,
        rule_id: SENSOR_FLOOD_RULE.into(),
        severity: vigil_domain::Severity::High,
        signal: SignalKind::Policy,
        observed_at_unix_nanos: at,
        summary: format!(
            "pid {} ({}) flooded the sensors: {dropped} records dropped in a second, {dropped_total} so far (the kernel's ring buffer was full; events of other processes may be missing)",
            process.pid, process.comm
        ),
        process,
        file: None,
        net: None,
        gpu: None,
        action: String::new(),
    }
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;

/// Whether a model-file finding is still to be admitted against the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    Now,
    Already,
}

/// Whether `file` lies on an overlay file system (stat's device is then a
/// layer's, not the one the kernel names).
fn on_overlayfs(file: &std::fs::File) -> bool {
    nix::sys::statfs::fstatfs(file)
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC)
}
