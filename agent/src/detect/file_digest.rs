//! sha256 of executables and model files, cached by file version (device,
//! inode, size, mtime and ctime) so each version is read once however many
//! processes use it.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::detect::untrusted_file::{open_regular, FinalLink};

/// How much one file may cost to hash: a file over `max_bytes`, or whose
/// reading takes longer than `max_time`, is not hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashBudget {
    pub max_bytes: u64,
    pub max_time: Duration,
}

impl Default for HashBudget {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 30,
            max_time: Duration::from_secs(60),
        }
    }
}

/// Why a file has no digest; its `Display` goes into the finding.
#[derive(Debug, thiserror::Error)]
pub enum NotHashed {
    #[error("not hashed: over budget ({size} bytes, more than the {max} allowed)")]
    OverBudget { size: u64, max: u64 },
    #[error("not hashed: over budget (reading took longer than {0:?})")]
    OutOfTime(Duration),
    #[error("not hashed: the hash queue was full")]
    QueueFull,
    #[error("not hashed: {0}")]
    Unreadable(#[from] std::io::Error),
}

/// Identity of one version of a file: the digest cache's key.
///
/// The mtime alone does not name a version: a same-size rewrite within
/// the file system's timestamp granularity keeps it, and the file's owner
/// can set it back (`touch -d`), which would reuse an approved digest for
/// new bytes. The ctime changes with every write and metadata change and
/// cannot be set by the user; the size catches a rewrite that still lands
/// within the ctime's granularity with other bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    /// Whether this version's last change (its ctime) is less than
    /// `window` before `now`: a write in the same clock tick as a read of
    /// it leaves the key as it was (timestamps come from a coarse clock),
    /// so what was read may not be what the key now names.
    pub fn changed_within(&self, window: std::time::Duration, now: std::time::SystemTime) -> bool {
        let now = match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
            Err(_) => return true,
        };
        let ctime = i128::from(self.ctime.0) * 1_000_000_000 + i128::from(self.ctime.1);
        let window = i128::try_from(window.as_nanos()).unwrap_or(i128::MAX);
        ctime.saturating_add(window) > now
    }
}

pub fn file_key(meta: &std::fs::Metadata) -> FileKey {
    FileKey {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    }
}

#[derive(Debug, Default)]
pub struct FileDigestCache {
    by_file: HashMap<FileKey, String>,
    capacity: usize,
}

impl FileDigestCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_file: HashMap::new(),
            capacity,
        }
    }

    pub fn get(&self, key: &FileKey) -> Option<&String> {
        self.by_file.get(key)
    }

    pub fn insert(&mut self, key: FileKey, digest: String) {
        if self.by_file.len() >= self.capacity {
            self.by_file.clear();
        }
        self.by_file.insert(key, digest);
    }

    /// Hex sha256 of the file at `path` (a `/proc` handle such as
    /// `/proc/PID/exe`), computed here if not cached and within `budget`;
    /// None when it cannot be read, is not a regular file, or is over budget.
    pub fn digest(&mut self, path: &Path, budget: HashBudget) -> Option<String> {
        let (mut file, meta) = open_regular(path, FinalLink::Follow).ok()?;
        let key = file_key(&meta);
        if let Some(d) = self.by_file.get(&key) {
            return Some(d.clone());
        }
        let digest = sha256_within(&mut file, meta.len(), budget).ok()?;
        self.insert(key, digest.clone());
        Some(digest)
    }

    pub fn len(&self) -> usize {
        self.by_file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }
}

pub fn sha256_reader(reader: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hex sha256 of `file` (`size` bytes long by its metadata), unless it is
/// over `budget`: checked before reading, and again as it is read (a file
/// can grow, or sit on slow storage).
pub fn sha256_within(
    file: &mut std::fs::File,
    size: u64,
    budget: HashBudget,
) -> Result<String, NotHashed> {
    if size > budget.max_bytes {
        return Err(NotHashed::OverBudget {
            size,
            max: budget.max_bytes,
        });
    }
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > budget.max_bytes {
            return Err(NotHashed::OverBudget {
                size: read,
                max: budget.max_bytes,
            });
        }
        if started.elapsed() > budget.max_time {
            return Err(NotHashed::OutOfTime(budget.max_time));
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    sha256_reader(&mut std::fs::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_and_cached_per_file_version() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, b"abc").unwrap();
        let mut c = FileDigestCache::new(8);
        let budget = HashBudget::default();
        let d = c.digest(&f, budget).unwrap();
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(c.digest(&f, budget).unwrap(), d);
        assert_eq!(c.len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, b"abcd").unwrap();
        assert_ne!(c.digest(&f, budget).unwrap(), d);
        assert!(c.digest(&dir.path().join("missing"), budget).is_none());
    }

    #[test]
    fn a_rewrite_with_the_old_mtime_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("model.onnx");
        std::fs::write(&f, b"approved").unwrap();
        let old_mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        let mut c = FileDigestCache::new(8);
        let budget = HashBudget::default();
        let approved = c.digest(&f, budget).unwrap();
        // Same size, other bytes, and the mtime set back (`touch -d`): only
        // the ctime (which the user cannot set) tells the versions apart.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, b"tampered").unwrap();
        let file = std::fs::File::options().write(true).open(&f).unwrap();
        file.set_modified(old_mtime).unwrap();
        drop(file);
        assert_eq!(
            std::fs::metadata(&f).unwrap().modified().unwrap(),
            old_mtime
        );
        let now = c.digest(&f, budget).unwrap();
        assert_ne!(now, approved, "a stale digest was reused");
        assert_eq!(now, sha256_file(&f).unwrap());
    }

    #[test]
    fn the_key_names_size_and_ctime() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m");
        std::fs::write(&f, b"ab").unwrap();
        let before = file_key(&std::fs::metadata(&f).unwrap());
        std::fs::write(&f, b"abc").unwrap();
        let after = file_key(&std::fs::metadata(&f).unwrap());
        assert_eq!((before.dev, before.ino), (after.dev, after.ino));
        assert_eq!((before.size, after.size), (2, 3));
        assert_ne!(before, after);
    }

    #[test]
    fn files_over_the_budget_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("big.onnx");
        let file = std::fs::File::create(&f).unwrap();
        // Sparse: a terabyte that costs nothing on disk.
        file.set_len(1 << 40).unwrap();
        let budget = HashBudget {
            max_bytes: 1 << 20,
            max_time: Duration::from_secs(60),
        };
        let mut file = std::fs::File::open(&f).unwrap();
        let err = sha256_within(&mut file, 1 << 40, budget).unwrap_err();
        assert!(err.to_string().contains("over budget"), "{err}");
        // A file that grows past the budget as it is read.
        let err = sha256_within(&mut file, 10, budget).unwrap_err();
        assert!(matches!(err, NotHashed::OverBudget { .. }), "{err}");
        assert!(FileDigestCache::new(8).digest(&f, budget).is_none());
    }
}
