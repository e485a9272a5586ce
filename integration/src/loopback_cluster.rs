//! A control-plane cluster of real processes on loopback, in plaintext:
//! node `id` serves on 127.0.0.1:`ports[id - 1]` with its data in
//! `dir/node-<id>`. The counterpart of [`crate::netns_cluster::NetnsCluster`]
//! for tests that need no namespaces (and no privilege): the same calls
//! (`start`, `kill`, `start_node`, `logs`), by port rather than address.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

use crate::netns_cluster::same_digests;
use crate::{free_port, try_connect, try_wait_for, ControlPlane};

/// An admin client of the node on 127.0.0.1:`port` (None: not reachable).
pub async fn admin(port: u16) -> Option<AdminServiceClient<Channel>> {
    try_connect(&format!("http://127.0.0.1:{port}"))
        .await
        .ok()
        .map(AdminServiceClient::new)
}

/// The leader's id as the first node of `ports` that answers names one
/// (None: no node answers with a leader).
pub async fn leader(ports: &[u16]) -> Option<u64> {
    for &port in ports {
        if let Some(mut c) = admin(port).await {
            if let Ok(s) = c.cluster_status(admin_pb::ClusterStatusRequest {}).await {
                let id = s.into_inner().leader_id;
                if id != 0 {
                    return Some(id);
                }
            }
        }
    }
    None
}

/// Every node's state digest, in the order of `ports` (None: a node did
/// not answer).
pub async fn state_digests(ports: &[u16]) -> Option<Vec<admin_pb::StateDigestResponse>> {
    let mut seen = Vec::new();
    for &port in ports {
        seen.push(
            admin(port)
                .await?
                .state_digest(admin_pb::StateDigestRequest {})
                .await
                .ok()?
                .into_inner(),
        );
    }
    Some(seen)
}

/// A steady stream of writes until `stop`: certificate revocations (each
/// an audit event) of unique serials `serial(k)`, k = 1, 2..., one at a
/// time, each to the node it is at; it moves to the next node of `ports`
/// when one is unreachable, refuses or takes over 10 s (an unknown outcome:
/// it may or may not have committed). The serials acknowledged.
pub async fn revoke_until_stopped(
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
    serial: fn(u64) -> String,
    identity: &'static str,
    reason: &'static str,
) -> BTreeSet<String> {
    let mut acked = BTreeSet::new();
    let (mut k, mut at) = (0u64, 0usize);
    while !stop.load(Ordering::Relaxed) {
        k += 1;
        let serial = serial(k);
        let Some(mut client) = admin(ports[at % ports.len()]).await else {
            at += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let call = client.revoke_certificate(admin_pb::RevokeCertificateRequest {
            serial: serial.clone(),
            identity: identity.into(),
            reason: reason.into(),
        });
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(_)) => {
                acked.insert(serial);
            }
            Ok(Err(status)) if k < 3 => {
                eprintln!("write {serial}: {status}");
                at += 1;
            }
            _ => at += 1,
        }
    }
    acked
}

pub struct LoopbackCluster {
    /// Node `id` serves on 127.0.0.1:`ports[id - 1]`.
    pub ports: Vec<u16>,
    dir: PathBuf,
    /// Extra flags every node starts with.
    flags: Vec<String>,
    /// Node `id` at `nodes[id - 1]`; None while it is down.
    nodes: Vec<Option<ControlPlane>>,
}

impl LoopbackCluster {
    /// `nodes` nodes on free ports with their data in `dir`, each started
    /// with `flags` too: node 1 initialises the cluster and leads, and each
    /// other node joins through it (added by node 1).
    pub async fn start(dir: &Path, nodes: u64, flags: &[&str]) -> LoopbackCluster {
        let mut cluster = LoopbackCluster {
            ports: (0..nodes).map(|_| free_port()).collect(),
            dir: dir.to_path_buf(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            nodes: (0..nodes).map(|_| None).collect(),
        };
        cluster.start_node(1, None);
        cluster.nodes[0].as_ref().unwrap().wait_leader().await;
        let first = cluster.ports[0];
        for id in 2..=nodes {
            cluster.start_node(id, Some(first));
            admin(first)
                .await
                .unwrap()
                .add_node(admin_pb::AddNodeRequest {
                    node_id: id,
                    address: format!("127.0.0.1:{}", cluster.port(id)),
                })
                .await
                .unwrap();
        }
        cluster
    }

    /// Node `id`'s port.
    pub fn port(&self, id: u64) -> u16 {
        self.ports[id as usize - 1]
    }

    /// Starts node `id` (again) with its data directory, joining through
    /// the node on 127.0.0.1:`join` if given; panics with its log when it
    /// does not come up (a start-up check refusing, say).
    pub fn start_node(&mut self, id: u64, join: Option<u16>) {
        let mut flags = vec!["--node-id".to_string(), id.to_string()];
        flags.extend(self.flags.iter().cloned());
        if let Some(peer) = join {
            flags.extend(["--join".to_string(), format!("127.0.0.1:{peer}")]);
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let cp =
            ControlPlane::start_with(&self.dir.join(format!("node-{id}")), self.port(id), &flags);
        self.nodes[id as usize - 1] = Some(cp);
    }

    /// Kills node `id` with SIGKILL (no clean shutdown); a no-op if down.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut cp) = self.nodes[id as usize - 1].take() {
            cp.daemon.kill();
        }
    }

    /// Waits until every node reports the same state digest at the same
    /// applied index, and returns them.
    pub async fn equal_digests(
        &self,
        within: Duration,
    ) -> Result<Vec<admin_pb::StateDigestResponse>, String> {
        try_wait_for("equal digests", within, || async {
            let seen = state_digests(&self.ports).await?;
            same_digests(&seen).then_some(seen)
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// The log of every node running, for a failure report.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .flatten()
            .map(|cp| std::fs::read_to_string(&cp.log).unwrap_or_default())
            .collect()
    }
}
