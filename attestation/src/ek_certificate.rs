//! The EK certificate (TCG EK Credential Profile): the TPM manufacturer's
//! statement that an EK lives in one of its TPMs, checked up to a root the
//! operator configured.
//!
//! EK certificates are odd by web PKI standards (an empty subject, a
//! critical subjectAltName holding only a directoryName with the TPM's
//! manufacturer, model and firmware version, TCG policy OIDs): nothing is
//! refused for extensions; what is checked is the chain (signatures, names
//! and key identifiers, validity at the time given, CA flags and path
//! lengths of issuers) and the certified key's type.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_NIST_EC_P384};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as X509PublicKey;

use crate::tpm_public::{strip_leading_zeros, EccCurve, PublicKey, TpmPublic};

/// Longest chain tried: leaf, up to 6 intermediates, root.
const MAX_DEPTH: usize = 8;

/// TPM identity from the certificate's subjectAltName (TCG OIDs
/// 2.23.133.2.1-3), as written there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TpmInfo {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub version: Option<String>,
}

/// An EK certificate whose chain verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkCertificate {
    der: Vec<u8>,
    public_key: PublicKey,
    subject: String,
    issuer: String,
    serial: String,
    not_before: i64,
    not_after: i64,
    tpm_info: TpmInfo,
    /// Issuers from the leaf's up to the root, as DER.
    chain: Vec<Vec<u8>>,
}

/// Why an EK certificate was refused. Each kind has a stable
/// `reason_code()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EkCertError {
    #[error(
        "untrusted CA: no chain from \"{subject}\" (issued by \"{issuer}\") to a configured root"
    )]
    UntrustedCa { subject: String, issuer: String },
    #[error("signature: \"{subject}\" does not verify with the key of \"{issuer}\": {problem}")]
    Signature {
        subject: String,
        issuer: String,
        problem: String,
    },
    #[error("expired: \"{subject}\" was valid until {not_after} (unix seconds), now is {now}")]
    Expired {
        subject: String,
        not_after: i64,
        now: i64,
    },
    #[error(
        "not yet valid: \"{subject}\" is valid from {not_before} (unix seconds), now is {now}"
    )]
    NotYetValid {
        subject: String,
        not_before: i64,
        now: i64,
    },
    #[error("not a CA: \"{subject}\" issues certificates but {problem}")]
    NotACa { subject: String, problem: String },
    #[error("wrong key type: the EK certificate's key is {0} (RSA of 2048 bits or more, or ECC P-256/P-384, needed)")]
    KeyType(String),
    #[error("malformed {what}: {problem}")]
    Malformed { what: String, problem: String },
    /// The certificate says it is for something else: a CA, or an
    /// extended key usage without tcg-kp-EKCertificate (2.23.133.8.1): a
    /// TLS or signing certificate from a TPM vendor's CA is no EK's.
    #[error("not an EK certificate: \"{subject}\" {problem}")]
    NotAnEkCertificate { subject: String, problem: String },
}

impl EkCertError {
    /// A short, stable machine code.
    pub fn reason_code(&self) -> &'static str {
        match self {
            EkCertError::UntrustedCa { .. } => "untrusted-ca",
            EkCertError::Signature { .. } => "signature",
            EkCertError::Expired { .. } => "expired",
            EkCertError::NotYetValid { .. } => "not-yet-valid",
            EkCertError::NotACa { .. } => "not-a-ca",
            EkCertError::KeyType(_) => "key-type",
            EkCertError::Malformed { .. } => "malformed",
            EkCertError::NotAnEkCertificate { .. } => "not-an-ek-certificate",
        }
    }
}

/// The DER SEQUENCE at the start of `bytes`, cut to its encoded length
/// (an EK certificate NV index may be padded after the certificate).
/// Returns `bytes` unchanged if they do not start with a SEQUENCE whose
/// length they hold.
pub fn der_prefix(bytes: &[u8]) -> &[u8] {
    let header = match bytes {
        [0x30, len, ..] if *len < 0x80 => Some((2usize, usize::from(*len))),
        [0x30, 0x81, a, ..] => Some((3, usize::from(*a))),
        [0x30, 0x82, a, b, ..] => Some((4, usize::from(*a) << 8 | usize::from(*b))),
        [0x30, 0x83, a, b, c, ..] => Some((
            5,
            usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c),
        )),
        _ => None,
    };
    header
        .and_then(|(h, len)| h.checked_add(len))
        .and_then(|end| bytes.get(..end))
        .unwrap_or(bytes)
}

/// The certificates in PEM text, as DER, in order.
pub fn pem_certificates(text: &[u8]) -> Result<Vec<Vec<u8>>, EkCertError> {
    let mut out = Vec::new();
    for (i, pem) in x509_parser::pem::Pem::iter_from_buffer(text).enumerate() {
        let pem = pem.map_err(|e| EkCertError::Malformed {
            what: format!("PEM block {i}"),
            problem: e.to_string(),
        })?;
        if pem.label == "CERTIFICATE" {
            out.push(pem.contents);
        }
    }
    if out.is_empty() {
        return Err(EkCertError::Malformed {
            what: "PEM text".to_string(),
            problem: "no CERTIFICATE block".to_string(),
        });
    }
    Ok(out)
}

fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, EkCertError> {
    let malformed = |problem: String| EkCertError::Malformed {
        what: what.to_string(),
        problem,
    };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the certificate (NV padding? cut it with der_prefix)",
            rest.len()
        )));
    }
    Ok(cert)
}

fn describe(cert: &X509Certificate<'_>) -> String {
    let s = cert.subject().to_string();
    if s.is_empty() {
        format!("serial {}", cert.raw_serial_as_string())
    } else {
        s
    }
}

fn check_time(cert: &X509Certificate<'_>, now: i64) -> Result<(), EkCertError> {
    let v = cert.validity();
    if now < v.not_before.timestamp() {
        return Err(EkCertError::NotYetValid {
            subject: describe(cert),
            not_before: v.not_before.timestamp(),
            now,
        });
    }
    if now > v.not_after.timestamp() {
        return Err(EkCertError::Expired {
            subject: describe(cert),
            not_after: v.not_after.timestamp(),
            now,
        });
    }
    Ok(())
}

/// `issuer` may issue a certificate with `below` CA certificates between
/// it and the leaf.
fn check_ca(issuer: &X509Certificate<'_>, below: usize) -> Result<(), EkCertError> {
    let not_a_ca = |problem: String| EkCertError::NotACa {
        subject: describe(issuer),
        problem,
    };
    match issuer.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(max) = bc.value.path_len_constraint {
                if below > max as usize {
                    return Err(not_a_ca(format!(
                        "its pathLenConstraint {max} allows fewer than the {below} CAs below it"
                    )));
                }
            }
        }
        Ok(Some(_)) => return Err(not_a_ca("basicConstraints cA is false".to_string())),
        Ok(None) => return Err(not_a_ca("has no basicConstraints".to_string())),
        Err(e) => return Err(not_a_ca(format!("basicConstraints unreadable: {e}"))),
    }
    match issuer.key_usage() {
        Ok(Some(ku)) if !ku.value.key_cert_sign() => {
            Err(not_a_ca("keyUsage lacks keyCertSign".to_string()))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(not_a_ca(format!("keyUsage unreadable: {e}"))),
    }
}

fn subject_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        })
}

fn authority_key_id<'a>(cert: &'a X509Certificate<'_>) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        })
}

/// `issuer` is named as `cert`'s issuer (subject name, and key
/// identifiers where both carry them).
fn names_issuer(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return false;
    }
    match (authority_key_id(cert), subject_key_id(issuer)) {
        (Some(aki), Some(ski)) => aki == ski,
        _ => true,
    }
}

struct Search<'a, 'b> {
    intermediates: &'b [X509Certificate<'a>],
    roots: &'b [X509Certificate<'a>],
    now: i64,
    /// The most telling refusal met on a path that did not complete.
    first_error: Option<EkCertError>,
}

/// Where a step of the path came from.
#[derive(Clone, Copy)]
enum Issuer {
    Intermediate(usize),
    Root(usize),
}

impl<'a> Search<'a, '_> {
    fn note(&mut self, e: EkCertError) {
        if self.first_error.is_none() {
            self.first_error = Some(e);
        }
    }

    fn step(
        &mut self,
        cert: &X509Certificate<'a>,
        issuer: &X509Certificate<'a>,
        below: usize,
    ) -> bool {
        if let Err(e) = cert.verify_signature(Some(issuer.public_key())) {
            self.note(EkCertError::Signature {
                subject: describe(cert),
                issuer: describe(issuer),
                problem: e.to_string(),
            });
            return false;
        }
        if let Err(e) = check_time(issuer, self.now).and_then(|()| check_ca(issuer, below)) {
            self.note(e);
            return false;
        }
        true
    }

    /// A path from `cert` (with `below` CAs between it and the leaf) to a
    /// root, not reusing the intermediates in `path`.
    fn extend(&mut self, cert: &X509Certificate<'a>, below: usize, path: &mut Vec<Issuer>) -> bool {
        for (i, root) in self.roots.iter().enumerate() {
            if names_issuer(cert, root) && self.step(cert, root, below) {
                path.push(Issuer::Root(i));
                return true;
            }
        }
        if path.len() + 2 >= MAX_DEPTH {
            return false;
        }
        for (i, inter) in self.intermediates.iter().enumerate() {
            if path
                .iter()
                .any(|p| matches!(p, Issuer::Intermediate(j) if *j == i))
            {
                continue;
            }
            if names_issuer(cert, inter) && self.step(cert, inter, below) {
                path.push(Issuer::Intermediate(i));
                if self.extend(inter, below + 1, path) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
}

fn certified_key(cert: &X509Certificate<'_>) -> Result<PublicKey, EkCertError> {
    let spki = cert.public_key();
    let key = spki.parsed().map_err(|e| EkCertError::Malformed {
        what: "EK certificate".to_string(),
        problem: format!("subjectPublicKeyInfo: {e}"),
    })?;
    match key {
        X509PublicKey::RSA(rsa) => {
            let modulus = strip_leading_zeros(rsa.modulus);
            let bits = (modulus.len() * 8)
                .saturating_sub(modulus.first().map_or(8, |b| b.leading_zeros() as usize));
            if bits < 2048 {
                return Err(EkCertError::KeyType(format!("RSA-{bits}")));
            }
            let e = strip_leading_zeros(rsa.exponent);
            if e.len() > 4 {
                return Err(EkCertError::KeyType(format!(
                    "RSA with a {}-byte exponent",
                    e.len()
                )));
            }
            let exponent = e.iter().fold(0u32, |acc, b| acc << 8 | u32::from(*b));
            Ok(PublicKey::Rsa {
                modulus: modulus.to_vec(),
                exponent,
            })
        }
        X509PublicKey::EC(point) => {
            let curve_oid = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            let curve = match curve_oid {
                Some(oid) if oid == OID_EC_P256 => EccCurve::P256,
                Some(oid) if oid == OID_NIST_EC_P384 => EccCurve::P384,
                Some(oid) => return Err(EkCertError::KeyType(format!("ECC on curve {oid}"))),
                None => {
                    return Err(EkCertError::KeyType(
                        "ECC without a named curve".to_string(),
                    ))
                }
            };
            let size = curve.coordinate_size().unwrap_or(0);
            match point.data() {
                [4, xy @ ..] if xy.len() == 2 * size => {
                    let (x, y) = xy.split_at(size);
                    Ok(PublicKey::Ecc {
                        curve,
                        x: x.to_vec(),
                        y: y.to_vec(),
                    })
                }
                other => Err(EkCertError::KeyType(format!(
                    "ECC {curve} with a {}-byte point that is not uncompressed",
                    other.len()
                ))),
            }
        }
        X509PublicKey::DSA(_) => Err(EkCertError::KeyType("DSA".to_string())),
        other => Err(EkCertError::KeyType(
            format!("{other:?}").chars().take(40).collect(),
        )),
    }
}

/// tcg-kp-EKCertificate (TCG EK Credential Profile).
const TCG_KP_EK_CERTIFICATE: &str = "2.23.133.8.1";

/// An EK certificate is no CA, and its extended key usage, when it has
/// one, names tcg-kp-EKCertificate (some vendors' certificates have none:
/// those are taken).
fn check_ek_purpose(leaf: &X509Certificate<'_>) -> Result<(), EkCertError> {
    let refuse = |problem: String| EkCertError::NotAnEkCertificate {
        subject: describe(leaf),
        problem,
    };
    if let Ok(Some(bc)) = leaf.basic_constraints() {
        if bc.value.ca {
            return Err(refuse("is a CA certificate".into()));
        }
    }
    match leaf.extended_key_usage() {
        Ok(None) => Ok(()),
        Ok(Some(eku)) => {
            let eku = &eku.value;
            if eku
                .other
                .iter()
                .any(|oid| oid.to_id_string() == TCG_KP_EK_CERTIFICATE)
            {
                Ok(())
            } else {
                Err(refuse(format!(
                    "has an extended key usage without tcg-kp-EKCertificate ({TCG_KP_EK_CERTIFICATE}){}",
                    if eku.server_auth || eku.client_auth || eku.code_signing {
                        " (it is for TLS or code signing)"
                    } else {
                        ""
                    }
                )))
            }
        }
        Err(e) => Err(EkCertError::Malformed {
            what: "EK certificate extended key usage".into(),
            problem: e.to_string(),
        }),
    }
}

fn tpm_info(cert: &X509Certificate<'_>) -> TpmInfo {
    let mut info = TpmInfo::default();
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return info;
    };
    for name in &san.value.general_names {
        if let GeneralName::DirectoryName(dn) = name {
            for attr in dn.iter_attributes() {
                let value = attr.as_str().ok().map(str::to_string);
                match attr.attr_type().to_id_string().as_str() {
                    "2.23.133.2.1" => info.manufacturer = value,
                    "2.23.133.2.2" => info.model = value,
                    "2.23.133.2.3" => info.version = value,
                    _ => {}
                }
            }
        }
    }
    info
}

impl EkCertificate {
    /// Verifies `cert_der` (DER; see [`der_prefix`] for NV contents)
    /// through `intermediates` to one of `roots` (DER; see
    /// [`pem_certificates`]) at `now_unix_secs`.
    pub fn verify(
        cert_der: &[u8],
        intermediates: &[Vec<u8>],
        roots: &[Vec<u8>],
        now_unix_secs: i64,
    ) -> Result<EkCertificate, EkCertError> {
        let leaf = parse(cert_der, "EK certificate")?;
        let intermediates: Vec<X509Certificate<'_>> = intermediates
            .iter()
            .enumerate()
            .map(|(i, der)| parse(der, &format!("intermediate certificate {i}")))
            .collect::<Result<_, _>>()?;
        let roots: Vec<X509Certificate<'_>> = roots
            .iter()
            .enumerate()
            .map(|(i, der)| parse(der, &format!("root certificate {i}")))
            .collect::<Result<_, _>>()?;
        let public_key = certified_key(&leaf)?;
        check_ek_purpose(&leaf)?;
        check_time(&leaf, now_unix_secs)?;
        let mut search = Search {
            intermediates: &intermediates,
            roots: &roots,
            now: now_unix_secs,
            first_error: None,
        };
        let mut path = Vec::new();
        if !search.extend(&leaf, 0, &mut path) {
            return Err(search
                .first_error
                .unwrap_or_else(|| EkCertError::UntrustedCa {
                    subject: describe(&leaf),
                    issuer: leaf.issuer().to_string(),
                }));
        }
        let chain = path
            .iter()
            .map(|step| match *step {
                Issuer::Intermediate(i) => intermediates.get(i).map(|c| c.as_ref().to_vec()),
                Issuer::Root(i) => roots.get(i).map(|c| c.as_ref().to_vec()),
            })
            .map(Option::unwrap_or_default)
            .collect();
        Ok(EkCertificate {
            der: cert_der.to_vec(),
            public_key,
            subject: leaf.subject().to_string(),
            issuer: leaf.issuer().to_string(),
            serial: leaf.raw_serial_as_string(),
            not_before: leaf.validity().not_before.timestamp(),
            not_after: leaf.validity().not_after.timestamp(),
            tpm_info: tpm_info(&leaf),
            chain,
        })
    }

    /// The certified EK, as [`TpmPublic::public_key`] gives it.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    /// This certificate certifies `ek`: the same RSA modulus and
    /// exponent, or the same ECC curve and point.
    pub fn matches(&self, ek: &TpmPublic) -> bool {
        match (&self.public_key, ek.public_key()) {
            (
                PublicKey::Rsa { modulus, exponent },
                PublicKey::Rsa {
                    modulus: m,
                    exponent: e,
                },
            ) => *exponent == e && modulus.as_slice() == strip_leading_zeros(&m),
            (
                PublicKey::Ecc { curve, x, y },
                PublicKey::Ecc {
                    curve: c,
                    x: ex,
                    y: ey,
                },
            ) => {
                *curve == c
                    && strip_leading_zeros(x) == strip_leading_zeros(&ex)
                    && strip_leading_zeros(y) == strip_leading_zeros(&ey)
            }
            _ => false,
        }
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The serial number, hex with colons (`01:02`).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn not_before(&self) -> i64 {
        self.not_before
    }

    pub fn not_after(&self) -> i64 {
        self.not_after
    }

    pub fn tpm_info(&self) -> &TpmInfo {
        &self.tpm_info
    }

    /// The issuers the chain went through, the root last, as DER.
    pub fn chain(&self) -> &[Vec<u8>] {
        &self.chain
    }
}

#[cfg(test)]
#[path = "ek_certificate_tests.rs"]
mod tests;
