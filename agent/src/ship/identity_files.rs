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
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.new", name.to_string_lossy()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
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
}
