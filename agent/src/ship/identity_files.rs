//! The agent's identity files (key, certificate, CA, enrollment settings),
//! written by `enroll` and by renewal: each is replaced whole, through a new
//! file made with its final mode and renamed into place, then the directory
//! synced, so neither a crash nor a reader ever sees half a key and a
//! renewal survives a power cut.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

/// Replaces `path` with `contents` at `mode` (the temporary file is
/// `.NAME.new` beside it, made with `O_EXCL` at `mode`).
pub fn replace_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let staged = stage(path, contents, mode)?;
    std::fs::rename(&staged, path).with_context(|| format!("renaming into {}", path.display()))?;
    sync_dir(path)
}

/// Pair replacements and their recovery, one at a time.
static PAIR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Replaces a private key and its certificate as a pair: both staged and
/// synced first, then the key renamed into place, then the certificate.
/// A crash between the two renames leaves the staged certificate, which
/// [`finish_interrupted_pair`] puts in place (the control plane has
/// already retired the old certificate, so going back is not possible).
pub fn replace_pair(key: &Path, key_pem: &str, cert: &Path, cert_pem: &str) -> anyhow::Result<()> {
    let _one_at_a_time = PAIR.lock().unwrap_or_else(|p| p.into_inner());
    let staged_key = stage(key, key_pem, 0o600)?;
    let staged_cert = stage(cert, cert_pem, 0o644)?;
    std::fs::rename(&staged_key, key)
        .with_context(|| format!("renaming into {}", key.display()))?;
    std::fs::rename(&staged_cert, cert)
        .with_context(|| format!("renaming into {}", cert.display()))?;
    sync_dir(cert)
}

/// Completes a [`replace_pair`] a crash interrupted: a staged certificate
/// whose public key is the key's in place (or the staged key's, when the
/// crash came before either rename) is renamed into place, the staged key
/// first. Staged files that belong to no such pair are removed. Whether
/// anything was completed.
pub fn finish_interrupted_pair(key: &Path, cert: &Path) -> anyhow::Result<bool> {
    // Not while a renewal in this process is between its steps (a session
    // starting then would take its staged key for debris).
    let _one_at_a_time = PAIR.lock().unwrap_or_else(|p| p.into_inner());
    finish_locked(key, cert)
}

/// The key and the certificate as they are now, read together (never one
/// from before a replacement and one from after), an interrupted
/// replacement completed first.
pub fn read_pair(key: &Path, cert: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let _one_at_a_time = PAIR.lock().unwrap_or_else(|p| p.into_inner());
    finish_locked(key, cert)?;
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    Ok((read(key)?, read(cert)?))
}

fn finish_locked(key: &Path, cert: &Path) -> anyhow::Result<bool> {
    let (staged_key, staged_cert) = (staged_name(key)?, staged_name(cert)?);
    let Ok(cert_pem) = std::fs::read_to_string(&staged_cert) else {
        let _ = std::fs::remove_file(&staged_key);
        return Ok(false);
    };
    let public_of = |p: &Path| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|pem| vigil_pki::public_key_info_of(&pem).ok())
    };
    let wanted = vigil_pki::CertificateInfo::from_pem(&cert_pem)
        .ok()
        .map(|c| c.public_key_der);
    let completed = match wanted {
        Some(w) if public_of(&staged_key).as_ref() == Some(&w) => {
            std::fs::rename(&staged_key, key)?;
            std::fs::rename(&staged_cert, cert)?;
            true
        }
        Some(w) if public_of(key).as_ref() == Some(&w) => {
            std::fs::rename(&staged_cert, cert)?;
            true
        }
        _ => false,
    };
    if !completed {
        let _ = std::fs::remove_file(&staged_cert);
        let _ = std::fs::remove_file(&staged_key);
    } else {
        sync_dir(cert)?;
    }
    Ok(completed)
}

/// `.NAME.new` beside `path`.
fn staged_name(path: &Path) -> anyhow::Result<std::path::PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(dir.join(format!(".{}.new", name.to_string_lossy())))
}

/// Writes and syncs `.NAME.new` (made anew with `O_EXCL` at `mode`).
fn stage(path: &Path, contents: &str, mode: u32) -> anyhow::Result<std::path::PathBuf> {
    let tmp = staged_name(path)?;
    write_new_file(&tmp, contents, mode)?;
    Ok(tmp)
}

/// Writes `path` anew (whatever was there removed, then made with
/// `O_EXCL` at `mode`, so never through a planted symlink) and syncs it.
pub fn write_new_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_replaced_file_has_its_mode_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("agent.key");
        std::fs::write(&key, "old").unwrap();
        // A stale temporary from a crash is replaced, not reused.
        std::fs::write(dir.path().join(".agent.key.new"), "stale").unwrap();
        replace_file(&key, "new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&key).unwrap(), "new");
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("agent.key")]);
    }

    /// A renewal cut off between its two renames (the key in place, the
    /// certificate still staged) is completed; one cut off before either
    /// is too; staged files of no pair are cleared.
    #[test]
    fn an_interrupted_pair_replacement_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let (key, cert) = (dir.path().join("agent.key"), dir.path().join("agent.pem"));
        let ca =
            vigil_pki::CertificateAuthority::init("t", time::OffsetDateTime::now_utc(), 1).unwrap();
        let issue = || {
            ca.issue(&vigil_pki::LeafRequest::new(
                vigil_pki::Identity::agent("h").unwrap(),
                time::OffsetDateTime::now_utc(),
                1,
            ))
            .unwrap()
        };
        let (old, new) = (issue(), issue());
        let write = |p: &Path, s: &str| std::fs::write(p, s).unwrap();
        // Between the renames.
        write(&key, &new.key_pem);
        write(&cert, &old.cert_pem);
        write(&dir.path().join(".agent.pem.new"), &new.cert_pem);
        assert!(finish_interrupted_pair(&key, &cert).unwrap());
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), new.cert_pem);
        // Before either rename.
        write(&key, &old.key_pem);
        write(&cert, &old.cert_pem);
        write(&dir.path().join(".agent.key.new"), &new.key_pem);
        write(&dir.path().join(".agent.pem.new"), &new.cert_pem);
        assert!(finish_interrupted_pair(&key, &cert).unwrap());
        assert_eq!(std::fs::read_to_string(&key).unwrap(), new.key_pem);
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), new.cert_pem);
        // A staged certificate of another key: removed, nothing replaced.
        write(&dir.path().join(".agent.pem.new"), &old.cert_pem);
        assert!(!finish_interrupted_pair(&key, &cert).unwrap());
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), new.cert_pem);
        assert!(!dir.path().join(".agent.pem.new").exists());
        // replace_pair itself leaves a matching pair and nothing staged.
        replace_pair(&key, &old.key_pem, &cert, &old.cert_pem).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
