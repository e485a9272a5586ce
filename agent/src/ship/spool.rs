//! The on-disk spool (sled): every finding is written here before it is
//! shipped, and leaves only when the control plane acks it.
//!
//! Architecture invariant: a finding is removed from the spool only by an
//! ack (or a rejection, which moves it to the `rejected` tree); an agent or
//! control plane that is down loses nothing.

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
}

#[derive(Clone)]
pub struct Spool {
    db: sled::Db,
    findings: sled::Tree,
    rejected: sled::Tree,
    last_seq: Arc<Mutex<u64>>,
    notify: Arc<Notify>,
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

impl Spool {
    pub fn open(dir: &std::path::Path) -> Result<Self, SpoolError> {
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
        Ok(Self {
            db,
            findings,
            rejected,
            last_seq: Arc::new(Mutex::new(stored.max(newest))),
            notify: Arc::new(Notify::new()),
        })
    }

    /// Assigns the next sequence number and stores the finding. Durable once
    /// `flush` returns.
    pub fn push(&self, mut finding: Finding) -> Result<u64, SpoolError> {
        let mut last = self.last_seq.lock().unwrap_or_else(|e| e.into_inner());
        let seq = *last + 1;
        finding.seq = seq;
        let value = serde_json::to_vec(&finding).map_err(|source| SpoolError::Corrupt {
            key: format!("seq {seq}"),
            source,
        })?;
        let mut batch = sled::Batch::default();
        batch.insert(finding_key(seq), value);
        batch.insert(LAST_SEQ_KEY, &seq.to_be_bytes());
        self.findings.apply_batch(batch)?;
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
                    self.rejected.insert(&k, v)?;
                    self.findings.remove(&k)?;
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
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for k in self
            .findings
            .range(finding_key(0)..=finding_key(up_to))
            .keys()
        {
            batch.remove(k?);
            n += 1;
        }
        self.findings.apply_batch(batch)?;
        Ok(n)
    }

    /// The control plane will never take this finding: keep it aside with the reason.
    pub fn reject(&self, seq: u64, reason: &str) -> Result<(), SpoolError> {
        if let Some(v) = self.findings.remove(finding_key(seq))? {
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
        let s = Spool::open(dir.path()).unwrap();
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
        let s = Spool::open(dir.path()).unwrap();
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
