//! The process's own resident memory and file descriptors, read from
//! `/proc/self` at scrape time. Hand-written rather than a procfs crate:
//! three small reads, parsed with a line each, and no other dependency.

use std::path::Path;

/// What `/proc/self` says now; a field is `None` where it could not be read
/// (another OS, a restricted `/proc`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessStats {
    pub resident_memory_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    pub fn read() -> Self {
        Self::read_from(Path::new("/proc/self"))
    }

    fn read_from(proc_dir: &Path) -> Self {
        let status = std::fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
        let limits = std::fs::read_to_string(proc_dir.join("limits")).unwrap_or_default();
        Self {
            resident_memory_bytes: vm_rss_bytes(&status),
            open_fds: std::fs::read_dir(proc_dir.join("fd"))
                .ok()
                .map(|entries| entries.count() as u64),
            max_fds: max_open_files(&limits),
        }
    }
}

/// `VmRSS:     1234 kB` in `/proc/PID/status`.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The soft limit of `Max open files  1024  4096  files` in
/// `/proc/PID/limits` (`unlimited` is no number, so no value).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_proc_files() {
        let status = "Name:\tvigil\nVmPeak:\t  9999 kB\nVmRSS:\t    2048 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_bytes(status), Some(2048 * 1024));
        assert_eq!(vm_rss_bytes("Name:\tx\n"), None);
        assert_eq!(vm_rss_bytes("VmRSS:\tlots kB\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
        assert_eq!(
            max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
    }

    #[test]
    fn reads_this_process() {
        let stats = ProcessStats::read();
        if Path::new("/proc/self/status").exists() {
            assert!(stats.resident_memory_bytes.unwrap_or(0) > 0, "{stats:?}");
            assert!(stats.open_fds.unwrap_or(0) > 0, "{stats:?}");
        }
    }
}
