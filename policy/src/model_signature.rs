//! Model records signed by an admin key, like bundles and workload
//! approvals: the control plane registers, and agents fetch and serve,
//! only records a trusted key signed.

use ed25519_dalek::{Signature, Signer, Verifier};
use serde::Serialize;
use vigil_domain::ModelRecord;

use crate::{BundleError, SigningKey, TrustedKeys};

/// The `format` of a model record's canonical form.
pub const MODEL_SIGNATURE_FORMAT: &str = "vigil.model.v1";

/// The signed form. A struct, not a map: its fields serialise in this
/// order whatever features serde_json was built with, so every binary
/// makes the same bytes.
#[derive(Serialize)]
struct CanonicalModel<'a> {
    format: &'static str,
    name: &'a str,
    version: u64,
    sha256: String,
    size: u64,
    model_format: &'a str,
    hosts: Vec<&'a str>,
    memory_max_bytes: u64,
    cpu_millicores: u32,
    listen: &'a str,
}

/// What is signed: every field that grants something (name, version, the
/// file's digest and size, its format, the hosts, the sidecar's limits and
/// address), not the signer and signature themselves, nor what the control
/// plane fills in (state, who registered it, when, why it changed).
pub fn model_canonical_bytes(r: &ModelRecord) -> Vec<u8> {
    let mut hosts: Vec<&str> = r.hosts.iter().map(String::as_str).collect();
    hosts.sort_unstable();
    serde_json::to_vec(&CanonicalModel {
        format: MODEL_SIGNATURE_FORMAT,
        name: &r.name,
        version: r.version,
        sha256: r.sha256.to_ascii_lowercase(),
        size: r.size,
        model_format: &r.format,
        hosts,
        memory_max_bytes: r.memory_max_bytes,
        cpu_millicores: r.cpu_millicores,
        listen: &r.listen,
    })
    .unwrap_or_default()
}

impl SigningKey {
    /// Signs a model record in place (signer and signature).
    pub fn sign_model(&self, r: &mut ModelRecord) {
        r.signer = self.public_hex();
        r.signature = hex::encode(self.inner().sign(&model_canonical_bytes(r)).to_bytes());
    }
}

impl TrustedKeys {
    /// Checks a model record's signer and signature.
    pub fn verify_model(&self, r: &ModelRecord) -> Result<(), BundleError> {
        let signer = self
            .find(&r.signer)
            .ok_or_else(|| BundleError::UnknownSigner(r.signer.clone()))?;
        let sig: [u8; 64] = hex::decode(&r.signature)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(BundleError::BadSignature)?;
        signer
            .verify(&model_canonical_bytes(r), &Signature::from_bytes(&sig))
            .map_err(|_| BundleError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::ModelState;

    fn record() -> ModelRecord {
        ModelRecord {
            name: "resnet".into(),
            version: 3,
            sha256: "ab".repeat(32),
            size: 1234,
            format: "onnx".into(),
            hosts: vec!["h2".into(), "h1".into()],
            memory_max_bytes: 512 << 20,
            cpu_millicores: 1500,
            listen: "tcp:127.0.0.1:8001".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_signed_field_tampered_with_is_refused() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let mut r = record();
        key.sign_model(&mut r);
        trusted.verify_model(&r).unwrap();
        type Tamper = Box<dyn Fn(&mut ModelRecord)>;
        let tampers: Vec<(&str, Tamper)> = vec![
            ("name", Box::new(|r| r.name = "resnet2".into())),
            ("version", Box::new(|r| r.version = 4)),
            ("sha256", Box::new(|r| r.sha256 = "cd".repeat(32))),
            ("size", Box::new(|r| r.size += 1)),
            ("format", Box::new(|r| r.format = "gguf".into())),
            ("hosts added", Box::new(|r| r.hosts.push("h3".into()))),
            ("hosts removed", Box::new(|r| r.hosts.clear())),
            ("memory", Box::new(|r| r.memory_max_bytes = 0)),
            ("cpu", Box::new(|r| r.cpu_millicores = 0)),
            ("listen", Box::new(|r| r.listen = "tcp:0.0.0.0:8001".into())),
            (
                "signature",
                Box::new(|r| {
                    let mut s = hex::decode(&r.signature).unwrap();
                    s[0] ^= 1;
                    r.signature = hex::encode(s);
                }),
            ),
            ("signature short", Box::new(|r| r.signature.truncate(10))),
        ];
        for (what, tamper) in tampers {
            let mut t = r.clone();
            tamper(&mut t);
            assert_eq!(
                trusted.verify_model(&t),
                Err(BundleError::BadSignature),
                "{what}"
            );
        }
        // What the control plane fills in is not signed; the host order
        // is not either.
        let mut placed = r.clone();
        placed.state = ModelState::Approved;
        placed.registered_by = "admin".into();
        placed.registered_at_unix_nanos = 9;
        placed.changed_by = "x".into();
        placed.reason = "y".into();
        placed.hosts.reverse();
        trusted.verify_model(&placed).unwrap();
        // Another key, and a signer field pointing at a trusted key.
        let mut other = r.clone();
        SigningKey::generate().sign_model(&mut other);
        assert!(matches!(
            trusted.verify_model(&other),
            Err(BundleError::UnknownSigner(_))
        ));
        other.signer = key.public_hex();
        assert_eq!(trusted.verify_model(&other), Err(BundleError::BadSignature));
    }

    #[test]
    fn the_canonical_form_is_fixed() {
        let text = String::from_utf8(model_canonical_bytes(&record())).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"format\":\"vigil.model.v1\",\"name\":\"resnet\",\"version\":3,\"sha256\":\"{}\",\"size\":1234,\"model_format\":\"onnx\",\"hosts\":[\"h1\",\"h2\"],\"memory_max_bytes\":536870912,\"cpu_millicores\":1500,\"listen\":\"tcp:127.0.0.1:8001\"}}",
                "ab".repeat(32)
            )
        );
    }
}
