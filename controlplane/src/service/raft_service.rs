//! `vigil.raft.v1.RaftService`: raft traffic from the other nodes, and
//! joins.
//!
//! Architecture invariant: with mutual TLS a raft RPC is taken only from
//! the node it says it comes from: the caller's certificate must name the
//! raft node id the request carries (a vote's candidate, an append's or a
//! snapshot's leader, a join's new node), so one node's certificate cannot
//! speak for another, and an operator or agent certificate cannot speak
//! raft at all (the authorization table).

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};
use vigil_pki::Identity;
use vigil_proto::raft::v1 as pb;

use crate::cluster_membership::ClusterMembership;
use crate::node::{ControlPlaneNode, ReadIndexRefused};
use crate::raft_types::{NodeId, TypeConfig};
use crate::service::{AgentSessions, Caller};

/// The metadata key naming the leader's address when a node that is not
/// the leader refuses a join.
pub const LEADER_METADATA: &str = "vigil-leader";

pub struct RaftServiceImpl {
    node: Arc<ControlPlaneNode>,
    membership: Arc<ClusterMembership>,
    /// The agents streaming to this node (unfreeze orders another node took).
    sessions: Arc<AgentSessions>,
}

impl RaftServiceImpl {
    pub fn new(
        node: Arc<ControlPlaneNode>,
        membership: Arc<ClusterMembership>,
        sessions: Arc<AgentSessions>,
    ) -> Self {
        Self {
            node,
            membership,
            sessions,
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

/// Which members a raft call may come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    /// A voter (votes, and a leader's appends and snapshots).
    Voter,
    /// A voter or a learner (forwarded writes, election holds).
    Member,
}

impl RaftServiceImpl {
    /// Refuses a call naming a node that is not a member of this cluster
    /// as this node knows it: a decommissioned node, or one of another
    /// cluster signed by the same CA, cannot depose the leader or rewrite
    /// the log. A node not yet in any cluster (waiting to be added, with
    /// `--join`) takes its first entries from whichever member sends them.
    fn member(&self, claimed: NodeId, from: From, what: &str) -> Result<(), Status> {
        let m = self.node.raft.metrics().borrow().membership_config.clone();
        let membership = m.membership();
        if membership.nodes().next().is_none() {
            // Not a member of any cluster yet: only the voters of the one
            // its `--join` peer named.
            let expected = self.node.joining_voters.lock().ok().and_then(|v| v.clone());
            return match expected {
                Some(voters) if voters.contains(&claimed) => Ok(()),
                _ => Err(Status::permission_denied(format!(
                    "this node is waiting to join a cluster and takes raft traffic only from its voters, not from node {claimed} ({what})"
                ))),
            };
        }
        let ok = match from {
            From::Voter => membership.voter_ids().any(|v| v == claimed),
            From::Member => membership.get_node(&claimed).is_some(),
        };
        if ok {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "node {claimed} is not a {} of this cluster: its {what} is refused",
            if from == From::Voter {
                "voter"
            } else {
                "member"
            }
        )))
    }

    /// Refuses a transfer step from anyone but the leader this node knows.
    fn sent_by_leader(&self, caller: NodeId, what: &str) -> Result<(), Status> {
        let leader = self.node.raft.metrics().borrow().current_leader;
        if leader == Some(caller) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "node {caller} is not the leader: its {what} is refused"
        )))
    }

    /// The raft id the caller's node certificate names (None without TLS).
    fn caller_node(caller: &Caller) -> Result<Option<NodeId>, Status> {
        match caller {
            Caller::Unauthenticated => Ok(None),
            Caller::Authenticated {
                identity: Identity::Node { id },
                ..
            } => id.parse().map(Some).map_err(|_| {
                Status::permission_denied(format!(
                    "node {id:?}: a node certificate for a cluster must name its raft id (a number)"
                ))
            }),
            other => Err(Status::permission_denied(format!(
                "{} is not a control-plane node",
                other.actor()
            ))),
        }
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
        self.member(rpc.vote.leader_id.node_id, From::Voter, "log append")?;
        encode(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc: VoteRequest<NodeId> = decode("vote", req.get_ref())?;
        speaks_for(&caller, rpc.vote.leader_id.node_id, "vote request")?;
        self.member(rpc.vote.leader_id.node_id, From::Voter, "vote request")?;
        encode(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        let caller = Caller::of(&req);
        let rpc: InstallSnapshotRequest<TypeConfig> = decode("install snapshot", req.get_ref())?;
        speaks_for(&caller, rpc.vote.leader_id.node_id, "snapshot")?;
        self.member(rpc.vote.leader_id.node_id, From::Voter, "snapshot")?;
        encode(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn client_write(
        &self,
        req: Request<pb::RaftPayload>,
    ) -> Result<Response<pb::RaftPayload>, Status> {
        if let Some(id) = Self::caller_node(&Caller::of(&req))? {
            self.member(id, From::Member, "forwarded write")?;
        }
        self.client_write_here(req).await
    }

    async fn hold_elections(
        &self,
        req: Request<pb::HoldElectionsRequest>,
    ) -> Result<Response<pb::HoldElectionsResponse>, Status> {
        if let Some(id) = Self::caller_node(&Caller::of(&req))? {
            self.sent_by_leader(id, "election hold")?;
        }
        let millis = req.into_inner().millis;
        tracing::info!(millis, "holding elections: a leadership transfer");
        self.node
            .hold_elections(std::time::Duration::from_millis(millis));
        Ok(Response::new(pb::HoldElectionsResponse {}))
    }

    async fn elect(
        &self,
        req: Request<pb::ElectRequest>,
    ) -> Result<Response<pb::ElectResponse>, Status> {
        if let Some(id) = Self::caller_node(&Caller::of(&req))? {
            self.sent_by_leader(id, "election request")?;
        }
        tracing::info!("standing for election: a leadership transfer");
        self.node
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(format!("raft: {e}")))?;
        Ok(Response::new(pb::ElectResponse {}))
    }

    async fn read_index(
        &self,
        req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        if let Some(id) = Self::caller_node(&Caller::of(&req))? {
            self.member(id, From::Member, "read index request")?;
        }
        match self.node.read_index().await {
            Ok(index) => Ok(Response::new(pb::ReadIndexResponse { index })),
            Err(ReadIndexRefused::NotLeader { leader }) => {
                Err(crate::cluster_membership::MembershipError::NotLeader { leader }.into())
            }
            Err(ReadIndexRefused::Other(e)) => Err(e.into()),
        }
    }

    async fn deliver_unfreeze(
        &self,
        req: Request<pb::DeliverUnfreezeRequest>,
    ) -> Result<Response<pb::DeliverUnfreezeResponse>, Status> {
        if let Some(id) = Self::caller_node(&Caller::of(&req))? {
            self.member(id, From::Member, "unfreeze delivery")?;
        }
        let req = req.into_inner();
        let order = req
            .order
            .ok_or_else(|| Status::invalid_argument("order: must be set"))?;
        let Some(tx) = self.sessions.get(&req.agent_id) else {
            return Ok(Response::new(pb::DeliverUnfreezeResponse {
                delivered: false,
            }));
        };
        let msg = vigil_proto::agent::v1::ControlMessage {
            body: Some(vigil_proto::agent::v1::control_message::Body::Unfreeze(
                order,
            )),
        };
        // A stream that just closed is not a delivery.
        let delivered = tx.send(Ok(msg)).await.is_ok();
        if delivered {
            tracing::info!(agent = %req.agent_id, "passed on an unfreeze order another node took");
        }
        Ok(Response::new(pb::DeliverUnfreezeResponse { delivered }))
    }

    async fn request_attestation(
        &self,
        req: Request<pb::RequestAttestationRequest>,
    ) -> Result<Response<pb::RequestAttestationResponse>, Status> {
        if let Some(id) = Self::caller_node(&Caller::of(&req))? {
            self.member(id, From::Member, "attestation request")?;
        }
        let agent_id = req.into_inner().agent_id;
        let requested = self.sessions.attest_now(&agent_id);
        if requested {
            tracing::info!(agent = %agent_id, "quoting an agent for another node's operator");
        }
        Ok(Response::new(pb::RequestAttestationResponse { requested }))
    }

    type FetchModelBlobStream = super::model_transfer::ChunkStream;

    async fn fetch_model_blob(
        &self,
        req: Request<pb::FetchModelBlobRequest>,
    ) -> Result<Response<Self::FetchModelBlobStream>, Status> {
        if let Some(id) = Self::caller_node(&Caller::of(&req))? {
            self.member(id, From::Member, "model file request")?;
        }
        let req = req.into_inner();
        let reader = self
            .node
            .models
            .read_from(&req.sha256, req.offset)
            .await
            .map_err(super::model_transfer::blob_status)?;
        tracing::info!(sha256 = %req.sha256, offset = req.offset, "giving a model file to another member");
        Ok(Response::new(super::model_transfer::chunk_stream(reader)))
    }

    async fn cluster_info(
        &self,
        _req: Request<pb::ClusterInfoRequest>,
    ) -> Result<Response<pb::ClusterInfoResponse>, Status> {
        let voters = self
            .node
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        Ok(Response::new(pb::ClusterInfoResponse {
            voters,
            cluster_id: self.node.cluster_id().unwrap_or_default(),
        }))
    }

    async fn join(
        &self,
        req: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let caller = Caller::of(&req);
        let pb::JoinRequest {
            node_id,
            address,
            cluster_id,
        } = req.into_inner();
        speaks_for(&caller, node_id, "join")?;
        if let Some(ours) = self.node.cluster_id() {
            if !cluster_id.is_empty() && cluster_id != ours {
                return Err(Status::failed_precondition(format!(
                    "node {node_id}'s data directory belongs to cluster {cluster_id}, not to this one ({ours}); start it with an empty directory to join"
                )));
            }
        }
        let voters = self.membership.join(node_id, &address).await?;
        Ok(Response::new(pb::JoinResponse { voters }))
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
        // The same limit as a write proposed here (`node.rs`).
        if req.get_ref().json.len() > crate::network::MAX_RAFT_MESSAGE / 2 {
            return Err(Status::invalid_argument(format!(
                "a forwarded write of {} bytes is more than one raft entry takes",
                req.get_ref().json.len()
            )));
        }
        let proposed = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            self.node.raft.client_write(cmd),
        )
        .await
        .map_err(|_| {
            Status::unavailable(format!(
                "node {}: the write was not committed within 5 s (no majority reachable)",
                self.node.node_id
            ))
        })?;
        match proposed {
            Ok(resp) => encode(&Ok::<_, String>(resp.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(crate::cluster_membership::MembershipError::NotLeader {
                    leader: f.leader_node.map(|n| n.addr),
                }
                .into())
            }
            Err(e) => encode(&Err::<crate::raft_types::CommandResult, _>(e.to_string())),
        }
    }
}
