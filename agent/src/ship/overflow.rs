//! Where findings wait while the spool is full: in memory, the newest
//! ones, a bounded number; the oldest is dropped (and counted) to make
//! room. The agent keeps detecting and says `spool-full` in its
//! heartbeats until the spool takes them again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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

/// The newest findings the spool did not take, oldest first.
pub struct Overflow {
    waiting: VecDeque<TimedFinding>,
    capacity: usize,
    pressure: SpoolPressure,
}

impl Overflow {
    /// Holds at most `capacity` findings (at least one).
    pub fn new(capacity: usize, pressure: SpoolPressure) -> Self {
        let capacity = capacity.max(1);
        Self {
            waiting: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
            pressure,
        }
    }

    pub fn pressure(&self) -> &SpoolPressure {
        &self.pressure
    }

    /// The spool refused a finding: keep it, dropping the oldest one held
    /// when there is no room.
    pub fn hold(&mut self, found: TimedFinding) {
        self.pressure.set_full(true);
        if self.waiting.len() >= self.capacity {
            self.waiting.pop_front();
            self.pressure.count_dropped();
        }
        self.waiting.push_back(found);
    }

    /// The spool refused a finding held here (already counted in): keep
    /// it first again.
    pub fn hold_again(&mut self, found: TimedFinding) {
        self.waiting.push_front(found);
    }

    /// The oldest finding held, to offer the spool again.
    pub fn take_oldest(&mut self) -> Option<TimedFinding> {
        self.waiting.pop_front()
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
        TimedFinding {
            finding: Finding {
                seq: 0,
                rule_id: "r".into(),
                severity: Severity::High,
                signal: SignalKind::ModelFile,
                observed_at_unix_nanos: 1,
                process: ProcessInfo {
                    pid,
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
}
