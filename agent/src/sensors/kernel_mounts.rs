//! Makes the kernel interfaces the sensors need available: a fresh machine
//! may boot with tracefs unmounted, and tracepoints are then "not found".

use std::path::Path;

const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// Mounts tracefs at `/sys/kernel/tracing` unless tracefs is already
/// reachable there or under debugfs. Returns whether it mounted it.
pub fn ensure_tracefs() -> Result<bool, nix::Error> {
    if Path::new(TRACEFS).join("events").is_dir()
        || Path::new(DEBUGFS_TRACING).join("events").is_dir()
    {
        return Ok(false);
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )?;
    tracing::info!(path = TRACEFS, "tracefs was not mounted; mounted it");
    Ok(true)
}
