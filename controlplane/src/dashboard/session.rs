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
    /// The sha256 of the user's password hash at login: a session ends
    /// when the password changes, or when the user is removed and one of
    /// the same name made (a new hash, a new salt).
    credential: [u8; 32],
    created: Instant,
    last_used: Instant,
    /// Live feeds this session has open.
    pub live: usize,
}

impl Session {
    /// Whether the session was made with `password_hash` (the user's
    /// password has not changed since).
    pub fn holds(&self, password_hash: &str) -> bool {
        self.credential == key_of(password_hash)
    }
}

/// The sessions of this node.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    absolute: Duration,
    max: usize,
    per_user: usize,
}

impl Sessions {
    /// At most `max` sessions, `per_user` of them one user's (a user
    /// logging in again and again pushes out only its own oldest).
    pub fn new(idle: Duration, absolute: Duration, max: usize, per_user: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            idle,
            absolute,
            max: max.max(1),
            per_user: per_user.max(1),
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

    /// A new session for `user`, who logged in with the password that
    /// `password_hash` is of: (id, csrf token).
    pub fn create(&self, user: &str, password_hash: &str) -> (String, String) {
        let id = random_token();
        let csrf = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        let mut mine: Vec<([u8; 32], Instant)> = map
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, s)| (*k, s.last_used))
            .collect();
        if mine.len() >= self.per_user {
            // This user's least recently used go, never another's.
            mine.sort_by_key(|(_, used)| *used);
            for (k, _) in &mine[..=mine.len() - self.per_user] {
                map.remove(k);
            }
        }
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
                credential: key_of(password_hash),
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
/// address (an IPv6 address by its /64: one host holds a whole /64); at
/// most 10,000 keys, past which the key whose last failure is the oldest
/// goes (a key is never left uncounted). An attempt counts as a failure
/// from the moment it is let through ([`LoginLimiter::attempt`]) until it
/// succeeds ([`LoginLimiter::succeeded`]), so guesses sent at once cannot
/// all pass the check before the first of them fails.
pub struct LoginLimiter {
    per_minute: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_KEYS: usize = 10_000;

/// The limiter's key for a client address.
fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("a:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("a:{v4}"),
            None => {
                let s = v6.segments();
                format!("a:{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl LoginLimiter {
    pub fn new(per_minute: usize) -> Self {
        Self {
            per_minute: per_minute.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, ip: IpAddr) -> [String; 2] {
        [format!("u:{user}"), address_key(ip)]
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a login for `user` from `ip` may be tried now; if so, it is
    /// counted as a failure already (call [`Self::succeeded`] when the
    /// password was right).
    pub fn attempt(&self, user: &str, ip: IpAddr) -> bool {
        let now = Instant::now();
        let keys = Self::keys(user, ip);
        let mut map = self.lock();
        for k in &keys {
            if let Some(times) = map.get_mut(k) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    times.pop_front();
                }
                if times.len() >= self.per_minute {
                    return false;
                }
            }
        }
        for k in keys {
            if !map.contains_key(&k) && map.len() >= MAX_KEYS {
                Self::make_room(&mut map, now);
            }
            map.entry(k).or_default().push_back(now);
        }
        true
    }

    /// The attempt let through last for `user` from `ip` was right: it is
    /// no failure.
    pub fn succeeded(&self, user: &str, ip: IpAddr) {
        let mut map = self.lock();
        for k in Self::keys(user, ip) {
            if let Some(times) = map.get_mut(&k) {
                times.pop_back();
                if times.is_empty() {
                    map.remove(&k);
                }
            }
        }
    }

    /// Drops the keys without a failure in the window, or else the one
    /// whose last failure is the oldest.
    fn make_room(map: &mut HashMap<String, VecDeque<Instant>>, now: Instant) {
        map.retain(|_, t| t.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        if map.len() >= MAX_KEYS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, t)| t.back().copied())
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_absolutely() {
        let s = Sessions::new(
            Duration::from_millis(50),
            Duration::from_millis(120),
            10,
            10,
        );
        let (id, csrf) = s.create("ana", "h");
        assert_eq!(id.len(), 64);
        assert_ne!(id, csrf);
        assert_eq!(s.get(&id, true).unwrap().user, "ana");
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&id, true).is_none(), "idle expiry");
        let (id, _) = s.create("ana", "h");
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(30));
            let _ = s.get(&id, true);
        }
        assert!(s.get(&id, true).is_none(), "absolute expiry");
        assert!(s.get("00", true).is_none());
    }

    #[test]
    fn the_session_map_is_bounded() {
        let s = Sessions::new(Duration::from_secs(60), Duration::from_secs(60), 3, 3);
        let ids: Vec<_> = (0..5).map(|i| s.create(&format!("u{i}"), "h").0).collect();
        assert_eq!(s.len(), 3);
        assert!(s.get(&ids[4], false).is_some());
        assert!(s.get(&ids[0], false).is_none());
    }

    #[test]
    fn a_full_failure_map_still_counts_each_guess_at_a_user() {
        // Attack: fill the map with 10,000 other keys (names and
        // addresses), after which a failure for a new key was not
        // recorded at all: unlimited guesses at the admin.
        let l = LoginLimiter::new(3);
        for i in 0..(MAX_KEYS as u32 / 2) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.attempt(&format!("filler{i}"), ip));
        }
        let mut let_through = 0;
        for i in 0..20u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            if l.attempt("admin", ip) {
                let_through += 1;
            }
        }
        assert_eq!(let_through, 3, "guesses at admin past a full map");
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        // Attack: one host holds a /64 and so 2^64 addresses, each with
        // its own five guesses.
        let l = LoginLimiter::new(3);
        let mut let_through = 0;
        for i in 1..=20u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]);
            if l.attempt(&format!("user{i}"), ip) {
                let_through += 1;
            }
        }
        assert_eq!(let_through, 3);
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        let v4: IpAddr = "10.0.0.9".parse().unwrap();
        for _ in 0..3 {
            let _ = l.attempt("x", mapped);
        }
        assert!(!l.attempt("y", v4), "a v4-mapped address is the v4 one");
    }

    #[test]
    fn a_success_is_not_counted_as_a_failure() {
        let l = LoginLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert!(l.attempt("ana", a));
            l.succeeded("ana", a);
        }
    }

    #[test]
    fn failed_logins_are_limited_per_user_and_per_address() {
        let l = LoginLimiter::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(l.attempt("ana", a));
        }
        assert!(!l.attempt("ana", a));
        assert!(!l.attempt("ana", b), "per user, from anywhere");
        assert!(!l.attempt("bob", a), "per address, any user");
        assert!(l.attempt("bob", b));
    }
}
