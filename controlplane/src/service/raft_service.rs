//! `vigil.raft.v1.RaftService`: raft traffic from the other nodes, and
//! joins.
//!
//! Architecture invariant: with mutual TLS a raft RPC is taken only from
//! the node it says it comes from: the caller's certificate must name the
//! raft node id the request carries (a vote's candidate, an append's or a
//! snapshot's leader, a join's new node), so one node's certificate cannot
//! speak for another, and an operator or agent certificate cannot speak
//! raft at all (the authorization table).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};
use vigil_pki::Identity;
use vigil_proto::raft::v1 as pb;

use crate::node::ControlPlaneNode;
use crate::raft_types::{NodeId, TypeConfig};
use crate::service::Caller;

/// The metadata key naming the leader's address when a node that is not
/// the leader refuses a join.
pub const LEADER_METADATA: &str = "vigil-leader";

/// How long a join waits for the new node to catch up as a learner.
const CATCH_UP: Duration = Duration::from_secs(60);

pub struct RaftServiceImpl {
    node: Arc<ControlPlaneNode>,
    /// Joins one at a time: raft takes one membership change at once.
    joins: tokio::sync::Mutex<()>,
}

impl RaftServiceImpl {
    pub fn new(node: Arc<ControlPlaneNode>) -> Self {
        Self {
            node,
            joins: tokio::sync::Mutex::new(()),
        }
    }
}

fn decode<T: DeserializeOwned>(what: &str, payload: &pb::RaftPayload) -> Result<T, Status> {
    serde_json::from_slice(&payload.json)
        .map_err(|e| Status::invalid_argument(format!("{what}: not a valid payload: {e}")))
}

fn encode<T: Serialize>(reply: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let json = serde_json::to_vec(reply)
        .map_err(|e| Status::internal(format!("encoding the reply: {e}")))?;
    Ok(Response::new(pb::RaftPayload { json }))
}

/// Refuses a request that names a node other than the caller's
/// certificate (no check without TLS: nobody is authenticated then).
fn speaks_for(caller: &Caller, claimed: NodeId, what: &str) -> Result<(), Status> {
    match caller {
        Caller::Unauthenticated => Ok(()),
        Caller::Authenticated {
            identity: Identity::Node { id },
            ..
        } if id.parse::<NodeId>().ok() == Some(claimed) => Ok(()),
        other => Err(Status::permission_denied(format!(
            "{}: may not send a {what} for raft node {claimed} (a node's certificate names its raft id: `vigilctl ca issue --node {claimed}`)",
            other.actor()
        ))),
    }
}

#[tonic::async_trait]
impl pb::raft_service_server::RaftService for RaftServiceImpl {
    async fn append_entries(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc: AppendEntriesRequest<TypeConfig> = decode("append entries", req.get_ref())?;
        speaks_for(&caller, rpc.vote.leader_id.node_id, "log append")?;
        encode(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc: VoteRequest<NodeId> = decode("vote", req.get_ref())?;
        speaks_for(&caller, rpc.vote.leader_id.node_id, "vote request")?;
        encode(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc: InstallSnapshotRequest<TypeConfig> = decode("install snapshot", req.get_ref())?;
        speaks_for(&caller, rpc.vote.leader_id.node_id, "snapshot")?;
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn client_write(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        self.client_write_here(req).await
    }

    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let caller = Caller::of(&req);
        let pb::JoinRequest { node_id, address } = req.into_inner();
        speaks_for(&caller, node_id, "join")?;
        if address.parse::<std::net::SocketAddr>().is_err() {
            return Err(Status::invalid_argument(format!(
                "join of node {node_id}: address {address:?} is not host:port"
            )));
        }
        let _one_at_a_time = self.joins.lock().await;
        let membership = self.node.raft.metrics().borrow().membership_config.clone();
        let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
        if let Some((_, known)) = membership
            .membership()
            .nodes()
            .find(|(id, _)| **id == node_id)
        {
            if known.addr != address {
                return Err(Status::already_exists(format!(
                    "node id {node_id} is already a member at {}; remove it first (vigilctl cluster remove {node_id}) or choose another id",
                    known.addr
                )));
            }
            if voters.contains(&node_id) {
                // A restarted joiner asking again: nothing to do.
                return Ok(Response::new(pb::JoinResponse {
                    voters: voters.into_iter().collect(),
                }));
            }
        }
        let node = BasicNode {
            addr: address.clone(),
        };
        let learner =
            tokio::time::timeout(CATCH_UP, self.node.raft.add_learner(node_id, node, true))
                .await
                .map_err(|_| {
                    Status::deadline_exceeded(format!(
                "node {node_id} at {address} did not catch up as a learner within {CATCH_UP:?}"
            ))
                })?;
        learner.map_err(|e| self.refusal(e))?;
        let mut voters = voters;
        voters.insert(node_id);
        self.node
            .raft
            .change_membership(voters.clone(), false)
            .await
            .map_err(|e| self.refusal(e))?;
        tracing::info!(node_id, %address, "node joined as a voter");
        Ok(Response::new(pb::JoinResponse {
            voters: voters.into_iter().collect(),
        }))
    }
}

impl RaftServiceImpl {
    /// A forwarded write, proposed here (never forwarded again: a node
    /// that is not the leader says so and the sender gives up).
    async fn client_write_here(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let cmd: crate::raft_types::Command = decode("client write", req.get_ref())?;
        match self.node.raft.client_write(cmd).await {
            Ok(resp) => encode(&Ok::<_, String>(resp.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_node.map(|n| n.addr).unwrap_or_default();
                let mut status = Status::unavailable(format!(
                    "node {} is not the leader (leader: {})",
                    self.node.node_id,
                    if leader.is_empty() {
                        "unknown"
                    } else {
                        &leader
                    }
                ));
                if let Ok(value) = leader.parse() {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                Err(status)
            }
            Err(e) => encode(&Err::<crate::raft_types::CommandResult, _>(e.to_string())),
        }
    }

    /// A membership change that did not happen: UNAVAILABLE with the
    /// leader's address when this node is not the leader.
    fn refusal(&self, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Status {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                let leader = f.leader_node.map(|n| n.addr).unwrap_or_default();
                let mut status = Status::unavailable(format!(
                    "this node is not the leader (leader: {})",
                    if leader.is_empty() {
                        "unknown"
                    } else {
                        &leader
                    }
                ));
                if let Ok(value) = leader.parse() {
                    status.metadata_mut().insert(LEADER_METADATA, value);
                }
                status
            }
            // Another change is still being committed: the joiner retries.
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(e),
            )) => Status::unavailable(format!("another membership change is in progress: {e}")),
            other => Status::failed_precondition(format!("membership change refused: {other}")),
        }
    }
}
