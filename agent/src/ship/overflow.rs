//! Where findings wait while the spool is full: in memory, a bounded
//! number. The agent keeps detecting and says `spool-full` in its
//! heartbeats until the spool takes them again.
//!
//! When there is no room, one finding is dropped (and counted), chosen so
//! that a flood cannot push out the finding that matters (issue #19):
//! - from the lowest [`Rank`] held: routine findings go before high- and
//!   critical-severity ones and those that carry an action, which go
//!   before flood aggregates (one aggregate stands for many findings);
//! - within that rank, from the uid that holds the most (the flooder,
//!   not the one user whose model open came before the flood);
//! - of that uid's, the oldest.
//!
//! A flood by one user thus drops its own findings; one finding of each
//! kind stays as long as anything of a lower rank or a busier uid is held.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use vigil_domain::{Finding, Severity};

use crate::detect::reported_signals::is_flood_aggregate;
use crate::detect::TimedFinding;

/// What the heartbeats say of the spool; clones share it.
#[derive(Clone, Default)]
pub struct SpoolPressure(Arc<PressureInner>);

#[derive(Default)]
struct PressureInner {
    dropped: AtomicU64,
    full: AtomicBool,
}

impl SpoolPressure {
    /// Findings dropped since the agent started because the spool was full.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// The spool takes no more findings (`spool-full`).
    pub fn is_full(&self) -> bool {
        self.0.full.load(Ordering::Relaxed)
    }

    fn set_full(&self, full: bool) {
        self.0.full.store(full, Ordering::Relaxed);
    }

    fn count_dropped(&self) {
        self.0.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Which findings are dropped last when the memory is full: the higher,
/// the later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Rank {
    Routine,
    /// High or critical severity, or an action taken.
    Serious,
    /// A flood's aggregate.
    Aggregate,
}

impl Rank {
    fn of(finding: &Finding) -> Self {
        if is_flood_aggregate(finding) {
            Rank::Aggregate
        } else if finding.severity >= Severity::High || !finding.action.is_empty() {
            Rank::Serious
        } else {
            Rank::Routine
        }
    }
}

/// The findings the spool did not take, oldest first.
pub struct Overflow {
    waiting: VecDeque<TimedFinding>,
    /// Findings held per (rank, uid): where the next one dropped comes
    /// from. At most `capacity` entries.
    held: HashMap<(Rank, u32), usize>,
    capacity: usize,
    pressure: SpoolPressure,
}

impl Overflow {
    /// Holds at most `capacity` findings (at least one).
    pub fn new(capacity: usize, pressure: SpoolPressure) -> Self {
        let capacity = capacity.max(1);
        Self {
            waiting: VecDeque::with_capacity(capacity.min(1024)),
            held: HashMap::new(),
            capacity,
            pressure,
        }
    }

    pub fn pressure(&self) -> &SpoolPressure {
        &self.pressure
    }

    /// The spool refused a finding: keep it, dropping one (see the
    /// module's doc; possibly this one) when there is no room.
    pub fn hold(&mut self, found: TimedFinding) {
        self.pressure.set_full(true);
        self.count_in(&found.finding);
        self.waiting.push_back(found);
        if self.waiting.len() > self.capacity {
            self.drop_one();
        }
    }

    /// The spool refused a finding held here (already counted in): keep
    /// it first again.
    pub fn hold_again(&mut self, found: TimedFinding) {
        self.count_in(&found.finding);
        self.waiting.push_front(found);
    }

    /// The oldest finding held, to offer the spool again.
    pub fn take_oldest(&mut self) -> Option<TimedFinding> {
        let found = self.waiting.pop_front()?;
        self.count_out(&found.finding);
        Some(found)
    }

    /// Drops the oldest finding of the busiest uid in the lowest rank
    /// held. A scan of the held findings: this runs only while the spool
    /// is full and a finding comes, and findings are rare next to events.
    fn drop_one(&mut self) {
        let Some((&(rank, uid), _)) = self
            .held
            .iter()
            .min_by_key(|((rank, uid), n)| (*rank, std::cmp::Reverse(**n), *uid))
        else {
            return;
        };
        let Some(at) = self
            .waiting
            .iter()
            .position(|f| f.finding.process.uid == uid && Rank::of(&f.finding) == rank)
        else {
            return;
        };
        if let Some(dropped) = self.waiting.remove(at) {
            self.count_out(&dropped.finding);
            self.pressure.count_dropped();
        }
    }

    fn count_in(&mut self, finding: &Finding) {
        *self
            .held
            .entry((Rank::of(finding), finding.process.uid))
            .or_default() += 1;
    }

    fn count_out(&mut self, finding: &Finding) {
        let key = (Rank::of(finding), finding.process.uid);
        if let Some(n) = self.held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(&key);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The spool took everything back: no longer `spool-full`.
    pub fn relieved(&mut self) {
        self.pressure.set_full(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::{Finding, ProcessInfo, Severity, SignalKind};

    fn found(pid: u32) -> TimedFinding {
        found_of(0, pid, Severity::High)
    }

    fn found_of(uid: u32, pid: u32, severity: Severity) -> TimedFinding {
        TimedFinding {
            finding: Finding {
                seq: 0,
                rule_id: "r".into(),
                severity,
                signal: SignalKind::ModelFile,
                observed_at_unix_nanos: 1,
                process: ProcessInfo {
                    pid,
                    uid,
                    ..Default::default()
                },
                file: None,
                net: None,
                gpu: None,
                action: String::new(),
                summary: String::new(),
            },
            event_boot_ns: 0,
        }
    }

    #[test]
    fn the_newest_are_kept_and_the_dropped_counted() {
        let pressure = SpoolPressure::default();
        let mut o = Overflow::new(3, pressure.clone());
        assert!(!pressure.is_full());
        for pid in 1..=5 {
            o.hold(found(pid));
        }
        assert!(pressure.is_full());
        assert_eq!(pressure.dropped(), 2);
        assert_eq!(o.len(), 3);
        let first = o.take_oldest().unwrap();
        assert_eq!(first.finding.process.pid, 3);
        o.hold_again(first);
        let pids: Vec<u32> = std::iter::from_fn(|| o.take_oldest())
            .map(|f| f.finding.process.pid)
            .collect();
        assert_eq!(pids, vec![3, 4, 5]);
        o.relieved();
        assert!(!pressure.is_full());
        assert_eq!(pressure.dropped(), 2);
    }

    fn pids(o: &mut Overflow) -> Vec<u32> {
        std::iter::from_fn(|| o.take_oldest())
            .map(|f| f.finding.process.pid)
            .collect()
    }

    #[test]
    fn a_flood_by_one_user_drops_its_own_findings_not_anothers() {
        let pressure = SpoolPressure::default();
        let mut o = Overflow::new(8, pressure.clone());
        // A real model open (uid 1000), then a flood by nobody.
        o.hold(found_of(1000, 1, Severity::High));
        for pid in 100..1100 {
            o.hold(found_of(65534, pid, Severity::High));
        }
        assert_eq!(pressure.dropped(), 1000 - 7);
        let held = pids(&mut o);
        assert_eq!(held[0], 1, "the real finding is still held: {held:?}");
        assert_eq!(&held[1..], &[1093, 1094, 1095, 1096, 1097, 1098, 1099]);
    }

    #[test]
    fn serious_findings_and_aggregates_evict_routine_ones_first() {
        let pressure = SpoolPressure::default();
        let mut o = Overflow::new(4, pressure.clone());
        let mut aggregate = found_of(65534, 50, Severity::High);
        aggregate.finding.summary = "flood: uid 65534 opened 5000 more model files".into();
        o.hold(aggregate);
        let mut killed = found_of(1000, 2, Severity::Low);
        killed.finding.action = "kill".into();
        o.hold(killed);
        o.hold(found_of(1000, 3, Severity::Critical));
        // A flood of routine findings fills the rest, dropping its own.
        for pid in 100..200 {
            o.hold(found_of(65534, pid, Severity::Medium));
        }
        assert_eq!(pids(&mut o), vec![50, 2, 3, 199]);
        // Serious ones, full: the busiest uid's oldest goes, then the
        // incoming routine one itself; the aggregate stays throughout.
        let mut aggregate = found_of(65534, 51, Severity::Info);
        aggregate.finding.summary = "flood: pid 51 (x) opened 900 model files".into();
        o.hold(aggregate);
        for pid in 10..13 {
            o.hold(found_of(65534, pid, Severity::High));
        }
        o.hold(found_of(1000, 4, Severity::Critical));
        o.hold(found_of(1000, 5, Severity::Low));
        assert_eq!(pids(&mut o), vec![51, 11, 12, 4]);
        assert!(o.held.is_empty(), "{:?}", o.held);
    }
}
