//! Actions a rule could not take because its budget for that uid was
//! spent (`ActionBudget`): each waits here, with a pidfd on its target
//! and the target's start time, until the window refills; then, if the
//! same process still lives, it is taken. So decoys can delay an action on
//! their own user's offender by a window, never cancel it.
//!
//! Bounded: past `MAX_QUEUED_ACTIONS` waiting, a further over-budget action
//! is not queued and its finding says so (alert-only, as before queues).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use vigil_domain::Finding;

use super::action_budget::ActionBudget;
use super::enforcer::ActionPlan;
use crate::procfs::Procfs;

/// Most actions waiting for their rule's budget, all rules and uids.
pub const MAX_QUEUED_ACTIONS: usize = 256;

/// An action waiting for its rule's budget.
pub struct QueuedAction {
    pub finding: Finding,
    pub plan: ActionPlan,
    pub event_boot_ns: u64,
    pub uid: u32,
    pub queued_at: Instant,
    /// The target, held so that its end is seen (the pidfd turns readable).
    pidfd: OwnedFd,
    /// The target's start time (clock ticks since boot) when queued.
    start_time: u64,
}

/// What became of a queued action whose turn came.
pub enum Turn {
    /// The same process lives: act on it now.
    Act(QueuedAction),
    /// The process ended (or its pid is another's) while it waited.
    Gone(QueuedAction),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotQueued {
    #[error("the process is gone")]
    Gone,
    #[error("{MAX_QUEUED_ACTIONS} actions already wait for their budget")]
    Full,
}

#[derive(Default)]
pub struct ActionQueue {
    waiting: VecDeque<QueuedAction>,
}

impl ActionQueue {
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Queues `plan` on the finding's process (of `uid`).
    pub fn push(
        &mut self,
        procfs: &Procfs,
        finding: Finding,
        plan: ActionPlan,
        event_boot_ns: u64,
        uid: u32,
        now: Instant,
    ) -> Result<(), NotQueued> {
        if self.waiting.len() >= MAX_QUEUED_ACTIONS {
            return Err(NotQueued::Full);
        }
        let pid = finding.process.pid;
        // The pidfd first, the start time after: a start time read once the
        // pidfd is open is the start time of the process it names (a pid
        // recycled in between would have exited its pidfd's process).
        let pidfd = open_pidfd(pid).map_err(|_| NotQueued::Gone)?;
        let start_time = procfs.start_time(pid).ok_or(NotQueued::Gone)?;
        if exited(&pidfd) {
            return Err(NotQueued::Gone);
        }
        self.waiting.push_back(QueuedAction {
            finding,
            plan,
            event_boot_ns,
            uid,
            queued_at: now,
            pidfd,
            start_time,
        });
        Ok(())
    }

    /// The earliest moment a waiting action's budget may have refilled.
    pub fn next_retry(&self, budget: &ActionBudget, now: Instant) -> Option<Instant> {
        self.waiting
            .iter()
            .map(|q| {
                now + budget
                    .resumes_in(&q.finding.rule_id, q.uid, now)
                    .unwrap_or(Duration::ZERO)
            })
            .min()
    }

    /// The actions whose turn came at `now`, oldest first: each either
    /// took one action from its refilled budget (the same process lives),
    /// or its process is gone (which takes nothing from the budget). The
    /// rest keep waiting, in order.
    pub fn due(&mut self, procfs: &Procfs, budget: &mut ActionBudget, now: Instant) -> Vec<Turn> {
        let mut turns = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for queued in self.waiting.drain(..) {
            let pid = queued.finding.process.pid;
            let same = !exited(&queued.pidfd) && procfs.start_time(pid) == Some(queued.start_time);
            if !same {
                turns.push(Turn::Gone(queued));
            } else if budget.try_take(&queued.finding.rule_id, queued.uid, now) {
                turns.push(Turn::Act(queued));
            } else {
                kept.push_back(queued);
            }
        }
        self.waiting = kept;
        turns
    }
}

fn open_pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Whether the process a pidfd names has exited: its pidfd polls readable.
fn exited(pidfd: &OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    matches!(poll(&mut fds, Some(&zero)), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use vigil_domain::{ProcessInfo, Severity, SignalKind};
    use vigil_policy::Action;

    use super::*;

    fn finding(pid: u32) -> Finding {
        Finding {
            seq: 0,
            rule_id: "r".into(),
            severity: Severity::High,
            signal: SignalKind::ModelFile,
            observed_at_unix_nanos: 0,
            process: ProcessInfo {
                pid,
                ..Default::default()
            },
            file: None,
            net: None,
            gpu: None,
            action: String::new(),
            summary: String::new(),
        }
    }

    fn kill() -> ActionPlan {
        ActionPlan {
            action: Action::Kill,
            dry_run: false,
            hosts: Vec::new(),
        }
    }

    #[test]
    fn a_queued_action_acts_when_its_window_refills_unless_its_process_ended() {
        let procfs = Procfs::default();
        let window = Duration::from_secs(5);
        let mut budget = ActionBudget::new(1, window);
        let t0 = Instant::now();
        assert!(budget.try_take("r", 42, t0));
        let mut alive = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut ending = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut queue = ActionQueue::default();
        for pid in [alive.id(), ending.id()] {
            queue
                .push(&procfs, finding(pid), kill(), 0, 42, t0)
                .unwrap();
        }
        assert_eq!(queue.next_retry(&budget, t0), Some(t0 + window));
        // Not yet: both keep waiting.
        assert!(queue.due(&procfs, &mut budget, t0).is_empty());
        assert_eq!(queue.len(), 2);
        let _ = ending.kill();
        let _ = ending.wait();
        // Refilled (one action): the live one acts, the ended one is gone
        // without spending it.
        let turns = queue.due(&procfs, &mut budget, t0 + window);
        let acted: Vec<u32> = turns
            .iter()
            .filter_map(|t| match t {
                Turn::Act(q) => Some(q.finding.process.pid),
                Turn::Gone(_) => None,
            })
            .collect();
        assert_eq!(acted, [alive.id()]);
        assert_eq!(turns.len(), 2);
        assert!(queue.is_empty());
        // A process that is gone is never queued.
        assert_eq!(
            queue
                .push(&procfs, finding(ending.id()), kill(), 0, 42, t0)
                .err(),
            Some(NotQueued::Gone)
        );
        let _ = alive.kill();
        let _ = alive.wait();
    }
}
