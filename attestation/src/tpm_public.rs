//! TPMT_PUBLIC / TPM2B_PUBLIC (TPM 2.0 Part 2, §12.2): the public area of
//! a TPM key, its Name, and whether it may serve as an attestation key (AK)
//! or an endorsement key (EK).

use std::fmt;

use crate::hash_alg::HashAlg;
use crate::tpm_alg as alg;
use crate::wire::{put_tpm2b, ParseError, Reader};

/// TPMA_OBJECT (Part 2, §8.3): the attribute bits of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectAttributes(pub u32);

impl ObjectAttributes {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const ST_CLEAR: u32 = 1 << 2;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const ADMIN_WITH_POLICY: u32 = 1 << 7;
    pub const NO_DA: u32 = 1 << 10;
    pub const ENCRYPTED_DUPLICATION: u32 = 1 << 11;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;

    pub const fn has(self, bit: u32) -> bool {
        self.0 & bit == bit
    }
}

/// TPMT_SYM_DEF_OBJECT: the symmetric algorithm of a storage or
/// endorsement key (TPM_ALG_NULL for a signing key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymmetricDef {
    Null,
    /// `algorithm` is AES, SM4 or CAMELLIA; `mode` is a TPM_ALG_ID (CFB for
    /// a parent key).
    Cipher {
        algorithm: u16,
        key_bits: u16,
        mode: u16,
    },
}

/// TPMT_RSA_SCHEME / TPMT_ECC_SCHEME: the scheme a key is bound to, with
/// its hash algorithm (a raw TPM_ALG_ID: the TPM may name one this crate
/// does not compute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AsymScheme {
    Null,
    RsaSsa {
        hash: u16,
    },
    RsaPss {
        hash: u16,
    },
    RsaEs,
    Oaep {
        hash: u16,
    },
    Ecdsa {
        hash: u16,
    },
    Ecdaa {
        hash: u16,
        count: u16,
    },
    /// ECSCHNORR, SM2, ECDH or ECMQV.
    OtherEcc {
        scheme: u16,
        hash: u16,
    },
}

/// TPMT_KDF_SCHEME of an ECC key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KdfScheme {
    Null,
    Kdf { scheme: u16, hash: u16 },
}

/// A TPM_ECC_CURVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EccCurve {
    P256,
    P384,
    P521,
    Other(u16),
}

impl EccCurve {
    pub const fn from_tpm_id(id: u16) -> EccCurve {
        match id {
            alg::ECC_NIST_P256 => EccCurve::P256,
            alg::ECC_NIST_P384 => EccCurve::P384,
            alg::ECC_NIST_P521 => EccCurve::P521,
            other => EccCurve::Other(other),
        }
    }

    pub const fn tpm_id(self) -> u16 {
        match self {
            EccCurve::P256 => alg::ECC_NIST_P256,
            EccCurve::P384 => alg::ECC_NIST_P384,
            EccCurve::P521 => alg::ECC_NIST_P521,
            EccCurve::Other(id) => id,
        }
    }

    /// The size of a coordinate in bytes, for the curves this crate
    /// verifies with.
    pub const fn coordinate_size(self) -> Option<usize> {
        match self {
            EccCurve::P256 => Some(32),
            EccCurve::P384 => Some(48),
            EccCurve::P521 => Some(66),
            EccCurve::Other(_) => None,
        }
    }
}

impl fmt::Display for EccCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EccCurve::P256 => f.write_str("NIST P-256"),
            EccCurve::P384 => f.write_str("NIST P-384"),
            EccCurve::P521 => f.write_str("NIST P-521"),
            EccCurve::Other(id) => write!(f, "curve {id:#06x}"),
        }
    }
}

/// TPMU_PUBLIC_PARMS for the two asymmetric key types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PublicParameters {
    Rsa {
        symmetric: SymmetricDef,
        scheme: AsymScheme,
        key_bits: u16,
        /// As marshalled: 0 means the default, 65537.
        exponent: u32,
    },
    Ecc {
        symmetric: SymmetricDef,
        scheme: AsymScheme,
        curve: EccCurve,
        kdf: KdfScheme,
    },
}

/// TPMU_PUBLIC_ID: the public key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PublicUnique {
    Rsa { modulus: Vec<u8> },
    Ecc { x: Vec<u8>, y: Vec<u8> },
}

/// The key type of a public area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Rsa,
    Ecc,
}

/// A public key in the form certificates and signature checks compare.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// Big-endian modulus without leading zero bytes, and the exponent
    /// (65537 where the TPM wrote 0).
    Rsa { modulus: Vec<u8>, exponent: u32 },
    /// Big-endian affine coordinates, each as wide as the curve's field.
    Ecc {
        curve: EccCurve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

/// A parsed TPMT_PUBLIC, with the bytes it was read from (its Name hashes
/// them).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TpmPublic {
    name_alg: HashAlg,
    object_attributes: ObjectAttributes,
    auth_policy: Vec<u8>,
    parameters: PublicParameters,
    unique: PublicUnique,
    marshalled: Vec<u8>,
}

/// Why a key may not serve in a role (AK or EK).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    #[error("objectAttributes.{0} is clear")]
    AttributeClear(&'static str),
    #[error("objectAttributes.{0} is set")]
    AttributeSet(&'static str),
    #[error("RSA key of {0} bits (at least 2048 needed)")]
    RsaTooSmall(u16),
    #[error("unique.rsa is {len} bytes, keyBits {key_bits} needs {expected}")]
    ModulusSize {
        len: usize,
        key_bits: u16,
        expected: usize,
    },
    #[error("RSA exponent {0} is not allowed (odd, at least 3)")]
    Exponent(u32),
    #[error("{0} is not NIST P-256 or P-384")]
    Curve(EccCurve),
    #[error("unique.ecc point is {x} and {y} bytes, {curve} needs {expected} each")]
    PointSize {
        curve: EccCurve,
        x: usize,
        y: usize,
        expected: usize,
    },
    #[error("scheme {0} is not a signing scheme for this key type")]
    NotSigningScheme(String),
    #[error("scheme hash {0} is not SHA-256 or stronger")]
    WeakSchemeHash(String),
    #[error("nameAlg {0} is not SHA-256 or stronger")]
    WeakNameAlg(HashAlg),
}

/// The key is not an attestation key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an attestation key: {0}")]
pub struct AkError(pub KeyProblem);

/// The key is not an endorsement key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an endorsement key: {0}")]
pub struct EkError(pub KeyProblem);

const ATTRIBUTE_NAMES: [(u32, &str); 6] = [
    (ObjectAttributes::RESTRICTED, "restricted"),
    (ObjectAttributes::SIGN, "sign"),
    (ObjectAttributes::DECRYPT, "decrypt"),
    (ObjectAttributes::FIXED_TPM, "fixedTPM"),
    (ObjectAttributes::FIXED_PARENT, "fixedParent"),
    (
        ObjectAttributes::SENSITIVE_DATA_ORIGIN,
        "sensitiveDataOrigin",
    ),
];

fn attribute_name(bit: u32) -> &'static str {
    ATTRIBUTE_NAMES
        .iter()
        .find(|(b, _)| *b == bit)
        .map_or("?", |(_, name)| name)
}

impl TpmPublic {
    /// Parses a marshalled TPM2B_PUBLIC (u16 size, then a TPMT_PUBLIC of
    /// that size), as `tpm2_readpublic -o` and `tpm2_createak -u` write it.
    pub fn parse(bytes: &[u8]) -> Result<TpmPublic, ParseError> {
        let mut r = Reader::new(bytes, "TPM2B_PUBLIC");
        let size_at = r.offset();
        let size = usize::from(r.u16_be("size")?);
        let inner = r.take(size, "publicArea")?;
        r.finish()?;
        TpmPublic::parse_tpmt(inner).map_err(|mut e| {
            e.offset += size_at + 2;
            e.within("TPM2B_PUBLIC")
        })
    }

    /// Parses a bare marshalled TPMT_PUBLIC.
    pub fn parse_tpmt(bytes: &[u8]) -> Result<TpmPublic, ParseError> {
        let mut r = Reader::new(bytes, "TPMT_PUBLIC");
        let type_at = r.offset();
        let key_type = r.u16_be("type")?;
        let name_alg_at = r.offset();
        let name_alg_id = r.u16_be("nameAlg")?;
        let name_alg = HashAlg::from_tpm_id(name_alg_id).ok_or_else(|| {
            r.invalid_at(
                name_alg_at,
                "nameAlg",
                format!("{name_alg_id:#06x} is not a supported hash algorithm"),
            )
        })?;
        let object_attributes = ObjectAttributes(r.u32_be("objectAttributes")?);
        let auth_policy = r.tpm2b("authPolicy", alg::MAX_DIGEST)?.to_vec();
        let (parameters, unique) = match key_type {
            alg::RSA => {
                let symmetric = read_symmetric(&mut r)?;
                let scheme = read_scheme(&mut r, KeyType::Rsa)?;
                let bits_at = r.offset();
                let key_bits = r.u16_be("parameters.rsaDetail.keyBits")?;
                if key_bits == 0
                    || key_bits % 8 != 0
                    || usize::from(key_bits / 8) > alg::MAX_RSA_KEY_BYTES
                {
                    return Err(r.invalid_at(
                        bits_at,
                        "parameters.rsaDetail.keyBits",
                        format!("{key_bits} is not a supported RSA key size"),
                    ));
                }
                let exponent = r.u32_be("parameters.rsaDetail.exponent")?;
                let modulus = r.tpm2b("unique.rsa", alg::MAX_RSA_KEY_BYTES)?.to_vec();
                (
                    PublicParameters::Rsa {
                        symmetric,
                        scheme,
                        key_bits,
                        exponent,
                    },
                    PublicUnique::Rsa { modulus },
                )
            }
            alg::ECC => {
                let symmetric = read_symmetric(&mut r)?;
                let scheme = read_scheme(&mut r, KeyType::Ecc)?;
                let curve = EccCurve::from_tpm_id(r.u16_be("parameters.eccDetail.curveID")?);
                let kdf_at = r.offset();
                let kdf = match r.u16_be("parameters.eccDetail.kdf.scheme")? {
                    alg::NULL => KdfScheme::Null,
                    scheme
                    @ (alg::MGF1 | alg::KDF1_SP800_56A | alg::KDF2 | alg::KDF1_SP800_108) => {
                        KdfScheme::Kdf {
                            scheme,
                            hash: r.u16_be("parameters.eccDetail.kdf.details.hashAlg")?,
                        }
                    }
                    other => {
                        return Err(r.invalid_at(
                            kdf_at,
                            "parameters.eccDetail.kdf.scheme",
                            format!("{other:#06x} is not a key derivation scheme"),
                        ))
                    }
                };
                let x = r.tpm2b("unique.ecc.x", alg::MAX_ECC_KEY_BYTES)?.to_vec();
                let y = r.tpm2b("unique.ecc.y", alg::MAX_ECC_KEY_BYTES)?.to_vec();
                (
                    PublicParameters::Ecc {
                        symmetric,
                        scheme,
                        curve,
                        kdf,
                    },
                    PublicUnique::Ecc { x, y },
                )
            }
            other => {
                return Err(r.invalid_at(
                    type_at,
                    "type",
                    format!("{other:#06x} is not an RSA (0x0001) or ECC (0x0023) key"),
                ))
            }
        };
        r.finish()?;
        Ok(TpmPublic {
            name_alg,
            object_attributes,
            auth_policy,
            parameters,
            unique,
            marshalled: bytes.to_vec(),
        })
    }

    /// A public area from its parts (tests, and keys made in software).
    /// `parameters` and `unique` must be of the same key type.
    pub fn from_parts(
        name_alg: HashAlg,
        object_attributes: ObjectAttributes,
        auth_policy: &[u8],
        parameters: PublicParameters,
        unique: PublicUnique,
    ) -> Result<TpmPublic, ParseError> {
        let mut out = Vec::with_capacity(64 + 512);
        let key_type = match parameters {
            PublicParameters::Rsa { .. } => alg::RSA,
            PublicParameters::Ecc { .. } => alg::ECC,
        };
        out.extend_from_slice(&key_type.to_be_bytes());
        out.extend_from_slice(&name_alg.tpm_id().to_be_bytes());
        out.extend_from_slice(&object_attributes.0.to_be_bytes());
        put_tpm2b(&mut out, auth_policy);
        match &parameters {
            PublicParameters::Rsa {
                symmetric,
                scheme,
                key_bits,
                exponent,
            } => {
                put_symmetric(&mut out, symmetric);
                put_scheme(&mut out, scheme);
                out.extend_from_slice(&key_bits.to_be_bytes());
                out.extend_from_slice(&exponent.to_be_bytes());
            }
            PublicParameters::Ecc {
                symmetric,
                scheme,
                curve,
                kdf,
            } => {
                put_symmetric(&mut out, symmetric);
                put_scheme(&mut out, scheme);
                out.extend_from_slice(&curve.tpm_id().to_be_bytes());
                match kdf {
                    KdfScheme::Null => out.extend_from_slice(&alg::NULL.to_be_bytes()),
                    KdfScheme::Kdf { scheme, hash } => {
                        out.extend_from_slice(&scheme.to_be_bytes());
                        out.extend_from_slice(&hash.to_be_bytes());
                    }
                }
            }
        }
        match &unique {
            PublicUnique::Rsa { modulus } => put_tpm2b(&mut out, modulus),
            PublicUnique::Ecc { x, y } => {
                put_tpm2b(&mut out, x);
                put_tpm2b(&mut out, y);
            }
        }
        // Read back: the same checks as a key from a TPM.
        TpmPublic::parse_tpmt(&out)
    }

    /// The marshalled TPM2B_PUBLIC.
    pub fn to_tpm2b(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.marshalled.len() + 2);
        put_tpm2b(&mut out, &self.marshalled);
        out
    }

    /// The marshalled TPMT_PUBLIC.
    pub fn marshalled(&self) -> &[u8] {
        &self.marshalled
    }

    pub fn key_type(&self) -> KeyType {
        match self.parameters {
            PublicParameters::Rsa { .. } => KeyType::Rsa,
            PublicParameters::Ecc { .. } => KeyType::Ecc,
        }
    }

    pub fn name_alg(&self) -> HashAlg {
        self.name_alg
    }

    pub fn object_attributes(&self) -> ObjectAttributes {
        self.object_attributes
    }

    pub fn auth_policy(&self) -> &[u8] {
        &self.auth_policy
    }

    pub fn parameters(&self) -> &PublicParameters {
        &self.parameters
    }

    pub fn unique(&self) -> &PublicUnique {
        &self.unique
    }

    /// The key's Name: nameAlg (u16, big-endian) || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.name_alg.digest_size());
        out.extend_from_slice(&self.name_alg.tpm_id().to_be_bytes());
        out.extend_from_slice(&self.name_alg.hash(&self.marshalled));
        out
    }

    /// The public key, as certificates carry it.
    pub fn public_key(&self) -> PublicKey {
        match (&self.parameters, &self.unique) {
            (PublicParameters::Rsa { exponent, .. }, PublicUnique::Rsa { modulus }) => {
                PublicKey::Rsa {
                    modulus: strip_leading_zeros(modulus).to_vec(),
                    exponent: effective_exponent(*exponent),
                }
            }
            (PublicParameters::Ecc { curve, .. }, PublicUnique::Ecc { x, y }) => PublicKey::Ecc {
                curve: *curve,
                x: x.clone(),
                y: y.clone(),
            },
            // parse_tpmt reads parameters and unique by the same type.
            (PublicParameters::Rsa { exponent, .. }, PublicUnique::Ecc { .. }) => PublicKey::Rsa {
                modulus: Vec::new(),
                exponent: effective_exponent(*exponent),
            },
            (PublicParameters::Ecc { curve, .. }, PublicUnique::Rsa { .. }) => PublicKey::Ecc {
                curve: *curve,
                x: Vec::new(),
                y: Vec::new(),
            },
        }
    }

    /// An attestation key: a restricted signing key bound to its TPM
    /// (restricted, sign, fixedTPM, fixedParent, sensitiveDataOrigin set;
    /// decrypt clear), RSA of at least 2048 bits or ECC on P-256/P-384,
    /// with a nameAlg and any scheme hash of SHA-256 or stronger.
    pub fn check_attestation_key(&self) -> Result<(), AkError> {
        self.check_ak().map_err(AkError)
    }

    fn check_ak(&self) -> Result<(), KeyProblem> {
        let attrs = self.object_attributes;
        for bit in [
            ObjectAttributes::RESTRICTED,
            ObjectAttributes::SIGN,
            ObjectAttributes::FIXED_TPM,
            ObjectAttributes::FIXED_PARENT,
            ObjectAttributes::SENSITIVE_DATA_ORIGIN,
        ] {
            if !attrs.has(bit) {
                return Err(KeyProblem::AttributeClear(attribute_name(bit)));
            }
        }
        if attrs.has(ObjectAttributes::DECRYPT) {
            return Err(KeyProblem::AttributeSet("decrypt"));
        }
        if !self.name_alg.is_strong() {
            return Err(KeyProblem::WeakNameAlg(self.name_alg));
        }
        let (scheme, signing) = match &self.parameters {
            PublicParameters::Rsa { scheme, .. } => {
                self.check_rsa_key()?;
                (
                    *scheme,
                    matches!(
                        scheme,
                        AsymScheme::Null | AsymScheme::RsaSsa { .. } | AsymScheme::RsaPss { .. }
                    ),
                )
            }
            PublicParameters::Ecc { scheme, .. } => {
                self.check_ecc_key()?;
                (
                    *scheme,
                    matches!(scheme, AsymScheme::Null | AsymScheme::Ecdsa { .. }),
                )
            }
        };
        if !signing {
            return Err(KeyProblem::NotSigningScheme(describe_scheme(&scheme)));
        }
        if let AsymScheme::RsaSsa { hash }
        | AsymScheme::RsaPss { hash }
        | AsymScheme::Ecdsa { hash } = scheme
        {
            if !HashAlg::from_tpm_id(hash).is_some_and(HashAlg::is_strong) {
                return Err(KeyProblem::WeakSchemeHash(HashAlg::describe_id(hash)));
            }
        }
        Ok(())
    }

    /// An endorsement key: a restricted decryption key bound to its TPM
    /// (restricted, decrypt, fixedTPM, fixedParent set; sign clear), RSA
    /// of at least 2048 bits or ECC on P-256/P-384.
    pub fn check_endorsement_key(&self) -> Result<(), EkError> {
        self.check_ek().map_err(EkError)
    }

    fn check_ek(&self) -> Result<(), KeyProblem> {
        let attrs = self.object_attributes;
        for bit in [
            ObjectAttributes::RESTRICTED,
            ObjectAttributes::DECRYPT,
            ObjectAttributes::FIXED_TPM,
            ObjectAttributes::FIXED_PARENT,
        ] {
            if !attrs.has(bit) {
                return Err(KeyProblem::AttributeClear(attribute_name(bit)));
            }
        }
        if attrs.has(ObjectAttributes::SIGN) {
            return Err(KeyProblem::AttributeSet("sign"));
        }
        match self.key_type() {
            KeyType::Rsa => self.check_rsa_key(),
            KeyType::Ecc => self.check_ecc_key(),
        }
    }

    fn check_rsa_key(&self) -> Result<(), KeyProblem> {
        if let (
            PublicParameters::Rsa {
                key_bits, exponent, ..
            },
            PublicUnique::Rsa { modulus },
        ) = (&self.parameters, &self.unique)
        {
            if *key_bits < 2048 {
                return Err(KeyProblem::RsaTooSmall(*key_bits));
            }
            let expected = usize::from(*key_bits / 8);
            if modulus.len() != expected || modulus.first().is_none_or(|b| b & 0x80 == 0) {
                return Err(KeyProblem::ModulusSize {
                    len: strip_leading_zeros(modulus).len(),
                    key_bits: *key_bits,
                    expected,
                });
            }
            let e = effective_exponent(*exponent);
            if e < 3 || e.is_multiple_of(2) {
                return Err(KeyProblem::Exponent(e));
            }
        }
        Ok(())
    }

    fn check_ecc_key(&self) -> Result<(), KeyProblem> {
        if let (PublicParameters::Ecc { curve, .. }, PublicUnique::Ecc { x, y }) =
            (&self.parameters, &self.unique)
        {
            let expected = match curve {
                EccCurve::P256 | EccCurve::P384 => curve.coordinate_size().unwrap_or(0),
                other => return Err(KeyProblem::Curve(*other)),
            };
            if x.len() != expected || y.len() != expected {
                return Err(KeyProblem::PointSize {
                    curve: *curve,
                    x: x.len(),
                    y: y.len(),
                    expected,
                });
            }
        }
        Ok(())
    }
}

/// The RSA exponent a marshalled value stands for (0: 65537).
pub(crate) const fn effective_exponent(exponent: u32) -> u32 {
    if exponent == 0 {
        65537
    } else {
        exponent
    }
}

pub(crate) fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(first..).unwrap_or(&[])
}

pub(crate) fn describe_scheme(scheme: &AsymScheme) -> String {
    let hash = |h: &u16| HashAlg::describe_id(*h);
    match scheme {
        AsymScheme::Null => "NULL".to_string(),
        AsymScheme::RsaSsa { hash: h } => format!("RSASSA-{}", hash(h)),
        AsymScheme::RsaPss { hash: h } => format!("RSAPSS-{}", hash(h)),
        AsymScheme::RsaEs => "RSAES".to_string(),
        AsymScheme::Oaep { hash: h } => format!("OAEP-{}", hash(h)),
        AsymScheme::Ecdsa { hash: h } => format!("ECDSA-{}", hash(h)),
        AsymScheme::Ecdaa { hash: h, .. } => format!("ECDAA-{}", hash(h)),
        AsymScheme::OtherEcc { scheme, hash: h } => format!("{scheme:#06x}-{}", hash(h)),
    }
}

fn read_symmetric(r: &mut Reader<'_>) -> Result<SymmetricDef, ParseError> {
    let at = r.offset();
    match r.u16_be("parameters.symmetric.algorithm")? {
        alg::NULL => Ok(SymmetricDef::Null),
        algorithm @ (alg::AES | alg::SM4 | alg::CAMELLIA) => {
            let key_bits = r.u16_be("parameters.symmetric.keyBits")?;
            let mode_at = r.offset();
            let mode = r.u16_be("parameters.symmetric.mode")?;
            if !matches!(
                mode,
                alg::CTR | alg::OFB | alg::CBC | alg::CFB | alg::ECB | alg::NULL
            ) {
                return Err(r.invalid_at(
                    mode_at,
                    "parameters.symmetric.mode",
                    format!("{mode:#06x} is not a block cipher mode"),
                ));
            }
            Ok(SymmetricDef::Cipher {
                algorithm,
                key_bits,
                mode,
            })
        }
        other => Err(r.invalid_at(
            at,
            "parameters.symmetric.algorithm",
            format!("{other:#06x} is not AES, SM4, CAMELLIA or NULL"),
        )),
    }
}

fn read_scheme(r: &mut Reader<'_>, key_type: KeyType) -> Result<AsymScheme, ParseError> {
    let at = r.offset();
    let scheme = r.u16_be("parameters.scheme.scheme")?;
    let hash = |r: &mut Reader<'_>| r.u16_be("parameters.scheme.details.hashAlg");
    let out = match (key_type, scheme) {
        (_, alg::NULL) => AsymScheme::Null,
        (KeyType::Rsa, alg::RSASSA) => AsymScheme::RsaSsa { hash: hash(r)? },
        (KeyType::Rsa, alg::RSAPSS) => AsymScheme::RsaPss { hash: hash(r)? },
        (KeyType::Rsa, alg::RSAES) => AsymScheme::RsaEs,
        (KeyType::Rsa, alg::OAEP) => AsymScheme::Oaep { hash: hash(r)? },
        (KeyType::Ecc, alg::ECDSA) => AsymScheme::Ecdsa { hash: hash(r)? },
        (KeyType::Ecc, alg::ECDAA) => AsymScheme::Ecdaa {
            hash: hash(r)?,
            count: r.u16_be("parameters.scheme.details.count")?,
        },
        (KeyType::Ecc, alg::ECSCHNORR | alg::SM2 | alg::ECDH | alg::ECMQV) => {
            AsymScheme::OtherEcc {
                scheme,
                hash: hash(r)?,
            }
        }
        (_, other) => {
            return Err(r.invalid_at(
                at,
                "parameters.scheme.scheme",
                format!("{other:#06x} is not a scheme for a {key_type:?} key"),
            ))
        }
    };
    Ok(out)
}

fn put_symmetric(out: &mut Vec<u8>, symmetric: &SymmetricDef) {
    match symmetric {
        SymmetricDef::Null => out.extend_from_slice(&alg::NULL.to_be_bytes()),
        SymmetricDef::Cipher {
            algorithm,
            key_bits,
            mode,
        } => {
            out.extend_from_slice(&algorithm.to_be_bytes());
            out.extend_from_slice(&key_bits.to_be_bytes());
            out.extend_from_slice(&mode.to_be_bytes());
        }
    }
}

fn put_scheme(out: &mut Vec<u8>, scheme: &AsymScheme) {
    let mut put = |v: u16| out.extend_from_slice(&v.to_be_bytes());
    match *scheme {
        AsymScheme::Null => put(alg::NULL),
        AsymScheme::RsaSsa { hash } => {
            put(alg::RSASSA);
            put(hash);
        }
        AsymScheme::RsaPss { hash } => {
            put(alg::RSAPSS);
            put(hash);
        }
        AsymScheme::RsaEs => put(alg::RSAES),
        AsymScheme::Oaep { hash } => {
            put(alg::OAEP);
            put(hash);
        }
        AsymScheme::Ecdsa { hash } => {
            put(alg::ECDSA);
            put(hash);
        }
        AsymScheme::Ecdaa { hash, count } => {
            put(alg::ECDAA);
            put(hash);
            put(count);
        }
        AsymScheme::OtherEcc { scheme, hash } => {
            put(scheme);
            put(hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures_tests::fixture;

    fn with(key: &TpmPublic, attrs: u32, parameters: Option<PublicParameters>) -> TpmPublic {
        TpmPublic::from_parts(
            key.name_alg(),
            ObjectAttributes(attrs),
            key.auth_policy(),
            parameters.unwrap_or_else(|| key.parameters().clone()),
            key.unique().clone(),
        )
        .unwrap()
    }

    #[test]
    fn each_missing_ak_property_has_its_reason() {
        let ak = TpmPublic::parse(&fixture("ak.pub")).unwrap();
        let attrs = ak.object_attributes().0;
        for (bit, reason) in [
            (
                ObjectAttributes::RESTRICTED,
                "objectAttributes.restricted is clear",
            ),
            (ObjectAttributes::SIGN, "objectAttributes.sign is clear"),
            (
                ObjectAttributes::FIXED_TPM,
                "objectAttributes.fixedTPM is clear",
            ),
            (
                ObjectAttributes::FIXED_PARENT,
                "objectAttributes.fixedParent is clear",
            ),
            (
                ObjectAttributes::SENSITIVE_DATA_ORIGIN,
                "objectAttributes.sensitiveDataOrigin is clear",
            ),
        ] {
            let e = with(&ak, attrs & !bit, None)
                .check_attestation_key()
                .unwrap_err();
            assert_eq!(e.to_string(), format!("not an attestation key: {reason}"));
        }
        let e = with(&ak, attrs | ObjectAttributes::DECRYPT, None)
            .check_attestation_key()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an attestation key: objectAttributes.decrypt is set"
        );
        let PublicParameters::Rsa {
            symmetric,
            exponent,
            ..
        } = ak.parameters().clone()
        else {
            panic!("RSA AK expected")
        };
        let sha1_scheme = PublicParameters::Rsa {
            symmetric,
            scheme: AsymScheme::RsaSsa { hash: alg::SHA1 },
            key_bits: 2048,
            exponent,
        };
        let e = with(&ak, attrs, Some(sha1_scheme))
            .check_attestation_key()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an attestation key: scheme hash sha1 is not SHA-256 or stronger"
        );
        let oaep = PublicParameters::Rsa {
            symmetric,
            scheme: AsymScheme::Oaep { hash: alg::SHA256 },
            key_bits: 2048,
            exponent,
        };
        let e = with(&ak, attrs, Some(oaep))
            .check_attestation_key()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("OAEP-sha256 is not a signing scheme"),
            "{e}"
        );
        let small = TpmPublic::from_parts(
            HashAlg::Sha256,
            ak.object_attributes(),
            &[],
            PublicParameters::Rsa {
                symmetric,
                scheme: AsymScheme::Null,
                key_bits: 1024,
                exponent: 0,
            },
            PublicUnique::Rsa {
                modulus: vec![0xff; 128],
            },
        )
        .unwrap();
        assert_eq!(
            small.check_attestation_key().unwrap_err().to_string(),
            "not an attestation key: RSA key of 1024 bits (at least 2048 needed)"
        );
    }

    #[test]
    fn ecc_curves_other_than_p256_and_p384_are_refused() {
        let ak = TpmPublic::parse(&fixture("ak-ecc.pub")).unwrap();
        let PublicParameters::Ecc {
            symmetric,
            scheme,
            kdf,
            ..
        } = ak.parameters().clone()
        else {
            panic!("ECC AK expected")
        };
        let p521 = PublicParameters::Ecc {
            symmetric,
            scheme,
            curve: EccCurve::P521,
            kdf,
        };
        let e = with(&ak, ak.object_attributes().0, Some(p521))
            .check_attestation_key()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "not an attestation key: NIST P-521 is not NIST P-256 or P-384"
        );
    }

    #[test]
    fn parse_refusals_say_what_and_where() {
        let ak = fixture("ak.pub");
        let e = TpmPublic::parse(&ak[..100]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "TPM2B_PUBLIC at byte 2: truncated: publicArea needs 280 bytes, 98 left"
        );
        let mut wrong_type = ak.clone();
        wrong_type[3] = 0x25;
        let e = TpmPublic::parse(&wrong_type).unwrap_err();
        assert_eq!(
            e.to_string(),
            "TPM2B_PUBLIC at byte 2: type: 0x0025 is not an RSA (0x0001) or ECC (0x0023) key"
        );
        let mut trailing = ak.clone();
        trailing.push(0);
        assert!(TpmPublic::parse(&trailing).is_err());
        let tpmt = TpmPublic::parse_tpmt(&ak[2..]).unwrap();
        assert_eq!(tpmt, TpmPublic::parse(&ak).unwrap());
    }
}
