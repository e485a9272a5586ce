//! Where a sidecar's unix socket may be, and what the agent may delete
//! there. A record's `listen unix:PATH` must name a plain file name
//! (`[A-Za-z0-9._-]+`, not `.` or `..`) directly in one of the agent's
//! socket directories (`DATA_DIR/models`, and `--sidecar-socket-dir`,
//! `/run/vigil` by default); the directory is walked from `/` one
//! component at a time with `O_NOFOLLOW | O_DIRECTORY` (a symbolic link
//! anywhere is refused) and must be the agent's, writable by no one else.
//! The agent removes only a socket its own sidecar made under that name
//! (its device and inode remembered in `DATA_DIR/sidecar-sockets`, so a
//! socket a killed run left goes at the next start); anything else at the
//! path is left alone and the sidecar is not started.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The agent's socket directories: the default first.
#[derive(Debug, Clone)]
pub struct SocketDirs {
    dirs: Vec<PathBuf>,
}

/// A record's unix socket, checked: `dir` is one of the agent's socket
/// directories, `name` a plain file name in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPath {
    pub dir: PathBuf,
    pub name: String,
}

impl SocketPath {
    pub fn path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }
}

impl SocketDirs {
    /// `default` (where a record without `listen` gets its socket), then
    /// the `extra` directories a record may name.
    pub fn new(default: PathBuf, extra: &[PathBuf]) -> SocketDirs {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for d in std::iter::once(&default).chain(extra) {
            // As written, less a trailing '/': compared as text.
            let text = d.to_string_lossy();
            let trimmed = PathBuf::from(match text.trim_end_matches('/') {
                "" => "/",
                t => t,
            });
            if !dirs.contains(&trimmed) {
                dirs.push(trimmed);
            }
        }
        SocketDirs { dirs }
    }

    pub fn default_dir(&self) -> &Path {
        &self.dirs[0]
    }

    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Checks a record's `unix:` path: refused (with the reason) unless it
    /// is a plain file name directly in one of the socket directories.
    pub fn check(&self, path: &str) -> Result<SocketPath, String> {
        let allowed = || {
            self.dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some((dir, name)) = path.rsplit_once('/') else {
            return Err(format!(
                "unix:{path}: not an absolute path in one of the agent's socket directories ({})",
                allowed()
            ));
        };
        if !plain_name(name) {
            return Err(format!(
                "unix:{path}: {name:?} is not a plain socket name ([A-Za-z0-9._-]+, not . or ..)"
            ));
        }
        let dir = if dir.is_empty() { "/" } else { dir };
        match self.dirs.iter().find(|d| d.as_os_str() == dir) {
            Some(d) => Ok(SocketPath {
                dir: d.clone(),
                name: name.to_string(),
            }),
            None => Err(format!(
                "unix:{path}: {dir} is not one of the agent's socket directories ({})",
                allowed()
            )),
        }
    }
}

fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Opens `dir` without following a symbolic link anywhere on the way
/// (each component `O_NOFOLLOW | O_DIRECTORY` from `/`), and checks that
/// it belongs to the agent's uid and that no one else may write in it.
pub fn open_socket_dir(dir: &Path) -> Result<OwnedFd, String> {
    if !dir.is_absolute() {
        return Err(format!("{}: not an absolute path", dir.display()));
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut fd =
        rustix::fs::open("/", flags, Mode::empty()).map_err(|e| format!("opening /: {e}"))?;
    let mut walked = PathBuf::from("/");
    for part in dir.components().skip(1) {
        walked.push(part);
        fd = rustix::fs::openat(&fd, part.as_os_str(), flags, Mode::empty()).map_err(|e| {
            format!(
                "{}: {e} (a symbolic link on the way is not followed)",
                walked.display()
            )
        })?;
    }
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("{}: {e}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if st.st_uid != me || st.st_mode & 0o022 != 0 {
        return Err(format!(
            "{}: uid {} mode {:04o}, not a directory of the agent's uid {me} that only it may write in",
            dir.display(),
            st.st_uid,
            st.st_mode & 0o7777
        ));
    }
    Ok(fd)
}

/// A socket some sidecar of this agent made: whose, and which file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Made {
    dev: u64,
    ino: u64,
}

/// The sockets this agent's sidecars made, by path, with the model name
/// they were made for; kept in a file so that the next run knows them.
#[derive(Debug)]
pub struct SocketLedger {
    file: PathBuf,
    made: Mutex<BTreeMap<PathBuf, (String, Made)>>,
}

impl SocketLedger {
    /// The ledger kept in `file` (`DATA_DIR/sidecar-sockets`): what an
    /// earlier run wrote there; a file that cannot be read is an empty
    /// ledger (its sockets are then left alone).
    pub fn open(file: PathBuf) -> SocketLedger {
        let mut made = BTreeMap::new();
        if let Ok(text) = std::fs::read_to_string(&file) {
            for line in text.lines() {
                let mut parts = line.splitn(4, ' ');
                let (Some(dev), Some(ino), Some(name), Some(path)) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if let (Ok(dev), Ok(ino)) = (dev.parse(), ino.parse()) {
                    made.insert(PathBuf::from(path), (name.to_string(), Made { dev, ino }));
                }
            }
        }
        SocketLedger {
            file,
            made: Mutex::new(made),
        }
    }

    fn save(&self, made: &BTreeMap<PathBuf, (String, Made)>) {
        let mut text = String::new();
        for (path, (name, m)) in made {
            text.push_str(&format!("{} {} {name} {}\n", m.dev, m.ino, path.display()));
        }
        let tmp = self.file.with_extension("new");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            tracing::warn!(file = %self.file.display(), error = %e, "could not save the sidecar sockets' ledger");
        }
    }

    /// Makes `socket` ready for `model`'s sidecar to bind: nothing there,
    /// or a socket this agent's sidecar for `model` made, which goes.
    /// Anything else (a link, a file, another's socket) is left alone and
    /// refused, with what it is.
    pub fn clear_for(&self, model: &str, socket: &SocketPath) -> Result<(), String> {
        let dir = open_socket_dir(&socket.dir)?;
        let path = socket.path();
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let st = match rustix::fs::statat(&dir, socket.name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Err(rustix::io::Errno::NOENT) => {
                if made.remove(&path).is_some() {
                    self.save(&made);
                }
                return Ok(());
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
            Ok(st) => st,
        };
        let kind = FileType::from_raw_mode(st.st_mode);
        let here = Made {
            dev: st.st_dev,
            ino: st.st_ino,
        };
        let ours = kind == FileType::Socket
            && made
                .get(&path)
                .is_some_and(|(name, m)| name == model && *m == here);
        if !ours {
            return Err(format!(
                "{}: a {} of uid {} is there that no sidecar of model {model} made; left alone, the sidecar is not started",
                path.display(),
                kind_name(kind),
                st.st_uid
            ));
        }
        rustix::fs::unlinkat(&dir, socket.name.as_str(), AtFlags::empty())
            .map_err(|e| format!("{}: removing the old socket: {e}", path.display()))?;
        made.remove(&path);
        self.save(&made);
        Ok(())
    }

    /// Remembers the socket `model`'s sidecar made at `socket` (called
    /// once it answers there).
    pub fn remember(&self, model: &str, socket: &SocketPath) {
        let Ok(dir) = open_socket_dir(&socket.dir) else {
            return;
        };
        let Ok(st) = rustix::fs::statat(&dir, socket.name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
        else {
            return;
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Socket {
            return;
        }
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (
            model.to_string(),
            Made {
                dev: st.st_dev,
                ino: st.st_ino,
            },
        );
        if made.get(&socket.path()) != Some(&entry) {
            made.insert(socket.path(), entry);
            self.save(&made);
        }
    }

    /// After `model`'s sidecar stopped: its socket goes if it is still
    /// there (the sidecar removes it itself when it exits cleanly).
    pub fn remove(&self, model: &str, socket: &SocketPath) {
        if let Err(why) = self.clear_for(model, socket) {
            tracing::debug!(%why, "the sidecar's socket path left as it is");
        }
    }
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::Socket => "socket",
        FileType::Symlink => "symbolic link",
        FileType::Directory => "directory",
        FileType::RegularFile => "file",
        FileType::Fifo => "fifo",
        _ => "device",
    }
}

/// Whether something is at `path` (not followed).
#[cfg(test)]
fn has_entry(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn private_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            d.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        d
    }

    #[test]
    fn only_a_plain_name_directly_in_a_socket_directory_is_accepted() {
        let dirs = SocketDirs::new(
            PathBuf::from("/var/lib/vigil/agent/models"),
            &[PathBuf::from("/run/vigil")],
        );
        assert_eq!(
            dirs.check("/run/vigil/m.sock").unwrap(),
            SocketPath {
                dir: PathBuf::from("/run/vigil"),
                name: "m.sock".into()
            }
        );
        dirs.check("/var/lib/vigil/agent/models/a-b_c.1.sock")
            .unwrap();
        for bad in [
            "/run/vigil/../systemd/private",
            "/run/vigil/..",
            "/run/vigil/.",
            "/run/vigil/",
            "/run/vigil/sub/m.sock",
            "/run/vigil//m.sock",
            "/run/vigilx/m.sock",
            "/var/run/docker.sock",
            "m.sock",
            "/run/vigil/m sock",
            "/run/vigil/m\u{e9}.sock",
        ] {
            assert!(dirs.check(bad).is_err(), "{bad} accepted");
        }
        let e = dirs.check("/var/run/docker.sock").unwrap_err();
        assert!(
            e.contains("not one of the agent's socket directories"),
            "{e}"
        );
    }

    #[test]
    fn a_symlinked_or_loose_directory_is_refused() {
        let top = private_dir();
        let real = top.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        open_socket_dir(&real).unwrap();
        // A link as the directory itself, or on the way.
        let link = top.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = open_socket_dir(&link).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::create_dir(real.join("sub")).unwrap();
        assert!(open_socket_dir(&link.join("sub")).is_err());
        // Writable by others.
        std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let e = open_socket_dir(&real).unwrap_err();
        assert!(e.contains("only it may write"), "{e}");
    }

    #[test]
    fn only_a_socket_the_agents_sidecar_made_is_removed() {
        let top = private_dir();
        let dir = top.path().to_path_buf();
        let ledger_file = top.path().join("ledger");
        let ledger = SocketLedger::open(ledger_file.clone());
        let dirs = SocketDirs::new(dir.clone(), &[]);
        let sock = dirs.check(&format!("{}/m.sock", dir.display())).unwrap();
        // Nothing there: fine.
        ledger.clear_for("m", &sock).unwrap();

        // A foreign socket (not in the ledger) is left alone.
        let foreign = std::os::unix::net::UnixListener::bind(sock.path()).unwrap();
        let e = ledger.clear_for("m", &sock).unwrap_err();
        assert!(e.contains("a socket of uid"), "{e}");
        assert!(has_entry(&sock.path()));
        drop(foreign);
        std::fs::remove_file(sock.path()).unwrap();

        // A link (to a victim) is left alone, not followed.
        let victim = top.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, sock.path()).unwrap();
        let e = ledger.clear_for("m", &sock).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(has_entry(&sock.path()));
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        std::fs::remove_file(sock.path()).unwrap();

        // A socket "our sidecar" made is remembered, and removed; the
        // ledger survives a restart of the agent.
        let made = std::os::unix::net::UnixListener::bind(sock.path()).unwrap();
        drop(made);
        ledger.remember("m", &sock);
        // Another model's supervisor may not remove it.
        assert!(ledger.clear_for("other", &sock).is_err());
        assert!(has_entry(&sock.path()));
        let next_run = SocketLedger::open(ledger_file.clone());
        next_run.clear_for("m", &sock).unwrap();
        assert!(!has_entry(&sock.path()));

        // A socket swapped in at the same name (another inode) is not ours.
        let made = std::os::unix::net::UnixListener::bind(sock.path()).unwrap();
        ledger.remember("m", &sock);
        drop(made);
        std::fs::remove_file(sock.path()).unwrap();
        let keep = std::fs::File::create(top.path().join("pin")).unwrap();
        let swapped = std::os::unix::net::UnixListener::bind(sock.path()).unwrap();
        let same = {
            let a = std::fs::symlink_metadata(sock.path()).unwrap();
            let l = ledger.made.lock().unwrap();
            let (_, m) = l.get(&sock.path()).unwrap();
            std::os::unix::fs::MetadataExt::ino(&a) == m.ino
        };
        if !same {
            assert!(ledger.clear_for("m", &sock).is_err());
            assert!(has_entry(&sock.path()));
        }
        drop((swapped, keep));
    }
}
