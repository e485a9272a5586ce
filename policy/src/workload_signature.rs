//! Approved-workload records signed by an admin key, like bundles: the
//! control plane and the agents accept only records a trusted key signed.

use ed25519_dalek::{Signature, Signer, Verifier};
use vigil_domain::WorkloadApproval;

use crate::{BundleError, SigningKey, TrustedKeys};

/// What is signed: every field that grants something (not the id, time or
/// the approver's name, which the control plane fills in).
pub fn workload_canonical_bytes(w: &WorkloadApproval) -> Vec<u8> {
    let mut models: Vec<String> = w.models.iter().map(|m| m.to_ascii_lowercase()).collect();
    models.sort();
    let mut gpus = w.gpus.clone();
    gpus.sort();
    let mut hosts = w.hosts.clone();
    hosts.sort();
    // A host scope is signed when there is one (records without one keep
    // the form, and the signatures, they had before scopes existed).
    if !hosts.is_empty() {
        return serde_json::to_vec(&serde_json::json!({
            "format": "vigil.workload.v1",
            "exe_sha256": w.exe_sha256.to_ascii_lowercase(),
            "path": w.path,
            "uid": w.uid,
            "cgroup_prefix": w.cgroup_prefix,
            "models": models,
            "gpus": gpus,
            "hosts": hosts,
            "note": w.note,
        }))
        .unwrap_or_default();
    }
    serde_json::to_vec(&serde_json::json!({
        "format": "vigil.workload.v1",
        "exe_sha256": w.exe_sha256.to_ascii_lowercase(),
        "path": w.path,
        "uid": w.uid,
        "cgroup_prefix": w.cgroup_prefix,
        "models": models,
        "gpus": gpus,
        "note": w.note,
    }))
    .unwrap_or_default()
}

impl SigningKey {
    /// Signs a workload record in place (signer and signature).
    pub fn sign_workload(&self, w: &mut WorkloadApproval) {
        w.signer = self.public_hex();
        w.signature = hex::encode(self.inner().sign(&workload_canonical_bytes(w)).to_bytes());
    }
}

impl TrustedKeys {
    /// Checks a workload record's signer and signature.
    pub fn verify_workload(&self, w: &WorkloadApproval) -> Result<(), BundleError> {
        let signer = self
            .find(&w.signer)
            .ok_or_else(|| BundleError::UnknownSigner(w.signer.clone()))?;
        let sig: [u8; 64] = hex::decode(&w.signature)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(BundleError::BadSignature)?;
        signer
            .verify(&workload_canonical_bytes(w), &Signature::from_bytes(&sig))
            .map_err(|_| BundleError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_records_verify_and_widened_ones_do_not() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let mut w = WorkloadApproval {
            id: "w1".into(),
            exe_sha256: "ab".repeat(32),
            path: Some("/opt/x".into()),
            uid: None,
            cgroup_prefix: None,
            models: vec!["cd".repeat(32)],
            gpus: vec![],
            hosts: vec![],
            approved_by: "alice".into(),
            note: "n".into(),
            approved_at_unix_nanos: 1,
            signer: String::new(),
            signature: String::new(),
        };
        key.sign_workload(&mut w);
        trusted.verify_workload(&w).unwrap();
        // The control plane's own fields are not signed.
        let mut placed = w.clone();
        placed.id = "w-2".into();
        placed.approved_at_unix_nanos = 9;
        trusted.verify_workload(&placed).unwrap();
        let mut widened = w.clone();
        widened.path = None;
        assert_eq!(
            trusted.verify_workload(&widened),
            Err(BundleError::BadSignature)
        );
        let mut other = w.clone();
        SigningKey::generate().sign_workload(&mut other);
        assert!(matches!(
            trusted.verify_workload(&other),
            Err(BundleError::UnknownSigner(_))
        ));
    }
}
