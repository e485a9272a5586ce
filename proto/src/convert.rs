//! `TryFrom` at the edge: wire messages in, domain values out.

use vigil_domain as domain;

use crate::types::v1 as pb;

/// A wire message that does not make a valid domain value. `field` is the
/// path of the bad field inside the message, e.g. `findings[3].severity`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct WireError {
    pub field: String,
    pub reason: String,
}

impl WireError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field path with the enclosing field, e.g. `findings[3]`.
    pub fn within(mut self, parent: impl AsRef<str>) -> Self {
        self.field = format!("{}.{}", parent.as_ref(), self.field);
        self
    }
}

pub(crate) fn enum_value<T>(field: &str, raw: i32) -> Result<T, WireError>
where
    T: TryFrom<i32>,
{
    T::try_from(raw).map_err(|_| WireError::new(field, format!("unknown value {raw}")))
}

pub fn severity_from_wire(field: &str, raw: i32) -> Result<domain::Severity, WireError> {
    Ok(match enum_value::<pb::Severity>(field, raw)? {
        pb::Severity::Unspecified => return Err(WireError::new(field, "must be set")),
        pb::Severity::Info => domain::Severity::Info,
        pb::Severity::Low => domain::Severity::Low,
        pb::Severity::Medium => domain::Severity::Medium,
        pb::Severity::High => domain::Severity::High,
        pb::Severity::Critical => domain::Severity::Critical,
    })
}

impl From<domain::Severity> for pb::Severity {
    fn from(s: domain::Severity) -> Self {
        match s {
            domain::Severity::Info => pb::Severity::Info,
            domain::Severity::Low => pb::Severity::Low,
            domain::Severity::Medium => pb::Severity::Medium,
            domain::Severity::High => pb::Severity::High,
            domain::Severity::Critical => pb::Severity::Critical,
        }
    }
}

pub fn signal_from_wire(field: &str, raw: i32) -> Result<domain::SignalKind, WireError> {
    Ok(match enum_value::<pb::SignalKind>(field, raw)? {
        pb::SignalKind::Unspecified => return Err(WireError::new(field, "must be set")),
        pb::SignalKind::ModelFile => domain::SignalKind::ModelFile,
        pb::SignalKind::AiRuntime => domain::SignalKind::AiRuntime,
        pb::SignalKind::GpuDevice => domain::SignalKind::GpuDevice,
        pb::SignalKind::AiEgress => domain::SignalKind::AiEgress,
        pb::SignalKind::AiServing => domain::SignalKind::AiServing,
        pb::SignalKind::GpuUse => domain::SignalKind::GpuUse,
        pb::SignalKind::Policy => domain::SignalKind::Policy,
        pb::SignalKind::Attestation => domain::SignalKind::Attestation,
        pb::SignalKind::Sidecar => domain::SignalKind::Sidecar,
        pb::SignalKind::ModelRisk => domain::SignalKind::ModelRisk,
    })
}

impl From<domain::SignalKind> for pb::SignalKind {
    fn from(s: domain::SignalKind) -> Self {
        match s {
            domain::SignalKind::ModelFile => pb::SignalKind::ModelFile,
            domain::SignalKind::AiRuntime => pb::SignalKind::AiRuntime,
            domain::SignalKind::GpuDevice => pb::SignalKind::GpuDevice,
            domain::SignalKind::AiEgress => pb::SignalKind::AiEgress,
            domain::SignalKind::AiServing => pb::SignalKind::AiServing,
            domain::SignalKind::GpuUse => pb::SignalKind::GpuUse,
            domain::SignalKind::Policy => pb::SignalKind::Policy,
            domain::SignalKind::Attestation => pb::SignalKind::Attestation,
            domain::SignalKind::Sidecar => pb::SignalKind::Sidecar,
            domain::SignalKind::ModelRisk => pb::SignalKind::ModelRisk,
        }
    }
}

pub fn sensor_mode_from_wire(field: &str, raw: i32) -> Result<domain::SensorMode, WireError> {
    Ok(match enum_value::<pb::SensorMode>(field, raw)? {
        pb::SensorMode::Unspecified => return Err(WireError::new(field, "must be set")),
        pb::SensorMode::Ebpf => domain::SensorMode::Ebpf,
        pb::SensorMode::ProcfsDegraded => domain::SensorMode::ProcfsDegraded,
    })
}

impl From<domain::SensorMode> for pb::SensorMode {
    fn from(m: domain::SensorMode) -> Self {
        match m {
            domain::SensorMode::Ebpf => pb::SensorMode::Ebpf,
            domain::SensorMode::ProcfsDegraded => pb::SensorMode::ProcfsDegraded,
        }
    }
}

impl From<pb::Process> for domain::ProcessInfo {
    fn from(p: pb::Process) -> Self {
        Self {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            exe: p.exe,
            argv: p.argv,
            comm: p.comm,
            cgroup_id: p.cgroup_id,
            mnt_ns: p.mnt_ns,
            exe_sha256: p.exe_sha256,
            ns_pid: p.ns_pid,
            cgroup_path: p.cgroup_path,
            // Bounded here: the control plane keeps no longer chain than
            // an agent builds, whatever one sends.
            ancestors: domain::bounded_ancestors(
                p.ancestors
                    .into_iter()
                    .take(domain::MAX_ANCESTORS)
                    .map(|a| domain::Ancestor {
                        pid: a.pid,
                        exe: a.exe,
                        comm: a.comm,
                    })
                    .collect(),
            ),
        }
    }
}

impl From<domain::ProcessInfo> for pb::Process {
    fn from(p: domain::ProcessInfo) -> Self {
        Self {
            pid: p.pid,
            ppid: p.ppid,
            uid: p.uid,
            exe: p.exe,
            argv: p.argv,
            comm: p.comm,
            cgroup_id: p.cgroup_id,
            mnt_ns: p.mnt_ns,
            exe_sha256: p.exe_sha256,
            ns_pid: p.ns_pid,
            cgroup_path: p.cgroup_path,
            ancestors: p
                .ancestors
                .into_iter()
                .map(|a| pb::Ancestor {
                    pid: a.pid,
                    exe: a.exe,
                    comm: a.comm,
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::Finding> for domain::Finding {
    type Error = WireError;

    fn try_from(f: pb::Finding) -> Result<Self, WireError> {
        if f.seq == 0 {
            return Err(WireError::new("seq", "must be at least 1"));
        }
        if f.rule_id.trim().is_empty() {
            return Err(WireError::new("rule_id", "must not be empty"));
        }
        let process = f
            .process
            .ok_or_else(|| WireError::new("process", "must be set"))?;
        if process.pid == 0 {
            return Err(WireError::new("process.pid", "must not be 0"));
        }
        Ok(Self {
            seq: f.seq,
            rule_id: f.rule_id,
            severity: severity_from_wire("severity", f.severity)?,
            signal: signal_from_wire("signal", f.signal)?,
            observed_at_unix_nanos: f.observed_at_unix_nanos,
            process: process.into(),
            file: f.file.map(file_from_wire).transpose()?,
            net: f.net.map(net_from_wire).transpose()?,
            gpu: f
                .gpu
                .map(domain::GpuObject::try_from)
                .transpose()
                .map_err(|e| e.within("gpu"))?,
            action: f.action,
            summary: f.summary,
        })
    }
}

fn file_from_wire(o: pb::FileObject) -> Result<domain::FileObject, WireError> {
    Ok(domain::FileObject {
        path: o.path,
        model: o.model.map(model_from_wire).transpose()?.map(Box::new),
    })
}

pub(crate) fn model_from_wire(m: pb::ModelIdentity) -> Result<domain::ModelIdentity, WireError> {
    Ok(domain::ModelIdentity {
        risk: match enum_value::<pb::ModelRisk>("file.model.risk", m.risk)? {
            pb::ModelRisk::Unspecified => domain::ModelRisk::Unknown,
            pb::ModelRisk::Safe => domain::ModelRisk::Safe,
            pb::ModelRisk::Suspicious => domain::ModelRisk::Suspicious,
            pb::ModelRisk::Dangerous => domain::ModelRisk::Dangerous,
        },
        format: m.format,
        format_version: m.format_version,
        architecture: m.architecture,
        name: m.name,
        size_label: m.size_label,
        quantization: m.quantization,
        parameters: m.parameters,
        tensor_count: m.tensor_count,
        sha256: m.sha256,
        structure_fingerprint: m.structure_fingerprint,
        risk_reasons: m.risk_reasons,
        dangerous_imports: m.dangerous_imports,
        error: m.error,
    })
}

impl From<domain::FileObject> for pb::FileObject {
    fn from(o: domain::FileObject) -> Self {
        Self {
            path: o.path,
            model: o.model.map(|m| (*m).into()),
        }
    }
}

impl From<domain::ModelIdentity> for pb::ModelIdentity {
    fn from(m: domain::ModelIdentity) -> Self {
        Self {
            risk: match m.risk {
                domain::ModelRisk::Unknown => pb::ModelRisk::Unspecified,
                domain::ModelRisk::Safe => pb::ModelRisk::Safe,
                domain::ModelRisk::Suspicious => pb::ModelRisk::Suspicious,
                domain::ModelRisk::Dangerous => pb::ModelRisk::Dangerous,
            }
            .into(),
            format: m.format,
            format_version: m.format_version,
            architecture: m.architecture,
            name: m.name,
            size_label: m.size_label,
            quantization: m.quantization,
            parameters: m.parameters,
            tensor_count: m.tensor_count,
            sha256: m.sha256,
            structure_fingerprint: m.structure_fingerprint,
            risk_reasons: m.risk_reasons,
            dangerous_imports: m.dangerous_imports,
            error: m.error,
        }
    }
}

fn net_from_wire(n: pb::NetObject) -> Result<domain::NetObject, WireError> {
    let direction = match enum_value::<pb::NetDirection>("net.direction", n.direction)? {
        pb::NetDirection::Unspecified => {
            return Err(WireError::new("net.direction", "must be set"))
        }
        pb::NetDirection::Connect => domain::NetDirection::Connect,
        pb::NetDirection::Listen => domain::NetDirection::Listen,
        pb::NetDirection::DnsQuery => domain::NetDirection::DnsQuery,
    };
    let port = u16::try_from(n.port)
        .map_err(|_| WireError::new("net.port", format!("{} is not a TCP port", n.port)))?;
    Ok(domain::NetObject {
        direction,
        address: n.address,
        port,
        host: n.host,
    })
}

impl From<domain::NetObject> for pb::NetObject {
    fn from(n: domain::NetObject) -> Self {
        let direction = match n.direction {
            domain::NetDirection::Connect => pb::NetDirection::Connect,
            domain::NetDirection::Listen => pb::NetDirection::Listen,
            domain::NetDirection::DnsQuery => pb::NetDirection::DnsQuery,
        };
        Self {
            direction: direction.into(),
            address: n.address,
            port: n.port.into(),
            host: n.host,
        }
    }
}

impl From<domain::Finding> for pb::Finding {
    fn from(f: domain::Finding) -> Self {
        Self {
            seq: f.seq,
            rule_id: f.rule_id,
            severity: pb::Severity::from(f.severity).into(),
            signal: pb::SignalKind::from(f.signal).into(),
            observed_at_unix_nanos: f.observed_at_unix_nanos,
            process: Some(f.process.into()),
            file: f.file.map(Into::into),
            net: f.net.map(Into::into),
            gpu: f.gpu.map(Into::into),
            action: f.action,
            summary: f.summary,
        }
    }
}

impl TryFrom<pb::Alert> for domain::Alert {
    type Error = WireError;

    fn try_from(a: pb::Alert) -> Result<Self, WireError> {
        let finding = a
            .finding
            .ok_or_else(|| WireError::new("finding", "must be set"))?;
        Ok(Self {
            index: a.index,
            agent_id: a.agent_id,
            hostname: a.hostname,
            received_at_unix_nanos: a.received_at_unix_nanos,
            finding: domain::Finding::try_from(finding).map_err(|e| e.within("finding"))?,
        })
    }
}

impl From<domain::Alert> for pb::Alert {
    fn from(a: domain::Alert) -> Self {
        Self {
            index: a.index,
            agent_id: a.agent_id,
            hostname: a.hostname,
            received_at_unix_nanos: a.received_at_unix_nanos,
            finding: Some(a.finding.into()),
        }
    }
}

impl From<pb::SensorCounters> for domain::SensorCounters {
    fn from(c: pb::SensorCounters) -> Self {
        Self {
            emitted: c.emitted,
            filtered: c.filtered,
            dropped: c.dropped,
            received: c.received,
            evicted: c.evicted,
        }
    }
}

impl From<domain::SensorCounters> for pb::SensorCounters {
    fn from(c: domain::SensorCounters) -> Self {
        Self {
            emitted: c.emitted,
            filtered: c.filtered,
            dropped: c.dropped,
            received: c.received,
            evicted: c.evicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire_finding() -> pb::Finding {
        pb::Finding {
            seq: 3,
            rule_id: "r".into(),
            severity: pb::Severity::High as i32,
            signal: pb::SignalKind::ModelFile as i32,
            observed_at_unix_nanos: 1,
            process: Some(pb::Process {
                pid: 9,
                ..Default::default()
            }),
            file: Some(pb::FileObject {
                path: "/m.onnx".into(),
                model: None,
            }),
            net: None,
            gpu: None,
            action: String::new(),
            summary: "s".into(),
        }
    }

    #[test]
    fn a_valid_finding_round_trips() {
        let d = domain::Finding::try_from(wire_finding()).unwrap();
        assert_eq!(pb::Finding::from(d), wire_finding());
    }

    #[test]
    fn ancestors_round_trip_and_a_long_chain_is_cut() {
        let mut f = wire_finding();
        let ancestor = |pid: u32| pb::Ancestor {
            pid,
            exe: format!("/usr/bin/p{pid}"),
            comm: format!("p{pid}"),
        };
        f.process.as_mut().unwrap().ancestors = vec![ancestor(8), ancestor(1)];
        let d = domain::Finding::try_from(f.clone()).unwrap();
        assert_eq!(d.process.ancestors[0].pid, 8);
        assert_eq!(d.process.ancestors[1].exe, "/usr/bin/p1");
        assert_eq!(pb::Finding::from(d), f);

        let mut chain: Vec<pb::Ancestor> = (2..1000).map(ancestor).collect();
        chain[0].exe = "/".repeat(100_000);
        chain[0].comm = "c".repeat(100);
        f.process.as_mut().unwrap().ancestors = chain;
        let d = domain::Finding::try_from(f).unwrap();
        assert_eq!(d.process.ancestors.len(), domain::MAX_ANCESTORS);
        assert_eq!(d.process.ancestors[0].exe.len(), domain::MAX_ANCESTOR_EXE);
        assert_eq!(d.process.ancestors[0].comm.len(), domain::MAX_ANCESTOR_COMM);
        assert_eq!(d.process.ancestors[7].pid, 9);
    }

    #[test]
    fn unknown_enum_values_name_the_field() {
        let mut f = wire_finding();
        f.severity = 99;
        let e = domain::Finding::try_from(f).unwrap_err();
        assert_eq!(e.to_string(), "severity: unknown value 99");
        let mut f = wire_finding();
        f.signal = 0;
        assert_eq!(
            domain::Finding::try_from(f).unwrap_err().to_string(),
            "signal: must be set"
        );
    }

    #[test]
    fn network_objects_round_trip_and_bad_ports_are_refused() {
        let mut f = wire_finding();
        f.net = Some(pb::NetObject {
            direction: pb::NetDirection::Listen as i32,
            address: "0.0.0.0".into(),
            port: 11434,
            host: String::new(),
        });
        let d = domain::Finding::try_from(f.clone()).unwrap();
        assert_eq!(d.net.as_ref().unwrap().port, 11434);
        assert_eq!(pb::Finding::from(d), f);
        f.net.as_mut().unwrap().port = 70_000;
        assert_eq!(
            domain::Finding::try_from(f).unwrap_err().to_string(),
            "net.port: 70000 is not a TCP port"
        );
    }

    #[test]
    fn missing_parts_name_the_field_with_its_parent() {
        let mut f = wire_finding();
        f.process = None;
        let alert = pb::Alert {
            finding: Some(f),
            ..Default::default()
        };
        assert_eq!(
            domain::Alert::try_from(alert).unwrap_err().to_string(),
            "finding.process: must be set"
        );
        let mut f = wire_finding();
        f.seq = 0;
        assert_eq!(
            domain::Finding::try_from(f).unwrap_err().field,
            "seq".to_string()
        );
    }
}
