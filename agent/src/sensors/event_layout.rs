//! Rust mirror of `ebpf/vigil_event.h` and the decoder of ring-buffer records.
//!
//! Architecture invariant: every byte from the kernel is bounds-checked here;
//! a malformed record is a `DecodeError`, never a panic.
//!
//! The fixed parts are `#[repr(C)]` structs that `zerocopy` reads from the
//! front of a record (checked length, any alignment, no unsafe); the
//! variable parts that follow are split off with checked lengths.

use std::mem::{offset_of, size_of};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

pub const EVENT_EXEC: u32 = 1;
pub const EVENT_EXIT: u32 = 2;
pub const EVENT_OPEN: u32 = 3;
pub const EVENT_NET: u32 = 4;
pub const EVENT_FILE_MAP: u32 = 5;
pub const EVENT_DNS: u32 = 6;
pub const EVENT_STREAM: u32 = 7;
/// Bytes of a stream's start the kernel captures at most.
pub const STREAM_MAX: usize = 2048;

pub const COMM_LEN: usize = 16;
pub const PATH_MAX: usize = 4096;
pub const ARGS_MAX: usize = 1024;
pub const NAME_MAX: usize = 256;

pub const COUNTER_EMITTED: u32 = 0;
pub const COUNTER_FILTERED: u32 = 1;
pub const COUNTER_DROPPED: u32 = 2;
pub const COUNTER_EVICTED: u32 = 3;
pub const COUNTER_SLOTS: u32 = 4;

pub const FILTER_SLOTS: usize = 32;
pub const FILTER_SUFFIX: u32 = 1;
pub const FILTER_PREFIX: u32 = 2;
pub const FILTER_BASENAME_PREFIX: u32 = 3;
pub const MATCH_MODEL_FILE: u32 = 1;
pub const MATCH_GPU_DEVICE: u32 = 2;
pub const MATCH_AI_RUNTIME: u32 = 3;
pub const MATCH_LARGE_MAPPING: u32 = 4;
pub const MATCH_CONTENT_READ: u32 = 5;
pub const MATCH_EXEC_BY_CONTENT: u32 = 6;
pub const LIBRARY_PLAIN: u32 = 2;
pub const LIBRARY_AI_RUNTIME: u32 = 3;

pub const OPEN_SYSCALL: u32 = 0;
pub const OPEN_IO_URING: u32 = 1;
pub const OPEN_IO_URING_FIXED: u32 = 2;
pub const OPEN_IO_URING_SUBMITTED: u32 = 3;

pub const PORT_SLOTS: usize = 16;
pub const NET_CONNECT: u16 = 1;
pub const NET_LISTEN: u16 = 2;
const AF_INET6: u16 = 10;

/// `struct vigil_event_header`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct RawEventHeader {
    pub kind: u32,
    pub size: u32,
    pub ktime_boot_ns: u64,
    pub cgroup_id: u64,
    pub mnt_ns: u64,
    pub pid: u32,
    pub tgid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub aux: u32,
    pub comm: [u8; COMM_LEN],
}

/// Fixed part of `struct vigil_exec_event`; `data` follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RawExecFixed {
    pub hdr: RawEventHeader,
    pub filename_len: u32,
    pub args_len: u32,
}

/// Fixed part of `struct vigil_open_event`; `path` follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RawOpenFixed {
    pub hdr: RawEventHeader,
    pub dfd: i32,
    pub flags: u32,
    pub matched: u32,
    pub path_len: u32,
    pub ret: i32,
    pub origin: u32,
    pub dev: u64,
    pub ino: u64,
}

/// `struct vigil_net_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RawNetEvent {
    pub hdr: RawEventHeader,
    pub family: u16,
    pub op: u16,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Fixed part of `struct vigil_dns_event`; `payload` follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RawDnsFixed {
    pub hdr: RawEventHeader,
    pub family: u16,
    pub dport: u16,
    pub payload_len: u32,
    pub daddr: [u8; 16],
}

/// Fixed part of `struct vigil_file_map_event`; `name` follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RawFileMapFixed {
    pub hdr: RawEventHeader,
    pub fd: i32,
    pub matched: u32,
    pub name_len: u32,
    pub prot: u32,
    pub length: u64,
    pub dev: u64,
    pub ino: u64,
    pub component_count: u32,
    pub path_complete: u32,
}

/// `VIGIL_PATH_COMPONENTS` × `VIGIL_COMPONENT_MAX` bytes follow the fixed
/// part of a file map record, then the name.
pub const PATH_COMPONENTS: usize = 16;
pub const COMPONENT_MAX: usize = 128;
const COMPONENTS_BYTES: usize = PATH_COMPONENTS * COMPONENT_MAX;

/// `struct vigil_path_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawPathFilter {
    pub kind: u32,
    pub len: u32,
    pub matched: u32,
    pub pad: u32,
    pub value: [u64; 2],
    pub mask: [u64; 2],
}

// SAFETY: plain old data of integers only, no padding (checked by the layout test).
unsafe impl aya::Pod for RawPathFilter {}

/// `struct vigil_library_key`: an executable file, as the kernel names it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RawLibraryKey {
    pub ino: u64,
    /// The superblock's `dev_t` as the kernel keeps it (major << 20 | minor).
    pub dev: u32,
    pub pad: u32,
}

// SAFETY: plain old data of integers only, no padding (checked by the layout test).
unsafe impl aya::Pod for RawLibraryKey {}

/// `struct vigil_library_verdict`: what user space found in that file
/// version (`LIBRARY_*`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawLibraryVerdict {
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    pub state: u32,
}

// SAFETY: plain old data of integers only, no padding (checked by the layout test).
unsafe impl aya::Pod for RawLibraryVerdict {}

/// Constants and offsets of the C structs as the Rust mirror has them,
/// named as in C, for the layout test that compares them with the C
/// compiler's view.
pub fn rust_layout() -> Vec<(&'static str, usize)> {
    vec![
        ("VIGIL_COUNTER_EMITTED", COUNTER_EMITTED as usize),
        ("VIGIL_COUNTER_FILTERED", COUNTER_FILTERED as usize),
        ("VIGIL_COUNTER_DROPPED", COUNTER_DROPPED as usize),
        ("VIGIL_COUNTER_EVICTED", COUNTER_EVICTED as usize),
        ("VIGIL_COUNTER_SLOTS", COUNTER_SLOTS as usize),
        (
            "sizeof(struct vigil_event_header)",
            size_of::<RawEventHeader>(),
        ),
        (
            "offsetof(struct vigil_event_header, kind)",
            offset_of!(RawEventHeader, kind),
        ),
        (
            "offsetof(struct vigil_event_header, size)",
            offset_of!(RawEventHeader, size),
        ),
        (
            "offsetof(struct vigil_event_header, ktime_boot_ns)",
            offset_of!(RawEventHeader, ktime_boot_ns),
        ),
        (
            "offsetof(struct vigil_event_header, cgroup_id)",
            offset_of!(RawEventHeader, cgroup_id),
        ),
        (
            "offsetof(struct vigil_event_header, mnt_ns)",
            offset_of!(RawEventHeader, mnt_ns),
        ),
        (
            "offsetof(struct vigil_event_header, pid)",
            offset_of!(RawEventHeader, pid),
        ),
        (
            "offsetof(struct vigil_event_header, tgid)",
            offset_of!(RawEventHeader, tgid),
        ),
        (
            "offsetof(struct vigil_event_header, ppid)",
            offset_of!(RawEventHeader, ppid),
        ),
        (
            "offsetof(struct vigil_event_header, uid)",
            offset_of!(RawEventHeader, uid),
        ),
        (
            "offsetof(struct vigil_event_header, gid)",
            offset_of!(RawEventHeader, gid),
        ),
        (
            "offsetof(struct vigil_event_header, aux)",
            offset_of!(RawEventHeader, aux),
        ),
        (
            "offsetof(struct vigil_event_header, comm)",
            offset_of!(RawEventHeader, comm),
        ),
        (
            "offsetof(struct vigil_exec_event, filename_len)",
            offset_of!(RawExecFixed, filename_len),
        ),
        (
            "offsetof(struct vigil_exec_event, args_len)",
            offset_of!(RawExecFixed, args_len),
        ),
        (
            "offsetof(struct vigil_exec_event, data)",
            size_of::<RawExecFixed>(),
        ),
        (
            "offsetof(struct vigil_open_event, dfd)",
            offset_of!(RawOpenFixed, dfd),
        ),
        (
            "offsetof(struct vigil_open_event, flags)",
            offset_of!(RawOpenFixed, flags),
        ),
        (
            "offsetof(struct vigil_open_event, match)",
            offset_of!(RawOpenFixed, matched),
        ),
        (
            "offsetof(struct vigil_open_event, path_len)",
            offset_of!(RawOpenFixed, path_len),
        ),
        (
            "offsetof(struct vigil_open_event, ret)",
            offset_of!(RawOpenFixed, ret),
        ),
        (
            "offsetof(struct vigil_open_event, origin)",
            offset_of!(RawOpenFixed, origin),
        ),
        (
            "offsetof(struct vigil_open_event, dev)",
            offset_of!(RawOpenFixed, dev),
        ),
        (
            "offsetof(struct vigil_open_event, ino)",
            offset_of!(RawOpenFixed, ino),
        ),
        ("VIGIL_OPEN_SYSCALL", OPEN_SYSCALL as usize),
        ("VIGIL_OPEN_IO_URING", OPEN_IO_URING as usize),
        ("VIGIL_OPEN_IO_URING_FIXED", OPEN_IO_URING_FIXED as usize),
        (
            "VIGIL_OPEN_IO_URING_SUBMITTED",
            OPEN_IO_URING_SUBMITTED as usize,
        ),
        (
            "offsetof(struct vigil_open_event, path)",
            size_of::<RawOpenFixed>(),
        ),
        (
            "offsetof(struct vigil_file_map_event, fd)",
            offset_of!(RawFileMapFixed, fd),
        ),
        (
            "offsetof(struct vigil_file_map_event, match)",
            offset_of!(RawFileMapFixed, matched),
        ),
        (
            "offsetof(struct vigil_file_map_event, name_len)",
            offset_of!(RawFileMapFixed, name_len),
        ),
        (
            "offsetof(struct vigil_file_map_event, prot)",
            offset_of!(RawFileMapFixed, prot),
        ),
        (
            "offsetof(struct vigil_file_map_event, length)",
            offset_of!(RawFileMapFixed, length),
        ),
        (
            "offsetof(struct vigil_file_map_event, component_count)",
            offset_of!(RawFileMapFixed, component_count),
        ),
        (
            "offsetof(struct vigil_file_map_event, path_complete)",
            offset_of!(RawFileMapFixed, path_complete),
        ),
        (
            "offsetof(struct vigil_file_map_event, components)",
            size_of::<RawFileMapFixed>(),
        ),
        (
            "offsetof(struct vigil_file_map_event, name)",
            size_of::<RawFileMapFixed>() + COMPONENTS_BYTES,
        ),
        (
            "offsetof(struct vigil_dns_event, family)",
            offset_of!(RawDnsFixed, family),
        ),
        (
            "offsetof(struct vigil_dns_event, dport)",
            offset_of!(RawDnsFixed, dport),
        ),
        (
            "offsetof(struct vigil_dns_event, payload_len)",
            offset_of!(RawDnsFixed, payload_len),
        ),
        (
            "offsetof(struct vigil_dns_event, daddr)",
            offset_of!(RawDnsFixed, daddr),
        ),
        (
            "offsetof(struct vigil_dns_event, payload)",
            size_of::<RawDnsFixed>(),
        ),
        ("VIGIL_EVENT_STREAM", EVENT_STREAM as usize),
        ("VIGIL_STREAM_MAX", STREAM_MAX),
        (
            "offsetof(struct vigil_stream_event, daddr)",
            offset_of!(RawDnsFixed, daddr),
        ),
        (
            "offsetof(struct vigil_stream_event, payload)",
            size_of::<RawDnsFixed>(),
        ),
        (
            "sizeof(struct vigil_blocked_destination)",
            size_of::<crate::blocked_destination::BlockedDestination>(),
        ),
        (
            "offsetof(struct vigil_blocked_destination, addr)",
            offset_of!(crate::blocked_destination::BlockedDestination, addr),
        ),
        (
            "sizeof(struct vigil_path_filter)",
            size_of::<RawPathFilter>(),
        ),
        ("VIGIL_MATCH_CONTENT_READ", MATCH_CONTENT_READ as usize),
        (
            "VIGIL_MATCH_EXEC_BY_CONTENT",
            MATCH_EXEC_BY_CONTENT as usize,
        ),
        ("VIGIL_LIBRARY_PLAIN", LIBRARY_PLAIN as usize),
        ("VIGIL_LIBRARY_AI_RUNTIME", LIBRARY_AI_RUNTIME as usize),
        (
            "sizeof(struct vigil_library_key)",
            size_of::<RawLibraryKey>(),
        ),
        (
            "offsetof(struct vigil_library_key, dev)",
            offset_of!(RawLibraryKey, dev),
        ),
        (
            "sizeof(struct vigil_library_verdict)",
            size_of::<RawLibraryVerdict>(),
        ),
        (
            "offsetof(struct vigil_library_verdict, ctime_nsec)",
            offset_of!(RawLibraryVerdict, ctime_nsec),
        ),
        (
            "offsetof(struct vigil_library_verdict, state)",
            offset_of!(RawLibraryVerdict, state),
        ),
        (
            "offsetof(struct vigil_file_map_event, dev)",
            offset_of!(RawFileMapFixed, dev),
        ),
        (
            "offsetof(struct vigil_file_map_event, ino)",
            offset_of!(RawFileMapFixed, ino),
        ),
        (
            "offsetof(struct vigil_path_filter, len)",
            offset_of!(RawPathFilter, len),
        ),
        (
            "offsetof(struct vigil_path_filter, match)",
            offset_of!(RawPathFilter, matched),
        ),
        (
            "offsetof(struct vigil_path_filter, value)",
            offset_of!(RawPathFilter, value),
        ),
        (
            "offsetof(struct vigil_path_filter, mask)",
            offset_of!(RawPathFilter, mask),
        ),
    ]
}

/// What the kernel says about the task behind an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventContext {
    pub ktime_boot_ns: u64,
    pub cgroup_id: u64,
    pub mnt_ns: u64,
    pub tid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
}

/// Why a path passed the kernel filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMatch {
    ModelFile,
    GpuDevice,
    AiRuntime,
    /// A large read-only mapping from offset 0, whatever the file's name.
    LargeMapping,
    /// A file read at offset 0 whose first bytes start like a model
    /// format, whatever its name (a FILE_MAP record; `length` is the bytes
    /// read).
    ContentRead,
    /// An executable mapping of a file whose name is no AI runtime's: its
    /// ELF content decides (`LibraryVerdicts`).
    ExecByContent,
}

/// How a file was opened, which says what an open record's result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenOrigin {
    /// An open syscall: the result is an fd or -errno.
    Syscall,
    /// `IORING_OP_OPENAT`/`OPENAT2`: the completion's result, an fd or -errno.
    IoUring,
    /// The same into an io_uring fixed-file slot: the result is no fd.
    IoUringFixed,
    /// An io_uring open sent at submission: its result is not known.
    IoUringSubmitted,
}

impl OpenOrigin {
    /// The fd the open returned, if `ret` is one.
    pub fn fd(self, ret: i32) -> Option<i32> {
        match self {
            OpenOrigin::Syscall | OpenOrigin::IoUring if ret >= 0 => Some(ret),
            _ => None,
        }
    }
}

/// Which file an open returned, as `stat` names it: `st_dev` (user-space
/// encoding) and `st_ino`. Read in the kernel from the fd table when the
/// open returned, so a file put at the same path later is not this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
}

impl FileIdentity {
    /// From the kernel's `dev_t` (major in the top 12 bits of 32, minor in
    /// the low 20) and inode number; None when the kernel did not know (0).
    pub fn from_kernel(dev: u64, ino: u64) -> Option<FileIdentity> {
        if ino == 0 {
            return None;
        }
        let major = (dev >> 20) & 0xfff;
        let minor = dev & 0xf_ffff;
        Some(FileIdentity {
            // What the kernel's new_encode_dev gives stat(2), as glibc's
            // makedev reads it.
            dev: libc::makedev(major as u32, minor as u32),
            ino,
        })
    }

    /// The identity `stat` gives a file.
    pub fn of(meta: &std::fs::Metadata) -> FileIdentity {
        use std::os::unix::fs::MetadataExt;
        FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetOp {
    Connect,
    Listen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SensorEvent {
    Exec {
        ctx: EventContext,
        filename: String,
        argv: Vec<String>,
    },
    Exit {
        ctx: EventContext,
        exit_code: u32,
    },
    Open {
        ctx: EventContext,
        dfd: i32,
        flags: u32,
        matched: PathMatch,
        path: String,
        /// The open's result: an fd, or -errno (see `origin`).
        ret: i32,
        origin: OpenOrigin,
        /// The file it opened, when the kernel could tell.
        file: Option<FileIdentity>,
    },
    /// A TCP connect or listen on a port of the kernel's port table.
    Net {
        ctx: EventContext,
        op: NetOp,
        local: std::net::SocketAddr,
        remote: std::net::SocketAddr,
    },
    /// A file mapped: executable with a matching name (`AiRuntime`), or a
    /// large read-only mapping (`LargeMapping`); `fd` is the mapped fd.
    FileMap {
        ctx: EventContext,
        fd: i32,
        matched: PathMatch,
        name: String,
        /// The file's path as the kernel walked it (executable mappings).
        path: Option<String>,
        /// Bytes mapped.
        length: u64,
        /// The mapped file, when the kernel could tell.
        file: Option<FileIdentity>,
    },
    /// A message sent to port 53 (`server`): a DNS question, if it parses.
    Dns {
        ctx: EventContext,
        server: std::net::SocketAddr,
        /// The message's first bytes (at most `VIGIL_DNS_MAX`).
        payload: Vec<u8>,
    },
    /// The first bytes a process sent on a TCP stream it connected to
    /// port 443 (a TLS ClientHello) or 53 (DNS over TCP).
    StreamStart {
        ctx: EventContext,
        remote: std::net::SocketAddr,
        /// At most `STREAM_MAX` bytes.
        payload: Vec<u8>,
    },
    /// Not a kernel record: the sensor stage saw the ring buffer drop at
    /// least the flood threshold of this process's records in a second
    /// (once per episode). `ctx` is the process as /proc had it then.
    SensorFlood {
        ctx: EventContext,
        /// Records of this process lost in that second.
        dropped: u64,
        /// Records of this process lost since the agent started.
        dropped_total: u64,
    },
}

impl SensorEvent {
    pub fn ctx(&self) -> &EventContext {
        match self {
            SensorEvent::Exec { ctx, .. }
            | SensorEvent::Exit { ctx, .. }
            | SensorEvent::Open { ctx, .. }
            | SensorEvent::Net { ctx, .. }
            | SensorEvent::FileMap { ctx, .. }
            | SensorEvent::Dns { ctx, .. }
            | SensorEvent::StreamStart { ctx, .. }
            | SensorEvent::SensorFlood { ctx, .. } => ctx,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need} its {what} needs")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    #[error("record says it is {said} bytes but {got} arrived")]
    SizeMismatch { said: usize, got: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown path match class {0}")]
    UnknownMatch(u32),
    #[error("unknown open origin {0}")]
    UnknownOpenOrigin(u32),
    #[error("unknown network operation {0}")]
    UnknownNetOp(u16),
    #[error("{field} length {len} exceeds the {room} bytes that follow")]
    Overrun {
        field: &'static str,
        len: usize,
        room: usize,
    },
}

/// Reads a `T` from the front of `bytes`; the rest follows it. A copy, as
/// `read_unaligned` was: a record promises no alignment for `T`, and the
/// structs are at most 112 bytes (on the stack, no allocation).
fn read_prefix<'a, T: FromBytes>(
    bytes: &'a [u8],
    what: &'static str,
) -> Result<(T, &'a [u8]), DecodeError> {
    T::read_from_prefix(bytes).map_err(|_| DecodeError::Short {
        what,
        need: size_of::<T>(),
        got: bytes.len(),
    })
}

/// Bytes up to the first NUL (or all), as UTF-8 with replacement.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn context(h: &RawEventHeader) -> EventContext {
    EventContext {
        ktime_boot_ns: h.ktime_boot_ns,
        cgroup_id: h.cgroup_id,
        mnt_ns: h.mnt_ns,
        tid: h.pid,
        pid: h.tgid,
        ppid: h.ppid,
        uid: h.uid,
        gid: h.gid,
        comm: c_string(&h.comm),
    }
}

fn path_match(raw: u32) -> Result<PathMatch, DecodeError> {
    match raw {
        MATCH_MODEL_FILE => Ok(PathMatch::ModelFile),
        MATCH_GPU_DEVICE => Ok(PathMatch::GpuDevice),
        MATCH_AI_RUNTIME => Ok(PathMatch::AiRuntime),
        MATCH_LARGE_MAPPING => Ok(PathMatch::LargeMapping),
        MATCH_CONTENT_READ => Ok(PathMatch::ContentRead),
        MATCH_EXEC_BY_CONTENT => Ok(PathMatch::ExecByContent),
        other => Err(DecodeError::UnknownMatch(other)),
    }
}

fn open_origin(raw: u32) -> Result<OpenOrigin, DecodeError> {
    match raw {
        OPEN_SYSCALL => Ok(OpenOrigin::Syscall),
        OPEN_IO_URING => Ok(OpenOrigin::IoUring),
        OPEN_IO_URING_FIXED => Ok(OpenOrigin::IoUringFixed),
        OPEN_IO_URING_SUBMITTED => Ok(OpenOrigin::IoUringSubmitted),
        other => Err(DecodeError::UnknownOpenOrigin(other)),
    }
}

fn socket_addr(family: u16, addr: [u8; 16], port: u16) -> std::net::SocketAddr {
    let ip = if family == AF_INET6 {
        std::net::IpAddr::from(addr)
    } else {
        std::net::IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    };
    std::net::SocketAddr::new(ip, port)
}

/// The first `len` bytes of `bytes` (a `field` of the record) and the rest.
fn take<'a>(
    bytes: &'a [u8],
    len: usize,
    field: &'static str,
) -> Result<(&'a [u8], &'a [u8]), DecodeError> {
    bytes.split_at_checked(len).ok_or(DecodeError::Overrun {
        field,
        len,
        room: bytes.len(),
    })
}

/// Decodes one ring-buffer record.
pub fn decode(record: &[u8]) -> Result<SensorEvent, DecodeError> {
    let (hdr, _) = read_prefix::<RawEventHeader>(record, "header")?;
    if hdr.size as usize != record.len() {
        return Err(DecodeError::SizeMismatch {
            said: hdr.size as usize,
            got: record.len(),
        });
    }
    let ctx = context(&hdr);
    match hdr.kind {
        EVENT_EXEC => {
            let (fixed, rest) = read_prefix::<RawExecFixed>(record, "exec record")?;
            let (filename, rest) = take(rest, fixed.filename_len as usize, "filename")?;
            let (args, _) = take(rest, fixed.args_len as usize, "argv")?;
            let argv = args
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Ok(SensorEvent::Exec {
                ctx,
                filename: c_string(filename),
                argv,
            })
        }
        EVENT_EXIT => Ok(SensorEvent::Exit {
            ctx,
            exit_code: hdr.aux,
        }),
        EVENT_OPEN => {
            let (fixed, rest) = read_prefix::<RawOpenFixed>(record, "open record")?;
            let matched = path_match(fixed.matched)?;
            let (path, _) = take(rest, fixed.path_len as usize, "path")?;
            Ok(SensorEvent::Open {
                ctx,
                dfd: fixed.dfd,
                flags: fixed.flags,
                matched,
                path: c_string(path),
                ret: fixed.ret,
                origin: open_origin(fixed.origin)?,
                file: FileIdentity::from_kernel(fixed.dev, fixed.ino),
            })
        }
        EVENT_NET => {
            let (ev, _) = read_prefix::<RawNetEvent>(record, "net record")?;
            let op = match ev.op {
                NET_CONNECT => NetOp::Connect,
                NET_LISTEN => NetOp::Listen,
                other => return Err(DecodeError::UnknownNetOp(other)),
            };
            Ok(SensorEvent::Net {
                ctx,
                op,
                local: socket_addr(ev.family, ev.saddr, ev.sport),
                remote: socket_addr(ev.family, ev.daddr, ev.dport),
            })
        }
        EVENT_FILE_MAP => {
            let (fixed, rest) = read_prefix::<RawFileMapFixed>(record, "file map record")?;
            let matched = path_match(fixed.matched)?;
            let (components, rest) = take(rest, COMPONENTS_BYTES, "path components")?;
            let (name, _) = take(rest, fixed.name_len as usize, "name")?;
            let count = (fixed.component_count as usize).min(PATH_COMPONENTS);
            let path = (count > 0).then(|| {
                let parts: Vec<String> = components
                    .chunks(COMPONENT_MAX)
                    .take(count)
                    .rev()
                    .map(c_string)
                    .collect();
                // An incomplete walk (deeper than the slots) is marked so.
                let root = if fixed.path_complete != 0 { "" } else { "/…" };
                format!("{root}/{}", parts.join("/"))
            });
            Ok(SensorEvent::FileMap {
                ctx,
                fd: fixed.fd,
                matched,
                name: c_string(name),
                path,
                length: fixed.length,
                file: FileIdentity::from_kernel(fixed.dev, fixed.ino),
            })
        }
        EVENT_DNS => {
            let (fixed, rest) = read_prefix::<RawDnsFixed>(record, "dns record")?;
            let (payload, _) = take(rest, fixed.payload_len as usize, "payload")?;
            Ok(SensorEvent::Dns {
                ctx,
                server: socket_addr(fixed.family, fixed.daddr, fixed.dport),
                payload: payload.to_vec(),
            })
        }
        EVENT_STREAM => {
            // The same fixed part as a DNS record.
            let (fixed, rest) = read_prefix::<RawDnsFixed>(record, "stream record")?;
            let (payload, _) = take(rest, fixed.payload_len as usize, "payload")?;
            Ok(SensorEvent::StreamStart {
                ctx,
                remote: socket_addr(fixed.family, fixed.daddr, fixed.dport),
                payload: payload.to_vec(),
            })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
#[path = "event_layout_tests.rs"]
mod tests;
