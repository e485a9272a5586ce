//! Who is in the raft group: nodes added (a learner first, a voter once
//! caught up), removed, and leadership handed to a chosen node. Used by a
//! joining node (`RaftService.Join`) and by operators (`vigilctl cluster
//! add|remove|transfer-leader`). Every change runs on the leader, one at a
//! time; a node that is not the leader refuses and names the leader.
//!
//! openraft 0.9 has no leadership transfer, so the leader arranges one:
//! the other voters hold their elections for a few seconds (they resume by
//! themselves even if the leader dies meanwhile), the leader stops its
//! heartbeats until its lease has run out everywhere, then the target
//! starts an election it is the only one to run, and wins it with a log as
//! long as the leader's.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tonic::Status;

use crate::node::ControlPlaneNode;
use crate::raft_types::NodeId;
use crate::service::raft_service::LEADER_METADATA;

/// How long an added node may take to catch up as a learner.
const CATCH_UP: Duration = Duration::from_secs(60);
/// How long the other voters hold their elections during a transfer.
pub const HOLD_ELECTIONS: Duration = Duration::from_secs(3);
/// The longest a transfer waits for the target to lead.
const TRANSFER_WITHIN: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("this node is not the leader (leader: {})", .leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    #[error("another membership change is in progress: {0}")]
    InProgress(String),
    #[error("node id {node_id} is already a member at {address}; remove it first (vigilctl cluster remove {node_id}) or choose another id")]
    IdTaken { node_id: NodeId, address: String },
    #[error("node {node_id} is not a member yet: an admin adds it with `vigilctl cluster add --node-id {node_id} --address {address}`")]
    NotYetAdded { node_id: NodeId, address: String },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    TimedOut(String),
}

impl From<MembershipError> for Status {
    fn from(e: MembershipError) -> Status {
        let message = e.to_string();
        match e {
            MembershipError::NotLeader { leader } => {
                let mut status = Status::unavailable(message);
                if let Some(value) = leader.and_then(|l| l.parse().ok()) {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                status
            }
            // The joining node retries until an operator has added it.
            MembershipError::InProgress(_) | MembershipError::NotYetAdded { .. } => {
                Status::unavailable(message)
            }
            MembershipError::IdTaken { .. } => Status::already_exists(message),
            MembershipError::Refused(_) => Status::failed_precondition(message),
            MembershipError::TimedOut(_) => Status::deadline_exceeded(message),
        }
    }
}

fn from_raft(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => MembershipError::NotLeader {
            leader: f.leader_node.map(|n| n.addr),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(
            ChangeMembershipError::InProgress(e),
        )) => MembershipError::InProgress(e.to_string()),
        other => MembershipError::Refused(format!("membership change refused: {other}")),
    }
}

pub struct ClusterMembership {
    node: Arc<ControlPlaneNode>,
    /// One change at a time: raft takes one membership change at once.
    changes: tokio::sync::Mutex<()>,
}

impl ClusterMembership {
    pub fn new(node: Arc<ControlPlaneNode>) -> Self {
        Self {
            node,
            changes: tokio::sync::Mutex::new(()),
        }
    }

    fn leader_addr(&self) -> Option<String> {
        let m = self.node.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
    }

    fn require_leader(&self) -> Result<(), MembershipError> {
        let m = self.node.raft.metrics().borrow().clone();
        if m.current_leader == Some(self.node.node_id) {
            return Ok(());
        }
        Err(MembershipError::NotLeader {
            leader: self.leader_addr(),
        })
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        self.node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// A node asks to complete its own addition: accepted only once an
    /// operator has added it (`vigilctl cluster add`) at this address, so
    /// a node certificate alone (another cluster's, a decommissioned
    /// node's) does not make a member; then it is made a voter once caught
    /// up, as an operator's add does.
    pub async fn join(
        &self,
        node_id: NodeId,
        address: &str,
    ) -> Result<Vec<NodeId>, MembershipError> {
        let known = self
            .node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&node_id)
            .map(|n| n.addr.clone());
        match known {
            None => Err(MembershipError::NotYetAdded {
                node_id,
                address: address.to_string(),
            }),
            Some(at) if at != address => Err(MembershipError::IdTaken {
                node_id,
                address: at,
            }),
            Some(_) => self.add_voter(node_id, address).await,
        }
    }

    /// Adds `node_id` at `address` as a learner, waits until it has caught
    /// up, then makes it a voter; the voters after. Asked again for a
    /// member at the same address, it changes nothing.
    pub async fn add_voter(
        &self,
        node_id: NodeId,
        address: &str,
    ) -> Result<Vec<NodeId>, MembershipError> {
        if address.parse::<std::net::SocketAddr>().is_err() {
            return Err(MembershipError::Refused(format!(
                "node {node_id}: address {address:?} is not host:port"
            )));
        }
        let _one_at_a_time = self.changes.lock().await;
        self.require_leader()?;
        let membership = self.node.raft.metrics().borrow().membership_config.clone();
        if let Some(known) = membership.membership().get_node(&node_id) {
            if known.addr != address {
                return Err(MembershipError::IdTaken {
                    node_id,
                    address: known.addr.clone(),
                });
            }
        }
        let mut voters = self.voters();
        if voters.contains(&node_id) {
            return Ok(voters.into_iter().collect());
        }
        let node = BasicNode {
            addr: address.to_string(),
        };
        let added =
            tokio::time::timeout(CATCH_UP, self.node.raft.add_learner(node_id, node, true)).await;
        match added {
            Ok(added) => {
                added.map_err(from_raft)?;
            }
            Err(_) => {
                // Not left behind as a learner the leader dials forever.
                let _ = self
                    .node
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                    .await;
                return Err(MembershipError::TimedOut(format!(
                    "node {node_id} at {address} did not catch up as a learner within {CATCH_UP:?}; it was not added"
                )));
            }
        }
        voters.insert(node_id);
        self.node
            .raft
            .change_membership(voters.clone(), false)
            .await
            .map_err(from_raft)?;
        tracing::info!(node_id, %address, "node added as a voter");
        Ok(voters.into_iter().collect())
    }

    /// Removes `node_id` (voter or learner) from the group; the voters
    /// after. The last voter is not removed.
    pub async fn remove(&self, node_id: NodeId) -> Result<Vec<NodeId>, MembershipError> {
        let _one_at_a_time = self.changes.lock().await;
        self.require_leader()?;
        let membership = self.node.raft.metrics().borrow().membership_config.clone();
        if membership.membership().get_node(&node_id).is_none() {
            return Err(MembershipError::Refused(format!(
                "node {node_id} is not a member"
            )));
        }
        let mut voters = self.voters();
        if voters.contains(&node_id) {
            if voters.len() == 1 {
                return Err(MembershipError::Refused(format!(
                    "node {node_id} is the only voter; a cluster needs one"
                )));
            }
            voters.remove(&node_id);
            self.node
                .raft
                .change_membership(
                    ChangeMembers::RemoveVoters(BTreeSet::from([node_id])),
                    false,
                )
                .await
                .map_err(from_raft)?;
        } else {
            self.node
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                .await
                .map_err(from_raft)?;
        }
        tracing::info!(node_id, "node removed");
        Ok(voters.into_iter().collect())
    }

    /// Makes `target` (a voter whose log is as long as the leader's) the
    /// leader; the new leader and its term. Runs as a task of its own, so
    /// a caller that goes away midway (a cancelled request) does not leave
    /// this node's heartbeats off.
    pub async fn transfer_leader(
        self: &Arc<Self>,
        target: NodeId,
    ) -> Result<(NodeId, u64), MembershipError> {
        let this = self.clone();
        tokio::spawn(async move { this.transfer(target).await })
            .await
            .map_err(|e| MembershipError::Refused(format!("the transfer stopped: {e}")))?
    }

    async fn transfer(&self, target: NodeId) -> Result<(NodeId, u64), MembershipError> {
        let _one_at_a_time = self.changes.lock().await;
        self.require_leader()?;
        let me = self.node.node_id;
        let m = self.node.raft.metrics().borrow().clone();
        if target == me {
            return Ok((me, m.current_term));
        }
        let voters = self.voters();
        if !voters.contains(&target) {
            return Err(MembershipError::Refused(format!(
                "node {target} is not a voter"
            )));
        }
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&target).cloned().flatten())
            .map(|l| l.index)
            .unwrap_or(0);
        if matched < last {
            return Err(MembershipError::Refused(format!(
                "node {target} has not caught up (log {matched} of {last}); try again"
            )));
        }
        let addr_of = |id: NodeId| {
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default()
        };
        // The others hold their elections (they resume by themselves).
        for other in voters.iter().filter(|v| **v != me && **v != target) {
            self.node
                .network()
                .hold_elections(&addr_of(*other), HOLD_ELECTIONS)
                .await
                .map_err(|why| {
                    MembershipError::Refused(format!(
                        "asking node {other} to hold its elections: {why}"
                    ))
                })?;
        }
        let lease = Duration::from_millis(self.node.raft_config().election_timeout_max + 100);
        self.node.raft.runtime_config().heartbeat(false);
        let outcome = async {
            tokio::time::sleep(lease).await;
            self.node
                .network()
                .elect(&addr_of(target))
                .await
                .map_err(|why| {
                    MembershipError::Refused(format!("asking node {target} to stand: {why}"))
                })?;
            let mut metrics = self.node.raft.metrics();
            tokio::time::timeout(TRANSFER_WITHIN, async {
                loop {
                    {
                        let m = metrics.borrow_and_update();
                        if m.current_leader == Some(target) {
                            return Ok((target, m.current_term));
                        }
                    }
                    if metrics.changed().await.is_err() {
                        return Err(MembershipError::Refused("raft stopped".into()));
                    }
                }
            })
            .await
            .map_err(|_| {
                MembershipError::TimedOut(format!(
                    "node {target} did not become the leader within {TRANSFER_WITHIN:?}"
                ))
            })?
        }
        .await;
        self.node.raft.runtime_config().heartbeat(true);
        if let Ok((leader, term)) = &outcome {
            tracing::info!(from = me, to = leader, term, "leadership transferred");
        }
        outcome
    }
}
