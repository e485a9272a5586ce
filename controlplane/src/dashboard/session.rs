//! Node-local sessions and the failed-login limits.
//!
//! A session id is 256 random bits (the OS's generator), handed to the
//! browser once in the `vigil_session` cookie (`__Host-vigil_session`
//! over TLS: only this origin, over HTTPS, may set it); the map keeps its sha256, so
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

/// The cookie's name over plaintext (loopback).
pub const COOKIE: &str = "vigil_session";
/// The cookie's name over TLS: the `__Host-` prefix makes the browser
/// take it only with `Secure`, `Path=/` and no `Domain`, so neither a
/// sibling subdomain nor a plaintext page can plant or shadow it.
pub const TLS_COOKIE: &str = "__Host-vigil_session";

/// The session cookie's name on a listener with or without TLS.
pub fn cookie_name(tls: bool) -> &'static str {
    if tls {
        TLS_COOKIE
    } else {
        COOKIE
    }
}

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

/// Failed logins in the last minute, per (user name, client address),
/// per client address and per user name, each with its own budget (an
/// IPv6 address counts by its /64: one host holds a whole /64). The
/// name's budget is larger than what one address may spend on it, so one
/// address guessing at a name locks out only itself, not the name's
/// owner elsewhere. At most 10,000 keys, past which the key whose last failure is the oldest
/// goes (a key is never left uncounted). An attempt counts as a failure
/// from the moment it is let through ([`LoginLimiter::attempt`]) until it
/// succeeds ([`LoginLimiter::succeeded`]), so guesses sent at once cannot
/// all pass the check before the first of them fails.
pub struct LoginLimiter {
    per_pair: usize,
    per_address: usize,
    per_name: usize,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_KEYS: usize = 10_000;

/// A client address as the limits count it: an IPv4 address (a
/// v4-mapped IPv6 one as its IPv4), or an IPv6 address's /64.
pub fn client_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl LoginLimiter {
    /// `per_pair` failures a minute for one name from one address,
    /// `per_address` from one address, `per_name` for one name.
    pub fn new(per_pair: usize, per_address: usize, per_name: usize) -> Self {
        Self {
            per_pair: per_pair.max(1),
            per_address: per_address.max(1),
            per_name: per_name.max(1),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// The keys an attempt counts against, each with its budget. A name
    /// is at most 255 bytes and never holds a NUL (JSON could carry one,
    /// so the pair key is length-prefixed instead).
    fn keys(&self, user: &str, ip: IpAddr) -> [(String, usize); 3] {
        let address = client_key(ip);
        [
            (format!("p:{}:{user}:{address}", user.len()), self.per_pair),
            (format!("a:{address}"), self.per_address),
            (format!("u:{user}"), self.per_name),
        ]
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
        let keys = self.keys(user, ip);
        let mut map = self.lock();
        for (k, budget) in &keys {
            if let Some(times) = map.get_mut(k) {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    times.pop_front();
                }
                if times.len() >= *budget {
                    return false;
                }
            }
        }
        for (k, _) in keys {
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
        for (k, _) in self.keys(user, ip) {
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
        let l = LoginLimiter::new(3, 3, 6);
        for i in 0..(MAX_KEYS as u32 / 3) {
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
        assert_eq!(let_through, 6, "guesses at admin past a full map");
    }

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        // Attack: one host holds a /64 and so 2^64 addresses, each with
        // its own five guesses.
        let l = LoginLimiter::new(3, 4, 100);
        let mut let_through = 0;
        for i in 1..=20u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]);
            if l.attempt("ana", ip) {
                let_through += 1;
            }
        }
        assert_eq!(let_through, 3, "one name from one /64");
        for i in 1..=20u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 1, i]);
            if l.attempt(&format!("user{i}"), ip) {
                let_through += 1;
            }
        }
        assert_eq!(let_through, 4, "any names from one /64");
        let other: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert!(l.attempt("ana", other), "the next /64 is another address");
        let mapped: IpAddr = "::ffff:10.0.0.9".parse().unwrap();
        let v4: IpAddr = "10.0.0.9".parse().unwrap();
        for n in 0..4 {
            assert!(l.attempt(&format!("x{n}"), mapped));
        }
        assert!(!l.attempt("y", v4), "a v4-mapped address is the v4 one");
    }

    #[test]
    fn a_success_is_not_counted_as_a_failure() {
        let l = LoginLimiter::new(2, 2, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..5 {
            assert!(l.attempt("ana", a));
            l.succeeded("ana", a);
        }
    }

    #[test]
    fn failed_logins_are_limited_per_name_and_address_per_address_and_per_name() {
        let l = LoginLimiter::new(3, 5, 6);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        for _ in 0..3 {
            assert!(l.attempt("ana", a));
        }
        assert!(!l.attempt("ana", a), "per name and address");
        // Another address may still try the name...
        for _ in 0..3 {
            assert!(l.attempt("ana", b));
        }
        // ...until the name's own budget is spent, from anywhere.
        assert!(!l.attempt("ana", c), "per name, from all addresses");
        // The first address may try other names, up to its own budget.
        assert!(l.attempt("bob", a));
        assert!(l.attempt("cy", a));
        assert!(!l.attempt("dee", a), "per address, any name");
        assert!(l.attempt("dee", c));
    }

    #[test]
    fn one_address_guessing_at_a_name_does_not_lock_it_for_everyone() {
        // Attack: with failures counted per name, one address sending
        // five wrong passwords a minute for admin kept the real admin
        // from logging in from anywhere.
        let d = crate::dashboard::DashboardSettings::default();
        let l = LoginLimiter::new(
            d.failed_logins_per_minute,
            d.failed_logins_per_address_per_minute,
            d.failed_logins_per_name_per_minute,
        );
        let attacker: IpAddr = "203.0.113.9".parse().unwrap();
        let through = (0..1000).filter(|_| l.attempt("admin", attacker)).count();
        assert_eq!(through, d.failed_logins_per_minute);
        let admin: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(l.attempt("admin", admin), "the admin's own address");
        l.succeeded("admin", admin);
        // Many addresses together still meet the name's budget.
        let mut spent = through;
        for i in 0..1000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xc633_6400 + i));
            if l.attempt("admin", ip) {
                spent += 1;
            }
        }
        assert_eq!(spent, d.failed_logins_per_name_per_minute);
    }
}
