//! What this node's agent sessions did with the findings agents sent.

use prometheus_client::metrics::counter::Counter;

/// Counters the agent service bumps; cheap to clone (each is an atomic
/// behind an `Arc`). Counted by the node that took the batch, since it
/// started: the replicated totals are the alert metrics.
#[derive(Debug, Clone, Default)]
pub struct FindingIntake {
    /// Findings committed as new alerts.
    pub ingested: Counter,
    /// Findings already committed before (an agent's resend after a lost ack).
    pub duplicates: Counter,
    /// Findings refused as bad input (a field out of range, a missing part).
    pub refused: Counter,
}
