//! TPMT_SIGNATURE (TPM 2.0 Part 2, §11.3.4) and its verification with an
//! attestation key's public area, with ring (`PreparedKey` keeps an
//! OpenSSL context per key for the control plane's hot path).
//!
//! The hot path (a control plane checks every agent's quotes) reads the
//! key's modulus and exponent where they lie (`RsaPublicKeyComponents`,
//! no DER) and builds ECDSA points and signatures on the stack.

use ring::signature::{self as ring_sig, RsaPublicKeyComponents, UnparsedPublicKey};

use crate::hash_alg::HashAlg;
use crate::tpm_alg as alg;
use crate::tpm_public::{
    describe_scheme, effective_exponent, AsymScheme, EccCurve, KeyType, PublicParameters,
    PublicUnique, TpmPublic,
};
use crate::wire::{put_tpm2b, ParseError, Reader};

/// A parsed TPMT_SIGNATURE of a scheme this crate verifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TpmtSignature {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa { hash: HashAlg, sig: Vec<u8> },
    /// RSASSA-PSS, salt as long as the digest (what TPMs make).
    RsaPss { hash: HashAlg, sig: Vec<u8> },
    /// ECDSA, r and s big-endian.
    Ecdsa {
        hash: HashAlg,
        r: Vec<u8>,
        s: Vec<u8>,
    },
}

/// A signature does not verify, or cannot be checked with this key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature hash {0} is not SHA-256 or stronger")]
    WeakHash(HashAlg),
    #[error("a {sig} signature cannot come from an {key:?} key")]
    KeyTypeMismatch { key: KeyType, sig: &'static str },
    #[error("the key signs with {key}, the signature is {sig}")]
    SchemeMismatch { key: String, sig: String },
    #[error("the key cannot verify: {0}")]
    UnusableKey(String),
    #[error("signature is {len} bytes, the key's modulus is {modulus}")]
    RsaSize { len: usize, modulus: usize },
    #[error("ECDSA {which} is {len} bytes, {curve} allows {max}")]
    EcdsaComponent {
        which: &'static str,
        len: usize,
        curve: EccCurve,
        max: usize,
    },
    #[error("{0} with {1} is not supported")]
    Unsupported(EccCurve, HashAlg),
    #[error("the signature does not verify with the key")]
    Invalid,
}

impl TpmtSignature {
    /// Parses a marshalled TPMT_SIGNATURE (`tpm2_quote -s`, tss format)
    /// that must fill `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<TpmtSignature, ParseError> {
        let mut r = Reader::new(bytes, "TPMT_SIGNATURE");
        let alg_at = r.offset();
        let sig_alg = r.u16_be("sigAlg")?;
        let hash_at = r.offset();
        let out = match sig_alg {
            alg::RSASSA | alg::RSAPSS => {
                let hash = read_hash(&mut r, hash_at)?;
                let sig = r
                    .tpm2b("signature.rsa.sig", alg::MAX_RSA_KEY_BYTES)?
                    .to_vec();
                if sig_alg == alg::RSASSA {
                    TpmtSignature::RsaSsa { hash, sig }
                } else {
                    TpmtSignature::RsaPss { hash, sig }
                }
            }
            alg::ECDSA => {
                let hash = read_hash(&mut r, hash_at)?;
                let r_ = r
                    .tpm2b("signature.ecdsa.signatureR", alg::MAX_ECC_KEY_BYTES)?
                    .to_vec();
                let s = r
                    .tpm2b("signature.ecdsa.signatureS", alg::MAX_ECC_KEY_BYTES)?
                    .to_vec();
                TpmtSignature::Ecdsa { hash, r: r_, s }
            }
            other => {
                return Err(r.invalid_at(
                    alg_at,
                    "sigAlg",
                    format!("{other:#06x} is not RSASSA, RSAPSS or ECDSA"),
                ))
            }
        };
        r.finish()?;
        Ok(out)
    }

    /// The marshalled TPMT_SIGNATURE.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + 512);
        match self {
            TpmtSignature::RsaSsa { hash, sig } | TpmtSignature::RsaPss { hash, sig } => {
                let id = if matches!(self, TpmtSignature::RsaSsa { .. }) {
                    alg::RSASSA
                } else {
                    alg::RSAPSS
                };
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&hash.tpm_id().to_be_bytes());
                put_tpm2b(&mut out, sig);
            }
            TpmtSignature::Ecdsa { hash, r, s } => {
                out.extend_from_slice(&alg::ECDSA.to_be_bytes());
                out.extend_from_slice(&hash.tpm_id().to_be_bytes());
                put_tpm2b(&mut out, r);
                put_tpm2b(&mut out, s);
            }
        }
        out
    }

    /// The hash algorithm the signature was made over.
    pub fn hash_alg(&self) -> HashAlg {
        match self {
            TpmtSignature::RsaSsa { hash, .. }
            | TpmtSignature::RsaPss { hash, .. }
            | TpmtSignature::Ecdsa { hash, .. } => *hash,
        }
    }

    fn scheme_name(&self) -> &'static str {
        match self {
            TpmtSignature::RsaSsa { .. } => "RSASSA",
            TpmtSignature::RsaPss { .. } => "RSAPSS",
            TpmtSignature::Ecdsa { .. } => "ECDSA",
        }
    }

    fn describe(&self) -> String {
        format!("{}-{}", self.scheme_name(), self.hash_alg())
    }
}

fn read_hash(r: &mut Reader<'_>, at: usize) -> Result<HashAlg, ParseError> {
    let id = r.u16_be("signature.hash")?;
    HashAlg::from_tpm_id(id).ok_or_else(|| {
        r.invalid_at(
            at,
            "signature.hash",
            format!("{id:#06x} is not a supported hash algorithm"),
        )
    })
}

/// Verifies `sig` over `message` (hashed here with the signature's hash
/// algorithm) with `key`: the hash must be SHA-256 or stronger and the
/// scheme and hash must be the key's own where the key names one.
pub fn verify(key: &TpmPublic, message: &[u8], sig: &TpmtSignature) -> Result<(), SignatureError> {
    let hash = sig.hash_alg();
    if !hash.is_strong() {
        return Err(SignatureError::WeakHash(hash));
    }
    match (key.parameters(), key.unique(), sig) {
        (
            PublicParameters::Rsa { exponent, .. },
            PublicUnique::Rsa { modulus },
            TpmtSignature::RsaSsa { sig: bytes, .. } | TpmtSignature::RsaPss { sig: bytes, .. },
        ) => {
            precheck(key, sig)?;
            verify_rsa(modulus, *exponent, message, sig, bytes)
        }
        (
            PublicParameters::Ecc { scheme, curve, .. },
            PublicUnique::Ecc { x, y },
            TpmtSignature::Ecdsa { r, s, .. },
        ) => {
            check_scheme(scheme, sig)?;
            verify_ecdsa(*curve, x, y, hash, message, r, s)
        }
        _ => Err(SignatureError::KeyTypeMismatch {
            key: key.key_type(),
            sig: sig.scheme_name(),
        }),
    }
}

/// The checks an RSA verification makes before the RSA operation (here
/// and in `PreparedKey`): a strong hash, the key's own scheme and hash, a
/// modulus of at least 2048 bits and a signature of the modulus' size.
pub(crate) fn precheck(key: &TpmPublic, sig: &TpmtSignature) -> Result<(), SignatureError> {
    let hash = sig.hash_alg();
    if !hash.is_strong() {
        return Err(SignatureError::WeakHash(hash));
    }
    match (key.parameters(), key.unique(), sig) {
        (
            PublicParameters::Rsa { scheme, .. },
            PublicUnique::Rsa { modulus },
            TpmtSignature::RsaSsa { sig: bytes, .. } | TpmtSignature::RsaPss { sig: bytes, .. },
        ) => {
            check_scheme(scheme, sig)?;
            if modulus.len() < 256 {
                return Err(SignatureError::UnusableKey(format!(
                    "RSA modulus of {} bytes, at least 256 (2048 bits) needed",
                    modulus.len()
                )));
            }
            if bytes.len() != modulus.len() {
                return Err(SignatureError::RsaSize {
                    len: bytes.len(),
                    modulus: modulus.len(),
                });
            }
            Ok(())
        }
        _ => Err(SignatureError::KeyTypeMismatch {
            key: key.key_type(),
            sig: sig.scheme_name(),
        }),
    }
}

fn check_scheme(key_scheme: &AsymScheme, sig: &TpmtSignature) -> Result<(), SignatureError> {
    let hash = sig.hash_alg().tpm_id();
    let ok = match (key_scheme, sig) {
        (AsymScheme::Null, _) => true,
        (AsymScheme::RsaSsa { hash: h }, TpmtSignature::RsaSsa { .. })
        | (AsymScheme::RsaPss { hash: h }, TpmtSignature::RsaPss { .. })
        | (AsymScheme::Ecdsa { hash: h }, TpmtSignature::Ecdsa { .. }) => *h == hash,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(SignatureError::SchemeMismatch {
            key: describe_scheme(key_scheme),
            sig: sig.describe(),
        })
    }
}

fn verify_rsa(
    modulus: &[u8],
    exponent: u32,
    message: &[u8],
    sig: &TpmtSignature,
    bytes: &[u8],
) -> Result<(), SignatureError> {
    // Sizes and scheme were checked by `precheck`.
    let params = match sig {
        TpmtSignature::RsaSsa { hash, .. } => match hash {
            HashAlg::Sha256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
            HashAlg::Sha384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
            HashAlg::Sha512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
            HashAlg::Sha1 => return Err(SignatureError::WeakHash(*hash)),
        },
        TpmtSignature::RsaPss { hash, .. } => match hash {
            HashAlg::Sha256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
            HashAlg::Sha384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
            HashAlg::Sha512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
            HashAlg::Sha1 => return Err(SignatureError::WeakHash(*hash)),
        },
        TpmtSignature::Ecdsa { .. } => {
            return Err(SignatureError::KeyTypeMismatch {
                key: KeyType::Rsa,
                sig: "ECDSA",
            })
        }
    };
    let e = effective_exponent(exponent).to_be_bytes();
    let skip = e.iter().take_while(|b| **b == 0).count();
    let components = RsaPublicKeyComponents {
        n: modulus,
        e: e.get(skip..).unwrap_or(&e),
    };
    components
        .verify(params, message, bytes)
        .map_err(|_| SignatureError::Invalid)
}

/// The widest coordinate this crate verifies with (P-384).
const MAX_COORD: usize = 48;

fn verify_ecdsa(
    curve: EccCurve,
    x: &[u8],
    y: &[u8],
    hash: HashAlg,
    message: &[u8],
    r: &[u8],
    s: &[u8],
) -> Result<(), SignatureError> {
    let (size, fixed, asn1): (
        usize,
        Option<&'static ring_sig::EcdsaVerificationAlgorithm>,
        _,
    ) = match (curve, hash) {
        (EccCurve::P256, HashAlg::Sha256) => (32, Some(&ring_sig::ECDSA_P256_SHA256_FIXED), None),
        (EccCurve::P256, HashAlg::Sha384) => (32, None, Some(&ring_sig::ECDSA_P256_SHA384_ASN1)),
        (EccCurve::P384, HashAlg::Sha384) => (48, Some(&ring_sig::ECDSA_P384_SHA384_FIXED), None),
        (EccCurve::P384, HashAlg::Sha256) => (48, None, Some(&ring_sig::ECDSA_P384_SHA256_ASN1)),
        (curve, hash) => return Err(SignatureError::Unsupported(curve, hash)),
    };
    // The uncompressed point 04 || x || y, each coordinate left-padded.
    let mut point = [0u8; 1 + 2 * MAX_COORD];
    point[0] = 4;
    for (coord, which, at) in [(x, "x", 1), (y, "y", 1 + size)] {
        let coord = crate::tpm_public::strip_leading_zeros(coord);
        if coord.len() > size {
            return Err(SignatureError::UnusableKey(format!(
                "ECC point {which} is {} bytes, {curve} has {size}",
                coord.len()
            )));
        }
        let start = at + size - coord.len();
        if let Some(slot) = point.get_mut(start..at + size) {
            slot.copy_from_slice(coord);
        }
    }
    let point = point.get(..1 + 2 * size).unwrap_or(&[]);
    let r = component(r, "r", curve, size)?;
    let s = component(s, "s", curve, size)?;
    if let Some(alg) = fixed {
        let mut sig = [0u8; 2 * MAX_COORD];
        for (v, at) in [(r, 0), (s, size)] {
            if let Some(slot) = sig.get_mut(at + size - v.len()..at + size) {
                slot.copy_from_slice(v);
            }
        }
        UnparsedPublicKey::new(alg, point)
            .verify(message, sig.get(..2 * size).unwrap_or(&[]))
            .map_err(|_| SignatureError::Invalid)
    } else if let Some(alg) = asn1 {
        let mut der = [0u8; 8 + 2 * (MAX_COORD + 1)];
        let len = ecdsa_der(r, s, &mut der);
        UnparsedPublicKey::new(alg, point)
            .verify(message, der.get(..len).unwrap_or(&[]))
            .map_err(|_| SignatureError::Invalid)
    } else {
        Err(SignatureError::Unsupported(curve, hash))
    }
}

fn component<'a>(
    v: &'a [u8],
    which: &'static str,
    curve: EccCurve,
    size: usize,
) -> Result<&'a [u8], SignatureError> {
    let stripped = crate::tpm_public::strip_leading_zeros(v);
    if stripped.len() > size {
        return Err(SignatureError::EcdsaComponent {
            which,
            len: v.len(),
            curve,
            max: size,
        });
    }
    Ok(stripped)
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` into `out`; r and s have no
/// leading zeros and are at most 48 bytes, so every length is one byte.
fn ecdsa_der(r: &[u8], s: &[u8], out: &mut [u8]) -> usize {
    let int_len = |v: &[u8]| v.len().max(1) + usize::from(v.first().is_some_and(|b| b & 0x80 != 0));
    let body = 2 + int_len(r) + 2 + int_len(s);
    let mut at = 0;
    let mut put = |byte: u8| {
        if let Some(slot) = out.get_mut(at) {
            *slot = byte;
        }
        at += 1;
    };
    put(0x30);
    put(body as u8);
    for v in [r, s] {
        put(0x02);
        put(int_len(v) as u8);
        if v.is_empty() || v.first().is_some_and(|b| b & 0x80 != 0) {
            put(0);
        }
        for b in v {
            put(*b);
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures_tests::fixture;

    fn ak(name: &str) -> TpmPublic {
        TpmPublic::parse(&fixture(name)).unwrap()
    }

    #[test]
    fn a_sha1_signature_is_refused_before_any_math() {
        let sig = TpmtSignature::RsaSsa {
            hash: HashAlg::Sha1,
            sig: vec![0; 256],
        };
        assert_eq!(
            verify(&ak("ak.pub"), b"m", &sig).unwrap_err().to_string(),
            "signature hash sha1 is not SHA-256 or stronger"
        );
    }

    #[test]
    fn the_keys_scheme_binds_the_signatures() {
        let TpmtSignature::RsaSsa { sig, .. } =
            TpmtSignature::parse(&fixture("quote.sig")).unwrap()
        else {
            panic!("RSASSA expected");
        };
        let as_sha384 = TpmtSignature::RsaSsa {
            hash: HashAlg::Sha384,
            sig: sig.clone(),
        };
        assert_eq!(
            verify(&ak("ak.pub"), b"m", &as_sha384)
                .unwrap_err()
                .to_string(),
            "the key signs with RSASSA-sha256, the signature is RSASSA-sha384"
        );
        let as_ecdsa = TpmtSignature::Ecdsa {
            hash: HashAlg::Sha256,
            r: vec![1],
            s: vec![1],
        };
        assert_eq!(
            verify(&ak("ak.pub"), b"m", &as_ecdsa)
                .unwrap_err()
                .to_string(),
            "a ECDSA signature cannot come from an Rsa key"
        );
        let short = TpmtSignature::RsaSsa {
            hash: HashAlg::Sha256,
            sig: sig[1..].to_vec(),
        };
        assert_eq!(
            verify(&ak("ak.pub"), b"m", &short).unwrap_err(),
            SignatureError::RsaSize {
                len: 255,
                modulus: 256
            }
        );
    }

    #[test]
    fn ecdsa_components_wider_than_the_curve_are_refused() {
        let sig = TpmtSignature::Ecdsa {
            hash: HashAlg::Sha256,
            r: vec![1; 33],
            s: vec![1; 32],
        };
        assert_eq!(
            verify(&ak("ak-ecc.pub"), b"m", &sig)
                .unwrap_err()
                .to_string(),
            "ECDSA r is 33 bytes, NIST P-256 allows 32"
        );
        // Leading zeros are not width.
        let mut r = vec![0; 2];
        r.extend_from_slice(&[1; 32]);
        let sig = TpmtSignature::Ecdsa {
            hash: HashAlg::Sha256,
            r,
            s: vec![1; 32],
        };
        assert_eq!(
            verify(&ak("ak-ecc.pub"), b"m", &sig).unwrap_err(),
            SignatureError::Invalid
        );
    }

    #[test]
    fn parse_refusals_name_the_field() {
        let e = TpmtSignature::parse(&[0x00, 0x05, 0x00, 0x0b]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "TPMT_SIGNATURE at byte 0: sigAlg: 0x0005 is not RSASSA, RSAPSS or ECDSA"
        );
        let e = TpmtSignature::parse(&[0x00, 0x14, 0x00, 0x12, 0, 0]).unwrap_err();
        assert!(
            e.to_string().contains("at byte 2: signature.hash: 0x0012"),
            "{e}"
        );
    }

    #[test]
    fn der_encoding_of_r_and_s() {
        let mut out = [0u8; 110];
        let n = ecdsa_der(&[0x80], &[0x01, 0x02], &mut out);
        assert_eq!(
            &out[..n],
            &[0x30, 0x08, 0x02, 0x02, 0x00, 0x80, 0x02, 0x02, 0x01, 0x02]
        );
    }
}
