//! Degraded mode: when eBPF cannot load (no BTF, no privilege, a kernel
//! that refuses the programs), the agent polls /proc instead. Processes
//! that live shorter than the interval, and files opened and closed in
//! between, are missed: the agent says so (sensor mode `procfs-degraded`).

use std::collections::HashSet;
use std::time::Duration;

use super::{EventContext, SensorEvent};
use crate::clock::boot_now_ns;
use crate::procfs::Procfs;

pub struct ProcfsPoller {
    procfs: Procfs,
    interval: Duration,
    known: HashSet<u32>,
    polls: u64,
}

impl ProcfsPoller {
    pub fn new(procfs: Procfs, interval: Duration) -> Self {
        Self {
            procfs,
            interval,
            known: HashSet::new(),
            polls: 0,
        }
    }

    /// The processes already in the table (the start snapshot): not new.
    pub fn assume_known(&mut self, pids: impl IntoIterator<Item = u32>) {
        self.known = pids.into_iter().collect();
    }

    pub fn hook(&self) -> String {
        format!("procfs-poll/{}ms", self.interval.as_millis())
    }

    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// Waits one interval, then reports processes that appeared (as execs)
    /// and those that are gone (as exits) since the last poll.
    pub async fn next_batch(&mut self, out: &mut Vec<SensorEvent>) -> std::io::Result<()> {
        tokio::time::sleep(self.interval).await;
        self.poll(out)
    }

    pub fn poll(&mut self, out: &mut Vec<SensorEvent>) -> std::io::Result<()> {
        self.polls += 1;
        let now: HashSet<u32> = self.procfs.pids()?.into_iter().collect();
        let stamp = boot_now_ns();
        for &pid in now.difference(&self.known) {
            let Some(p) = self.procfs.process(pid) else {
                continue;
            };
            let ctx = EventContext {
                ktime_boot_ns: stamp,
                cgroup_id: p.cgroup_id,
                mnt_ns: p.mnt_ns,
                tid: pid,
                pid,
                ppid: p.ppid,
                uid: p.uid,
                gid: 0,
                comm: p.comm.clone(),
            };
            out.push(SensorEvent::Exec {
                ctx,
                filename: p.exe,
                argv: p.argv,
            });
        }
        for &pid in self.known.difference(&now) {
            out.push(SensorEvent::Exit {
                ctx: EventContext {
                    ktime_boot_ns: stamp,
                    cgroup_id: 0,
                    mnt_ns: 0,
                    tid: pid,
                    pid,
                    ppid: 0,
                    uid: 0,
                    gid: 0,
                    comm: String::new(),
                },
                exit_code: 0,
            });
        }
        self.known = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_gone_processes_become_execs_and_exits() {
        let procfs = Procfs::default();
        let mut all = procfs.pids().unwrap();
        let me = std::process::id();
        all.retain(|p| *p != me);
        // Pretend this process is new and a long-gone pid was known.
        let mut poller = ProcfsPoller::new(procfs, Duration::from_millis(10));
        poller.assume_known(all.into_iter().chain([u32::MAX - 1]));
        let mut out = Vec::new();
        poller.poll(&mut out).unwrap();
        assert!(out
            .iter()
            .any(|e| matches!(e, SensorEvent::Exec { ctx, .. } if ctx.pid == me)));
        assert!(out
            .iter()
            .any(|e| matches!(e, SensorEvent::Exit { ctx, .. } if ctx.pid == u32::MAX - 1)));
        out.clear();
        poller.poll(&mut out).unwrap();
        assert!(!out.iter().any(|e| e.ctx().pid == me), "reported only once");
        assert_eq!(poller.polls(), 2);
    }
}
