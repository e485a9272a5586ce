//! Control plane configuration: command-line flags, each also settable by environment.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "vigil-controlplane",
    version,
    about = "vigil control plane: policy, agents, alerts and audit on openraft + sled"
)]
pub struct ControlPlaneConfig {
    /// This node's raft id (1 for a single-node cluster).
    #[arg(long, env = "VIGIL_NODE_ID", default_value_t = 1)]
    pub node_id: u64,

    /// gRPC listen address (agents, vigilctl, SIEM). Loopback unless configured.
    #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,

    /// Directory for the raft log and state machine.
    #[arg(
        long,
        env = "VIGIL_CP_DATA_DIR",
        default_value = "./.vigil/controlplane"
    )]
    pub data_dir: PathBuf,

    /// Public key (hex ed25519) whose policy bundles may be pushed
    /// (repeatable; `vigilctl policy keygen` prints one).
    #[arg(
        long = "trusted-policy-key",
        env = "VIGIL_TRUSTED_POLICY_KEYS",
        value_delimiter = ','
    )]
    pub trusted_policy_keys: Vec<String>,
}
