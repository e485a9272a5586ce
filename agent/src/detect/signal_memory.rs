//! The signals each live process has shown, kept on disk (a tree of the
//! agent's sled database), so an agent restart neither forgets them nor
//! reports them again.
//!
//! Architecture invariant: an entry is keyed by pid *and* process start
//! time; after a restart only entries whose process is still the same live
//! process are restored, so a reused pid never inherits another's signals.

use std::collections::{HashMap, HashSet};

use vigil_domain::SignalKind;

use crate::procfs::Procfs;

pub type Signals = HashSet<(SignalKind, String)>;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("signal memory storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("signal memory entry: {0}")]
    Corrupt(#[from] serde_json::Error),
}

pub struct SignalMemory {
    tree: sled::Tree,
    procfs: Procfs,
    /// pid → start time of the processes with an entry on disk.
    stored: HashMap<u32, u64>,
}

fn key(pid: u32, start: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&pid.to_be_bytes());
    k[4..].copy_from_slice(&start.to_be_bytes());
    k
}

impl SignalMemory {
    pub fn open(db: &sled::Db, procfs: Procfs) -> Result<Self, MemoryError> {
        Ok(Self {
            tree: db.open_tree("agent.v1.signals")?,
            procfs,
            stored: HashMap::new(),
        })
    }

    /// The signals of processes that are still alive (same pid, same start
    /// time); entries of processes that are gone are deleted.
    pub fn restore(&mut self) -> Result<HashMap<u32, Signals>, MemoryError> {
        let mut out = HashMap::new();
        for kv in self.tree.iter() {
            let (k, v) = kv?;
            let (Ok(pid), Ok(start)) = (
                k[..4.min(k.len())].try_into().map(u32::from_be_bytes),
                k.get(4..12)
                    .unwrap_or(&[])
                    .try_into()
                    .map(u64::from_be_bytes),
            ) else {
                self.tree.remove(k)?;
                continue;
            };
            if self.procfs.start_time(pid) != Some(start) {
                self.tree.remove(k)?;
                continue;
            }
            let signals: Vec<(SignalKind, String)> = serde_json::from_slice(&v)?;
            self.stored.insert(pid, start);
            out.insert(pid, signals.into_iter().collect());
        }
        Ok(out)
    }

    /// Records the signals a live process has shown so far.
    pub fn remember(&mut self, pid: u32, signals: &Signals) -> Result<(), MemoryError> {
        let Some(start) = self.procfs.start_time(pid) else {
            return Ok(()); // gone already: nothing to restore later
        };
        let list: Vec<&(SignalKind, String)> = signals.iter().collect();
        self.tree
            .insert(key(pid, start), serde_json::to_vec(&list)?)?;
        self.stored.insert(pid, start);
        Ok(())
    }

    /// The process exited: its entry goes.
    pub fn forget(&mut self, pid: u32) -> Result<(), MemoryError> {
        if let Some(start) = self.stored.remove(&pid) {
            self.tree.remove(key(pid, start))?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.stored.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stored.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_processes_keep_their_signals_across_a_reopen_and_dead_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let signals: Signals = [(SignalKind::ModelFile, "/m/x.gguf".to_string())].into();
        {
            let db = sled::open(dir.path()).unwrap();
            let mut m = SignalMemory::open(&db, Procfs::default()).unwrap();
            m.remember(me, &signals).unwrap();
            // A pid that does not exist is not remembered.
            m.remember(u32::MAX - 3, &signals).unwrap();
            // An entry of a process that has since gone.
            m.tree.insert(key(u32::MAX - 4, 1), b"[]".to_vec()).unwrap();
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let mut m = SignalMemory::open(&db, Procfs::default()).unwrap();
        let restored = m.restore().unwrap();
        assert_eq!(restored.get(&me), Some(&signals));
        assert_eq!(restored.len(), 1);
        assert_eq!(m.tree.len(), 1, "the dead process's entry was deleted");
        m.forget(me).unwrap();
        assert!(m.tree.is_empty());
    }
}
