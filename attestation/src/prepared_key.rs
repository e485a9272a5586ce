//! An attestation key prepared once for the many quotes it will sign: for
//! RSASSA (what TPM attestation keys sign with), an OpenSSL public-key
//! context kept with the key, so that each verification pays the RSA
//! operation alone. ring, which `verify` uses, rebuilds the modulus'
//! Montgomery constants at every call (measured here at 0.76 of
//! `openssl speed rsa2048`'s verify rate; a kept context at 0.99). Other
//! schemes (RSAPSS, ECDSA) take ring's path.
//!
//! Architecture invariant: a prepared key accepts exactly what `verify`
//! accepts (same hash, scheme and size checks first; the fixtures' every
//! bit flip is refused by both).

use std::sync::Mutex;

use openssl::md::Md;
use openssl::pkey::{PKey, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};

use crate::hash_alg::HashAlg;
use crate::signature::{precheck, verify, SignatureError, TpmtSignature};
use crate::tpm_public::{effective_exponent, PublicUnique, TpmPublic};

pub struct PreparedKey {
    public: TpmPublic,
    /// The RSA key's verification context (None: not an RSA key, or
    /// OpenSSL refused it: ring verifies).
    rsa: Option<Mutex<PkeyCtx<Public>>>,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedKey")
            .field("public", &self.public)
            .field("openssl", &self.rsa.is_some())
            .finish()
    }
}

fn rsa_context(public: &TpmPublic) -> Option<Mutex<PkeyCtx<Public>>> {
    let (PublicUnique::Rsa { modulus }, crate::PublicParameters::Rsa { exponent, .. }) =
        (public.unique(), public.parameters())
    else {
        return None;
    };
    let n = openssl::bn::BigNum::from_slice(modulus).ok()?;
    let e = openssl::bn::BigNum::from_u32(effective_exponent(*exponent)).ok()?;
    let key = PKey::from_rsa(Rsa::from_public_components(n, e).ok()?).ok()?;
    let mut ctx = PkeyCtx::new(&key).ok()?;
    ctx.verify_init().ok()?;
    ctx.set_rsa_padding(Padding::PKCS1).ok()?;
    Some(Mutex::new(ctx))
}

impl PreparedKey {
    pub fn new(public: TpmPublic) -> PreparedKey {
        let rsa = rsa_context(&public);
        PreparedKey { public, rsa }
    }

    pub fn public(&self) -> &TpmPublic {
        &self.public
    }

    /// As [`verify`] with this key.
    pub fn verify(&self, message: &[u8], sig: &TpmtSignature) -> Result<(), SignatureError> {
        let (Some(ctx), TpmtSignature::RsaSsa { hash, sig: bytes }) = (&self.rsa, sig) else {
            return verify(&self.public, message, sig);
        };
        precheck(&self.public, sig)?;
        let md = match hash {
            HashAlg::Sha256 => Md::sha256(),
            HashAlg::Sha384 => Md::sha384(),
            HashAlg::Sha512 => Md::sha512(),
            HashAlg::Sha1 => return Err(SignatureError::WeakHash(*hash)),
        };
        let digest = hash.hash(message);
        let mut ctx = ctx.lock().unwrap_or_else(|p| p.into_inner());
        ctx.set_signature_md(md)
            .map_err(|e| SignatureError::UnusableKey(e.to_string()))?;
        match ctx.verify(&digest, bytes) {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(SignatureError::Invalid),
        }
    }
}
