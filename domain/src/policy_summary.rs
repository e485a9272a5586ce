//! Policy versions as the control plane lists them.

use serde::{Deserialize, Serialize};

/// One pushed policy version (its bundle is fetched separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    pub version: u64,
    /// Hex ed25519 public key of the admin key that signed the bundle.
    pub signer: String,
    /// Hex digest of the bundle's canonical serialisation.
    pub digest: String,
    pub pushed_at_unix_nanos: i64,
    /// Why it was pushed: "push", "rollback to 3".
    pub note: String,
    /// Whether this is the version agents are told to enforce.
    pub active: bool,
    /// How many rules it compiles to.
    pub rules: u32,
}
