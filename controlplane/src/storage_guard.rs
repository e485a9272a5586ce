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
//! small writes (votes, membership) still go through. And should the disk
//! fill anyway (another program fills it faster than the reserve lasts),
//! a storage write that has not finished within [`STALL_AFTER`] turns the
//! node NOT_SERVING instead of leaving it looking healthy.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::WriteWatch;

/// A storage write (log append, apply) unfinished for this long is stuck:
/// a healthy fsync takes milliseconds, a loaded disk a second or two.
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// How long one reading of the free space is used before another.
const FREE_SPACE_FRESH_FOR: Duration = Duration::from_millis(100);

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
    /// The last reading of the free space, and when it was taken.
    last_free: Mutex<Option<(Instant, Result<u64, String>)>>,
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
            last_free: Mutex::new(None),
        }
    }

    /// Why a new write must be refused now, if it must: free space below
    /// the reserve (or unreadable, when a reserve is asked for).
    pub fn refuses_writes(&self) -> Option<StorageProblem> {
        if self.reserve == 0 {
            return None;
        }
        let dir = self.data_dir.display().to_string();
        match self.free_bytes() {
            Ok(free) if free < self.reserve => Some(StorageProblem::LowDisk {
                dir,
                free,
                reserve: self.reserve,
            }),
            Ok(_) => None,
            Err(why) => Some(StorageProblem::Unreadable { dir, why }),
        }
    }

    /// Why this node must not say it serves, if it must not: writes
    /// refused, or a storage write stuck.
    pub fn problem(&self) -> Option<StorageProblem> {
        if let Some(oldest) = self.writes.oldest() {
            if oldest.waited >= self.stall_after {
                return Some(StorageProblem::Stalled {
                    what: oldest.what,
                    waited_secs: oldest.waited.as_secs(),
                });
            }
        }
        self.refuses_writes()
    }

    /// The bytes an unprivileged writer may still use on the data
    /// directory's file system (read at most every 100 ms).
    fn free_bytes(&self) -> Result<u64, String> {
        let mut last = self.last_free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, free)) = last.as_ref() {
            if at.elapsed() < FREE_SPACE_FRESH_FOR {
                return free.clone();
            }
        }
        let free = nix::sys::statvfs::statvfs(&self.data_dir)
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .map_err(|e| e.to_string());
        *last = Some((Instant::now(), free.clone()));
        free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_free_space_refuses_writes_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let guard = StorageGuard::new(dir.path().to_path_buf(), u64::MAX, WriteWatch::default());
        let refused = guard.refuses_writes().expect("refused");
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
    fn no_reserve_refuses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let guard = StorageGuard::new(dir.path().to_path_buf(), 0, WriteWatch::default());
        assert_eq!(guard.refuses_writes(), None);
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
            guard.refuses_writes(),
            Some(StorageProblem::Unreadable { .. })
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
