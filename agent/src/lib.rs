//! vigil host agent.
//!
//! Data flow, one stage a task, joined by bounded channels that carry
//! batches (one send per ring-buffer drain, not per event):
//!
//! - `sensors`: eBPF ring buffer (or /proc polling) → `Vec<SensorEvent>`.
//! - `gpu`: NVML readings on their own thread → `GpuUpdate`.
//! - `detect`: process table, detector, file digests and listener probes
//!   (finished inside the stage), signal memory → `Detections`.
//! - `respond`: governor (signed policy bundles) and enforcer → the
//!   findings that stand, with their actions' outcomes (`Vec<TimedFinding>`).
//! - `ship`: spool (sled, on disk) and shipper (gRPC to the control plane),
//!   which hands the control plane's requests back to `respond`.
//!
//! `host_agent` wires them; `clock`, `config`, `procfs`, `metrics`,
//! `blocked_destination` and `attest` (the TPM) are shared leaves. A stage
//! imports only stages upstream of it (`tests/stage_dependencies.rs`).

pub mod attest;
pub mod blocked_destination;
pub mod clock;
pub mod config;
pub mod detect;
pub mod gpu;
pub mod host_agent;
pub mod metrics;
pub mod procfs;
pub mod respond;
pub mod sensors;
pub mod serve;
pub mod ship;
#[cfg(test)]
mod sled_reopen;
