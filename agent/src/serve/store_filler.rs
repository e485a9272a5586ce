//! Fills the model store from the control plane: the model is fetched by
//! digest (the shipper's `ModelFetcher`, which verifies size and digest)
//! into a private scratch directory, in memory where the host has a tmpfs
//! (`/dev/shm`), then unlinked and encrypted into the store from the open
//! file, so its plaintext is never kept on disk.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use sha2::Digest;
use vigil_domain::ModelRecord;

use super::model_store::{FileStamp, ModelStore};

/// Where fetched model bytes come from.
pub trait ModelSource: Send + Sync + 'static {
    /// Writes the model `sha256` of `size` bytes to `dest`, verified (the
    /// file appears only complete and hashing to `sha256`).
    fn fetch_to<'a>(
        &'a self,
        sha256: &'a str,
        size: u64,
        dest: &'a Path,
    ) -> Pin<Box<dyn Future<Output = Result<(), FetchFailure>> + Send + 'a>>;
}

/// Why a fetch failed, and whether the control plane's answer itself was
/// wrong (bytes or size not the approved ones, or refused): a refusal to
/// report rather than a network hiccup to retry quietly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFailure {
    pub reason: String,
    pub refused: bool,
}

impl ModelSource for crate::ship::model_fetch::ModelFetcher {
    fn fetch_to<'a>(
        &'a self,
        sha256: &'a str,
        size: u64,
        dest: &'a Path,
    ) -> Pin<Box<dyn Future<Output = Result<(), FetchFailure>> + Send + 'a>> {
        Box::pin(async move {
            use crate::ship::model_fetch::ModelFetchError as E;
            self.fetch(sha256, size, dest)
                .await
                .map(|_| ())
                .map_err(|e| FetchFailure {
                    refused: matches!(
                        e,
                        E::DigestMismatch { .. }
                            | E::SizeMismatch { .. }
                            | E::Overrun { .. }
                            | E::Refused { .. }
                    ),
                    reason: e.to_string(),
                })
        })
    }
}

/// The fetcher in front of the store.
#[derive(Clone)]
pub struct StoreFiller {
    source: Arc<dyn ModelSource>,
    store: ModelStore,
    scratch: Arc<Scratch>,
    /// One fetch per digest at a time (two names may share a file).
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The scratch directory, removed with what it holds when dropped.
struct Scratch {
    dir: PathBuf,
    in_memory: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl StoreFiller {
    /// A filler fetching through `source` into `store`, for the agent
    /// whose data directory is `data_dir`. Its scratch directory is made
    /// new, 0700, under a random name no one can make first:
    /// `/dev/shm/vigil-model-fetch-<hash of data_dir>-<random>` when that
    /// is a tmpfs the agent can use, else
    /// `data_dir/models.fetch-<random>` (on disk: the plaintext lives there
    /// only while it is fetched); what an earlier run of the same agent
    /// left (its own directories of that prefix, killed mid-fetch) goes
    /// first.
    pub fn new(
        source: Arc<dyn ModelSource>,
        store: ModelStore,
        data_dir: &Path,
    ) -> Result<StoreFiller, String> {
        let tag = hex::encode(&sha2::Sha256::digest(data_dir.as_os_str().as_encoded_bytes())[..8]);
        let shm = Path::new("/dev/shm");
        let scratch = match private_dir(shm, &format!("vigil-model-fetch-{tag}-"), true) {
            Ok(dir) => Scratch {
                dir,
                in_memory: true,
            },
            Err(why) => {
                tracing::warn!(%why, fallback = %data_dir.display(), "no tmpfs for fetched models: their plaintext waits on disk while fetched");
                Scratch {
                    dir: private_dir(data_dir, "models.fetch-", false)?,
                    in_memory: false,
                }
            }
        };
        Ok(StoreFiller {
            source,
            store,
            scratch: Arc::new(scratch),
            locks: Arc::default(),
        })
    }

    pub fn scratch_dir(&self) -> &Path {
        &self.scratch.dir
    }

    pub fn scratch_in_memory(&self) -> bool {
        self.scratch.in_memory
    }

    pub fn store(&self) -> &ModelStore {
        &self.store
    }

    /// Makes sure the store holds `record`'s model: fetched, verified,
    /// encrypted in. Returns the store file's stamp.
    pub async fn fill(&self, record: &ModelRecord) -> Result<FileStamp, FetchFailure> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(record.sha256.clone()).or_default().clone()
        };
        let _turn = lock.lock().await;
        if let Ok(stamp) = self.store.stamp(&record.sha256) {
            return Ok(stamp);
        }
        let dest = self.scratch.dir.join(format!("{}.plain", record.sha256));
        self.source
            .fetch_to(&record.sha256, record.size, &dest)
            .await?;
        let io = |e: std::io::Error| FetchFailure {
            reason: format!("{}: {e}", dest.display()),
            refused: false,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&dest)
            .map_err(io)?;
        // Gone from every directory before it is read: what is left of the
        // plaintext is this open file, freed when it closes.
        std::fs::remove_file(&dest).map_err(io)?;
        let store = self.store.clone();
        let (sha256, size) = (record.sha256.clone(), record.size);
        let stored = tokio::task::spawn_blocking(move || {
            store.put(
                &sha256,
                size,
                std::io::BufReader::with_capacity(1 << 20, file),
            )
        })
        .await
        .map_err(|e| FetchFailure {
            reason: format!("encrypting into the store: {e}"),
            refused: false,
        })?;
        stored.map_err(|e| FetchFailure {
            refused: matches!(
                e,
                super::model_store::StoreError::SourceHash { .. }
                    | super::model_store::StoreError::SourceSize { .. }
            ),
            reason: e.to_string(),
        })
    }
}

/// `parent/<prefix><random>`, made new (0700, `O_EXCL`: never one that
/// was there), that only this user can enter (`tmpfs`: only when `parent`
/// is a tmpfs). Directories of this user with the prefix, left by an
/// earlier run, go with what they hold; anyone else's are left alone and
/// never used.
fn private_dir(parent: &Path, prefix: &str, tmpfs: bool) -> Result<PathBuf, String> {
    if tmpfs {
        let fs = rustix::fs::statfs(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        // TMPFS_MAGIC
        if fs.f_type as i64 != 0x0102_1994 {
            return Err(format!("{} is not a tmpfs", parent.display()));
        }
    }
    let me = rustix::process::geteuid().as_raw();
    let entries = std::fs::read_dir(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() && meta.uid() == me => {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), error = %e, "could not remove what an earlier run left");
                }
            }
            Ok(meta) => {
                tracing::warn!(path = %path.display(), uid = meta.uid(), "not the agent's: left alone, never used");
            }
            Err(_) => {}
        }
    }
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .rand_bytes(12)
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)
        .map_err(|e| format!("creating a directory in {}: {e}", parent.display()))?
        .keep();
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o077 != 0 {
        let _ = std::fs::remove_dir(&dir);
        return Err(format!("{}: not a private directory", dir.display()));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;
    use crate::serve::store_key::StoreKey;

    /// Serves from memory; counts calls; may corrupt.
    struct Memory {
        bytes: Vec<u8>,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl ModelSource for Memory {
        fn fetch_to<'a>(
            &'a self,
            _sha256: &'a str,
            _size: u64,
            dest: &'a Path,
        ) -> Pin<Box<dyn Future<Output = Result<(), FetchFailure>> + Send + 'a>> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move {
                std::fs::write(dest, &self.bytes).map_err(|e| FetchFailure {
                    reason: e.to_string(),
                    refused: false,
                })
            })
        }
    }

    #[tokio::test]
    async fn a_fetched_model_is_encrypted_in_and_its_plaintext_is_gone() {
        let data = tempfile::tempdir().unwrap();
        let key = Arc::new(StoreKey::from_bytes(&[9; 32], "t").unwrap());
        let (store, _) = ModelStore::open(data.path(), key).unwrap();
        let bytes = b"onnx model bytes".repeat(1000);
        let source = Arc::new(Memory {
            bytes: bytes.clone(),
            calls: Default::default(),
        });
        let filler = StoreFiller::new(source.clone(), store.clone(), data.path()).unwrap();
        let scratch = filler.scratch_dir().to_path_buf();
        let record = ModelRecord {
            name: "m".into(),
            version: 1,
            sha256: hex::encode(sha2::Sha256::digest(&bytes)),
            size: bytes.len() as u64,
            ..Default::default()
        };
        filler.fill(&record).await.unwrap();
        // Twice: the second finds it stored.
        filler.fill(&record).await.unwrap();
        assert_eq!(source.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
        let read = store
            .open_verified(&record.sha256, record.size, "m")
            .unwrap();
        assert_eq!(read.memfd.read_all().unwrap(), bytes);
        // Bytes that are not the record's are refused and not stored.
        let wrong = ModelRecord {
            sha256: "ab".repeat(32),
            ..record.clone()
        };
        let e = filler.fill(&wrong).await.unwrap_err();
        assert!(e.refused, "{e:?}");
        assert!(!store.contains(&wrong.sha256));
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
        drop(filler);
        assert!(!scratch.exists());
    }

    #[test]
    fn the_scratch_name_is_random_leftovers_go_and_planted_ones_are_never_used() {
        let parent = tempfile::tempdir().unwrap();
        let dir = private_dir(parent.path(), "scratch-", false).unwrap();
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        std::fs::write(dir.join("x.plain"), b"plaintext of a fetch cut off").unwrap();
        // What a local user made first under the prefix (a link, a
        // directory of another uid) is never the scratch directory.
        let elsewhere = tempfile::tempdir().unwrap();
        let planted = parent.path().join("scratch-planted");
        std::os::unix::fs::symlink(elsewhere.path(), &planted).unwrap();
        let theirs = parent.path().join("scratch-theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let again = private_dir(parent.path(), "scratch-", false).unwrap();
        assert_ne!(again, dir);
        assert!(!dir.exists(), "the earlier run's leftovers go");
        assert!(again != planted && again != theirs);
        assert!(std::fs::symlink_metadata(&planted).is_ok());
        assert!(theirs.is_dir());
        assert!(elsewhere.path().exists());
        assert_eq!(std::fs::read_dir(&again).unwrap().count(), 0);
        // The next start takes another name again.
        let next = private_dir(parent.path(), "scratch-", false).unwrap();
        assert_ne!(next, again);
        assert!(!again.exists());
    }
}
