//! The gRPC server: agent, admin and SIEM services plus gRPC health and
//! reflection, on one listener; and, when configured, the Prometheus
//! metrics on another.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use vigil_proto::admin::v1::admin_service_server::AdminServiceServer;
use vigil_proto::agent::v1::agent_service_server::AgentServiceServer;
use vigil_proto::raft::v1::raft_service_server::RaftServiceServer;
use vigil_proto::siem::v1::siem_export_server::SiemExportServer;

use crate::metrics::{FindingIntake, MetricsRegistry};
use crate::node::ControlPlaneNode;
use crate::security_events::SecurityEvents;
use crate::service::{
    AdminServiceImpl, AgentServiceImpl, Authorization, RaftServiceImpl, SiemExportImpl,
};

const SERVICES: &[&str] = &[
    "",
    "vigil.agent.v1.AgentService",
    "vigil.admin.v1.AdminService",
    "vigil.siem.v1.SiemExport",
    "vigil.raft.v1.RaftService",
];

/// What gRPC health says, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Serving,
    NoLeader,
    /// Raft stopped: its storage failed, or it was shut down.
    Fatal(String),
    /// The data disk is below its reserve, or a storage write is stuck.
    Storage(crate::storage_guard::StorageProblem),
}

fn serving_status(
    m: &openraft::RaftMetrics<crate::raft_types::NodeId, openraft::BasicNode>,
    storage: Option<crate::storage_guard::StorageProblem>,
) -> Health {
    if let Err(fatal) = &m.running_state {
        return Health::Fatal(fatal.to_string());
    }
    if let Some(problem) = storage {
        return Health::Storage(problem);
    }
    if m.current_leader.is_none() {
        return Health::NoLeader;
    }
    Health::Serving
}

/// What health looks at besides raft's metrics: the storage's problem,
/// if any; None once the node is gone.
type StorageProbe = Box<dyn Fn() -> Option<Option<crate::storage_guard::StorageProblem>> + Send>;

/// Raft's metrics as the health watch receives them.
type MetricsReceiver = tokio::sync::watch::Receiver<
    openraft::RaftMetrics<crate::raft_types::NodeId, openraft::BasicNode>,
>;

/// Starts [`watch_health`] on a thread of its own (a current-thread
/// runtime): a storage call stuck on a runtime worker (sled on a full
/// disk) must not hold back the very task that is to say so. A task woken
/// from such a worker waits in its LIFO slot, which other workers do not
/// steal from (CI once saw health stay SERVING 30 s after raft had
/// stopped).
fn spawn_health_watch(
    metrics: MetricsReceiver,
    storage: StorageProbe,
    health: tonic_health::server::HealthReporter,
) -> std::io::Result<()> {
    let watch = watch_health(metrics, storage, health);
    std::thread::Builder::new()
        .name("health-watch".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime.block_on(watch),
                Err(e) => tracing::error!(error = %e, "health watch: cannot start its runtime"),
            }
        })?;
    Ok(())
}

/// Keeps gRPC health true to the node (see `serving_status`) until the
/// node or raft is gone: on every change of raft's metrics and every
/// HEALTH_EVERY (the disk fills, a write gets stuck: raft says nothing of
/// either).
async fn watch_health(
    mut metrics: MetricsReceiver,
    storage: StorageProbe,
    health: tonic_health::server::HealthReporter,
) {
    let mut last = None;
    loop {
        let Some(problem) = storage() else {
            return;
        };
        let status = {
            let m = metrics.borrow_and_update();
            serving_status(&m, problem)
        };
        if last.as_ref() != Some(&status) {
            match &status {
                Health::Serving => tracing::info!("serving"),
                Health::NoLeader => tracing::warn!("not serving: no leader known"),
                Health::Fatal(reason) => {
                    tracing::error!(%reason, "not serving: raft stopped on a fatal error")
                }
                Health::Storage(problem) => {
                    tracing::error!(%problem, "not serving: storage")
                }
            }
            let wire = if status == Health::Serving {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            for name in SERVICES {
                health.set_service_status(*name, wire).await;
            }
            last = Some(status);
        }
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    // Raft is gone (it stopped): nothing will commit again.
                    if !matches!(last, Some(Health::Fatal(_))) {
                        tracing::error!("not serving: raft stopped");
                        for name in SERVICES {
                            health
                                .set_service_status(*name, ServingStatus::NotServing)
                                .await;
                        }
                    }
                    return;
                }
            }
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
        }
    }
}

/// How often health is looked at again without a change in raft's metrics
/// (the disk fills, a write gets stuck: raft says nothing of either).
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a stopping node waits for open requests and streams.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a node listens.
pub struct Listeners {
    /// Operators (admin, SIEM), and agents unless they have their own.
    pub main: TcpListener,
    /// Agents alone (`--agent-listen`).
    pub agents: Option<TcpListener>,
    /// Prometheus (`--metrics-listen`).
    pub metrics: Option<TcpListener>,
    /// The SOC dashboard (`--dashboard-listen`).
    pub dashboard: Option<DashboardListener>,
}

/// The dashboard's listener and how it serves.
pub struct DashboardListener {
    pub listener: TcpListener,
    pub transport: crate::dashboard::DashboardTransport,
    pub settings: crate::dashboard::DashboardSettings,
}

/// Serves gRPC on the listeners until `shutdown` (mutual TLS when `tls`
/// is given, else plaintext and unauthenticated), and the metrics (if
/// asked) for as long.
pub async fn serve(
    node: Arc<ControlPlaneNode>,
    listeners: Listeners,
    trusted_policy_keys: vigil_policy::TrustedKeys,
    allow_unsigned: bool,
    tls: Option<crate::mtls::TlsServing>,
    verifier: Option<Arc<crate::attestation::Verifier>>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let Listeners {
        main: listener,
        agents: agent_listener,
        metrics: metrics_listener,
        dashboard,
    } = listeners;
    let dashboard_task = dashboard.map(|d| {
        tokio::spawn(crate::dashboard::serve_dashboard(
            d.listener,
            Arc::new(crate::dashboard::node_data::NodeData { node: node.clone() }),
            d.transport,
            d.settings,
        ))
    });
    let sessions = Arc::new(crate::service::AgentSessions::default());
    let intake = FindingIntake::default();
    let metrics_task = metrics_listener.map(|metrics_listener| {
        let registry = Arc::new(MetricsRegistry::new(
            node.clone(),
            sessions.clone(),
            &intake,
        ));
        tokio::spawn(crate::metrics::serve_metrics(metrics_listener, registry))
    });
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICES {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    // SERVING exactly while this node knows a leader, i.e. writes can
    // commit, raft has not stopped on a fatal error (a storage write that
    // failed: a full disk, an I/O error), and its storage is neither below
    // its reserve nor stuck (`storage_guard.rs`).
    let watched = Arc::downgrade(&node);
    spawn_health_watch(
        node.raft.metrics(),
        Box::new(move || watched.upgrade().map(|node| node.storage.problem())),
        health.clone(),
    )
    .map_err(|e| anyhow::anyhow!("starting the health watch thread: {e}"))?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let events = SecurityEvents::start(node.clone());
    let authorization = match &tls {
        Some(_) => {
            let state = node.state.clone();
            Authorization::mutual_tls(
                Arc::new(move |serial: &str| {
                    state
                        .certificate_standing(serial)
                        .unwrap_or(crate::store::CertificateStanding::Revoked)
                }),
                events.clone(),
            )
        }
        None => Authorization::open(),
    };
    let open_sessions = sessions.clone();
    let agent_service = AgentServiceServer::new(
        AgentServiceImpl::new(
            node.clone(),
            sessions.clone(),
            intake,
            events.clone(),
            tls.as_ref().and_then(|t| t.enrollment.clone()),
        )
        .with_verifier(verifier)
        .with_trusted_keys(trusted_policy_keys.clone()),
    );
    let membership = Arc::new(crate::cluster_membership::ClusterMembership::new(
        node.clone(),
    ));
    let admin_service = AdminServiceServer::new(AdminServiceImpl::new(
        node.clone(),
        membership.clone(),
        sessions.clone(),
        trusted_policy_keys,
        allow_unsigned,
    ));
    let siem_service = SiemExportServer::new(SiemExportImpl::new(node.state.clone()));
    // Raft entries and snapshot chunks (openraft's default chunk is 3 MiB,
    // JSON-encoded) are larger than tonic's 4 MiB default allows.
    let raft_service =
        RaftServiceServer::new(RaftServiceImpl::new(node.clone(), membership, sessions))
            .max_decoding_message_size(crate::network::MAX_RAFT_MESSAGE)
            .max_encoding_message_size(crate::network::MAX_RAFT_MESSAGE);
    // One listener serves everything, unless agents have their own: then
    // each serves only its own services (and health), so a firewall can
    // tell them apart.
    let router_for = |agents: bool, operators: bool| {
        tonic::transport::Server::builder()
            // Bounded streams per connection (tonic sets none): a peer
            // cannot open thousands of large requests on one connection.
            .max_concurrent_streams(Some(256))
            .layer(authorization.clone())
            .add_service(health_service.clone())
            .add_optional_service(operators.then(|| reflection.clone()))
            .add_optional_service(agents.then(|| agent_service.clone()))
            .add_optional_service(operators.then(|| admin_service.clone()))
            .add_optional_service(operators.then(|| siem_service.clone()))
            .add_optional_service(operators.then(|| raft_service.clone()))
    };
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let tls_config = tls.map(|t| t.config);
    let incoming = |listener: TcpListener| -> Incoming {
        match &tls_config {
            Some(config) => Incoming::Tls(crate::mtls::accept(
                listener,
                config.clone(),
                events.clone(),
            )),
            // No Nagle: a reply (an ack, a raft answer) is a small write
            // that must not wait for the peer's delayed ACK (40 ms).
            None => Incoming::Plain(TcpIncoming::from(listener).with_nodelay(Some(true))),
        }
    };
    let main = serve_incoming(
        router_for(agent_listener.is_none(), true),
        incoming(listener),
        stopped(stop.clone()),
    );
    let agents = agent_listener.map(|l| {
        tokio::spawn(serve_incoming(
            router_for(true, false),
            incoming(l),
            stopped(stop.clone()),
        ))
    });
    let mut main = tokio::spawn(main);
    tokio::pin!(shutdown);
    let served = tokio::select! {
        // The server ended on its own: an error to report.
        ended = &mut main => ended?,
        () = &mut shutdown => {
            // Streams never end by themselves: end the agents' (they
            // reconnect), then give the rest a moment.
            let _ = stop_tx.send(true);
            open_sessions.close_all("the control plane is shutting down");
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut main).await {
                Ok(ended) => ended?,
                Err(_) => {
                    tracing::warn!("streams still open after the grace period: closing them");
                    main.abort();
                    Ok(())
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    if let Some(mut agents) = agents {
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut agents).await {
            Ok(ended) => ended??,
            Err(_) => agents.abort(),
        }
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some(task) = dashboard_task {
        task.abort();
    }
    served?;
    Ok(())
}

/// A listener's connections, plaintext or after the TLS handshake.
enum Incoming {
    Plain(TcpIncoming),
    Tls(
        tokio_stream::wrappers::ReceiverStream<
            std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
        >,
    ),
}

async fn serve_incoming<L>(
    router: tonic::transport::server::Router<L>,
    incoming: Incoming,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    L: tower::Layer<tonic::service::Routes> + Clone,
    L::Service: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    match incoming {
        Incoming::Plain(i) => router.serve_with_incoming_shutdown(i, stop).await?,
        Incoming::Tls(i) => router.serve_with_incoming_shutdown(i, stop).await?,
    }
    Ok(())
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
