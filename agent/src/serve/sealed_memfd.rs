//! A model's plaintext in memory only: an anonymous memory file
//! (`memfd_create`, close-on-exec, sealable) written once, then sealed
//! against any change (no write, shrink or grow, and no more seals), so
//! the sidecar that receives it reads exactly the bytes the agent hashed.

use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{MemfdFlags, SealFlags};

/// Every seal: once set, the content can never change again.
const ALL_SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::WRITE)
    .union(SealFlags::SEAL);

/// A memory file being written; [`MemfdWriter::seal`] makes it a
/// [`SealedMemfd`].
pub struct MemfdWriter {
    file: std::fs::File,
    written: u64,
}

impl MemfdWriter {
    /// A new empty memory file named `name` (what /proc/PID/fd shows:
    /// `memfd:NAME`), `size` bytes reserved.
    pub fn new(name: &str, size: u64) -> std::io::Result<MemfdWriter> {
        let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let file = std::fs::File::from(fd);
        // Reserving up front fails early (ENOSPC, a memory limit) rather
        // than after most of a large model was decrypted.
        file.set_len(size)?;
        Ok(MemfdWriter { file, written: 0 })
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Seals the file at what was written (trimmed to it) and rewinds it.
    pub fn seal(mut self) -> std::io::Result<SealedMemfd> {
        self.file.set_len(self.written)?;
        self.file.seek(SeekFrom::Start(0))?;
        rustix::fs::fcntl_add_seals(&self.file, ALL_SEALS)?;
        Ok(SealedMemfd {
            fd: OwnedFd::from(self.file),
            size: self.written,
        })
    }
}

/// A sealed memory file: its bytes can no longer change.
#[derive(Debug)]
pub struct SealedMemfd {
    fd: OwnedFd,
    size: u64,
}

impl SealedMemfd {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether every seal is set (what a receiver can check too).
    pub fn is_sealed(&self) -> bool {
        rustix::fs::fcntl_get_seals(&self.fd).is_ok_and(|s| s.contains(ALL_SEALS))
    }

    /// Its bytes, read through a new file description (tests).
    #[cfg(test)]
    pub fn read_all(&self) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut f = std::fs::File::open(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        ))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)?;
        Ok(out)
    }
}

impl AsFd for SealedMemfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_memfd_cannot_be_written_grown_or_shrunk() {
        let mut w = MemfdWriter::new("vigil-test", 64).unwrap();
        w.write_all(b"model bytes").unwrap();
        let sealed = w.seal().unwrap();
        assert!(sealed.is_sealed());
        assert_eq!(sealed.size(), 11);
        assert_eq!(sealed.read_all().unwrap(), b"model bytes");
        let path = format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&sealed.as_fd())
        );
        // Writing through another description is refused (F_SEAL_WRITE).
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&path) {
            assert!(std::io::Write::write_all(&mut w, b"x").is_err());
        }
        let f = std::fs::File::open(&path).unwrap();
        assert!(f.set_len(1).is_err());
        assert!(f.set_len(100).is_err());
        assert!(rustix::fs::fcntl_add_seals(&f, SealFlags::FUTURE_WRITE).is_err());
    }
}
