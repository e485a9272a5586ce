//! The control plane's raft group as an operator sees it.

use serde::{Deserialize, Serialize};

use crate::AgentRecord;

/// One voter or learner of the raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    pub node_id: u64,
    /// Where the node listens (gRPC).
    pub address: String,
    /// A voter (false: a learner, still catching up).
    #[serde(default)]
    pub voter: bool,
}

/// What one control plane node knows of its cluster and of the agents.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    /// None while no leader is known.
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_applied_index: u64,
    pub members: Vec<ClusterMember>,
    /// Every agent seen; a status carries no GPU inventories.
    pub agents: Vec<AgentRecord>,
    /// Index of the newest alert (alerts are dense from 1).
    pub alert_count: u64,
}
