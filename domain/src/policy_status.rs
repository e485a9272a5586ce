//! What an agent did with the policy bundles it was given.

use serde::{Deserialize, Serialize};

/// The bundle an agent enforces and, when it refused the last one, why.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyStatus {
    /// The bundle version the agent enforces (0: none, built-in rules).
    pub active_version: u64,
    /// Why the last bundle was refused (or rolled back); empty when accepted.
    pub error: String,
    /// The version refused (0: none).
    pub refused_version: u64,
}

impl PolicyStatus {
    /// A bundle accepted: `version` is in force.
    pub fn active(version: u64) -> Self {
        Self {
            active_version: version,
            ..Self::default()
        }
    }

    /// `refused_version` refused for `error`; `active_version` stays in force.
    pub fn refused(active_version: u64, refused_version: u64, error: String) -> Self {
        Self {
            active_version,
            error,
            refused_version,
        }
    }
}
