//! One NVML session: opens the library from an explicit path and reads the
//! GPUs and their users. Every NVML error becomes a status line; nothing
//! here panics or gives up on the other GPUs because one failed.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::struct_wrappers::device::ProcessInfo as NvmlProcess;
use nvml_wrapper::{Device, Nvml};
use vigil_domain::{GpuContext, GpuDevice, GpuObject, MigDevice};

/// A process NVML says uses a GPU (host pid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuUse {
    pub pid: u32,
    pub gpu: GpuObject,
}

/// One poll: the GPUs, their users, and what went wrong.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuReading {
    pub driver_version: String,
    pub cuda_driver_version: String,
    pub gpus: Vec<GpuDevice>,
    pub uses: Vec<GpuUse>,
    pub status: Vec<String>,
}

/// Times a process list is asked for again when it grew between NVML's
/// count and its copy (INSUFFICIENT_SIZE).
const PROCESS_LIST_ATTEMPTS: usize = 3;

pub struct NvmlReader {
    nvml: Nvml,
    driver_version: String,
    cuda_driver_version: String,
    /// Per GPU index: the last utilisation sample's timestamp (µs), so
    /// each poll asks only for newer samples.
    last_sample_us: HashMap<u32, u64>,
}

impl NvmlReader {
    /// Loads NVML from `library` and initialises it. The error is the status
    /// line to show: this host has no usable NVIDIA GPU.
    pub fn open(library: &Path) -> Result<NvmlReader, String> {
        let nvml = Nvml::builder()
            .lib_path(OsStr::new(library))
            .init()
            .map_err(|e| match e {
                NvmlError::LibloadingError(e) => format!(
                    "no NVIDIA GPU: NVML library {} could not be loaded ({e})",
                    library.display()
                ),
                NvmlError::DriverNotLoaded => {
                    "no NVIDIA GPU: NVML says the NVIDIA driver is not loaded".to_string()
                }
                NvmlError::NoPermission => {
                    "no NVIDIA GPU: NVML has no permission to talk to the driver".to_string()
                }
                other => format!("no NVIDIA GPU: NVML initialisation failed: {other}"),
            })?;
        match nvml.device_count() {
            Ok(0) => return Err("no NVIDIA GPU: NVML sees 0 devices".to_string()),
            Ok(_) => {}
            Err(e) => return Err(format!("no NVIDIA GPU: NVML cannot count devices: {e}")),
        }
        let driver_version = nvml.sys_driver_version().unwrap_or_default();
        let cuda_driver_version = nvml
            .sys_cuda_driver_version()
            .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
            .unwrap_or_default();
        Ok(NvmlReader {
            nvml,
            driver_version,
            cuda_driver_version,
            last_sample_us: HashMap::new(),
        })
    }

    /// The GPUs now, and who uses them.
    pub fn read(&mut self) -> GpuReading {
        let mut r = GpuReading {
            driver_version: self.driver_version.clone(),
            cuda_driver_version: self.cuda_driver_version.clone(),
            ..GpuReading::default()
        };
        let count = match self.nvml.device_count() {
            Ok(n) => n,
            Err(e) => {
                r.status.push(format!("NVML cannot count devices: {e}"));
                return r;
            }
        };
        for index in 0..count {
            let device = match self.nvml.device_by_index(index) {
                Ok(d) => d,
                Err(e) => {
                    r.status.push(gpu_error(index, "", "handle", &e));
                    continue;
                }
            };
            let info = match describe(index, &device) {
                Ok(info) => info,
                Err(e) => {
                    r.status.push(gpu_error(index, "", "identity", &e));
                    continue;
                }
            };
            let since = self.last_sample_us.get(&index).copied();
            let (sm, newest) = match device.process_utilization_stats(since) {
                Ok(samples) => {
                    let newest = samples.iter().map(|s| s.timestamp).max();
                    let sm: HashMap<u32, u32> =
                        samples.iter().map(|s| (s.pid, s.sm_util)).collect();
                    (sm, newest)
                }
                // No sample since the last poll: nothing ran.
                Err(NvmlError::NotFound) => (HashMap::new(), None),
                Err(e) => {
                    r.status
                        .push(gpu_error(index, &info.uuid, "per-process utilisation", &e));
                    (HashMap::new(), None)
                }
            };
            if let Some(t) = newest {
                self.last_sample_us.insert(index, t);
            }
            for context in [GpuContext::Compute, GpuContext::Graphics] {
                match process_list(&device, context) {
                    Ok(list) => r.uses.extend(list.into_iter().map(|p| GpuUse {
                        pid: p.pid,
                        gpu: GpuObject {
                            uuid: info.uuid.clone(),
                            name: info.name.clone(),
                            index,
                            used_memory_bytes: match p.used_gpu_memory {
                                UsedGpuMemory::Used(b) => Some(b),
                                UsedGpuMemory::Unavailable => None,
                            },
                            sm_util_percent: sm.get(&p.pid).copied(),
                            context,
                        },
                    })),
                    Err(e) => r.status.push(gpu_error(
                        index,
                        &info.uuid,
                        &format!("{} processes", context.as_str()),
                        &e,
                    )),
                }
            }
            r.gpus.push(info);
        }
        r
    }
}

/// A GPU's identity, memory and MIG layout.
fn describe(index: u32, d: &Device<'_>) -> Result<GpuDevice, NvmlError> {
    let uuid = d.uuid()?;
    let memory = d.memory_info().ok();
    let mig_enabled = d.mig_mode().map(|m| m.current == 1).unwrap_or(false);
    let mut mig_devices = Vec::new();
    if mig_enabled {
        let n = d.mig_device_count().unwrap_or(0);
        for i in 0..n {
            // Slots that hold no MIG device answer NOT_FOUND.
            let Ok(m) = d.mig_device_by_index(i) else {
                continue;
            };
            mig_devices.push(MigDevice {
                index: i,
                uuid: m.uuid().unwrap_or_default(),
                memory_total_bytes: m.memory_info().map(|m| m.total).unwrap_or(0),
            });
        }
    }
    Ok(GpuDevice {
        index,
        name: d.name().unwrap_or_default(),
        uuid,
        serial: d.serial().unwrap_or_default(),
        pci_bus_id: d.pci_info().map(|p| p.bus_id).unwrap_or_default(),
        memory_total_bytes: memory.as_ref().map(|m| m.total).unwrap_or(0),
        memory_used_bytes: memory.as_ref().map(|m| m.used).unwrap_or(0),
        mig_enabled,
        mig_devices,
    })
}

/// The compute or graphics processes, asked again when the list grew
/// between NVML's count and its copy.
fn process_list(d: &Device<'_>, context: GpuContext) -> Result<Vec<NvmlProcess>, NvmlError> {
    let mut attempt = 0;
    loop {
        let r = match context {
            GpuContext::Compute => d.running_compute_processes(),
            GpuContext::Graphics => d.running_graphics_processes(),
        };
        match r {
            Err(NvmlError::InsufficientSize(_)) if attempt + 1 < PROCESS_LIST_ATTEMPTS => {
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A status line for one GPU's failed query.
fn gpu_error(index: u32, uuid: &str, what: &str, e: &NvmlError) -> String {
    let gpu = if uuid.is_empty() {
        format!("GPU {index}")
    } else {
        format!("GPU {index} ({uuid})")
    };
    match e {
        NvmlError::NotSupported => format!("{gpu}: {what} not supported by this GPU or driver"),
        NvmlError::GpuLost => format!("{gpu}: lost (fell off the bus or stopped answering); {what} unknown"),
        NvmlError::InsufficientSize(_) => format!(
            "{gpu}: {what}: the list kept growing while NVML copied it (insufficient size after {PROCESS_LIST_ATTEMPTS} attempts)"
        ),
        other => format!("{gpu}: {what}: {other}"),
    }
}

#[cfg(test)]
#[path = "nvml_reader_tests.rs"]
mod tests;
