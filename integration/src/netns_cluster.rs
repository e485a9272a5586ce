//! A control-plane cluster of real processes, one per network namespace
//! ([`NodeNetwork`]), with mutual TLS: node `i` serves on 10.77.0.i:7700
//! with a node certificate for raft id `i`, and the test talks to each
//! node as an admin over its management link (which a cut leaves alone).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity as TlsIdentity};
use vigil_pki::{Identity, IssuedCertificate, OperatorRole};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

use crate::node_network::NodeNetwork;
use crate::tls_fleet::TlsFleet;
use crate::{binary, try_wait_for, Daemon, HarnessError, READY_TIMEOUT};

/// Where every node serves (each on an address of its own).
pub const PORT: u16 = 7700;

/// Reaches node `i` presenting one certificate (the admin's, or an
/// agent's).
#[derive(Clone)]
pub struct NodeConnector {
    ca_pem: String,
    who: IssuedCertificate,
    ips: Vec<IpAddr>,
}

/// What a client task needs to reach the nodes as the admin.
pub type AdminConnector = NodeConnector;

impl NodeConnector {
    /// A mutual-TLS channel to node `i` (None: not reachable within 2 s).
    pub async fn channel(&self, i: u8) -> Option<tonic::transport::Channel> {
        let ip = self.ips[i as usize - 1];
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(TlsIdentity::from_pem(&self.who.cert_pem, &self.who.key_pem))
            .domain_name(ip.to_string());
        Endpoint::from_shared(format!("https://{ip}:{PORT}"))
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .tls_config(tls)
            .ok()?
            .connect()
            .await
            .ok()
    }

    /// An admin client of node `i` (None: not reachable within 2 s).
    pub async fn admin_of(&self, i: u8) -> Option<AdminServiceClient<tonic::transport::Channel>> {
        Some(AdminServiceClient::new(self.channel(i).await?))
    }
}

/// Whether every digest is the first's, at the same applied index.
pub fn same_digests(seen: &[admin_pb::StateDigestResponse]) -> bool {
    seen.iter()
        .all(|d| d.sha256 == seen[0].sha256 && d.last_applied_index == seen[0].last_applied_index)
}

pub struct NetnsCluster {
    pub net: NodeNetwork,
    pub fleet: TlsFleet,
    /// An admin's certificate, for the test's own calls.
    pub admin: IssuedCertificate,
    dir: PathBuf,
    /// Extra flags every node starts with.
    flags: Vec<String>,
    /// Node `i` at `daemons[i - 1]`; None while it is down.
    daemons: Vec<Option<Daemon>>,
}

impl NetnsCluster {
    /// `nodes` namespaces and a CA in `dir`; node 1 initialises the
    /// cluster and each other node joins it (added by node 1, the leader).
    pub async fn start(dir: &Path, nodes: u8, flags: &[&str]) -> Result<NetnsCluster, String> {
        let mut cluster = NetnsCluster::start_first(dir, nodes, flags).await?;
        for i in 2..=nodes {
            cluster.add(i).await?;
        }
        Ok(cluster)
    }

    /// As [`NetnsCluster::start`], but only node 1 is started (it leads a
    /// cluster of one); [`NetnsCluster::add`] adds the others.
    pub async fn start_first(
        dir: &Path,
        nodes: u8,
        flags: &[&str],
    ) -> Result<NetnsCluster, String> {
        let net = NodeNetwork::create(nodes).map_err(|e| format!("making the namespaces: {e}"))?;
        let fleet = TlsFleet::new(dir, "fleet");
        let admin = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
        let mut cluster = NetnsCluster {
            net,
            fleet,
            admin,
            dir: dir.to_path_buf(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            daemons: (0..nodes).map(|_| None).collect(),
        };
        cluster.start_node(1, None)?;
        try_wait_for("node 1 leads", Duration::from_secs(20), || async {
            (cluster.status(1).await?.leader_id == 1).then_some(())
        })
        .await
        .map_err(|e| format!("{e}\n{}", cluster.logs()))?;
        Ok(cluster)
    }

    /// Starts node `i`, joining through node 1, and has node 1 (the
    /// leader) add it; returns once it is a voter.
    pub async fn add(&mut self, i: u8) -> Result<(), String> {
        self.start_node(i, Some(self.net.ip(1)))?;
        let mut admin = self
            .admin_of(1)
            .await
            .ok_or_else(|| format!("node 1 unreachable\n{}", self.logs()))?;
        admin
            .add_node(admin_pb::AddNodeRequest {
                node_id: i as u64,
                address: self.address(i),
            })
            .await
            .map_err(|e| format!("adding node {i}: {e}\n{}", self.logs()))?;
        Ok(())
    }

    /// Node `i`'s process id, while it runs.
    pub fn pid(&self, i: u8) -> Option<u32> {
        self.daemons[i as usize - 1].as_ref().map(Daemon::id)
    }

    /// Node `i`'s data directory.
    pub fn data_dir(&self, i: u8) -> PathBuf {
        self.dir.join(format!("node-{i}"))
    }

    /// How many nodes (up or down).
    pub fn nodes(&self) -> u8 {
        self.daemons.len() as u8
    }

    /// Node `i`'s host:port.
    pub fn address(&self, i: u8) -> String {
        format!("{}:{PORT}", self.net.ip(i))
    }

    /// Starts node `i` (again) in its namespace with its data directory,
    /// joining through `join` if given; waits for its ready line.
    pub fn start_node(&mut self, i: u8, join: Option<IpAddr>) -> Result<(), String> {
        let at = self.address(i);
        let mut cmd = self.net.command_in(i, &binary("vigil-controlplane"));
        cmd.args([
            "--node-id",
            &i.to_string(),
            "--listen",
            &at,
            "--advertise",
            &at,
        ])
        .arg("--data-dir")
        .arg(self.data_dir(i))
        .args(self.fleet.node_flags_at(&i.to_string(), self.net.ip(i)))
        .args(&self.flags);
        if let Some(peer) = join {
            cmd.args(["--join", &format!("{peer}:{PORT}")]);
        }
        let daemon = Daemon::spawn(
            cmd,
            &format!("node {i}"),
            "vigil-controlplane ready",
            READY_TIMEOUT,
            Some(&self.log_path(i)),
        )
        .map_err(|e: HarnessError| e.to_string())?;
        self.daemons[i as usize - 1] = Some(daemon);
        Ok(())
    }

    /// Kills node `i` with SIGKILL (no clean shutdown); a no-op if down.
    pub fn kill(&mut self, i: u8) {
        if let Some(mut d) = self.daemons[i as usize - 1].take() {
            d.kill();
        }
    }

    /// Whether node `i` is running (as far as this harness knows).
    pub fn is_up(&self, i: u8) -> bool {
        self.daemons[i as usize - 1].is_some()
    }

    /// An admin client of node `i` (None: not reachable now).
    pub async fn admin_of(&self, i: u8) -> Option<AdminServiceClient<tonic::transport::Channel>> {
        self.connector().admin_of(i).await
    }

    /// What a client task needs to reach the nodes as the admin (it can
    /// outlive a borrow of the cluster, which a test restarts nodes of).
    pub fn connector(&self) -> AdminConnector {
        self.connector_as(&self.admin)
    }

    /// As [`NetnsCluster::connector`], presenting `who`.
    pub fn connector_as(&self, who: &IssuedCertificate) -> NodeConnector {
        NodeConnector {
            ca_pem: self.fleet.ca_pem().to_string(),
            who: who.clone(),
            ips: (1..=self.nodes()).map(|i| self.net.ip(i)).collect(),
        }
    }

    pub async fn status(&self, i: u8) -> Option<admin_pb::ClusterStatusResponse> {
        let s = self
            .admin_of(i)
            .await?
            .cluster_status(admin_pb::ClusterStatusRequest {})
            .await
            .ok()?;
        Some(s.into_inner())
    }

    pub async fn digest(&self, i: u8) -> Option<admin_pb::StateDigestResponse> {
        let d = self
            .admin_of(i)
            .await?
            .state_digest(admin_pb::StateDigestRequest {})
            .await
            .ok()?;
        Some(d.into_inner())
    }

    /// Waits until every node reports the same state digest at the same
    /// applied index, and returns them.
    pub async fn equal_digests(
        &self,
        within: Duration,
    ) -> Result<Vec<admin_pb::StateDigestResponse>, String> {
        try_wait_for("equal digests on every node", within, || async {
            let mut seen = Vec::new();
            for i in 1..=self.nodes() {
                seen.push(self.digest(i).await?);
            }
            same_digests(&seen).then_some(seen)
        })
        .await
        .map_err(|e| format!("{e}\n{}", self.logs()))
    }

    fn log_path(&self, i: u8) -> PathBuf {
        self.dir.join(format!("node-{i}.log"))
    }

    /// Every node's log, for a failure report.
    pub fn logs(&self) -> String {
        (1..=self.nodes())
            .map(|i| {
                format!(
                    "--- node {i}\n{}",
                    std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
                )
            })
            .collect()
    }
}
