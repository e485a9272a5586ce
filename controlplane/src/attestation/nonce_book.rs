//! The nonces the verifier issued: each is 32 random bytes, for one agent,
//! redeemable once and only until it expires. A redeemed or expired nonce
//! is remembered a while longer, so that a replay is refused as a replay
//! (not as "unknown"), and so is a nonce presented by another agent.
//!
//! Architecture invariant: a nonce is redeemed at most once, by the agent
//! it was issued to, before its deadline; the book is bounded (the oldest
//! entries go first), so no agent can make it grow without limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};

pub const NONCE_LEN: usize = 32;

/// Why a nonce is not redeemable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NonceError {
    #[error("nonce was already used by a quote {ago:?} ago (a replayed quote)")]
    Replayed { ago: Duration },
    #[error("nonce was issued to agent {owner:?}, not to this agent")]
    OtherAgent { owner: String },
    #[error("nonce expired {ago:?} ago (answers must come within {ttl:?})")]
    Expired { ago: Duration, ttl: Duration },
    #[error("nonce was never issued by this verifier (or is long forgotten)")]
    Unknown,
    #[error("the system random generator failed")]
    Random,
}

impl NonceError {
    pub fn code(&self) -> &'static str {
        match self {
            NonceError::Replayed { .. } => "nonce-replayed",
            NonceError::OtherAgent { .. } => "nonce-other-agent",
            NonceError::Expired { .. } => "nonce-expired",
            NonceError::Unknown => "nonce-unknown",
            NonceError::Random => "internal",
        }
    }
}

#[derive(Debug)]
struct Issued {
    agent_id: String,
    issued_at: Instant,
    redeemed_at: Option<Instant>,
}

pub struct NonceBook {
    ttl: Duration,
    /// How long a nonce is remembered after it was issued.
    memory: Duration,
    capacity: usize,
    rng: SystemRandom,
    state: Mutex<BookState>,
}

#[derive(Default)]
struct BookState {
    entries: HashMap<[u8; NONCE_LEN], Issued>,
    /// Issue order, for forgetting the oldest.
    order: VecDeque<[u8; NONCE_LEN]>,
}

impl NonceBook {
    /// Nonces redeemable for `ttl`, remembered for `memory` (≥ ttl), at
    /// most `capacity` at a time.
    pub fn new(ttl: Duration, memory: Duration, capacity: usize) -> NonceBook {
        NonceBook {
            ttl,
            memory: memory.max(ttl),
            capacity: capacity.max(1),
            rng: SystemRandom::new(),
            state: Mutex::default(),
        }
    }

    /// A fresh nonce for `agent_id`.
    pub fn issue(&self, agent_id: &str) -> Result<[u8; NONCE_LEN], NonceError> {
        self.issue_at(agent_id, Instant::now())
    }

    fn issue_at(&self, agent_id: &str, now: Instant) -> Result<[u8; NONCE_LEN], NonceError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| NonceError::Random)?;
        let mut state = self.lock();
        state.forget_before(now.checked_sub(self.memory));
        while state.entries.len() >= self.capacity {
            let Some(oldest) = state.order.pop_front() else {
                break;
            };
            state.entries.remove(&oldest);
        }
        state.entries.insert(
            nonce,
            Issued {
                agent_id: agent_id.to_string(),
                issued_at: now,
                redeemed_at: None,
            },
        );
        state.order.push_back(nonce);
        Ok(nonce)
    }

    /// Redeems `nonce` for `agent_id`: once, before it expires.
    pub fn redeem(&self, agent_id: &str, nonce: &[u8]) -> Result<(), NonceError> {
        self.redeem_at(agent_id, nonce, Instant::now())
    }

    fn redeem_at(&self, agent_id: &str, nonce: &[u8], now: Instant) -> Result<(), NonceError> {
        let key: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| NonceError::Unknown)?;
        let mut state = self.lock();
        let entry = state.entries.get_mut(&key).ok_or(NonceError::Unknown)?;
        if entry.agent_id != agent_id {
            return Err(NonceError::OtherAgent {
                owner: entry.agent_id.clone(),
            });
        }
        if let Some(at) = entry.redeemed_at {
            return Err(NonceError::Replayed {
                ago: now.saturating_duration_since(at),
            });
        }
        let age = now.saturating_duration_since(entry.issued_at);
        if age > self.ttl {
            return Err(NonceError::Expired {
                ago: age - self.ttl,
                ttl: self.ttl,
            });
        }
        entry.redeemed_at = Some(now);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BookState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl BookState {
    fn forget_before(&mut self, cutoff: Option<Instant>) {
        let Some(cutoff) = cutoff else { return };
        while let Some(oldest) = self.order.front() {
            match self.entries.get(oldest) {
                Some(e) if e.issued_at >= cutoff => break,
                _ => {
                    if let Some(k) = self.order.pop_front() {
                        self.entries.remove(&k);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> NonceBook {
        NonceBook::new(Duration::from_secs(10), Duration::from_secs(60), 100)
    }

    #[test]
    fn a_nonce_is_redeemed_once_by_its_agent_before_it_expires() {
        let b = book();
        let t0 = Instant::now();
        let n = b.issue_at("a", t0).unwrap();
        assert_ne!(n, b.issue_at("a", t0).unwrap(), "fresh every time");
        assert!(matches!(
            b.redeem_at("b", &n, t0),
            Err(NonceError::OtherAgent { owner }) if owner == "a"
        ));
        b.redeem_at("a", &n, t0 + Duration::from_secs(1)).unwrap();
        let again = b
            .redeem_at("a", &n, t0 + Duration::from_secs(2))
            .unwrap_err();
        assert_eq!(again.code(), "nonce-replayed");
        let late = b.issue_at("a", t0).unwrap();
        assert_eq!(
            b.redeem_at("a", &late, t0 + Duration::from_secs(11))
                .unwrap_err()
                .code(),
            "nonce-expired"
        );
        assert_eq!(
            b.redeem_at("a", &[7u8; NONCE_LEN], t0).unwrap_err(),
            NonceError::Unknown
        );
        assert_eq!(
            b.redeem_at("a", b"short", t0).unwrap_err(),
            NonceError::Unknown
        );
    }

    #[test]
    fn the_book_forgets_old_nonces_and_stays_bounded() {
        let b = NonceBook::new(Duration::from_secs(1), Duration::from_secs(5), 3);
        let t0 = Instant::now();
        let first = b.issue_at("a", t0).unwrap();
        for _ in 0..10 {
            b.issue_at("a", t0 + Duration::from_millis(1)).unwrap();
        }
        assert!(b.lock().entries.len() <= 3);
        assert_eq!(
            b.redeem_at("a", &first, t0).unwrap_err(),
            NonceError::Unknown
        );
        let n = b.issue_at("a", t0).unwrap();
        b.issue_at("a", t0 + Duration::from_secs(6)).unwrap();
        assert_eq!(
            b.redeem_at("a", &n, t0 + Duration::from_secs(6))
                .unwrap_err(),
            NonceError::Unknown,
            "forgotten after its memory"
        );
    }
}
