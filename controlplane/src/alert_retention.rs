//! Alert retention: the leader proposes `prune_alerts.v1` on a timer, with
//! the limits it was started with and its own clock, so every node removes
//! the same alerts (nothing on the apply path reads a clock or a flag).

use std::sync::Arc;
use std::time::Duration;

use crate::node::ControlPlaneNode;
use crate::raft_types::{Command, CommandResult};

/// How many alerts, and how old, the cluster keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlertRetention {
    /// 0: any number.
    pub keep_at_most: u64,
    /// None: any age.
    pub max_age: Option<Duration>,
    /// How often the leader prunes.
    pub every: Duration,
}

impl AlertRetention {
    /// Whether there is anything to enforce.
    pub fn is_bounded(&self) -> bool {
        self.keep_at_most > 0 || self.max_age.is_some()
    }

    /// The command for `now` (unix nanos).
    pub fn command_at(&self, now_unix_nanos: i64) -> Command {
        let older_than_unix_nanos = self.max_age.map_or(0, |age| {
            now_unix_nanos
                .saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX))
                .max(1)
        });
        Command::PruneAlerts {
            at_unix_nanos: now_unix_nanos,
            keep_at_most: self.keep_at_most,
            older_than_unix_nanos,
        }
    }
}

fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// While this node leads, prunes every `retention.every` (at once again
/// while an entry left more due). Runs until the node stops.
pub async fn keep_alert_retention(node: Arc<ControlPlaneNode>, retention: AlertRetention) {
    if !retention.is_bounded() {
        return;
    }
    loop {
        tokio::time::sleep(retention.every).await;
        if node.raft.metrics().has_changed().is_err() {
            return; // raft stopped
        }
        loop {
            if node.leader() != Some(node.node_id) {
                break;
            }
            match node.write(retention.command_at(now_unix_nanos())).await {
                Ok(CommandResult::AlertsPruned { removed, more }) => {
                    if removed > 0 {
                        tracing::info!(removed, more, "alerts removed by retention");
                    }
                    if !more {
                        break;
                    }
                }
                Ok(other) => {
                    tracing::warn!(?other, "alert retention: unexpected result");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "alert retention: not committed; trying again later");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_limit_is_measured_back_from_the_proposers_clock() {
        let r = AlertRetention {
            keep_at_most: 5,
            max_age: Some(Duration::from_secs(10)),
            every: Duration::from_secs(60),
        };
        let Command::PruneAlerts {
            at_unix_nanos,
            keep_at_most,
            older_than_unix_nanos,
        } = r.command_at(100_000_000_000)
        else {
            panic!("not a prune")
        };
        assert_eq!(
            (at_unix_nanos, keep_at_most, older_than_unix_nanos),
            (100_000_000_000, 5, 90_000_000_000)
        );
        let unbounded = AlertRetention {
            keep_at_most: 0,
            max_age: None,
            ..r
        };
        assert!(!unbounded.is_bounded());
    }
}
