//! The ship stage: the findings that stand in; each is written to the
//! spool (sled, on disk) and logged with its latency from the syscall,
//! and the shipper streams the spool to the control plane, removing what
//! it acked. A full spool degrades the agent (the newest findings wait in
//! memory, heartbeats say `spool-full`), never stops it.

pub mod approved_models;
pub mod certificate_renewal;
pub mod control_plane_tls;
pub mod enrollment;
mod identity_files;
pub mod model_fetch;
pub mod overflow;
mod ship_stage;
pub mod shipper;
pub mod spool;
pub mod tpm_worker;

pub use ship_stage::{ShipStage, SPOOL_FULL_RULE};
