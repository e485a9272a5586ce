//! Approved workloads: wire ↔ domain.

use vigil_domain as domain;

use crate::types::v1 as pb;
use crate::WireError;

impl TryFrom<pb::Workload> for domain::WorkloadApproval {
    type Error = WireError;

    fn try_from(w: pb::Workload) -> Result<Self, WireError> {
        let digest = w.exe_sha256.trim().to_ascii_lowercase();
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(WireError::new(
                "exe_sha256",
                format!("{:?} is not a hex sha256", w.exe_sha256),
            ));
        }
        if w.path.as_deref().is_some_and(|p| !p.starts_with('/')) {
            return Err(WireError::new("path", "must be absolute"));
        }
        if w.cgroup_prefix
            .as_deref()
            .is_some_and(|p| !p.starts_with('/'))
        {
            return Err(WireError::new("cgroup_prefix", "must start with /"));
        }
        Ok(Self {
            id: w.id,
            exe_sha256: digest,
            path: w.path,
            uid: w.uid,
            cgroup_prefix: w.cgroup_prefix,
            approved_by: w.approved_by,
            note: w.note,
            approved_at_unix_nanos: w.approved_at_unix_nanos,
            models: w.models.iter().map(|m| m.to_ascii_lowercase()).collect(),
            gpus: w.gpus,
            hosts: w.hosts,
            signer: w.signer,
            signature: w.signature,
        })
    }
}

impl From<domain::WorkloadApproval> for pb::Workload {
    fn from(w: domain::WorkloadApproval) -> Self {
        Self {
            id: w.id,
            exe_sha256: w.exe_sha256,
            path: w.path,
            uid: w.uid,
            cgroup_prefix: w.cgroup_prefix,
            approved_by: w.approved_by,
            note: w.note,
            approved_at_unix_nanos: w.approved_at_unix_nanos,
            models: w.models,
            gpus: w.gpus,
            hosts: w.hosts,
            signer: w.signer,
            signature: w.signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_paths_are_checked_at_the_edge() {
        let w = pb::Workload {
            exe_sha256: "AB".repeat(32),
            path: Some("/usr/bin/x".into()),
            ..Default::default()
        };
        let d = domain::WorkloadApproval::try_from(w.clone()).unwrap();
        assert_eq!(d.exe_sha256, "ab".repeat(32));
        assert_eq!(
            domain::WorkloadApproval::try_from(pb::Workload {
                exe_sha256: "xyz".into(),
                ..w.clone()
            })
            .unwrap_err()
            .to_string(),
            "exe_sha256: \"xyz\" is not a hex sha256"
        );
        assert_eq!(
            domain::WorkloadApproval::try_from(pb::Workload {
                path: Some("rel".into()),
                ..w
            })
            .unwrap_err()
            .to_string(),
            "path: must be absolute"
        );
    }
}
