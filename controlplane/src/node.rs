//! One control-plane node: raft over the sled stores, and the write path.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};

use crate::network::GrpcNetwork;
use crate::raft_types::{Command, CommandResult, NodeId, Raft};
use crate::store::{open_stores, StateReader};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("this node is not the leader (leader: {leader})")]
    NotLeader { leader: String },
    #[error("raft: {0}")]
    Raft(String),
}

impl From<WriteError> for tonic::Status {
    fn from(e: WriteError) -> Self {
        tonic::Status::unavailable(e.to_string())
    }
}

pub struct ControlPlaneNode {
    pub node_id: NodeId,
    pub raft: Raft,
    pub state: StateReader,
}

impl ControlPlaneNode {
    /// Opens the stores in `data_dir`, starts raft and, on first start,
    /// initialises a cluster of this one node advertised at `address`
    /// (unless `joining`: then it waits to be added by a cluster's leader).
    pub async fn start(
        node_id: NodeId,
        address: String,
        data_dir: &Path,
        network: GrpcNetwork,
        joining: bool,
    ) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(data_dir)?;
        let (log, sm, state) = open_stores(&data_dir.join("raft"))?;
        let config = Config {
            cluster_name: "vigil".into(),
            heartbeat_interval: 100,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(20_000),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        }
        .validate()?;
        let raft = Raft::new(node_id, Arc::new(config), network, log, sm).await?;
        if !joining && !raft.is_initialized().await? {
            let members = BTreeMap::from([(node_id, BasicNode { addr: address })]);
            raft.initialize(members).await?;
            tracing::info!(node_id, "initialised a new single-node cluster");
        }
        Ok(Arc::new(Self {
            node_id,
            raft,
            state,
        }))
    }

    /// Proposes `cmd` and waits until it is committed and applied.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        match self.raft.client_write(cmd).await {
            Ok(resp) => Ok(resp.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(WriteError::NotLeader {
                    leader: f
                        .leader_node
                        .map(|n| n.addr)
                        .unwrap_or_else(|| "unknown".into()),
                })
            }
            Err(e) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// The leader's id, if one is known.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }
}
