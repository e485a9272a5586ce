//! Who is on the other end of a connection, as a certificate says it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The SPIFFE trust domain of every vigil identity URI.
pub const TRUST_DOMAIN: &str = "vigil";

/// What an operator may do. `Viewer` < `Analyst` < `Admin`;
/// `SiemReader` reads the SIEM export and nothing else (an admin may too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperatorRole {
    /// Reads alerts, agents, policy and the audit log.
    Viewer,
    /// A viewer who may also acknowledge alerts and unfreeze.
    Analyst,
    /// Everything: policy, approvals, revocation, enrollment tokens.
    Admin,
    /// Reads the SIEM stream only.
    SiemReader,
}

impl OperatorRole {
    pub const ALL: [OperatorRole; 4] = [
        OperatorRole::Viewer,
        OperatorRole::Analyst,
        OperatorRole::Admin,
        OperatorRole::SiemReader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OperatorRole::Viewer => "viewer",
            OperatorRole::Analyst => "analyst",
            OperatorRole::Admin => "admin",
            OperatorRole::SiemReader => "siem-reader",
        }
    }

    /// Whether a caller with this role may do what `needed` may.
    pub fn allows(self, needed: OperatorRole) -> bool {
        let rank = |r: OperatorRole| match r {
            OperatorRole::Viewer => Some(0),
            OperatorRole::Analyst => Some(1),
            OperatorRole::Admin => Some(2),
            OperatorRole::SiemReader => None,
        };
        match (rank(self), rank(needed)) {
            (Some(have), Some(need)) => have >= need,
            _ => self == needed || self == OperatorRole::Admin,
        }
    }
}

impl std::str::FromStr for OperatorRole {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole(s.to_string()))
    }
}

/// A party to a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Identity {
    /// A control-plane node.
    Node { id: String },
    /// A host agent.
    Agent { id: String },
    /// A person or tool using vigilctl, the dashboard or the SIEM export.
    Operator { role: OperatorRole, name: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a vigil identity URI (want spiffe://{TRUST_DOMAIN}/agent|node/<id> or spiffe://{TRUST_DOMAIN}/operator/<role>/<name>): {0:?}")]
    NotVigilUri(String),
    #[error("unknown operator role {0:?} (viewer, analyst, admin, siem-reader)")]
    UnknownRole(String),
    #[error("{what} {value:?}: use 1 to 128 of A-Z a-z 0-9 . _ - (not starting with . or -)")]
    BadName { what: &'static str, value: String },
    #[error("the certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("the certificate names no vigil identity (no spiffe://{TRUST_DOMAIN}/ URI)")]
    NoIdentity,
    #[error("the certificate names {0} vigil identities; exactly one is allowed")]
    ManyIdentities(usize),
}

/// Names inside identities: what agent ids, node ids and operator names
/// may be. Plain enough for a URI path segment, a file name and a log.
fn check_name(what: &'static str, value: &str) -> Result<(), IdentityError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.starts_with(['.', '-'])
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

impl Identity {
    pub fn agent(id: &str) -> Result<Self, IdentityError> {
        check_name("agent id", id)?;
        Ok(Identity::Agent { id: id.into() })
    }

    pub fn node(id: &str) -> Result<Self, IdentityError> {
        check_name("node id", id)?;
        Ok(Identity::Node { id: id.into() })
    }

    pub fn operator(role: OperatorRole, name: &str) -> Result<Self, IdentityError> {
        check_name("operator name", name)?;
        Ok(Identity::Operator {
            role,
            name: name.into(),
        })
    }

    /// The URI written into the certificate's subjectAltName.
    pub fn uri(&self) -> String {
        match self {
            Identity::Node { id } => format!("spiffe://{TRUST_DOMAIN}/node/{id}"),
            Identity::Agent { id } => format!("spiffe://{TRUST_DOMAIN}/agent/{id}"),
            Identity::Operator { role, name } => {
                format!("spiffe://{TRUST_DOMAIN}/operator/{}/{name}", role.as_str())
            }
        }
    }

    /// Reads an identity URI back; anything else is an error.
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::NotVigilUri(uri.to_string());
        let path = uri
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.strip_prefix(TRUST_DOMAIN))
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(bad)?;
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["agent", id] => Identity::agent(id),
            ["node", id] => Identity::node(id),
            ["operator", role, name] => Identity::operator(role.parse()?, name),
            _ => Err(bad()),
        }
    }

    /// The one vigil identity a DER certificate names. Call it on a peer
    /// certificate only after TLS verified its chain to the fleet's CA.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Certificate(e.to_string()))?;
        let uris = vigil_uris(&cert)?;
        match uris.as_slice() {
            [] => Err(IdentityError::NoIdentity),
            [one] => Identity::from_uri(one),
            many => Err(IdentityError::ManyIdentities(many.len())),
        }
    }

    /// The agent id, when this is an agent.
    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Identity::Agent { id } => Some(id),
            _ => None,
        }
    }

    /// The operator's role, when this is an operator.
    pub fn role(&self) -> Option<OperatorRole> {
        match self {
            Identity::Operator { role, .. } => Some(*role),
            _ => None,
        }
    }
}

/// Every subjectAltName URI in the vigil trust domain.
pub(crate) fn vigil_uris(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<Vec<String>, IdentityError> {
    let prefix = format!("spiffe://{TRUST_DOMAIN}/");
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Certificate(e.to_string()))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::URI(u) if u.starts_with(&prefix) => {
                        Some(u.to_string())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { id } => write!(f, "node {id}"),
            Identity::Agent { id } => write!(f, "agent {id}"),
            Identity::Operator { role, name } => write!(f, "{} {name}", role.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for id in [
            Identity::agent("host-1.example").unwrap(),
            Identity::node("cp_2").unwrap(),
            Identity::operator(OperatorRole::SiemReader, "splunk").unwrap(),
        ] {
            assert_eq!(Identity::from_uri(&id.uri()).unwrap(), id);
        }
    }

    #[test]
    fn foreign_or_crafted_uris_are_refused() {
        for uri in [
            "spiffe://other/agent/a",
            "spiffe://vigil/agent/a/b",
            "spiffe://vigil/agent/",
            "spiffe://vigil/agent/..",
            "spiffe://vigil/agent/a%2Fb",
            "spiffe://vigil/operator/root/a",
            "spiffe://vigilx/agent/a",
            "https://vigil/agent/a",
            "spiffe://vigil/agent/\u{202e}a",
        ] {
            assert!(Identity::from_uri(uri).is_err(), "{uri}");
        }
    }

    #[test]
    fn roles_are_ordered_and_siem_is_apart() {
        use OperatorRole::*;
        assert!(Admin.allows(Viewer) && Admin.allows(Analyst) && Analyst.allows(Viewer));
        assert!(!Viewer.allows(Analyst) && !Analyst.allows(Admin));
        assert!(!SiemReader.allows(Viewer) && !Analyst.allows(SiemReader));
        assert!(Admin.allows(SiemReader));
        assert!(SiemReader.allows(SiemReader));
    }
}
