//! Polls NVML on its own thread (NVML calls block) and sends each reading
//! to the event loop. With no usable NVIDIA GPU it says why once and stops:
//! no work at all on hosts without one.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{GpuReading, NvmlReader};

/// What the poller tells the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuUpdate {
    /// No usable NVIDIA GPU: the status line says why. The poller has stopped.
    Unavailable(String),
    Reading(GpuReading),
}

/// Starts polling NVML from `library` every `interval`. The thread ends
/// when the receiver is dropped.
pub fn spawn_gpu_poller(
    library: PathBuf,
    interval: Duration,
) -> std::io::Result<mpsc::Receiver<GpuUpdate>> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::Builder::new()
        .name("vigil-gpu-poll".into())
        .spawn(move || {
            let mut reader = match NvmlReader::open(&library) {
                Ok(r) => r,
                Err(status) => {
                    let _ = tx.blocking_send(GpuUpdate::Unavailable(status));
                    return;
                }
            };
            loop {
                let started = std::time::Instant::now();
                if tx.blocking_send(GpuUpdate::Reading(reader.read())).is_err() {
                    return;
                }
                std::thread::sleep(interval.saturating_sub(started.elapsed()));
            }
        })?;
    Ok(rx)
}
