//! vigil host agent.
//!
//! Data flow: `sensors` (eBPF ring buffer) → `process_table` → `detector` →
//! `spool` (sled, on disk) → `shipper` (gRPC to the control plane).

pub mod clock;
pub mod config;
pub mod detector;
pub mod enforcer;
pub mod exe_digest;
pub mod governor;
pub mod gpu;
pub mod host_agent;
pub mod process_table;
pub mod procfs;
pub mod sensors;
pub mod serving_probe;
pub mod shipper;
pub mod signal_memory;
pub mod spool;
