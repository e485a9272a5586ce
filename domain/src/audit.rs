//! The audit log: who did what to the fleet's policy and its hosts, each
//! entry chained to the one before it by a hash, so a changed or removed
//! entry shows.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Dense from 1.
    pub index: u64,
    pub at_unix_nanos: i64,
    /// Who: an admin key or operator, or an agent id for enforcements.
    pub actor: String,
    /// What: "policy.push", "policy.rollback", "workload.approve",
    /// "workload.revoke", "agent.unfreeze", "enforce.kill", ...
    pub action: String,
    /// On what: a policy version, a workload id, "pid N on HOST".
    pub subject: String,
    pub detail: String,
    /// Hex sha256 of the previous entry (64 zeros for the first).
    pub prev_hash: String,
    /// Hex sha256 over `prev_hash` and this entry's other fields.
    pub hash: String,
}
