//! The hash algorithms a TPM names by TPM_ALG_ID (TPM 2.0 Part 2, table 9)
//! and that this crate can compute.

use std::fmt;

use ring::digest;

/// A hash algorithm this crate knows (PCR banks, name algorithms, signing
/// schemes, event log digests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    /// Every algorithm, weakest first.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// The TPM_ALG_ID.
    pub const fn tpm_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000b,
            HashAlg::Sha384 => 0x000c,
            HashAlg::Sha512 => 0x000d,
        }
    }

    /// The algorithm a TPM_ALG_ID names, if it is one this crate computes
    /// (SM3_256, SHA3 and the NULL algorithm are not).
    pub const fn from_tpm_id(id: u16) -> Option<HashAlg> {
        match id {
            0x0004 => Some(HashAlg::Sha1),
            0x000b => Some(HashAlg::Sha256),
            0x000c => Some(HashAlg::Sha384),
            0x000d => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// Digest size in bytes.
    pub const fn digest_size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The name tpm2-tools and the event log specification use (`sha256`).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// SHA-256 or stronger: what a signature over a quote may use.
    pub const fn is_strong(self) -> bool {
        !matches!(self, HashAlg::Sha1)
    }

    pub(crate) fn ring(self) -> &'static digest::Algorithm {
        match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        }
    }

    /// The digest of `data`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.ring(), data).as_ref().to_vec()
    }

    /// The digest of the concatenation of `parts`.
    pub fn hash_parts(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut ctx = digest::Context::new(self.ring());
        for part in parts {
            ctx.update(part);
        }
        ctx.finish().as_ref().to_vec()
    }

    /// A PCR extend: H(pcr || digest).
    pub fn extend(self, pcr: &[u8], digest: &[u8]) -> Vec<u8> {
        self.hash_parts(&[pcr, digest])
    }

    pub(crate) fn describe_id(id: u16) -> String {
        match HashAlg::from_tpm_id(id) {
            Some(alg) => alg.name().to_string(),
            None => format!("{id:#06x}"),
        }
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sizes_match_the_digests() {
        for alg in HashAlg::ALL {
            assert_eq!(HashAlg::from_tpm_id(alg.tpm_id()), Some(alg));
            assert_eq!(alg.hash(b"x").len(), alg.digest_size());
        }
        assert_eq!(HashAlg::from_tpm_id(0x0012), None, "SM3_256");
        assert_eq!(HashAlg::describe_id(0x0012), "0x0012");
    }

    #[test]
    fn extend_is_hash_of_concatenation() {
        let a = HashAlg::Sha256;
        assert_eq!(
            a.extend(&[0; 32], b"d"),
            a.hash(&[[0u8; 32].as_slice(), b"d"].concat())
        );
    }
}
