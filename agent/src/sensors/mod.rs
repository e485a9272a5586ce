//! Kernel sensors: the eBPF programs of `ebpf/`, their records and filters.

mod ebpf_sensor;
pub mod event_layout;
mod kernel_mounts;
pub mod path_filter;

pub use ebpf_sensor::{EbpfSensor, SensorError};
pub use event_layout::{EventContext, NetOp, PathMatch, SensorEvent};
