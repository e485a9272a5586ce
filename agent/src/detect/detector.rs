//! Turns sensor events into findings: the built-in rules, evaluated with the
//! process context, and the evidence a SOC needs (resolved paths, exe digest).
//!
//! Architecture invariant: one finding per (process, signal, object); a
//! process that opens the same model a thousand times is one finding.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use vigil_detection::{BuiltinRules, Observation, MODEL_SNIFF_BYTES};
use vigil_domain::{Finding, GpuObject, GpuProcess, ProcessInfo, SignalKind};

use crate::clock::boot_ns_to_unix_nanos;
use crate::detect::file_digest::{file_key, FileDigestCache, FileKey};
use crate::detect::process_table::ProcessTable;
use crate::procfs::Procfs;
use crate::sensors::{EventContext, NetOp, PathMatch, SensorEvent};

/// Most processes whose findings are remembered for deduplication.
const DEDUP_PROCESSES: usize = 65_536;

/// What an event leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Detection {
    Finding(Finding),
    /// A listener on a common HTTP port: AI serving only if it answers
    /// OpenAI-style routes, which must be asked off the event loop.
    ProbeListener {
        process: ProcessInfo,
        local: SocketAddr,
        observed_at_unix_nanos: i64,
    },
    /// A finding that needs the executable's digest, not yet cached: hash
    /// `pending.exe` off the event loop, then `Detector::complete`.
    NeedsDigest(PendingFinding),
    /// A model-file finding whose approval depends on the model's digest
    /// (an approved workload lists the models it may load): hash
    /// `pending.file` off the event loop, then `Detector::complete_model`.
    NeedsModelDigest(PendingModel),
}

/// A model-file finding waiting for the model file's digest.
#[derive(Debug)]
pub struct PendingModel {
    pub process: ProcessInfo,
    /// The model file, opened while the process had it.
    pub file: std::fs::File,
    key: FileKey,
    obs: Observation,
    at: i64,
    pub event_boot_ns: u64,
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
    key: FileKey,
    obs: Observation,
    at: i64,
    /// The triggering event's kernel timestamp, for latency accounting.
    pub event_boot_ns: u64,
}

impl PendingFinding {
    /// The executable file version whose digest is pending.
    pub fn key(&self) -> FileKey {
        self.key
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
    uncached_exe: Option<(std::fs::File, FileKey)>,
}

pub struct Detector {
    self_pid: u32,
    rules: BuiltinRules,
    digests: FileDigestCache,
    procfs: Procfs,
    reported: HashMap<u32, HashSet<(SignalKind, String)>>,
    suppressed: u64,
    /// GPU users as attributed at their first poll (digest known), until
    /// they exec or exit: NVML lists the same processes every poll.
    gpu_users: HashMap<u32, ProcessInfo>,
}

impl Detector {
    /// `self_pid` is the agent's own process, whose events are ignored.
    pub fn new(rules: BuiltinRules, procfs: Procfs, self_pid: u32) -> Self {
        Self {
            self_pid,
            rules,
            digests: FileDigestCache::new(4096),
            procfs,
            reported: HashMap::new(),
            suppressed: 0,
            gpu_users: HashMap::new(),
        }
    }

    /// Signals already reported for processes that were running when the
    /// agent (re)started: they are not reported again.
    pub fn restore_reported(&mut self, reported: HashMap<u32, HashSet<(SignalKind, String)>>) {
        self.reported.extend(reported);
    }

    /// Replaces the approved workloads the control plane sent.
    pub fn set_workload_records(
        &mut self,
        records: impl IntoIterator<Item = vigil_domain::WorkloadApproval>,
    ) {
        self.rules.set_workload_records(records);
    }

    /// The signals reported so far for a process.
    pub fn reported(&self, pid: u32) -> Option<&HashSet<(SignalKind, String)>> {
        self.reported.get(&pid)
    }

    /// Findings not made again for the same process, signal and object.
    pub fn suppressed_duplicates(&self) -> u64 {
        self.suppressed
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
                None
            }
            SensorEvent::Exit { .. } => {
                self.gpu_users.remove(&ctx.pid);
                table.observe_exit(ctx.pid);
                self.reported.remove(&ctx.pid);
                None
            }
            SensorEvent::Open {
                dfd,
                matched,
                path,
                ret,
                ..
            } => {
                let path = self.procfs.resolve_path(ctx.pid, *dfd, path);
                let obs = match matched {
                    PathMatch::ModelFile => {
                        // Only a successful open is a load.
                        if *ret < 0 || !vigil_detection::is_model_file_path(&path) {
                            return None;
                        }
                        let head = read_head(std::path::Path::new(&path));
                        Observation::FileOpened { path, head }
                    }
                    // A failed open of a GPU node is still a signal.
                    PathMatch::GpuDevice => Observation::DeviceOpened {
                        path,
                        failed: *ret < 0,
                    },
                    PathMatch::AiRuntime | PathMatch::LargeMapping => return None,
                };
                let resolved = self.process(ctx, table);
                self.detect(resolved, obs, at)
            }
            SensorEvent::FileMap {
                fd,
                matched: PathMatch::LargeMapping,
                name,
                path: walked,
                length,
                ..
            } => {
                let path = self.mapped_path(ctx.pid, *fd, name, walked.as_deref());
                let head = read_head(&self.procfs.fd_handle(ctx.pid, *fd))
                    .or_else(|| read_head(std::path::Path::new(&path)));
                // Most large mappings are libraries and data files: decide
                // before resolving the process.
                let obs = Observation::FileMapped {
                    path,
                    head,
                    length: *length,
                };
                self.rules.evaluate(&ProcessInfo::default(), &obs, at)?;
                let resolved = self.process(ctx, table);
                self.detect(resolved, obs, at)
            }
            SensorEvent::FileMap { fd, name, path, .. } => {
                let path = self.mapped_path(ctx.pid, *fd, name, path.as_deref());
                let resolved = self.process(ctx, table);
                self.detect(
                    resolved,
                    Observation::LibraryMapped {
                        name: name.clone(),
                        path,
                    },
                    at,
                )
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
                            openai_routes: false,
                        };
                        self.detect(resolved, obs, at)
                    }
                    NetOp::Listen => {
                        let mut process = resolved.process;
                        if let Some((mut exe, key)) = resolved.uncached_exe {
                            // Rare (a new listener): hash here.
                            if let Ok(d) = crate::detect::file_digest::sha256_reader(&mut exe) {
                                self.digests.insert(key, d.clone());
                                process.exe_sha256 = d;
                            }
                        }
                        Some(Detection::ProbeListener {
                            process,
                            local: *local,
                            observed_at_unix_nanos: at,
                        })
                    }
                }
            }
        }
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
            },
            None => {
                // /proc first: it has the pid the process sees in its own namespace.
                let process = self
                    .procfs
                    .process(pid)
                    .or_else(|| table.get(pid).map(|e| e.info.clone()))
                    .unwrap_or(ProcessInfo {
                        pid,
                        comm: "(exited)".into(),
                        ..Default::default()
                    });
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
        let seen = self.reported.get(&pid);
        // Approved, or already reported: nothing more to decide.
        let object = format!("gpu {}", gpu.uuid);
        if approved || seen.is_some_and(|s| s.contains(&(SignalKind::GpuUse, object))) {
            return (None, attributed);
        }
        let device_opened =
            seen.is_some_and(|s| s.iter().any(|(signal, _)| *signal == SignalKind::GpuDevice));
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
            if libraries.is_empty() && !files.iter().any(relevant) {
                continue;
            }
            let Some(entry) = table.get(pid) else {
                continue;
            };
            let mut process = entry.info.clone();
            process.exe_sha256 = self
                .digests
                .digest(&self.procfs.exe_handle(pid))
                .unwrap_or_default();
            for path in files.into_iter().filter(|p| relevant(p)) {
                let obs = if vigil_detection::is_gpu_device(&path) {
                    Observation::DeviceOpened {
                        path,
                        failed: false,
                    }
                } else {
                    let head = read_head(std::path::Path::new(&path));
                    Observation::FileOpened { path, head }
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
        let Some((exe, key)) = resolved.uncached_exe else {
            return self.decide(&resolved.process, obs, at, resolved.event_boot_ns);
        };
        // Without a digest nothing is approved: this says whether the rules
        // fire at all, and whether it would be a duplicate.
        let draft = self.rules.evaluate(&resolved.process, &obs, at)?;
        if self
            .reported
            .get(&draft.process.pid)
            .is_some_and(|seen| seen.contains(&(draft.signal, draft.object())))
        {
            self.suppressed += 1;
            return None;
        }
        Some(Detection::NeedsDigest(PendingFinding {
            process: resolved.process,
            exe,
            key,
            obs,
            at,
            event_boot_ns: resolved.event_boot_ns,
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
        self.decide(&process, pending.obs, pending.at, pending.event_boot_ns)
    }

    /// Finishes a model-file finding with the model's digest (None: it
    /// could not be read, and no model-scoped approval applies).
    pub fn complete_model(
        &mut self,
        pending: PendingModel,
        digest: Option<String>,
    ) -> Option<Finding> {
        if let Some(d) = &digest {
            self.digests.insert(pending.key, d.clone());
        }
        self.finding_with_model(&pending.process, pending.obs, pending.at, digest.as_deref())
    }

    /// With the executable's digest known: a finding now, or a wait for the
    /// model file's digest when an approval depends on it.
    fn decide(
        &mut self,
        process: &ProcessInfo,
        obs: Observation,
        at: i64,
        event_boot_ns: u64,
    ) -> Option<Detection> {
        let path = match obs.model_candidate_path() {
            Some(path) if self.rules.needs_model_digest(process) => path,
            _ => return self.finding(process, obs, at).map(Detection::Finding),
        };
        let opened = std::fs::File::open(path).and_then(|f| Ok((file_key(&f.metadata()?), f)));
        let Ok((key, file)) = opened else {
            return self.finding(process, obs, at).map(Detection::Finding);
        };
        if let Some(d) = self.digests.get(&key).cloned() {
            return self
                .finding_with_model(process, obs, at, Some(&d))
                .map(Detection::Finding);
        }
        Some(Detection::NeedsModelDigest(PendingModel {
            process: process.clone(),
            file,
            key,
            obs,
            at,
            event_boot_ns,
        }))
    }

    /// Evaluates the rules and drops a finding already made for this
    /// process, signal and object.
    pub fn finding(&mut self, process: &ProcessInfo, obs: Observation, at: i64) -> Option<Finding> {
        self.finding_with_model(process, obs, at, None)
    }

    fn finding_with_model(
        &mut self,
        process: &ProcessInfo,
        obs: Observation,
        at: i64,
        model_sha256: Option<&str>,
    ) -> Option<Finding> {
        let finding = self
            .rules
            .evaluate_with_model(process, &obs, at, model_sha256)?;
        if self.reported.len() >= DEDUP_PROCESSES && !self.reported.contains_key(&process.pid) {
            self.reported.clear();
        }
        let seen = self.reported.entry(process.pid).or_default();
        if !seen.insert((finding.signal, finding.object())) {
            self.suppressed += 1;
            return None;
        }
        Some(finding)
    }

    /// The process behind an event, with what /proc adds while it lives:
    /// the binary the kernel really runs (symlinks resolved) and its digest
    /// when cached. An uncached binary is opened now, to be hashed later.
    fn process(&mut self, ctx: &EventContext, table: &mut ProcessTable) -> Resolved {
        let process = table.resolve(ctx, &self.procfs);
        self.with_digest(process, ctx.pid, ctx.ktime_boot_ns)
    }

    /// Fills in the binary /proc says `pid` runs and its digest when cached;
    /// an uncached binary is opened now, to be hashed later.
    fn with_digest(&mut self, mut process: ProcessInfo, pid: u32, event_boot_ns: u64) -> Resolved {
        if let Some(exe) = self.procfs.exe(pid) {
            process.exe = exe;
        }
        let opened = std::fs::File::open(self.procfs.exe_handle(pid))
            .and_then(|f| Ok((file_key(&f.metadata()?), f)));
        let uncached_exe = match opened {
            Ok((key, file)) => match self.digests.get(&key) {
                Some(d) => {
                    process.exe_sha256 = d.clone();
                    None
                }
                None => Some((file, key)),
            },
            Err(_) => None,
        };
        Resolved {
            process,
            event_boot_ns,
            uncached_exe,
        }
    }
}

/// The first bytes of a file, for content checks; None when unreadable.
fn read_head(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(MODEL_SNIFF_BYTES);
    std::fs::File::open(path)
        .ok()?
        .take(MODEL_SNIFF_BYTES as u64)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;
