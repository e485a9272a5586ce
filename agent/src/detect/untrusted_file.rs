//! Opening files that a watched process named, which an unprivileged user
//! controls: a FIFO named `x.onnx` must not hang the detect loop, a link
//! planted in place of a model must not make the agent (root) read what it
//! points to, and a terminal must not become the agent's.
//!
//! Every open is `O_NONBLOCK | O_NOCTTY | O_CLOEXEC` (std adds the last),
//! then `fstat`: only regular files are read. A path the process gave is
//! opened with `O_NOFOLLOW` (its last component may not be a link); a
//! `/proc/PID/fd/N` handle is the file the process really opened, a magic
//! link that is followed on purpose. A link that is the last component of a
//! named path is followed only to a file of the link's own owner (a model
//! cache links names to blobs of the same user; a link a user plants to a
//! file of root's is not followed).
//!
//! A named path is opened inside the process's root directory
//! ([`open_in_root`], `openat2` with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS` from a descriptor of `/proc/PID/root`): every
//! component, not only the last, resolves as it does for the process. A
//! link in a parent directory cannot leave the root (`..` and absolute
//! targets stop at it), nor pass through a `/proc` magic link (a user's
//! `dir -> /proc/self` would otherwise name the agent's own files).
//! Links are not refused altogether (`RESOLVE_NO_SYMLINKS`): model caches
//! and model directories are links, and nothing says a path is literal.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use vigil_detection::MODEL_SNIFF_BYTES;

/// Whether the last component of the path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalLink {
    /// A `/proc` handle (`/proc/PID/fd/N`, `/proc/PID/exe`): the kernel's
    /// magic link to the very file the process holds.
    Follow,
    /// A path a process named: a link there may be planted, and is
    /// followed only to a file owned by the link's owner.
    SameOwnerOnly,
}

/// Opens `path` for reading without blocking, and only if it is a regular
/// file (a FIFO, socket or device is refused with `InvalidInput`).
pub fn open_regular(path: &Path, link: FinalLink) -> std::io::Result<(File, Metadata)> {
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | flags)
            .open(path)
    };
    let file = match link {
        FinalLink::Follow => open(0)?,
        FinalLink::SameOwnerOnly => match open(libc::O_NOFOLLOW) {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                let link_owner = std::fs::symlink_metadata(path)?.uid();
                let file = open(0)?;
                if file.metadata()?.uid() != link_owner {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "a link to another user's file",
                    ));
                }
                file
            }
            Err(e) => return Err(e),
        },
    };
    regular(file)
}

/// Opens `path`, absolute as a process named it, inside `root` (the
/// process's `/proc/PID/root`, or `/` for the host): without blocking, as
/// a regular file only, every link resolved within `root` and no magic
/// link crossed, a last-component link followed only to a file of the
/// link's owner (see the module's doc). Where the kernel has no `openat2`
/// (before 5.6), falls back to [`open_regular`] on `root/path`, which
/// checks the last component only.
pub fn open_in_root(root: &Path, path: &str) -> std::io::Result<(File, Metadata)> {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let read = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let open = |flags: OFlags| rustix::fs::openat2(&dir, relative, flags, Mode::empty(), resolve);
    match open(read | OFlags::NOFOLLOW) {
        Ok(fd) => regular(File::from(fd)),
        Err(Errno::NOSYS) => open_regular(&root.join(relative), FinalLink::SameOwnerOnly),
        // The last component is a link (or a magic link was crossed, which
        // the next open refuses again): whose is it?
        Err(Errno::LOOP) => {
            let link = open(OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC)?;
            let link_owner = rustix::fs::fstat(&link)?.st_uid;
            let file = File::from(open(read)?);
            if file.metadata()?.uid() != link_owner {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "a link to another user's file",
                ));
            }
            regular(file)
        }
        Err(e) => Err(e.into()),
    }
}

/// The file with its metadata if it is a regular file (`InvalidInput`
/// if not).
fn regular(file: File) -> std::io::Result<(File, Metadata)> {
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((file, meta))
}

/// The first bytes of an open regular file, for content checks; None when
/// unreadable.
pub fn read_head(file: &File) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(MODEL_SNIFF_BYTES);
    file.take(MODEL_SNIFF_BYTES as u64)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_and_planted_links_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.onnx");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer: a blocking open would hang here.
        let err = open_regular(&fifo, FinalLink::Follow).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);

        let target = dir.path().join("secret");
        std::fs::write(&target, b"GGUF secret").unwrap();
        let link = dir.path().join("m.onnx");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // Root's link to root's file: followed.
        assert!(open_regular(&link, FinalLink::SameOwnerOnly).is_ok());
        if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&target).unwrap()) == 0 {
            // A user's link to root's file: not followed.
            std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
            let err = open_regular(&link, FinalLink::SameOwnerOnly).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        }
        let (file, meta) = open_regular(&link, FinalLink::Follow).unwrap();
        assert_eq!(meta.len(), 11);
        assert_eq!(read_head(&file).unwrap(), b"GGUF secret");
        assert!(open_regular(Path::new("/dev/null"), FinalLink::Follow).is_err());
    }

    fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
        std::os::unix::fs::symlink(target, link).unwrap();
    }

    #[test]
    fn links_in_parent_directories_resolve_inside_the_root() {
        // A process's root (a container's), and a file outside it.
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.onnx");
        std::fs::write(&secret, b"GGUF host secret").unwrap();
        let inside = |p: &str| root.path().join(p);
        std::fs::create_dir_all(inside("models/blobs")).unwrap();
        std::fs::create_dir_all(inside("models/snap")).unwrap();
        std::fs::write(inside("models/blobs/abc"), b"GGUF in root").unwrap();

        // A model cache: a relative last-component link, parents plain.
        symlink("../blobs/abc", inside("models/snap/m.onnx"));
        let (file, _) = open_in_root(root.path(), "/models/snap/m.onnx").unwrap();
        assert_eq!(read_head(&file).unwrap(), b"GGUF in root");
        // A parent directory that links out of the root, by an absolute
        // target or by `..`: resolved inside it, where there is no such file.
        symlink(outside.path(), inside("abs"));
        let up = "../".repeat(outside.path().components().count() + 4);
        symlink(format!("{up}{}", outside.path().display()), inside("dots"));
        for named in [
            "/abs/secret.onnx",
            "/dots/secret.onnx",
            "/../../secret.onnx",
        ] {
            let err = open_in_root(root.path(), named).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{named}");
        }
        // The same through /proc/PID/root-style joining (the old way) reads
        // the file outside.
        assert!(open_regular(&inside("abs/secret.onnx"), FinalLink::SameOwnerOnly).is_ok());
        // An absolute link in a parent lands inside the root.
        symlink("/models/blobs", inside("models/by-abs"));
        assert!(open_in_root(root.path(), "/models/by-abs/abc").is_ok());
        // A parent directory linking to a directory of FIFOs: refused, not
        // blocking.
        let fifos = inside("fifos");
        std::fs::create_dir(&fifos).unwrap();
        nix::unistd::mkfifo(
            &fifos.join("x.onnx"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        symlink("/fifos", inside("to-fifos"));
        let err = open_in_root(root.path(), "/to-fifos/x.onnx").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_parent_link_through_proc_magic_links_is_refused() {
        // On the host (root `/`), a user's `dir -> /proc/self` would name
        // the agent's own root, cwd and descriptors.
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.onnx");
        std::fs::write(&secret, b"GGUF agent's").unwrap();
        symlink("/proc/self", dir.path().join("self"));
        let through = format!("{}/self/root{}", dir.path().display(), secret.display());
        assert!(open_regular(Path::new(&through), FinalLink::SameOwnerOnly).is_ok());
        assert!(open_in_root(Path::new("/"), &through).is_err());
        // The plain path still opens.
        assert!(open_in_root(Path::new("/"), &secret.display().to_string()).is_ok());
    }
}
