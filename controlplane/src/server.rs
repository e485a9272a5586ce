//! The gRPC server: agent, admin and SIEM services plus gRPC health and
//! reflection, on one listener; and, when configured, the Prometheus
//! metrics on another.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;
use vigil_proto::admin::v1::admin_service_server::AdminServiceServer;
use vigil_proto::agent::v1::agent_service_server::AgentServiceServer;
use vigil_proto::siem::v1::siem_export_server::SiemExportServer;

use crate::metrics::{FindingIntake, MetricsRegistry};
use crate::node::ControlPlaneNode;
use crate::security_events::SecurityEvents;
use crate::service::{AdminServiceImpl, AgentServiceImpl, Authorization, SiemExportImpl};

const SERVICES: &[&str] = &[
    "",
    "vigil.agent.v1.AgentService",
    "vigil.admin.v1.AdminService",
    "vigil.siem.v1.SiemExport",
];

/// What gRPC health says, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Health {
    Serving,
    NoLeader,
    /// Raft stopped: its storage failed, or it was shut down.
    Fatal(String),
}

fn serving_status(
    m: &openraft::RaftMetrics<crate::raft_types::NodeId, openraft::BasicNode>,
) -> Health {
    if let Err(fatal) = &m.running_state {
        return Health::Fatal(fatal.to_string());
    }
    if m.current_leader.is_none() {
        return Health::NoLeader;
    }
    Health::Serving
}

/// Serves gRPC on `listener` until `shutdown` (mutual TLS when `tls` is
/// given, else plaintext and unauthenticated), and the metrics on
/// `metrics_listener` (if any) for as long.
pub async fn serve(
    node: Arc<ControlPlaneNode>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    trusted_policy_keys: vigil_policy::TrustedKeys,
    allow_unsigned: bool,
    tls: Option<crate::mtls::TlsServing>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
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
    // commit, and raft has not stopped on a fatal error (a storage write
    // that failed: a full disk, an I/O error).
    let mut metrics = node.raft.metrics();
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let status = {
                let m = metrics.borrow_and_update();
                serving_status(&m)
            };
            if last.as_ref() != Some(&status) {
                match &status {
                    Health::Serving => tracing::info!("serving"),
                    Health::NoLeader => tracing::warn!("not serving: no leader known"),
                    Health::Fatal(reason) => {
                        tracing::error!(%reason, "not serving: raft stopped on a fatal error")
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
            if metrics.changed().await.is_err() {
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
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vigil_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let events = SecurityEvents::start(node.clone());
    let authorization = match &tls {
        Some(_) => {
            let state = node.state.clone();
            Authorization::mutual_tls(
                Arc::new(move |serial: &str| state.certificate_revoked(serial).unwrap_or(true)),
                events.clone(),
            )
        }
        None => Authorization::open(),
    };
    let router = tonic::transport::Server::builder()
        .layer(authorization)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(AgentServiceServer::new(AgentServiceImpl::new(
            node.clone(),
            sessions.clone(),
            intake,
            events.clone(),
            tls.as_ref().and_then(|t| t.enrollment.clone()),
        )))
        .add_service(AdminServiceServer::new(AdminServiceImpl::new(
            node.clone(),
            sessions,
            trusted_policy_keys,
            allow_unsigned,
        )))
        .add_service(SiemExportServer::new(SiemExportImpl::new(
            node.state.clone(),
        )));
    let served = match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    crate::mtls::accept(listener, tls.config, events),
                    shutdown,
                )
                .await
        }
        None => {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
                .await
        }
    };
    if let Some(task) = metrics_task {
        task.abort();
    }
    served?;
    Ok(())
}
