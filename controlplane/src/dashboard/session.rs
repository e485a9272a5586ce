//! Node-local sessions and the failed-login limits.
//!
//! A session id is 256 random bits (the OS's generator), handed to the
//! browser once in the `vigil_session` cookie; the map keeps its sha256, so
//! neither a lookup's timing nor a dump of the map gives an id away. A new
//! id is made at every login: a cookie set before login is never the
//! session after it (no fixation). Each session has its own random CSRF
//! token.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

/// The cookie's name.
pub const COOKIE: &str = "vigil_session";

/// 32 random bytes, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn key_of(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    created: Instant,
    last_used: Instant,
    /// Live feeds this session has open.
    pub live: usize,
}

/// The sessions of this node.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    absolute: Duration,
    max: usize,
}

impl Sessions {
    pub fn new(idle: Duration, absolute: Duration, max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            idle,
            absolute,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) >= self.idle
            || now.duration_since(s.created) >= self.absolute
    }

    /// A new session for `user`: (id, csrf token).
    pub fn create(&self, user: &str) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= self.max {
            map.retain(|_, s| !self.expired(s, now));
        }
        if map.len() >= self.max {
            // Full of live sessions: the least recently used goes.
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key_of(&id),
            Session {
                user: user.to_string(),
                csrf: csrf.clone(),
                created: now,
                last_used: now,
                live: 0,
            },
        );
        (id, csrf)
    }

    /// The session `id` names, if it has not expired; using it renews its
    /// idle time when `touch`.
    pub fn get(&self, id: &str, touch: bool) -> Option<Session> {
        let now = Instant::now();
        let key = key_of(id);
        let mut map = self.lock();
        let s = map.get_mut(&key)?;
        if self.expired(s, now) {
            map.remove(&key);
            return None;
        }
        if touch {
            s.last_used = now;
        }
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(&key_of(id));
    }

    /// Counts a live feed against the session, unless it has `max` open.
    pub fn open_live(&self, id: &str, max: usize) -> bool {
        let mut map = self.lock();
        match map.get_mut(&key_of(id)) {
            Some(s) if s.live < max => {
                s.live += 1;
                true
            }
            _ => false,
        }
    }

    pub fn close_live(&self, id: &str) {
        if let Some(s) = self.lock().get_mut(&key_of(id)) {
            s.live = s.live.saturating_sub(1);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Failed logins in the last minute, per user name and per client
/// address; at most 10,000 keys of each (the oldest dropped past it).
pub struct LoginLimiter {
    per_minute: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_KEYS: usize = 10_000;

impl LoginLimiter {
    pub fn new(per_minute: usize) -> Self {
        Self {
            per_minute: per_minute.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, ip: IpAddr) -> [String; 2] {
        [format!("u:{user}"), format!("a:{ip}")]
    }

    /// Whether a login for `user` from `ip` may be tried now.
    pub fn allowed(&self, user: &str, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self::keys(user, ip).iter().all(|k| match map.get_mut(k) {
            None => true,
            Some(times) => {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    times.pop_front();
                }
                times.len() < self.per_minute
            }
        })
    }

    pub fn failed(&self, user: &str, ip: IpAddr) {
        let now = Instant::now();
        let mut map = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_KEYS {
            map.retain(|_, t| t.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        for k in Self::keys(user, ip) {
            if map.len() >= MAX_KEYS && !map.contains_key(&k) {
                continue;
            }
            let times = map.entry(k).or_default();
            times.push_back(now);
            while times.len() > self.per_minute {
                times.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_absolutely() {
        let s = Sessions::new(Duration::from_millis(50), Duration::from_millis(120), 10);
        let (id, csrf) = s.create("ana");
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        assert_eq!(s.get(&id, true).unwrap().user, "ana");
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&id, true).is_none(), "idle expiry");
        let (id, _) = s.create("ana");
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(30));
            let _ = s.get(&id, true);
        }
        assert!(s.get(&id, true).is_none(), "absolute expiry");
        assert!(s.get("00", true).is_none());
    }

    #[test]
    fn the_session_map_is_bounded() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60), 3);
        let ids: Vec<_> = (0..5).map(|i| s.create(&format!("u{i}")).0).collect();
        assert_eq!(s.len(), 3);
        assert!(s.get(&ids[4], false).is_some());
        assert!(s.get(&ids[0], false).is_none());
    }

    #[test]
    fn failed_logins_are_limited_per_user_and_per_address() {
        let l = LoginLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.allowed("ana", a));
            l.failed("ana", a);
        }
        assert!(!l.allowed("ana", a));
        assert!(!l.allowed("ana", b), "per user, from anywhere");
        assert!(!l.allowed("bob", a), "per address, any user");
        assert!(l.allowed("bob", b));
    }
}
