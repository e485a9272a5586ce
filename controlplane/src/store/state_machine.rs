//! The replicated state on sled: agents, alerts, audit, policy bundles and
//! approved workloads, in tree `sm.v1` under versioned keys; the current
//! snapshot in tree `sm.v1.snapshot`. (The raft log itself is in trees
//! `raft.v1.log` and `raft.v1.meta` of the same database: `log_store.rs`.)
//!
//! Key layout of `sm.v1` (values JSON unless said otherwise):
//! - `meta/last_applied` → `Option<LogId>` of the last applied entry
//! - `meta/membership` → `StoredMembership`
//! - `meta/next_alert` → u64, the index the next alert gets
//! - `meta/active_policy` → u64, the active policy version
//! - `meta/cluster_id` → String, the cluster's id (set once)
//! - `meta/batch_progress` → (log index, commands applied) while a
//!   `batch.v1` entry is applied
//! - `meta/audit_head` → (u64 index, hex hash) of the newest audit entry
//! - `meta/alert_tally` → `AlertTally`, alerts stored by signal and severity
//!   (kept at apply; counted from `alert/` once when a store lacks it)
//! - `meta/pruned_tally` → `AlertTally`, alerts retention removed
//! - `alert/<u64 be index>` → Alert
//! - `agent/<agent id>` → AgentRecord
//! - `policy/<u64 be version>` → signed bundle bytes (raw, not JSON)
//! - `policy_meta/<u64 be version>` → PolicyMeta
//! - `workload/<workload id>` → WorkloadApproval
//! - `audit/<u64 be index>` → AuditEntry (hash-chained, see `audit_chain.rs`)
//! - `revoked_cert/<serial, lower-case hex>` → RevokedCertificate
//! - `join_token/<token id>` → TokenRecord (the secret's digest, expiry, use)
//! - `superseded_cert/<serial>` → Supersession (a renewal or re-enrollment)
//! - `current_cert/<agent id>` → serial of the agent's current certificate
//! - `last_renewal/<agent id>` → i64 unix nanos of its last renewal
//! - `inventory/<kind>/<key>` → InventoryItem, folded from each alert as it
//!   is stored (`vigil_domain::sightings`); at most `MAX_INVENTORY_ITEMS`
//! - `meta/inventory_items` → u64, items stored; `meta/inventory_refused`
//!   → u64, sightings of new items refused because the inventory (or the
//!   agent's share of it) was full
//! - `ek_binding/<EK sha256 hex>` → String, the agent id bound to that TPM
//!   (set by `record_tpm_enrollment.v1`, removed by `reset_attestation.v1`)
//! - `inventory_by_agent/<agent id>` → u64, items that agent's findings
//!   created (at most `MAX_INVENTORY_ITEMS_PER_AGENT`)
//! - `model/<name>/<u64 be version>` → ModelRecord (a name has no `/`);
//!   the model's bytes are not here but in the node's model store
//!   (`model_blobs.rs`), by digest
//! - `model_pin/<name>` → u64, the version a rollback pinned
//! - `triage/<u64 be index>` → AlertTriage (only while `alert/<index>` is
//!   stored); `meta/triage_tally` → TriageTally, acknowledged alerts and
//!   resolved ones by severity (`state_machine/triage.rs`)
//! - `findings_hour.v1/<u64 be hour>` → u64, stored alerts received in
//!   that UTC hour (the newest 48 hours); `findings_by.v1/<rule|agent|exe>/
//!   <name, at most 256 bytes>` → u64, stored alerts by rule, agent and
//!   executable; `findings_top.v1/<kind>/<u64::MAX - count, be>/<name>`
//!   → empty, the same counters ordered by count; `meta/finding_counts.v2`
//!   once they count every stored alert (`state_machine/finding_counts.rs`)
//! - `user/<name>` → UserRecord (an argon2id hash, never a password;
//!   `state_machine/users.rs`)
//! - `event/<u64 be seq>` → [`JournalRecord`]: the SIEM export's one
//!   sequence of every kind (an alert or an audit entry stored, by
//!   reference, with what its filters read), dense from 1 in apply order
//! - `meta/next_event` → u64, the seq the next event gets;
//!   `meta/first_event` → u64, the oldest seq kept (retention removes a
//!   prefix of the journal with the alerts it removes)
//!
//! - `meta/installing` → SnapshotMeta, while a snapshot is installed
//!   (`snapshot_file.rs`)
//!
//! Key layout of `sm.v1.snapshot`: `meta` → SnapshotMeta, `file` → the
//! name of the current snapshot's file in the snapshot directory
//! (`snapshot_file.rs`: length-prefixed key/value pairs of `sm.v1`).
//!
//! Architecture invariant: `apply` does not fsync. Every entry it applies
//! was flushed in the raft log (same sled store) before it could commit,
//! and sled recovers a prefix of its writes, so after a crash this tree is
//! at or behind the log and openraft re-applies the gap; a log purge
//! flushes before entries leave the log. Journal seqs (`event/`) are dense
//! from 1 too: each stored alert and audit entry gets the next one, in the
//! order the apply stores them, and retention removes only a prefix (up to
//! the last alert it removed), so `event/` is always one run of
//! consecutive seqs from `meta/first_event` to `meta/next_event` - 1.
//! Alert indexes are dense and start at 1, except that
//! retention (`prune_alerts.v1`) removes the oldest: the stored alerts are
//! always one run of consecutive indexes ending at `meta/next_alert` - 1.

// openraft's storage traits fix the error type (StorageError, ~224 bytes).
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{AnyError, BasicNode, Entry, EntryPayload, OptionalSend, StorageIOError};
use tokio::sync::watch;
use vigil_domain::{
    AgentIdentity, AgentRecord, Alert, EventKind, EventRecord, InventoryItem, InventoryKind,
    Severity, SiemEvent, SiemFilter, SignalKind,
};

use crate::raft_types::{
    Command, CommandResult, LogId, NodeId, StorageError, StoredMembership, TypeConfig,
};
mod finding_counts;
mod triage;
mod users;
pub use finding_counts::{hour_of, CountKind};
pub use triage::TriageTally;
pub use users::USER_EXISTS;

use crate::store::snapshot_file::{
    install_into, sync_dir, verify, write_tree, SnapshotFileError, INSTALLING, INSTALLING_FILE,
};

const LAST_APPLIED: &[u8] = b"meta/last_applied";
const MEMBERSHIP: &[u8] = b"meta/membership";
const NEXT_ALERT: &[u8] = b"meta/next_alert";
const ACTIVE_POLICY: &[u8] = b"meta/active_policy";
const CLUSTER_ID: &[u8] = b"meta/cluster_id";
/// (log index, commands applied) of a `Batch` entry being applied: each of
/// its commands is stored as it is applied (so each sees the ones before),
/// and one a crash cut off resumes after the last stored, never applying a
/// command twice. Removed with the entry's last write.
const BATCH_PROGRESS: &[u8] = b"meta/batch_progress";
const ALERT_PREFIX: &[u8] = b"alert/";
const AGENT_PREFIX: &[u8] = b"agent/";
const POLICY_PREFIX: &[u8] = b"policy/";
const POLICY_META_PREFIX: &[u8] = b"policy_meta/";
const WORKLOAD_PREFIX: &[u8] = b"workload/";
const AUDIT_PREFIX: &[u8] = b"audit/";
const REVOKED_CERT_PREFIX: &[u8] = b"revoked_cert/";
const JOIN_TOKEN_PREFIX: &[u8] = b"join_token/";
/// serial → the renewal that superseded it ([`Supersession`]).
const SUPERSEDED_CERT_PREFIX: &[u8] = b"superseded_cert/";
/// agent id → when it last renewed its certificate (unix nanos).
const LAST_RENEWAL_PREFIX: &[u8] = b"last_renewal/";
/// agent id → the serial of its current certificate (issued at enrollment
/// or renewal; agents given certificates by hand have none until their
/// first renewal).
const CURRENT_CERT_PREFIX: &[u8] = b"current_cert/";
/// At most one renewal per agent in this long (proposer's clock).
pub const MIN_RENEWAL_INTERVAL_NANOS: i64 = 60_000_000_000;
/// Renewals a revocation follows at most (one a minute: 69 days).
const MAX_RENEWAL_CHAIN: u32 = 100_000;
/// (index, hash) of the newest audit entry.
const AUDIT_HEAD: &[u8] = b"meta/audit_head";
const ALERT_TALLY: &[u8] = b"meta/alert_tally";
const INVENTORY_PREFIX: &[u8] = b"inventory/";
const INVENTORY_ITEMS: &[u8] = b"meta/inventory_items";
const INVENTORY_REFUSED: &[u8] = b"meta/inventory_refused";
/// The most inventory items stored: a sighting of a new item past it is
/// counted (`meta/inventory_refused`), not stored; known items still update.
pub const MAX_INVENTORY_ITEMS: u64 = 100_000;
/// The most inventory items one agent's findings may create: one agent (a
/// compromised host) cannot fill the fleet's inventory and hide what other
/// hosts run behind `meta/inventory_refused`; past it the agent's new
/// items are refused and counted, its known ones still update.
pub const MAX_INVENTORY_ITEMS_PER_AGENT: u64 = 2_000;
const INVENTORY_BY_AGENT_PREFIX: &[u8] = b"inventory_by_agent/";
/// EK sha256 → the agent id bound to that TPM (one TPM, one host).
const EK_BINDING_PREFIX: &[u8] = b"ek_binding/";
/// `AlertTally` of the alerts retention removed.
const PRUNED_TALLY: &[u8] = b"meta/pruned_tally";
/// name / version → a model record.
const MODEL_PREFIX: &[u8] = b"model/";
/// name → the version a rollback pinned.
const MODEL_PIN_PREFIX: &[u8] = b"model_pin/";
/// seq → a [`JournalRecord`], the SIEM export's one sequence.
const EVENT_PREFIX: &[u8] = b"event/";
/// The seq the next journal record gets (1 when absent).
const NEXT_EVENT: &[u8] = b"meta/next_event";
/// The oldest seq retention kept (1 when absent).
const FIRST_EVENT: &[u8] = b"meta/first_event";

fn event_key(seq: u64) -> Vec<u8> {
    prefixed(EVENT_PREFIX, &seq.to_be_bytes())
}

/// What a journal record refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalRef {
    /// `alert/<index>`.
    Alert(u64),
    /// `audit/<index>`.
    Audit(u64),
}

/// One event of the SIEM export's sequence: its kind, what it refers to,
/// and what the export's filters read (so a filtered subscriber decodes
/// only the records that pass).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JournalRecord {
    pub kind: EventKind,
    #[serde(rename = "ref")]
    pub refers: JournalRef,
    #[serde(rename = "sev")]
    pub severity: Severity,
    /// An alert's signal.
    #[serde(rename = "sig", default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<SignalKind>,
    /// The host the event is about, when there is one.
    #[serde(rename = "agent", default, skip_serializing_if = "String::is_empty")]
    pub agent_id: String,
    #[serde(rename = "host", default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// An alert's rule.
    #[serde(rename = "rule", default, skip_serializing_if = "String::is_empty")]
    pub rule_id: String,
}

impl JournalRecord {
    fn of_alert(alert: &Alert) -> Self {
        Self {
            kind: EventKind::of_alert(alert),
            refers: JournalRef::Alert(alert.index),
            severity: alert.finding.severity,
            signal: Some(alert.finding.signal),
            agent_id: alert.agent_id.clone(),
            hostname: alert.hostname.clone(),
            rule_id: alert.finding.rule_id.clone(),
        }
    }

    fn of_audit(entry: &vigil_domain::AuditEntry, about: Option<AuditAbout<'_>>) -> Self {
        let (agent_id, hostname) = about.map_or((String::new(), String::new()), |a| {
            (a.agent_id.to_string(), a.hostname.to_string())
        });
        Self {
            kind: EventKind::of_audit(entry),
            refers: JournalRef::Audit(entry.index),
            severity: Severity::Info,
            signal: None,
            agent_id,
            hostname,
            rule_id: String::new(),
        }
    }

    fn facets(&self) -> vigil_domain::EventFacets<'_> {
        vigil_domain::EventFacets {
            kind: self.kind,
            severity: self.severity,
            signal: self.signal,
            agent_id: &self.agent_id,
            hostname: &self.hostname,
            rule_id: &self.rule_id,
        }
    }
}

/// The host an audit entry is about (an enforcement's, an attestation's),
/// for the export's host filter.
#[derive(Debug, Clone, Copy)]
struct AuditAbout<'a> {
    agent_id: &'a str,
    hostname: &'a str,
}

/// The most stored bytes of records one page of events picks (it always
/// takes one): an agent's finding may be megabytes (a huge command line is
/// stored whole), a page is decoded at once, and a subscriber that does not
/// read holds its page.
pub const EVENT_PAGE_BYTES: usize = 1 << 20;

/// The most bytes of journal records one page looks at (it always looks at
/// one): a record carries what filters read, the rule id among them, as
/// long as an agent made it, and a filter that passes little reads page
/// after page.
pub const EVENT_SCAN_BYTES: usize = 4 << 20;

/// A page of the SIEM export's events.
#[derive(Debug, Default)]
pub struct EventPage {
    /// The events that passed the filter, in seq order.
    pub events: Vec<SiemEvent>,
    /// The last seq looked at (passed or filtered out); the cursor the next
    /// page starts after. The `after` asked when nothing was there.
    pub scanned_to: u64,
}

/// Why a page of events could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    /// Retention removed events after the cursor: the oldest kept is `oldest`.
    #[error("cursor {after} is older than the oldest event kept ({oldest}): resume with cursor {resume} (or 0, the oldest kept)", resume = oldest - 1)]
    OutOfRange { after: u64, oldest: u64 },
    #[error(transparent)]
    Read(#[from] ReadError),
}

fn model_key(name: &str, version: u64) -> Vec<u8> {
    let mut k = prefixed(MODEL_PREFIX, name.as_bytes());
    k.push(b'/');
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// How many alerts are stored, by signal and then severity (`model_file` →
/// `high` → 3). Kept at apply time so that a metrics scrape reads one key
/// rather than every alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AlertTally(BTreeMap<String, BTreeMap<String, u64>>);

impl AlertTally {
    fn add(&mut self, signal: SignalKind, severity: Severity) {
        *self
            .0
            .entry(signal.as_str().to_string())
            .or_default()
            .entry(severity.as_str().to_string())
            .or_default() += 1;
    }

    fn remove(&mut self, signal: SignalKind, severity: Severity) {
        let (signal, severity) = (signal.as_str(), severity.as_str());
        if let Some(by_severity) = self.0.get_mut(signal) {
            if let Some(n) = by_severity.get_mut(severity) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    by_severity.remove(severity);
                }
            }
            if by_severity.is_empty() {
                self.0.remove(signal);
            }
        }
    }

    /// Every alert stored.
    pub fn total(&self) -> u64 {
        self.0.values().flat_map(|s| s.values()).sum()
    }

    /// (signal, severity, alerts) for each pair with at least one alert.
    pub fn counts(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.0.iter().flat_map(|(signal, by_severity)| {
            by_severity
                .iter()
                .map(move |(severity, n)| (signal.as_str(), severity.as_str(), *n))
        })
    }
}

/// The most alerts one `prune_alerts.v1` entry removes (its apply stays
/// short; the leader proposes again while there are more).
pub const PRUNE_AT_MOST: u64 = 20_000;

/// The fields of a stored alert the tally needs; the rest is skipped
/// unparsed.
#[derive(serde::Deserialize)]
struct TalliedAlert {
    finding: TalliedFinding,
}

#[derive(serde::Deserialize)]
struct TalliedFinding {
    signal: SignalKind,
    severity: Severity,
}

/// Counts the stored alerts once, for a store written before the tally was
/// kept (or a snapshot from such a node), and stores the count.
fn ensure_alert_tally(tree: &sled::Tree) -> Result<(), ReadError> {
    if tree.get(ALERT_TALLY)?.is_some() {
        return Ok(());
    }
    let mut tally = AlertTally::default();
    for kv in tree.scan_prefix(ALERT_PREFIX) {
        let (k, v) = kv?;
        let alert: TalliedAlert = decode(&k, &v)?;
        tally.add(alert.finding.signal, alert.finding.severity);
    }
    let bytes = serde_json::to_vec(&tally).map_err(|source| ReadError::Corrupt {
        key: String::from_utf8_lossy(ALERT_TALLY).into_owned(),
        source,
    })?;
    tree.insert(ALERT_TALLY, bytes)?;
    Ok(())
}

/// When and why a policy version was pushed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyMeta {
    pub pushed_at_unix_nanos: i64,
    pub note: String,
}
/// (SnapshotMeta, file name in the snapshot directory) of the current
/// snapshot, in one key so that they are read together.
const SNAPSHOT_CURRENT: &[u8] = b"current";
/// Where a store from before snapshot files kept its snapshot's meta.
const SNAPSHOT_META: &[u8] = b"meta";
/// Where a store from before snapshot files kept its snapshot's bytes
/// (moved to a file at open).
const SNAPSHOT_DATA: &[u8] = b"data";

fn prefixed(prefix: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(rest);
    k
}

fn inventory_key(kind: InventoryKind, key: &str) -> Vec<u8> {
    let mut k = prefixed(INVENTORY_PREFIX, kind.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(key.as_bytes());
    k
}

fn alert_key(index: u64) -> Vec<u8> {
    prefixed(ALERT_PREFIX, &index.to_be_bytes())
}

/// The seq of an `event/` key (0 for a malformed one).
fn seq_of(k: &[u8]) -> u64 {
    k.get(EVENT_PREFIX.len()..)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

/// The newest journal seq in `tree` (0 when none).
fn last_event_in(tree: &sled::Tree) -> Result<u64, ReadError> {
    Ok(match tree.get(NEXT_EVENT)? {
        Some(v) => decode::<u64>(NEXT_EVENT, &v)?.saturating_sub(1),
        None => 0,
    })
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

/// Read access to the applied state, for the gRPC services. Cheap to clone.
#[derive(Clone)]
pub struct StateReader {
    tree: sled::Tree,
    /// Shared with the state machine (`SledStateMachine::changing`).
    changing: Arc<std::sync::RwLock<()>>,
    last_alert: watch::Receiver<u64>,
    active_policy: watch::Receiver<u64>,
    workloads_changed: watch::Receiver<u64>,
    revocations_changed: watch::Receiver<u64>,
    trust_changed: watch::Receiver<u64>,
    models_changed: watch::Receiver<u64>,
    users_changed: watch::Receiver<u64>,
    triage_changed: watch::Receiver<u64>,
    last_event: watch::Receiver<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("state storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("stored record {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("stored record {key} is missing (the journal refers to it)")]
    Missing { key: String },
}

fn decode<T: serde::de::DeserializeOwned>(k: &[u8], v: &[u8]) -> Result<T, ReadError> {
    serde_json::from_slice(v).map_err(|source| ReadError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        source,
    })
}

impl StateReader {
    /// Held by every read of more than one key, so that it sees the state
    /// between two applied entries, never part of one and part of the next
    /// (sled's iterators are not a point in time: a list of workloads read
    /// while `a` was revoked and then `b` approved could hold both, a state
    /// that never was).
    fn between_entries(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.changing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The records `scan` yields, at most `limit`, read between two
    /// entries and decoded after (writers wait only for the copying).
    fn scan_between_entries<T: serde::de::DeserializeOwned>(
        &self,
        scan: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        limit: usize,
    ) -> Result<Vec<T>, ReadError> {
        let raw: Vec<(sled::IVec, sled::IVec)> = {
            let _settled = self.between_entries();
            scan.take(limit).collect::<Result<_, _>>()?
        };
        raw.iter().map(|(k, v)| decode(k, v)).collect()
    }

    /// Alerts with index > `after`, oldest first, at most `limit`.
    pub fn alerts_after(&self, after: u64, limit: usize) -> Result<Vec<Alert>, ReadError> {
        self.scan_between_entries(
            self.tree
                .range(alert_key(after.saturating_add(1))..alert_key(u64::MAX)),
            limit,
        )
    }

    /// sha256 over every key and value of the replicated state (in key
    /// order, each length-prefixed), and the last applied index: two nodes
    /// that applied the same log have the same digest (their snapshots,
    /// kept apart, are not in it). Each digest is of the state between two
    /// entries, but nodes are at different entries while writes go on:
    /// compare digests of a quiet cluster.
    pub fn digest(&self) -> Result<(u64, String), ReadError> {
        use sha2::Digest;
        let _settled = self.between_entries();
        let applied: Option<crate::raft_types::LogId> = match self.tree.get(LAST_APPLIED)? {
            Some(v) => decode(LAST_APPLIED, &v)?,
            None => None,
        };
        let mut hash = sha2::Sha256::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            hash.update((k.len() as u64).to_be_bytes());
            hash.update(&k);
            hash.update((v.len() as u64).to_be_bytes());
            hash.update(&v);
        }
        Ok((applied.map_or(0, |l| l.index), hex::encode(hash.finalize())))
    }

    /// The cluster's id, once its first node has set it.
    pub fn cluster_id(&self) -> Result<Option<String>, ReadError> {
        self.tree
            .get(CLUSTER_ID)?
            .map(|v| decode(CLUSTER_ID, &v))
            .transpose()
    }

    /// Makes what the state machine has applied so far durable (the store
    /// is shared, so this flushes the log too). Before a mark beside the
    /// store (the cluster id file) names what the state holds: the next
    /// start's check reads the state, not the log.
    pub async fn flush(&self) -> Result<(), sled::Error> {
        self.tree.flush_async().await.map(|_| ())
    }

    pub fn last_alert_index(&self) -> u64 {
        *self.last_alert.borrow()
    }

    /// Fires whenever new alerts are applied.
    pub fn watch_alerts(&self) -> watch::Receiver<u64> {
        self.last_alert.clone()
    }

    /// The newest journal seq (0 when none).
    pub fn last_event_cursor(&self) -> u64 {
        *self.last_event.borrow()
    }

    /// Fires whenever new events are journaled (or a snapshot installed).
    pub fn watch_events(&self) -> watch::Receiver<u64> {
        self.last_event.clone()
    }

    /// The oldest journal seq retention kept (the next seq when every
    /// event was removed; 1 when none ever was).
    pub fn first_event_cursor(&self) -> Result<u64, ReadError> {
        Ok(match self.tree.get(FIRST_EVENT)? {
            Some(v) => decode(FIRST_EVENT, &v)?,
            None => 1,
        })
    }

    /// Journal records with seq > `after`, oldest first, at most `limit`
    /// (for tests and tools; the export reads [`Self::events_after`]).
    pub fn journal_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, JournalRecord)>, ReadError> {
        let raw: Vec<(sled::IVec, sled::IVec)> = {
            let _settled = self.between_entries();
            self.tree
                .range(event_key(after.saturating_add(1))..event_key(u64::MAX))
                .take(limit)
                .collect::<Result<_, _>>()?
        };
        raw.iter()
            .map(|(k, v)| Ok((seq_of(k), decode(k, v)?)))
            .collect()
    }

    /// The events with seq > `after` that pass `filter`, oldest first: at
    /// most `limit` of them, whose stored records come to at most
    /// [`EVENT_PAGE_BYTES`] (or one record), after looking at most `scan`
    /// journal records and [`EVENT_SCAN_BYTES`] of them (a filter that
    /// passes little costs a bounded read per page).
    /// Refused when retention removed events after `after`. Read between
    /// two entries; only the records that pass are decoded.
    pub fn events_after(
        &self,
        after: u64,
        limit: usize,
        scan: usize,
        filter: &SiemFilter,
    ) -> Result<EventPage, EventsError> {
        let mut scanned_to = after;
        let mut bytes = 0usize;
        let mut scanned_bytes = 0usize;
        let mut picked: Vec<(u64, JournalRecord, Vec<u8>, Option<sled::IVec>)> = Vec::new();
        {
            let _settled = self.between_entries();
            let oldest = self.first_event_cursor()?;
            if after.saturating_add(1) < oldest {
                return Err(EventsError::OutOfRange { after, oldest });
            }
            let range = self
                .tree
                .range(event_key(after.saturating_add(1))..event_key(u64::MAX));
            for kv in range.take(scan.max(1)) {
                let (k, v) = kv.map_err(ReadError::from)?;
                let seq = seq_of(&k);
                let record: JournalRecord = decode(&k, &v)?;
                scanned_to = seq;
                scanned_bytes += v.len();
                if !filter.matches(&record.facets()) {
                    if scanned_bytes >= EVENT_SCAN_BYTES {
                        break;
                    }
                    continue;
                }
                let key = match record.refers {
                    JournalRef::Alert(i) => alert_key(i),
                    JournalRef::Audit(i) => prefixed(AUDIT_PREFIX, &i.to_be_bytes()),
                };
                let value = self.tree.get(&key).map_err(ReadError::from)?;
                bytes += value.as_ref().map_or(0, |v| v.len());
                picked.push((seq, record, key, value));
                if picked.len() >= limit
                    || bytes >= EVENT_PAGE_BYTES
                    || scanned_bytes >= EVENT_SCAN_BYTES
                {
                    break;
                }
            }
        }
        let events = picked
            .into_iter()
            .map(|(cursor, record, key, value)| {
                let value = value.ok_or_else(|| ReadError::Missing {
                    key: String::from_utf8_lossy(&key).into_owned(),
                })?;
                let kind = record.kind;
                let record = match record.refers {
                    JournalRef::Alert(_) => EventRecord::Alert(decode(&key, &value)?),
                    JournalRef::Audit(_) => EventRecord::Audit(decode(&key, &value)?),
                };
                Ok(SiemEvent {
                    cursor,
                    kind,
                    record,
                })
            })
            .collect::<Result<Vec<_>, ReadError>>()?;
        Ok(EventPage { events, scanned_to })
    }

    pub fn agents(&self) -> Result<Vec<AgentRecord>, ReadError> {
        self.scan_between_entries(self.tree.scan_prefix(AGENT_PREFIX), usize::MAX)
    }

    pub fn agent(&self, agent_id: &str) -> Result<Option<AgentRecord>, ReadError> {
        let k = prefixed(AGENT_PREFIX, agent_id.as_bytes());
        self.tree.get(&k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// The agent with this id, else the one whose host has this name (the
    /// most recently heard from, if several).
    pub fn agent_by_id_or_hostname(&self, name: &str) -> Result<Option<AgentRecord>, ReadError> {
        if let Some(a) = self.agent(name)? {
            return Ok(Some(a));
        }
        Ok(self
            .agents()?
            .into_iter()
            .filter(|a| a.identity.hostname == name)
            .max_by_key(|a| a.last_heartbeat_unix_nanos))
    }

    /// Every policy version: (version, bundle bytes, meta), oldest first.
    pub fn policies(&self) -> Result<Vec<(u64, Vec<u8>, PolicyMeta)>, ReadError> {
        let mut raw = Vec::new();
        {
            let _settled = self.between_entries();
            for kv in self.tree.scan_prefix(POLICY_PREFIX) {
                let (k, v) = kv?;
                let Some(version) = k
                    .get(POLICY_PREFIX.len()..)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_be_bytes)
                else {
                    continue;
                };
                let mk = prefixed(POLICY_META_PREFIX, &version.to_be_bytes());
                let meta = self.tree.get(&mk)?;
                raw.push((version, v, mk, meta));
            }
        }
        raw.into_iter()
            .map(|(version, v, mk, meta)| {
                let meta = match meta {
                    Some(m) => decode(&mk, &m)?,
                    None => PolicyMeta::default(),
                };
                Ok((version, v.to_vec(), meta))
            })
            .collect()
    }

    /// One policy version's bundle bytes.
    pub fn policy(&self, version: u64) -> Result<Option<Vec<u8>>, ReadError> {
        Ok(self
            .tree
            .get(prefixed(POLICY_PREFIX, &version.to_be_bytes()))?
            .map(|v| v.to_vec()))
    }

    /// Audit entries with index > `after`, oldest first, at most `limit`.
    pub fn audit_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<vigil_domain::AuditEntry>, ReadError> {
        self.scan_between_entries(
            self.tree
                .range(prefixed(AUDIT_PREFIX, &(after + 1).to_be_bytes())..)
                .take_while(|kv| {
                    kv.as_ref()
                        .map(|(k, _)| k.starts_with(AUDIT_PREFIX))
                        .unwrap_or(true)
                }),
            limit,
        )
    }

    /// A page of the AI inventory (every kind, or one), in (kind, key)
    /// order after `after`, at most `limit` items, with `approved` set from
    /// the approved workloads; the last page ends with what approved
    /// workloads name and no finding showed yet. Returns the page and
    /// whether there is more.
    pub fn inventory(
        &self,
        kind: Option<InventoryKind>,
        after: Option<(InventoryKind, &str)>,
        limit: usize,
    ) -> Result<(Vec<InventoryItem>, bool), ReadError> {
        let prefix = match kind {
            Some(kind) => inventory_key(kind, ""),
            None => INVENTORY_PREFIX.to_vec(),
        };
        let _settled = self.between_entries();
        let workloads = self.workloads_held()?;
        let mut scan = self.tree.scan_prefix(&prefix);
        if let Some((after_kind, after_key)) = after {
            let mut start = inventory_key(after_kind, after_key);
            start.push(0);
            scan = self.tree.range(start.max(prefix.clone())..);
        }
        let mut items = Vec::new();
        let mut more = false;
        for kv in scan {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            let mut item: InventoryItem = decode(&k, &v)?;
            item.approved = item.approved_by(&workloads);
            items.push(item);
        }
        if !more {
            let unseen = vigil_domain::approved_but_unseen(&workloads, |kind, key| {
                self.tree
                    .contains_key(inventory_key(kind, key))
                    .unwrap_or(false)
            });
            items.extend(
                unseen
                    .into_iter()
                    .filter(|i| kind.is_none() || i.kind == kind),
            );
        }
        Ok((items, more))
    }

    /// Sightings of new inventory items refused because it was full.
    pub fn inventory_refused(&self) -> Result<u64, ReadError> {
        Ok(match self.tree.get(INVENTORY_REFUSED)? {
            Some(v) => decode(INVENTORY_REFUSED, &v)?,
            None => 0,
        })
    }

    /// Every approved workload, by id.
    pub fn workloads(&self) -> Result<Vec<vigil_domain::WorkloadApproval>, ReadError> {
        self.scan_between_entries(self.tree.scan_prefix(WORKLOAD_PREFIX), usize::MAX)
    }

    /// `workloads`, for a caller that already holds `between_entries`.
    fn workloads_held(&self) -> Result<Vec<vigil_domain::WorkloadApproval>, ReadError> {
        self.tree
            .scan_prefix(WORKLOAD_PREFIX)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    /// Every model record and rollback pin, read between two entries.
    pub fn model_catalog(&self) -> Result<vigil_domain::ModelCatalog, ReadError> {
        let (records, pins) = {
            let _settled = self.between_entries();
            let records: Vec<(sled::IVec, sled::IVec)> = self
                .tree
                .scan_prefix(MODEL_PREFIX)
                .collect::<Result<_, _>>()?;
            let pins: Vec<(sled::IVec, sled::IVec)> = self
                .tree
                .scan_prefix(MODEL_PIN_PREFIX)
                .collect::<Result<_, _>>()?;
            (records, pins)
        };
        let records = records
            .iter()
            .map(|(k, v)| decode::<vigil_domain::ModelRecord>(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        let pins = pins
            .iter()
            .map(|(k, v)| {
                let name = String::from_utf8_lossy(&k[MODEL_PIN_PREFIX.len()..]).into_owned();
                Ok((name, decode::<u64>(k, v)?))
            })
            .collect::<Result<Vec<_>, ReadError>>()?;
        Ok(vigil_domain::ModelCatalog::new(records, pins))
    }

    /// One model record.
    pub fn model_record(
        &self,
        name: &str,
        version: u64,
    ) -> Result<Option<vigil_domain::ModelRecord>, ReadError> {
        let k = model_key(name, version);
        self.tree.get(&k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// Changes whenever a model record or pin changes (or a snapshot is
    /// installed).
    pub fn watch_models(&self) -> watch::Receiver<u64> {
        self.models_changed.clone()
    }

    /// Whether the certificate with this serial (lower-case hex) is
    /// refused: revoked, or superseded by a renewal.
    pub fn certificate_revoked(&self, serial: &str) -> Result<bool, ReadError> {
        Ok(self.certificate_standing(serial)? != CertificateStanding::Good)
    }

    /// The renewal (or re-enrollment) that replaced a certificate.
    pub fn supersession(&self, serial: &str) -> Result<Option<Supersession>, ReadError> {
        self.tree
            .get(prefixed(SUPERSEDED_CERT_PREFIX, serial.as_bytes()))?
            .map(|v| decode(serial.as_bytes(), &v))
            .transpose()
    }

    /// When an agent last renewed its certificate (unix nanos).
    pub fn last_renewal(&self, agent_id: &str) -> Result<Option<i64>, ReadError> {
        self.tree
            .get(prefixed(LAST_RENEWAL_PREFIX, agent_id.as_bytes()))?
            .map(|v| decode(agent_id.as_bytes(), &v))
            .transpose()
    }

    /// What the control plane holds of a certificate, by serial.
    pub fn certificate_standing(&self, serial: &str) -> Result<CertificateStanding, ReadError> {
        let _settled = self.between_entries();
        if self.tree.contains_key(INSTALLING)? {
            return Ok(CertificateStanding::Unsettled);
        }
        Ok(
            if self
                .tree
                .contains_key(prefixed(REVOKED_CERT_PREFIX, serial.as_bytes()))?
            {
                CertificateStanding::Revoked
            } else if self
                .tree
                .contains_key(prefixed(SUPERSEDED_CERT_PREFIX, serial.as_bytes()))?
            {
                CertificateStanding::Superseded
            } else {
                CertificateStanding::Good
            },
        )
    }

    pub fn revoked_certificates(&self) -> Result<Vec<vigil_domain::RevokedCertificate>, ReadError> {
        self.scan_between_entries(self.tree.scan_prefix(REVOKED_CERT_PREFIX), usize::MAX)
    }

    /// Changes whenever a certificate is revoked (or a snapshot installed).
    pub fn watch_revocations(&self) -> watch::Receiver<u64> {
        self.revocations_changed.clone()
    }

    /// Changes whenever a workload is approved or revoked.
    /// Bumped whenever an applied entry changed some host's trust.
    pub fn watch_trust(&self) -> watch::Receiver<u64> {
        self.trust_changed.clone()
    }

    pub fn watch_workloads(&self) -> watch::Receiver<u64> {
        self.workloads_changed.clone()
    }

    /// Changes whenever a policy version becomes active.
    pub fn watch_policy(&self) -> watch::Receiver<u64> {
        self.active_policy.clone()
    }

    /// The active policy version, 0 when none was pushed.
    pub fn active_policy_version(&self) -> u64 {
        *self.active_policy.borrow()
    }

    /// Alerts stored, by signal and severity.
    pub fn alert_tally(&self) -> Result<AlertTally, ReadError> {
        Ok(match self.tree.get(ALERT_TALLY)? {
            Some(v) => decode(ALERT_TALLY, &v)?,
            None => AlertTally::default(),
        })
    }

    /// Every alert ever stored, retention's removals included (for
    /// counters, which never go down).
    pub fn alert_tally_ever(&self) -> Result<AlertTally, ReadError> {
        let _settled = self.between_entries();
        let mut tally = self.alert_tally()?;
        if let Some(v) = self.tree.get(PRUNED_TALLY)? {
            let pruned: AlertTally = decode(PRUNED_TALLY, &v)?;
            for (signal, severity, n) in pruned.counts() {
                *tally
                    .0
                    .entry(signal.to_string())
                    .or_default()
                    .entry(severity.to_string())
                    .or_default() += n;
            }
        }
        Ok(tally)
    }

    /// Audit entries stored (the newest entry's index: they are dense from 1).
    pub fn audit_entries(&self) -> Result<u64, ReadError> {
        Ok(match self.tree.get(AUDIT_HEAD)? {
            Some(v) => decode::<(u64, String)>(AUDIT_HEAD, &v)?.0,
            None => 0,
        })
    }

    /// The active policy bundle: (version, bytes).
    pub fn active_policy(&self) -> Result<Option<(u64, Vec<u8>)>, ReadError> {
        let _settled = self.between_entries();
        let Some(v) = self.tree.get(ACTIVE_POLICY)? else {
            return Ok(None);
        };
        let version: u64 = decode(ACTIVE_POLICY, &v)?;
        let bundle = self
            .tree
            .get(prefixed(POLICY_PREFIX, &version.to_be_bytes()))?;
        Ok(bundle.map(|b| (version, b.to_vec())))
    }
}

pub struct SledStateMachine {
    db: sled::Db,
    tree: sled::Tree,
    snapshots: sled::Tree,
    last_alert: Arc<watch::Sender<u64>>,
    active_policy: Arc<watch::Sender<u64>>,
    /// A generation count, bumped by every workload change applied.
    workloads_changed: Arc<watch::Sender<u64>>,
    /// A generation count, bumped by every certificate revocation applied.
    revocations_changed: Arc<watch::Sender<u64>>,
    /// A generation count, bumped by every model record or pin change.
    models_changed: Arc<watch::Sender<u64>>,
    /// A generation count, bumped by every user change.
    users_changed: Arc<watch::Sender<u64>>,
    /// A generation count, bumped by every triage step and retention run.
    triage_changed: Arc<watch::Sender<u64>>,
    /// A generation count, bumped when an applied entry changed a host's
    /// trust (sessions resend their agent's approved workloads).
    trust_changed: Arc<watch::Sender<u64>>,
    /// Set by an apply that changed a host's trust, published (and
    /// cleared) once the entry's writes are visible.
    trust_changed_pending: Arc<std::sync::atomic::AtomicBool>,
    /// The audit head written by the entry being applied (its batch is not
    /// in the tree yet), so two entries in one apply chain correctly.
    pending_audit_head: Arc<std::sync::Mutex<Option<(u64, String)>>>,
    /// The next journal seq as the entry being applied left it (its batch
    /// is not in the tree yet), like `pending_audit_head`.
    pending_next_event: Arc<std::sync::Mutex<Option<u64>>>,
    /// The newest journal seq, published once an entry's writes are visible.
    last_event: Arc<watch::Sender<u64>>,
    /// Held by `apply` from its first write to its last, and by a snapshot
    /// while it reads: sled's iterator is not a point in time, so without
    /// it a snapshot built beside an apply could pair an older
    /// `last_applied` with newer data (an entry applied twice where it is
    /// installed) or copy half a batch.
    applying: Arc<tokio::sync::RwLock<()>>,
    /// Held (written) while the tree changes: around each applied entry's
    /// batch and for a whole snapshot install; held (read) by a
    /// `StateReader` read of more than one key, which so sees the state
    /// between two entries. Short: no await while it is held.
    changing: Arc<std::sync::RwLock<()>>,
    /// Every apply marked while it is in flight (not a snapshot install:
    /// a large one takes long without being stuck).
    writes: crate::store::write_watch::WriteWatch,
    /// Where snapshot files live (`snapshot_file.rs`).
    snapshot_dir: PathBuf,
    /// The file a snapshot is being received into, if one is.
    receiving: Arc<std::sync::Mutex<Option<PathBuf>>>,
}

/// A fresh name for a file in the snapshot directory.
fn unique_name(kind: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{kind}-{nanos}-{n}.snap")
}

/// Finishes a snapshot install a crash cut off (the [`INSTALLING`]
/// marker is in the state), from the file it was installing; a no-op
/// otherwise. Runs before the start-up check: until it is done the state
/// is half one snapshot and half the old state.
pub fn finish_interrupted_install(
    db: &sled::Db,
    snapshot_dir: &Path,
) -> Result<bool, SnapshotFileError> {
    let tree = db.open_tree("sm.v1")?;
    let Some(marker) = tree.get(INSTALLING)? else {
        return Ok(false);
    };
    let path = snapshot_dir.join(INSTALLING_FILE);
    let meta: SnapshotMeta<NodeId, BasicNode> =
        serde_json::from_slice(&marker).map_err(|e| SnapshotFileError::Format {
            path: path.clone(),
            why: format!("the install marker does not decode: {e}"),
        })?;
    tracing::warn!(
        snapshot = %meta.snapshot_id,
        "finishing a snapshot install a crash cut off"
    );
    // Cut off after the file was recorded as the current snapshot: the
    // state is complete, only the marker is left.
    let recorded = current_snapshot(db)?.is_some_and(|(m, _)| m == meta);
    if !recorded || path.exists() {
        install_into(
            &tree,
            &path,
            &[LAST_APPLIED, MEMBERSHIP],
            final_keys(&meta)?,
        )?;
        ensure_alert_tally(&tree).map_err(|e| SnapshotFileError::Format {
            path: path.clone(),
            why: e.to_string(),
        })?;
        record_snapshot(db, snapshot_dir, &meta, &path)?;
    }
    tree.remove(INSTALLING)?;
    tree.flush()?;
    Ok(true)
}

/// A snapshot's meta and its file's name.
type CurrentSnapshot = (SnapshotMeta<NodeId, BasicNode>, String);

/// The current snapshot's meta and file name, recorded together.
fn current_snapshot(db: &sled::Db) -> Result<Option<CurrentSnapshot>, SnapshotFileError> {
    let snapshots = db.open_tree("sm.v1.snapshot")?;
    let Some(v) = snapshots.get(SNAPSHOT_CURRENT)? else {
        return Ok(None);
    };
    serde_json::from_slice(&v)
        .map(Some)
        .map_err(|e| SnapshotFileError::Format {
            path: PathBuf::from("sm.v1.snapshot/current"),
            why: e.to_string(),
        })
}

/// The keys an install sets last, from the snapshot's meta.
fn final_keys(
    meta: &SnapshotMeta<NodeId, BasicNode>,
) -> Result<crate::store::snapshot_file::Records, SnapshotFileError> {
    let enc = |v: serde_json::Result<Vec<u8>>| {
        v.map_err(|e| SnapshotFileError::Format {
            path: PathBuf::new(),
            why: e.to_string(),
        })
    };
    Ok(vec![
        (
            LAST_APPLIED.to_vec(),
            enc(serde_json::to_vec(&meta.last_log_id))?,
        ),
        (
            MEMBERSHIP.to_vec(),
            enc(serde_json::to_vec(&meta.last_membership))?,
        ),
    ])
}

/// Makes the file at `from` (in `snapshot_dir`) the current snapshot with
/// `meta`: renamed to its own name, recorded (meta and name in one key of
/// `sm.v1.snapshot`), synced; the older snapshot file removed. A snapshot
/// older than the current one is dropped instead (a build that finished
/// after an install). Returns the current snapshot's meta and path.
fn record_snapshot(
    db: &sled::Db,
    snapshot_dir: &Path,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    from: &Path,
) -> Result<(SnapshotMeta<NodeId, BasicNode>, PathBuf), SnapshotFileError> {
    if let Some((current, name)) = current_snapshot(db)? {
        if current.last_log_id > meta.last_log_id {
            let _ = std::fs::remove_file(from);
            return Ok((current, snapshot_dir.join(name)));
        }
    }
    let name = format!(
        "snapshot-{}-{}",
        meta.last_log_id.map_or(0, |l| l.index),
        unique_name("at")
    );
    let to = snapshot_dir.join(&name);
    std::fs::rename(from, &to).map_err(|source| SnapshotFileError::Io {
        path: to.clone(),
        source,
    })?;
    sync_dir(snapshot_dir)?;
    let snapshots = db.open_tree("sm.v1.snapshot")?;
    let mut batch = sled::Batch::default();
    batch.insert(
        SNAPSHOT_CURRENT,
        serde_json::to_vec(&(meta, &name)).map_err(|e| SnapshotFileError::Format {
            path: to.clone(),
            why: e.to_string(),
        })?,
    );
    batch.remove(SNAPSHOT_META);
    batch.remove(SNAPSHOT_DATA);
    snapshots.apply_batch(batch)?;
    snapshots.flush()?;
    // Older snapshot files only: a build or a transfer in progress keeps
    // its file (those are cleared at start).
    crate::store::snapshot_file::remove_stale(snapshot_dir, Some(&name), false);
    Ok((meta.clone(), to))
}

impl SledStateMachine {
    /// Opens the state machine in `db`, its snapshot files in
    /// `snapshot_dir` (made 0700 if missing).
    pub fn open(db: &sled::Db, snapshot_dir: &Path) -> Result<(Self, StateReader), ReadError> {
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(snapshot_dir)
                .map_err(|e| ReadError::Snapshot(format!("{}: {e}", snapshot_dir.display())))?;
        }
        finish_interrupted_install(db, snapshot_dir)
            .map_err(|e| ReadError::Snapshot(e.to_string()))?;
        let tree = db.open_tree("sm.v1")?;
        let snapshots = db.open_tree("sm.v1.snapshot")?;
        // A store from before snapshot files: its snapshot moves to one.
        if let (Some(data), Some(meta)) =
            (snapshots.get(SNAPSHOT_DATA)?, snapshots.get(SNAPSHOT_META)?)
        {
            let meta: SnapshotMeta<NodeId, BasicNode> = decode(SNAPSHOT_META, &meta)?;
            let path = snapshot_dir.join(unique_name("building"));
            crate::store::snapshot_file::create_private(&path)
                .and_then(|mut f| {
                    std::io::Write::write_all(&mut f, &data)?;
                    f.sync_all()
                })
                .map_err(|e| ReadError::Snapshot(format!("{}: {e}", path.display())))?;
            record_snapshot(db, snapshot_dir, &meta, &path)
                .map_err(|e| ReadError::Snapshot(e.to_string()))?;
        }
        let current = current_snapshot(db)
            .map_err(|e| ReadError::Snapshot(e.to_string()))?
            .map(|(_, name)| name);
        crate::store::snapshot_file::remove_stale(snapshot_dir, current.as_deref(), true);
        ensure_alert_tally(&tree)?;
        finding_counts::ensure_finding_counts(&tree)?;
        let last = last_alert_in(&tree)?;
        let (tx, rx) = watch::channel(last);
        let (event_tx, event_rx) = watch::channel(last_event_in(&tree)?);
        let active: u64 = match tree.get(ACTIVE_POLICY)? {
            Some(v) => decode(ACTIVE_POLICY, &v)?,
            None => 0,
        };
        let (policy_tx, policy_rx) = watch::channel(active);
        let (workloads_tx, workloads_rx) = watch::channel(0u64);
        let (revocations_tx, revocations_rx) = watch::channel(0u64);
        let (trust_tx, trust_rx) = watch::channel(0u64);
        let (models_tx, models_rx) = watch::channel(0u64);
        let (users_tx, users_rx) = watch::channel(0u64);
        let (triage_tx, triage_rx) = watch::channel(0u64);
        let changing = Arc::new(std::sync::RwLock::new(()));
        Ok((
            Self {
                db: db.clone(),
                tree: tree.clone(),
                snapshots,
                last_alert: Arc::new(tx),
                active_policy: Arc::new(policy_tx),
                workloads_changed: Arc::new(workloads_tx),
                revocations_changed: Arc::new(revocations_tx),
                models_changed: Arc::new(models_tx),
                users_changed: Arc::new(users_tx),
                triage_changed: Arc::new(triage_tx),
                trust_changed: Arc::new(trust_tx),
                trust_changed_pending: Arc::default(),
                pending_audit_head: Arc::new(std::sync::Mutex::new(None)),
                pending_next_event: Arc::new(std::sync::Mutex::new(None)),
                last_event: Arc::new(event_tx),
                applying: Arc::new(tokio::sync::RwLock::new(())),
                changing: changing.clone(),
                writes: Default::default(),
                snapshot_dir: snapshot_dir.to_path_buf(),
                receiving: Arc::default(),
            },
            StateReader {
                tree,
                changing,
                last_alert: rx,
                active_policy: policy_rx,
                workloads_changed: workloads_rx,
                revocations_changed: revocations_rx,
                trust_changed: trust_rx,
                models_changed: models_rx,
                users_changed: users_rx,
                triage_changed: triage_rx,
                last_event: event_rx,
            },
        ))
    }

    /// This state machine with its writes marked in `writes` (shared with
    /// the log store's and read by the node's storage guard).
    pub fn watched_by(mut self, writes: crate::store::write_watch::WriteWatch) -> Self {
        self.writes = writes;
        self
    }

    /// Applies one entry's (or sub-command's) writes, with readers of more
    /// than one key kept out (`changing`).
    fn apply_visible(&self, batch: sled::Batch) -> Result<(), StorageError> {
        let _changing = self
            .changing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.tree.apply_batch(batch).map_err(sm_write_err)
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        k: &[u8],
    ) -> Result<Option<T>, StorageError> {
        match self.tree.get(k).map_err(sm_read_err)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(sm_read_err),
        }
    }

    /// Folds one sighting into its inventory item, read from `update` or
    /// the tree (a new item only while the inventory has room).
    fn record_sighting(
        &self,
        update: &mut InventoryUpdate,
        sighting: &vigil_domain::Sighting,
        agent_id: &str,
        host: &str,
        at_unix_nanos: i64,
    ) -> Result<(), StorageError> {
        let k = inventory_key(sighting.kind, &sighting.key);
        if !update.items.contains_key(&k) {
            let stored: Option<InventoryItem> = self.get_json(&k)?;
            match stored {
                Some(item) => {
                    update.items.insert(k.clone(), item);
                }
                None => {
                    let count = match update.count {
                        Some(n) => n,
                        None => self.get_json::<u64>(INVENTORY_ITEMS)?.unwrap_or(0),
                    };
                    let by_agent_key = prefixed(INVENTORY_BY_AGENT_PREFIX, agent_id.as_bytes());
                    let by_agent = match update.by_agent {
                        Some((_, n)) => n,
                        None => self.get_json::<u64>(&by_agent_key)?.unwrap_or(0),
                    };
                    if count >= MAX_INVENTORY_ITEMS || by_agent >= MAX_INVENTORY_ITEMS_PER_AGENT {
                        let refused = match update.refused {
                            Some(n) => n,
                            None => self.get_json::<u64>(INVENTORY_REFUSED)?.unwrap_or(0),
                        };
                        update.refused = Some(refused + 1);
                        return Ok(());
                    }
                    update.count = Some(count + 1);
                    update.by_agent = Some((by_agent_key, by_agent + 1));
                    update.items.insert(k.clone(), InventoryItem::default());
                }
            }
        }
        if let Some(item) = update.items.get_mut(&k) {
            item.record(sighting, host, at_unix_nanos);
        }
        Ok(())
    }

    fn apply_command(
        &self,
        cmd: Command,
        batch: &mut sled::Batch,
    ) -> Result<CommandResult, StorageError> {
        match cmd {
            Command::RegisterAgent {
                agent,
                at_unix_nanos,
            } => {
                let k = prefixed(AGENT_PREFIX, agent.agent_id.as_bytes());
                let mut rec: AgentRecord = self.get_json(&k)?.unwrap_or_else(|| AgentRecord {
                    first_seen_unix_nanos: at_unix_nanos,
                    ..Default::default()
                });
                rec.identity = agent;
                rec.last_heartbeat_unix_nanos = at_unix_nanos;
                batch.insert(k, json(&rec)?);
                Ok(CommandResult::Registered {
                    last_acked_seq: rec.last_acked_seq,
                })
            }
            Command::Heartbeat {
                agent_id,
                at_unix_nanos,
                counters,
                spooled,
                spool_dropped,
                spool_full,
            } => {
                let k = prefixed(AGENT_PREFIX, agent_id.as_bytes());
                let Some(mut rec) = self.get_json::<AgentRecord>(&k)? else {
                    return Ok(CommandResult::Refused {
                        reason: format!("heartbeat from unregistered agent {agent_id}"),
                    });
                };
                rec.last_heartbeat_unix_nanos = at_unix_nanos;
                rec.counters = counters;
                rec.spooled = spooled;
                rec.spool_dropped = spool_dropped;
                rec.spool_full = spool_full;
                batch.insert(k, json(&rec)?);
                Ok(CommandResult::Done)
            }
            Command::UpdateInventory { agent_id, gpu } => {
                let k = prefixed(AGENT_PREFIX, agent_id.as_bytes());
                let Some(mut rec) = self.get_json::<AgentRecord>(&k)? else {
                    return Ok(CommandResult::Refused {
                        reason: format!("inventory from unregistered agent {agent_id}"),
                    });
                };
                rec.gpu = gpu;
                batch.insert(k, json(&rec)?);
                Ok(CommandResult::Done)
            }
            Command::AppendAlerts {
                agent_id,
                received_at_unix_nanos,
                findings,
            } => {
                let k = prefixed(AGENT_PREFIX, agent_id.as_bytes());
                let mut rec: AgentRecord = self.get_json(&k)?.unwrap_or_else(|| AgentRecord {
                    identity: AgentIdentity {
                        agent_id: agent_id.clone(),
                        ..Default::default()
                    },
                    first_seen_unix_nanos: received_at_unix_nanos,
                    ..Default::default()
                });
                let mut next: u64 = self.get_json(NEXT_ALERT)?.unwrap_or(1);
                let mut tally: AlertTally = self.get_json(ALERT_TALLY)?.unwrap_or_default();
                let (mut first_index, mut appended, mut duplicates) = (0, 0, 0);
                let mut inventory = InventoryUpdate::default();
                let mut counts = finding_counts::CountChanges::default();
                for finding in findings {
                    if finding.seq <= rec.last_acked_seq {
                        duplicates += 1;
                        continue;
                    }
                    rec.last_acked_seq = finding.seq;
                    // Seen at the agent's time, but never later than it
                    // reached the cluster (the agent's clock may be wrong),
                    // nor earlier than a spool could have kept it.
                    let seen_at = match finding.observed_at_unix_nanos {
                        t if t > 0 => t.clamp(
                            received_at_unix_nanos
                                .saturating_sub(vigil_domain::MAX_SIGHTING_AGE_NANOS),
                            received_at_unix_nanos,
                        ),
                        _ => received_at_unix_nanos,
                    };
                    for sighting in vigil_domain::sightings(&finding) {
                        self.record_sighting(
                            &mut inventory,
                            &sighting,
                            &agent_id,
                            &rec.identity.hostname,
                            seen_at,
                        )?;
                    }
                    tally.add(finding.signal, finding.severity);
                    counts.count(
                        received_at_unix_nanos,
                        &agent_id,
                        &finding.rule_id,
                        &finding.process.exe,
                        true,
                    );
                    let alert = Alert {
                        index: next,
                        agent_id: agent_id.clone(),
                        hostname: rec.identity.hostname.clone(),
                        received_at_unix_nanos,
                        finding,
                    };
                    batch.insert(alert_key(next), json(&alert)?);
                    self.journal(batch, &JournalRecord::of_alert(&alert))?;
                    // An enforcement is also an audit entry, in the same
                    // apply, journaled after its finding.
                    let finding = &alert.finding;
                    if !finding.action.is_empty() {
                        self.append_audit_about(
                            batch,
                            Some(AuditAbout {
                                agent_id: &agent_id,
                                hostname: &rec.identity.hostname,
                            }),
                            received_at_unix_nanos,
                            agent_id.clone(),
                            format!("enforce.{}", finding.action),
                            format!("pid {} on {}", finding.process.pid, rec.identity.hostname),
                            finding.summary.clone(),
                        )?;
                    }
                    if first_index == 0 {
                        first_index = next;
                    }
                    next += 1;
                    appended += 1;
                }
                batch.insert(NEXT_ALERT, json(&next)?);
                if appended > 0 {
                    batch.insert(ALERT_TALLY, json(&tally)?);
                }
                counts.write(&self.tree, batch).map_err(sm_read_err)?;
                inventory.write(batch)?;
                batch.insert(k, json(&rec)?);
                Ok(CommandResult::AlertsAppended {
                    first_index,
                    appended,
                    duplicates,
                    up_to_seq: rec.last_acked_seq,
                })
            }
            Command::PruneAlerts {
                at_unix_nanos,
                keep_at_most,
                older_than_unix_nanos,
            } => self.prune_alerts(batch, at_unix_nanos, keep_at_most, older_than_unix_nanos),
            Command::AppendAudit {
                at_unix_nanos,
                actor,
                action,
                subject,
                detail,
            } => {
                self.append_audit(batch, at_unix_nanos, actor, action, subject, detail)?;
                Ok(CommandResult::Done)
            }
            Command::ApproveWorkload { workload } => {
                let k = prefixed(WORKLOAD_PREFIX, workload.id.as_bytes());
                batch.insert(k, json(&workload)?);
                Ok(CommandResult::Done)
            }
            Command::RevokeWorkload { id } => {
                let k = prefixed(WORKLOAD_PREFIX, id.as_bytes());
                if self.tree.get(&k).map_err(sm_read_err)?.is_none() {
                    return Ok(CommandResult::Refused {
                        reason: format!("no approved workload {id}"),
                    });
                }
                batch.remove(k);
                Ok(CommandResult::Done)
            }
            Command::RegisterModel {
                record,
                actor,
                at_unix_nanos,
                note,
            } => self.register_model(batch, record, actor, at_unix_nanos, note),
            Command::SetModelState {
                name,
                version,
                state,
                actor,
                reason,
                at_unix_nanos,
            } => self.set_model_state(
                batch,
                ModelChange {
                    name,
                    version,
                    actor,
                    reason,
                    at_unix_nanos,
                },
                state,
            ),
            Command::RollbackModel {
                name,
                version,
                actor,
                reason,
                at_unix_nanos,
            } => self.rollback_model(
                batch,
                ModelChange {
                    name,
                    version,
                    actor,
                    reason,
                    at_unix_nanos,
                },
            ),
            Command::PutUser {
                name,
                role,
                password_hash,
                disabled,
                at_unix_nanos,
                create_only,
            } => self.put_user(
                batch,
                users::PutUser {
                    name,
                    role,
                    password_hash,
                    disabled,
                    at_unix_nanos,
                    create_only,
                },
            ),
            Command::RemoveUser { name } => self.remove_user(batch, &name),
            Command::TriageAlert {
                index,
                actor,
                action,
                at_unix_nanos,
            } => self.triage_alert(
                batch,
                index,
                vigil_domain::TriageEntry {
                    at_unix_nanos,
                    actor,
                    action,
                },
            ),
            Command::PutJoinToken { record } => {
                let k = prefixed(JOIN_TOKEN_PREFIX, record.id.as_bytes());
                if self.tree.get(&k).map_err(sm_read_err)?.is_some() {
                    return Ok(CommandResult::Refused {
                        reason: format!("join token {} exists", record.id),
                    });
                }
                batch.insert(k, json(&record)?);
                Ok(CommandResult::Done)
            }
            Command::UseJoinToken {
                id,
                secret_sha256,
                agent_id,
                now_unix_secs,
            } => {
                let k = prefixed(JOIN_TOKEN_PREFIX, id.as_bytes());
                let mut record =
                    match self.admit_token(&k, id, &secret_sha256, &agent_id, now_unix_secs)? {
                        Ok(record) => record,
                        Err(refused) => return Ok(refused),
                    };
                record.used_by = Some(agent_id);
                batch.insert(k, json(&record)?);
                Ok(CommandResult::Done)
            }
            Command::RevokeCertificate { certificate } => {
                let k = prefixed(REVOKED_CERT_PREFIX, certificate.serial.as_bytes());
                if self.tree.get(&k).map_err(sm_read_err)?.is_some() {
                    return Ok(CommandResult::Refused {
                        reason: format!("certificate {} is already revoked", certificate.serial),
                    });
                }
                batch.insert(k, json(&certificate)?);
                Ok(CommandResult::Done)
            }
            Command::RevokeCertificateV2 { certificate } => {
                // The named certificate, and the one its renewals led to
                // (renewals only: a re-enrollment is a new line), so
                // revoking the file an operator holds cuts the host off
                // however often it renewed.
                let named = certificate.serial.clone();
                let mut last = named.clone();
                let mut hops = 0u32;
                while let Some(s) = self
                    .get_json::<Supersession>(&prefixed(SUPERSEDED_CERT_PREFIX, last.as_bytes()))?
                {
                    if s.new_certificate_pem.is_empty() {
                        break;
                    }
                    last = s.new_serial;
                    hops += 1;
                    if hops > MAX_RENEWAL_CHAIN {
                        return Ok(CommandResult::Refused {
                            reason: format!(
                                "certificate {named} was renewed more than {MAX_RENEWAL_CHAIN} times; revoke its agent's current certificate by serial"
                            ),
                        });
                    }
                }
                let mut revoked_any = false;
                for serial in [named.clone(), last.clone()] {
                    let k = prefixed(REVOKED_CERT_PREFIX, serial.as_bytes());
                    if self.tree.get(&k).map_err(sm_read_err)?.is_some()
                        || (revoked_any && serial == named)
                    {
                        continue;
                    }
                    let mut record = certificate.clone();
                    if serial != named {
                        record.serial = serial.clone();
                        record.reason = format!(
                            "{} (renewed from {named}, {hops} renewal(s) before)",
                            certificate.reason
                        );
                    }
                    batch.insert(k, json(&record)?);
                    revoked_any = true;
                }
                if !revoked_any {
                    return Ok(CommandResult::Refused {
                        reason: format!("certificate {named} is already revoked"),
                    });
                }
                Ok(CommandResult::Done)
            }
            Command::RenewCertificate {
                agent_id,
                presented_serial,
                new_serial,
                new_certificate_pem,
                valid_days,
                at_unix_nanos,
            } => {
                let refuse = |reason: String| Ok(CommandResult::Refused { reason });
                if self
                    .tree
                    .contains_key(prefixed(REVOKED_CERT_PREFIX, presented_serial.as_bytes()))
                    .map_err(sm_read_err)?
                {
                    return refuse(format!("certificate {presented_serial} is revoked"));
                }
                let superseded = prefixed(SUPERSEDED_CERT_PREFIX, presented_serial.as_bytes());
                if let Some(s) = self.get_json::<Supersession>(&superseded)? {
                    // Asked again (the reply was lost): the same key gets
                    // the certificate already issued, nothing changes.
                    let stored = public_key_of(&s.new_certificate_pem);
                    if s.agent_id == agent_id
                        && stored.is_some()
                        && stored == public_key_of(&new_certificate_pem)
                    {
                        return Ok(CommandResult::Renewed {
                            certificate_pem: s.new_certificate_pem,
                        });
                    }
                    return refuse(format!(
                        "certificate {presented_serial} was already renewed (as {}), for another key",
                        s.new_serial
                    ));
                }
                let current_key = prefixed(CURRENT_CERT_PREFIX, agent_id.as_bytes());
                if let Some(current) = self.get_json::<String>(&current_key)? {
                    if current != presented_serial {
                        return refuse(format!(
                            "certificate {presented_serial} is not agent {agent_id}'s current certificate ({current})"
                        ));
                    }
                }
                let last_key = prefixed(LAST_RENEWAL_PREFIX, agent_id.as_bytes());
                if let Some(last) = self.get_json::<i64>(&last_key)? {
                    let since = at_unix_nanos.saturating_sub(last);
                    if since < MIN_RENEWAL_INTERVAL_NANOS {
                        return refuse(format!(
                            "agent {agent_id} renewed its certificate {} s ago; at most one renewal a minute",
                            since.max(0) / 1_000_000_000
                        ));
                    }
                }
                batch.insert(
                    superseded,
                    json(&Supersession {
                        new_serial: new_serial.clone(),
                        agent_id: agent_id.clone(),
                        at_unix_nanos,
                        new_certificate_pem: new_certificate_pem.clone(),
                    })?,
                );
                batch.insert(current_key, json(&new_serial)?);
                batch.insert(last_key, json(&at_unix_nanos)?);
                let actor = format!("agent {agent_id}");
                self.append_audit(
                    batch,
                    at_unix_nanos,
                    actor.clone(),
                    "certificate.renew".into(),
                    actor,
                    format!(
                        "certificate {presented_serial} renewed as {new_serial}, valid {valid_days} days; the old one is no longer accepted"
                    ),
                )?;
                Ok(CommandResult::Renewed {
                    certificate_pem: new_certificate_pem,
                })
            }
            Command::UseJoinTokenV2 {
                id,
                secret_sha256,
                agent_id,
                serial,
                now_unix_secs,
            } => {
                let k = prefixed(JOIN_TOKEN_PREFIX, id.as_bytes());
                let mut record =
                    match self.admit_token(&k, id, &secret_sha256, &agent_id, now_unix_secs)? {
                        Ok(record) => record,
                        Err(refused) => return Ok(refused),
                    };
                let current_key = prefixed(CURRENT_CERT_PREFIX, agent_id.as_bytes());
                let previous = self.get_json::<String>(&current_key)?;
                // Enrolled before: a current certificate on record, or
                // (agents from before the record, or given certificates by
                // hand) an agent that has registered.
                let known = previous.is_some()
                    || self
                        .tree
                        .contains_key(prefixed(AGENT_PREFIX, agent_id.as_bytes()))
                        .map_err(sm_read_err)?;
                if known && record.for_agent.as_deref() != Some(agent_id.as_str()) {
                    return Ok(CommandResult::Refused {
                        reason: format!(
                            "agent {agent_id} is enrolled already; enrolling it again takes a token made for it (vigilctl agent token --agent-id {agent_id})"
                        ),
                    });
                }
                if let Some(previous) = previous {
                    if record.for_agent.as_deref() != Some(agent_id.as_str()) {
                        return Ok(CommandResult::Refused {
                            reason: format!(
                                "agent {agent_id} is enrolled already (certificate {previous}); enrolling it again takes a token made for it (vigilctl agent token --agent-id {agent_id})"
                            ),
                        });
                    }
                    batch.insert(
                        prefixed(SUPERSEDED_CERT_PREFIX, previous.as_bytes()),
                        json(&Supersession {
                            new_serial: serial.clone(),
                            agent_id: agent_id.clone(),
                            at_unix_nanos: (now_unix_secs as i64).saturating_mul(1_000_000_000),
                            // Not handed out again: a re-enrollment is
                            // not a renewal to repeat.
                            new_certificate_pem: String::new(),
                        })?,
                    );
                }
                batch.insert(current_key, json(&serial)?);
                record.used_by = Some(agent_id);
                batch.insert(k, json(&record)?);
                Ok(CommandResult::Done)
            }
            // Applied command by command in `apply`; never inside another.
            Command::Batch { .. } => Ok(CommandResult::Refused {
                reason: "a batch inside a batch".into(),
            }),
            Command::Audited { command, audit } => {
                if matches!(*command, Command::Batch { .. } | Command::Audited { .. }) {
                    return Ok(CommandResult::Refused {
                        reason: "an audited change is one plain command".into(),
                    });
                }
                let result = self.apply_command(*command, batch)?;
                if matches!(
                    result,
                    CommandResult::Refused { .. } | CommandResult::NotFound { .. }
                ) {
                    return Ok(result);
                }
                self.append_audit(
                    batch,
                    audit.at_unix_nanos,
                    audit.actor,
                    audit.action,
                    audit.subject,
                    audit.detail,
                )?;
                Ok(result)
            }
            Command::SetClusterId { cluster_id } => {
                if let Some(set) = self.get_json::<String>(CLUSTER_ID)? {
                    if set != cluster_id {
                        return Ok(CommandResult::Refused {
                            reason: format!("the cluster's id is {set} already"),
                        });
                    }
                    return Ok(CommandResult::Done);
                }
                batch.insert(CLUSTER_ID, json(&cluster_id)?);
                Ok(CommandResult::Done)
            }
            Command::RecordTpmEnrollment {
                agent_id,
                ek_sha256,
                ek_certificate_issuer,
                ak_sha256,
                at_unix_nanos,
            } => {
                let k = prefixed(AGENT_PREFIX, agent_id.as_bytes());
                let Some(mut rec) = self.get_json::<AgentRecord>(&k)? else {
                    return Ok(CommandResult::Refused {
                        reason: format!("TPM enrollment of unregistered agent {agent_id}"),
                    });
                };
                let bound = &rec.attestation.ek_sha256;
                if !bound.is_empty() && *bound != ek_sha256 {
                    return Ok(CommandResult::Refused {
                        reason: format!(
                            "ek-changed: agent {agent_id} is bound to the TPM with EK sha256 {bound}, not {ek_sha256} (`vigilctl agent reset-attestation` after replacing a TPM)"
                        ),
                    });
                }
                let ek_key = prefixed(EK_BINDING_PREFIX, ek_sha256.as_bytes());
                if let Some(owner) = self.get_json::<String>(&ek_key)? {
                    if owner != agent_id {
                        return Ok(CommandResult::Refused {
                            reason: format!(
                                "ek-in-use: the TPM with EK sha256 {ek_sha256} is bound to agent {owner}; one TPM attests one host"
                            ),
                        });
                    }
                }
                batch.insert(ek_key, json(&agent_id)?);
                let first = bound.is_empty();
                rec.attestation.ek_sha256 = ek_sha256.clone();
                rec.attestation.ek_certificate_issuer = ek_certificate_issuer;
                rec.attestation.ak_sha256 = ak_sha256.clone();
                rec.attestation.enrolled_at_unix_nanos = at_unix_nanos;
                if first {
                    self.append_audit_about(
                        batch,
                        Some(AuditAbout {
                            agent_id: &agent_id,
                            hostname: &rec.identity.hostname,
                        }),
                        at_unix_nanos,
                        "verifier".into(),
                        "attest.enroll".into(),
                        format!("agent {agent_id} on {}", rec.identity.hostname),
                        format!("bound to EK sha256 {ek_sha256}; AK sha256 {ak_sha256}"),
                    )?;
                }
                batch.insert(k, json(&rec)?);
                Ok(CommandResult::Done)
            }
            Command::RecordQuote {
                agent_id,
                at_unix_nanos,
                result,
                ek_sha256,
            } => {
                let k = prefixed(AGENT_PREFIX, agent_id.as_bytes());
                let Some(mut rec) = self.get_json::<AgentRecord>(&k)? else {
                    return Ok(CommandResult::Refused {
                        reason: format!("quote result of unregistered agent {agent_id}"),
                    });
                };
                // A quote by a TPM other than the one the host is bound to
                // (a session enrolled before an operator's reset, the host
                // since bound to another TPM) proves nothing about it.
                let bound = &rec.attestation.ek_sha256;
                let result = match result {
                    vigil_domain::QuoteResult::Verified { .. }
                        if !bound.is_empty() && !ek_sha256.is_empty() && *bound != ek_sha256 =>
                    {
                        vigil_domain::QuoteResult::Failed {
                            code: "ek-changed".into(),
                            reason: format!(
                                "the quote was made by the TPM with EK sha256 {ek_sha256}; the host is bound to {bound}"
                            ),
                        }
                    }
                    other => other,
                };
                let had_baseline = !rec.attestation.golden_pcrs.is_empty();
                if rec.attestation.judge(at_unix_nanos, result) {
                    self.trust_changed_pending
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    let host = rec.identity.hostname.clone();
                    self.append_audit_about(
                        batch,
                        Some(AuditAbout {
                            agent_id: &agent_id,
                            hostname: &rec.identity.hostname,
                        }),
                        at_unix_nanos,
                        "verifier".into(),
                        "attest.verdict".into(),
                        format!("agent {agent_id} on {host}"),
                        rec.attestation.trust.to_string(),
                    )?;
                    if let vigil_domain::TrustState::Untrusted { code, reason } =
                        &rec.attestation.trust
                    {
                        self.append_attestation_alert(batch, &rec, code, reason, at_unix_nanos)?;
                    }
                }
                if !had_baseline && !rec.attestation.golden_pcrs.is_empty() {
                    self.append_audit_about(
                        batch,
                        Some(AuditAbout {
                            agent_id: &agent_id,
                            hostname: &rec.identity.hostname,
                        }),
                        at_unix_nanos,
                        "verifier".into(),
                        "attest.baseline".into(),
                        format!("agent {agent_id} on {}", rec.identity.hostname),
                        format!(
                            "golden sha256 PCRs {}",
                            rec.attestation
                                .golden_pcrs
                                .keys()
                                .map(|i| i.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                    )?;
                }
                let trust = rec.attestation.trust.clone();
                batch.insert(k, json(&rec)?);
                Ok(CommandResult::Attested { trust })
            }
            Command::ResetAttestation {
                agent_id,
                actor,
                at_unix_nanos,
            } => {
                let k = prefixed(AGENT_PREFIX, agent_id.as_bytes());
                let Some(mut rec) = self.get_json::<AgentRecord>(&k)? else {
                    return Ok(CommandResult::Refused {
                        reason: format!("no agent {agent_id}"),
                    });
                };
                let before = std::mem::take(&mut rec.attestation);
                if !before.ek_sha256.is_empty() {
                    batch.remove(prefixed(EK_BINDING_PREFIX, before.ek_sha256.as_bytes()));
                }
                rec.attestation.trust_changed_at_unix_nanos = at_unix_nanos;
                self.trust_changed_pending
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.append_audit_about(
                    batch,
                    Some(AuditAbout {
                        agent_id: &agent_id,
                        hostname: &rec.identity.hostname,
                    }),
                    at_unix_nanos,
                    actor,
                    "attest.reset".into(),
                    format!("agent {agent_id} on {}", rec.identity.hostname),
                    format!(
                        "was {}; EK sha256 {} and {} golden PCRs forgotten",
                        before.trust,
                        if before.ek_sha256.is_empty() {
                            "(none)"
                        } else {
                            &before.ek_sha256
                        },
                        before.golden_pcrs.len()
                    ),
                )?;
                batch.insert(k, json(&rec)?);
                Ok(CommandResult::Done)
            }
            Command::PolicyStatus {
                agent_id,
                active_version,
                error,
            } => {
                let k = prefixed(AGENT_PREFIX, agent_id.as_bytes());
                let Some(mut rec) = self.get_json::<AgentRecord>(&k)? else {
                    return Ok(CommandResult::Refused {
                        reason: format!("policy status from unregistered agent {agent_id}"),
                    });
                };
                rec.policy_version = active_version;
                rec.policy_error = error;
                batch.insert(k, json(&rec)?);
                Ok(CommandResult::Done)
            }
            Command::PutPolicyBundle {
                version,
                bundle,
                pushed_at_unix_nanos,
                note,
            } => {
                let active: Option<u64> = self.get_json(ACTIVE_POLICY)?;
                if active.is_some_and(|a| version <= a) {
                    return Ok(CommandResult::Refused {
                        reason: format!(
                            "policy version {version} is not newer than the active {}",
                            active.unwrap_or(0)
                        ),
                    });
                }
                batch.insert(prefixed(POLICY_PREFIX, &version.to_be_bytes()), bundle);
                batch.insert(
                    prefixed(POLICY_META_PREFIX, &version.to_be_bytes()),
                    json(&PolicyMeta {
                        pushed_at_unix_nanos,
                        note,
                    })?,
                );
                batch.insert(ACTIVE_POLICY, json(&version)?);
                Ok(CommandResult::Done)
            }
        }
    }

    /// The join token stored at `k`, if the secret, agent id and time admit
    /// it; else the refusal to return.
    fn admit_token(
        &self,
        k: &[u8],
        id: String,
        secret_sha256: &str,
        agent_id: &str,
        now_unix_secs: u64,
    ) -> Result<Result<vigil_pki::TokenRecord, CommandResult>, StorageError> {
        let Some(record) = self.get_json::<vigil_pki::TokenRecord>(k)? else {
            return Ok(Err(CommandResult::Refused {
                reason: vigil_pki::TokenRefused::Unknown { id }.to_string(),
            }));
        };
        if let Err(refused) = record.admit_digest(secret_sha256, Some(agent_id), now_unix_secs) {
            return Ok(Err(CommandResult::Refused {
                reason: refused.to_string(),
            }));
        }
        Ok(Ok(record))
    }

    /// Forgets what the entry (or batch command) being applied left
    /// pending: its writes are in the tree now, which the next one reads.
    fn forget_pending(&self) {
        if let Ok(mut p) = self.pending_audit_head.lock() {
            *p = None;
        }
        if let Ok(mut p) = self.pending_next_event.lock() {
            *p = None;
        }
    }

    /// Gives `record` the next journal seq (after the ones this batch
    /// wrote already, else the stored ones) and writes it.
    fn journal(
        &self,
        batch: &mut sled::Batch,
        record: &JournalRecord,
    ) -> Result<u64, StorageError> {
        let pending = self.pending_next_event.lock().ok().and_then(|p| *p);
        let seq = match pending {
            Some(n) => n,
            None => self.get_json::<u64>(NEXT_EVENT)?.unwrap_or(1),
        };
        batch.insert(event_key(seq), json(record)?);
        batch.insert(NEXT_EVENT, json(&(seq + 1))?);
        if let Ok(mut p) = self.pending_next_event.lock() {
            *p = Some(seq + 1);
        }
        Ok(seq)
    }

    /// Chains an audit entry after the newest one (in this batch or stored).
    fn append_audit(
        &self,
        batch: &mut sled::Batch,
        at_unix_nanos: i64,
        actor: String,
        action: String,
        subject: String,
        detail: String,
    ) -> Result<(), StorageError> {
        self.append_audit_about(batch, None, at_unix_nanos, actor, action, subject, detail)
    }

    /// `append_audit` for an entry about one host (an enforcement on it,
    /// its attestation), named in the journal for the export's host filter.
    #[allow(clippy::too_many_arguments)]
    fn append_audit_about(
        &self,
        batch: &mut sled::Batch,
        about: Option<AuditAbout<'_>>,
        at_unix_nanos: i64,
        actor: String,
        action: String,
        subject: String,
        detail: String,
    ) -> Result<(), StorageError> {
        let head: Option<(u64, String)> = match self.pending_audit_head.lock() {
            Ok(p) if p.is_some() => p.clone(),
            _ => self.get_json(AUDIT_HEAD)?,
        };
        let (last, prev_hash) = head.unwrap_or((0, crate::audit_chain::GENESIS.to_string()));
        let mut entry = vigil_domain::AuditEntry {
            index: last + 1,
            at_unix_nanos,
            actor,
            action,
            subject,
            detail,
            prev_hash,
            hash: String::new(),
        };
        entry.hash = crate::audit_chain::entry_hash(&entry);
        batch.insert(
            prefixed(AUDIT_PREFIX, &entry.index.to_be_bytes()),
            json(&entry)?,
        );
        let head = (entry.index, entry.hash.clone());
        batch.insert(AUDIT_HEAD, json(&head)?);
        if let Ok(mut p) = self.pending_audit_head.lock() {
            *p = Some(head);
        }
        self.journal(batch, &JournalRecord::of_audit(&entry, about))?;
        Ok(())
    }

    /// An alert the verifier raises (not an agent's finding): seq 0, signal
    /// `attestation`, stored like the others and counted in the tally.
    fn append_attestation_alert(
        &self,
        batch: &mut sled::Batch,
        rec: &AgentRecord,
        code: &str,
        reason: &str,
        at_unix_nanos: i64,
    ) -> Result<(), StorageError> {
        let next: u64 = self.get_json(NEXT_ALERT)?.unwrap_or(1);
        let mut tally: AlertTally = self.get_json(ALERT_TALLY)?.unwrap_or_default();
        let severity = if code == "reboot" || code == "stale" {
            Severity::High
        } else {
            Severity::Critical
        };
        tally.add(SignalKind::Attestation, severity);
        let alert = Alert {
            index: next,
            agent_id: rec.identity.agent_id.clone(),
            hostname: rec.identity.hostname.clone(),
            received_at_unix_nanos: at_unix_nanos,
            finding: vigil_domain::Finding {
                seq: 0,
                rule_id: format!("vigil.attestation.{code}"),
                severity,
                signal: SignalKind::Attestation,
                observed_at_unix_nanos: at_unix_nanos,
                process: vigil_domain::ProcessInfo::default(),
                file: None,
                net: None,
                gpu: None,
                action: String::new(),
                summary: vigil_domain::cut_text(
                    &format!(
                        "host {} (agent {}) failed attestation ({code}): {reason}",
                        rec.identity.hostname, rec.identity.agent_id
                    ),
                    1024,
                ),
            },
        };
        let mut counts = finding_counts::CountChanges::default();
        counts.count(
            at_unix_nanos,
            &alert.agent_id,
            &alert.finding.rule_id,
            &alert.finding.process.exe,
            true,
        );
        counts.write(&self.tree, batch).map_err(sm_read_err)?;
        batch.insert(alert_key(next), json(&alert)?);
        batch.insert(NEXT_ALERT, json(&(next + 1))?);
        batch.insert(ALERT_TALLY, json(&tally)?);
        self.journal(batch, &JournalRecord::of_alert(&alert))?;
        Ok(())
    }

    /// `prune_alerts.v1`: removes the oldest alerts beyond the count and
    /// before the age, at most [`PRUNE_AT_MOST`], keeping the tally.
    fn prune_alerts(
        &self,
        batch: &mut sled::Batch,
        at_unix_nanos: i64,
        keep_at_most: u64,
        older_than_unix_nanos: i64,
    ) -> Result<CommandResult, StorageError> {
        let mut tally: AlertTally = self.get_json(ALERT_TALLY)?.unwrap_or_default();
        let mut pruned: AlertTally = self.get_json(PRUNED_TALLY)?.unwrap_or_default();
        let mut stored = tally.total();
        let (mut removed, mut more) = (0u64, false);
        let mut last_removed = 0u64;
        let mut triage_tally = None;
        // The dashboard's counters lose what is removed, in this batch.
        let mut counts = finding_counts::CountChanges::default();
        for kv in self.tree.scan_prefix(ALERT_PREFIX) {
            let (k, v) = kv.map_err(sm_read_err)?;
            let alert: finding_counts::CountedAlert =
                serde_json::from_slice(&v).map_err(sm_read_err)?;
            let over_count = keep_at_most > 0 && stored > keep_at_most;
            let too_old =
                older_than_unix_nanos > 0 && alert.received_at_unix_nanos < older_than_unix_nanos;
            if !over_count && !too_old {
                // Stored in index order, the order they were received in
                // (up to clock differences between leaders): the first
                // alert not due ends the run that is.
                break;
            }
            if removed == PRUNE_AT_MOST {
                more = true;
                break;
            }
            tally.remove(alert.finding.signal, alert.finding.severity);
            pruned.add(alert.finding.signal, alert.finding.severity);
            counts.count(
                alert.received_at_unix_nanos,
                &alert.agent_id,
                &alert.finding.rule_id,
                &alert.finding.process.exe,
                false,
            );
            last_removed = k
                .get(ALERT_PREFIX.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map_or(0, u64::from_be_bytes);
            // Its triage goes with it, in the same batch.
            self.prune_triage(
                batch,
                &mut triage_tally,
                last_removed,
                alert.finding.severity.as_str(),
            )?;
            batch.remove(k);
            stored = stored.saturating_sub(1);
            removed += 1;
        }
        Self::write_triage_tally(batch, triage_tally)?;
        if removed > 0 {
            counts.write(&self.tree, batch).map_err(sm_read_err)?;
            self.prune_journal(batch, last_removed)?;
            batch.insert(ALERT_TALLY, json(&tally)?);
            batch.insert(PRUNED_TALLY, json(&pruned)?);
            self.append_audit(
                batch,
                at_unix_nanos,
                "control plane".to_string(),
                "alerts.prune".to_string(),
                format!("{removed} alerts"),
                format!(
                    "retention: keep at most {keep_at_most} (0: any number), none received before {older_than_unix_nanos} ns (0: any age)"
                ),
            )?;
        }
        Ok(CommandResult::AlertsPruned { removed, more })
    }

    /// Removes the journal's prefix up to the record of alert
    /// `last_removed` (the newest alert retention just removed): the alerts
    /// before it and the audit entries between them leave the export (the
    /// audit chain itself stays, for the admin API). `meta/first_event`
    /// names the oldest seq kept. Only a prefix, the same on every node.
    fn prune_journal(
        &self,
        batch: &mut sled::Batch,
        last_removed: u64,
    ) -> Result<(), StorageError> {
        let mut first: Option<u64> = None;
        let mut through: Option<u64> = None;
        let mut doomed = Vec::new();
        for kv in self.tree.scan_prefix(EVENT_PREFIX) {
            let (k, v) = kv.map_err(sm_read_err)?;
            let record: JournalRecord = serde_json::from_slice(&v).map_err(sm_read_err)?;
            let seq = seq_of(&k);
            first.get_or_insert(seq);
            match record.refers {
                JournalRef::Alert(i) if i > last_removed => break,
                JournalRef::Alert(i) => {
                    doomed.push(k);
                    if i == last_removed {
                        through = Some(seq);
                        break;
                    }
                }
                JournalRef::Audit(_) => doomed.push(k),
            }
        }
        // Nothing of the removed alerts is journaled (they were stored
        // before the journal was): the journal stays as it is.
        let Some(through) = through else {
            return Ok(());
        };
        for k in doomed {
            batch.remove(k);
        }
        batch.insert(FIRST_EVENT, json(&(through + 1))?);
        Ok(())
    }

    /// `register_model.v1`.
    fn register_model(
        &self,
        batch: &mut sled::Batch,
        mut record: vigil_domain::ModelRecord,
        actor: String,
        at_unix_nanos: i64,
        note: String,
    ) -> Result<CommandResult, StorageError> {
        if let Err(e) = record.check() {
            return Ok(CommandResult::Refused {
                reason: format!("model record: {e}"),
            });
        }
        let k = model_key(&record.name, record.version);
        if let Some(existing) = self.get_json::<vigil_domain::ModelRecord>(&k)? {
            let (name, version) = (&record.name, record.version);
            if existing.sha256 != record.sha256 {
                return Ok(CommandResult::Refused {
                    reason: format!(
                        "model {name} version {version} is registered already with sha256 {}; another file needs another version",
                        existing.sha256
                    ),
                });
            }
            if !existing.same_signed_fields(&record) {
                return Ok(CommandResult::Refused {
                    reason: format!(
                        "model {name} version {version} is registered already with other signed fields (hosts, limits, listen or signature); register another version"
                    ),
                });
            }
            // The same registration again (a reply lost): nothing changes.
            return Ok(CommandResult::Model(Box::new(existing)));
        }
        record.state = vigil_domain::ModelState::Registered;
        record.registered_by = actor.clone();
        record.registered_at_unix_nanos = at_unix_nanos;
        record.changed_by = actor.clone();
        record.reason = note;
        batch.insert(k, json(&record)?);
        self.append_audit(
            batch,
            at_unix_nanos,
            actor,
            "model.register".into(),
            format!("model {} version {}", record.name, record.version),
            format!(
                "sha256 {}; {} bytes; format {}; hosts {}; signed by {}; note: {}",
                record.sha256,
                record.size,
                record.format,
                if record.hosts.is_empty() {
                    "all".to_string()
                } else {
                    record.hosts.join(",")
                },
                record.signer,
                record.reason
            ),
        )?;
        Ok(CommandResult::Model(Box::new(record)))
    }

    /// The stored record a change is about, or the refusal to return.
    fn model_for_change(
        &self,
        change: &ModelChange,
    ) -> Result<Result<vigil_domain::ModelRecord, CommandResult>, StorageError> {
        Ok(
            match self.get_json(&model_key(&change.name, change.version))? {
                Some(r) => Ok(r),
                None => Err(CommandResult::NotFound {
                    reason: format!(
                        "no model {} version {} is registered",
                        change.name, change.version
                    ),
                }),
            },
        )
    }

    /// `set_model_state.v1`.
    fn set_model_state(
        &self,
        batch: &mut sled::Batch,
        change: ModelChange,
        to: vigil_domain::ModelState,
    ) -> Result<CommandResult, StorageError> {
        use vigil_domain::ModelState::*;
        let mut record = match self.model_for_change(&change)? {
            Ok(r) => r,
            Err(refused) => return Ok(refused),
        };
        let (name, version) = (&change.name, change.version);
        let refuse = |reason: String| Ok(CommandResult::Refused { reason });
        let pin_key = prefixed(MODEL_PIN_PREFIX, name.as_bytes());
        let pin: Option<u64> = self.get_json(&pin_key)?;
        let action = match (record.state, to) {
            (Registered, Approved) => {
                // A newer version approved ends a rollback.
                if pin.is_some_and(|p| version > p) {
                    batch.remove(pin_key.clone());
                }
                "model.approve"
            }
            (Approved, Approved) => {
                return refuse(format!("model {name} version {version} is already approved"))
            }
            (Revoked, Approved) => {
                return refuse(format!(
                    "model {name} version {version} was revoked and is never approved again; register a new version"
                ))
            }
            (Registered | Approved, Revoked) => {
                if pin == Some(version) {
                    batch.remove(pin_key.clone());
                }
                "model.revoke"
            }
            (Revoked, Revoked) => {
                return refuse(format!("model {name} version {version} is already revoked"))
            }
            (_, Registered) => {
                return refuse(format!(
                    "model {name} version {version}: a model is never set back to registered"
                ))
            }
        };
        let before = record.state;
        record.state = to;
        record.changed_by = change.actor.clone();
        record.reason = change.reason.clone();
        batch.insert(model_key(name, version), json(&record)?);
        self.append_audit(
            batch,
            change.at_unix_nanos,
            change.actor,
            action.into(),
            format!("model {name} version {version}"),
            format!(
                "{before} -> {to}; sha256 {}; reason: {}",
                record.sha256, change.reason
            ),
        )?;
        Ok(CommandResult::Model(Box::new(record)))
    }

    /// `rollback_model.v1`.
    fn rollback_model(
        &self,
        batch: &mut sled::Batch,
        change: ModelChange,
    ) -> Result<CommandResult, StorageError> {
        let record = match self.model_for_change(&change)? {
            Ok(r) => r,
            Err(refused) => return Ok(refused),
        };
        let (name, version) = (&change.name, change.version);
        if record.state != vigil_domain::ModelState::Approved {
            return Ok(CommandResult::Refused {
                reason: format!(
                    "model {name} version {version} is {}: only an approved version can be rolled back to",
                    record.state
                ),
            });
        }
        let pin_key = prefixed(MODEL_PIN_PREFIX, name.as_bytes());
        let before: Option<u64> = self.get_json(&pin_key)?;
        batch.insert(pin_key, json(&version)?);
        self.append_audit(
            batch,
            change.at_unix_nanos,
            change.actor,
            "model.rollback".into(),
            format!("model {name} version {version}"),
            format!(
                "pinned to version {version}{}; sha256 {}; reason: {}",
                before
                    .map(|b| format!(" (was pinned to {b})"))
                    .unwrap_or_default(),
                record.sha256,
                change.reason
            ),
        )?;
        Ok(CommandResult::Model(Box::new(record)))
    }

    /// Tells the agent sessions when another policy version became active.
    fn publish_active_policy(&self) -> Result<(), StorageError> {
        let active: u64 = match self.tree.get(ACTIVE_POLICY).map_err(sm_read_err)? {
            Some(v) => serde_json::from_slice(&v).map_err(sm_read_err)?,
            None => 0,
        };
        self.active_policy
            .send_if_modified(|v| std::mem::replace(v, active) != active);
        Ok(())
    }
}

/// Whether applying `cmd` changes the approved workloads, whether it
/// revokes or retires a certificate (a renewal or re-enrollment retires
/// one too: streams opened with it end, and the agent reconnects), and
/// whether it changes the model records, and whether it changes the users.
fn notices(cmd: &Command) -> (bool, bool, bool, bool) {
    if let Command::Audited { command, .. } = cmd {
        return notices(command);
    }
    (
        matches!(
            cmd,
            Command::ApproveWorkload { .. } | Command::RevokeWorkload { .. }
        ),
        matches!(
            cmd,
            Command::RevokeCertificate { .. }
                | Command::RevokeCertificateV2 { .. }
                | Command::RenewCertificate { .. }
                | Command::UseJoinTokenV2 { .. }
        ),
        matches!(
            cmd,
            Command::RegisterModel { .. }
                | Command::SetModelState { .. }
                | Command::RollbackModel { .. }
        ),
        matches!(cmd, Command::PutUser { .. } | Command::RemoveUser { .. }),
    )
}

/// Whether applying `cmd` may change a triage record (a step, or
/// retention removing triaged alerts).
fn touches_triage(cmd: &Command) -> bool {
    match cmd {
        Command::Audited { command, .. } => touches_triage(command),
        Command::TriageAlert { .. } | Command::PruneAlerts { .. } => true,
        _ => false,
    }
}

/// Who changes which model version, why and when.
struct ModelChange {
    name: String,
    version: u64,
    actor: String,
    reason: String,
    at_unix_nanos: i64,
}

/// A certificate replaced by a renewal (or a re-enrollment).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Supersession {
    pub new_serial: String,
    pub agent_id: String,
    pub at_unix_nanos: i64,
    /// What the renewal handed out, to hand out again when it is asked
    /// again for the same key (empty for a re-enrollment).
    #[serde(default)]
    pub new_certificate_pem: String,
}

/// What the control plane holds of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateStanding {
    Good,
    /// Replaced by a renewal: accepted only to ask for that renewal again.
    Superseded,
    Revoked,
    /// The node is installing a snapshot: its state is part old, part new
    /// and cannot say (callers are refused as UNAVAILABLE meanwhile).
    Unsettled,
}

/// The public key a certificate (PEM) certifies; None when it cannot be
/// read.
fn public_key_of(pem: &str) -> Option<Vec<u8>> {
    vigil_pki::CertificateInfo::from_pem(pem)
        .ok()
        .map(|c| c.public_key_der)
}

/// The inventory items one apply changed, written with its other keys.
#[derive(Default)]
struct InventoryUpdate {
    items: BTreeMap<Vec<u8>, InventoryItem>,
    /// Items stored, when a new one was added.
    count: Option<u64>,
    /// Sightings refused for lack of room, when one was.
    refused: Option<u64>,
    /// (key, items) the agent's findings created, when one was added.
    by_agent: Option<(Vec<u8>, u64)>,
}

impl InventoryUpdate {
    fn write(self, batch: &mut sled::Batch) -> Result<(), StorageError> {
        for (k, item) in &self.items {
            batch.insert(k.as_slice(), json(item)?);
        }
        if let Some(n) = self.count {
            batch.insert(INVENTORY_ITEMS, json(&n)?);
        }
        if let Some(n) = self.refused {
            batch.insert(INVENTORY_REFUSED, json(&n)?);
        }
        if let Some((k, n)) = self.by_agent {
            batch.insert(k, json(&n)?);
        }
        Ok(())
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(v).map_err(sm_write_err)
}

fn last_alert_in(tree: &sled::Tree) -> Result<u64, sled::Error> {
    Ok(tree
        .scan_prefix(ALERT_PREFIX)
        .keys()
        .next_back()
        .transpose()?
        .and_then(|k| {
            Some(u64::from_be_bytes(
                k.get(ALERT_PREFIX.len()..)?.try_into().ok()?,
            ))
        })
        .unwrap_or(0))
}

impl RaftSnapshotBuilder<TypeConfig> for SledStateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applying = self.applying.clone();
        let quiet = applying.read().await;
        let last_log_id: Option<LogId> = self.get_json::<Option<LogId>>(LAST_APPLIED)?.flatten();
        let last_membership: StoredMembership = self.get_json(MEMBERSHIP)?.unwrap_or_default();
        let building = self.snapshot_dir.join(unique_name("building"));
        let (tree, path) = (self.tree.clone(), building.clone());
        let size = tokio::task::spawn_blocking(move || write_tree(&tree, &path))
            .await
            .map_err(snap_err)?
            .map_err(snap_err)?;
        let snapshot_id = match last_log_id {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, size),
            None => format!("empty-{size}"),
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let (db, dir, m) = (self.db.clone(), self.snapshot_dir.clone(), meta.clone());
        let (meta, path) = tokio::task::spawn_blocking(move || {
            sync_dir(&dir)?;
            record_snapshot(&db, &dir, &m, &building)
        })
        .await
        .map_err(snap_err)?
        .map_err(snap_err)?;
        // Held until recorded: an install cannot come between (and a
        // snapshot older than the current one is never recorded).
        drop(quiet);
        let file = tokio::fs::File::open(&path).await.map_err(snap_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for SledStateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let last: Option<LogId> = self.get_json::<Option<LogId>>(LAST_APPLIED)?.flatten();
        let membership: StoredMembership = self.get_json(MEMBERSHIP)?.unwrap_or_default();
        Ok((last, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let applying = self.applying.clone();
        let _alone = applying.write().await;
        // From here: waiting for a snapshot being read is not a stall.
        let _in_flight = self.writes.begin("state machine apply");
        let mut results = Vec::new();
        let mut workloads_changed = false;
        let mut revocations_changed = false;
        let mut models_changed = false;
        let mut users_changed = false;
        let mut triage_changed = false;
        for entry in entries {
            self.forget_pending();
            let mut batch = sled::Batch::default();
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(Command::Batch { commands }) => {
                    let done = match self.get_json::<(u64, usize)>(BATCH_PROGRESS)? {
                        Some((index, n)) if index == entry.log_id.index => n,
                        _ => 0,
                    };
                    let mut out = Vec::with_capacity(commands.len());
                    for (i, sub) in commands.into_iter().enumerate() {
                        if i < done {
                            out.push(CommandResult::Done);
                            continue;
                        }
                        let (w, r, m, u) = notices(&sub);
                        workloads_changed |= w;
                        revocations_changed |= r;
                        models_changed |= m;
                        users_changed |= u;
                        triage_changed |= touches_triage(&sub);
                        let mut sub_batch = sled::Batch::default();
                        let result = self.apply_command(sub, &mut sub_batch)?;
                        sub_batch.insert(BATCH_PROGRESS, json(&(entry.log_id.index, i + 1))?);
                        self.apply_visible(sub_batch)?;
                        self.forget_pending();
                        out.push(result);
                    }
                    batch.remove(BATCH_PROGRESS);
                    CommandResult::Batch(out)
                }
                EntryPayload::Normal(cmd) => {
                    let (w, r, m, u) = notices(&cmd);
                    workloads_changed |= w;
                    revocations_changed |= r;
                    models_changed |= m;
                    users_changed |= u;
                    triage_changed |= touches_triage(&cmd);
                    self.apply_command(cmd, &mut batch)?
                }
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m);
                    batch.insert(
                        MEMBERSHIP,
                        serde_json::to_vec(&stored).map_err(sm_write_err)?,
                    );
                    CommandResult::Done
                }
            };
            batch.insert(
                LAST_APPLIED,
                serde_json::to_vec(&Some(entry.log_id)).map_err(sm_write_err)?,
            );
            self.apply_visible(batch)?;
            // Stored now: the next entry reads the head from the tree.
            self.forget_pending();
            results.push(result);
        }
        // No fsync here: what was applied is in the raft log, flushed
        // before it could commit, and the log and this tree share one sled
        // store, which recovers a prefix of its writes, so after a crash
        // the tree is at or behind the log and openraft re-applies from
        // LAST_APPLIED up to the saved commit index. (A log purge flushes,
        // so no entry leaves the log before its effects are durable here.)
        let last = last_alert_in(&self.tree).map_err(sm_read_err)?;
        self.last_alert
            .send_if_modified(|v| std::mem::replace(v, last) != last);
        let last = last_event_in(&self.tree).map_err(sm_read_err)?;
        self.last_event
            .send_if_modified(|v| std::mem::replace(v, last) != last);
        self.publish_active_policy()?;
        if workloads_changed {
            self.workloads_changed.send_modify(|g| *g += 1);
        }
        if revocations_changed {
            self.revocations_changed.send_modify(|g| *g += 1);
        }
        if models_changed {
            self.models_changed.send_modify(|g| *g += 1);
        }
        if users_changed {
            self.users_changed.send_modify(|g| *g += 1);
        }
        if triage_changed {
            self.triage_changed.send_modify(|g| *g += 1);
        }
        if self
            .trust_changed_pending
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.trust_changed.send_modify(|g| *g += 1);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Self {
            db: self.db.clone(),
            tree: self.tree.clone(),
            snapshots: self.snapshots.clone(),
            last_alert: self.last_alert.clone(),
            active_policy: self.active_policy.clone(),
            workloads_changed: self.workloads_changed.clone(),
            revocations_changed: self.revocations_changed.clone(),
            models_changed: self.models_changed.clone(),
            users_changed: self.users_changed.clone(),
            triage_changed: self.triage_changed.clone(),
            trust_changed: self.trust_changed.clone(),
            trust_changed_pending: self.trust_changed_pending.clone(),
            pending_audit_head: self.pending_audit_head.clone(),
            pending_next_event: self.pending_next_event.clone(),
            last_event: self.last_event.clone(),
            applying: self.applying.clone(),
            changing: self.changing.clone(),
            writes: self.writes.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            receiving: self.receiving.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let path = self.snapshot_dir.join(unique_name("receiving"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(snap_err)?;
        let previous = self.receiving.lock().ok().and_then(|mut r| r.replace(path));
        if let Some(abandoned) = previous {
            let _ = tokio::fs::remove_file(abandoned).await;
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let applying = self.applying.clone();
        let _alone = applying.write().await;
        let installing = self.snapshot_dir.join(INSTALLING_FILE);
        let received = self.receiving.lock().ok().and_then(|mut r| r.take());
        snapshot.flush().await.map_err(snap_err)?;
        match received {
            Some(path) => {
                snapshot.sync_all().await.map_err(snap_err)?;
                drop(snapshot);
                tokio::fs::rename(&path, &installing)
                    .await
                    .map_err(snap_err)?;
            }
            // Not one this state machine received (a snapshot handed over
            // whole): copied.
            None => {
                snapshot
                    .seek(std::io::SeekFrom::Start(0))
                    .await
                    .map_err(snap_err)?;
                let mut out = tokio::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&installing)
                    .await
                    .map_err(snap_err)?;
                tokio::io::copy(&mut snapshot, &mut out)
                    .await
                    .map_err(snap_err)?;
                out.sync_all().await.map_err(snap_err)?;
            }
        }
        // The marker, then the state replaced in batches, then the marker
        // gone with the last batch (`snapshot_file.rs`).
        let (db, tree, dir, snapshot_id, changing) = (
            self.db.clone(),
            self.tree.clone(),
            self.snapshot_dir.clone(),
            meta.snapshot_id.clone(),
            self.changing.clone(),
        );
        let meta = meta.clone();
        tokio::task::spawn_blocking(move || -> Result<(), SnapshotFileError> {
            sync_dir(&dir)?;
            // Readers wait for the whole install: half of it is a state
            // no log ever produced.
            let _changing = changing
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A bad snapshot is refused before anything changes.
            if let Err(e) = verify(&installing) {
                let _ = std::fs::remove_file(&installing);
                return Err(e);
            }
            let marker = serde_json::to_vec(&meta).map_err(|e| SnapshotFileError::Format {
                path: installing.clone(),
                why: e.to_string(),
            })?;
            tree.insert(INSTALLING, marker)?;
            tree.flush()?;
            install_into(
                &tree,
                &installing,
                &[LAST_APPLIED, MEMBERSHIP],
                final_keys(&meta)?,
            )?;
            ensure_alert_tally(&tree)
                .and_then(|()| finding_counts::ensure_finding_counts(&tree))
                .map_err(|e| SnapshotFileError::Format {
                    path: installing.clone(),
                    why: e.to_string(),
                })?;
            record_snapshot(&db, &dir, &meta, &installing)?;
            // The marker goes last: until the snapshot is recorded, a
            // restart finishes the install (`finish_interrupted_install`).
            tree.remove(INSTALLING)?;
            tree.flush()?;
            Ok(())
        })
        .await
        .map_err(sm_write_err)?
        .map_err(sm_write_err)?;
        self.db.flush_async().await.map_err(sm_write_err)?;
        tracing::info!(snapshot = %snapshot_id, "installed a snapshot");
        let last = last_alert_in(&self.tree).map_err(sm_read_err)?;
        self.last_alert.send_replace(last);
        let last = last_event_in(&self.tree).map_err(sm_read_err)?;
        self.last_event.send_replace(last);
        self.publish_active_policy()?;
        self.workloads_changed.send_modify(|g| *g += 1);
        self.revocations_changed.send_modify(|g| *g += 1);
        self.models_changed.send_modify(|g| *g += 1);
        self.users_changed.send_modify(|g| *g += 1);
        self.triage_changed.send_modify(|g| *g += 1);
        self.trust_changed.send_modify(|g| *g += 1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        // A build or install may replace the file between reading the
        // record and opening it (the old file is then gone): read again.
        for _ in 0..3 {
            let Some((meta, name)) = current_snapshot(&self.db).map_err(sm_read_err)? else {
                return Ok(None);
            };
            match tokio::fs::File::open(self.snapshot_dir.join(&name)).await {
                Ok(file) => {
                    return Ok(Some(Snapshot {
                        meta,
                        snapshot: Box::new(file),
                    }))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(sm_read_err(e)),
            }
        }
        Err(sm_read_err(std::io::Error::other(
            "the current snapshot's file kept changing while it was opened",
        )))
    }
}

#[cfg(test)]
#[path = "state_machine_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "event_journal_tests.rs"]
mod journal_tests;
