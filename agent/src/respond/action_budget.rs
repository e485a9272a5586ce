//! How many actions each rule may take per minute. A rule that matches a
//! flood of processes (a bad bundle, or a user provoking it on purpose to
//! make the agent kill or freeze en masse) goes alert-only for the rest of
//! its minute, and says so once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// Whether a rule may act now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Act,
    /// This is the first action over the limit in this window: report it.
    LimitReached,
    /// Over the limit, already reported.
    AlertOnly,
}

pub struct ActionBudget {
    per_minute: u32,
    /// Per rule: when its window began, and how many actions it asked for.
    rules: HashMap<String, (Instant, u32)>,
}

impl ActionBudget {
    /// At most `per_minute` actions per rule per minute (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            rules: HashMap::new(),
        }
    }

    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// Counts one action of `rule` at `now`.
    pub fn take(&mut self, rule: &str, now: Instant) -> Allowance {
        if self.per_minute == 0 {
            return Allowance::Act;
        }
        // Rules come from the signed bundle: their number is bounded, but
        // windows long over are dropped so the map stays small.
        if self.rules.len() > 4096 {
            self.rules
                .retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
        }
        let entry = self.rules.entry(rule.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        match entry.1.cmp(&(self.per_minute + 1)) {
            std::cmp::Ordering::Less => Allowance::Act,
            std::cmp::Ordering::Equal => Allowance::LimitReached,
            std::cmp::Ordering::Greater => Allowance::AlertOnly,
        }
    }

    /// When `rule` may act again (None: it may now).
    pub fn resumes_in(&self, rule: &str, now: Instant) -> Option<Duration> {
        let (since, count) = self.rules.get(rule)?;
        (*count > self.per_minute).then(|| WINDOW.saturating_sub(now.duration_since(*since)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_over_its_limit_is_reported_once_then_alert_only_until_the_window_ends() {
        let mut budget = ActionBudget::new(3);
        let t0 = Instant::now();
        let got: Vec<Allowance> = (0..6).map(|_| budget.take("r", t0)).collect();
        use Allowance::*;
        assert_eq!(got, [Act, Act, Act, LimitReached, AlertOnly, AlertOnly]);
        // Another rule has its own budget.
        assert_eq!(budget.take("other", t0), Act);
        assert!(budget.resumes_in("r", t0).is_some());
        assert_eq!(budget.take("r", t0 + WINDOW), Act);
        assert_eq!(budget.resumes_in("r", t0 + WINDOW), None);
        // 0: no limit.
        let mut unlimited = ActionBudget::new(0);
        assert!((0..100).all(|_| unlimited.take("r", t0) == Act));
    }
}
