//! A secret sealed by the TPM, as stored: which sha256 PCRs it is sealed
//! to, and the sealed object's public and (TPM-encrypted) private parts.
//! Only the TPM that sealed it, with those PCRs at the values they had,
//! can unseal it.
//!
//! ```text
//! "VGSEAL" version(1) bank(u16 BE, 0x000b) count(u8) index(u8)*count
//! TPM2B_PUBLIC TPM2B_PRIVATE
//! ```

use super::pcr_list::{PcrBank, PcrList};
use super::tpm_wire::{split_tpm2b, tpm2b};

const MAGIC: &[u8; 6] = b"VGSEAL";
const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// The sha256 PCRs whose values the policy names.
    pub pcrs: PcrList,
    /// TPM2B_PUBLIC of the sealed data object (its authPolicy: PolicyPCR).
    pub public: Vec<u8>,
    /// TPM2B_PRIVATE of the sealed data object.
    pub private: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealed secret: {0}")]
pub struct SealedSecretError(String);

impl SealedSecret {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.public.len() + self.private.len());
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&PcrBank::Sha256.alg_id().to_be_bytes());
        let indices = self.pcrs.indices();
        // At most 24 indices, each at most 23 (PcrList checks).
        out.push(indices.len() as u8);
        out.extend(indices.iter().map(|&i| i as u8));
        out.extend_from_slice(&self.public);
        out.extend_from_slice(&self.private);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<SealedSecret, SealedSecretError> {
        let fail = |s: String| SealedSecretError(s);
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| fail("not a vigil sealed secret (no VGSEAL header)".into()))?;
        let [version, b1, b2, count, rest @ ..] = rest else {
            return Err(fail("cut short in its header".into()));
        };
        if *version != VERSION {
            return Err(fail(format!(
                "version {version}; this agent reads version {VERSION}"
            )));
        }
        let bank = u16::from_be_bytes([*b1, *b2]);
        if bank != PcrBank::Sha256.alg_id() {
            return Err(fail(format!(
                "PCR bank 0x{bank:04x}; only sha256 (0x000b) is sealed to"
            )));
        }
        let count = *count as usize;
        let Some((indices, rest)) = rest.split_at_checked(count) else {
            return Err(fail(format!("{count} PCR indices announced, fewer there")));
        };
        let indices: Vec<u32> = indices.iter().map(|&i| i as u32).collect();
        let pcrs = PcrList::from_indices(&indices).map_err(|e| fail(e.to_string()))?;
        if pcrs.indices() != indices {
            return Err(fail("PCR indices not ascending or repeated".into()));
        }
        let (public, rest) = split_tpm2b("TPM2B_PUBLIC", rest).map_err(|e| fail(e.to_string()))?;
        let (private, rest) =
            split_tpm2b("TPM2B_PRIVATE", rest).map_err(|e| fail(e.to_string()))?;
        if !rest.is_empty() {
            return Err(fail(format!(
                "{} bytes after its TPM2B_PRIVATE",
                rest.len()
            )));
        }
        let frame = |what: &str, body: &[u8]| tpm2b(what, body).map_err(|e| fail(e.to_string()));
        Ok(SealedSecret {
            pcrs,
            public: frame("TPM2B_PUBLIC", public)?,
            private: frame("TPM2B_PRIVATE", private)?,
        })
    }
}

#[cfg(test)]
#[path = "sealed_secret_tests.rs"]
mod tests;
