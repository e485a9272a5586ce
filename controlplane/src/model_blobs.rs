//! The node's model store: model files by content, beside raft (their
//! bytes never go into a log entry; a record in raft names them by
//! digest), at `DATA_DIR/model-blobs.v1/<sha256>`.
//!
//! A file comes in (an admin's upload, or a pull from another member)
//! through a [`BlobWriter`]: written to a temporary file in the same
//! directory while it is hashed, refused (and the temporary file removed)
//! when it runs past its declared size, ends short, or hashes to another
//! digest; otherwise synced, renamed to its digest, and the directory
//! synced, and only then reported stored. Temporary files a crash left
//! behind are removed when the store opens.
//!
//! Architecture invariant: a digest names a stored file only once its
//! bytes hashed to it and are durable; a digest is exactly 64 lowercase
//! hex characters, so no name from a request reaches the file system
//! otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::storage_guard::{StorageGuard, StorageProblem};

/// The store's directory under the data directory.
pub const MODEL_BLOB_DIR: &str = "model-blobs.v1";

/// The most bytes one chunk carries on the wire (uploads may send less).
pub const MODEL_CHUNK_BYTES: usize = 1 << 20;

/// Temporary files end with this; any left at start are removed.
const PARTIAL_SUFFIX: &str = ".partial";

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("{0:?} is not a model digest: want exactly 64 lowercase hex characters (0-9 a-f)")]
    BadDigest(String),
    #[error("a model file must have at least one byte")]
    Empty,
    #[error(
        "model {sha256} is {size} bytes, more than this node takes ({max} bytes; --max-model-mib)"
    )]
    TooLarge { sha256: String, size: u64, max: u64 },
    #[error("the bytes run past the {declared} bytes declared: nothing was stored")]
    Overrun { declared: u64 },
    #[error("the bytes ended after {got} of the {declared} declared: nothing was stored")]
    Short { got: u64, declared: u64 },
    #[error("the bytes hash to {actual}, not to the declared {declared}: nothing was stored")]
    Mismatch { declared: String, actual: String },
    #[error("model {0} is not stored on this node")]
    NotFound(String),
    #[error("offset {offset} is past the end of model {sha256} ({size} bytes)")]
    BadOffset {
        sha256: String,
        offset: u64,
        size: u64,
    },
    #[error("not enough room for the model file: {0}")]
    Storage(StorageProblem),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl BlobError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
        move |source| BlobError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The checked form of a digest from a request.
pub fn checked_digest(sha256: &str) -> Result<&str, BlobError> {
    if vigil_domain::is_model_digest(sha256) {
        Ok(sha256)
    } else {
        Err(BlobError::BadDigest(vigil_domain::cut_text(sha256, 80)))
    }
}

/// One node's model files.
#[derive(Debug)]
pub struct ModelBlobs {
    dir: PathBuf,
    max_bytes: u64,
    /// One pull from the other members at a time per digest (the sessions
    /// that want it wait for that one).
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ModelBlobs {
    /// Opens (and makes, 0700) the store under `data_dir`, removing the
    /// temporary files of writes a crash cut off; files over `max_bytes`
    /// are not taken.
    pub fn open(data_dir: &Path, max_bytes: u64) -> Result<Self, BlobError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = data_dir.join(MODEL_BLOB_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(BlobError::io(&dir))?;
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).map_err(BlobError::io(&dir))? {
            let entry = entry.map_err(BlobError::io(&dir))?;
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(PARTIAL_SUFFIX) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(BlobError::io(&path))?;
                removed += 1;
            }
        }
        if removed > 0 {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(BlobError::io(&dir))?;
            tracing::warn!(removed, dir = %dir.display(), "removed model files a crash left half written");
        }
        Ok(Self {
            dir,
            max_bytes,
            pulls: Mutex::default(),
        })
    }

    /// The largest file taken.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, sha256: &str) -> Result<PathBuf, BlobError> {
        Ok(self.dir.join(checked_digest(sha256)?))
    }

    /// The stored file's size, or None when this node does not hold it.
    pub fn stored_size(&self, sha256: &str) -> Result<Option<u64>, BlobError> {
        let path = self.path_of(sha256)?;
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BlobError::io(&path)(e)),
        }
    }

    /// Starts taking a file of `size` bytes that must hash to `sha256`:
    /// refused when the digest is malformed, the size is 0 or over the
    /// limit, or the disk would go below its reserve. When the file is
    /// already stored the bytes are only checked.
    pub fn begin(
        &self,
        sha256: &str,
        size: u64,
        guard: &StorageGuard,
    ) -> Result<BlobWriter, BlobError> {
        let dest = self.path_of(sha256)?;
        if size == 0 {
            return Err(BlobError::Empty);
        }
        if size > self.max_bytes {
            return Err(BlobError::TooLarge {
                sha256: sha256.to_string(),
                size,
                max: self.max_bytes,
            });
        }
        let stored = self.stored_size(sha256)?.is_some();
        let temp = if stored {
            None
        } else {
            guard.room_for_file(size).map_err(BlobError::Storage)?;
            let path = self.dir.join(format!(
                ".{}-{}{PARTIAL_SUFFIX}",
                &sha256[..16],
                hex::encode(rand::random::<[u8; 8]>())
            ));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode_0600()
                .open(&path)
                .map_err(BlobError::io(&path))?;
            Some(Temp {
                file: tokio::fs::File::from_std(file),
                path,
            })
        };
        Ok(BlobWriter {
            sha256: sha256.to_string(),
            size,
            written: 0,
            hasher: Sha256::new(),
            dest,
            dir: self.dir.clone(),
            temp,
        })
    }

    /// Opens a stored file at `offset` for reading in chunks.
    pub async fn read_from(&self, sha256: &str, offset: u64) -> Result<BlobReader, BlobError> {
        let path = self.path_of(sha256)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(sha256.to_string()))
            }
            Err(e) => return Err(BlobError::io(&path)(e)),
        };
        let size = file.metadata().await.map_err(BlobError::io(&path))?.len();
        if offset > size {
            return Err(BlobError::BadOffset {
                sha256: sha256.to_string(),
                offset,
                size,
            });
        }
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(BlobError::io(&path))?;
        Ok(BlobReader {
            file,
            path,
            size,
            remaining: size - offset,
        })
    }

    /// The lock a pull of `sha256` from the other members holds, so that
    /// sessions wanting the same file wait for one transfer.
    pub fn pull_lock(&self, sha256: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut pulls = self
            .pulls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget locks nobody holds (a handful of models: cheap).
        pulls.retain(|_, l| Arc::strong_count(l) > 1);
        pulls.entry(sha256.to_string()).or_default().clone()
    }
}

/// `OpenOptions::mode(0o600)`, readable where it is used.
trait Private {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Private for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// The temporary file a write goes to.
#[derive(Debug)]
struct Temp {
    file: tokio::fs::File,
    path: PathBuf,
}

/// A model file being taken: see [`ModelBlobs::begin`]. Dropped before
/// [`BlobWriter::finish`], it removes its temporary file: nothing is
/// stored.
#[derive(Debug)]
pub struct BlobWriter {
    sha256: String,
    size: u64,
    written: u64,
    hasher: Sha256,
    dest: PathBuf,
    dir: PathBuf,
    /// None: the digest is stored already; the bytes are only checked.
    temp: Option<Temp>,
}

/// What a finished write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// The file is stored now.
    New,
    /// It was stored already (the bytes checked, then dropped).
    Already,
}

impl BlobWriter {
    /// The bytes taken so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Takes the next bytes: refused past the declared size, or when the
    /// disk would go below its reserve before the rest has landed.
    pub async fn write(&mut self, data: &[u8], guard: &StorageGuard) -> Result<(), BlobError> {
        let len = data.len() as u64;
        if self.written.saturating_add(len) > self.size {
            return Err(BlobError::Overrun {
                declared: self.size,
            });
        }
        self.hasher.update(data);
        self.written += len;
        if let Some(temp) = &mut self.temp {
            // What is still to come must fit (what came is on the disk
            // already, and in the free space statvfs reports).
            guard
                .room_for_file(self.size - self.written + len)
                .map_err(BlobError::Storage)?;
            temp.file
                .write_all(data)
                .await
                .map_err(BlobError::io(&temp.path))?;
        }
        Ok(())
    }

    /// Checks the size and the digest; then the file is synced, renamed to
    /// its digest and the directory synced: only then is it stored.
    pub async fn finish(mut self) -> Result<Stored, BlobError> {
        if self.written != self.size {
            return Err(BlobError::Short {
                got: self.written,
                declared: self.size,
            });
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if actual != self.sha256 {
            return Err(BlobError::Mismatch {
                declared: self.sha256.clone(),
                actual,
            });
        }
        let Some(temp) = self.temp.take() else {
            return Ok(Stored::Already);
        };
        let Temp { mut file, path } = temp;
        // From here a failure must still remove the temporary file.
        let landed = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&path, &self.dest).await?;
            tokio::fs::File::open(&self.dir).await?.sync_all().await
        }
        .await;
        if let Err(source) = landed {
            let _ = std::fs::remove_file(&path);
            return Err(BlobError::Io { path, source });
        }
        Ok(Stored::New)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            let _ = std::fs::remove_file(&temp.path);
        }
    }
}

/// A stored file read in chunks from an offset.
#[derive(Debug)]
pub struct BlobReader {
    file: tokio::fs::File,
    path: PathBuf,
    size: u64,
    remaining: u64,
}

impl BlobReader {
    /// The whole file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next at most [`MODEL_CHUNK_BYTES`], or None at the end.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, BlobError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let n = self.remaining.min(MODEL_CHUNK_BYTES as u64) as usize;
        let mut buf = vec![0; n];
        self.file
            .read_exact(&mut buf)
            .await
            .map_err(BlobError::io(&self.path))?;
        self.remaining -= n as u64;
        Ok(Some(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteWatch;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn guard(dir: &Path, reserve: u64) -> StorageGuard {
        StorageGuard::new(dir.to_path_buf(), reserve, WriteWatch::default())
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_file_is_stored_by_its_digest_only_when_its_bytes_hash_to_it() {
        let data_dir = tempfile::tempdir().unwrap();
        let blobs = ModelBlobs::open(data_dir.path(), 1 << 30).unwrap();
        let g = guard(data_dir.path(), 0);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = sha(&data);
        let mut w = blobs.begin(&digest, data.len() as u64, &g).unwrap();
        for chunk in data.chunks(MODEL_CHUNK_BYTES) {
            w.write(chunk, &g).await.unwrap();
        }
        assert_eq!(w.finish().await.unwrap(), Stored::New);
        assert_eq!(entries(blobs.dir()), vec![digest.clone()]);
        assert_eq!(blobs.stored_size(&digest).unwrap(), Some(data.len() as u64));
        // Read back whole, and from an offset.
        let mut r = blobs.read_from(&digest, 0).await.unwrap();
        let mut back = Vec::new();
        while let Some(c) = r.next_chunk().await.unwrap() {
            assert!(c.len() <= MODEL_CHUNK_BYTES);
            back.extend(c);
        }
        assert_eq!(back, data);
        let mut r = blobs.read_from(&digest, 2_500_000).await.unwrap();
        assert_eq!(r.size(), data.len() as u64);
        assert_eq!(r.next_chunk().await.unwrap().unwrap(), data[2_500_000..]);
        assert!(r.next_chunk().await.unwrap().is_none());
        let mut at_end = blobs.read_from(&digest, data.len() as u64).await.unwrap();
        assert!(at_end.next_chunk().await.unwrap().is_none());
        assert!(matches!(
            blobs.read_from(&digest, data.len() as u64 + 1).await,
            Err(BlobError::BadOffset { .. })
        ));
        // The same bytes again: checked, nothing new written.
        let mut w = blobs.begin(&digest, data.len() as u64, &g).unwrap();
        w.write(&data, &g).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), Stored::Already);
        // The same digest declared with other bytes: refused even when
        // already stored.
        let mut w = blobs.begin(&digest, 3, &g).unwrap();
        w.write(b"abc", &g).await.unwrap();
        assert!(matches!(w.finish().await, Err(BlobError::Mismatch { .. })));
        assert_eq!(entries(blobs.dir()), vec![digest]);
    }

    #[tokio::test]
    async fn bad_bytes_leave_nothing_behind() {
        let data_dir = tempfile::tempdir().unwrap();
        let blobs = ModelBlobs::open(data_dir.path(), 100).unwrap();
        let g = guard(data_dir.path(), 0);
        let declared = sha(b"the real model");
        // Other bytes than declared.
        let mut w = blobs.begin(&declared, 5, &g).unwrap();
        w.write(b"fake!", &g).await.unwrap();
        let e = w.finish().await.unwrap_err();
        assert!(e.to_string().contains("nothing was stored"), "{e}");
        // Past the declared size.
        let mut w = blobs.begin(&declared, 4, &g).unwrap();
        w.write(b"abc", &g).await.unwrap();
        assert!(matches!(
            w.write(b"de", &g).await,
            Err(BlobError::Overrun { declared: 4 })
        ));
        drop(w);
        // Short.
        let mut w = blobs.begin(&declared, 10, &g).unwrap();
        w.write(b"abc", &g).await.unwrap();
        assert!(matches!(
            w.finish().await,
            Err(BlobError::Short {
                got: 3,
                declared: 10
            })
        ));
        // Cut off half way (the client went away).
        let mut w = blobs.begin(&declared, 10, &g).unwrap();
        w.write(b"abc", &g).await.unwrap();
        drop(w);
        // Over the limit, empty.
        assert!(matches!(
            blobs.begin(&declared, 101, &g),
            Err(BlobError::TooLarge { size: 101, .. })
        ));
        assert!(matches!(
            blobs.begin(&declared, 0, &g),
            Err(BlobError::Empty)
        ));
        assert!(
            entries(blobs.dir()).is_empty(),
            "{:?}",
            entries(blobs.dir())
        );
        assert_eq!(blobs.stored_size(&declared).unwrap(), None);
    }

    #[tokio::test]
    async fn digests_that_are_not_exactly_64_lowercase_hex_are_refused() {
        let data_dir = tempfile::tempdir().unwrap();
        let blobs = ModelBlobs::open(data_dir.path(), 100).unwrap();
        let g = guard(data_dir.path(), 0);
        for bad in [
            "../../etc/passwd".to_string(),
            format!("../{}", "a".repeat(61)),
            "AB".repeat(32),
            "ab".repeat(31),
            "ab".repeat(33),
            String::new(),
            format!("{}/", "a".repeat(63)),
            format!("{}\0", "a".repeat(63)),
        ] {
            assert!(
                matches!(blobs.begin(&bad, 1, &g), Err(BlobError::BadDigest(_))),
                "{bad:?}"
            );
            assert!(matches!(
                blobs.read_from(&bad, 0).await,
                Err(BlobError::BadDigest(_))
            ));
            assert!(matches!(
                blobs.stored_size(&bad),
                Err(BlobError::BadDigest(_))
            ));
        }
        assert!(matches!(
            blobs.read_from(&"ab".repeat(32), 0).await,
            Err(BlobError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn an_upload_that_would_eat_the_disk_reserve_is_refused() {
        let data_dir = tempfile::tempdir().unwrap();
        let blobs = ModelBlobs::open(data_dir.path(), u64::MAX).unwrap();
        // A reserve larger than any disk: nothing fits.
        let g = guard(data_dir.path(), u64::MAX / 2);
        let e = blobs.begin(&"ab".repeat(32), 10, &g).unwrap_err();
        assert!(matches!(e, BlobError::Storage(_)), "{e}");
        assert!(e.to_string().contains("--min-free-disk-mib"), "{e}");
        assert!(entries(blobs.dir()).is_empty());
    }

    #[tokio::test]
    async fn half_written_files_a_crash_left_are_removed_at_open() {
        let data_dir = tempfile::tempdir().unwrap();
        let blobs = ModelBlobs::open(data_dir.path(), 100).unwrap();
        let g = guard(data_dir.path(), 0);
        let digest = sha(b"kept");
        let mut w = blobs.begin(&digest, 4, &g).unwrap();
        w.write(b"kept", &g).await.unwrap();
        w.finish().await.unwrap();
        let mut w = blobs.begin(&sha(b"cut"), 3, &g).unwrap();
        w.write(b"cu", &g).await.unwrap();
        // A crash: the writer never runs its drop.
        std::mem::forget(w);
        assert_eq!(entries(blobs.dir()).len(), 2);
        let reopened = ModelBlobs::open(data_dir.path(), 100).unwrap();
        assert_eq!(entries(reopened.dir()), vec![digest]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(reopened.dir())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
