//! GPU inventory and GPU-use evidence: wire ↔ domain.

use vigil_domain as domain;

use crate::convert::enum_value;
use crate::types::v1 as pb;
use crate::WireError;

fn context_from_wire(raw: i32) -> Result<domain::GpuContext, WireError> {
    Ok(match enum_value::<pb::GpuContext>("context", raw)? {
        pb::GpuContext::Unspecified => return Err(WireError::new("context", "must be set")),
        pb::GpuContext::Compute => domain::GpuContext::Compute,
        pb::GpuContext::Graphics => domain::GpuContext::Graphics,
    })
}

impl TryFrom<pb::GpuObject> for domain::GpuObject {
    type Error = WireError;

    fn try_from(g: pb::GpuObject) -> Result<Self, WireError> {
        if g.uuid.trim().is_empty() {
            return Err(WireError::new("uuid", "must not be empty"));
        }
        Ok(Self {
            uuid: g.uuid,
            name: g.name,
            index: g.index,
            used_memory_bytes: g.used_memory_bytes,
            sm_util_percent: g.sm_util_percent,
            context: context_from_wire(g.context)?,
        })
    }
}

impl From<domain::GpuObject> for pb::GpuObject {
    fn from(g: domain::GpuObject) -> Self {
        let context = match g.context {
            domain::GpuContext::Compute => pb::GpuContext::Compute,
            domain::GpuContext::Graphics => pb::GpuContext::Graphics,
        };
        Self {
            uuid: g.uuid,
            name: g.name,
            index: g.index,
            used_memory_bytes: g.used_memory_bytes,
            sm_util_percent: g.sm_util_percent,
            context: context.into(),
        }
    }
}

impl From<pb::GpuDevice> for domain::GpuDevice {
    fn from(d: pb::GpuDevice) -> Self {
        Self {
            index: d.index,
            name: d.name,
            uuid: d.uuid,
            serial: d.serial,
            pci_bus_id: d.pci_bus_id,
            memory_total_bytes: d.memory_total_bytes,
            memory_used_bytes: d.memory_used_bytes,
            mig_enabled: d.mig_enabled,
            mig_devices: d
                .mig_devices
                .into_iter()
                .map(|m| domain::MigDevice {
                    index: m.index,
                    uuid: m.uuid,
                    memory_total_bytes: m.memory_total_bytes,
                })
                .collect(),
        }
    }
}

impl From<domain::GpuDevice> for pb::GpuDevice {
    fn from(d: domain::GpuDevice) -> Self {
        Self {
            index: d.index,
            name: d.name,
            uuid: d.uuid,
            serial: d.serial,
            pci_bus_id: d.pci_bus_id,
            memory_total_bytes: d.memory_total_bytes,
            memory_used_bytes: d.memory_used_bytes,
            mig_enabled: d.mig_enabled,
            mig_devices: d
                .mig_devices
                .into_iter()
                .map(|m| pb::MigDevice {
                    index: m.index,
                    uuid: m.uuid,
                    memory_total_bytes: m.memory_total_bytes,
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::GpuInventory> for domain::GpuInventory {
    type Error = WireError;

    fn try_from(i: pb::GpuInventory) -> Result<Self, WireError> {
        let processes = i
            .processes
            .into_iter()
            .enumerate()
            .map(|(n, p)| {
                let at = format!("processes[{n}]");
                let process = p
                    .process
                    .ok_or_else(|| WireError::new("process", "must be set").within(&at))?;
                let gpu = p
                    .gpu
                    .ok_or_else(|| WireError::new("gpu", "must be set").within(&at))?;
                Ok(domain::GpuProcess {
                    process: process.into(),
                    gpu: domain::GpuObject::try_from(gpu)
                        .map_err(|e| e.within("gpu").within(&at))?,
                    approved: p.approved,
                })
            })
            .collect::<Result<_, WireError>>()?;
        Ok(Self {
            status: i.status,
            driver_version: i.driver_version,
            cuda_driver_version: i.cuda_driver_version,
            gpus: i.gpus.into_iter().map(Into::into).collect(),
            processes,
            observed_at_unix_nanos: i.observed_at_unix_nanos,
        })
    }
}

impl From<domain::GpuInventory> for pb::GpuInventory {
    fn from(i: domain::GpuInventory) -> Self {
        Self {
            status: i.status,
            driver_version: i.driver_version,
            cuda_driver_version: i.cuda_driver_version,
            gpus: i.gpus.into_iter().map(Into::into).collect(),
            processes: i
                .processes
                .into_iter()
                .map(|p| pb::GpuProcess {
                    process: Some(p.process.into()),
                    gpu: Some(p.gpu.into()),
                    approved: p.approved,
                })
                .collect(),
            observed_at_unix_nanos: i.observed_at_unix_nanos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> domain::GpuInventory {
        domain::GpuInventory {
            status: vec!["GPU 1: per-process utilisation not supported".into()],
            driver_version: "550.54.15".into(),
            cuda_driver_version: "12.4".into(),
            gpus: vec![domain::GpuDevice {
                index: 0,
                name: "NVIDIA H100".into(),
                uuid: "GPU-a".into(),
                mig_enabled: true,
                mig_devices: vec![domain::MigDevice {
                    index: 0,
                    uuid: "MIG-a0".into(),
                    memory_total_bytes: 10 << 30,
                }],
                ..Default::default()
            }],
            processes: vec![domain::GpuProcess {
                process: domain::ProcessInfo {
                    pid: 4,
                    ns_pid: 1,
                    ..Default::default()
                },
                gpu: domain::GpuObject {
                    uuid: "GPU-a".into(),
                    used_memory_bytes: Some(7),
                    ..Default::default()
                },
                approved: true,
            }],
            observed_at_unix_nanos: 9,
        }
    }

    #[test]
    fn inventories_round_trip() {
        let wire = pb::GpuInventory::from(inventory());
        assert_eq!(domain::GpuInventory::try_from(wire).unwrap(), inventory());
    }

    #[test]
    fn bad_gpu_use_names_the_field() {
        let mut wire = pb::GpuInventory::from(inventory());
        wire.processes[0].gpu.as_mut().unwrap().context = 42;
        assert_eq!(
            domain::GpuInventory::try_from(wire)
                .unwrap_err()
                .to_string(),
            "processes[0].gpu.context: unknown value 42"
        );
        let mut wire = pb::GpuInventory::from(inventory());
        wire.processes[0].gpu.as_mut().unwrap().uuid.clear();
        assert_eq!(
            domain::GpuInventory::try_from(wire)
                .unwrap_err()
                .to_string(),
            "processes[0].gpu.uuid: must not be empty"
        );
    }
}
