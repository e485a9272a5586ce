//! sha256 of executables, cached by (device, inode, mtime) so each binary is
//! read once however many processes run it.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

#[derive(Debug, Default)]
pub struct ExeDigestCache {
    by_file: HashMap<(u64, u64, i64, i64), String>,
    capacity: usize,
}

impl ExeDigestCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_file: HashMap::new(),
            capacity,
        }
    }

    /// Hex sha256 of the file at `path` (e.g. `/proc/PID/exe`), or None when
    /// it cannot be read.
    pub fn digest(&mut self, path: &Path) -> Option<String> {
        let meta = std::fs::metadata(path).ok()?;
        let key = (meta.dev(), meta.ino(), meta.mtime(), meta.mtime_nsec());
        if let Some(d) = self.by_file.get(&key) {
            return Some(d.clone());
        }
        let digest = sha256_file(path).ok()?;
        if self.by_file.len() >= self.capacity {
            self.by_file.clear();
        }
        self.by_file.insert(key, digest.clone());
        Some(digest)
    }

    pub fn len(&self) -> usize {
        self.by_file.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_file.is_empty()
    }
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_sha256_and_cached_per_file_version() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bin");
        std::fs::write(&f, b"abc").unwrap();
        let mut c = ExeDigestCache::new(8);
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
