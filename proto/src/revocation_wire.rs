//! Revoked certificates: wire ↔ domain.

use vigil_domain as domain;

use crate::admin::v1 as pb;
use crate::WireError;

impl TryFrom<pb::RevokedCertificate> for domain::RevokedCertificate {
    type Error = WireError;

    fn try_from(w: pb::RevokedCertificate) -> Result<Self, WireError> {
        let serial = domain::RevokedCertificate::normalise_serial(&w.serial).ok_or_else(|| {
            WireError::new("serial", format!("{:?} is not a hex serial", w.serial))
        })?;
        Ok(Self {
            serial,
            identity: w.identity,
            reason: w.reason,
            revoked_by: w.revoked_by,
            revoked_at_unix_nanos: w.revoked_at_unix_nanos,
        })
    }
}

impl From<domain::RevokedCertificate> for pb::RevokedCertificate {
    fn from(r: domain::RevokedCertificate) -> Self {
        Self {
            serial: r.serial,
            identity: r.identity,
            reason: r.reason,
            revoked_by: r.revoked_by,
            revoked_at_unix_nanos: r.revoked_at_unix_nanos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_serial_names_the_field() {
        let e = domain::RevokedCertificate::try_from(pb::RevokedCertificate {
            serial: "not hex".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("serial"), "{e}");
    }
}
