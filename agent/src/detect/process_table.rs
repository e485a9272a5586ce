//! The agent's view of every live process: seeded from /proc at start (so
//! what ran before the agent is known), kept by exec and exit events.
//!
//! Architecture invariant: the table is bounded (`capacity`); when full, new
//! processes are still reported (inferred per event) but not stored, and
//! `overflows` counts them.

use std::collections::HashMap;
use vigil_domain::{Ancestor, ProcessInfo, MAX_ANCESTORS};

use crate::procfs::Procfs;
use crate::sensors::EventContext;

/// How the table learned of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The exec event.
    Exec,
    /// The /proc snapshot at start.
    Snapshot,
    /// First seen in another event: copied from its parent (a fork that did
    /// not exec) or read from /proc.
    Inferred,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessEntry {
    /// Without `exe_sha256`, which is computed when a finding needs it.
    pub info: ProcessInfo,
    pub origin: Origin,
}

#[derive(Debug)]
pub struct ProcessTable {
    procs: HashMap<u32, ProcessEntry>,
    capacity: usize,
    overflows: u64,
}

impl ProcessTable {
    pub fn new(capacity: usize) -> Self {
        Self {
            procs: HashMap::new(),
            capacity,
            overflows: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Processes that could not be stored because the table was full.
    pub fn overflows(&self) -> u64 {
        self.overflows
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.procs.keys().copied().collect();
        pids.sort_unstable();
        pids
    }

    pub fn get(&self, pid: u32) -> Option<&ProcessEntry> {
        self.procs.get(&pid)
    }

    fn insert(&mut self, entry: ProcessEntry) {
        let pid = entry.info.pid;
        if self.procs.len() >= self.capacity && !self.procs.contains_key(&pid) {
            self.overflows += 1;
            return;
        }
        self.procs.insert(pid, entry);
    }

    /// Adds every process now in /proc; returns how many.
    pub fn seed(&mut self, procfs: &Procfs) -> std::io::Result<usize> {
        let mut n = 0;
        for pid in procfs.pids()? {
            if let Some(snap) = procfs.process(pid) {
                self.insert(ProcessEntry {
                    info: snap,
                    origin: Origin::Snapshot,
                });
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn observe_exec(&mut self, ctx: &EventContext, filename: &str, argv: &[String]) {
        self.insert(ProcessEntry {
            info: ProcessInfo {
                pid: ctx.pid,
                ppid: ctx.ppid,
                uid: ctx.uid,
                exe: filename.to_string(),
                argv: argv.to_vec(),
                comm: ctx.comm.clone(),
                cgroup_id: ctx.cgroup_id,
                mnt_ns: ctx.mnt_ns,
                exe_sha256: String::new(),
                ns_pid: 0,
                cgroup_path: String::new(),
                ancestors: Vec::new(),
            },
            origin: Origin::Exec,
        });
    }

    pub fn observe_exit(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    /// The process behind an event. A pid the table does not know is a fork
    /// that did not exec (it runs its parent's program) or a process the
    /// table had no room for; it is inferred and stored.
    pub fn resolve(&mut self, ctx: &EventContext, procfs: &Procfs) -> ProcessInfo {
        if let Some(e) = self.procs.get(&ctx.pid) {
            return e.info.clone();
        }
        let from_event = ProcessInfo {
            pid: ctx.pid,
            ppid: ctx.ppid,
            uid: ctx.uid,
            comm: ctx.comm.clone(),
            cgroup_id: ctx.cgroup_id,
            mnt_ns: ctx.mnt_ns,
            ..Default::default()
        };
        let info = match self.procs.get(&ctx.ppid) {
            Some(parent) => ProcessInfo {
                exe: parent.info.exe.clone(),
                argv: parent.info.argv.clone(),
                ..from_event
            },
            None => procfs.process(ctx.pid).unwrap_or(from_event),
        };
        self.insert(ProcessEntry {
            info: info.clone(),
            origin: Origin::Inferred,
        });
        info
    }

    /// The parent, grandparent, ... of a process whose parent is `ppid`,
    /// nearest first, as the table knows them (no /proc read): at most
    /// [`MAX_ANCESTORS`], ending after pid 1, at a pid the table does not
    /// hold, or where the chain would loop back (`pid` or one already named).
    pub fn ancestors(&self, pid: u32, ppid: u32) -> Vec<Ancestor> {
        let mut chain: Vec<Ancestor> = Vec::new();
        let mut cur = ppid;
        while chain.len() < MAX_ANCESTORS
            && cur != 0
            && cur != pid
            && !chain.iter().any(|a| a.pid == cur)
        {
            let Some(e) = self.procs.get(&cur) else {
                break;
            };
            chain.push(Ancestor::new(cur, &e.info.exe, &e.info.comm));
            if cur == 1 {
                break;
            }
            cur = e.info.ppid;
        }
        chain
    }

    /// pid, parent, grandparent, ... as far as the table knows (at most `max`).
    pub fn ancestry(&self, pid: u32, max: usize) -> Vec<u32> {
        let mut chain = vec![pid];
        let mut cur = pid;
        while chain.len() < max {
            match self.procs.get(&cur) {
                Some(e) if e.info.ppid != 0 && e.info.ppid != cur => {
                    cur = e.info.ppid;
                    chain.push(cur);
                }
                _ => break,
            }
        }
        chain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pid: u32, ppid: u32, comm: &str) -> EventContext {
        EventContext {
            ktime_boot_ns: 1,
            cgroup_id: 7,
            mnt_ns: 8,
            tid: pid,
            pid,
            ppid,
            uid: 1000,
            gid: 1000,
            comm: comm.into(),
        }
    }

    #[test]
    fn exec_then_exit_adds_then_removes() {
        let mut t = ProcessTable::new(10);
        t.observe_exec(
            &ctx(100, 1, "python3"),
            "/usr/bin/python3",
            &["python3".into()],
        );
        let e = t.get(100).unwrap();
        assert_eq!(e.info.exe, "/usr/bin/python3");
        assert_eq!(e.origin, Origin::Exec);
        t.observe_exit(100);
        assert!(t.get(100).is_none());
    }

    #[test]
    fn a_fork_without_exec_inherits_its_parents_program() {
        let mut t = ProcessTable::new(10);
        t.observe_exec(
            &ctx(100, 1, "python3"),
            "/usr/bin/python3",
            &["python3".into(), "x.py".into()],
        );
        let child = t.resolve(&ctx(4_000_000, 100, "python3"), &Procfs::default());
        assert_eq!(child.exe, "/usr/bin/python3");
        assert_eq!(child.argv, vec!["python3", "x.py"]);
        assert_eq!(child.pid, 4_000_000);
        assert_eq!(t.get(4_000_000).unwrap().origin, Origin::Inferred);
        assert_eq!(t.ancestry(4_000_000, 8), vec![4_000_000, 100, 1]);
    }

    #[test]
    fn ancestors_walk_the_table_and_stop_at_cycles_missing_pids_and_the_cap() {
        let mut t = ProcessTable::new(100);
        t.observe_exec(&ctx(1, 0, "systemd"), "/sbin/init", &[]);
        t.observe_exec(&ctx(50, 1, "sshd"), "/usr/sbin/sshd", &[]);
        t.observe_exec(&ctx(60, 50, "bash"), "/bin/bash", &[]);
        t.observe_exec(&ctx(70, 60, "python3"), "/usr/bin/python3", &[]);
        let chain = t.ancestors(70, 60);
        let pids: Vec<u32> = chain.iter().map(|a| a.pid).collect();
        assert_eq!(pids, vec![60, 50, 1]);
        assert_eq!(chain[0].exe, "/bin/bash");
        assert_eq!(chain[0].comm, "bash");
        assert_eq!(chain[2].exe, "/sbin/init");

        // A parent the table does not hold ends the chain there.
        t.observe_exec(&ctx(80, 999, "orphan"), "/bin/orphan", &[]);
        t.observe_exec(&ctx(81, 80, "child"), "/bin/child", &[]);
        let pids: Vec<u32> = t.ancestors(82, 81).iter().map(|a| a.pid).collect();
        assert_eq!(pids, vec![81, 80]);
        assert!(t.ancestors(83, 999).is_empty());

        // A cycle (pid reuse seen out of order) ends before it repeats.
        t.observe_exec(&ctx(90, 91, "a"), "/bin/a", &[]);
        t.observe_exec(&ctx(91, 92, "b"), "/bin/b", &[]);
        t.observe_exec(&ctx(92, 90, "c"), "/bin/c", &[]);
        let pids: Vec<u32> = t.ancestors(93, 90).iter().map(|a| a.pid).collect();
        assert_eq!(pids, vec![90, 91, 92]);
        let pids: Vec<u32> = t.ancestors(90, 91).iter().map(|a| a.pid).collect();
        assert_eq!(pids, vec![91, 92]);

        // A long chain is cut at the cap, nearest first.
        for pid in 200..220 {
            t.observe_exec(&ctx(pid, pid - 1, "x"), "/bin/x", &[]);
        }
        let chain = t.ancestors(300, 219);
        assert_eq!(chain.len(), MAX_ANCESTORS);
        assert_eq!(chain[0].pid, 219);
        assert_eq!(chain[MAX_ANCESTORS - 1].pid, 212);
    }

    #[test]
    fn the_table_is_bounded_and_counts_what_it_could_not_hold() {
        let mut t = ProcessTable::new(2);
        for pid in 1..=5 {
            t.observe_exec(&ctx(pid, 0, "x"), "/bin/x", &[]);
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.overflows(), 3);
        // Still reported, from the event itself, when /proc has nothing.
        let info = t.resolve(&ctx(4_000_001, 3_999_999, "ghost"), &Procfs::default());
        assert_eq!(info.comm, "ghost");
    }

    #[test]
    fn seeding_finds_processes_that_started_before_the_agent() {
        let mut t = ProcessTable::new(1 << 16);
        let n = t.seed(&Procfs::default()).unwrap();
        assert!(n >= 1);
        let me = t
            .get(std::process::id())
            .expect("this test process is in the table");
        assert_eq!(me.origin, Origin::Snapshot);
    }
}
