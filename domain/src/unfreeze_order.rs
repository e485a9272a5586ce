//! An operator's order to thaw a process a freeze rule froze, signed with
//! an admin key (like policy bundles and approved workloads): the agent
//! thaws only on an order a trusted key signed, for itself, not expired
//! and not seen before.

use serde::{Deserialize, Serialize};

/// What `vigilctl agent unfreeze --key` sends, through the control plane,
/// to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnfreezeOrder {
    /// The agent, by id or hostname, as the operator named it.
    pub agent: String,
    /// The frozen process's pid on that host.
    pub pid: u32,
    /// When that process started, in clock ticks since boot (field 22 of
    /// /proc/PID/stat; the agent's freeze finding says it): with the pid,
    /// it names one process, so an order cannot thaw another process
    /// frozen later under a recycled pid. 0 (none) is refused.
    pub start_time: u64,
    /// Unix time (seconds) after which the order is refused.
    pub expires_at_unix_secs: i64,
    /// Random, hex: an agent carries out an order once.
    pub nonce: String,
    /// Hex ed25519 public key of the signer (empty: unsigned).
    pub signer: String,
    /// Hex ed25519 signature over the order's canonical bytes.
    pub signature: String,
}
