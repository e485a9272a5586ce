//! TPM2_MakeCredential in software (TPM 2.0 Part 1, §24 "Credential
//! Protection"; Part 3, TPM2_MakeCredential): a secret sealed to an EK for
//! one key Name. The TPM holding the EK recovers it with
//! TPM2_ActivateCredential only for a loaded key of that Name, so a
//! verifier that gets the secret back knows the AK lives in the same TPM
//! as the (certified) EK.
//!
//! For an RSA EK (the TCG default EK templates: nameAlg SHA-256 with
//! AES-128-CFB, or SHA-384 with AES-256-CFB; no scheme):
//!
//! ```text
//! seed        = random, nameAlg's digest size
//! encSecret   = RSA-OAEP(nameAlg, label "IDENTITY\0")(EK, seed)
//! symKey      = KDFa(nameAlg, seed, "STORAGE", objectName, "", symKeyBits)
//! encIdentity = AES-CFB(symKey, IV 0)(TPM2B_DIGEST(secret))
//! hmacKey     = KDFa(nameAlg, seed, "INTEGRITY", "", "", digestBits)
//! outerHMAC   = HMAC(nameAlg, hmacKey)(encIdentity || objectName)
//! idObject    = TPM2B_ID_OBJECT(TPM2B_DIGEST(outerHMAC) || encIdentity)
//! ```
//!
//! ECC EKs (ECDH seed) are not supported yet.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::digest::core_api::BlockSizeUser;
use hmac::digest::{Digest, DynDigest};
use hmac::{Mac, SimpleHmac};
use ring::rand::SecureRandom;
use rsa::rand_core::{CryptoRng, RngCore};
use rsa::{BigUint, Oaep, RsaPublicKey};

use crate::hash_alg::HashAlg;
use crate::tpm2_tools_files::{CREDENTIAL_FILE_MAGIC, CREDENTIAL_FILE_VERSION};
use crate::tpm_alg as alg;
use crate::tpm_public::{
    effective_exponent, AsymScheme, EkError, PublicParameters, PublicUnique, SymmetricDef,
    TpmPublic,
};
use crate::wire::{put_tpm2b, ParseError, Reader};

/// What TPM2_MakeCredential returns, marshalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// TPM2B_ID_OBJECT (u16 size, then TPM2B_DIGEST integrityHMAC and
    /// encIdentity).
    pub id_object: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET (u16 size, then the OAEP ciphertext).
    pub encrypted_secret: Vec<u8>,
}

/// A credential could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("{0}")]
    NotAnEndorsementKey(EkError),
    #[error("EK not supported: {0}")]
    UnsupportedEk(String),
    #[error(
        "secret of {len} bytes: a credential holds 1 to {max} bytes (the EK nameAlg's digest size)"
    )]
    SecretSize { len: usize, max: usize },
    #[error(
        "object name of {len} bytes is not a Name (a hash algorithm id and its digest): {problem}"
    )]
    ObjectName { len: usize, problem: String },
    #[error("the random source failed")]
    Random,
    #[error("RSA-OAEP encryption to the EK failed: {0}")]
    Encrypt(String),
}

impl Credential {
    /// The file `tpm2_makecredential -o` writes and
    /// `tpm2_activatecredential -i` reads: magic 0xBADCC0DE, version 1
    /// (big-endian u32s), the TPM2B_ID_OBJECT, the TPM2B_ENCRYPTED_SECRET.
    pub fn to_tpm2_tools_file(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.id_object.len() + self.encrypted_secret.len());
        out.extend_from_slice(&CREDENTIAL_FILE_MAGIC.to_be_bytes());
        out.extend_from_slice(&CREDENTIAL_FILE_VERSION.to_be_bytes());
        out.extend_from_slice(&self.id_object);
        out.extend_from_slice(&self.encrypted_secret);
        out
    }

    /// Reads a `tpm2_makecredential -o` file.
    pub fn from_tpm2_tools_file(bytes: &[u8]) -> Result<Credential, ParseError> {
        let mut r = Reader::new(bytes, "tpm2-tools credential file");
        let magic = r.u32_be("magic")?;
        if magic != CREDENTIAL_FILE_MAGIC {
            return Err(r.invalid_at(0, "magic", format!("{magic:#010x} is not 0xbadcc0de")));
        }
        let version = r.u32_be("version")?;
        if version != CREDENTIAL_FILE_VERSION {
            return Err(r.invalid_at(4, "version", format!("{version}, only version 1 is known")));
        }
        let start = r.offset();
        r.tpm2b("credential", usize::from(u16::MAX))?;
        let id_object = bytes.get(start..r.offset()).unwrap_or(&[]).to_vec();
        let start = r.offset();
        r.tpm2b("secret", usize::from(u16::MAX))?;
        let encrypted_secret = bytes.get(start..r.offset()).unwrap_or(&[]).to_vec();
        r.finish()?;
        Ok(Credential {
            id_object,
            encrypted_secret,
        })
    }
}

/// Makes a credential: `secret` (1 to nameAlg-digest-size bytes, 32 for
/// the default EK) sealed to `ek` for the key named `object_name` (a TPM
/// Name: algorithm id and digest, as [`TpmPublic::name`] returns).
pub fn make_credential(
    ek: &TpmPublic,
    object_name: &[u8],
    secret: &[u8],
    rng: &dyn SecureRandom,
) -> Result<Credential, CredentialError> {
    ek.check_endorsement_key()
        .map_err(CredentialError::NotAnEndorsementKey)?;
    let (modulus, exponent, aes_bits) = supported_rsa_ek(ek)?;
    check_name(object_name)?;
    let name_alg = ek.name_alg();
    let max = name_alg.digest_size();
    if secret.is_empty() || secret.len() > max {
        return Err(CredentialError::SecretSize {
            len: secret.len(),
            max,
        });
    }
    let mut seed = vec![0u8; name_alg.digest_size()];
    rng.fill(&mut seed).map_err(|_| CredentialError::Random)?;
    let mut oaep_random = vec![0u8; name_alg.digest_size()];
    rng.fill(&mut oaep_random)
        .map_err(|_| CredentialError::Random)?;
    let key = RsaPublicKey::new(
        BigUint::from_bytes_be(modulus),
        BigUint::from(effective_exponent(exponent)),
    )
    .map_err(|e| CredentialError::Encrypt(e.to_string()))?;
    match name_alg {
        HashAlg::Sha256 => {
            seal::<sha2::Sha256>(&key, &seed, oaep_random, object_name, secret, aes_bits)
        }
        HashAlg::Sha384 => {
            seal::<sha2::Sha384>(&key, &seed, oaep_random, object_name, secret, aes_bits)
        }
        HashAlg::Sha512 => {
            seal::<sha2::Sha512>(&key, &seed, oaep_random, object_name, secret, aes_bits)
        }
        HashAlg::Sha1 => Err(CredentialError::UnsupportedEk(
            "nameAlg sha1 (SHA-256 or stronger needed)".to_string(),
        )),
    }
}

/// The modulus, exponent and AES key size of an RSA EK this crate can
/// seal to.
fn supported_rsa_ek(ek: &TpmPublic) -> Result<(&[u8], u32, u16), CredentialError> {
    let unsupported = |what: String| Err(CredentialError::UnsupportedEk(what));
    let (
        PublicParameters::Rsa {
            symmetric,
            scheme,
            exponent,
            ..
        },
        PublicUnique::Rsa { modulus },
    ) = (ek.parameters(), ek.unique())
    else {
        return unsupported("an ECC EK (only RSA EKs are supported)".to_string());
    };
    let aes_bits = match *symmetric {
        SymmetricDef::Cipher {
            algorithm: alg::AES,
            key_bits: bits @ (128 | 256),
            mode: alg::CFB,
        } => bits,
        SymmetricDef::Cipher {
            algorithm,
            key_bits,
            mode,
        } => {
            return unsupported(format!(
            "symmetric {algorithm:#06x}-{key_bits}-{mode:#06x} (AES-128-CFB or AES-256-CFB needed)"
        ))
        }
        SymmetricDef::Null => {
            return unsupported("no symmetric algorithm (a storage key has one)".to_string())
        }
    };
    if *scheme != AsymScheme::Null {
        return unsupported(format!(
            "scheme {} (a restricted decryption key has none)",
            crate::tpm_public::describe_scheme(scheme)
        ));
    }
    if modulus.len() > 512 {
        return unsupported(format!(
            "RSA modulus of {} bytes (at most 4096 bits)",
            modulus.len()
        ));
    }
    Ok((modulus, *exponent, aes_bits))
}

fn check_name(name: &[u8]) -> Result<(), CredentialError> {
    let problem = |problem: String| {
        Err(CredentialError::ObjectName {
            len: name.len(),
            problem,
        })
    };
    let Some((id, digest)) = name.split_first_chunk::<2>() else {
        return problem("shorter than an algorithm id".to_string());
    };
    let id = u16::from_be_bytes(*id);
    match HashAlg::from_tpm_id(id) {
        Some(alg) if digest.len() == alg.digest_size() => Ok(()),
        Some(alg) => problem(format!(
            "a {alg} Name has {} digest bytes, this has {}",
            alg.digest_size(),
            digest.len()
        )),
        None => problem(format!("{id:#06x} is not a supported hash algorithm")),
    }
}

fn seal<D>(
    key: &RsaPublicKey,
    seed: &[u8],
    oaep_random: Vec<u8>,
    name: &[u8],
    secret: &[u8],
    aes_bits: u16,
) -> Result<Credential, CredentialError>
where
    D: Digest + DynDigest + BlockSizeUser + Clone + Send + Sync + 'static,
{
    // The seed, encrypted to the EK.
    let mut rng = Prefilled {
        bytes: oaep_random,
        at: 0,
        short: false,
    };
    let encrypted = key
        .encrypt(&mut rng, Oaep::new_with_label::<D, _>("IDENTITY\0"), seed)
        .map_err(|e| CredentialError::Encrypt(e.to_string()))?;
    if rng.short {
        return Err(CredentialError::Encrypt(
            "OAEP asked for more random bytes than its seed".to_string(),
        ));
    }

    // encIdentity: the secret as a TPM2B_DIGEST, AES-CFB with IV 0.
    let sym_key = kdfa::<D>(seed, "STORAGE", name, &[], u32::from(aes_bits))?;
    let mut enc_identity = Vec::with_capacity(2 + secret.len());
    put_tpm2b(&mut enc_identity, secret);
    let iv = [0u8; 16];
    let cfb = |e: aes::cipher::InvalidLength| CredentialError::Encrypt(format!("AES-CFB: {e}"));
    if aes_bits == 128 {
        cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &iv)
            .map_err(cfb)?
            .encrypt(&mut enc_identity);
    } else {
        cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(&sym_key, &iv)
            .map_err(cfb)?
            .encrypt(&mut enc_identity);
    }

    // outerHMAC over encIdentity || name.
    let digest_bits = (<D as Digest>::output_size() * 8) as u32;
    let hmac_key = kdfa::<D>(seed, "INTEGRITY", &[], &[], digest_bits)?;
    let mut mac = <SimpleHmac<D> as Mac>::new_from_slice(&hmac_key)
        .map_err(|e| CredentialError::Encrypt(format!("HMAC: {e}")))?;
    mac.update(&enc_identity);
    mac.update(name);
    let outer_hmac = mac.finalize().into_bytes();

    let mut inner = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    put_tpm2b(&mut inner, &outer_hmac);
    inner.extend_from_slice(&enc_identity);
    let mut id_object = Vec::with_capacity(2 + inner.len());
    put_tpm2b(&mut id_object, &inner);
    let mut encrypted_secret = Vec::with_capacity(2 + encrypted.len());
    put_tpm2b(&mut encrypted_secret, &encrypted);
    Ok(Credential {
        id_object,
        encrypted_secret,
    })
}

/// KDFa (TPM 2.0 Part 1, §11.4.10.2), SP800-108 counter mode with HMAC:
/// K(i) = HMAC(key, [i]32 || label || 0x00 || contextU || contextV || [bits]32).
pub(crate) fn kdfa<D>(
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Result<Vec<u8>, CredentialError>
where
    D: Digest + BlockSizeUser + Clone,
{
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + <D as Digest>::output_size());
    let mut counter: u32 = 1;
    while out.len() < bytes {
        let mut mac = <SimpleHmac<D> as Mac>::new_from_slice(key)
            .map_err(|e| CredentialError::Encrypt(format!("KDFa: {e}")))?;
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter = counter.wrapping_add(1);
    }
    out.truncate(bytes);
    Ok(out)
}

/// Random bytes drawn beforehand from the caller's `SecureRandom` (which
/// can fail, where `RngCore::fill_bytes` cannot), for the OAEP padding.
struct Prefilled {
    bytes: Vec<u8>,
    at: usize,
    /// More was asked for than was drawn: the output is not used.
    short: bool,
}

impl RngCore for Prefilled {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for slot in dest {
            match self.bytes.get(self.at) {
                Some(b) => {
                    *slot = *b;
                    self.at += 1;
                }
                None => {
                    *slot = 0;
                    self.short = true;
                }
            }
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Prefilled {}

#[cfg(test)]
#[path = "credential_tests.rs"]
mod tests;
