//! The model store's 32-byte key. Where the agent has a TPM it is sealed
//! to the agent's PCR policy (`DATA_DIR/model-store.key.sealed`): only
//! this TPM, with those PCRs unchanged, gives it back. Without one it is a
//! key file (`DATA_DIR/model-store.key`), created 0600 and exclusively,
//! and refused when anyone else could read or replace it.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest;

use crate::attest::{PcrList, SealedSecret, Tpm, TpmError};

pub const KEY_LEN: usize = 32;
/// The key file without a TPM.
pub const KEY_FILE: &str = "model-store.key";
/// The sealed key with a TPM.
pub const SEALED_KEY_FILE: &str = "model-store.key.sealed";
/// Largest sealed key file read (a TPM2B_PUBLIC and TPM2B_PRIVATE).
const MAX_SEALED_LEN: u64 = 8 << 10;

/// The key, and the 8 bytes that name it in every store file's header (a
/// file under another key is known as such, not as corrupt).
pub struct StoreKey {
    aead: LessSafeKey,
    id: [u8; 8],
    /// Where it is kept, said in errors and logs.
    origin: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKey")
            .field("id", &hex::encode(self.id))
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl StoreKey {
    pub fn from_bytes(
        bytes: &[u8; KEY_LEN],
        origin: impl Into<String>,
    ) -> Result<StoreKey, KeyError> {
        let digest = sha2::Sha256::new()
            .chain_update(b"vigil.model-store.key-id.v1\0")
            .chain_update(bytes)
            .finalize();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        // ring refuses only a key of the wrong length.
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| KeyError::Cipher)?;
        Ok(StoreKey {
            aead: LessSafeKey::new(unbound),
            id,
            origin: origin.into(),
        })
    }

    pub fn aead(&self) -> &LessSafeKey {
        &self.aead
    }

    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {problem}")]
    Refused { path: PathBuf, problem: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Sealed {
        path: PathBuf,
        source: crate::attest::sealed_secret::SealedSecretError,
    },
    #[error("{what}: {source}")]
    Tpm {
        what: String,
        #[source]
        source: TpmError,
    },
    #[error("no random bytes for a new key")]
    Random,
    #[error("AES-256-GCM refused the key")]
    Cipher,
}

/// The key, and why the store was started anew when it was (the sealed
/// key no longer unseals: the PCRs changed).
pub struct OpenedKey {
    pub key: StoreKey,
    pub reset: Option<String>,
}

/// Where the key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// `DATA_DIR/model-store.key`.
    File,
    /// `DATA_DIR/model-store.key.sealed`, sealed to these sha256 PCRs.
    Tpm { tpm: Tpm, pcrs: PcrList },
}

impl KeySource {
    /// The key, made on first use. Blocking (file and TPM I/O).
    pub fn open(&self, data_dir: &Path) -> Result<OpenedKey, KeyError> {
        match self {
            KeySource::File => Ok(OpenedKey {
                key: key_file(&data_dir.join(KEY_FILE))?,
                reset: None,
            }),
            KeySource::Tpm { tpm, pcrs } => sealed_key(tpm, pcrs, &data_dir.join(SEALED_KEY_FILE)),
        }
    }
}

fn random_key() -> Result<[u8; KEY_LEN], KeyError> {
    let mut key = [0u8; KEY_LEN];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| KeyError::Random)?;
    Ok(key)
}

/// The key file at `path`: read when it exists and only its owner (this
/// process's user) can read or write it; else made, exclusively, 0600.
pub fn key_file(path: &Path) -> Result<StoreKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let refused = |problem: String| KeyError::Refused {
        path: path.to_path_buf(),
        problem,
    };
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(mut file) => {
            let meta = file.metadata().map_err(io)?;
            check_private(&meta).map_err(refused)?;
            if meta.len() != KEY_LEN as u64 {
                return Err(refused(format!(
                    "{} bytes; a model store key is {KEY_LEN}",
                    meta.len()
                )));
            }
            let mut key = [0u8; KEY_LEN];
            file.read_exact(&mut key).map_err(io)?;
            StoreKey::from_bytes(&key, path.display().to_string())
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(refused(
            "a symbolic link; the key file must be a regular file".into(),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = random_key()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)
                .map_err(io)?;
            // The umask cannot widen 0600, but a mode set explicitly says so.
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .and_then(|()| file.write_all(&key))
                .and_then(|()| file.sync_all())
                .map_err(io)?;
            sync_parent(path);
            tracing::info!(path = %path.display(), "made a new model store key");
            StoreKey::from_bytes(&key, path.display().to_string())
        }
        Err(e) => Err(io(e)),
    }
}

/// A regular file owned by this process's user that nobody else may
/// read or write.
fn check_private(meta: &std::fs::Metadata) -> Result<(), String> {
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "owned by uid {}, not by the agent's uid {me}",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "mode {mode:04o}: others may read or change it (chmod 600, or remove it to start a new store)"
        ));
    }
    Ok(())
}

fn sync_parent(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// The key sealed at `path`; a new one sealed to `pcrs` when there is
/// none, or when the PCRs changed since it was sealed (then the store
/// under the old key is unreadable, and `reset` says so).
fn sealed_key(tpm: &Tpm, pcrs: &PcrList, path: &Path) -> Result<OpenedKey, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    let existing = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => {
            let meta = file.metadata().map_err(io)?;
            check_private(&meta).map_err(|problem| KeyError::Refused {
                path: path.to_path_buf(),
                problem,
            })?;
            let mut bytes = Vec::new();
            file.take(MAX_SEALED_LEN + 1)
                .read_to_end(&mut bytes)
                .map_err(io)?;
            Some(
                SealedSecret::from_bytes(&bytes).map_err(|source| KeyError::Sealed {
                    path: path.to_path_buf(),
                    source,
                })?,
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(KeyError::Refused {
                path: path.to_path_buf(),
                problem: "a symbolic link; the sealed key must be a regular file".into(),
            })
        }
        Err(e) => return Err(io(e)),
    };
    let mut reset = None;
    if let Some(sealed) = existing {
        match tpm.unseal(&sealed) {
            Ok(bytes) => {
                let key: [u8; KEY_LEN] =
                    bytes.as_slice().try_into().map_err(|_| KeyError::Refused {
                        path: path.to_path_buf(),
                        problem: format!("unsealed {} bytes, not {KEY_LEN}", bytes.len()),
                    })?;
                return Ok(OpenedKey {
                    key: StoreKey::from_bytes(&key, format!("{} (TPM)", path.display()))?,
                    reset: None,
                });
            }
            Err(e @ TpmError::PcrsChanged { .. }) => {
                reset = Some(format!(
                    "the model store key in {} no longer unseals ({e}): the stored models are unreadable; a new key and store were made and the models are fetched again",
                    path.display()
                ));
            }
            Err(source) => {
                return Err(KeyError::Tpm {
                    what: format!("unsealing {}", path.display()),
                    source,
                })
            }
        }
    }
    let key = random_key()?;
    let sealed = tpm.seal(&key, pcrs).map_err(|source| KeyError::Tpm {
        what: format!("sealing a new model store key to sha256 PCRs {pcrs}"),
        source,
    })?;
    crate::attest::tpm_cli::write_new_file(path, &sealed.to_bytes(), 0o600).map_err(|e| {
        KeyError::Refused {
            path: path.to_path_buf(),
            problem: format!("{e:#}"),
        }
    })?;
    sync_parent(path);
    tracing::info!(path = %path.display(), %pcrs, "made a new model store key, sealed to the TPM");
    Ok(OpenedKey {
        key: StoreKey::from_bytes(&key, format!("{} (TPM)", path.display()))?,
        reset,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_key_file_is_made_0600_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let made = key_file(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        let again = key_file(&path).unwrap();
        assert_eq!(made.id(), again.id());
    }

    #[test]
    fn a_key_file_others_can_read_or_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        key_file(&path).unwrap();
        for mode in [0o640, 0o604, 0o620, 0o602, 0o644] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = key_file(&path).unwrap_err().to_string();
            assert!(e.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(e.contains("others may read or change it"), "{e}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        key_file(&path).unwrap();
    }

    #[test]
    fn a_key_file_of_another_owner_is_refused() {
        if !rustix::process::geteuid().is_root() {
            // chown needs root; the check itself is the same code path as
            // the mode check (check_private).
            let meta = std::fs::metadata("/").unwrap();
            if meta.uid() != rustix::process::geteuid().as_raw() {
                assert!(check_private(&meta).unwrap_err().contains("owned by uid"));
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        key_file(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let e = key_file(&path).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }

    #[test]
    fn a_symlink_wrong_length_or_directory_is_refused_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, [7u8; KEY_LEN]).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join(KEY_FILE);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = key_file(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");

        let short = dir.path().join("short.key");
        std::fs::write(&short, [1u8; 31]).unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = key_file(&short).unwrap_err().to_string();
        assert!(e.contains("31 bytes"), "{e}");

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(key_file(&sub).is_err());
    }

    #[test]
    fn a_key_sealed_to_the_tpm_unseals_until_a_pcr_changes_then_the_store_starts_anew() {
        use vigil_integration::swtpm::{require_swtpm, Swtpm, SwtpmCa};
        let test = "a_key_sealed_to_the_tpm_unseals_until_a_pcr_changes_then_the_store_starts_anew";
        require_swtpm(test);
        let ca = SwtpmCa::new();
        let swtpm = Swtpm::manufacture(&ca);
        let selection: crate::attest::TpmSelection = swtpm.tcti().parse().unwrap();
        let source = KeySource::Tpm {
            tpm: Tpm::new(selection.resolve().unwrap()),
            pcrs: "0-7,16".parse().unwrap(),
        };
        let data = tempfile::tempdir().unwrap();
        let first = source.open(data.path()).unwrap();
        assert!(first.reset.is_none());
        let sealed = data.path().join(SEALED_KEY_FILE);
        assert_eq!(std::fs::metadata(&sealed).unwrap().mode() & 0o777, 0o600);
        assert!(!data.path().join(KEY_FILE).exists());
        // A model stored under it.
        let key = std::sync::Arc::new(first.key);
        let (store, _) =
            crate::serve::model_store::ModelStore::open(data.path(), key.clone()).unwrap();
        let bytes = b"weights".repeat(100);
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        store
            .put(&digest, bytes.len() as u64, bytes.as_slice())
            .unwrap();
        // The same PCRs: the same key, the store reads.
        let again = source.open(data.path()).unwrap();
        assert!(again.reset.is_none());
        assert_eq!(again.key.id(), key.id());
        // PCR 16 extended (the boot measured something else): the key no
        // longer unseals; a new one is made and the old store is dropped.
        swtpm.extend_pcr(16, &"ab".repeat(32));
        let after = source.open(data.path()).unwrap();
        let reset = after.reset.expect("a reset, said");
        assert!(reset.contains("no longer unseals"), "{reset}");
        assert_ne!(after.key.id(), key.id());
        let (store, dropped) = crate::serve::model_store::ModelStore::open(
            data.path(),
            std::sync::Arc::new(after.key),
        )
        .unwrap();
        assert_eq!(dropped, vec![digest.clone()]);
        assert!(!store.contains(&digest));
        // The new key unseals with the PCRs as they are now.
        let later = source.open(data.path()).unwrap();
        assert!(later.reset.is_none());
    }

    #[test]
    fn key_ids_differ_between_keys() {
        let a = StoreKey::from_bytes(&[1; KEY_LEN], "a").unwrap();
        let b = StoreKey::from_bytes(&[2; KEY_LEN], "b").unwrap();
        assert_ne!(a.id(), b.id());
        assert_eq!(
            a.id(),
            StoreKey::from_bytes(&[1; KEY_LEN], "c").unwrap().id()
        );
    }
}
