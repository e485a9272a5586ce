//! The gRPC unix socket, created where no other local user can reach in:
//! its directory must belong to this user (or root) and be writable by no
//! one else (so nobody can plant or swap a name in it); a symbolic link at
//! the path is refused, never followed; a stale socket of this user from
//! an earlier run is replaced, anything else at the path is refused. The
//! socket is created 0660 (umask 0117 around `bind`, so it is never
//! reachable with wider permissions, and no chmod follows a name) and
//! removed at exit if it is still this user's socket.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use nix::unistd::{getegid, geteuid};

/// Mode of the created socket.
pub const SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    #[error("unix:{}: no file name", .0.display())]
    NoFileName(PathBuf),
    #[error("unix:{}: its directory: {source}", .path.display())]
    Directory { path: PathBuf, source: io::Error },
    #[error("unix:{}: its directory {} is writable by other users (mode {mode:04o}); refused", .path.display(), .dir.display())]
    DirectoryWritable {
        path: PathBuf,
        dir: PathBuf,
        mode: u32,
    },
    #[error("unix:{}: its directory {} belongs to uid {uid}, neither this user nor root; refused", .path.display(), .dir.display())]
    DirectoryOwner {
        path: PathBuf,
        dir: PathBuf,
        uid: u32,
    },
    #[error("unix:{} is a symbolic link; not followed", .0.display())]
    Symlink(PathBuf),
    #[error("unix:{} exists and is not a socket; refused", .0.display())]
    NotSocket(PathBuf),
    #[error("unix:{} is another user's socket (uid {uid}); refused", .path.display())]
    ForeignSocket { path: PathBuf, uid: u32 },
    #[error("unix:{}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// The socket file; removed when dropped if it is still this user's
/// socket.
#[derive(Debug)]
pub struct UnixSocketFile {
    path: PathBuf,
}

impl UnixSocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.file_type().is_socket() && meta.uid() == geteuid().as_raw() {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds a unix socket at `path` (see the module's rules).
pub fn bind_unix_socket(path: &Path) -> Result<(UnixListener, UnixSocketFile), SocketPathError> {
    let name = path
        .file_name()
        .ok_or_else(|| SocketPathError::NoFileName(path.to_path_buf()))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent).map_err(|source| SocketPathError::Directory {
        path: path.to_path_buf(),
        source,
    })?;
    check_directory(path, &dir)?;
    let socket_path = dir.join(name);
    match std::fs::symlink_metadata(&socket_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SocketPathError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(SocketPathError::Symlink(path.to_path_buf()))
        }
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(SocketPathError::NotSocket(path.to_path_buf()))
        }
        Ok(meta) if meta.uid() != geteuid().as_raw() => {
            return Err(SocketPathError::ForeignSocket {
                path: path.to_path_buf(),
                uid: meta.uid(),
            })
        }
        Ok(_) => {
            tracing::info!(path = %socket_path.display(), "replacing a stale socket");
            std::fs::remove_file(&socket_path).map_err(|source| SocketPathError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        }
    }
    // Process-wide, for this one call at start-up: the socket is created
    // 0660 by the kernel itself.
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o777 & !SOCKET_MODE));
    let bound = UnixListener::bind(&socket_path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|source| SocketPathError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = UnixSocketFile { path: socket_path };
    listener
        .set_nonblocking(true)
        .map_err(|source| SocketPathError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok((listener, file))
}

/// The socket's directory must be this user's or root's, and writable by
/// no other user: not by others, and by its group only if that group is
/// this process's.
fn check_directory(path: &Path, dir: &Path) -> Result<(), SocketPathError> {
    let meta = std::fs::metadata(dir).map_err(|source| SocketPathError::Directory {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SocketPathError::Directory {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let uid = meta.uid();
    if uid != geteuid().as_raw() && uid != 0 {
        return Err(SocketPathError::DirectoryOwner {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    let others_write = mode & 0o002 != 0;
    let foreign_group_write = mode & 0o020 != 0 && meta.gid() != getegid().as_raw();
    if others_write || foreign_group_write {
        return Err(SocketPathError::DirectoryWritable {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "unix_socket_path_tests.rs"]
mod tests;
