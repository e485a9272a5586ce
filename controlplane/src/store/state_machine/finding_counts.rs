//! The dashboard overview's counters, kept at apply so that it reads a
//! few keys rather than alerts (issue #26: 1,000,000 findings):
//! - `findings_hour.v1/<u64 be hour>` → u64, the stored alerts received
//!   in that UTC hour (`received_at_unix_nanos` / 3,600 s); only the
//!   [`HOURS_KEPT`] newest hours are kept: a batch that adds to an hour
//!   removes the buckets older than the newest hour less 47 (and does not
//!   create one);
//! - `findings_by.v1/<kind>/<name>` → u64, the stored alerts by rule id
//!   (`rule`), agent id (`agent`) and executable path (`exe`), each name
//!   cut to [`MAX_COUNT_NAME`] bytes (an empty one is not counted);
//! - `findings_top.v1/<kind>/<u64::MAX - count, be>/<name>` → empty, the
//!   same counters ordered by count (most first in key order), kept in the
//!   batch that changes the counter, so `top_counts` reads n keys whatever
//!   names sort first;
//! - `meta/finding_counts.v2` → u64 (1) once the counters and their index
//!   hold every stored alert: a store without it (written before they
//!   were kept, before the index (`.v1`), or a snapshot from such a node)
//!   counts its stored alerts once at open or install
//!   (`ensure_finding_counts`, logged).
//!
//! Invariant: every counter is the number of stored alerts it names,
//! incremented in the batch that stores an alert and decremented in the
//! batch retention removes it in (a counter at 0 is removed), so two nodes
//! that applied the same log hold the same counters, and snapshots and the
//! state digest carry them like every key.

use std::collections::BTreeMap;

use vigil_domain::{Severity, SignalKind};

use super::{decode, prefixed, ReadError, StateReader, ALERT_PREFIX};

const HOUR_PREFIX: &[u8] = b"findings_hour.v1/";
const BY_PREFIX: &[u8] = b"findings_by.v1/";
const TOP_PREFIX: &[u8] = b"findings_top.v1/";
const COUNTS_BUILT: &[u8] = b"meta/finding_counts.v2";
/// The marker of the build that kept the counters without their index.
const COUNTS_BUILT_V1: &[u8] = b"meta/finding_counts.v1";
const HOUR_NANOS: i64 = 3_600_000_000_000;
/// Hour buckets kept (the newest hour and the 47 before it).
pub const HOURS_KEPT: u64 = 48;
/// Counted names (executable paths above all) are cut to this many bytes.
pub const MAX_COUNT_NAME: usize = 256;
/// `findings_per_hour` returns at most this many buckets.
const HOURS_READ_AT_MOST: usize = 10_000;

/// What a count is kept by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountKind {
    Rule,
    Agent,
    Executable,
}

impl CountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CountKind::Rule => "rule",
            CountKind::Agent => "agent",
            CountKind::Executable => "exe",
        }
    }
}

fn kind_prefix(kind: CountKind) -> Vec<u8> {
    let mut k = prefixed(BY_PREFIX, kind.as_str().as_bytes());
    k.push(b'/');
    k
}

fn top_kind_prefix(kind: CountKind) -> Vec<u8> {
    let mut k = prefixed(TOP_PREFIX, kind.as_str().as_bytes());
    k.push(b'/');
    k
}

/// The index key of counter `by_key` (`findings_by.v1/<kind>/<name>`) at
/// `count`: `findings_top.v1/<kind>/<u64::MAX - count, be>/<name>`.
fn top_key(by_key: &[u8], count: u64) -> Option<Vec<u8>> {
    let rest = by_key.strip_prefix(BY_PREFIX)?;
    let slash = rest.iter().position(|b| *b == b'/')?;
    let (kind, name) = (&rest[..=slash], &rest[slash + 1..]);
    let mut k = Vec::with_capacity(TOP_PREFIX.len() + kind.len() + 9 + name.len());
    k.extend_from_slice(TOP_PREFIX);
    k.extend_from_slice(kind);
    k.extend_from_slice(&(u64::MAX - count).to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(name);
    Some(k)
}

fn hour_key(hour: u64) -> Vec<u8> {
    prefixed(HOUR_PREFIX, &hour.to_be_bytes())
}

fn hour_of_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        k.get(HOUR_PREFIX.len()..)?.try_into().ok()?,
    ))
}

/// The UTC hour (since the epoch) of `unix_nanos` (0 before the epoch).
pub fn hour_of(unix_nanos: i64) -> u64 {
    u64::try_from(unix_nanos.max(0) / HOUR_NANOS).unwrap_or(0)
}

/// The fields of a stored alert the counters (and retention) need; the
/// rest is skipped unparsed.
#[derive(serde::Deserialize)]
pub(super) struct CountedAlert {
    pub received_at_unix_nanos: i64,
    #[serde(default)]
    pub agent_id: String,
    pub finding: CountedFinding,
}

#[derive(serde::Deserialize)]
pub(super) struct CountedFinding {
    pub signal: SignalKind,
    pub severity: Severity,
    #[serde(default)]
    pub rule_id: String,
    #[serde(default)]
    pub process: CountedProcess,
}

#[derive(serde::Deserialize, Default)]
pub(super) struct CountedProcess {
    #[serde(default)]
    pub exe: String,
}

/// The counter changes of one command, written with its other keys.
#[derive(Default)]
pub(super) struct CountChanges {
    deltas: BTreeMap<Vec<u8>, i64>,
}

impl CountChanges {
    /// Counts one alert stored (`add`) or removed.
    pub fn count(&mut self, received_at: i64, agent_id: &str, rule: &str, exe: &str, add: bool) {
        let d = if add { 1 } else { -1 };
        *self
            .deltas
            .entry(hour_key(hour_of(received_at)))
            .or_default() += d;
        for (kind, name) in [
            (CountKind::Rule, rule),
            (CountKind::Agent, agent_id),
            (CountKind::Executable, exe),
        ] {
            if name.is_empty() {
                continue;
            }
            let mut k = kind_prefix(kind);
            k.extend_from_slice(vigil_domain::cut_text(name, MAX_COUNT_NAME).as_bytes());
            *self.deltas.entry(k).or_default() += d;
        }
    }

    /// Applies these changes (to the counters stored in `tree`) in
    /// `batch`.
    pub fn write(self, tree: &sled::Tree, batch: &mut sled::Batch) -> Result<(), sled::Error> {
        // The newest hour once these are stored: buckets before its
        // horizon go (only when an hour is added to).
        let mut horizon = None;
        let added_hour = self
            .deltas
            .iter()
            .filter(|(k, d)| **d > 0 && k.starts_with(HOUR_PREFIX))
            .filter_map(|(k, _)| hour_of_key(k))
            .max();
        if let Some(added) = added_hour {
            let stored = tree
                .scan_prefix(HOUR_PREFIX)
                .keys()
                .next_back()
                .transpose()?
                .and_then(|k| hour_of_key(&k))
                .unwrap_or(0);
            let h = added.max(stored).saturating_sub(HOURS_KEPT - 1);
            for k in tree.range(hour_key(0)..hour_key(h)).keys() {
                batch.remove(k?);
            }
            horizon = Some(h);
        }
        for (k, d) in self.deltas {
            if d == 0 {
                continue;
            }
            if let (Some(h), Some(hour)) = (horizon, hour_of_key(&k)) {
                if k.starts_with(HOUR_PREFIX) && hour < h {
                    continue;
                }
            }
            let stored = match tree.get(&k)? {
                Some(v) => serde_json::from_slice::<u64>(&v).unwrap_or(0),
                None => 0,
            };
            let new = u64::try_from(i128::from(stored) + i128::from(d))
                .ok()
                .filter(|n| *n > 0);
            // The count-ordered index follows the counter, in this batch.
            if k.starts_with(BY_PREFIX) {
                if stored > 0 {
                    if let Some(t) = top_key(&k, stored) {
                        batch.remove(t);
                    }
                }
                if let Some(t) = new.and_then(|n| top_key(&k, n)) {
                    batch.insert(t, Vec::new());
                }
            }
            match new {
                Some(n) => batch.insert(k, n.to_string().into_bytes()),
                None => batch.remove(k),
            }
        }
        Ok(())
    }
}

/// Counts the stored alerts once, for a store without the counters (see
/// the module's note), in one batch with the marker.
pub(super) fn ensure_finding_counts(tree: &sled::Tree) -> Result<(), ReadError> {
    if tree.get(COUNTS_BUILT)?.is_some() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let mut changes = CountChanges::default();
    let mut alerts = 0u64;
    for kv in tree.scan_prefix(ALERT_PREFIX) {
        let (k, v) = kv?;
        let a: CountedAlert = decode(&k, &v)?;
        changes.count(
            a.received_at_unix_nanos,
            &a.agent_id,
            &a.finding.rule_id,
            &a.finding.process.exe,
            true,
        );
        alerts += 1;
    }
    // Whatever counters a store may hold without the marker are replaced.
    let mut batch = sled::Batch::default();
    for prefix in [HOUR_PREFIX, BY_PREFIX, TOP_PREFIX] {
        for k in tree.scan_prefix(prefix).keys() {
            batch.remove(k?);
        }
    }
    for (k, v) in changes.writes_from_zero() {
        if let Some(t) = top_key(&k, v) {
            batch.insert(t, Vec::new());
        }
        batch.insert(k, v.to_string().into_bytes());
    }
    batch.remove(COUNTS_BUILT_V1);
    batch.insert(COUNTS_BUILT, b"1".to_vec());
    tree.apply_batch(batch)?;
    tracing::info!(
        alerts,
        ms = started.elapsed().as_millis() as u64,
        "counted the stored alerts once for the dashboard's counters (a store without them)"
    );
    Ok(())
}

impl CountChanges {
    /// The counters these changes make from none (the newest hours only).
    fn writes_from_zero(self) -> Vec<(Vec<u8>, u64)> {
        let newest = self
            .deltas
            .keys()
            .filter(|k| k.starts_with(HOUR_PREFIX))
            .filter_map(|k| hour_of_key(k))
            .max()
            .unwrap_or(0);
        let horizon = newest.saturating_sub(HOURS_KEPT - 1);
        self.deltas
            .into_iter()
            .filter(|(k, _)| !k.starts_with(HOUR_PREFIX) || hour_of_key(k).unwrap_or(0) >= horizon)
            .filter_map(|(k, d)| Some((k, u64::try_from(d).ok().filter(|n| *n > 0)?)))
            .collect()
    }
}

impl StateReader {
    /// (hour, stored alerts received in it) for each hour from
    /// `since_hour` (UTC hours since the epoch, [`hour_of`]) with any,
    /// oldest first; only the newest [`HOURS_KEPT`] hours are kept.
    pub fn findings_per_hour(&self, since_hour: u64) -> Result<Vec<(u64, u64)>, ReadError> {
        let raw: Vec<(sled::IVec, sled::IVec)> = {
            let _settled = self.between_entries();
            self.tree
                .range(hour_key(since_hour)..hour_key(u64::MAX))
                .take(HOURS_READ_AT_MOST)
                .collect::<Result<_, _>>()?
        };
        raw.iter()
            .filter_map(|(k, v)| Some((hour_of_key(k)?, v)))
            .map(|(h, v)| Ok((h, decode::<u64>(HOUR_PREFIX, v)?)))
            .collect()
    }

    /// The `n` names of `kind` with the most stored alerts, most first
    /// (ties by name): the first `n` keys of the count-ordered index
    /// (read without holding off applies: counts may be a few entries
    /// apart from one another).
    pub fn top_counts(&self, kind: CountKind, n: usize) -> Result<Vec<(String, u64)>, ReadError> {
        let prefix = top_kind_prefix(kind);
        let mut out = Vec::with_capacity(n.min(1024));
        for k in self.tree.scan_prefix(&prefix).keys().take(n) {
            let k = k?;
            let Some(rest) = k.get(prefix.len()..) else {
                continue;
            };
            let (Some(inv), Some(name)) = (rest.get(..8), rest.get(9..)) else {
                continue;
            };
            let count = u64::MAX - u64::from_be_bytes(inv.try_into().unwrap_or([0xff; 8]));
            out.push((String::from_utf8_lossy(name).into_owned(), count));
        }
        Ok(out)
    }
}
