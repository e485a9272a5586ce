//! sha256 of executables and model files, cached by (device, inode, mtime)
//! so each file version is read once however many processes use it.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Identity of one version of a file.
pub type FileKey = (u64, u64, i64, i64);

pub fn file_key(meta: &std::fs::Metadata) -> FileKey {
    (meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec())
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

    /// Hex sha256 of the file at `path` (e.g. `/proc/PID/exe`), computed
    /// here if not cached; None when it cannot be read.
    pub fn digest(&mut self, path: &Path) -> Option<String> {
        let mut file = std::fs::File::open(path).ok()?;
        let key = file_key(&file.metadata().ok()?);
        if let Some(d) = self.by_file.get(&key) {
            return Some(d.clone());
        }
        let digest = sha256_reader(&mut file).ok()?;
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
        let d = c.digest(&f).unwrap();
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(c.digest(&f).unwrap(), d);
        assert_eq!(c.len(), 1);
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, b"abcd").unwrap();
        assert_ne!(c.digest(&f).unwrap(), d);
        assert!(c.digest(&dir.path().join("missing")).is_none());
    }
}
