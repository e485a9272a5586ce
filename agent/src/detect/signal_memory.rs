//! The signals each live process has shown, kept on disk (a tree of the
//! agent's sled database), so an agent restart neither forgets them nor
//! reports them again.
//!
//! Architecture invariant: an entry is keyed by pid *and* process start
//! time; after a restart only entries whose process is still the same live
//! process are restored, so a reused pid never inherits another's signals.
//!
//! One key per (process, signal, object): a new finding is one insert, not
//! a rewrite of everything the process showed (which the detector bounds
//! per process anyway, see `reported_signals`).

use std::collections::HashMap;

use vigil_domain::SignalKind;

use crate::procfs::Procfs;

pub use crate::detect::reported_signals::Signals;

/// The tree of the first layout: one JSON list per process, rewritten in
/// full on every change. Read once at restore, then dropped.
const TREE_V1: &str = "agent.v1.signals";
/// pid (4 bytes) ‖ start time (8) ‖ JSON `[signal, object]`, empty value.
const TREE_V2: &str = "agent.v2.signals";

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("signal memory storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("signal memory entry: {0}")]
    Corrupt(#[from] serde_json::Error),
}

pub struct SignalMemory {
    db: sled::Db,
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

/// The (pid, start time) a key begins with, if it is long enough.
fn process_of(k: &[u8]) -> Option<(u32, u64)> {
    let pid = u32::from_be_bytes(k.get(..4)?.try_into().ok()?);
    let start = u64::from_be_bytes(k.get(4..12)?.try_into().ok()?);
    Some((pid, start))
}

impl SignalMemory {
    pub fn open(db: &sled::Db, procfs: Procfs) -> Result<Self, MemoryError> {
        Ok(Self {
            db: db.clone(),
            tree: db.open_tree(TREE_V2)?,
            procfs,
            stored: HashMap::new(),
        })
    }

    /// The signals of processes that are still alive (same pid, same start
    /// time); entries of processes that are gone are deleted.
    pub fn restore(&mut self) -> Result<HashMap<u32, Signals>, MemoryError> {
        let mut out: HashMap<u32, Signals> = HashMap::new();
        let mut alive: HashMap<(u32, u64), bool> = HashMap::new();
        for kv in self.tree.iter() {
            let (k, _) = kv?;
            let Some((pid, start)) = process_of(&k) else {
                self.tree.remove(k)?;
                continue;
            };
            let live = *alive
                .entry((pid, start))
                .or_insert_with(|| self.procfs.start_time(pid) == Some(start));
            let signal = serde_json::from_slice::<(SignalKind, String)>(&k[12..]);
            match signal {
                Ok(signal) if live => {
                    self.stored.insert(pid, start);
                    out.entry(pid).or_default().insert(signal);
                }
                _ => {
                    self.tree.remove(k)?;
                }
            }
        }
        // Entries of the first layout, rewritten in this one.
        if self.db.tree_names().iter().any(|n| n == TREE_V1.as_bytes()) {
            let old = self.db.open_tree(TREE_V1)?;
            for kv in old.iter() {
                let (k, v) = kv?;
                let Some((pid, start)) = process_of(&k) else {
                    continue;
                };
                if self.procfs.start_time(pid) != Some(start) {
                    continue;
                }
                let Ok(signals) = serde_json::from_slice::<Vec<(SignalKind, String)>>(&v) else {
                    continue;
                };
                for (signal, object) in signals {
                    self.insert(pid, start, signal, &object)?;
                    out.entry(pid).or_default().insert((signal, object));
                }
            }
            self.db.drop_tree(TREE_V1)?;
        }
        Ok(out)
    }

    /// Records one signal a live process has shown.
    pub fn remember(
        &mut self,
        pid: u32,
        signal: SignalKind,
        object: &str,
    ) -> Result<(), MemoryError> {
        let start = match self.stored.get(&pid) {
            Some(start) => *start,
            None => match self.procfs.start_time(pid) {
                Some(start) => start,
                None => return Ok(()), // gone already: nothing to restore later
            },
        };
        self.insert(pid, start, signal, object)
    }

    fn insert(
        &mut self,
        pid: u32,
        start: u64,
        signal: SignalKind,
        object: &str,
    ) -> Result<(), MemoryError> {
        let mut k = key(pid, start).to_vec();
        serde_json::to_writer(&mut k, &(signal, object))?;
        self.tree.insert(k, &[])?;
        self.stored.insert(pid, start);
        Ok(())
    }

    /// The process exited: its entries go.
    pub fn forget(&mut self, pid: u32) -> Result<(), MemoryError> {
        if let Some(start) = self.stored.remove(&pid) {
            let mut batch = sled::Batch::default();
            for k in self.tree.scan_prefix(key(pid, start)).keys() {
                batch.remove(k?);
            }
            self.tree.apply_batch(batch)?;
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
        let signals: Signals = [
            (SignalKind::ModelFile, "/m/x.gguf".to_string()),
            (SignalKind::AiRuntime, "/l/libonnxruntime.so".to_string()),
        ]
        .into();
        {
            let db = sled::open(dir.path()).unwrap();
            let mut m = SignalMemory::open(&db, Procfs::default()).unwrap();
            for (signal, object) in &signals {
                m.remember(me, *signal, object).unwrap();
                // A pid that does not exist is not remembered.
                m.remember(u32::MAX - 3, *signal, object).unwrap();
            }
            // An entry of a process that has since gone.
            let mut gone = key(u32::MAX - 4, 1).to_vec();
            gone.extend_from_slice(br#"["model_file","/m/y.gguf"]"#);
            m.tree.insert(gone, b"").unwrap();
            db.flush().unwrap();
        }
        let db = crate::sled_reopen::reopen_sled(dir.path());
        let mut m = SignalMemory::open(&db, Procfs::default()).unwrap();
        let restored = m.restore().unwrap();
        assert_eq!(restored.get(&me), Some(&signals));
        assert_eq!(restored.len(), 1);
        assert_eq!(m.tree.len(), 2, "the dead process's entry was deleted");
        m.forget(me).unwrap();
        assert!(m.tree.is_empty());
    }

    #[test]
    fn the_first_layout_is_read_once_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let start = Procfs::default().start_time(me).unwrap();
        let db = sled::open(dir.path()).unwrap();
        db.open_tree(TREE_V1)
            .unwrap()
            .insert(key(me, start), br#"[["model_file","/m/x.gguf"]]"#.to_vec())
            .unwrap();
        let mut m = SignalMemory::open(&db, Procfs::default()).unwrap();
        let restored = m.restore().unwrap();
        let expected: Signals = [(SignalKind::ModelFile, "/m/x.gguf".to_string())].into();
        assert_eq!(restored.get(&me), Some(&expected));
        assert!(!db.tree_names().iter().any(|n| n == TREE_V1.as_bytes()));
        assert_eq!(m.tree.len(), 1);
    }
}
