use serde::{Deserialize, Serialize};

/// A certificate the fleet no longer trusts: every connection presenting
/// it is refused, and streams it opened end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCertificate {
    /// The certificate's serial, lower-case hex without separators.
    pub serial: String,
    /// Who it named ("agent host-1"), as the revoking operator saw it; for
    /// people, not for decisions.
    pub identity: String,
    pub reason: String,
    /// Who revoked it.
    pub revoked_by: String,
    pub revoked_at_unix_nanos: i64,
}

impl RevokedCertificate {
    /// Whether `serial` is what a revocation can name: 1 to 40 bytes of
    /// hex (RFC 5280 serials are at most 20 octets), normalised to lower
    /// case without separators (`:` as `openssl x509 -serial` prints
    /// them is accepted).
    pub fn normalise_serial(serial: &str) -> Option<String> {
        let s: String = serial
            .trim()
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        let s = s.trim_start_matches("0x");
        if s.is_empty() || s.len() > 40 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // Leading zeros go: DER adds a 00 byte before a serial whose high
        // bit is set, and tools print serials with or without it.
        let s = s.trim_start_matches('0');
        Some(if s.is_empty() { "0" } else { s }.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalised_or_refused() {
        assert_eq!(
            RevokedCertificate::normalise_serial(" 0A:1b:FF "),
            Some("a1bff".into())
        );
        assert_eq!(
            RevokedCertificate::normalise_serial("00:8f:01"),
            RevokedCertificate::normalise_serial("8F01")
        );
        for bad in ["", "xyz", "0a 1b", &"a".repeat(41)] {
            assert_eq!(RevokedCertificate::normalise_serial(bad), None, "{bad:?}");
        }
    }
}
