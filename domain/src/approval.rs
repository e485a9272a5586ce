use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ProcessInfo;

/// An approved workload, as an operator recorded it: the executable by
/// digest, optionally narrowed to a path, a user and a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadApproval {
    /// Assigned by the control plane.
    pub id: String,
    /// Hex sha256 of the executable (lowercase).
    pub exe_sha256: String,
    /// Only when the process runs this path.
    #[serde(default)]
    pub path: Option<String>,
    /// Only for this uid.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Only inside this cgroup v2 path or below it.
    #[serde(default)]
    pub cgroup_prefix: Option<String>,
    /// The model files (hex sha256) it may load; empty: any.
    #[serde(default)]
    pub models: Vec<String>,
    /// The GPUs (UUIDs) it may use; empty: any.
    #[serde(default)]
    pub gpus: Vec<String>,
    /// The hosts (agent ids or hostnames) it is approved on; empty: the
    /// whole fleet. Either way only hosts whose attestation has not failed
    /// receive it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Who approved it, and why.
    pub approved_by: String,
    pub note: String,
    pub approved_at_unix_nanos: i64,
    /// Hex ed25519 public key of the admin who signed the record, and the
    /// signature over its canonical form (empty when unsigned).
    #[serde(default)]
    pub signer: String,
    #[serde(default)]
    pub signature: String,
}

/// What an approval is checked against besides the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApprovalScope<'a> {
    /// The GPU a gpu_use finding is about.
    pub gpu_uuid: Option<&'a str>,
    /// A model_file finding's file digest, when known.
    pub model_sha256: Option<&'a str>,
    /// Whether the evidence is a model file (then `models` applies).
    pub is_model: bool,
}

impl WorkloadApproval {
    /// Whether the approval covers the host `agent_id` named `hostname`.
    pub fn covers_host(&self, agent_id: &str, hostname: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == agent_id || h == hostname)
    }

    /// Whether this record approves `process` for this evidence: models
    /// and GPUs, when listed, must be among them (a model whose digest is
    /// not known is not among them).
    pub fn approves_in(&self, process: &ProcessInfo, scope: ApprovalScope<'_>) -> bool {
        self.matches(process)
            && (self.gpus.is_empty()
                || scope
                    .gpu_uuid
                    .is_none_or(|g| self.gpus.iter().any(|x| x == g)))
            && (self.models.is_empty()
                || !scope.is_model
                || scope
                    .model_sha256
                    .is_some_and(|m| self.models.iter().any(|x| x.eq_ignore_ascii_case(m))))
    }

    /// Whether `process` (its digest known) is this workload.
    pub fn matches(&self, process: &ProcessInfo) -> bool {
        !process.exe_sha256.is_empty()
            && process.exe_sha256.eq_ignore_ascii_case(&self.exe_sha256)
            && self.path.as_ref().is_none_or(|p| *p == process.exe)
            && self.uid.is_none_or(|u| u == process.uid)
            && self.cgroup_prefix.as_ref().is_none_or(|c| {
                process.cgroup_path == *c
                    || process
                        .cgroup_path
                        .strip_prefix(c.trim_end_matches('/'))
                        .is_some_and(|rest| rest.starts_with('/'))
            })
    }
}

/// The workloads allowed to run AI on a host: digests given to the agent
/// at start, the records the control plane sends, and the agent's own
/// (its inference sidecars), which the control plane's updates leave be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovedWorkloads {
    exe_sha256: BTreeSet<String>,
    records: BTreeMap<String, WorkloadApproval>,
    local: BTreeMap<String, WorkloadApproval>,
}

impl ApprovedWorkloads {
    pub fn new<I, S>(exe_sha256: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            exe_sha256: exe_sha256
                .into_iter()
                .map(|s| s.into().to_ascii_lowercase())
                .collect(),
            records: BTreeMap::new(),
            local: BTreeMap::new(),
        }
    }

    /// Replaces the records from the control plane (the start-up digests
    /// and the local records stay).
    pub fn set_records(&mut self, records: impl IntoIterator<Item = WorkloadApproval>) {
        self.records = records.into_iter().map(|r| (r.id.clone(), r)).collect();
    }

    /// Replaces the agent's own records (what it runs itself, such as its
    /// inference sidecars): matched like the control plane's.
    pub fn set_local_records(&mut self, records: impl IntoIterator<Item = WorkloadApproval>) {
        self.local = records.into_iter().map(|r| (r.id.clone(), r)).collect();
    }

    /// Every record, the control plane's then the local ones.
    fn all_records(&self) -> impl Iterator<Item = &WorkloadApproval> {
        self.records.values().chain(self.local.values())
    }

    pub fn is_empty(&self) -> bool {
        self.exe_sha256.is_empty() && self.records.is_empty() && self.local.is_empty()
    }

    /// Whether some record narrows by cgroup (then a process's cgroup
    /// path must be known to match it).
    pub fn narrows_by_cgroup(&self) -> bool {
        self.all_records().any(|r| r.cgroup_prefix.is_some())
    }

    /// Whether `process` is an approved workload. An unknown digest (empty)
    /// is never approved.
    pub fn approves(&self, process: &ProcessInfo) -> bool {
        self.approves_in(process, ApprovalScope::default())
    }

    /// Whether approving `process` for a model file depends on the file's
    /// digest: no approval covers any model, and one lists models.
    pub fn needs_model_digest(&self, process: &ProcessInfo) -> bool {
        let d = &process.exe_sha256;
        !d.is_empty()
            && !self.exe_sha256.contains(&d.to_ascii_lowercase())
            && !self
                .all_records()
                .any(|r| r.models.is_empty() && r.matches(process))
            && self
                .all_records()
                .any(|r| !r.models.is_empty() && r.matches(process))
    }

    /// Whether `process` is approved for this evidence (model, GPU).
    pub fn approves_in(&self, process: &ProcessInfo, scope: ApprovalScope<'_>) -> bool {
        let d = &process.exe_sha256;
        !d.is_empty()
            && (self.exe_sha256.contains(&d.to_ascii_lowercase())
                || self.all_records().any(|r| r.approves_in(process, scope)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_records_stay_when_the_control_planes_are_replaced() {
        let sidecar = WorkloadApproval {
            id: "local:vigil-sidecar".into(),
            exe_sha256: "cd".into(),
            path: Some("/usr/bin/vigil-sidecar".into()),
            cgroup_prefix: Some("/vigil/sidecars".into()),
            ..Default::default()
        };
        let mut a = ApprovedWorkloads::default();
        a.set_local_records([sidecar]);
        let p = ProcessInfo {
            exe: "/usr/bin/vigil-sidecar".into(),
            exe_sha256: "cd".into(),
            cgroup_path: "/vigil/sidecars/resnet".into(),
            ..Default::default()
        };
        assert!(a.approves(&p));
        assert!(!a.is_empty());
        a.set_records([]);
        assert!(a.approves(&p));
        // The same binary outside the sidecars' cgroups, or copied
        // elsewhere, is not the agent's sidecar.
        assert!(!a.approves(&ProcessInfo {
            cgroup_path: "/user.slice/user-1000.slice".into(),
            ..p.clone()
        }));
        assert!(!a.approves(&ProcessInfo {
            cgroup_path: "/vigil/sidecars-evil/x".into(),
            ..p.clone()
        }));
        assert!(!a.approves(&ProcessInfo {
            exe: "/tmp/vigil-sidecar".into(),
            ..p.clone()
        }));
        assert!(!a.approves(&ProcessInfo {
            exe_sha256: "ef".into(),
            ..p
        }));
    }

    #[test]
    fn records_narrow_by_path_user_and_cgroup() {
        let record = WorkloadApproval {
            id: "w1".into(),
            exe_sha256: "ab".into(),
            path: Some("/opt/serve/bin/server".into()),
            uid: Some(1000),
            cgroup_prefix: Some("/system.slice/serve.service".into()),
            models: vec![],
            gpus: vec!["GPU-1".into()],
            hosts: vec![],
            approved_by: "alice".into(),
            note: String::new(),
            approved_at_unix_nanos: 0,
            signer: String::new(),
            signature: String::new(),
        };
        let mut a = ApprovedWorkloads::default();
        a.set_records([record]);
        let p = ProcessInfo {
            exe: "/opt/serve/bin/server".into(),
            uid: 1000,
            exe_sha256: "AB".into(),
            cgroup_path: "/system.slice/serve.service".into(),
            ..Default::default()
        };
        assert!(a.approves(&p));
        assert!(a.approves(&ProcessInfo {
            cgroup_path: "/system.slice/serve.service/worker".into(),
            ..p.clone()
        }));
        assert!(!a.approves(&ProcessInfo {
            cgroup_path: "/system.slice/serve.service2".into(),
            ..p.clone()
        }));
        assert!(!a.approves(&ProcessInfo {
            uid: 0,
            ..p.clone()
        }));
        assert!(!a.approves(&ProcessInfo {
            exe: "/tmp/server".into(),
            ..p.clone()
        }));
        assert!(!a.approves(&ProcessInfo {
            exe_sha256: String::new(),
            ..p.clone()
        }));
        let on = |gpu| ApprovalScope {
            gpu_uuid: Some(gpu),
            ..Default::default()
        };
        assert!(a.approves_in(&p, on("GPU-1")));
        assert!(!a.approves_in(&p, on("GPU-2")));
        assert!(ApprovedWorkloads::new(["AB"]).approves(&ProcessInfo {
            exe_sha256: "ab".into(),
            ..Default::default()
        }));
    }
}
