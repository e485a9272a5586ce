//! The sensor stage: the eBPF programs of `ebpf/` (their records and
//! filters), and the procfs poller that stands in when eBPF cannot load.
//! Out: batches of `SensorEvent` (`SensorStage`), among them a
//! `SensorFlood` for a process whose records a full ring buffer lost, and
//! the kernel's counters.

mod ebpf_sensor;
pub mod event_layout;
mod flood_watch;
mod kernel_mounts;
mod library_verdicts;
pub mod path_filter;
mod procfs_poller;
mod sensor;
mod sensor_stage;

pub use ebpf_sensor::{EbpfOptions, EbpfSensor, SensorError};
pub use event_layout::{EventContext, FileIdentity, NetOp, OpenOrigin, PathMatch, SensorEvent};
pub use library_verdicts::LibraryVerdicts;
pub use procfs_poller::ProcfsPoller;
pub use sensor::{Sensor, SensorChoice};
pub use sensor_stage::SensorStage;
