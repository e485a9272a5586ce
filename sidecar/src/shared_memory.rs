//! KServe's system shared-memory extension (as Triton serves it): a
//! client registers a region of a POSIX shared-memory object
//! (`/dev/shm/<key>`) under a name, then names it in an input's or a
//! requested output's `shared_memory_region` parameter (with
//! `shared_memory_byte_size` and an optional `shared_memory_offset`), so
//! tensors do not travel in the gRPC messages.
//!
//! Security, for a hostile local user who can reach the socket:
//! - a key names a single file in the shared-memory directory: one
//!   optional leading `/` (as `shm_open` takes it), then a name with no
//!   `/`, no NUL, not `.` or `..`, at most 255 bytes; it is opened with
//!   `O_NOFOLLOW` (a symbolic link is refused), `O_NONBLOCK`, `O_NOCTTY`,
//!   `O_CLOEXEC`, and must be a regular file;
//! - registrations belong to a caller, the uid the kernel gave for the
//!   peer of the unix socket (`SO_PEERCRED`): the file must be owned by
//!   that uid, and a caller sees, uses and unregisters only its own
//!   registrations (its names are its own namespace). Without peer
//!   credentials (TCP) shared memory is refused unless the operator named
//!   the uid TCP clients act as (`--tcp-shared-memory-uid`);
//! - the file is never mapped: tensors are read with `pread` and written
//!   with `pwrite` on the descriptor held since registration, and every
//!   use checks the range against the file's size at that moment
//!   (`fstat`), so a file truncated after registration is an error reply,
//!   never a SIGBUS;
//! - at most [`Limits::max_regions`] registrations in all and
//!   [`Limits::max_regions_per_owner`] per uid (each holds a descriptor),
//!   a region at most [`Limits::max_region_bytes`]; offsets and sizes are
//!   checked without overflow.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tonic::{Code, Status};

use crate::bounded_text::cut;

/// Where POSIX shared-memory objects live.
pub const SHM_DIR: &str = "/dev/shm";

/// Longest file name a key may give (NAME_MAX).
pub const MAX_KEY_BYTES: usize = 255;

/// Longest region name.
pub const MAX_NAME_BYTES: usize = 256;

/// Longest request-given text echoed back in an error.
const ECHO: usize = 256;

/// Bounds on registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Registrations in all (each holds an open descriptor).
    pub max_regions: usize,
    /// Registrations of one uid.
    pub max_regions_per_owner: usize,
    /// Largest region.
    pub max_region_bytes: u64,
    /// Most bytes one request's inputs may read from shared memory (the
    /// same bound as a request's size over gRPC: they are read into the
    /// sidecar's memory).
    pub max_input_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_regions: 256,
            max_regions_per_owner: 32,
            max_region_bytes: 2 << 30,
            max_input_bytes: crate::config::DEFAULT_MAX_REQUEST_BYTES,
        }
    }
}

/// Who asks, as far as shared memory goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A peer of the unix socket by its uid (`SO_PEERCRED`), or a TCP
    /// client where the operator said which uid TCP clients act as.
    Uid(u32),
    /// No identity to bind registrations to: shared memory is refused,
    /// with this reason.
    Unidentified(String),
}

impl Caller {
    fn uid(&self) -> Result<u32, ShmError> {
        match self {
            Caller::Uid(uid) => Ok(*uid),
            Caller::Unidentified(why) => Err(ShmError::Refused(format!(
                "system shared memory is refused on this connection: {why}"
            ))),
        }
    }
}

/// Why a shared-memory request was refused; each is a gRPC code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShmError {
    /// PERMISSION_DENIED: the caller may not use this file or has no
    /// identity.
    #[error("{0}")]
    Refused(String),
    /// INVALID_ARGUMENT.
    #[error("{0}")]
    Invalid(String),
    /// NOT_FOUND: no such region (of this caller) or file.
    #[error("{0}")]
    NotFound(String),
    /// ALREADY_EXISTS: the caller has a region of that name.
    #[error("{0}")]
    AlreadyExists(String),
    /// RESOURCE_EXHAUSTED: a limit on registrations.
    #[error("{0}")]
    Exhausted(String),
}

impl ShmError {
    pub fn code(&self) -> Code {
        match self {
            ShmError::Refused(_) => Code::PermissionDenied,
            ShmError::Invalid(_) => Code::InvalidArgument,
            ShmError::NotFound(_) => Code::NotFound,
            ShmError::AlreadyExists(_) => Code::AlreadyExists,
            ShmError::Exhausted(_) => Code::ResourceExhausted,
        }
    }
}

impl From<ShmError> for Status {
    fn from(error: ShmError) -> Status {
        Status::new(error.code(), error.to_string())
    }
}

/// The file name a key gives in the shared-memory directory, or why the
/// key is refused.
pub fn key_file_name(key: &str) -> Result<&str, ShmError> {
    let name = key.strip_prefix('/').unwrap_or(key);
    let refused = |why: &str| {
        Err(ShmError::Invalid(format!(
            "shared memory key {:?} is refused: {why}; a key is one file name in {SHM_DIR} \
             (\"/name\" or \"name\")",
            cut(key, ECHO)
        )))
    };
    if name.is_empty() {
        return refused("it names no file");
    }
    if name == "." || name == ".." {
        return refused("it names a directory");
    }
    if name.contains('/') {
        return refused("it has a '/' after the leading one");
    }
    if name.contains('\0') {
        return refused("it has a NUL byte");
    }
    if name.len() > MAX_KEY_BYTES {
        return refused("it is longer than 255 bytes");
    }
    Ok(name)
}

/// One registered region: a range of a shared-memory file, its
/// descriptor held open.
#[derive(Debug)]
pub struct Region {
    pub name: String,
    pub key: String,
    /// Where the region starts in the file.
    pub offset: u64,
    pub byte_size: u64,
    /// The file's owner (the caller that registered it).
    pub owner: u32,
    file: File,
    device: u64,
    inode: u64,
}

impl Region {
    /// Whether `self` and `other` are ranges of the same file.
    pub fn same_file(&self, other: &Region) -> bool {
        self.device == other.device && self.inode == other.inode
    }

    /// The file offset of `len` bytes at `offset` into the region, after
    /// checking they lie within the region and within the file as it is
    /// now (it may have been truncated since registration).
    fn file_range(&self, offset: u64, len: u64) -> Result<u64, ShmError> {
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= self.byte_size)
            .ok_or_else(|| {
                ShmError::Invalid(format!(
                    "{len} bytes at offset {offset} do not fit in shared memory region {:?} \
                     ({} bytes)",
                    self.name, self.byte_size
                ))
            })?;
        let start = self.offset + offset;
        let file_end = self.offset + end;
        let size = self
            .file
            .metadata()
            .map_err(|e| {
                ShmError::Invalid(format!("shared memory region {:?}: fstat: {e}", self.name))
            })?
            .len();
        if file_end > size {
            return Err(ShmError::Invalid(format!(
                "shared memory region {:?}: its file {:?} is now {size} bytes, shorter than the \
                 {file_end} bytes the tensor needs (truncated after registration?)",
                self.name, self.key
            )));
        }
        Ok(start)
    }

    /// Fills `buf` from `offset` bytes into the region.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), ShmError> {
        let start = self.file_range(offset, buf.len() as u64)?;
        self.file.read_exact_at(buf, start).map_err(|e| {
            ShmError::Invalid(format!("reading shared memory region {:?}: {e}", self.name))
        })
    }

    /// Writes `buf` at `offset` bytes into the region.
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), ShmError> {
        let start = self.file_range(offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, start)
            .map_err(|e| write_error(&self.name, start, buf.len(), e))
    }
}

/// Why writing `len` bytes at `start` of region `name`'s file failed;
/// always INVALID_ARGUMENT (the client chose where). EFBIG: the range
/// reaches past the sidecar's file size limit (RLIMIT_FSIZE; SIGXFSZ is
/// ignored, see [`ignore_file_size_signal`]).
pub fn write_error(name: &str, start: u64, len: usize, error: std::io::Error) -> ShmError {
    if error.raw_os_error() == Some(libc::EFBIG) {
        let end = start.saturating_add(len as u64);
        return ShmError::Invalid(format!(
            "writing shared memory region {name:?}: bytes {start} to {end} of its file are past \
             the sidecar's file size limit (RLIMIT_FSIZE); place the output nearer the start of \
             the file, or have the operator raise the limit ({error})"
        ));
    }
    ShmError::Invalid(format!("writing shared memory region {name:?}: {error}"))
}

/// Ignores SIGXFSZ for the process: where the operator set RLIMIT_FSIZE,
/// a write into a client's file past it then fails with EFBIG (an error
/// reply) instead of ending the sidecar. Called first thing in `main`.
#[allow(unsafe_code)]
pub fn ignore_file_size_signal() -> nix::Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_IGN installs no handler, so no code runs in signal
    // context; it only changes the disposition of SIGXFSZ.
    unsafe { signal(Signal::SIGXFSZ, SigHandler::SigIgn) }.map(|_| ())
}

/// A tensor's place in a region, checked against the region's size.
#[derive(Debug, Clone)]
pub struct ShmSlice {
    pub region: Arc<Region>,
    /// From the start of the region.
    pub offset: u64,
    pub byte_size: u64,
}

impl ShmSlice {
    /// Whether two slices share a byte.
    pub fn overlaps(&self, other: &ShmSlice) -> bool {
        if !self.region.same_file(&other.region) || self.byte_size == 0 || other.byte_size == 0 {
            return false;
        }
        let a = self.region.offset + self.offset;
        let b = other.region.offset + other.offset;
        a < b + other.byte_size && b < a + self.byte_size
    }
}

impl PartialEq for ShmSlice {
    fn eq(&self, other: &ShmSlice) -> bool {
        Arc::ptr_eq(&self.region, &other.region)
            && self.offset == other.offset
            && self.byte_size == other.byte_size
    }
}

/// The regions a request may use: the caller's.
#[derive(Debug, Clone, Copy)]
pub struct ShmScope<'a> {
    pub memory: &'a SharedMemory,
    pub caller: &'a Caller,
}

/// What SystemSharedMemoryStatus reports of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

/// The registered regions, by owner uid and name.
#[derive(Debug)]
pub struct SharedMemory {
    dir: PathBuf,
    limits: Limits,
    regions: Mutex<HashMap<u32, HashMap<String, Arc<Region>>>>,
}

impl SharedMemory {
    /// Regions of files in `dir` (`/dev/shm` when serving).
    pub fn new(dir: impl Into<PathBuf>, limits: Limits) -> SharedMemory {
        SharedMemory {
            dir: dir.into(),
            limits,
            regions: Mutex::new(HashMap::new()),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, HashMap<String, Arc<Region>>>> {
        self.regions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `byte_size` bytes at `offset` of the file `key` names as
    /// the caller's region `name`.
    pub fn register(
        &self,
        caller: &Caller,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), ShmError> {
        let uid = caller.uid()?;
        if name.is_empty() || name.len() > MAX_NAME_BYTES {
            return Err(ShmError::Invalid(format!(
                "a shared memory region needs a name of 1 to {MAX_NAME_BYTES} bytes"
            )));
        }
        let file_name = key_file_name(key)?;
        if byte_size > self.limits.max_region_bytes {
            return Err(ShmError::Invalid(format!(
                "shared memory region {:?}: {byte_size} bytes is over the {} a region may have",
                cut(name, ECHO),
                self.limits.max_region_bytes
            )));
        }
        let end = offset.checked_add(byte_size).ok_or_else(|| {
            ShmError::Invalid(format!(
                "shared memory region {:?}: offset {offset} + byte_size {byte_size} overflows",
                cut(name, ECHO)
            ))
        })?;
        // Cheap refusals before the file is opened.
        self.check_room(uid, name)?;
        let region = self.open(uid, name, key, file_name, offset, byte_size, end)?;
        let mut regions = self.lock();
        // Checked again: another registration may have come meanwhile.
        check_room(&regions, &self.limits, uid, name)?;
        regions
            .entry(uid)
            .or_default()
            .insert(name.to_string(), Arc::new(region));
        Ok(())
    }

    fn check_room(&self, uid: u32, name: &str) -> Result<(), ShmError> {
        check_room(&self.lock(), &self.limits, uid, name)
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &self,
        uid: u32,
        name: &str,
        key: &str,
        file_name: &str,
        offset: u64,
        byte_size: u64,
        end: u64,
    ) -> Result<Region, ShmError> {
        let path: &Path = &self.dir.join(file_name);
        let shown = cut(key, ECHO);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => ShmError::NotFound(format!(
                    "shared memory key {shown:?}: no such file in {}",
                    self.dir.display()
                )),
                Some(libc::ELOOP) => ShmError::Refused(format!(
                    "shared memory key {shown:?} is a symbolic link; refused"
                )),
                _ => ShmError::Invalid(format!("shared memory key {shown:?}: cannot open: {e}")),
            })?;
        let meta = file
            .metadata()
            .map_err(|e| ShmError::Invalid(format!("shared memory key {shown:?}: fstat: {e}")))?;
        if !meta.file_type().is_file() {
            return Err(ShmError::Refused(format!(
                "shared memory key {shown:?} is not a regular file; refused"
            )));
        }
        if meta.uid() != uid {
            return Err(ShmError::Refused(format!(
                "shared memory key {shown:?} is owned by uid {}, not by the caller (uid {uid}); \
                 a region's file must belong to whoever registers it",
                meta.uid()
            )));
        }
        if end > meta.len() {
            return Err(ShmError::Invalid(format!(
                "shared memory region {:?}: offset {offset} + byte_size {byte_size} is past the \
                 end of {shown:?} ({} bytes)",
                cut(name, ECHO),
                meta.len()
            )));
        }
        Ok(Region {
            name: name.to_string(),
            key: key.to_string(),
            offset,
            byte_size,
            owner: uid,
            file,
            device: meta.dev(),
            inode: meta.ino(),
        })
    }

    /// Unregisters the caller's region `name`, or all its regions when
    /// `name` is empty. An unknown name is no error (as Triton). Requests
    /// running on a region keep it until they end.
    pub fn unregister(&self, caller: &Caller, name: &str) -> Result<(), ShmError> {
        let uid = caller.uid()?;
        let mut regions = self.lock();
        if name.is_empty() {
            regions.remove(&uid);
        } else if let Some(own) = regions.get_mut(&uid) {
            own.remove(name);
            if own.is_empty() {
                regions.remove(&uid);
            }
        }
        Ok(())
    }

    /// The caller's region `name`, or all its regions when `name` is
    /// empty.
    pub fn status(&self, caller: &Caller, name: &str) -> Result<Vec<RegionStatus>, ShmError> {
        let uid = caller.uid()?;
        let regions = self.lock();
        let status = |r: &Arc<Region>| RegionStatus {
            name: r.name.clone(),
            key: r.key.clone(),
            offset: r.offset,
            byte_size: r.byte_size,
        };
        let own = regions.get(&uid);
        if name.is_empty() {
            return Ok(own
                .into_iter()
                .flat_map(|m| m.values())
                .map(status)
                .collect());
        }
        own.and_then(|m| m.get(name))
            .map(|r| vec![status(r)])
            .ok_or_else(|| not_found(name))
    }

    /// `byte_size` bytes at `offset` of the caller's region `name`.
    pub fn slice(
        &self,
        caller: &Caller,
        name: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<ShmSlice, ShmError> {
        let uid = caller.uid()?;
        let region = self
            .lock()
            .get(&uid)
            .and_then(|m| m.get(name))
            .cloned()
            .ok_or_else(|| not_found(name))?;
        let fits = offset
            .checked_add(byte_size)
            .is_some_and(|end| end <= region.byte_size);
        if !fits {
            return Err(ShmError::Invalid(format!(
                "shared_memory_offset {offset} + shared_memory_byte_size {byte_size} is past the \
                 end of shared memory region {:?} ({} bytes)",
                region.name, region.byte_size
            )));
        }
        Ok(ShmSlice {
            region,
            offset,
            byte_size,
        })
    }

    /// Registrations in all.
    pub fn count(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }
}

fn not_found(name: &str) -> ShmError {
    ShmError::NotFound(format!(
        "Unable to find system shared memory region: {:?}",
        cut(name, ECHO)
    ))
}

fn check_room(
    regions: &HashMap<u32, HashMap<String, Arc<Region>>>,
    limits: &Limits,
    uid: u32,
    name: &str,
) -> Result<(), ShmError> {
    let own = regions.get(&uid);
    if own.is_some_and(|m| m.contains_key(name)) {
        return Err(ShmError::AlreadyExists(format!(
            "shared memory region {:?} is already registered; unregister it first",
            cut(name, ECHO)
        )));
    }
    if own.map_or(0, HashMap::len) >= limits.max_regions_per_owner {
        return Err(ShmError::Exhausted(format!(
            "uid {uid} has {} shared memory regions registered, the most one uid may have",
            limits.max_regions_per_owner
        )));
    }
    if regions.values().map(HashMap::len).sum::<usize>() >= limits.max_regions {
        return Err(ShmError::Exhausted(format!(
            "{} shared memory regions are registered, the most the sidecar holds",
            limits.max_regions
        )));
    }
    Ok(())
}

#[cfg(test)]
#[path = "shared_memory_tests.rs"]
mod tests;
