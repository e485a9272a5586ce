//! A model's bytes, read once into memory the sidecar alone holds: from a
//! file (`--model`) or from a file descriptor the agent sent (`load`).
//!
//! The same copy is hashed and handed to ONNX Runtime, so whoever can
//! still write the file or memfd cannot change what is loaded after it was
//! hashed (a shared mapping could change under the hash; a private copy
//! cannot). The size comes from `fstat`, never from the request alone, and
//! the buffer is reserved fallibly: a file larger than memory is an error,
//! not an abort.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::{fstat, SFlag};

/// Why a model's bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("opening {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fstat of the model: {0}")]
    Stat(nix::Error),
    #[error("the model is not a regular file or memfd")]
    NotRegularFile,
    #[error("the load request says {claimed} bytes, but the file holds {actual}")]
    SizeMismatch { claimed: u64, actual: u64 },
    #[error("cannot hold a model of {0} bytes in memory")]
    TooLarge(u64),
    #[error("reading the model: {0}")]
    Read(nix::Error),
    #[error("the model shrank while it was read: {read} of {size} bytes")]
    Shrank { read: u64, size: u64 },
}

/// The bytes of the model file at `path`.
pub fn read_model_file(path: &Path) -> Result<Vec<u8>, ReadError> {
    let file = File::open(path).map_err(|source| ReadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let size = regular_file_size(file.as_fd())?;
    read_exactly(file.as_fd(), size)
}

/// The bytes of the model behind `fd`, which a load request says holds
/// `claimed` bytes: the fd's own size must say the same.
pub fn read_model_fd(fd: BorrowedFd<'_>, claimed: u64) -> Result<Vec<u8>, ReadError> {
    let size = regular_file_size(fd)?;
    if size != claimed {
        return Err(ReadError::SizeMismatch {
            claimed,
            actual: size,
        });
    }
    read_exactly(fd, size)
}

/// The size of the regular file (or memfd) `fd`; anything else (a pipe,
/// a socket, a device) is refused, so a read can neither block nor run on.
fn regular_file_size(fd: BorrowedFd<'_>) -> Result<u64, ReadError> {
    let st = fstat(fd).map_err(ReadError::Stat)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(ReadError::NotRegularFile);
    }
    u64::try_from(st.st_size).map_err(|_| ReadError::NotRegularFile)
}

/// `size` bytes from offset 0 of `fd` (pread: the fd's offset, which the
/// sender shares, is neither used nor moved).
fn read_exactly(fd: BorrowedFd<'_>, size: u64) -> Result<Vec<u8>, ReadError> {
    let len = usize::try_from(size).map_err(|_| ReadError::TooLarge(size))?;
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(len)
        .map_err(|_| ReadError::TooLarge(size))?;
    bytes.resize(len, 0);
    let mut done = 0usize;
    while done < len {
        let offset = i64::try_from(done).map_err(|_| ReadError::TooLarge(size))?;
        match nix::sys::uio::pread(fd, &mut bytes[done..], offset) {
            Ok(0) => {
                return Err(ReadError::Shrank {
                    read: done as u64,
                    size,
                })
            }
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ReadError::Read(e)),
        }
    }
    Ok(bytes)
}

#[cfg(test)]
#[path = "model_bytes_tests.rs"]
mod tests;
