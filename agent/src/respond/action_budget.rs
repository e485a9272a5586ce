//! How many actions each rule may take on one user's processes per window
//! (a minute unless configured). A rule that matches a flood of processes
//! (a bad bundle, or a user provoking it on purpose to make the agent kill
//! or freeze en masse) stops acting on that user's processes for the rest
//! of the window, and says so once; what it would have done is queued
//! (`ActionQueue`) and done when the window refills.
//!
//! The budget is per (rule, uid): decoys started by one user spend that
//! user's budget only, never another user's offender's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The default window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Whether a rule may act now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    Act,
    /// This is the first action over the limit in this window: report it.
    LimitReached,
    /// Over the limit, already reported.
    OverLimit,
}

/// What a budget is counted for: a rule's actions on one uid's processes.
type BudgetKey = (String, u32);

pub struct ActionBudget {
    per_window: u32,
    window: Duration,
    /// Per (rule, uid): when its window began, and how many actions it
    /// asked for.
    spent: HashMap<BudgetKey, (Instant, u32)>,
}

impl ActionBudget {
    /// At most `per_window` actions per rule and uid per `window` (0: no
    /// limit).
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window: window.max(Duration::from_millis(1)),
            spent: HashMap::new(),
        }
    }

    pub fn per_window(&self) -> u32 {
        self.per_window
    }

    /// The window, in words ("a minute", "5 s").
    pub fn window_text(&self) -> String {
        if self.window == WINDOW {
            "a minute".into()
        } else {
            format!("per {} s", self.window.as_secs_f64())
        }
    }

    /// Counts one action of `rule` on a process of `uid` at `now`.
    pub fn take(&mut self, rule: &str, uid: u32, now: Instant) -> Allowance {
        if self.per_window == 0 {
            return Allowance::Act;
        }
        let limit = self.per_window + 1;
        let entry = self.entry(rule, uid, now);
        entry.1 = entry.1.saturating_add(1);
        match entry.1.cmp(&limit) {
            std::cmp::Ordering::Less => Allowance::Act,
            std::cmp::Ordering::Equal => Allowance::LimitReached,
            std::cmp::Ordering::Greater => Allowance::OverLimit,
        }
    }

    /// Takes one action from the budget of (`rule`, `uid`) if some is left
    /// at `now` (a queued action's retry: nothing is counted when none is).
    pub fn try_take(&mut self, rule: &str, uid: u32, now: Instant) -> bool {
        if self.per_window == 0 {
            return true;
        }
        let per_window = self.per_window;
        let entry = self.entry(rule, uid, now);
        if entry.1 >= per_window {
            return false;
        }
        entry.1 += 1;
        true
    }

    /// When (`rule`, `uid`) may act again (None: it may now).
    pub fn resumes_in(&self, rule: &str, uid: u32, now: Instant) -> Option<Duration> {
        let (since, count) = self.spent.get(&(rule.to_string(), uid))?;
        let elapsed = now.duration_since(*since);
        (*count >= self.per_window && self.per_window > 0 && elapsed < self.window)
            .then(|| self.window - elapsed)
    }

    /// The window of (`rule`, `uid`) at `now`, begun anew if the last one
    /// is over.
    fn entry(&mut self, rule: &str, uid: u32, now: Instant) -> &mut (Instant, u32) {
        // Rules come from the signed bundle and uids are few, but windows
        // long over are dropped so the map stays small.
        if self.spent.len() > 4096 {
            let window = self.window;
            self.spent
                .retain(|_, (since, _)| now.duration_since(*since) < window);
        }
        let entry = self
            .spent
            .entry((rule.to_string(), uid))
            .or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_over_its_limit_is_reported_once_then_over_limit_until_the_window_ends() {
        let mut budget = ActionBudget::new(3, WINDOW);
        let t0 = Instant::now();
        let got: Vec<Allowance> = (0..6).map(|_| budget.take("r", 1000, t0)).collect();
        use Allowance::*;
        assert_eq!(got, [Act, Act, Act, LimitReached, OverLimit, OverLimit]);
        // Another rule has its own budget.
        assert_eq!(budget.take("other", 1000, t0), Act);
        assert!(budget.resumes_in("r", 1000, t0).is_some());
        assert_eq!(budget.take("r", 1000, t0 + WINDOW), Act);
        assert_eq!(budget.resumes_in("r", 1000, t0 + WINDOW), None);
        // 0: no limit.
        let mut unlimited = ActionBudget::new(0, WINDOW);
        assert!((0..100).all(|_| unlimited.take("r", 1000, t0) == Act));
    }

    #[test]
    fn one_users_decoys_spend_only_that_users_budget() {
        let mut budget = ActionBudget::new(2, WINDOW);
        let t0 = Instant::now();
        for _ in 0..20 {
            budget.take("r", 1000, t0);
        }
        assert_eq!(budget.take("r", 1001, t0), Allowance::Act);
        assert_eq!(budget.take("r", 0, t0), Allowance::Act);
        assert!(!budget.try_take("r", 1000, t0));
        assert!(budget.resumes_in("r", 1001, t0).is_none());
    }

    #[test]
    fn a_retry_takes_from_the_refilled_window_only() {
        let window = Duration::from_secs(5);
        let mut budget = ActionBudget::new(2, window);
        let t0 = Instant::now();
        assert_eq!(budget.take("r", 7, t0), Allowance::Act);
        assert_eq!(budget.take("r", 7, t0), Allowance::Act);
        assert!(!budget.try_take("r", 7, t0));
        assert_eq!(budget.resumes_in("r", 7, t0), Some(window));
        let later = t0 + window;
        assert!(budget.try_take("r", 7, later));
        assert!(budget.try_take("r", 7, later));
        assert!(!budget.try_take("r", 7, later));
        assert_eq!(budget.window_text(), "per 5 s");
        assert_eq!(ActionBudget::new(1, WINDOW).window_text(), "a minute");
    }
}
