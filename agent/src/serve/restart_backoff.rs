//! How long a sidecar waits before it is started again after it died:
//! 250 ms, doubling each time up to 30 s; a sidecar that stayed healthy
//! for a minute starts over at 250 ms.

use std::time::{Duration, Instant};

pub const FIRST_DELAY: Duration = Duration::from_millis(250);
pub const MAX_DELAY: Duration = Duration::from_secs(30);
/// Healthy this long, and the next death waits `FIRST_DELAY` again.
pub const RESET_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct RestartBackoff {
    first: Duration,
    max: Duration,
    reset_after: Duration,
    /// The delay the next death gets.
    next: Duration,
    /// Since when the sidecar has been healthy without a death.
    healthy_since: Option<Instant>,
}

impl Default for RestartBackoff {
    fn default() -> Self {
        Self::new(FIRST_DELAY, MAX_DELAY, RESET_AFTER)
    }
}

impl RestartBackoff {
    pub fn new(first: Duration, max: Duration, reset_after: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            reset_after,
            next: first,
            healthy_since: None,
        }
    }

    /// A health check passed at `now`.
    pub fn healthy(&mut self, now: Instant) {
        let since = *self.healthy_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.reset_after {
            self.next = self.first;
        }
    }

    /// The sidecar died (or was restarted) at `now`: how long to wait
    /// before starting it again.
    pub fn died(&mut self, now: Instant) -> Duration {
        self.healthy(now);
        self.healthy_since = None;
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// The delay the next death would get.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_250_ms_to_30_s() {
        let mut b = RestartBackoff::default();
        let t = Instant::now();
        let delays: Vec<u64> = (0..10).map(|_| b.died(t).as_millis() as u64).collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
    }

    #[test]
    fn a_minute_healthy_starts_over_and_less_does_not() {
        let mut b = RestartBackoff::default();
        let t0 = Instant::now();
        for _ in 0..4 {
            b.died(t0);
        }
        assert_eq!(b.peek(), Duration::from_secs(4));
        // Healthy for 59 s: still growing.
        b.healthy(t0 + Duration::from_secs(1));
        b.healthy(t0 + Duration::from_secs(60));
        assert_eq!(b.died(t0 + Duration::from_secs(60)), Duration::from_secs(4));
        // Healthy from 61 s to 121 s: back to the first delay.
        b.healthy(t0 + Duration::from_secs(61));
        b.healthy(t0 + Duration::from_secs(121));
        assert_eq!(b.died(t0 + Duration::from_secs(122)), FIRST_DELAY);
        assert_eq!(b.peek(), FIRST_DELAY * 2);
    }

    #[test]
    fn a_death_counts_its_health_up_to_then() {
        let mut b = RestartBackoff::new(
            Duration::from_millis(10),
            Duration::from_millis(40),
            Duration::from_secs(5),
        );
        let t = Instant::now();
        b.died(t);
        b.died(t);
        b.healthy(t);
        // The death itself comes after 5 s of health: it starts over.
        assert_eq!(
            b.died(t + Duration::from_secs(5)),
            Duration::from_millis(10)
        );
    }
}
