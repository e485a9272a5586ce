//! Carries out a policy rule's action on a process: kill its tree, freeze
//! it in a cgroup of its own, or refuse GPU devices to it (a cgroup device
//! program). Every action reports what it did, or why it could not.
//!
//! Architecture invariant: an action never touches a cgroup the process
//! shares with others: freeze and deny_gpu first move the process tree into
//! a cgroup the agent creates for it (`<cgroup2>/vigil/<action>-<pid>`).
//!
//! An action itself is immediate; what it then waits for (the kernel to
//! report a freeze done, a `block_egress` list's names to resolve) is a
//! `Pending` future the respond stage awaits off its loop, then `settle`s.
//!
//! Architecture invariant: a target passes the `TargetGuard` first (never
//! init, the agent, the control plane, their ancestors, kernel threads, nor
//! a pid recycled since the event), and signals go through pidfds taken
//! before that check, so the process checked is the process signalled.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aya::programs::cgroup_device::CgroupDeviceLinkId;
use aya::programs::cgroup_skb::{CgroupSkbAttachType, CgroupSkbLinkId};
use aya::programs::{CgroupAttachMode, CgroupDevice, CgroupSkb};
use aya::{Ebpf, EbpfLoader};
use vigil_policy::Action;

use crate::blocked_destination::BlockedDestination;
use crate::procfs::Procfs;
use crate::respond::host_resolver::{HostResolver, SystemResolver};
use crate::respond::target_guard::TargetGuard;

static ENFORCE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforce.bpf.o"));

const GPU_MAJOR_SLOTS: usize = 16;
/// Character-device names (in /proc/devices) of GPUs and accelerators.
const GPU_DEVICE_NAMES: &[&str] = &[
    "nvidia",
    "nvidiactl",
    "nvidia-frontend",
    "nvidia-uvm",
    "nvidia-caps",
    "nvidia-caps-imex-channels",
    "nvidia-nvlink",
    "nvidia-nvswitch",
    "drm",
    "kfd",
    "accel",
];
/// NVIDIA's registered major, always refused (its name varies by driver).
const NVIDIA_MAJOR: u32 = 195;
/// How long a freeze may take to be reported done in cgroup.events.
const FREEZE_WAIT: Duration = Duration::from_secs(1);
const FREEZE_POLL: Duration = Duration::from_millis(2);
/// How long one host name of a `block_egress` list may take to resolve.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// An action a rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionPlan {
    pub action: Action,
    pub dry_run: bool,
    /// For block_egress: the hosts to block.
    pub hosts: Vec<String>,
}

/// What an action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done(String),
    DryRun(String),
    Failed(String),
    /// The target must not be acted on (see `TargetGuard`): why.
    Refused(String),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::Done(s) => s.clone(),
            Outcome::DryRun(s) => format!("dry run: would {s}"),
            Outcome::Failed(s) => format!("FAILED: {s}"),
            Outcome::Refused(s) => format!("REFUSED: {s}"),
        }
    }
}

/// What `Enforcer::enforce` did.
pub enum Enforcement {
    /// All of it, now.
    Now(Outcome),
    /// The action is taken; what it waits for is this future, to be
    /// awaited off the respond loop and its result handed to `settle`.
    Pending(PendingEnforcement),
}

/// The waiting part of an action.
pub type PendingEnforcement = Pin<Box<dyn Future<Output = Settlement> + Send>>;

/// How the waiting part of an action ended, for `Enforcer::settle`.
#[derive(Debug)]
pub enum Settlement {
    /// A freeze was (or was not) reported done by the kernel in time.
    Freeze {
        pid: u32,
        dir: PathBuf,
        processes: usize,
        frozen: bool,
    },
    /// A `block_egress` list's names resolved (or not); `literal` are the
    /// addresses the list named, blocked from the start.
    Resolved {
        pid: u32,
        dir: PathBuf,
        cgroup_id: u64,
        processes: usize,
        hosts: usize,
        literal: Vec<IpAddr>,
        resolved: Vec<IpAddr>,
        unresolved: Vec<String>,
    },
}

/// A process the agent froze.
struct FrozenProcess {
    /// The cgroup made for its tree.
    dir: PathBuf,
    /// When it started (clock ticks since boot): an unfreeze order must
    /// name it, so an order for a pid cannot thaw a later process frozen
    /// under the same pid.
    start_time: u64,
}

pub struct Enforcer {
    procfs: Procfs,
    /// Resolves the host names of `block_egress` lists.
    resolver: Arc<dyn HostResolver>,
    guard: TargetGuard,
    /// Where the agent's own cgroups go: `<cgroup2 mount>/vigil`.
    cgroup_base: Option<PathBuf>,
    /// The enforcement programs, loaded on first use.
    programs: Option<Ebpf>,
    /// GPU character-device majors (from /proc/devices at that load).
    gpu_majors: Vec<u32>,
    /// Frozen processes: their cgroup, and when each started.
    frozen: HashMap<u32, FrozenProcess>,
    /// Processes refused GPUs: their cgroup and the program's link.
    gpu_denied: HashMap<u32, (PathBuf, CgroupDeviceLinkId)>,
    /// Processes whose egress is blocked: cgroup, its id, the program's
    /// link, and the map entries made for it.
    egress_blocked: HashMap<u32, (PathBuf, CgroupSkbLinkId, Vec<BlockedDestination>)>,
}

impl Enforcer {
    pub fn new(procfs: Procfs) -> Self {
        let cgroup_base = procfs.cgroup2_mount().map(|m| m.join("vigil"));
        Self {
            procfs,
            resolver: Arc::new(SystemResolver),
            guard: TargetGuard::for_this_agent(Vec::new(), Vec::new()),
            cgroup_base,
            programs: None,
            gpu_majors: Vec::new(),
            frozen: HashMap::new(),
            gpu_denied: HashMap::new(),
            egress_blocked: HashMap::new(),
        }
    }

    /// What actions must never touch.
    pub fn set_target_guard(&mut self, guard: TargetGuard) {
        self.guard = guard;
    }

    /// What resolves the host names of `block_egress` lists.
    pub fn set_host_resolver(&mut self, resolver: Arc<dyn HostResolver>) {
        self.resolver = resolver;
    }

    /// Applies a rule's action to `pid` and its descendants; `event_boot_ns`
    /// is when the process did what the finding reports (CLOCK_BOOTTIME).
    pub fn enforce(&mut self, plan: &ActionPlan, pid: u32, event_boot_ns: u64) -> Enforcement {
        self.enforce_holding(plan, pid, event_boot_ns, None)
    }

    /// `enforce`, for a finding about the file `held` (a model file, as
    /// the process names it): a kill also kills the other processes of the
    /// same uid, born after the target, that hold that file open, wherever
    /// they sit in the process tree (a worker that double-forked away from
    /// its parent is no descendant, and would keep the model loaded).
    pub fn enforce_holding(
        &mut self,
        plan: &ActionPlan,
        pid: u32,
        event_boot_ns: u64,
        held: Option<&str>,
    ) -> Enforcement {
        let action = plan.action;
        // The pidfd first, the checks after: if the checks pass, the pidfd
        // names the process they checked (a pid recycled in between would
        // read as born after the event).
        let pidfd = open_pidfd(pid);
        if let Some(why) = self.guard.refusal(&self.procfs, pid, event_boot_ns) {
            return Enforcement::Now(Outcome::Refused(format!(
                "{} pid {pid}: {why}",
                action.as_str()
            )));
        }
        let Ok(pidfd) = pidfd else {
            return Enforcement::Now(Outcome::Failed(format!(
                "{} pid {pid}: the process is gone",
                action.as_str()
            )));
        };
        let tree = self.process_tree(pid);
        if plan.dry_run {
            return Enforcement::Now(Outcome::DryRun(format!(
                "{} pid {pid} ({} processes)",
                action.as_str(),
                tree.len()
            )));
        }
        let done = |s: String| Enforcement::Now(Outcome::Done(s));
        let r = match action {
            Action::Alert => Ok(done("alerted".into())),
            Action::Kill => {
                // Read before the kill: the file's identity as the target
                // sees it, and the target's uid.
                let holding = held.and_then(|path| self.held_file(pid, path));
                let mut text = self.kill(pid, pidfd);
                if let Some(held) = holding {
                    text.push_str(&self.kill_holders(&held, &tree));
                }
                Ok(done(text))
            }
            Action::Freeze => self.freeze(pid, &tree),
            Action::DenyGpu => self.deny_gpu(pid, &tree).map(done),
            Action::BlockEgress => self.block_egress(pid, &tree, &plan.hosts),
        };
        r.unwrap_or_else(|e| {
            Enforcement::Now(Outcome::Failed(format!(
                "{} pid {pid}: {e}",
                action.as_str()
            )))
        })
    }

    /// What a pending action came to, once its waiting part ended.
    pub fn settle(&mut self, settlement: Settlement) -> Outcome {
        match settlement {
            Settlement::Freeze {
                pid,
                dir,
                processes,
                frozen: true,
            } => Outcome::Done(froze(
                pid,
                self.frozen.get(&pid).map_or(0, |f| f.start_time),
                processes,
                &dir,
            )),
            Settlement::Freeze { pid, dir, .. } => Outcome::Failed(format!(
                "freeze pid {pid}: {} did not report frozen within {} s",
                dir.display(),
                FREEZE_WAIT.as_secs()
            )),
            Settlement::Resolved {
                pid,
                dir,
                cgroup_id,
                processes,
                hosts,
                literal,
                resolved,
                unresolved,
            } => {
                // The block may have been lifted meanwhile (the process
                // exited), and its pid's cgroup made anew for another.
                let current = self
                    .egress_blocked
                    .get(&pid)
                    .is_some_and(|(d, _, _)| *d == dir && cgroup_inode(d) == Ok(cgroup_id));
                if !current {
                    return Outcome::Failed(format!(
                        "block_egress pid {pid}: the process was gone before its hosts resolved ({} addresses were blocked until then)",
                        literal.len()
                    ));
                }
                let new: Vec<IpAddr> = resolved
                    .into_iter()
                    .filter(|ip| !literal.contains(ip))
                    .collect();
                match self.block_addresses(cgroup_id, &new) {
                    Ok(keys) => {
                        if let Some((_, _, blocked)) = self.egress_blocked.get_mut(&pid) {
                            blocked.extend(keys);
                        }
                        Outcome::Done(blocked_egress(
                            pid,
                            processes,
                            &dir,
                            literal.len() + new.len(),
                            hosts,
                            &unresolved,
                        ))
                    }
                    Err(e) => Outcome::Failed(format!("block_egress pid {pid}: {e}")),
                }
            }
        }
    }

    /// Thaws a process frozen by `freeze`, if it is the one that started
    /// at `start_time` (what the order names): a pid recycled and frozen
    /// again since the order was made names another process.
    pub fn unfreeze(&mut self, pid: u32, start_time: u64) -> Outcome {
        let Some(frozen) = self.frozen.get(&pid) else {
            return Outcome::Failed(format!("pid {pid} was not frozen by this agent"));
        };
        if frozen.start_time != start_time {
            return Outcome::Refused(format!(
                "unfreeze pid {pid}: the order names the process that started at {start_time}, \
                 the frozen one started at {} (another process under the same pid)",
                frozen.start_time
            ));
        }
        match std::fs::write(frozen.dir.join("cgroup.freeze"), "0") {
            Ok(()) => {
                self.frozen.remove(&pid);
                Outcome::Done(format!("unfroze pid {pid}"))
            }
            Err(e) => Outcome::Failed(format!("unfreezing pid {pid}: {e}")),
        }
    }

    /// A process exited: the cgroup made for it goes (once empty), with the
    /// programs attached to it and its map entries.
    pub fn forget(&mut self, pid: u32) {
        if let Some((dir, link, keys)) = self.egress_blocked.remove(&pid) {
            if let Some(ebpf) = self.programs.as_mut() {
                if let Some(Ok(mut map)) = ebpf
                    .map_mut("BLOCKED_DESTINATIONS")
                    .map(aya::maps::HashMap::<_, BlockedDestination, u8>::try_from)
                {
                    for k in &keys {
                        let _ = map.remove(k);
                    }
                }
                if let Some(Ok(prog)) = ebpf
                    .program_mut("vigil_block_egress")
                    .map(<&mut CgroupSkb>::try_from)
                {
                    let _ = prog.detach(link);
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        if let Some(frozen) = self.frozen.remove(&pid) {
            let _ = std::fs::remove_dir(frozen.dir);
        }
        if let Some((dir, link)) = self.gpu_denied.remove(&pid) {
            if let Some(ebpf) = self.programs.as_mut() {
                if let Some(Ok(prog)) = ebpf
                    .program_mut("vigil_deny_gpu")
                    .map(<&mut CgroupDevice>::try_from)
                {
                    let _ = prog.detach(link);
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }

    /// Kills `pid` and its descendants. In a cgroup of the agent's own
    /// (frozen, refused GPUs, blocked egress), `cgroup.kill` does it: the
    /// kernel kills everything in it at once, children forked meanwhile
    /// included. Otherwise the tree is stopped through pidfds, re-read
    /// until no new child appears (a stopped process cannot fork), then
    /// killed. Moving an unconfined tree into a cgroup first would close
    /// the same race but is itself racy per pid (cgroup.procs takes pid
    /// numbers, not pidfds) and needs a writable cgroup2 hierarchy; the
    /// stop-and-re-read walk needs neither.
    fn kill(&mut self, pid: u32, root: OwnedFd) -> String {
        let confined = [
            self.frozen.get(&pid).map(|f| &f.dir),
            self.gpu_denied.get(&pid).map(|(d, _)| d),
            self.egress_blocked.get(&pid).map(|(d, _, _)| d),
        ]
        .into_iter()
        .flatten()
        .find(|d| d.join("cgroup.kill").exists())
        .cloned();
        if let Some(dir) = confined {
            let count = std::fs::read_to_string(dir.join("cgroup.procs"))
                .map(|s| s.lines().count())
                .unwrap_or(0);
            if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
                return format!(
                    "killed pid {pid} and the {} other processes of cgroup {} (cgroup.kill)",
                    count.saturating_sub(1),
                    dir.display()
                );
            }
        }
        let _ = signal(&root, rustix::process::Signal::STOP);
        let mut members: Vec<(u32, OwnedFd)> = vec![(pid, root)];
        for _ in 0..64 {
            let tree = self.process_tree(pid);
            let mut grew = false;
            for p in self.guard.allowed_members(&self.procfs, &tree) {
                if members.iter().any(|(m, _)| *m == p) {
                    continue;
                }
                let Ok(fd) = open_pidfd(p) else { continue };
                // Checked after the pidfd opened: its parent is a member
                // (stopped, so it cannot have forked a recycled pid).
                let parent = self.procfs.ppid(p);
                if !members.iter().any(|(m, _)| Some(*m) == parent) {
                    continue;
                }
                let _ = signal(&fd, rustix::process::Signal::STOP);
                members.push((p, fd));
                grew = true;
            }
            if !grew {
                break;
            }
        }
        let killed = members
            .iter()
            .filter(|(_, fd)| signal(fd, rustix::process::Signal::KILL).is_ok())
            .count();
        format!(
            "killed pid {pid} and {} descendants",
            killed.saturating_sub(1)
        )
    }

    /// The file `path` names for `pid` (through its root directory), with
    /// the uid of `pid`: what `kill_holders` looks for.
    fn held_file(&self, pid: u32, path: &str) -> Option<HeldFile> {
        if !path.starts_with('/') {
            return None;
        }
        let meta = std::fs::metadata(self.procfs.root_handle(pid, path)).ok()?;
        use std::os::unix::fs::MetadataExt;
        Some(HeldFile {
            path: path.to_string(),
            dev: meta.dev(),
            ino: meta.ino(),
            uid: real_uid(&self.procfs, pid)?,
            started: self.procfs.start_time(pid)?,
        })
    }

    /// Kills every other process of the file's uid holding the file (a
    /// descriptor or a mapping on the same device and inode) that was born
    /// after the target, never one the guard refuses; what it did, as the
    /// end of the kill's outcome. `killed` is the target's tree, already
    /// dealt with.
    ///
    /// Born after the target: a worker it forked (however reparented since)
    /// always is; a process of the same user that held the file before the
    /// offender started (an approved workload on the same model, say) is
    /// not, and is spared.
    ///
    /// Known gap: an older process of the same uid that never opened the
    /// file itself but was handed the descriptor (SCM_RIGHTS over a unix
    /// socket, or pidfd_getfd) and mapped it is spared as "born before";
    /// telling it from an approved workload needs more than its age.
    ///
    /// Hand-written scan of /proc/*/fd: the procfs crate resolves each
    /// descriptor's link target (a path), not the (dev, ino) of the open
    /// file, which only a stat through the magic link gives.
    fn kill_holders(&self, held: &HeldFile, killed: &[u32]) -> String {
        let mut holders = Vec::new();
        for p in self.procfs.pids().unwrap_or_default() {
            if killed.contains(&p)
                || real_uid(&self.procfs, p) != Some(held.uid)
                || self.procfs.start_time(p).is_none_or(|t| t <= held.started)
            {
                continue;
            }
            if !self.holds(p, held) {
                continue;
            }
            // The pidfd first, then the checks again: they are about the
            // process the pidfd names.
            let Ok(fd) = open_pidfd(p) else { continue };
            if real_uid(&self.procfs, p) != Some(held.uid)
                || self.procfs.start_time(p).is_none_or(|t| t <= held.started)
                || !self.holds(p, held)
            {
                continue;
            }
            if let Some(why) = self.guard.refusal(&self.procfs, p, 0) {
                tracing::warn!(pid = p, reason = %why, "a holder of the model file is spared");
                continue;
            }
            if signal(&fd, rustix::process::Signal::KILL).is_ok() {
                holders.push(p);
            }
        }
        if holders.is_empty() {
            return String::new();
        }
        format!(
            "; and {} other processes of uid {} holding {} open (pids {:?})",
            holders.len(),
            held.uid,
            held.path,
            holders
        )
    }

    /// Whether `pid` holds the held file: a descriptor open on it, or a
    /// mapping of it. A loader that maps the weights and closes the file
    /// (llama.cpp-style) keeps them through the mapping alone.
    fn holds(&self, pid: u32, held: &HeldFile) -> bool {
        self.holds_descriptor(pid, held) || self.holds_mapping(pid, held)
    }

    fn holds_descriptor(&self, pid: u32, held: &HeldFile) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(fds) = std::fs::read_dir(self.procfs.pid_dir(pid).join("fd")) else {
            return false;
        };
        fds.flatten().any(|fd| {
            std::fs::metadata(fd.path()).is_ok_and(|m| m.dev() == held.dev && m.ino() == held.ino)
        })
    }

    /// A mapping of the held file in /proc/PID/maps, by the device and
    /// inode fields (no path: the file may be renamed or unlinked since).
    /// The maps fields, not a stat of /proc/PID/map_files/*: one read per
    /// process, and no CAP_SYS_ADMIN needed.
    fn holds_mapping(&self, pid: u32, held: &HeldFile) -> bool {
        let dev = (rustix::fs::major(held.dev), rustix::fs::minor(held.dev));
        let Ok(maps) = ::procfs::process::Process::new_with_root(self.procfs.pid_dir(pid))
            .and_then(|p| p.maps())
        else {
            return false;
        };
        maps.into_iter().any(|m| {
            m.inode == held.ino
                && u32::try_from(m.dev.0).ok() == Some(dev.0)
                && u32::try_from(m.dev.1).ok() == Some(dev.1)
        })
    }

    /// `pid` first, then its descendants (from /proc), breadth first,
    /// without the protected ones (see `TargetGuard`).
    fn process_tree(&self, pid: u32) -> Vec<u32> {
        let tree = self.full_process_tree(pid);
        let mut allowed = self.guard.allowed_members(&self.procfs, &tree[1..]);
        allowed.insert(0, pid);
        allowed
    }

    fn full_process_tree(&self, pid: u32) -> Vec<u32> {
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for p in self.procfs.pids().unwrap_or_default() {
            if let Some(ppid) = self.procfs.ppid(p) {
                children.entry(ppid).or_default().push(p);
            }
        }
        let mut tree = vec![pid];
        let mut i = 0;
        while i < tree.len() {
            if let Some(c) = children.get(&tree[i]) {
                for child in c {
                    if !tree.contains(child) {
                        tree.push(*child);
                    }
                }
            }
            i += 1;
        }
        tree
    }

    /// A fresh cgroup for `action` on `pid`, holding the whole tree.
    fn own_cgroup(&self, what: &str, pid: u32, tree: &[u32]) -> Result<PathBuf, String> {
        let base = self
            .cgroup_base
            .as_ref()
            .ok_or("no cgroup v2 hierarchy is mounted")?;
        let dir = base.join(format!("{what}-{pid}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for p in tree {
            // A process that exited in between is fine.
            if let Err(e) = std::fs::write(dir.join("cgroup.procs"), p.to_string()) {
                if *p == tree[0] {
                    return Err(format!("moving pid {p} into {}: {e}", dir.display()));
                }
            }
        }
        Ok(dir)
    }

    /// Freezes the tree now; the wait for the kernel to report it frozen
    /// is pending (off the respond loop), unless it already is.
    fn freeze(&mut self, pid: u32, tree: &[u32]) -> Result<Enforcement, String> {
        // Read before the freeze, right after the guard's check of the
        // same process: what an unfreeze order must name.
        let start_time = self.procfs.start_time(pid).ok_or("the process is gone")?;
        let dir = self.own_cgroup("frozen", pid, tree)?;
        std::fs::write(dir.join("cgroup.freeze"), "1")
            .map_err(|e| format!("writing {}/cgroup.freeze: {e}", dir.display()))?;
        self.frozen.insert(
            pid,
            FrozenProcess {
                dir: dir.clone(),
                start_time,
            },
        );
        let processes = tree.len();
        if is_frozen(&dir) {
            return Ok(Enforcement::Now(Outcome::Done(froze(
                pid, start_time, processes, &dir,
            ))));
        }
        Ok(Enforcement::Pending(Box::pin(async move {
            // The kernel reports the freeze done in cgroup.events.
            let deadline = tokio::time::Instant::now() + FREEZE_WAIT;
            let mut frozen = is_frozen(&dir);
            while !frozen && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(FREEZE_POLL).await;
                frozen = is_frozen(&dir);
            }
            Settlement::Freeze {
                pid,
                dir,
                processes,
                frozen,
            }
        })))
    }

    /// The enforcement programs, loaded (not attached) on first use.
    fn programs(&mut self) -> Result<&mut Ebpf, String> {
        if self.programs.is_none() {
            let majors = gpu_majors(&std::fs::read_to_string("/proc/devices").unwrap_or_default());
            let mut table = [0u32; GPU_MAJOR_SLOTS];
            for (slot, m) in table.iter_mut().zip(&majors) {
                *slot = *m;
            }
            let count = majors.len().min(GPU_MAJOR_SLOTS) as u32;
            self.gpu_majors = majors.clone();
            let mut ebpf = EbpfLoader::new()
                .override_global("GPU_MAJORS", &table, true)
                .override_global("GPU_MAJOR_COUNT", &count, true)
                .load(ENFORCE_OBJECT)
                .map_err(|e| format!("loading the enforcement programs: {e}"))?;
            let dev: &mut CgroupDevice = ebpf
                .program_mut("vigil_deny_gpu")
                .ok_or("vigil_deny_gpu missing from the object")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            dev.load()
                .map_err(|e| format!("loading vigil_deny_gpu: {e}"))?;
            let skb: &mut CgroupSkb = ebpf
                .program_mut("vigil_block_egress")
                .ok_or("vigil_block_egress missing from the object")?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            skb.load()
                .map_err(|e| format!("loading vigil_block_egress: {e}"))?;
            self.programs = Some(ebpf);
        }
        self.programs
            .as_mut()
            .ok_or_else(|| "enforcement programs not loaded".to_string())
    }

    fn deny_gpu(&mut self, pid: u32, tree: &[u32]) -> Result<String, String> {
        let dir = self.own_cgroup("gpu-denied", pid, tree)?;
        let ebpf = self.programs()?;
        let prog: &mut CgroupDevice = ebpf
            .program_mut("vigil_deny_gpu")
            .ok_or("vigil_deny_gpu missing")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        let cgroup =
            std::fs::File::open(&dir).map_err(|e| format!("opening {}: {e}", dir.display()))?;
        let link = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(|e| format!("attaching to {}: {e}", dir.display()))?;
        self.gpu_denied.insert(pid, (dir.clone(), link));
        // A device program checks opens, not descriptors already open: those
        // stay usable (nothing revokes an open file from outside), so the
        // outcome says how many there are (a freeze or kill rule stops them).
        let open = self.open_gpu_descriptors(tree);
        let already = if open == 0 {
            String::new()
        } else {
            format!(
                "; {open} GPU descriptors were already open and stay usable (freeze or kill to stop them)"
            )
        };
        Ok(format!(
            "refused GPU devices (majors {:?}) to pid {pid} ({} processes) in cgroup {}{already}",
            self.gpu_majors,
            tree.len(),
            dir.display()
        ))
    }

    /// Blocks the list's addresses now; its names resolve off the respond
    /// loop (pending) and their addresses are blocked when they do.
    fn block_egress(
        &mut self,
        pid: u32,
        tree: &[u32],
        hosts: &[String],
    ) -> Result<Enforcement, String> {
        // Addresses stand for themselves.
        let mut literal: Vec<IpAddr> = Vec::new();
        let mut names = Vec::new();
        for h in hosts {
            match h.parse::<IpAddr>() {
                Ok(ip) => literal.push(ip),
                Err(_) => names.push(h.clone()),
            }
        }
        literal.sort();
        literal.dedup();
        let dir = self.own_cgroup("egress-blocked", pid, tree)?;
        let cgroup_id = cgroup_inode(&dir)?;
        let keys = self.block_addresses(cgroup_id, &literal)?;
        let ebpf = self.programs()?;
        let prog: &mut CgroupSkb = ebpf
            .program_mut("vigil_block_egress")
            .ok_or("vigil_block_egress missing")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        let cgroup =
            std::fs::File::open(&dir).map_err(|e| format!("opening {}: {e}", dir.display()))?;
        let link = prog
            .attach(
                cgroup,
                CgroupSkbAttachType::Egress,
                CgroupAttachMode::Single,
            )
            .map_err(|e| format!("attaching to {}: {e}", dir.display()))?;
        self.egress_blocked.insert(pid, (dir.clone(), link, keys));
        let (processes, hosts) = (tree.len(), hosts.len());
        if names.is_empty() {
            return Ok(Enforcement::Now(Outcome::Done(blocked_egress(
                pid,
                processes,
                &dir,
                literal.len(),
                hosts,
                &[],
            ))));
        }
        let resolver = Arc::clone(&self.resolver);
        Ok(Enforcement::Pending(Box::pin(async move {
            let (resolved, unresolved) = resolve_all(resolver.as_ref(), names).await;
            Settlement::Resolved {
                pid,
                dir,
                cgroup_id,
                processes,
                hosts,
                literal,
                resolved,
                unresolved,
            }
        })))
    }

    /// Adds `addrs` to the destinations blocked for the cgroup `cgroup_id`.
    fn block_addresses(
        &mut self,
        cgroup_id: u64,
        addrs: &[IpAddr],
    ) -> Result<Vec<BlockedDestination>, String> {
        let keys: Vec<BlockedDestination> = addrs
            .iter()
            .map(|ip| BlockedDestination {
                cgroup_id,
                addr: match ip {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    IpAddr::V6(v6) => v6.octets(),
                },
            })
            .collect();
        if keys.is_empty() {
            return Ok(keys);
        }
        let ebpf = self.programs()?;
        let mut map = aya::maps::HashMap::<_, BlockedDestination, u8>::try_from(
            ebpf.map_mut("BLOCKED_DESTINATIONS")
                .ok_or("BLOCKED_DESTINATIONS missing")?,
        )
        .map_err(|e| format!("{e}"))?;
        for k in &keys {
            map.insert(k, 1, 0)
                .map_err(|e| format!("blocking an address: {e}"))?;
        }
        Ok(keys)
    }
}

/// Resolves every name at once, each within `RESOLVE_TIMEOUT`: the
/// addresses found, and the names that did not resolve.
async fn resolve_all(
    resolver: &dyn HostResolver,
    names: Vec<String>,
) -> (Vec<IpAddr>, Vec<String>) {
    let lookups = names.into_iter().map(|name| {
        let lookup = resolver.resolve(name.clone());
        async move { (name, tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await) }
    });
    let mut addrs = Vec::new();
    let mut unresolved = Vec::new();
    for (name, result) in futures::future::join_all(lookups).await {
        match result {
            Ok(Ok(found)) => addrs.extend(found),
            Ok(Err(_)) | Err(_) => unresolved.push(name),
        }
    }
    addrs.sort();
    addrs.dedup();
    (addrs, unresolved)
}

fn cgroup_inode(dir: &Path) -> Result<u64, String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|e| format!("{}: {e}", dir.display()))
}

/// The freeze's outcome: it names the start time, which an unfreeze order
/// must carry (`vigilctl agent unfreeze --start-time`).
fn froze(pid: u32, start_time: u64, processes: usize, dir: &Path) -> String {
    format!(
        "froze pid {pid} (start time {start_time}; {processes} processes) in cgroup {}",
        dir.display()
    )
}

fn blocked_egress(
    pid: u32,
    processes: usize,
    dir: &Path,
    addresses: usize,
    hosts: usize,
    unresolved: &[String],
) -> String {
    let unresolved = if unresolved.is_empty() {
        String::new()
    } else {
        format!("; not resolved: {}", unresolved.join(", "))
    };
    format!(
        "blocked egress of pid {pid} ({processes} processes, cgroup {}) to {addresses} addresses of {hosts} hosts{unresolved}",
        dir.display()
    )
}

impl Enforcer {
    /// How many descriptors of `tree` are open on GPU character devices.
    fn open_gpu_descriptors(&self, tree: &[u32]) -> usize {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let mut count = 0;
        for pid in tree {
            let Ok(fds) = std::fs::read_dir(self.procfs.pid_dir(*pid).join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                // stat through the magic link: the open file itself.
                let Ok(meta) = std::fs::metadata(fd.path()) else {
                    continue;
                };
                let major = nix::sys::stat::major(meta.rdev()) as u32;
                if meta.file_type().is_char_device() && self.gpu_majors.contains(&major) {
                    count += 1;
                }
            }
        }
        count
    }
}

/// A file a killed process had open, looked for in other processes.
struct HeldFile {
    path: String,
    dev: u64,
    ino: u64,
    /// The uid (real) of the process killed: only its processes are.
    uid: u32,
    /// Its start time (clock ticks since boot): only processes born after
    /// it are.
    started: u64,
}

/// The real uid of `pid`, from /proc/PID/status.
fn real_uid(procfs: &Procfs, pid: u32) -> Option<u32> {
    ::procfs::process::Process::new_with_root(procfs.pid_dir(pid))
        .and_then(|p| p.status())
        .ok()
        .map(|s| s.ruid)
}

fn open_pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

fn signal(pidfd: &OwnedFd, sig: rustix::process::Signal) -> std::io::Result<()> {
    Ok(rustix::process::pidfd_send_signal(pidfd, sig)?)
}

fn is_frozen(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|e| e.lines().any(|l| l.trim() == "frozen 1"))
        .unwrap_or(false)
}

/// Majors of GPU character devices listed in /proc/devices, NVIDIA's 195 always.
fn gpu_majors(proc_devices: &str) -> Vec<u32> {
    let mut majors = vec![NVIDIA_MAJOR];
    let chars = proc_devices
        .split("Block devices:")
        .next()
        .unwrap_or_default();
    for line in chars.lines() {
        let mut f = line.split_whitespace();
        let (Some(major), Some(name)) = (f.next(), f.next()) else {
            continue;
        };
        if let Ok(m) = major.parse::<u32>() {
            if GPU_DEVICE_NAMES.contains(&name) && !majors.contains(&m) {
                majors.push(m);
            }
        }
    }
    majors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_majors_come_from_proc_devices() {
        let devices = "Character devices:\n  1 mem\n195 nvidia-frontend\n226 drm\n234 nvidia-uvm\n241 kfd\n261 accel\n\nBlock devices:\n  7 loop\n259 blkext\n";
        assert_eq!(gpu_majors(devices), vec![195, 226, 234, 241, 261]);
        assert_eq!(gpu_majors(""), vec![195]);
    }

    #[test]
    fn an_unfreeze_naming_another_start_time_than_the_frozen_process_is_refused() {
        let cgroup = tempfile::tempdir().unwrap();
        let freeze = cgroup.path().join("cgroup.freeze");
        std::fs::write(&freeze, "1").unwrap();
        let mut enforcer = Enforcer::new(Procfs::default());
        enforcer.frozen.insert(
            4242,
            FrozenProcess {
                dir: cgroup.path().to_path_buf(),
                start_time: 1000,
            },
        );
        // An order for the process that had pid 4242 before (or none).
        for stale in [999, 0] {
            let outcome = enforcer.unfreeze(4242, stale);
            assert!(
                matches!(&outcome, Outcome::Refused(why) if why.contains("started at 1000")),
                "{outcome:?}"
            );
            assert_eq!(std::fs::read_to_string(&freeze).unwrap(), "1");
        }
        assert!(matches!(enforcer.unfreeze(4242, 1000), Outcome::Done(_)));
        assert_eq!(std::fs::read_to_string(&freeze).unwrap(), "0");
        assert!(matches!(enforcer.unfreeze(4242, 1000), Outcome::Failed(_)));
    }

    #[test]
    fn the_freeze_outcome_names_the_start_time_an_unfreeze_must_carry() {
        assert_eq!(
            froze(42, 1234, 3, Path::new("/sys/fs/cgroup/vigil/frozen-42")),
            "froze pid 42 (start time 1234; 3 processes) in cgroup /sys/fs/cgroup/vigil/frozen-42"
        );
    }
}

#[cfg(test)]
mod target_tests {
    use super::*;

    /// What a kill or a refusal came to (neither waits).
    fn now(enforcement: Enforcement) -> Outcome {
        match enforcement {
            Enforcement::Now(outcome) => outcome,
            Enforcement::Pending(_) => panic!("a kill or a refusal does not wait"),
        }
    }

    #[test]
    fn a_kill_for_a_pid_recycled_since_the_event_is_refused_and_nothing_is_signalled() {
        let mut enforcer = Enforcer::new(Procfs::default());
        let plan = ActionPlan {
            action: Action::Kill,
            dry_run: false,
            hosts: Vec::new(),
        };
        let event = crate::clock::boot_now_ns();
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The live process at the finding's pid was born after its event.
        let mut newcomer = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let outcome = now(enforcer.enforce(&plan, newcomer.id(), event));
        assert!(
            matches!(&outcome, Outcome::Refused(why) if why.contains("recycled")),
            "{outcome:?}"
        );
        assert!(
            newcomer.try_wait().unwrap().is_none(),
            "the newcomer was signalled"
        );
        // With its own event time it is the offender, and killed.
        let outcome = now(enforcer.enforce(&plan, newcomer.id(), crate::clock::boot_now_ns()));
        assert!(matches!(outcome, Outcome::Done(_)), "{outcome:?}");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(newcomer.wait().unwrap().signal(), Some(9));
    }

    #[test]
    fn the_agent_itself_and_init_are_never_acted_on() {
        let mut enforcer = Enforcer::new(Procfs::default());
        for action in [Action::Kill, Action::Freeze] {
            let plan = ActionPlan {
                action,
                dry_run: false,
                hosts: Vec::new(),
            };
            let at = crate::clock::boot_now_ns();
            for pid in [1, std::process::id()] {
                let outcome = now(enforcer.enforce(&plan, pid, at));
                assert!(matches!(outcome, Outcome::Refused(_)), "{outcome:?}");
            }
        }
    }
}

#[cfg(test)]
mod gpu_descriptor_tests {
    use super::*;

    #[test]
    fn descriptors_already_open_on_a_listed_device_are_counted() {
        // /dev/null (major 1) stands in for a GPU: a real one cannot be
        // opened without its driver.
        let mut enforcer = Enforcer::new(Procfs::default());
        let mut holder = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open("/dev/null").unwrap())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        enforcer.gpu_majors = vec![NVIDIA_MAJOR];
        assert_eq!(enforcer.open_gpu_descriptors(&[holder.id()]), 0);
        enforcer.gpu_majors = vec![1];
        // stdin, stdout, stderr (and whatever else the harness passed on).
        assert!(enforcer.open_gpu_descriptors(&[holder.id()]) >= 3);
        let _ = holder.kill();
        let _ = holder.wait();
    }
}
