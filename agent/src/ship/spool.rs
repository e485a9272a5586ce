//! The on-disk spool (sled): every finding is written here before it is
//! shipped, and leaves only when the control plane acks it.
//!
//! Architecture invariant: a finding is removed from the spool only by an
//! ack (or a rejection, which moves it to the `rejected` tree); an agent or
//! control plane that is down loses nothing that the spool took.
//!
//! The spool is bounded: past its quota (findings, bytes) or when its file
//! system is nearly out of space it refuses a finding with
//! [`SpoolError::Full`] before writing anything, so that an absent control
//! plane or a flood of findings cannot fill the disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use vigil_domain::Finding;

const FINDING_PREFIX: &[u8] = b"f/";
const LAST_SEQ_KEY: &[u8] = b"m/last_seq";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("spool entry {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("spool full: {0}")]
    Full(Fullness),
}

/// Why the spool takes no more findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fullness {
    /// As many findings as the quota allows are waiting.
    Findings { waiting: u64, max: u64 },
    /// The waiting findings take as many bytes as the quota allows.
    Bytes { waiting: u64, max: u64 },
    /// The spool's file system has less free space than it keeps.
    Disk { free: u64, keep: u64 },
}

impl std::fmt::Display for Fullness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fullness::Findings { waiting, max } => {
                write!(f, "{waiting} findings waiting, quota {max}")
            }
            Fullness::Bytes { waiting, max } => {
                write!(f, "{waiting} bytes of findings waiting, quota {max}")
            }
            Fullness::Disk { free, keep } => {
                write!(f, "{free} bytes free on disk, keeping {keep}")
            }
        }
    }
}

/// How much the spool holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolQuota {
    /// Findings waiting for an ack.
    pub max_findings: u64,
    /// Bytes of findings (as stored) waiting for an ack.
    pub max_bytes: u64,
    /// Free space left on the spool's file system, below which no finding
    /// is taken: acks and the agent's other state still need room to be
    /// written.
    pub keep_free_bytes: u64,
}

impl SpoolQuota {
    pub const UNLIMITED: Self = Self {
        max_findings: u64::MAX,
        max_bytes: u64::MAX,
        keep_free_bytes: 0,
    };
}

#[derive(Clone)]
pub struct Spool {
    db: sled::Db,
    findings: sled::Tree,
    rejected: sled::Tree,
    last_seq: Arc<Mutex<u64>>,
    notify: Arc<Notify>,
    dir: PathBuf,
    quota: SpoolQuota,
    /// Findings and bytes waiting, kept with every push, ack and rejection
    /// (counting them in sled would scan the tree for every finding).
    waiting: Arc<Waiting>,
}

#[derive(Default)]
struct Waiting {
    findings: AtomicU64,
    bytes: AtomicU64,
}

impl Waiting {
    fn add(&self, bytes: usize) {
        self.findings.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn remove(&self, bytes: usize) {
        let _ = self
            .findings
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(bytes as u64))
            });
    }
}

fn finding_key(seq: u64) -> Vec<u8> {
    let mut k = FINDING_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(
        key.get(FINDING_PREFIX.len()..)?.try_into().ok()?,
    ))
}

/// Whether a finding of `bytes` leaves `keep` bytes free on a file system
/// with `blocks_free` blocks of `fragment_size` bytes free.
///
/// Free blocks counted with `f_bfree`, not `f_bavail`: the agent runs as
/// root and may use the blocks reserved for root, so users filling a
/// shared file system up to the reserve do not make the spool refuse
/// findings (which is what such a user would want).
fn disk_room(
    blocks_free: u64,
    fragment_size: u64,
    keep: u64,
    bytes: usize,
) -> Result<(), Fullness> {
    let free = blocks_free.saturating_mul(fragment_size);
    if free < keep.saturating_add(bytes as u64) {
        return Err(Fullness::Disk { free, keep });
    }
    Ok(())
}

impl Spool {
    /// Opens the spool in `dir` without a quota (see [`Spool::with_quota`]).
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        let db = sled::open(dir)?;
        let findings = db.open_tree("spool.v1")?;
        let rejected = db.open_tree("spool.v1.rejected")?;
        let stored = findings
            .get(LAST_SEQ_KEY)?
            .and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?)))
            .unwrap_or(0);
        let newest = findings
            .scan_prefix(FINDING_PREFIX)
            .keys()
            .next_back()
            .transpose()?
            .and_then(|k| seq_of(&k))
            .unwrap_or(0);
        let waiting = Waiting::default();
        for value in findings.scan_prefix(FINDING_PREFIX).values() {
            waiting.add(value?.len());
        }
        Ok(Self {
            db,
            findings,
            rejected,
            last_seq: Arc::new(Mutex::new(stored.max(newest))),
            notify: Arc::new(Notify::new()),
            dir: dir.to_path_buf(),
            quota: SpoolQuota::UNLIMITED,
            waiting: Arc::new(waiting),
        })
    }

    /// The spool, refusing findings past `quota`.
    pub fn with_quota(mut self, quota: SpoolQuota) -> Self {
        self.quota = quota;
        self
    }

    /// Whether a finding of `bytes` fits the quota (`within_quota`) and the
    /// file system's free space.
    fn room_for(&self, bytes: usize, within_quota: bool) -> Result<(), Fullness> {
        let q = &self.quota;
        if within_quota {
            let waiting = self.waiting.findings.load(Ordering::Relaxed);
            if waiting >= q.max_findings {
                return Err(Fullness::Findings {
                    waiting,
                    max: q.max_findings,
                });
            }
            let waiting = self.waiting.bytes.load(Ordering::Relaxed);
            if waiting.saturating_add(bytes as u64) > q.max_bytes {
                return Err(Fullness::Bytes {
                    waiting,
                    max: q.max_bytes,
                });
            }
        }
        if q.keep_free_bytes > 0 {
            // One statvfs per finding: findings are rare next to events.
            // When it cannot be read, the write itself will say.
            if let Ok(st) = nix::sys::statvfs::statvfs(&self.dir) {
                // The libc types differ between targets (u32 on some).
                #[allow(clippy::unnecessary_cast)]
                let (blocks_free, fragment_size) =
                    (st.blocks_free() as u64, st.fragment_size() as u64);
                disk_room(blocks_free, fragment_size, q.keep_free_bytes, bytes)?;
            }
        }
        Ok(())
    }

    /// Assigns the next sequence number and stores the finding. Durable once
    /// `flush` returns. Refuses it ([`SpoolError::Full`]) past the quota or
    /// when the disk is nearly full.
    pub fn push(&self, finding: Finding) -> Result<u64, SpoolError> {
        self.store(finding, true)
    }

    /// Like `push`, past the quota (not past the disk's reserve): for the
    /// agent's own alert that the spool is full.
    pub fn push_over_quota(&self, finding: Finding) -> Result<u64, SpoolError> {
        self.store(finding, false)
    }

    fn store(&self, mut finding: Finding, within_quota: bool) -> Result<u64, SpoolError> {
        let mut last = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *last + 1;
        finding.seq = seq;
        let value = serde_json::to_vec(&finding).map_err(|source| SpoolError::Corrupt {
            key: format!("seq {seq}"),
            source,
        })?;
        self.room_for(value.len(), within_quota)
            .map_err(SpoolError::Full)?;
        let bytes = value.len();
        // One insert: the finding's own key says its seq was used. The
        // last seq is written only with removals ([`Spool::removal`]):
        // a `Batch` of both cost 50-200 µs here against 6-9 µs for one
        // insert, on every finding's path.
        self.findings.insert(finding_key(seq), value)?;
        self.waiting.add(bytes);
        *last = seq;
        drop(last);
        self.notify.notify_one();
        Ok(seq)
    }

    /// The database the spool lives in, for the agent's other state.
    pub fn database(&self) -> &sled::Db {
        &self.db
    }

    pub async fn flush(&self) -> Result<(), SpoolError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Waits until something was pushed since the last call.
    pub async fn pushed(&self) {
        self.notify.notified().await
    }

    /// Up to `limit` findings with seq > `after`, oldest first. A corrupt
    /// entry is moved to the rejected tree and skipped.
    pub fn pending(&self, after: u64, limit: usize) -> Result<Vec<Finding>, SpoolError> {
        let mut out = Vec::new();
        for item in self
            .findings
            .range(finding_key(after.saturating_add(1))..finding_key(u64::MAX))
        {
            let (k, v) = item?;
            match serde_json::from_slice::<Finding>(&v) {
                Ok(f) => out.push(f),
                Err(e) => {
                    tracing::error!(key = ?k, error = %e, "corrupt spool entry moved aside");
                    let bytes = v.len();
                    self.rejected.insert(&k, v)?;
                    let mut batch = self.removal();
                    batch.remove(k);
                    self.findings.apply_batch(batch)?;
                    self.waiting.remove(bytes);
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The highest seq that is no longer waiting: everything at or below it
    /// was acked (or nothing was ever spooled).
    pub fn ack_floor(&self) -> Result<u64, SpoolError> {
        let first = self
            .findings
            .scan_prefix(FINDING_PREFIX)
            .keys()
            .next()
            .transpose()?
            .and_then(|k| seq_of(&k));
        Ok(match first {
            Some(seq) => seq - 1,
            None => *self.last_seq.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }

    /// The control plane holds every finding up to `up_to`: drop them.
    pub fn ack(&self, up_to: u64) -> Result<usize, SpoolError> {
        let mut batch = self.removal();
        let mut acked = Vec::new();
        for item in self.findings.range(finding_key(0)..=finding_key(up_to)) {
            let (k, v) = item?;
            batch.remove(k);
            acked.push(v.len());
        }
        self.findings.apply_batch(batch)?;
        for bytes in &acked {
            self.waiting.remove(*bytes);
        }
        Ok(acked.len())
    }

    /// A batch that removes findings starts here: it records the last seq
    /// handed out, so that a seq is never used twice. Architecture
    /// invariant: every seq ever stored is either still a key of the spool
    /// or at most the stored last seq (a removal writes both at once), and
    /// [`Spool::open`] starts after the larger of the two.
    fn removal(&self) -> sled::Batch {
        let last = *self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = sled::Batch::default();
        batch.insert(LAST_SEQ_KEY, &last.to_be_bytes());
        batch
    }

    /// The control plane will never take this finding: keep it aside with the reason.
    pub fn reject(&self, seq: u64, reason: &str) -> Result<(), SpoolError> {
        if let Some(v) = self.findings.get(finding_key(seq))? {
            let mut batch = self.removal();
            batch.remove(finding_key(seq));
            self.findings.apply_batch(batch)?;
            self.waiting.remove(v.len());
            let record = serde_json::json!({
                "reason": reason,
                "finding": String::from_utf8_lossy(&v),
            });
            self.rejected
                .insert(seq.to_be_bytes(), record.to_string().as_bytes())?;
        }
        Ok(())
    }

    /// Findings waiting for an ack.
    pub fn len(&self) -> usize {
        self.findings.scan_prefix(FINDING_PREFIX).count()
    }

    /// Findings waiting for an ack, as counted on the way (no scan).
    pub fn waiting(&self) -> u64 {
        self.waiting.findings.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn rejected_len(&self) -> usize {
        self.rejected.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens a spool just dropped (see [`crate::sled_reopen`]).
    fn reopen(dir: &std::path::Path) -> Spool {
        for _ in 0..250 {
            if let Ok(s) = Spool::open(dir) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Spool::open(dir).unwrap()
    }
    use vigil_domain::{ProcessInfo, Severity, SignalKind};

    fn finding(n: u32) -> Finding {
        Finding {
            seq: 0,
            rule_id: "r".into(),
            severity: Severity::High,
            signal: SignalKind::ModelFile,
            observed_at_unix_nanos: 1,
            process: ProcessInfo {
                pid: n,
                ..Default::default()
            },
            file: None,
            net: None,
            gpu: None,
            action: String::new(),
            summary: String::new(),
        }
    }

    #[tokio::test]
    async fn findings_survive_a_restart_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path()).unwrap();
            assert_eq!(s.push(finding(1)).unwrap(), 1);
            assert_eq!(s.push(finding(2)).unwrap(), 2);
            assert_eq!(s.push(finding(3)).unwrap(), 3);
            s.flush().await.unwrap();
            assert_eq!(s.ack(1).unwrap(), 1);
            s.flush().await.unwrap();
        }
        let s = reopen(dir.path());
        assert_eq!(s.ack_floor().unwrap(), 1);
        let p = s.pending(s.ack_floor().unwrap(), 10).unwrap();
        assert_eq!(p.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(p[0].process.pid, 2);
        assert_eq!(s.pending(2, 10).unwrap().len(), 1);
        // Sequence numbers never go back, even after everything is acked.
        s.ack(3).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.ack_floor().unwrap(), 3);
        drop(s);
        let s = reopen(dir.path());
        assert_eq!(s.push(finding(4)).unwrap(), 4);
    }

    #[test]
    fn rejected_findings_leave_the_queue_but_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        s.push(finding(1)).unwrap();
        s.push(finding(2)).unwrap();
        s.reject(1, "process.pid: must not be 0").unwrap();
        assert_eq!(s.pending(0, 10).unwrap().len(), 1);
        assert_eq!(s.rejected_len(), 1);
    }

    #[tokio::test]
    async fn a_rejected_newest_finding_keeps_its_seq_used() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Spool::open(dir.path()).unwrap();
            s.push(finding(1)).unwrap();
            s.push(finding(2)).unwrap();
            s.reject(2, "refused").unwrap();
            s.ack(1).unwrap();
            assert!(s.is_empty());
            s.flush().await.unwrap();
        }
        let s = reopen(dir.path());
        assert_eq!(s.push(finding(3)).unwrap(), 3);
    }

    #[test]
    fn the_quota_refuses_findings_until_acks_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap().with_quota(SpoolQuota {
            max_findings: 2,
            ..SpoolQuota::UNLIMITED
        });
        s.push(finding(1)).unwrap();
        s.push(finding(2)).unwrap();
        assert!(matches!(
            s.push(finding(3)),
            Err(SpoolError::Full(Fullness::Findings { waiting: 2, max: 2 }))
        ));
        // A refused finding takes no sequence number.
        assert_eq!(s.push_over_quota(finding(4)).unwrap(), 3);
        assert_eq!(s.waiting(), 3);
        s.ack(2).unwrap();
        assert_eq!(s.waiting(), 1);
        assert_eq!(s.push(finding(5)).unwrap(), 4);
        // Reopened, the spool counts what waits.
        drop(s);
        let s = reopen(dir.path());
        assert_eq!(s.waiting(), 2);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn the_byte_quota_and_the_disk_reserve_refuse_findings() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap().with_quota(SpoolQuota {
            max_bytes: 600,
            ..SpoolQuota::UNLIMITED
        });
        let mut taken = 0;
        while s.push(finding(taken + 1)).is_ok() {
            taken += 1;
        }
        assert!(taken >= 1, "one finding fits in 600 bytes");
        assert!(matches!(
            s.push(finding(9)),
            Err(SpoolError::Full(Fullness::Bytes { max: 600, .. }))
        ));
        let s = s.with_quota(SpoolQuota {
            keep_free_bytes: u64::MAX / 2,
            ..SpoolQuota::UNLIMITED
        });
        assert!(matches!(
            s.push_over_quota(finding(9)),
            Err(SpoolError::Full(Fullness::Disk { .. }))
        ));
    }

    #[test]
    fn the_disk_reserve_counts_the_blocks_root_may_use() {
        // Users filled the file system up to root's reserve: no block is
        // available to them, 1000 blocks of 4 KiB remain free for root.
        assert_eq!(disk_room(1000, 4096, 1 << 20, 500), Ok(()));
        assert_eq!(
            disk_room(100, 4096, 1 << 20, 500),
            Err(Fullness::Disk {
                free: 409_600,
                keep: 1 << 20
            })
        );
        assert!(disk_room(u64::MAX, u64::MAX, u64::MAX, usize::MAX).is_ok());
    }

    #[test]
    fn the_spool_may_use_the_blocks_reserved_for_root() {
        let dir = tempfile::tempdir().unwrap();
        let st = nix::sys::statvfs::statvfs(dir.path()).unwrap();
        #[allow(clippy::unnecessary_cast)]
        let (free, available) = (
            (st.blocks_free() as u64).saturating_mul(st.fragment_size() as u64),
            (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64),
        );
        // Only where the file system reserves blocks for root (ext4 does,
        // tmpfs does not), with margin for other writers meanwhile.
        if free.saturating_sub(available) < 64 << 20 {
            return;
        }
        let s = Spool::open(dir.path()).unwrap().with_quota(SpoolQuota {
            keep_free_bytes: available + (free - available) / 2,
            ..SpoolQuota::UNLIMITED
        });
        s.push(finding(1)).unwrap();
    }

    #[test]
    fn a_corrupt_entry_is_moved_aside_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path()).unwrap();
        s.push(finding(1)).unwrap();
        s.push(finding(2)).unwrap();
        s.findings
            .insert(finding_key(2), b"not json".to_vec())
            .unwrap();
        s.push(finding(3)).unwrap();
        let p = s.pending(0, 10).unwrap();
        assert_eq!(p.iter().map(|f| f.seq).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(s.rejected_len(), 1);
    }
}
