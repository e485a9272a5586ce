//! The ship stage: the findings that stand in; each is written to the
//! spool (sled, on disk) and logged with its latency from the syscall,
//! and the shipper streams the spool to the control plane, removing what
//! it acked.

mod ship_stage;
pub mod shipper;
pub mod spool;

pub use ship_stage::ShipStage;
