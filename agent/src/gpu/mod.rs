//! GPU visibility through NVML (nvml-wrapper): the inventory of a host's
//! NVIDIA GPUs and which processes use them, polled off the event loop.

mod gpu_poller;
mod nvml_reader;

pub use gpu_poller::{spawn_gpu_poller, GpuUpdate};
pub use nvml_reader::{GpuReading, GpuUse, NvmlReader};
