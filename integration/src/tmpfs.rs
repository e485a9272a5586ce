//! A small tmpfs, to fill a daemon's disk on purpose.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// A tmpfs mounted at a directory, unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) at `dir`
    /// (mode 0700, as a daemon's data directory must be),
    /// creating `dir`; panics when it cannot (the tests run as root).
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some(format!("size={size},mode=0700").as_str()),
        )
        .unwrap_or_else(|e| panic!("mounting a tmpfs at {}: {e}", dir.display()));
        Tmpfs(dir.to_path_buf())
    }

    /// Makes the tmpfs `size` large, keeping what it holds (space freed
    /// under a daemon that runs on it).
    pub fn resize(&self, size: &str) {
        mount(
            Some("tmpfs"),
            &self.0,
            Some("tmpfs"),
            MsFlags::MS_REMOUNT,
            Some(format!("size={size},mode=0700").as_str()),
        )
        .unwrap_or_else(|e| panic!("resizing the tmpfs at {}: {e}", self.0.display()));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}
