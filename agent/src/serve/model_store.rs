//! The encrypted, content-addressed model store:
//! `DATA_DIR/models.v1/<sha256>.vgm`, one file per model digest.
//!
//! ```text
//! header (72 bytes): "VIGILMDL" format(u8 = 1) 0 0 0 chunk_size(u32 BE)
//!                    key_id(8) nonce_prefix(8) size(u64 BE) sha256(32)
//! chunks:            AES-256-GCM(chunk_size bytes, the last one shorter) ‖ tag(16)
//! ```
//!
//! Each chunk's nonce is the file's random prefix ‖ the chunk's index
//! (u32 BE); its additional data is the whole header ‖ index ‖ a
//! last-chunk flag. So a changed byte anywhere, a chunk moved, dropped
//! or taken from another file, a file cut short or renamed to another
//! digest, or read under another key, fails with the reason, and the
//! plaintext's sha256 is checked against the record's once more as it is
//! decrypted into a sealed memory file. The plaintext is never written to
//! disk: a store file is written encrypted beside its name and renamed
//! over it once synced.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::aead::{Aad, Nonce, Tag};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest;
use vigil_domain::is_model_digest;

use super::sealed_memfd::{MemfdWriter, SealedMemfd};
use super::store_key::StoreKey;

/// The store's folder in the agent's data directory.
pub const STORE_DIR: &str = "models.v1";
const MAGIC: &[u8; 8] = b"VIGILMDL";
const FORMAT: u8 = 1;
pub const HEADER_LEN: usize = 72;
const TAG_LEN: usize = 16;
/// Plaintext bytes per chunk (the last one may be shorter).
pub const CHUNK_LEN: usize = 1 << 20;
/// Most chunks a file has (the index is 32 bits): 4 PiB.
const MAX_CHUNKS: u64 = u32::MAX as u64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: not in the store")]
    Missing { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0:?} is not a sha256 digest (64 lowercase hex digits)")]
    BadDigest(String),
    #[error(
        "{path}: not a regular file (a symbolic link or another kind of file is never followed)"
    )]
    NotRegular { path: PathBuf },
    #[error("{path}: not a model store file (bad magic)")]
    NotAStoreFile { path: PathBuf },
    #[error("{path}: store format {found}; this agent reads format {FORMAT}")]
    Format { path: PathBuf, found: u8 },
    #[error("{path}: encrypted under key {found}, not the store's key {ours} (made under an earlier key)")]
    OtherKey {
        path: PathBuf,
        found: String,
        ours: String,
    },
    #[error("{path}: holds the model with digest {holds}, not {wanted} (a file renamed or copied to another digest)")]
    OtherDigest {
        path: PathBuf,
        holds: String,
        wanted: String,
    },
    #[error("{path}: holds {holds} bytes; the record says {wanted}")]
    OtherSize {
        path: PathBuf,
        holds: u64,
        wanted: u64,
    },
    #[error("{path}: {len} bytes; a store file for {size} bytes of model is {expected} (cut short or extended)")]
    Length {
        path: PathBuf,
        len: u64,
        size: u64,
        expected: u64,
    },
    #[error("{path}: chunk {index} of {chunks} fails authentication: changed, moved or taken from another file (tampered)")]
    Chunk {
        path: PathBuf,
        index: u64,
        chunks: u64,
    },
    #[error("{path}: the decrypted bytes hash to {got}, not the approved {wanted} (tampered)")]
    Hash {
        path: PathBuf,
        got: String,
        wanted: String,
    },
    #[error("the model's bytes hash to {got}, not the approved {wanted}")]
    SourceHash { got: String, wanted: String },
    #[error("the model's source gave {got} bytes; the record says {wanted}")]
    SourceSize { got: u64, wanted: u64 },
    #[error("{size} bytes: too large for the store ({MAX_CHUNKS} chunks of {CHUNK_LEN} bytes)")]
    TooLarge { size: u64 },
    #[error("no random bytes for a nonce")]
    Random,
}

impl StoreError {
    /// Whether the file is there but its bytes are not what was stored
    /// (changed, cut, swapped, renamed, under another key): the store
    /// drops it and fetches it again.
    pub fn is_tamper(&self) -> bool {
        matches!(
            self,
            StoreError::NotRegular { .. }
                | StoreError::NotAStoreFile { .. }
                | StoreError::Format { .. }
                | StoreError::OtherKey { .. }
                | StoreError::OtherDigest { .. }
                | StoreError::OtherSize { .. }
                | StoreError::Length { .. }
                | StoreError::Chunk { .. }
                | StoreError::Hash { .. }
        )
    }
}

/// What identifies a version of a store file: when any of it changes the
/// file is verified again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.len(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

/// A model read back and verified: its plaintext in a sealed memory file,
/// and the stamp of the store file it came from.
#[derive(Debug)]
pub struct VerifiedModel {
    pub memfd: SealedMemfd,
    pub stamp: FileStamp,
}

#[derive(Clone)]
pub struct ModelStore {
    dir: PathBuf,
    key: Arc<StoreKey>,
}

struct Header {
    chunk_len: u32,
    key_id: [u8; 8],
    nonce_prefix: [u8; 8],
    size: u64,
    sha256: [u8; 32],
}

impl Header {
    fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[..8].copy_from_slice(MAGIC);
        h[8] = FORMAT;
        h[12..16].copy_from_slice(&self.chunk_len.to_be_bytes());
        h[16..24].copy_from_slice(&self.key_id);
        h[24..32].copy_from_slice(&self.nonce_prefix);
        h[32..40].copy_from_slice(&self.size.to_be_bytes());
        h[40..72].copy_from_slice(&self.sha256);
        h
    }

    fn parse(h: &[u8; HEADER_LEN], path: &Path) -> Result<Header, StoreError> {
        if &h[..8] != MAGIC {
            return Err(StoreError::NotAStoreFile {
                path: path.to_path_buf(),
            });
        }
        if h[8] != FORMAT || h[9..12] != [0, 0, 0] {
            return Err(StoreError::Format {
                path: path.to_path_buf(),
                found: h[8],
            });
        }
        let word = |r: std::ops::Range<usize>| -> [u8; 8] {
            let mut w = [0u8; 8];
            w.copy_from_slice(&h[r]);
            w
        };
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(&h[40..72]);
        Ok(Header {
            chunk_len: u32::from_be_bytes([h[12], h[13], h[14], h[15]]),
            key_id: word(16..24),
            nonce_prefix: word(24..32),
            size: u64::from_be_bytes(word(32..40)),
            sha256,
        })
    }

    fn chunks(&self) -> u64 {
        chunk_count(self.size, self.chunk_len as u64)
    }

    fn file_len(&self) -> u64 {
        HEADER_LEN as u64 + self.size + self.chunks() * TAG_LEN as u64
    }

    fn nonce(&self, index: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&self.nonce_prefix);
        // index < MAX_CHUNKS, checked before any chunk is sealed or opened.
        n[8..].copy_from_slice(&(index as u32).to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    fn aad(header: &[u8; HEADER_LEN], index: u64, last: bool) -> [u8; HEADER_LEN + 5] {
        let mut aad = [0u8; HEADER_LEN + 5];
        aad[..HEADER_LEN].copy_from_slice(header);
        aad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&(index as u32).to_be_bytes());
        aad[HEADER_LEN + 4] = u8::from(last);
        aad
    }
}

/// Chunks for `size` bytes: an empty model is one empty (last) chunk.
fn chunk_count(size: u64, chunk_len: u64) -> u64 {
    size.div_ceil(chunk_len.max(1)).max(1)
}

fn digest_bytes(sha256: &str) -> Result<[u8; 32], StoreError> {
    if !is_model_digest(sha256) {
        return Err(StoreError::BadDigest(sha256.chars().take(80).collect()));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(sha256, &mut out)
        .map_err(|_| StoreError::BadDigest(sha256.to_string()))?;
    Ok(out)
}

impl ModelStore {
    /// The store in `data_dir/models.v1` (made 0700), under `key`.
    /// Leftovers of interrupted writes go, and so do files under another
    /// key (unreadable now: a new key was made); their digests are
    /// returned, to be fetched again.
    pub fn open(
        data_dir: &Path,
        key: Arc<StoreKey>,
    ) -> Result<(ModelStore, Vec<String>), StoreError> {
        let dir = data_dir.join(STORE_DIR);
        let at = dir.clone();
        let io = |source| StoreError::Io {
            path: at.clone(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io)?;
        let meta = std::fs::symlink_metadata(&dir).map_err(io)?;
        if !meta.is_dir() {
            return Err(StoreError::NotRegular { path: dir });
        }
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(io)?;
        let store = ModelStore { dir, key };
        let mut dropped = Vec::new();
        let entries = std::fs::read_dir(&store.dir).map_err(io)?;
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(digest) = name.strip_suffix(".vgm").filter(|d| is_model_digest(d)) else {
                continue;
            };
            if let Err(e) = store.read_header(digest) {
                if e.is_tamper() {
                    tracing::warn!(error = %e, "dropping an unreadable model store file");
                    store.remove(digest);
                    dropped.push(digest.to_string());
                }
            }
        }
        Ok((store, dropped))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the model with this digest is kept.
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.vgm"))
    }

    /// The store file's stamp now (lstat: a symlink is its own stamp, and
    /// is refused when read).
    pub fn stamp(&self, sha256: &str) -> Result<FileStamp, StoreError> {
        digest_bytes(sha256)?;
        let path = self.path(sha256);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => Ok(FileStamp::of(&meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Missing { path }),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.stamp(sha256).is_ok()
    }

    /// Drops the model's file (tampered, or no longer approved).
    pub fn remove(&self, sha256: &str) {
        if digest_bytes(sha256).is_ok() {
            let path = self.path(sha256);
            match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(&self.dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a model store file")
                }
            }
        }
    }

    /// The digests stored.
    pub fn digests(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                let digest = name.to_str()?.strip_suffix(".vgm")?;
                is_model_digest(digest).then(|| digest.to_string())
            })
            .collect()
    }

    /// Encrypts `size` bytes from `source` into the store as the model
    /// `sha256`: written to a new file beside it, synced, renamed. The
    /// bytes must hash to `sha256`, or nothing is stored.
    pub fn put(
        &self,
        sha256: &str,
        size: u64,
        mut source: impl Read,
    ) -> Result<FileStamp, StoreError> {
        let digest = digest_bytes(sha256)?;
        let chunks = chunk_count(size, CHUNK_LEN as u64);
        if chunks > MAX_CHUNKS {
            return Err(StoreError::TooLarge { size });
        }
        let mut nonce_prefix = [0u8; 8];
        SystemRandom::new()
            .fill(&mut nonce_prefix)
            .map_err(|_| StoreError::Random)?;
        let header = Header {
            chunk_len: CHUNK_LEN as u32,
            key_id: self.key.id(),
            nonce_prefix,
            size,
            sha256: digest,
        };
        let header_bytes = header.to_bytes();
        let path = self.path(sha256);
        let temp = self.dir.join(format!(
            ".{}.{}.{:09}.tmp",
            sha256,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| StoreError::Io { path: p, source }
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&temp)
            .map_err(io(&temp))?;
        let written = (|| {
            let mut out = std::io::BufWriter::with_capacity(CHUNK_LEN + TAG_LEN, &file);
            out.write_all(&header_bytes).map_err(io(&temp))?;
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; CHUNK_LEN];
            let mut total = 0u64;
            for index in 0..chunks {
                let want = (size - total).min(CHUNK_LEN as u64) as usize;
                let chunk = &mut buf[..want];
                let got = read_full(&mut source, chunk).map_err(|source| StoreError::Io {
                    path: PathBuf::from("(the model's source)"),
                    source,
                })?;
                if got < want {
                    return Err(StoreError::SourceSize {
                        got: total + got as u64,
                        wanted: size,
                    });
                }
                hasher.update(&*chunk);
                total += want as u64;
                let last = index + 1 == chunks;
                let tag = self
                    .key
                    .aead()
                    .seal_in_place_separate_tag(
                        header.nonce(index),
                        Aad::from(Header::aad(&header_bytes, index, last)),
                        chunk,
                    )
                    .map_err(|_| StoreError::TooLarge { size })?;
                out.write_all(chunk).map_err(io(&temp))?;
                out.write_all(tag.as_ref()).map_err(io(&temp))?;
            }
            // The source must end where the record says.
            let mut probe = [0u8; 1];
            if matches!(source.read(&mut probe), Ok(n) if n > 0) {
                return Err(StoreError::SourceSize {
                    got: size + 1,
                    wanted: size,
                });
            }
            let got = hex::encode(hasher.finalize());
            if !got.eq_ignore_ascii_case(sha256) {
                return Err(StoreError::SourceHash {
                    got,
                    wanted: sha256.to_string(),
                });
            }
            out.flush().map_err(io(&temp))?;
            drop(out);
            file.sync_all().map_err(io(&temp))?;
            std::fs::rename(&temp, &path).map_err(io(&path))?;
            sync_dir(&self.dir);
            // After the rename, which changes the inode's ctime.
            Ok(FileStamp::of(&file.metadata().map_err(io(&path))?))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// Reads the header of the stored file (and checks its length).
    fn read_header(
        &self,
        sha256: &str,
    ) -> Result<(File, Header, [u8; HEADER_LEN], FileStamp), StoreError> {
        let digest = digest_bytes(sha256)?;
        let path = self.path(sha256);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path })
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(StoreError::NotRegular { path })
            }
            Err(e) => return Err(io(e)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(StoreError::NotRegular { path });
        }
        let stamp = FileStamp::of(&meta);
        let mut header_bytes = [0u8; HEADER_LEN];
        if meta.len() < HEADER_LEN as u64 {
            return Err(StoreError::Length {
                path,
                len: meta.len(),
                size: 0,
                expected: HEADER_LEN as u64,
            });
        }
        file.read_exact(&mut header_bytes).map_err(io)?;
        let header = Header::parse(&header_bytes, &path)?;
        if header.key_id != self.key.id() {
            return Err(StoreError::OtherKey {
                path,
                found: hex::encode(header.key_id),
                ours: hex::encode(self.key.id()),
            });
        }
        if header.sha256 != digest {
            return Err(StoreError::OtherDigest {
                path,
                holds: hex::encode(header.sha256),
                wanted: sha256.to_string(),
            });
        }
        if header.chunk_len == 0 || header.chunks() > MAX_CHUNKS {
            return Err(StoreError::Format {
                path,
                found: header_bytes[8],
            });
        }
        if meta.len() != header.file_len() {
            return Err(StoreError::Length {
                path,
                len: meta.len(),
                size: header.size,
                expected: header.file_len(),
            });
        }
        Ok((file, header, header_bytes, stamp))
    }

    /// Decrypts the model `sha256` of `size` bytes into a sealed memory
    /// file named `name`, checking every chunk and the digest of the whole.
    pub fn open_verified(
        &self,
        sha256: &str,
        size: u64,
        name: &str,
    ) -> Result<VerifiedModel, StoreError> {
        let (file, header, header_bytes, stamp) = self.read_header(sha256)?;
        let path = self.path(sha256);
        if header.size != size {
            return Err(StoreError::OtherSize {
                path,
                holds: header.size,
                wanted: size,
            });
        }
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut input =
            std::io::BufReader::with_capacity(header.chunk_len as usize + TAG_LEN, file);
        let mut memfd = MemfdWriter::new(&format!("vigil-model:{name}"), size).map_err(io)?;
        let mut hasher = sha2::Sha256::new();
        let chunks = header.chunks();
        let mut buf = vec![0u8; header.chunk_len as usize + TAG_LEN];
        let mut left = header.size;
        for index in 0..chunks {
            let plain_len = left.min(header.chunk_len as u64) as usize;
            let chunk = &mut buf[..plain_len + TAG_LEN];
            input.read_exact(chunk).map_err(io)?;
            let (data, tag) = chunk.split_at_mut(plain_len);
            let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| StoreError::Chunk {
                path: path.clone(),
                index,
                chunks,
            })?;
            let last = index + 1 == chunks;
            let plain = self
                .key
                .aead()
                .open_in_place_separate_tag(
                    header.nonce(index),
                    Aad::from(Header::aad(&header_bytes, index, last)),
                    Tag::from(tag),
                    data,
                    0..,
                )
                .map_err(|_| StoreError::Chunk {
                    path: path.clone(),
                    index,
                    chunks,
                })?;
            hasher.update(&*plain);
            memfd.write_all(plain).map_err(io)?;
            left -= plain_len as u64;
        }
        let got = hex::encode(hasher.finalize());
        if !got.eq_ignore_ascii_case(sha256) {
            return Err(StoreError::Hash {
                path,
                got,
                wanted: sha256.to_string(),
            });
        }
        let memfd = memfd.seal().map_err(io)?;
        Ok(VerifiedModel { memfd, stamp })
    }
}

/// Fills `buf` from `r` as far as it goes: the bytes read (fewer when
/// it ended first).
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
#[path = "model_store_tests.rs"]
mod tests;
