//! GPUs and their use by processes, as NVML reports them and the agent
//! attributes them.

use serde::{Deserialize, Serialize};

use crate::ProcessInfo;

/// What a process holds on a GPU.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum GpuContext {
    #[default]
    Compute,
    Graphics,
}

impl GpuContext {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuContext::Compute => "compute",
            GpuContext::Graphics => "graphics",
        }
    }
}

/// One process's use of one GPU: the evidence of a `gpu_use` finding.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuObject {
    pub uuid: String,
    pub name: String,
    pub index: u32,
    /// Device memory the process holds; None when NVML does not say.
    pub used_memory_bytes: Option<u64>,
    /// Streaming-multiprocessor use in the last sample, percent.
    pub sm_util_percent: Option<u32>,
    pub context: GpuContext,
}

/// A MIG slice of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MigDevice {
    pub index: u32,
    pub uuid: String,
    pub memory_total_bytes: u64,
}

/// One physical GPU.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuDevice {
    pub index: u32,
    pub name: String,
    pub uuid: String,
    pub serial: String,
    pub pci_bus_id: String,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: u64,
    pub mig_enabled: bool,
    pub mig_devices: Vec<MigDevice>,
}

/// A process using a GPU, attributed to the host's process table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuProcess {
    pub process: ProcessInfo,
    pub gpu: GpuObject,
    /// Whether an approved workload runs it.
    pub approved: bool,
}

/// A host's GPUs, who uses them, and what went wrong asking.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuInventory {
    /// Status lines, e.g. "no NVIDIA GPU: ..." or a per-device NVML error.
    pub status: Vec<String>,
    pub driver_version: String,
    /// CUDA driver API version, as "12.4".
    pub cuda_driver_version: String,
    pub gpus: Vec<GpuDevice>,
    pub processes: Vec<GpuProcess>,
    pub observed_at_unix_nanos: i64,
}

impl GpuInventory {
    /// The inventory of a host where NVML gave nothing, with the reason.
    pub fn unavailable(status: impl Into<String>, observed_at_unix_nanos: i64) -> Self {
        Self {
            status: vec![status.into()],
            observed_at_unix_nanos,
            ..Self::default()
        }
    }

    /// Whether `other` says something new: GPUs, statuses, or which
    /// processes use which GPU (not memory figures, which move every poll).
    pub fn differs_materially(&self, other: &GpuInventory) -> bool {
        let users = |i: &GpuInventory| {
            let mut v: Vec<(u32, String, GpuContext, bool)> = i
                .processes
                .iter()
                .map(|p| (p.process.pid, p.gpu.uuid.clone(), p.gpu.context, p.approved))
                .collect();
            v.sort();
            v
        };
        self.status != other.status
            || self.driver_version != other.driver_version
            || self.gpus.len() != other.gpus.len()
            || self
                .gpus
                .iter()
                .zip(&other.gpus)
                .any(|(a, b)| a.uuid != b.uuid || a.mig_devices != b.mig_devices)
            || users(self) != users(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_moves_are_not_material_new_users_are() {
        let mut a = GpuInventory::default();
        a.gpus.push(GpuDevice {
            uuid: "GPU-1".into(),
            ..Default::default()
        });
        a.processes.push(GpuProcess {
            process: ProcessInfo {
                pid: 7,
                ..Default::default()
            },
            gpu: GpuObject {
                uuid: "GPU-1".into(),
                used_memory_bytes: Some(1),
                ..Default::default()
            },
            approved: false,
        });
        let mut b = a.clone();
        b.processes[0].gpu.used_memory_bytes = Some(2 << 30);
        b.gpus[0].memory_used_bytes = 5;
        assert!(!a.differs_materially(&b));
        b.processes[0].process.pid = 8;
        assert!(a.differs_materially(&b));
        let mut c = a.clone();
        c.status
            .push("GPU 0: per-process utilisation not supported".into());
        assert!(a.differs_materially(&c));
    }
}
