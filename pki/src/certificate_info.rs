//! What a certificate says, read with x509-parser: for `vigilctl`, for
//! revocation (by serial) and for rotation (by expiry).

use crate::identity::{vigil_uris, Identity, IdentityError};

#[derive(Debug, thiserror::Error)]
pub enum CertificateInfoError {
    #[error("no PEM certificate: {0}")]
    Pem(String),
    #[error("the certificate cannot be parsed: {0}")]
    Parse(String),
}

/// The parts of a certificate vigil uses.
#[derive(Debug, Clone)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    /// Lower-case hex, no separators, no leading zeros (DER's sign byte
    /// included): what revocation names.
    pub serial_hex: String,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub is_ca: bool,
    /// The vigil identity it names, if exactly one.
    pub identity: Result<Identity, IdentityError>,
    /// DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
}

impl CertificateInfo {
    pub fn from_pem(pem: &str) -> Result<Self, CertificateInfoError> {
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map_err(|e| CertificateInfoError::Pem(e.to_string()))?;
        if block.label != "CERTIFICATE" {
            return Err(CertificateInfoError::Pem(format!(
                "a {:?} block, not a CERTIFICATE",
                block.label
            )));
        }
        Self::from_der(&block.contents)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, CertificateInfoError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertificateInfoError::Parse(e.to_string()))?;
        let identity = match vigil_uris(&cert) {
            Ok(uris) => match uris.as_slice() {
                [] => Err(IdentityError::NoIdentity),
                [one] => Identity::from_uri(one),
                many => Err(IdentityError::ManyIdentities(many.len())),
            },
            Err(e) => Err(e),
        };
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial_hex: {
                let hex = hex::encode(cert.raw_serial());
                let trimmed = hex.trim_start_matches('0');
                if trimmed.is_empty() {
                    "0".into()
                } else {
                    trimmed.to_string()
                }
            },
            not_before_unix: cert.validity().not_before.timestamp(),
            not_after_unix: cert.validity().not_after.timestamp(),
            is_ca,
            identity,
            public_key_der: cert.public_key().raw.to_vec(),
        })
    }

    /// Whether it expires within `secs` of `now_unix` (time to rotate).
    pub fn expires_within(&self, now_unix: i64, secs: i64) -> bool {
        self.not_after_unix - now_unix <= secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for input in [
            "",
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            assert!(CertificateInfo::from_pem(input).is_err(), "{input:?}");
        }
        assert!(CertificateInfo::from_der(&[0x30, 0x82, 0xff, 0xff]).is_err());
        assert!(Identity::from_certificate_der(&[]).is_err());
    }
}
