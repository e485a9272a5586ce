//! Keeps a node off a full disk and says when its storage is stuck.
//!
//! sled 0.34 handles ENOSPC badly: a write can fail (raft stops, health
//! turns NOT_SERVING) or a flush can wait for ever (raft neither commits nor
//! stops, and the node looks healthy while nothing it acks can be stored).
//! So a node does not wait for the disk to fill: it refuses new writes
//! while the free space of its data directory's file system is below a
//! reserve (`--min-free-disk-mib`), and takes them again by itself once
//! space is freed, the way Elasticsearch's flood-stage watermark and
//! etcd's NOSPACE alarm keep their stores off a full disk. Raft's own
//! small writes (votes, membership) still go through.
//!
//! The check has to lead the disk, not trail it: sled writes about five
//! bytes for every byte of a command (the raft log, the state machine's
//! trees, node rewrites, segment cleaning), and a flood of findings fills
//! a few MiB in a tenth of a second. So the free space is read at every
//! write (one statvfs, microseconds, beside a write that fsyncs), and the
//! writes admitted but not yet finished count against it at
//! [`WRITE_AMPLIFICATION`] times their size: a write is admitted only if
//! the reserve would still be left after it and everything before it has
//! landed. (A free-space reading kept for 100 ms let a flood run the disk
//! full while the stale reading still said there was room.) And should the disk
//! fill anyway (another program fills it faster than the reserve lasts),
//! a storage write that has not finished within [`STALL_AFTER`] turns the
//! node NOT_SERVING instead of leaving it looking healthy.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::store::WriteWatch;

/// A storage write (log append, apply) unfinished for this long is stuck:
/// a healthy fsync takes milliseconds, a loaded disk a second or two.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// Bytes sled writes for one byte of an admitted command, rounded up:
/// measured about 5 with a flood of 2 KiB findings on tmpfs (8 MiB of
/// the file system gone for 1.7 MB of findings).
pub const WRITE_AMPLIFICATION: u64 = 6;

/// What is wrong with a node's storage.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageProblem {
    #[error("the data directory {dir} has {free} bytes free, below the {reserve} byte reserve (--min-free-disk-mib): new writes are refused until space is freed")]
    LowDisk {
        dir: String,
        free: u64,
        reserve: u64,
    },
    #[error(
        "a storage write ({what}) has not finished in {waited_secs}s: the disk is full or failing"
    )]
    Stalled {
        what: &'static str,
        waited_secs: u64,
    },
    #[error("reading the free space of the data directory {dir}: {why}")]
    Unreadable { dir: String, why: String },
}

/// One node's view of its storage.
#[derive(Debug)]
pub struct StorageGuard {
    data_dir: PathBuf,
    reserve: u64,
    writes: WriteWatch,
    /// A write unfinished for this long is stuck ([`STALL_AFTER`]).
    stall_after: Duration,
    /// Bytes of the writes admitted and not yet finished.
    in_flight: Arc<AtomicU64>,
    /// Free bytes the last refused write needed on its own (the reserve
    /// and its amplified size); 0 once a write is admitted again. Until
    /// that much is free the node does not say it serves.
    refused_need: AtomicU64,
    /// Where the free space is read from.
    free_space: FreeSpace,
}

/// Where a guard reads the free space from.
#[derive(Debug)]
enum FreeSpace {
    /// statvfs of the data directory, at every reading.
    Statvfs,
    /// A number the unit tests set.
    #[cfg(test)]
    Fixed(Arc<AtomicU64>),
}

/// A write admitted against the reserve; its bytes stop counting when it
/// is dropped (the write finished, or failed).
#[derive(Debug)]
pub struct AdmittedWrite {
    bytes: u64,
    in_flight: Arc<AtomicU64>,
}

impl Drop for AdmittedWrite {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl StorageGuard {
    /// Guards `data_dir`, keeping `reserve` bytes free, with the stores'
    /// writes marked in `writes`.
    pub fn new(data_dir: PathBuf, reserve: u64, writes: WriteWatch) -> Self {
        Self {
            data_dir,
            reserve,
            writes,
            stall_after: STALL_AFTER,
            in_flight: Arc::new(AtomicU64::new(0)),
            refused_need: AtomicU64::new(0),
            free_space: FreeSpace::Statvfs,
        }
    }

    /// Admits a write of `bytes` (its encoded size), or says why it must
    /// be refused: the free space, less what the writes already admitted
    /// and this one will take ([`WRITE_AMPLIFICATION`] times their size),
    /// would fall below the reserve (or it cannot be read). Hold the
    /// answer until the write has finished.
    pub fn admit(&self, bytes: u64) -> Result<AdmittedWrite, StorageProblem> {
        let admitted = AdmittedWrite {
            bytes,
            in_flight: self.in_flight.clone(),
        };
        let in_flight = self.in_flight.fetch_add(bytes, Ordering::AcqRel) + bytes;
        if self.reserve == 0 {
            return Ok(admitted);
        }
        let needed = self
            .reserve
            .saturating_add(in_flight.saturating_mul(WRITE_AMPLIFICATION));
        match self.check_free(needed) {
            None => {
                self.refused_need.store(0, Ordering::Release);
                Ok(admitted)
            }
            Some(problem) => {
                let alone = self
                    .reserve
                    .saturating_add(bytes.saturating_mul(WRITE_AMPLIFICATION));
                self.refused_need.store(alone, Ordering::Release);
                Err(problem)
            }
        }
    }

    /// Whether a file of `bytes` more may be written beside the store
    /// (a model upload, or one pulled from a peer): the free space, read
    /// now, must stay at or above the reserve once it and the store's
    /// writes in flight have landed. A file is written once, so it counts
    /// at its size (not [`WRITE_AMPLIFICATION`] times).
    pub fn room_for_file(&self, bytes: u64) -> Result<(), StorageProblem> {
        if self.reserve == 0 {
            return Ok(());
        }
        let in_flight = self.in_flight.load(Ordering::Acquire);
        let needed = self
            .reserve
            .saturating_add(in_flight.saturating_mul(WRITE_AMPLIFICATION))
            .saturating_add(bytes);
        match self.check_free(needed) {
            None => Ok(()),
            Some(problem) => Err(problem),
        }
    }

    /// A problem unless at least `needed` bytes are free.
    fn check_free(&self, needed: u64) -> Option<StorageProblem> {
        let dir = self.data_dir.display().to_string();
        match self.free_bytes() {
            Ok(free) if free < needed => Some(StorageProblem::LowDisk {
                dir,
                free,
                reserve: self.reserve,
            }),
            Ok(_) => None,
            Err(why) => Some(StorageProblem::Unreadable { dir, why }),
        }
    }

    /// Why this node must not say it serves, if it must not: free space
    /// below the reserve, or below what the last refused write needed
    /// (until a write is admitted again), or a storage write stuck.
    pub fn problem(&self) -> Option<StorageProblem> {
        if let Some(oldest) = self.writes.oldest() {
            if oldest.waited >= self.stall_after {
                return Some(StorageProblem::Stalled {
                    what: oldest.what,
                    waited_secs: oldest.waited.as_secs(),
                });
            }
        }
        if self.reserve == 0 {
            return None;
        }
        let need = self.reserve.max(self.refused_need.load(Ordering::Acquire));
        self.check_free(need)
    }

    /// The bytes an unprivileged writer may still use on the data
    /// directory's file system, read now.
    fn free_bytes(&self) -> Result<u64, String> {
        match &self.free_space {
            FreeSpace::Statvfs => nix::sys::statvfs::statvfs(&self.data_dir)
                .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
                .map_err(|e| e.to_string()),
            #[cfg(test)]
            FreeSpace::Fixed(free) => Ok(free.load(Ordering::Acquire)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_free_space_refuses_writes_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let guard = StorageGuard::new(dir.path().to_path_buf(), u64::MAX, WriteWatch::default());
        let refused = guard.admit(0).expect_err("refused");
        assert!(
            matches!(refused, StorageProblem::LowDisk { .. }),
            "{refused:?}"
        );
        assert!(
            refused.to_string().contains("--min-free-disk-mib"),
            "{refused}"
        );
        assert_eq!(guard.problem(), Some(refused));
    }

    #[test]
    fn writes_in_flight_count_against_the_reserve_until_they_finish() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(1000 * WRITE_AMPLIFICATION));
        let mut guard = StorageGuard::new(
            dir.path().to_path_buf(),
            500 * WRITE_AMPLIFICATION,
            WriteWatch::default(),
        );
        guard.free_space = FreeSpace::Fixed(free.clone());
        // Room for the reserve and 500 bytes of writes.
        let first = guard.admit(300).expect("the first fits");
        let refused = guard.admit(300).expect_err("not beside the first");
        assert!(
            matches!(refused, StorageProblem::LowDisk { .. }),
            "{refused:?}"
        );
        // A refused write does not keep counting; the free space is above
        // the reserve, yet the node says it does not serve while the
        // write it refused would not fit on its own.
        assert_eq!(guard.in_flight.load(Ordering::Acquire), 300);
        assert_eq!(guard.problem(), None);
        free.store(700 * WRITE_AMPLIFICATION, Ordering::Release);
        assert!(matches!(
            guard.problem(),
            Some(StorageProblem::LowDisk { .. })
        ));
        // The first landed and space returned: serving, and the second
        // is admitted.
        drop(first);
        assert_eq!(guard.in_flight.load(Ordering::Acquire), 0);
        free.store(800 * WRITE_AMPLIFICATION, Ordering::Release);
        assert_eq!(guard.problem(), None);
        let again = guard.admit(300).expect("fits once the first is done");
        drop(again);
        assert_eq!(guard.in_flight.load(Ordering::Acquire), 0);
        assert_eq!(guard.problem(), None);
    }

    #[test]
    fn a_file_fits_only_if_the_reserve_is_left_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let free = Arc::new(AtomicU64::new(10_000));
        let mut guard = StorageGuard::new(dir.path().to_path_buf(), 4_000, WriteWatch::default());
        guard.free_space = FreeSpace::Fixed(free.clone());
        assert_eq!(guard.room_for_file(6_000), Ok(()));
        assert!(matches!(
            guard.room_for_file(6_001),
            Err(StorageProblem::LowDisk { .. })
        ));
        // Store writes in flight count first.
        let write = guard.admit(100).unwrap();
        assert!(guard.room_for_file(6_000).is_err());
        drop(write);
        assert_eq!(guard.room_for_file(6_000), Ok(()));
        let open = StorageGuard::new(dir.path().to_path_buf(), 0, WriteWatch::default());
        assert_eq!(open.room_for_file(u64::MAX), Ok(()));
    }

    #[test]
    fn no_reserve_refuses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let guard = StorageGuard::new(dir.path().to_path_buf(), 0, WriteWatch::default());
        assert!(guard.admit(u64::MAX / 2).is_ok());
        assert_eq!(guard.problem(), None);
    }

    #[test]
    fn a_vanished_data_directory_refuses_writes() {
        let guard = StorageGuard::new(
            PathBuf::from("/nonexistent/vigil-data"),
            1,
            WriteWatch::default(),
        );
        assert!(matches!(
            guard.admit(1),
            Err(StorageProblem::Unreadable { .. })
        ));
    }

    #[test]
    fn a_write_in_flight_is_a_problem_only_once_it_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let writes = WriteWatch::default();
        let guard = StorageGuard::new(dir.path().to_path_buf(), 0, writes.clone());
        let mut guard = guard;
        let in_flight = writes.begin("raft log append");
        assert_eq!(guard.problem(), None);
        guard.stall_after = Duration::from_millis(20);
        std::thread::sleep(Duration::from_millis(30));
        let problem = guard.problem().expect("stalled");
        assert!(
            matches!(
                problem,
                StorageProblem::Stalled {
                    what: "raft log append",
                    ..
                }
            ),
            "{problem:?}"
        );
        drop(in_flight);
        assert_eq!(guard.problem(), None);
    }
}
