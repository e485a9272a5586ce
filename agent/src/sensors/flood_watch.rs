//! Which processes flood the sensors. The kernel counts, per process, the
//! records a full ring buffer lost (`DROPS_BY_PROCESS`); read once a
//! second, a process that lost at least the threshold's worth in that
//! second starts an episode, reported once; the episode ends at the first
//! reading below the threshold.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// A process that started flooding the sensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodStart {
    pub tgid: u32,
    /// Its records lost since the previous reading.
    pub dropped: u64,
    /// Its records lost as the kernel counts them (since its entry was made).
    pub dropped_total: u64,
}

#[derive(Debug)]
pub struct FloodWatch {
    /// Records lost per second that make a flood (0: never).
    drops_per_sec: u64,
    /// Every process's count at the previous reading.
    last: HashMap<u32, u64>,
    /// Processes in an episode (already reported).
    flooding: HashSet<u32>,
}

impl FloodWatch {
    pub fn new(drops_per_sec: u64) -> Self {
        Self {
            drops_per_sec,
            last: HashMap::new(),
            flooding: HashSet::new(),
        }
    }

    /// One reading: every process's count as the kernel has it now,
    /// `elapsed` after the previous reading (taken as at least a second, so
    /// an early first tick cannot turn a few drops into a rate). Returns the
    /// processes whose episode starts now.
    pub fn observe(
        &mut self,
        totals: impl IntoIterator<Item = (u32, u64)>,
        elapsed: Duration,
    ) -> Vec<FloodStart> {
        let threshold = self.drops_per_sec as f64 * elapsed.as_secs_f64().max(1.0);
        let mut now = HashMap::with_capacity(self.last.len());
        let mut started = Vec::new();
        for (tgid, total) in totals {
            let before = self.last.get(&tgid).copied().unwrap_or(0);
            // An entry the kernel's LRU evicted and made again counts from 0.
            let dropped = if total >= before {
                total - before
            } else {
                total
            };
            if self.drops_per_sec > 0 && dropped as f64 >= threshold {
                if self.flooding.insert(tgid) {
                    started.push(FloodStart {
                        tgid,
                        dropped,
                        dropped_total: total,
                    });
                }
            } else {
                self.flooding.remove(&tgid);
            }
            now.insert(tgid, total);
        }
        self.flooding.retain(|tgid| now.contains_key(tgid));
        self.last = now;
        started
    }

    /// Nothing was lost since the previous reading: every episode ends (the
    /// counts are unchanged, so the previous reading stays the reference).
    pub fn quiet(&mut self) {
        self.flooding.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_process_over_the_threshold_is_reported_once_per_episode() {
        let mut w = FloodWatch::new(1000);
        assert_eq!(w.observe([(7, 10), (8, 5)], SEC), vec![]);
        let started = w.observe([(7, 2010), (8, 6)], SEC);
        assert_eq!(
            started,
            vec![FloodStart {
                tgid: 7,
                dropped: 2000,
                dropped_total: 2010
            }]
        );
        // Still flooding: not again.
        assert_eq!(w.observe([(7, 5000), (8, 7)], SEC), vec![]);
        // Below the threshold: the episode ends; the next one is reported.
        assert_eq!(w.observe([(7, 5100), (8, 7)], SEC), vec![]);
        assert_eq!(w.observe([(7, 7000), (8, 7)], SEC).len(), 1);
        // A quiet second ends it too.
        w.quiet();
        assert_eq!(w.observe([(7, 9000)], SEC).len(), 1);
    }

    #[test]
    fn the_threshold_is_a_rate_over_at_least_a_second() {
        let mut w = FloodWatch::new(1000);
        // An early first tick: 500 drops in 10 ms is judged over a second.
        assert_eq!(w.observe([(1, 500)], Duration::from_millis(10)), vec![]);
        // 1500 over 2 s is 750/s: no flood; 2500 over 2 s is.
        assert_eq!(w.observe([(1, 2000)], 2 * SEC), vec![]);
        assert_eq!(w.observe([(1, 4500)], 2 * SEC).len(), 1);
    }

    #[test]
    fn an_evicted_and_remade_entry_counts_from_zero_and_zero_disables() {
        let mut w = FloodWatch::new(1000);
        assert_eq!(w.observe([(3, 50_000)], SEC).len(), 1);
        w.quiet();
        let started = w.observe([(3, 1200)], SEC);
        assert_eq!(started[0].dropped, 1200);
        let mut off = FloodWatch::new(0);
        assert_eq!(off.observe([(3, u64::MAX)], SEC), vec![]);
    }
}
