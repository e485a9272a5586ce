//! Which processes flood the sensors. The kernel counts, per process, the
//! records a full ring buffer lost (`DROPS_BY_PROCESS`); read once a
//! second, a process that lost at least the threshold's worth in that
//! second starts an episode, reported once; the episode ends after
//! `QUIET_READINGS` readings in a row below the threshold (a flood whose
//! rate wavers around the threshold on a loaded host is one episode, not
//! one a second).

use std::collections::HashMap;
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

/// Readings in a row below the threshold that end an episode.
const QUIET_READINGS: u8 = 3;

#[derive(Debug)]
pub struct FloodWatch {
    /// Records lost per second that make a flood (0: never).
    drops_per_sec: u64,
    /// Every process's count at the previous reading.
    last: HashMap<u32, u64>,
    /// Processes in an episode (already reported), with the readings in a
    /// row below the threshold since their last one above it.
    flooding: HashMap<u32, u8>,
}

impl FloodWatch {
    pub fn new(drops_per_sec: u64) -> Self {
        Self {
            drops_per_sec,
            last: HashMap::new(),
            flooding: HashMap::new(),
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
                if self.flooding.insert(tgid, 0).is_none() {
                    started.push(FloodStart {
                        tgid,
                        dropped,
                        dropped_total: total,
                    });
                }
            } else {
                self.calm(tgid);
            }
            now.insert(tgid, total);
        }
        self.flooding.retain(|tgid, _| now.contains_key(tgid));
        self.last = now;
        started
    }

    /// Nothing was lost since the previous reading: a quiet reading for
    /// every episode (the counts are unchanged, so the previous reading
    /// stays the reference).
    pub fn quiet(&mut self) {
        let tgids: Vec<u32> = self.flooding.keys().copied().collect();
        for tgid in tgids {
            self.calm(tgid);
        }
    }

    /// One reading below the threshold for `tgid`'s episode, if it has one.
    fn calm(&mut self, tgid: u32) {
        if let Some(quiet) = self.flooding.get_mut(&tgid) {
            *quiet += 1;
            if *quiet >= QUIET_READINGS {
                self.flooding.remove(&tgid);
            }
        }
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
        // One reading below the threshold, then over it again: the same
        // episode (a rate wavering around the threshold).
        assert_eq!(w.observe([(7, 5100), (8, 7)], SEC), vec![]);
        assert_eq!(w.observe([(7, 7000), (8, 7)], SEC), vec![]);
        // Three below in a row end it; the next one is reported.
        for t in [7100, 7200, 7300] {
            assert_eq!(w.observe([(7, t), (8, 7)], SEC), vec![]);
        }
        assert_eq!(w.observe([(7, 9000), (8, 7)], SEC).len(), 1);
        // Quiet seconds end it too.
        for _ in 0..3 {
            w.quiet();
        }
        assert_eq!(w.observe([(7, 11_000)], SEC).len(), 1);
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
        for _ in 0..3 {
            w.quiet();
        }
        let started = w.observe([(3, 1200)], SEC);
        assert_eq!(started[0].dropped, 1200);
        let mut off = FloodWatch::new(0);
        assert_eq!(off.observe([(3, u64::MAX)], SEC), vec![]);
    }
}
