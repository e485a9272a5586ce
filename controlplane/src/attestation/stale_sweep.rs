//! The leader's watch over hosts that stopped answering: a trusted host
//! whose last verified quote is older than two intervals (its agent gone,
//! its session on a node that died, its quotes never arriving) becomes
//! untrusted ("stale"). Sessions catch a late answer themselves; this
//! catches the host no session speaks for.

use std::sync::Arc;
use std::time::Duration;

use vigil_domain::{QuoteResult, TrustState};

use crate::node::ControlPlaneNode;
use crate::raft_types::Command;

fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The agents (id, last verified) that are trusted but have had no
/// verified quote since `cutoff_unix_nanos`.
pub fn stale_hosts(
    agents: &[vigil_domain::AgentRecord],
    cutoff_unix_nanos: i64,
) -> Vec<(String, i64)> {
    agents
        .iter()
        .filter(|a| {
            a.attestation.trust == TrustState::Trusted
                && a.attestation.last_verified_at_unix_nanos < cutoff_unix_nanos
        })
        .map(|a| {
            (
                a.identity.agent_id.clone(),
                a.attestation.last_verified_at_unix_nanos,
            )
        })
        .collect()
}

pub async fn sweep_stale_hosts(node: Arc<ControlPlaneNode>, interval: Duration) {
    let allowed = interval * 2;
    loop {
        tokio::time::sleep(interval / 2).await;
        if node.raft.metrics().has_changed().is_err() {
            return; // raft stopped
        }
        if node.leader() != Some(node.node_id) {
            continue;
        }
        let Ok(agents) = node.state.agents() else {
            continue;
        };
        let now = now_unix_nanos();
        let cutoff = now.saturating_sub(i64::try_from(allowed.as_nanos()).unwrap_or(i64::MAX));
        for (agent_id, last) in stale_hosts(&agents, cutoff) {
            let ago = Duration::from_nanos(u64::try_from(now.saturating_sub(last)).unwrap_or(0));
            let result = QuoteResult::Failed {
                code: "stale".into(),
                reason: format!(
                    "no verified quote for {:.0?} (allowed: two intervals, {allowed:?}); the agent is not connected or not answering",
                    ago
                ),
            };
            if let Err(e) = node
                .write_coalesced(Command::RecordQuote {
                    agent_id: agent_id.clone(),
                    at_unix_nanos: now,
                    result,
                    ek_sha256: String::new(),
                })
                .await
            {
                tracing::warn!(agent = %agent_id, error = %e, "recording a stale host; trying again later");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trusted_hosts_without_a_recent_quote_are_stale() {
        let agent = |id: &str, trust: TrustState, last: i64| {
            let mut a = vigil_domain::AgentRecord::default();
            a.identity.agent_id = id.into();
            a.attestation.trust = trust;
            a.attestation.last_verified_at_unix_nanos = last;
            a
        };
        let agents = vec![
            agent("old", TrustState::Trusted, 10),
            agent("fresh", TrustState::Trusted, 100),
            agent("never", TrustState::Unattested, 0),
            agent(
                "failed",
                TrustState::Untrusted {
                    code: "signature".into(),
                    reason: "r".into(),
                },
                0,
            ),
        ];
        assert_eq!(stale_hosts(&agents, 50), vec![("old".to_string(), 10)]);
    }
}
