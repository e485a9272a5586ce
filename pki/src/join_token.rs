//! One-time, expiring enrollment tokens.
//!
//! An operator makes a token (`vigilctl agent token create`); the control
//! plane keeps only its [`TokenRecord`] (id, sha256 of the secret, expiry,
//! who used it); an agent presents the whole token once to get its
//! certificate. [`TokenRecord::admit`] takes the time as an argument: in
//! the control plane that is the time the proposer put in the raft
//! command, so every replica decides the same.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

const PREFIX: &str = "vjt1";

/// A token as the operator hands it over: `vjt1.<id>.<secret>`, both hex.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    id: String,
    secret: [u8; 32],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret never reaches a log.
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinTokenError {
    #[error("not a join token (want {PREFIX}.<16 hex>.<64 hex>)")]
    Malformed,
}

/// Why a token was refused. The words are for the audit log and the
/// control plane's error; the agent is told only that enrollment failed
/// and why in these terms (none reveals the secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("join token {id} is unknown")]
    Unknown { id: String },
    #[error("join token {id}: wrong secret")]
    WrongSecret { id: String },
    #[error("join token {id} expired at {expired_at_unix_secs} (now {now_unix_secs})")]
    Expired {
        id: String,
        expired_at_unix_secs: u64,
        now_unix_secs: u64,
    },
    #[error("join token {id} was already used by agent {by}")]
    AlreadyUsed { id: String, by: String },
    #[error("join token {id} is for agent {expected:?}, not {asked:?}")]
    OtherAgent {
        id: String,
        expected: String,
        asked: String,
    },
}

impl JoinToken {
    /// A new token with a random id and secret.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        Self {
            id: hex::encode(id),
            secret,
        }
    }

    pub fn parse(s: &str) -> Result<Self, JoinTokenError> {
        let mut parts = s.trim().split('.');
        let (Some(PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoinTokenError::Malformed);
        };
        let is_hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !is_hex(id, 16) || !is_hex(secret, 64) {
            return Err(JoinTokenError::Malformed);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(secret, &mut bytes).map_err(|_| JoinTokenError::Malformed)?;
        Ok(Self {
            id: id.to_string(),
            secret: bytes,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole token, secret included: print once, to the operator.
    pub fn reveal(&self) -> String {
        format!("{PREFIX}.{}.{}", self.id, hex::encode(self.secret))
    }

    /// What the control plane stores for it.
    pub fn record(&self, expires_at_unix_secs: u64) -> TokenRecord {
        TokenRecord {
            id: self.id.clone(),
            secret_sha256: self.secret_sha256(),
            expires_at_unix_secs,
            for_agent: None,
            used_by: None,
        }
    }

    /// The digest of the secret: what a raft command may carry (the secret
    /// itself never enters the replicated log).
    pub fn secret_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.secret))
    }
}

/// A token as the control plane keeps it: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub id: String,
    pub secret_sha256: String,
    pub expires_at_unix_secs: u64,
    /// Only this agent id may enroll with it (None: any).
    #[serde(default)]
    pub for_agent: Option<String>,
    /// The agent id that enrolled with it, once it has.
    pub used_by: Option<String>,
}

impl TokenRecord {
    /// Whether `token` may enroll now. The secret is compared in constant
    /// time; an expired or used token is refused even with the right one.
    pub fn admit(&self, token: &JoinToken, now_unix_secs: u64) -> Result<(), TokenRefused> {
        if token.id != self.id {
            return Err(TokenRefused::WrongSecret {
                id: self.id.clone(),
            });
        }
        self.admit_digest(&token.secret_sha256(), None, now_unix_secs)
    }

    /// Like [`TokenRecord::admit`], from the digest of the presented secret
    /// (what a raft command carries) and the agent id asked for.
    pub fn admit_digest(
        &self,
        presented_sha256: &str,
        agent_id: Option<&str>,
        now_unix_secs: u64,
    ) -> Result<(), TokenRefused> {
        let id = self.id.clone();
        if !bool::from(
            presented_sha256
                .as_bytes()
                .ct_eq(self.secret_sha256.as_bytes()),
        ) {
            return Err(TokenRefused::WrongSecret { id });
        }
        if let (Some(expected), Some(asked)) = (&self.for_agent, agent_id) {
            if expected != asked {
                return Err(TokenRefused::OtherAgent {
                    id,
                    expected: expected.clone(),
                    asked: asked.to_string(),
                });
            }
        }
        if let Some(by) = &self.used_by {
            return Err(TokenRefused::AlreadyUsed { id, by: by.clone() });
        }
        if now_unix_secs >= self.expires_at_unix_secs {
            return Err(TokenRefused::Expired {
                id,
                expired_at_unix_secs: self.expires_at_unix_secs,
                now_unix_secs,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_admits_once_before_expiry() {
        let t = JoinToken::generate();
        let parsed = JoinToken::parse(&t.reveal()).unwrap();
        assert_eq!(parsed, t);
        let mut rec = t.record(1_000);
        assert_eq!(rec.admit(&parsed, 999), Ok(()));
        assert!(matches!(
            rec.admit(&parsed, 1_000),
            Err(TokenRefused::Expired { .. })
        ));
        rec.used_by = Some("host-1".into());
        assert!(matches!(
            rec.admit(&parsed, 10),
            Err(TokenRefused::AlreadyUsed { .. })
        ));
    }

    #[test]
    fn a_wrong_secret_is_refused_and_never_printed() {
        let t = JoinToken::generate();
        let rec = t.record(u64::MAX);
        let other = JoinToken::generate();
        let forged = JoinToken::parse(&format!(
            "vjt1.{}.{}",
            t.id(),
            other.reveal().rsplit('.').next().unwrap()
        ))
        .unwrap();
        assert!(matches!(
            rec.admit(&forged, 0),
            Err(TokenRefused::WrongSecret { .. })
        ));
        assert!(!format!("{t:?}").contains(&hex::encode(t.secret)));
        assert!(!serde_json::to_string(&rec)
            .unwrap()
            .contains(&hex::encode(t.secret)));
    }

    #[test]
    fn malformed_tokens_are_errors() {
        for s in [
            "",
            "vjt1",
            "vjt1..",
            "vjt2.0123456789abcdef.00",
            "vjt1.0123456789ABCDEF.0000000000000000000000000000000000000000000000000000000000000000",
            "vjt1.0123456789abcdef.000000000000000000000000000000000000000000000000000000000000000",
            "vjt1.0123456789abcdef.0000000000000000000000000000000000000000000000000000000000000000.x",
        ] {
            assert_eq!(JoinToken::parse(s), Err(JoinTokenError::Malformed), "{s}");
        }
    }
}
