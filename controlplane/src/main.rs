use anyhow::Context;
use clap::Parser;
use vigil_controlplane::config::ControlPlaneConfig;
use vigil_controlplane::node::ControlPlaneNode;

async fn run(config: ControlPlaneConfig) -> anyhow::Result<()> {
    let trusted = vigil_policy::TrustedKeys::from_hex(&config.trusted_policy_keys)
        .context("--trusted-policy-key")?;
    let tls = match config.tls_files() {
        Some(files) => Some(
            vigil_controlplane::mtls::serving(
                &files,
                config.tls_ca_key.as_deref(),
                config.enroll_cert_days,
            )
            .context("the TLS configuration")?,
        ),
        None => None,
    };
    for at in std::iter::once(config.listen).chain(config.agent_listen) {
        if tls.is_none() && !at.ip().is_loopback() && !config.allow_plaintext {
            anyhow::bail!(
                "refusing to serve plaintext, unauthenticated gRPC on {at} (reachable from other hosts): give --tls-ca, --tls-cert and --tls-key, or --allow-plaintext for a lab"
            );
        }
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let agent_listener = match config.agent_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding --agent-listen {at}"))?,
        ),
        None => None,
    };
    let agents_line = match &agent_listener {
        Some(l) => format!(" (operators; agents on {})", l.local_addr()?),
        None => String::new(),
    };
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding --metrics-listen {at}"))?,
        ),
        None => None,
    };
    let metrics_line = match &metrics_listener {
        Some(l) => format!(", metrics on http://{}/metrics", l.local_addr()?),
        None => String::new(),
    };
    // The dashboard: HTTPS with the node's certificate when it has one;
    // plaintext only on loopback unless --allow-plaintext (as gRPC).
    let dashboard = match config.dashboard_listen {
        Some(at) => {
            let transport = match (&config.tls_cert, &config.tls_key) {
                (Some(cert), Some(key)) => {
                    vigil_controlplane::dashboard::config::tls_transport(cert, key)
                        .context("--dashboard-listen: the TLS configuration")?
                }
                _ => {
                    if !at.ip().is_loopback() && !config.allow_plaintext {
                        anyhow::bail!(
                            "refusing to serve the dashboard over plaintext HTTP on {at} (reachable from other hosts): give --tls-cert and --tls-key, or --allow-plaintext for a lab"
                        );
                    }
                    vigil_controlplane::dashboard::DashboardTransport::Plain
                }
            };
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding --dashboard-listen {at}"))?;
            Some(vigil_controlplane::server::DashboardListener {
                listener,
                transport,
                settings: config.dashboard_settings(),
            })
        }
        None => None,
    };
    let dashboard_line = match &dashboard {
        Some(d) => format!(
            ", dashboard on {}://{}/",
            if d.transport.is_tls() {
                "https"
            } else {
                "http"
            },
            d.listener.local_addr()?
        ),
        None => String::new(),
    };
    let advertise = config.advertise.unwrap_or(addr).to_string();
    if let Some(files) = config.tls_files() {
        // Peers take raft traffic only from the node id a certificate names.
        let named = std::fs::read_to_string(&files.cert)
            .ok()
            .and_then(|pem| vigil_pki::CertificateInfo::from_pem(&pem).ok())
            .and_then(|info| info.identity.ok());
        if let Some(vigil_pki::Identity::Node { id }) = named {
            if id != config.node_id.to_string() {
                let why = format!(
                    "{} names node {id:?}, not this node's raft id {}: other nodes will refuse its raft traffic (issue one with `vigilctl ca issue --node {}`)",
                    files.cert.display(),
                    config.node_id,
                    config.node_id
                );
                if config.join.is_some() {
                    anyhow::bail!("cannot join a cluster: {why}");
                }
                tracing::warn!("{why}; fine while this node runs alone");
            }
        }
    }
    let peer_tls = match config.tls_files() {
        Some(files) => Some(
            vigil_controlplane::mtls::peer_client_config(&files)
                .context("the TLS configuration for raft peers")?,
        ),
        None => None,
    };
    let verifier = config.verifier()?;
    if let Some(v) = &verifier {
        tracing::info!(
            roots = v.config().roots.len(),
            intermediates = v.config().intermediates.len(),
            pcrs = ?v.config().pcrs,
            interval_secs = v.config().interval.as_secs(),
            require = v.config().require_attestation,
            "TPM attestation on"
        );
    }
    let network = vigil_controlplane::network::GrpcNetwork::new(peer_tls.clone());
    let node = ControlPlaneNode::start(
        config.node_id,
        advertise.clone(),
        &config.data_dir,
        network,
        vigil_controlplane::node::NodeOptions {
            joining: config.join.is_some(),
            coalesce_writes: !config.no_write_coalescing,
            snapshot_every: config.snapshot_every,
            min_free_disk: config.min_free_disk_mib.saturating_mul(1 << 20),
            max_model_bytes: config.max_model_mib.saturating_mul(1 << 20),
        },
    )
    .await
    .with_context(|| format!("starting raft on {}", config.data_dir.display()))?;
    tokio::spawn(vigil_controlplane::alert_retention::keep_alert_retention(
        node.clone(),
        config.alert_retention(),
    ));
    if let Some(v) = &verifier {
        tokio::spawn(
            vigil_controlplane::attestation::stale_sweep::sweep_stale_hosts(
                node.clone(),
                v.config().interval,
            ),
        );
    }
    let transport = if tls.is_some() {
        "mutual TLS"
    } else {
        tracing::warn!(
            %addr,
            "the gRPC listener is plaintext and unauthenticated: whoever reaches it can read alerts, push policy, pose as any agent and, in a cluster, speak raft as any node (a lab only; give --tls-ca, --tls-cert and --tls-key)"
        );
        "plaintext"
    };
    println!(
        "vigil-controlplane ready: node {} serving gRPC ({transport}) on {addr}{agents_line}, data in {}{metrics_line}{dashboard_line}",
        config.node_id,
        config.data_dir.display()
    );
    let joining = config.join.clone().map(|peer| {
        let node_id = config.node_id;
        let joiner = node.clone();
        let advertise = advertise.clone();
        tokio::spawn(async move {
            let voters = vigil_controlplane::cluster_join::join_cluster(
                &joiner,
                peer_tls.as_ref(),
                &peer,
                &advertise,
            )
            .await?;
            println!("vigil-controlplane: node {node_id} joined the cluster through {peer}; voters {voters:?}");
            anyhow::Ok(())
        })
    });
    let serving = vigil_controlplane::server::serve(
        node.clone(),
        vigil_controlplane::server::Listeners {
            main: listener,
            agents: agent_listener,
            metrics: metrics_listener,
            dashboard,
        },
        trusted,
        config.allow_unsigned,
        tls,
        verifier,
        shutdown_signal(),
    );
    match joining {
        None => serving.await?,
        Some(joining) => {
            tokio::pin!(serving);
            tokio::select! {
                served = &mut serving => served?,
                joined = joining => {
                    // A refused join is fatal: a node that is no member
                    // must not sit there looking healthy.
                    joined??;
                    serving.await?;
                }
            }
        }
    }
    tracing::info!("shutting down raft");
    node.raft.shutdown().await.ok();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = ControlPlaneConfig::parse();
    vigil_observability::init_logging(config.log_format, "info,openraft=warn");
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-controlplane: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
