//! Loads the C sensors into the kernel with aya, attaches them and drains
//! their ring buffer.

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use tokio::io::unix::AsyncFd;
use vigil_domain::SensorCounters;

use super::event_layout::{
    decode, RawPathFilter, SensorEvent, COUNTER_DROPPED, COUNTER_EMITTED, COUNTER_EVICTED,
    COUNTER_FILTERED,
};
use super::path_filter;

static SENSORS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sensors.bpf.o"));

/// Records decoded into one batch, at most. Under a flood the backlog waits
/// in the ring (kernel memory of a fixed size, where a full ring drops and
/// counts) rather than in ever larger batches: the agent's memory for
/// batches in flight stays bounded, and so does the queue in front of the
/// next record.
const MAX_BATCH: usize = 4096;

/// (program, tracepoint category, tracepoint name, required). A tracepoint
/// that is not required may be missing on some architectures or kernels
/// (there is no `open` syscall on arm64): it is then skipped and logged.
const TRACEPOINTS: &[(&str, &str, &str, bool)] = &[
    ("vigil_exec", "sched", "sched_process_exec", true),
    ("vigil_exit", "sched", "sched_process_exit", true),
    ("vigil_openat", "syscalls", "sys_enter_openat", true),
    ("vigil_openat2", "syscalls", "sys_enter_openat2", false),
    ("vigil_open", "syscalls", "sys_enter_open", false),
    ("vigil_creat", "syscalls", "sys_enter_creat", false),
    ("vigil_openat_ret", "syscalls", "sys_exit_openat", true),
    ("vigil_openat2_ret", "syscalls", "sys_exit_openat2", false),
    ("vigil_open_ret", "syscalls", "sys_exit_open", false),
    ("vigil_creat_ret", "syscalls", "sys_exit_creat", false),
    // io_uring opens never enter the open syscalls: read as submitted,
    // sent at completion. Absent without io_uring (or its tracepoints).
    (
        "vigil_io_uring_submit",
        "io_uring",
        "io_uring_submit_req",
        false,
    ),
    (
        "vigil_io_uring_complete",
        "io_uring",
        "io_uring_complete",
        false,
    ),
    ("vigil_mmap", "syscalls", "sys_enter_mmap", true),
    ("vigil_inet_state", "sock", "inet_sock_set_state", true),
    ("vigil_connect", "syscalls", "sys_enter_connect", false),
    ("vigil_sendto", "syscalls", "sys_enter_sendto", false),
    ("vigil_sendmsg", "syscalls", "sys_enter_sendmsg", false),
    ("vigil_sendmmsg", "syscalls", "sys_enter_sendmmsg", false),
    // Content checks of files read at offset 0 (`EbpfOptions::content_read`).
    ("vigil_read", "syscalls", "sys_enter_read", false),
    ("vigil_read_ret", "syscalls", "sys_exit_read", false),
    ("vigil_pread", "syscalls", "sys_enter_pread64", false),
    ("vigil_pread_ret", "syscalls", "sys_exit_pread64", false),
    ("vigil_dup", "syscalls", "sys_enter_dup", false),
    ("vigil_dup_ret", "syscalls", "sys_exit_dup", false),
    ("vigil_dup2", "syscalls", "sys_enter_dup2", false),
    ("vigil_dup3", "syscalls", "sys_enter_dup3", false),
    // The first send on TCP streams to 443 and 53 (`EbpfOptions::stream_checks`);
    // sendto and sendmsg are above.
    ("vigil_write", "syscalls", "sys_enter_write", false),
    ("vigil_writev", "syscalls", "sys_enter_writev", false),
    // What a send or connect could not read on entry (not yet faulted in).
    ("vigil_write_ret", "syscalls", "sys_exit_write", false),
    ("vigil_sendto_ret", "syscalls", "sys_exit_sendto", false),
    ("vigil_sendmsg_ret", "syscalls", "sys_exit_sendmsg", false),
    ("vigil_sendmmsg_ret", "syscalls", "sys_exit_sendmmsg", false),
    ("vigil_connect_ret", "syscalls", "sys_exit_connect", false),
];

/// The programs that only stream checks need.
const STREAM_PROGRAMS: &[&str] = &[
    "vigil_write",
    "vigil_writev",
    "vigil_write_ret",
    "vigil_sendto_ret",
    "vigil_sendmsg_ret",
    "vigil_sendmmsg_ret",
    "vigil_connect_ret",
];

/// The programs that only content checks of reads need.
const CONTENT_READ_PROGRAMS: &[&str] = &[
    "vigil_read",
    "vigil_read_ret",
    "vigil_pread",
    "vigil_pread_ret",
    "vigil_dup",
    "vigil_dup_ret",
    "vigil_dup2",
    "vigil_dup3",
];

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("path filter table: {0}")]
    Filter(#[from] path_filter::FilterError),
    #[error("mounting tracefs: {0}")]
    Tracefs(nix::Error),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {map}: {detail}")]
    Map { map: &'static str, detail: String },
    #[error("ring buffer: {0}")]
    Io(#[from] std::io::Error),
}

pub struct EbpfSensor {
    // Owns the programs and their links: dropping it detaches everything.
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    counters: PerCpuArray<MapData, u64>,
    /// Records lost for a full ring, by process (tgid).
    drops_by_process: BpfHashMap<MapData, u32, u64>,
    hooks: Vec<String>,
    library_verdicts: Option<super::LibraryVerdicts>,
    decode_errors: u64,
    received: u64,
    /// The last drain stopped at `MAX_BATCH` with records left in the ring.
    backlog: bool,
}

/// Tunables of the eBPF sensor, fixed at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EbpfOptions {
    /// Read-only mappings from offset 0 at least this long are sent for a
    /// content check (0: none).
    pub large_mapping_min: u64,
    /// Files opened for reading only are checked by the first bytes read
    /// at offset 0 (read/pread64), whatever their name.
    pub content_read: bool,
    /// Executable mappings of files whose names are no AI runtime's are
    /// checked by their ELF content, once per file version.
    pub library_checks: bool,
    /// The first bytes sent on TCP streams to port 443 (TLS server name)
    /// and 53 (DNS over TCP) go to the agent.
    pub stream_checks: bool,
    /// Ring buffer size in bytes: a power of two, at least one page.
    pub ring_buffer_bytes: u32,
    /// Records of one process lost for a full ring in a second that make
    /// it a flood, reported once per episode (0: never).
    pub flood_drops_per_sec: u64,
}

impl Default for EbpfOptions {
    fn default() -> Self {
        Self {
            large_mapping_min: 8 << 20,
            content_read: true,
            library_checks: true,
            stream_checks: true,
            ring_buffer_bytes: 8 << 20,
            flood_drops_per_sec: 1000,
        }
    }
}

impl EbpfSensor {
    /// Loads and attaches every sensor program, with `filters` as the
    /// kernel's path filter table and `ports` as its TCP port table.
    pub fn load(
        filters: &[RawPathFilter],
        ports: &[u16],
        options: EbpfOptions,
    ) -> Result<Self, SensorError> {
        let page = 4096;
        if options.ring_buffer_bytes < page || !options.ring_buffer_bytes.is_power_of_two() {
            return Err(SensorError::Map {
                map: "EVENTS",
                detail: format!(
                    "ring buffer size {} bytes is not a power of two of at least {page}",
                    options.ring_buffer_bytes
                ),
            });
        }
        super::kernel_mounts::ensure_tracefs().map_err(SensorError::Tracefs)?;
        raise_memlock_limit();
        let table = path_filter::table(filters)?;
        let (port_table, port_count) = path_filter::port_table(ports)?;
        let agent_tgid = std::process::id();
        let content_read = u32::from(options.content_read);
        let library_checks = u32::from(options.library_checks);
        let stream_checks = u32::from(options.stream_checks);
        let mut ebpf = EbpfLoader::new()
            .override_global("PATH_FILTERS", &table.filters, true)
            .override_global("PATH_FILTER_COUNT", &table.count, true)
            .override_global("SUFFIX_END", &table.suffix_end, true)
            .override_global("PREFIX_END", &table.prefix_end, true)
            .override_global("SUFFIX_LAST_BYTES", &table.suffix_last_bytes, true)
            .override_global("PREFIX_COMMON_MASK", &table.prefix_common_mask, true)
            .override_global("PREFIX_COMMON_VALUE", &table.prefix_common_value, true)
            .override_global("AGENT_TGID", &agent_tgid, true)
            .override_global("AI_PORTS", &port_table, true)
            .override_global("AI_PORT_COUNT", &port_count, true)
            .override_global("LARGE_MAPPING_MIN", &options.large_mapping_min, true)
            .override_global("CONTENT_READ", &content_read, true)
            .override_global("LIBRARY_CHECKS", &library_checks, true)
            .override_global("STREAM_CHECKS", &stream_checks, true)
            .map_max_entries("EVENTS", options.ring_buffer_bytes)
            // OPEN_PENDING (task storage) is only used in the kernel; aya
            // has no user-space type for it.
            .allow_unsupported_maps()
            .load(SENSORS_OBJECT)?;
        let mut hooks = Vec::new();
        for &(program, category, name, required) in TRACEPOINTS {
            if !options.content_read && CONTENT_READ_PROGRAMS.contains(&program) {
                continue;
            }
            if !options.stream_checks && STREAM_PROGRAMS.contains(&program) {
                continue;
            }
            let err = |source| SensorError::Program { program, source };
            let tp: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or(SensorError::Map {
                    map: "program",
                    detail: format!("{program} missing from the object"),
                })?
                .try_into()
                .map_err(err)?;
            match tp.load() {
                Ok(()) => {}
                Err(e) if !required => {
                    tracing::warn!(program, error = %e, "optional sensor program not loaded");
                    continue;
                }
                Err(e) => return Err(err(e)),
            }
            match tp.attach(category, name) {
                Ok(_) => hooks.push(format!("tracepoint/{category}/{name}")),
                Err(e) if !required => {
                    tracing::info!(tracepoint = %format!("{category}/{name}"), error = %e, "optional tracepoint not attached");
                }
                Err(e) => return Err(err(e)),
            }
        }
        hooks.push(io_uring_state(&hooks));
        tracing::info!(hooks = ?hooks, "sensor hooks attached");
        let ring =
            RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(|e| SensorError::Map {
                map: "EVENTS",
                detail: e.to_string(),
            })?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?).map_err(|e| {
            SensorError::Map {
                map: "COUNTERS",
                detail: e.to_string(),
            }
        })?;
        let drops_by_process = BpfHashMap::try_from(take_map(&mut ebpf, "DROPS_BY_PROCESS")?)
            .map_err(|e| SensorError::Map {
                map: "DROPS_BY_PROCESS",
                detail: e.to_string(),
            })?;
        let library_verdicts = if options.library_checks {
            let map =
                BpfHashMap::try_from(take_map(&mut ebpf, "LIBRARY_VERDICTS")?).map_err(|e| {
                    SensorError::Map {
                        map: "LIBRARY_VERDICTS",
                        detail: e.to_string(),
                    }
                })?;
            Some(super::LibraryVerdicts::new(map))
        } else {
            None
        };
        // SAFETY: the RingBuf owns its map fd, which stays open and the same
        // for as long as the RingBuf lives, i.e. for the AsyncFd's lifetime.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            _ebpf: ebpf,
            ring,
            counters,
            drops_by_process,
            hooks,
            library_verdicts,
            decode_errors: 0,
            received: 0,
            backlog: false,
        })
    }

    /// The kernel's verdicts on executable files, where library checks are on.
    pub fn library_verdicts(&self) -> Option<super::LibraryVerdicts> {
        self.library_verdicts.clone()
    }

    /// The kernel hooks the sensors are attached to.
    pub fn hooks(&self) -> &[String] {
        &self.hooks
    }

    /// Waits for records, then decodes every record available into `out`.
    /// A record that does not decode is logged and counted, not fatal.
    /// Records left in the ring by a full batch are taken at once.
    pub async fn next_batch(&mut self, out: &mut Vec<SensorEvent>) -> Result<(), SensorError> {
        if !self.backlog {
            let mut guard = self.ring.readable_mut().await?;
            guard.clear_ready();
            drop(guard);
        }
        self.drain(out);
        Ok(())
    }

    /// Decodes the records in the ring now, without waiting, up to
    /// `MAX_BATCH` in `out`. Context records (exec/exit) do not wake the
    /// agent; a periodic drain picks them up.
    pub fn drain(&mut self, out: &mut Vec<SensorEvent>) {
        let ring = self.ring.get_mut();
        self.backlog = false;
        while let Some(record) = ring.next() {
            self.received += 1;
            match decode(&record) {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    self.decode_errors += 1;
                    tracing::warn!(error = %e, "dropping a malformed sensor record");
                }
            }
            if out.len() >= MAX_BATCH {
                self.backlog = true;
                break;
            }
        }
    }

    /// Records that reached user space but did not decode.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// The kernel's per-CPU counters, summed, and the records received here.
    /// `received` is read before the kernel's counters, so it never runs
    /// ahead of `emitted`.
    pub fn counters(&self) -> SensorCounters {
        let received = self.received;
        let sum = |slot: u32| {
            self.counters
                .get(&slot, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        SensorCounters {
            emitted: sum(COUNTER_EMITTED),
            filtered: sum(COUNTER_FILTERED),
            dropped: sum(COUNTER_DROPPED),
            received,
            evicted: sum(COUNTER_EVICTED),
        }
    }

    /// Records lost for a full ring, by process (tgid), as the kernel
    /// counts them; at most the map's 1024 most recent processes.
    pub fn drops_by_process(&self) -> Vec<(u32, u64)> {
        self.drops_by_process
            .iter()
            .filter_map(Result::ok)
            .collect()
    }
}

/// What the hook list says about io_uring: whether its opens are watched,
/// and the `kernel.io_uring_disabled` sysctl (0: anyone may create rings,
/// 1: only a group or CAP_SYS_ADMIN, 2: nobody), which says how much an
/// unwatched io_uring would matter.
fn io_uring_state(hooks: &[String]) -> String {
    let sysctl = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "absent".into());
    let watched = ["io_uring_submit_req", "io_uring_complete"]
        .iter()
        .all(|tp| {
            hooks
                .iter()
                .any(|h| h == &format!("tracepoint/io_uring/{tp}"))
        });
    let opens = if watched { "watched" } else { "NOT watched" };
    format!("sysctl/kernel.io_uring_disabled={sysctl} (io_uring opens {opens})")
}

fn take_map(ebpf: &mut Ebpf, map: &'static str) -> Result<aya::maps::Map, SensorError> {
    ebpf.take_map(map).ok_or(SensorError::Map {
        map,
        detail: "missing from the object".into(),
    })
}

/// Kernels before 5.11 charge BPF maps against RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK; fine on kernels >= 5.11");
    }
}
