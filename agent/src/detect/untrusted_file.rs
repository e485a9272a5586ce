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

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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
    use std::os::unix::fs::MetadataExt;
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
}
