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
    loop {
        let channel = GrpcNetwork::channel(tls, &target).map_err(|message| JoinError::Refused {
            peer: target.clone(),
            message,
        })?;
        match RaftServiceClient::new(channel)
            .cluster_info(pb::ClusterInfoRequest {})
            .await
        {
            Ok(info) => {
                let voters: std::collections::BTreeSet<NodeId> =
                    info.into_inner().voters.into_iter().collect();
                if let Ok(mut expected) = node.joining_voters.lock() {
                    *expected = Some(voters);
                }
                break;
            }
            Err(status) if tokio::time::Instant::now() < deadline => {
                last = format!("{}: {}", status.code(), status.message());
                tracing::info!(peer = %target, reason = %last, "joining: asking for the cluster's voters again");
                tokio::time::sleep(RETRY_AFTER).await;
            }
            Err(_) => return Err(JoinError::GaveUp { peer: target, last }),
        }
    }
    while tokio::time::Instant::now() < deadline {
        let channel = GrpcNetwork::channel(tls, &target).map_err(|message| JoinError::Refused {
            peer: target.clone(),
            message,
        })?;
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
