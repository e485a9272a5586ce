//! The agent's wiring: opens the spool, starts the stages and connects
//! their channels. Each stage runs as its own task:
//!
//! ```text
//! sensors ──Vec<SensorEvent>──▶ detect ──Detections──▶ respond ──Vec<TimedFinding>──▶ ship
//!    gpu ──GpuUpdate──────────▶   ▲                      │ ▲                            │
//!                                 └─approved workloads───┘ └──ControlRequest (shipper)──┘
//! ship (shipper) ──approved models (watch)──▶ serve ──Vec<TimedFinding>──▶ ship
//! ```
//!
//! Stopping: SIGTERM stops the sensor stage and the serve stage (its
//! sidecars stopped); each stage ends when its input closes, so what was
//! sensed is detected, decided and spooled before the agent exits.

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use vigil_domain::{AgentIdentity, GpuInventory};

use crate::attest::{Attestor, Tpm};
use crate::config::{hostname, AgentConfig};
use crate::detect::{DetectInputs, DetectOutputs, DetectStage};
use crate::gpu::spawn_gpu_poller;
use crate::metrics::{serve_metrics, AgentMetrics};
use crate::respond::{RespondLinks, RespondStage};
use crate::sensors::SensorStage;
use crate::serve::{ServeLinks, ServeStage};
use crate::ship::approved_models::ModelDeployments;
use crate::ship::model_fetch::ModelFetcher;
use crate::ship::shipper::{ShipperConfig, ShipperLinks};
use crate::ship::spool::{Spool, SpoolQuota};
use crate::ship::ShipStage;

/// Sensor batches in flight to the detect stage (each one ring-buffer
/// drain). Few: a detect stage that falls behind makes the sensor stage
/// wait (the kernel's ring buffer absorbs, and counts what it cannot), as
/// the single loop did, rather than holding many batches in memory.
const SENSOR_BATCHES: usize = 4;
/// Detection batches in flight to the respond stage.
const DETECTION_BATCHES: usize = 16;
/// Batches of standing findings in flight to the ship stage.
const STANDING_BATCHES: usize = 16;
/// Control-plane requests waiting for the respond stage.
const CONTROL_REQUESTS: usize = 16;
/// Approved-workload updates waiting for the detect stage.
const WORKLOAD_UPDATES: usize = 4;

pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    let spool_dir = config.data_dir.join("spool");
    std::fs::create_dir_all(&spool_dir)
        .with_context(|| format!("creating {}", spool_dir.display()))?;
    let spool = Spool::open(&spool_dir)
        .with_context(|| format!("opening the spool in {}", spool_dir.display()))?
        .with_quota(SpoolQuota {
            max_findings: config.spool_max_findings,
            max_bytes: config.spool_max_bytes(),
            keep_free_bytes: config.spool_keep_free_bytes(),
        });
    let metrics = AgentMetrics::default();
    if let Some(addr) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen {addr}"))?;
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(serve_metrics(listener, metrics.clone()));
    }

    // Attach first, then snapshot (in the detect stage).
    let poll = std::time::Duration::from_millis(config.procfs_poll_ms.max(10));
    let mut sensors = SensorStage::start(
        config.sensor_mode,
        config.ebpf_options(),
        poll,
        metrics.clone(),
    )?;
    // The sidecars' binary hashed and their cgroups prepared first: the
    // agent's own approval of them is in force before anything is detected.
    let serve = ServeStage::open(&config);
    let detect = DetectStage::open_with(
        &config,
        spool.database(),
        &mut sensors,
        metrics.clone(),
        serve.local_approvals(),
    )?;
    tracing::info!(mode = sensors.mode().as_str(), hooks = ?sensors.hooks(), processes = detect.processes(), spooled = spool.len(), "sensors attached");
    let respond = RespondStage::open(&config, spool.database(), metrics.clone())?;

    let (batches_tx, batches_rx) = mpsc::channel(SENSOR_BATCHES);
    let (drained_tx, drained_rx) = mpsc::channel(SENSOR_BATCHES);
    let (detections_tx, detections_rx) = mpsc::channel(DETECTION_BATCHES);
    let (standing_tx, standing_rx) = mpsc::channel(STANDING_BATCHES);
    let (requests_tx, requests_rx) = mpsc::channel(CONTROL_REQUESTS);
    let (workloads_tx, workloads_rx) = mpsc::channel(WORKLOAD_UPDATES);
    let (inventory_tx, inventory_rx) = watch::channel(None::<GpuInventory>);
    let gpu = spawn_gpu_poller(config.nvml_library.clone(), config.gpu_poll())
        .context("starting the GPU poller thread")?;
    let hooks = sensors.hooks();
    let tls = crate::ship::control_plane_tls::AgentTls::from_config(&config)?;
    let renewal = tls.clone().map(|tls| {
        tokio::spawn(crate::ship::certificate_renewal::run(
            tls,
            config.control_planes(),
            crate::ship::certificate_renewal::RenewalPolicy {
                within: config
                    .tls_renew_within_secs
                    .map(std::time::Duration::from_secs),
                check_every: std::time::Duration::from_secs(config.tls_renew_check_secs.max(1)),
            },
        ))
    });
    let attestor = attestor(&config);
    let trusted_keys = vigil_policy::TrustedKeys::from_hex(&config.trusted_policy_keys)
        .context("--trusted-policy-key")?;
    // The models this host serves, verified, as the control plane last
    // sent them: the serve stage follows them and fetches their files with
    // `ship::model_fetch::ModelFetcher`.
    let (models_tx, model_deployments): (_, ModelDeployments) = watch::channel(None);
    let model_fetcher = std::sync::Arc::new(ModelFetcher::from_config(&config)?);
    let ship = ShipStage::start(
        spool.clone(),
        config.spool_memory_findings,
        ShipperConfig {
            endpoints: config.control_planes(),
            tls,
            hello: AgentIdentity {
                agent_id: config.resolved_agent_id(),
                hostname: hostname(),
                agent_version: env!("CARGO_PKG_VERSION").to_string(),
                sensor_mode: sensors.mode(),
                kernel_release: nix::sys::utsname::uname()
                    .map(|u| u.release().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                hooks: hooks.clone(),
            },
            heartbeat: config.heartbeat(),
            batch_size: 256,
            window: 4096,
            max_backoff: config.max_backoff(),
            attestor,
            trusted_keys,
        },
        ShipperLinks {
            health: sensors.counters(),
            inventory: inventory_rx,
            policy_status: respond.policy_status(),
            requests: requests_tx,
            models: std::sync::Arc::new(models_tx),
        },
        metrics,
    );
    println!(
        "vigil-agent ready: {} sensors attached ({})",
        hooks.len(),
        sensors.mode().as_str()
    );

    let (stop_tx, stop_rx) = oneshot::channel();
    let (stop_serving, serve_stop) = oneshot::channel();
    let serving = tokio::spawn(serve.run(ServeLinks {
        deployments: model_deployments.clone(),
        findings: standing_tx.clone(),
        source: model_fetcher,
        stop: serve_stop,
    }));
    let sensing = tokio::spawn(sensors.run(batches_tx, drained_rx, stop_rx));
    let detecting = tokio::spawn(detect.run(
        DetectInputs {
            sensor_batches: batches_rx,
            drained: drained_tx,
            gpu,
            workloads: workloads_rx,
        },
        DetectOutputs {
            detections: detections_tx,
            inventory: inventory_tx,
        },
    ));
    let responding = tokio::spawn(respond.run(RespondLinks {
        detections: detections_rx,
        requests: requests_rx,
        workloads: workloads_tx,
        standing: standing_tx,
    }));
    let shipping = tokio::spawn(ship.run(standing_rx));
    let stages = async {
        let (decode_errors, (), (), (), ()) = tokio::try_join!(
            joined(sensing),
            joined(detecting),
            joined(responding),
            joined(serving),
            joined(shipping)
        )?;
        anyhow::Ok(decode_errors)
    };
    let mut stages = std::pin::pin!(stages);
    let decode_errors = tokio::select! {
        r = &mut stages => r?,
        _ = shutdown => {
            let _ = stop_tx.send(());
            // Sidecars stop too (the serve stage holds a sender of the
            // ship stage's input, which ends once every sender is gone).
            let _ = stop_serving.send(());
            stages.await?
        }
    };
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    drop(model_deployments);
    tracing::info!(spooled = spool.len(), decode_errors, "agent stopped");
    Ok(())
}

/// The TPM `--tpm` names, if any. Its attestation key is made now, off
/// the runtime, so that the first session finds it ready (a TPM that
/// fails here is tried again at each session).
fn attestor(config: &AgentConfig) -> Option<Attestor> {
    let Some(target) = config.tpm.resolve() else {
        tracing::info!(tpm = %config.tpm, "no TPM: attestation requests are answered that this agent has none");
        return None;
    };
    let attestor = Attestor::new(Tpm::new(target), config.event_log_paths());
    let warm = attestor.clone();
    tokio::task::spawn_blocking(move || match warm.enrollment() {
        Ok(_) => {
            tracing::info!(tpm = %warm.target(), "TPM ready for attestation (EK certificate read, attestation key made)")
        }
        Err(e) => {
            tracing::warn!(tpm = %warm.target(), error = %e, "the TPM is not ready for attestation; sessions will try again")
        }
    });
    Some(attestor)
}

/// A stage's task, ended: its result, or why it panicked.
async fn joined<T>(task: tokio::task::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    task.await.context("a stage of the agent panicked")?
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed when this is
/// called, not when first polled: a SIGTERM right after "ready" must not
/// take the default action and kill the agent uncleanly.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
