//! Signed policy bundles: the files of a policy directory plus a version,
//! in a canonical byte form signed with an admin's ed25519 key.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::PolicySource;

/// The bundle format this code writes and reads.
pub const BUNDLE_FORMAT: &str = "vigil.policy.bundle.v1";

/// A signed bundle as stored and shipped (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    pub format: String,
    pub version: u64,
    pub files: BTreeMap<String, String>,
    /// Hex ed25519 public key of the signer.
    pub signer: String,
    /// Hex ed25519 signature over `canonical_bytes(version, files)`.
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a policy bundle: {0}")]
    Malformed(String),
    #[error("bundle format {0:?} is not {BUNDLE_FORMAT}")]
    Format(String),
    #[error("signed by {0}, which is not a trusted policy key")]
    UnknownSigner(String),
    #[error("the signature does not verify: the bundle was changed after it was signed, or signed with another key")]
    BadSignature,
    #[error("bad key: {0}")]
    BadKey(String),
}

/// What is signed: a domain tag, the version, then each file's path and
/// contents, length-prefixed, in path order. Reformatting the JSON around
/// them changes nothing; changing any byte of a path or file does.
pub fn canonical_bytes(version: u64, files: &PolicySource) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(BUNDLE_FORMAT.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&version.to_be_bytes());
    for (path, content) in files {
        out.extend_from_slice(&(path.len() as u64).to_be_bytes());
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(&(content.len() as u64).to_be_bytes());
        out.extend_from_slice(content.as_bytes());
    }
    out
}

/// An admin's signing key.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl SigningKey {
    pub fn generate() -> Self {
        Self(ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng))
    }

    /// From the 32-byte secret in hex (as `vigilctl policy keygen` writes it).
    pub fn from_hex(secret: &str) -> Result<Self, BundleError> {
        let bytes: [u8; 32] = hex::decode(secret.trim())
            .map_err(|e| BundleError::BadKey(format!("secret key: {e}")))?
            .try_into()
            .map_err(|_| BundleError::BadKey("secret key: not 32 bytes".into()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&bytes)))
    }

    pub fn secret_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    pub(crate) fn inner(&self) -> &ed25519_dalek::SigningKey {
        &self.0
    }

    pub fn sign(&self, version: u64, files: PolicySource) -> Bundle {
        let signature = self.0.sign(&canonical_bytes(version, &files));
        Bundle {
            format: BUNDLE_FORMAT.to_string(),
            version,
            files,
            signer: self.public_hex(),
            signature: hex::encode(signature.to_bytes()),
        }
    }
}

/// The public keys a verifier accepts bundles from.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(Vec<VerifyingKey>);

impl TrustedKeys {
    pub fn from_hex<S: AsRef<str>>(keys: &[S]) -> Result<Self, BundleError> {
        keys.iter()
            .map(|k| parse_public(k.as_ref()))
            .collect::<Result<_, _>>()
            .map(TrustedKeys)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The trusted key with this hex encoding.
    pub(crate) fn find(&self, hex_key: &str) -> Option<&VerifyingKey> {
        let key = parse_public(hex_key).ok()?;
        self.0.iter().find(|k| **k == key)
    }

    /// Checks format, signer and signature.
    pub fn verify(&self, b: &Bundle) -> Result<(), BundleError> {
        if b.format != BUNDLE_FORMAT {
            return Err(BundleError::Format(b.format.clone()));
        }
        let signer =
            parse_public(&b.signer).map_err(|_| BundleError::UnknownSigner(b.signer.clone()))?;
        if !self.0.contains(&signer) {
            return Err(BundleError::UnknownSigner(b.signer.clone()));
        }
        let sig: [u8; 64] = hex::decode(&b.signature)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(BundleError::BadSignature)?;
        signer
            .verify(
                &canonical_bytes(b.version, &b.files),
                &Signature::from_bytes(&sig),
            )
            .map_err(|_| BundleError::BadSignature)
    }
}

fn parse_public(hex_key: &str) -> Result<VerifyingKey, BundleError> {
    let bytes: [u8; 32] = hex::decode(hex_key.trim())
        .map_err(|e| BundleError::BadKey(format!("public key {hex_key:?}: {e}")))?
        .try_into()
        .map_err(|_| BundleError::BadKey(format!("public key {hex_key:?}: not 32 bytes")))?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|e| BundleError::BadKey(format!("public key {hex_key:?}: {e}")))
}

impl Bundle {
    pub fn from_json(bytes: &[u8]) -> Result<Bundle, BundleError> {
        serde_json::from_slice(bytes).map_err(|e| BundleError::Malformed(e.to_string()))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Short fingerprint of the signed content, for listings.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(canonical_bytes(self.version, &self.files))[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> PolicySource {
        [("rules/a.yaml".to_string(), "id: a\n".to_string())].into()
    }

    #[test]
    fn signed_bundles_verify_and_any_change_is_refused() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let b = key.sign(3, files());
        trusted.verify(&b).unwrap();
        let round = Bundle::from_json(&b.to_json()).unwrap();
        trusted.verify(&round).unwrap();

        let mut tampered = b.clone();
        tampered
            .files
            .insert("rules/a.yaml".into(), "id: b\n".into());
        assert_eq!(trusted.verify(&tampered), Err(BundleError::BadSignature));
        let mut bumped = b.clone();
        bumped.version = 4;
        assert_eq!(trusted.verify(&bumped), Err(BundleError::BadSignature));

        let stranger = SigningKey::generate().sign(3, files());
        assert!(matches!(
            trusted.verify(&stranger),
            Err(BundleError::UnknownSigner(_))
        ));
        let restored = SigningKey::from_hex(&key.secret_hex()).unwrap();
        assert_eq!(restored.public_hex(), key.public_hex());
        assert!(matches!(
            Bundle::from_json(b"{\"format\": 1"),
            Err(BundleError::Malformed(_))
        ));
    }
}
