//! A new node's side of joining a cluster: ask a member, follow it to the
//! leader, retry while the cluster cannot answer, give up on a refusal.

use std::time::Duration;

use tonic::transport::ClientTlsConfig;
use vigil_proto::raft::v1 as pb;
use vigil_proto::raft::v1::raft_service_client::RaftServiceClient;

use crate::network::GrpcNetwork;
use crate::raft_types::NodeId;
use crate::service::raft_service::LEADER_METADATA;

/// How long a join keeps trying a cluster that cannot answer yet, or has
/// not been told by an operator to add this node.
const JOIN_FOR: Duration = Duration::from_secs(3600);
const RETRY_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("joining through {peer}: {message}")]
    Refused { peer: String, message: String },
    #[error("joining through {peer}: no answer within {JOIN_FOR:?} (last: {last})")]
    GaveUp { peer: String, last: String },
}

/// Asks the cluster `peer` belongs to to add node `node_id` at `address`;
/// returns the voters once it is one of them.
pub async fn join_cluster(
    node: &crate::node::ControlPlaneNode,
    tls: Option<&ClientTlsConfig>,
    peer: &str,
    address: &str,
) -> Result<Vec<NodeId>, JoinError> {
    let node_id = node.node_id;
    let cluster_id = node.cluster_id();
    let deadline = tokio::time::Instant::now() + JOIN_FOR;
    let mut target = peer.to_string();
    let mut last = String::new();
    // First the cluster's voters: until this node is a member, raft
    // traffic is taken from them alone (not from any node certificate).
    // Asked again before every try, so a voter added meanwhile is taken.
    loop {
        match learn_voters(node, tls, &target, cluster_id.as_deref()).await {
            Ok(()) => break,
            Err(LearnError::Other(status)) if tokio::time::Instant::now() < deadline => {
                last = status;
                tracing::info!(peer = %target, reason = %last, "joining: asking for the cluster's voters again");
                tokio::time::sleep(RETRY_AFTER).await;
            }
            Err(LearnError::Other(_)) => return Err(JoinError::GaveUp { peer: target, last }),
            Err(LearnError::Refused(message)) => {
                return Err(JoinError::Refused {
                    peer: target,
                    message,
                })
            }
        }
    }
    while tokio::time::Instant::now() < deadline {
        let channel = GrpcNetwork::channel(tls, &target).map_err(|message| JoinError::Refused {
            peer: target.clone(),
            message,
        })?;
        if let Err(LearnError::Refused(message)) =
            learn_voters(node, tls, &target, cluster_id.as_deref()).await
        {
            return Err(JoinError::Refused {
                peer: target,
                message,
            });
        }
        let request = pb::JoinRequest {
            node_id,
            address: address.to_string(),
            cluster_id: cluster_id.clone().unwrap_or_default(),
        };
        match RaftServiceClient::new(channel).join(request).await {
            Ok(reply) => return Ok(reply.into_inner().voters),
            Err(status) => {
                let leader = status
                    .metadata()
                    .get(LEADER_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .filter(|l| !l.is_empty())
                    .map(str::to_string);
                match (status.code(), leader) {
                    (tonic::Code::Unavailable, Some(leader)) if leader != target => {
                        tracing::info!(%leader, "joining: following the leader");
                        target = leader;
                        continue;
                    }
                    (
                        tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled,
                        _,
                    ) => {
                        last = format!("{}: {}", status.code(), status.message());
                        tracing::info!(peer = %target, reason = %last, "joining: retrying");
                        // Back to the peer we were given: a leader we
                        // followed may be gone.
                        target = peer.to_string();
                    }
                    _ => {
                        return Err(JoinError::Refused {
                            peer: target,
                            message: format!("{}: {}", status.code(), status.message()),
                        })
                    }
                }
            }
        }
        tokio::time::sleep(RETRY_AFTER).await;
    }
    Err(JoinError::GaveUp { peer: target, last })
}

enum LearnError {
    /// The peer belongs to another cluster.
    Refused(String),
    /// Not reachable, or not answering: try again.
    Other(String),
}

/// Asks `target` for its cluster's voters and id, and takes raft traffic
/// from those voters until this node is a member; refuses a cluster other
/// than the one this node's data directory belongs to (`ours`).
async fn learn_voters(
    node: &crate::node::ControlPlaneNode,
    tls: Option<&ClientTlsConfig>,
    target: &str,
    ours: Option<&str>,
) -> Result<(), LearnError> {
    let channel = GrpcNetwork::channel(tls, target).map_err(LearnError::Other)?;
    let info = RaftServiceClient::new(channel)
        .cluster_info(pb::ClusterInfoRequest {})
        .await
        .map_err(|status| LearnError::Other(format!("{}: {}", status.code(), status.message())))?
        .into_inner();
    if let Some(ours) = ours {
        if !info.cluster_id.is_empty() && info.cluster_id != ours {
            return Err(LearnError::Refused(format!(
                "{target} belongs to cluster {}, and this node's data directory to cluster {ours}; start it with an empty directory to join",
                info.cluster_id
            )));
        }
    }
    let voters: std::collections::BTreeSet<NodeId> = info.voters.into_iter().collect();
    if let Ok(mut expected) = node.joining_voters.lock() {
        *expected = Some(voters);
    }
    Ok(())
}
