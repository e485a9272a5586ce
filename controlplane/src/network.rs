//! The raft network of a single-node cluster.
//!
//! A cluster of one never replicates or asks for votes, so openraft never
//! calls into this network; if it ever does (a membership with peers but no
//! transport configured), every RPC fails as unreachable with a message
//! saying so, and raft keeps retrying as it does for any unreachable peer.
//! The gRPC transport between nodes plugs in here (3- and 5-node clusters).

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;

use crate::raft_types::{NodeId, TypeConfig};

#[derive(Debug, Clone, Default)]
pub struct SingleNodeNetwork;

#[derive(Debug)]
pub struct NoTransport {
    target: NodeId,
}

fn unreachable<E: std::error::Error>(target: NodeId) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "no raft transport to node {target}: this control plane runs as a single node"
    ))))
}

impl RaftNetworkFactory<TypeConfig> for SingleNodeNetwork {
    type Network = NoTransport;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        NoTransport { target }
    }
}

impl RaftNetwork<TypeConfig> for NoTransport {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable(self.target))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable(self.target))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable(self.target))
    }
}
