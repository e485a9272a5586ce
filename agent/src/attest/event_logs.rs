//! The measurement logs sent with a quote when the verifier asks: the
//! firmware's TCG boot event log and the kernel's IMA log, which let it
//! replay the quoted PCRs. Each is read only when readable (securityfs
//! needs root) and only up to its bound: a larger log is not sent, and
//! the reason is logged.

use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the kernel exposes the boot event log.
pub const DEFAULT_BOOT_EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Where the kernel exposes the IMA log.
pub const DEFAULT_IMA_LOG: &str = "/sys/kernel/security/ima/binary_runtime_measurements";
/// The largest boot event log sent.
pub const BOOT_EVENT_LOG_LIMIT: u64 = 1 << 20;
/// The largest IMA log sent (a quote with both logs at their limits must
/// fit a 4 MiB gRPC message).
pub const IMA_LOG_LIMIT: u64 = 2 << 20;

/// Where the two logs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLogPaths {
    pub boot: PathBuf,
    pub ima: PathBuf,
}

impl Default for EventLogPaths {
    fn default() -> Self {
        EventLogPaths {
            boot: DEFAULT_BOOT_EVENT_LOG.into(),
            ima: DEFAULT_IMA_LOG.into(),
        }
    }
}

/// The logs as read; None where one is not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventLogs {
    pub boot: Option<Vec<u8>>,
    pub ima: Option<Vec<u8>>,
}

/// Why a log is not sent.
#[derive(Debug, thiserror::Error)]
pub enum EventLogSkipped {
    #[error("{what} {path}: not readable: {io}")]
    NotReadable {
        what: &'static str,
        path: String,
        io: std::io::Error,
    },
    #[error("{what} {path}: larger than {limit} bytes, not sent")]
    TooLarge {
        what: &'static str,
        path: String,
        limit: u64,
    },
}

impl EventLogPaths {
    /// Both logs, each when readable and within its bound.
    pub fn read(&self) -> EventLogs {
        EventLogs {
            boot: read_logged("boot event log", &self.boot, BOOT_EVENT_LOG_LIMIT),
            ima: read_logged("IMA log", &self.ima, IMA_LOG_LIMIT),
        }
    }
}

fn read_logged(what: &'static str, path: &Path, limit: u64) -> Option<Vec<u8>> {
    match read_bounded(what, path, limit) {
        Ok(log) => Some(log),
        Err(e @ EventLogSkipped::TooLarge { .. }) => {
            tracing::warn!(reason = %e, "a measurement log is not sent with the quote");
            None
        }
        Err(e) => {
            // Missing or root-only is common (no IMA, an unprivileged
            // test agent): not worth a warning at every quote.
            tracing::debug!(reason = %e, "a measurement log is not sent with the quote");
            None
        }
    }
}

/// The file's bytes, if it has at most `limit` of them. securityfs files
/// report size 0, so the bound is checked while reading.
pub fn read_bounded(
    what: &'static str,
    path: &Path,
    limit: u64,
) -> Result<Vec<u8>, EventLogSkipped> {
    let not_readable = |io| EventLogSkipped::NotReadable {
        what,
        path: path.display().to_string(),
        io,
    };
    let file = std::fs::File::open(path).map_err(not_readable)?;
    let mut log = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut log)
        .map_err(not_readable)?;
    if log.len() as u64 > limit {
        return Err(EventLogSkipped::TooLarge {
            what,
            path: path.display().to_string(),
            limit,
        });
    }
    Ok(log)
}

#[cfg(test)]
#[path = "event_logs_tests.rs"]
mod tests;
