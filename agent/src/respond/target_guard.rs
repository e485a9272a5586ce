//! Which processes an action may touch. Whatever a rule says, the agent
//! never signals, freezes or moves: pid 0 or 1, itself, a protected
//! process (the control plane, by its executable's identity, or a pid
//! given with `--protect-pid`), a root-owned ancestor of any of those, or
//! a kernel thread; and never a process born after the event that made the
//! finding (its pid was recycled). Each refusal says why.
//!
//! Protection by executable counts only for a process whose real,
//! effective and saved uids (from /proc/PID/status) are all the agent's own
//! (root), and whose executable is the protected file itself: its (device,
//! inode), not its name. Neither the owner of /proc/PID (`PR_SET_DUMPABLE
//! 0` makes it root for any process) nor a path (a user can run the agent's
//! binary, or a copy of it) says who a process is. Ancestors are protected
//! only when root-owned the same way: a local user who starts an impostor
//! under their model runner does not make the runner untouchable.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::procfs::Procfs;

/// The kernel's "is a kernel thread" task flag (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;
/// kthreadd: every kernel thread's parent.
const KTHREADD_PID: u32 = 2;
/// The control plane's executable name: protected when it sits next to the
/// agent's own executable (they are installed together).
const CONTROL_PLANE_EXE: &str = "vigil-controlplane";

/// What the agent must not act on.
#[derive(Debug, Clone)]
pub struct TargetGuard {
    agent_pid: u32,
    agent_uid: u32,
    protected_pids: Vec<u32>,
    /// Protected executables: their (device, inode) is read at each check,
    /// so a binary installed or upgraded after the agent started counts.
    protected_exes: Vec<PathBuf>,
    /// Clock ticks per second (the unit of /proc/PID/stat's start time).
    ticks_per_second: u64,
}

impl TargetGuard {
    /// The agent (`agent_pid`, running `agent_exe`) guards itself, the
    /// control plane next to its executable, and what the flags add.
    pub fn new(
        agent_pid: u32,
        agent_exe: Option<&Path>,
        protected_pids: Vec<u32>,
        protected_exes: Vec<PathBuf>,
    ) -> Self {
        let mut exes = protected_exes;
        if let Some(agent_exe) = agent_exe {
            exes.push(agent_exe.to_path_buf());
            if let Some(dir) = agent_exe.parent() {
                exes.push(dir.join(CONTROL_PLANE_EXE));
            }
        }
        exes.sort();
        exes.dedup();
        Self {
            agent_pid,
            agent_uid: rustix::process::geteuid().as_raw(),
            protected_pids,
            protected_exes: exes,
            ticks_per_second: ::procfs::ticks_per_second().max(1),
        }
    }

    /// The guard for this very process, with the flags' additions.
    pub fn for_this_agent(protected_pids: Vec<u32>, protected_exes: Vec<PathBuf>) -> Self {
        let exe = std::env::current_exe().ok();
        Self::new(
            std::process::id(),
            exe.as_deref(),
            protected_pids,
            protected_exes,
        )
    }

    /// Why `pid` must not be acted on, if it must not: see the module
    /// comment. `event_boot_ns` (CLOCK_BOOTTIME, the sensors' clock) is
    /// when the process did what the finding reports; 0 skips that check.
    pub fn refusal(&self, procfs: &Procfs, pid: u32, event_boot_ns: u64) -> Option<String> {
        if pid <= 1 {
            return Some(format!("pid {pid} is the init process or the idle task"));
        }
        if pid == self.agent_pid {
            return Some(format!("pid {pid} is the agent itself"));
        }
        let Some(stat) = procfs.stat(pid) else {
            return Some(format!("pid {pid} is gone"));
        };
        if is_kernel_thread(pid, stat.flags, stat.ppid, procfs) {
            return Some(format!("pid {pid} ({}) is a kernel thread", stat.comm));
        }
        if event_boot_ns > 0 {
            // /proc's start time is in ticks since boot (CLOCK_BOOTTIME),
            // rounded down: a process really born before the event never
            // reads as born after it.
            let started_ns = stat
                .starttime
                .saturating_mul(1_000_000_000 / self.ticks_per_second);
            if started_ns > event_boot_ns {
                return Some(format!(
                    "pid {pid} was recycled: the process there now started {} ms after the event",
                    (started_ns - event_boot_ns) / 1_000_000
                ));
            }
        }
        if let Some(why) = self.protected(procfs, pid) {
            return Some(format!("pid {pid} is {why}"));
        }
        let protected = self.protected_with_ancestors(procfs);
        if protected.contains(&pid) {
            return Some(format!(
                "pid {pid} is an ancestor of the agent or of a protected process"
            ));
        }
        None
    }

    /// The members of a process tree that may be acted on (the root is
    /// checked by `refusal`; a descendant that is protected stays out).
    pub fn allowed_members(&self, procfs: &Procfs, tree: &[u32]) -> Vec<u32> {
        let shielded = self.protected_with_ancestors(procfs);
        tree.iter()
            .copied()
            .filter(|p| {
                *p > 1
                    && *p != self.agent_pid
                    && !shielded.contains(p)
                    && procfs
                        .stat(*p)
                        .is_some_and(|s| !is_kernel_thread(*p, s.flags, s.ppid, procfs))
            })
            .collect()
    }

    /// Why `pid` itself is protected, if it is.
    fn protected(&self, procfs: &Procfs, pid: u32) -> Option<String> {
        if self.protected_pids.contains(&pid) {
            return Some("protected (--protect-pid)".into());
        }
        if !self.runs_as_agent(procfs, pid) {
            return None;
        }
        let running = file_identity(&procfs.exe_handle(pid))?;
        let exe = self
            .protected_exes
            .iter()
            .find(|p| file_identity(p) == Some(running))?;
        Some(format!("protected (it runs {})", exe.display()))
    }

    /// Whether the real, effective and saved uids of `pid` are all the
    /// agent's own.
    fn runs_as_agent(&self, procfs: &Procfs, pid: u32) -> bool {
        ::procfs::process::Process::new_with_root(procfs.pid_dir(pid))
            .and_then(|p| p.status())
            .is_ok_and(|s| {
                s.ruid == self.agent_uid && s.euid == self.agent_uid && s.suid == self.agent_uid
            })
    }

    /// The agent, the protected processes, and all their ancestors.
    fn protected_with_ancestors(&self, procfs: &Procfs) -> HashSet<u32> {
        let mut roots = vec![self.agent_pid];
        roots.extend(&self.protected_pids);
        for p in procfs.pids().unwrap_or_default() {
            if self.protected(procfs, p).is_some() {
                roots.push(p);
            }
        }
        let mut out = HashSet::new();
        let mut visited = HashSet::new();
        for root in roots {
            out.insert(root);
            let mut p = root;
            // Bounded: a cycle cannot happen in /proc, but a racing
            // reparent should not loop us.
            for _ in 0..4096 {
                if p <= 1 || !visited.insert(p) {
                    break;
                }
                // Only root-owned ancestors: a user's process above a
                // protected one (one it started) gains nothing.
                if p != root && self.runs_as_agent(procfs, p) {
                    out.insert(p);
                }
                match procfs.ppid(p) {
                    Some(parent) => p = parent,
                    None => break,
                }
            }
        }
        out
    }
}

/// The (device, inode) of the file at `path` (through a magic link such as
/// /proc/PID/exe: the file the process runs, wherever it is linked).
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A kernel thread: the PF_KTHREAD flag, or (for kernels or views where
/// the flag is hidden) a child of kthreadd without a command line.
fn is_kernel_thread(pid: u32, flags: u32, ppid: i32, procfs: &Procfs) -> bool {
    if flags & PF_KTHREAD != 0 || pid == KTHREADD_PID {
        return true;
    }
    ppid == KTHREADD_PID as i32
        && procfs
            .process(pid)
            .is_some_and(|p| p.argv.iter().all(|a| a.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard_as_agent(agent: u32) -> TargetGuard {
        TargetGuard::new(
            agent,
            Some(Path::new("/nonexistent/vigil-agent")),
            vec![],
            vec![],
        )
    }

    fn sleeper() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap()
    }

    #[test]
    fn init_the_agent_and_kernel_threads_are_refused() {
        let procfs = Procfs::default();
        let me = std::process::id();
        let guard = guard_as_agent(me);
        let now = crate::clock::boot_now_ns();
        for (pid, want) in [
            (0, "idle task"),
            (1, "init process"),
            (me, "the agent itself"),
            (KTHREADD_PID, "kernel thread"),
        ] {
            let why = guard.refusal(&procfs, pid, now).unwrap_or_default();
            assert!(why.contains(want), "pid {pid}: {why:?}");
        }
        // Every other kernel thread (kworkers and the like) too.
        let kthread = procfs
            .pids()
            .unwrap()
            .into_iter()
            .find(|p| *p > 2 && procfs.ppid(*p) == Some(KTHREADD_PID))
            .expect("a kernel thread");
        let why = guard.refusal(&procfs, kthread, now).unwrap_or_default();
        assert!(why.contains("kernel thread"), "{why}");
    }

    #[test]
    fn ancestors_of_the_agent_and_protected_processes_are_refused() {
        let procfs = Procfs::default();
        let mut child = sleeper();
        let mut other = sleeper();
        let now = crate::clock::boot_now_ns();
        // The child plays the agent: this test process is its parent.
        let guard = guard_as_agent(child.id());
        let why = guard
            .refusal(&procfs, std::process::id(), now)
            .unwrap_or_default();
        assert!(why.contains("ancestor"), "{why}");
        // A protected pid and its parent the same.
        let guard = TargetGuard::new(1_000_000_000, None, vec![other.id()], vec![]);
        let why = guard.refusal(&procfs, other.id(), now).unwrap_or_default();
        assert!(why.contains("--protect-pid"), "{why}");
        let why = guard
            .refusal(&procfs, std::process::id(), now)
            .unwrap_or_default();
        assert!(why.contains("ancestor"), "{why}");
        // An ordinary process is fair game.
        let guard = guard_as_agent(1_000_000_000);
        assert_eq!(guard.refusal(&procfs, child.id(), now), None);
        let _ = child.kill();
        let _ = other.kill();
        let _ = child.wait();
        let _ = other.wait();
    }

    #[test]
    fn the_control_plane_next_to_the_agent_is_protected_by_its_path() {
        let procfs = Procfs::default();
        let dir = tempfile::tempdir().unwrap();
        let cp = dir.path().join(CONTROL_PLANE_EXE);
        std::fs::copy("/bin/sleep", &cp).unwrap();
        let mut child = std::process::Command::new(&cp).arg("30").spawn().unwrap();
        let guard = TargetGuard::new(
            1_000_000_000,
            Some(&dir.path().join("vigil-agent")),
            vec![],
            vec![],
        );
        // Wait for the exec to be visible.
        let exe = cp.to_string_lossy().into_owned();
        for _ in 0..200 {
            if procfs.exe(child.id()).as_deref() == Some(exe.as_str()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let why = guard
            .refusal(&procfs, child.id(), crate::clock::boot_now_ns())
            .unwrap_or_default();
        assert!(
            why.contains("protected") && why.contains(CONTROL_PLANE_EXE),
            "{why}"
        );
        assert!(guard.allowed_members(&procfs, &[child.id()]).is_empty());
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn the_protected_executable_run_by_a_user_or_a_copy_run_by_root_is_not_protected() {
        let procfs = Procfs::default();
        let dir = tempfile::tempdir().unwrap();
        let cp = dir.path().join(CONTROL_PLANE_EXE);
        std::fs::copy("/bin/sleep", &cp).unwrap();
        let copy = dir.path().join("not-the-control-plane");
        std::fs::copy(&cp, &copy).unwrap();
        let guard = TargetGuard::new(
            1_000_000_000,
            Some(&dir.path().join("vigil-agent")),
            vec![],
            vec![],
        );
        // A byte-for-byte copy is another file.
        let mut by_root = std::process::Command::new(&copy).arg("30").spawn().unwrap();
        let mut children = vec![(by_root.id(), copy.clone())];
        // The protected file itself, run by another uid (root can: it
        // drops its uids first), is not protected either.
        let mut by_user = None;
        if rustix::process::geteuid().is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let child = std::process::Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&cp)
                .arg("30")
                .spawn()
                .unwrap();
            children.push((child.id(), cp.clone()));
            by_user = Some(child);
        }
        for (pid, exe) in &children {
            let exe = exe.to_string_lossy().into_owned();
            for _ in 0..200 {
                if procfs.exe(*pid).as_deref() == Some(exe.as_str()) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            assert_eq!(
                guard.refusal(&procfs, *pid, crate::clock::boot_now_ns()),
                None,
                "pid {pid} runs {exe}"
            );
            assert_eq!(guard.allowed_members(&procfs, &[*pid]), vec![*pid]);
        }
        let _ = by_root.kill();
        let _ = by_root.wait();
        if let Some(mut child) = by_user {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    #[test]
    fn a_process_born_after_the_event_is_a_recycled_pid() {
        let procfs = Procfs::default();
        let before = crate::clock::boot_now_ns();
        // Start times tick at 1/CLK_TCK: be born well after `before`.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut child = sleeper();
        let guard = guard_as_agent(1_000_000_000);
        let why = guard
            .refusal(&procfs, child.id(), before)
            .unwrap_or_default();
        assert!(why.contains("recycled"), "{why}");
        assert_eq!(
            guard.refusal(&procfs, child.id(), crate::clock::boot_now_ns()),
            None
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}
