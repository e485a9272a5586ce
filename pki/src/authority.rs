//! A fleet's certificate authority: makes itself, and issues certificates
//! that name one [`Identity`].

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use std::net::IpAddr;
use time::{Duration, OffsetDateTime};

use crate::identity::{Identity, IdentityError};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{what}: {source}")]
    Certificate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("the CA certificate and key do not belong together")]
    KeyMismatch,
    #[error("the CA certificate is not a CA (basicConstraints CA:TRUE missing)")]
    NotACa,
    #[error("validity: {0}")]
    Validity(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("DNS name {0:?} is not valid in a certificate")]
    DnsName(String),
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Certificate { what, source }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub identity: Identity,
    /// Names a client dials this party by (nodes: the addresses agents,
    /// peers and operators use). Only nodes serve TLS.
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl LeafRequest {
    /// Valid from an hour before `now` (clocks differ) for `days`.
    pub fn new(identity: Identity, now: OffsetDateTime, days: u32) -> Self {
        Self {
            identity,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// A certificate and the private key it certifies, both PEM.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The fleet's CA: its certificate and signing key.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA (ECDSA P-256) named `name`, valid for `days` from `now`.
    pub fn init(name: &str, now: OffsetDateTime, days: u32) -> Result<Self, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "vigil");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(i64::from(days));
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(cert_err("making the CA key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(cert_err("signing the CA certificate"))?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA from its PEM certificate and key (as `init` wrote them).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(cert_err("reading the CA key"))?;
        let info = crate::CertificateInfo::from_pem(cert_pem)
            .map_err(|e| PkiError::Validity(e.to_string()))?;
        if !info.is_ca {
            return Err(PkiError::NotACa);
        }
        if info.public_key_der != key.subject_public_key_info() {
            return Err(PkiError::KeyMismatch);
        }
        let key_pem_owned = key.serialize_pem();
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(cert_err("reading the CA certificate"))?;
        Ok(Self {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem_owned,
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM): write it 0600, keep it off the fleet.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for `request` with a key made here.
    pub fn issue(&self, request: &LeafRequest) -> Result<IssuedCertificate, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(cert_err("making a key"))?;
        let cert = leaf_params(request)?
            .signed_by(&key, &self.issuer)
            .map_err(cert_err("signing the certificate"))?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A certificate for the key in a PEM certificate request (its
    /// signature checked), naming `request`'s identity. Whatever names,
    /// subject or extensions the request asks for are ignored.
    pub fn sign_request(&self, csr_pem: &str, request: &LeafRequest) -> Result<String, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(cert_err("reading the certificate request"))?;
        let cert = leaf_params(request)?
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(cert_err("signing the certificate"))?;
        Ok(cert.pem())
    }
}

/// A certificate request (PEM) and its new private key (PEM): what an
/// agent sends to enroll, keeping the key.
pub fn certificate_request() -> Result<(String, String), PkiError> {
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err("making a key"))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(cert_err("making the certificate request"))?;
    let pem = csr
        .pem()
        .map_err(cert_err("encoding the certificate request"))?;
    Ok((pem, key.serialize_pem()))
}

/// A certificate request (PEM) for an existing private key (PEM): a
/// renewal asked again for the key it was first asked for.
pub fn certificate_request_for(key_pem: &str) -> Result<String, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(cert_err("reading the private key"))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(cert_err("making the certificate request"))?;
    csr.pem()
        .map_err(cert_err("encoding the certificate request"))
}

/// The DER SubjectPublicKeyInfo a certificate request (PEM) asks for (its
/// signature verified).
pub fn public_key_info_of_request(csr_pem: &str) -> Result<Vec<u8>, PkiError> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(cert_err("reading the certificate request"))?;
    Ok(csr.public_key.subject_public_key_info())
}

/// The DER SubjectPublicKeyInfo of a private key (PEM): what
/// [`crate::CertificateInfo::public_key_der`] of its certificate is, so a
/// key and a certificate can be checked to belong together.
pub fn public_key_info_of(key_pem: &str) -> Result<Vec<u8>, PkiError> {
    let key = KeyPair::from_pem(key_pem).map_err(cert_err("reading the private key"))?;
    Ok(key.subject_public_key_info())
}

fn leaf_params(request: &LeafRequest) -> Result<CertificateParams, PkiError> {
    if request.not_after <= request.not_before {
        return Err(PkiError::Validity(format!(
            "not_after {} is not after not_before {}",
            request.not_after, request.not_before
        )));
    }
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "vigil");
    dn.push(DnType::CommonName, request.identity.to_string());
    params.distinguished_name = dn;
    let uri = request
        .identity
        .uri()
        .try_into()
        .map_err(cert_err("the identity URI"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    for name in &request.dns_names {
        let dns = name
            .as_str()
            .try_into()
            .map_err(|_| PkiError::DnsName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    for ip in &request.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match request.identity {
        // Nodes serve agents, operators and peers, and dial peers.
        Identity::Node { .. } => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    params.not_before = request.not_before;
    params.not_after = request.not_after;
    params.serial_number = Some(random_serial());
    Ok(params)
}

/// 16 random bytes, positive: the serial a revocation names.
fn random_serial() -> SerialNumber {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateInfo, OperatorRole};

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn issued_certificates_name_their_identity() {
        let ca = CertificateAuthority::init("fleet", now(), 3650).unwrap();
        let mut req = LeafRequest::new(Identity::node("cp1").unwrap(), now(), 90);
        req.dns_names.push("cp1.example".into());
        req.ip_addresses.push("127.0.0.1".parse().unwrap());
        let issued = ca.issue(&req).unwrap();
        let info = CertificateInfo::from_pem(&issued.cert_pem).unwrap();
        assert_eq!(info.identity.unwrap(), Identity::node("cp1").unwrap());
        assert!(!info.is_ca);
        assert_eq!(
            info.issuer,
            CertificateInfo::from_pem(ca.cert_pem()).unwrap().subject
        );
        assert!((1..=32).contains(&info.serial_hex.len()));
        assert!(!info.serial_hex.starts_with('0'));
    }

    #[test]
    fn a_request_cannot_choose_its_identity() {
        let ca = CertificateAuthority::init("fleet", now(), 3650).unwrap();
        // A request asking to be an admin operator and a node...
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut asked = CertificateParams::new(vec!["cp1.example".to_string()]).unwrap();
        asked.subject_alt_names.push(SanType::URI(
            Identity::operator(OperatorRole::Admin, "mallory")
                .unwrap()
                .uri()
                .try_into()
                .unwrap(),
        ));
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        // ...gets what the CA decided: an agent, not a CA.
        let req = LeafRequest::new(Identity::agent("host-7").unwrap(), now(), 30);
        let cert = ca.sign_request(&csr, &req).unwrap();
        let info = CertificateInfo::from_pem(&cert).unwrap();
        assert_eq!(info.identity.unwrap(), Identity::agent("host-7").unwrap());
        assert!(!info.is_ca);
        assert_eq!(info.public_key_der, key.subject_public_key_info());
    }

    #[test]
    fn a_forged_request_signature_is_refused() {
        let ca = CertificateAuthority::init("fleet", now(), 3650).unwrap();
        let (csr, _key) = certificate_request().unwrap();
        // Flip one base64 character inside the body.
        let mut lines: Vec<String> = csr.lines().map(String::from).collect();
        let mid = &mut lines[3];
        let c = if mid.starts_with('A') { "B" } else { "A" };
        mid.replace_range(0..1, c);
        let forged = lines.join("\n");
        let req = LeafRequest::new(Identity::agent("a").unwrap(), now(), 30);
        assert!(ca.sign_request(&forged, &req).is_err());
    }

    #[test]
    fn the_ca_reloads_and_refuses_a_foreign_key() {
        let ca = CertificateAuthority::init("fleet", now(), 3650).unwrap();
        let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        let req = LeafRequest::new(Identity::agent("a").unwrap(), now(), 1);
        let leaf = again.issue(&req).unwrap();
        assert_eq!(
            CertificateInfo::from_pem(&leaf.cert_pem).unwrap().issuer,
            CertificateInfo::from_pem(ca.cert_pem()).unwrap().subject
        );
        let other = CertificateAuthority::init("other", now(), 10).unwrap();
        assert!(matches!(
            CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()),
            Err(PkiError::KeyMismatch)
        ));
        // A leaf is not a CA.
        assert!(matches!(
            CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem),
            Err(PkiError::NotACa)
        ));
    }
}
