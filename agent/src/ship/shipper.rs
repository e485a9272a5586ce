//! Ships spooled findings to the control plane over `AgentService.Stream`
//! and removes them from the spool only when acked. Reconnects with
//! jittered exponential backoff (backon) while the control plane is
//! unreachable.

use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;

use crate::attest::Attestor;
pub use crate::respond::ControlRequest;
use crate::ship::approved_models::{self, ModelDeploymentsTx, ThisHost};
use crate::ship::overflow::SpoolPressure;
use crate::ship::spool::Spool;
use crate::ship::tpm_worker::{self, TpmJob, TpmWorker};

#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// The control plane's nodes: one is used at a time, the next when it
    /// cannot be reached or ends the session.
    pub endpoints: Vec<String>,
    /// Mutual TLS to the control plane (None: plaintext, a lab).
    pub tls: Option<crate::ship::control_plane_tls::AgentTls>,
    /// Who the agent is, said first in every session.
    pub hello: vigil_domain::AgentIdentity,
    pub heartbeat: Duration,
    pub batch_size: usize,
    /// Findings sent but not yet acked, at most.
    pub window: u64,
    pub max_backoff: Duration,
    /// The TPM, with this process's attestation key (None: no TPM; the
    /// agent answers attestation requests that it has none).
    pub attestor: Option<Attestor>,
    /// The admin keys model records must be signed by (none: no model is
    /// taken).
    pub trusted_keys: vigil_policy::TrustedKeys,
}

/// The host's inventory as last read (None before the first reading).
pub type InventoryWatch = watch::Receiver<Option<vigil_domain::GpuInventory>>;

/// What the agent did with its policy bundles (None before any).
pub type PolicyStatusWatch = watch::Receiver<Option<vigil_domain::PolicyStatus>>;

/// The channels between the shipper and the agent's main loop.
#[derive(Clone)]
pub struct ShipperLinks {
    /// The sensors' counters, sent in heartbeats.
    pub health: watch::Receiver<vigil_domain::SensorCounters>,
    pub inventory: InventoryWatch,
    pub policy_status: PolicyStatusWatch,
    pub requests: mpsc::Sender<ControlRequest>,
    /// Where the verified approved models go (`approved_models.rs`).
    pub models: std::sync::Arc<ModelDeploymentsTx>,
}

/// Ships until aborted; `pressure` (the spool's fullness) goes into every
/// heartbeat.
pub async fn run(spool: Spool, cfg: ShipperConfig, links: ShipperLinks, pressure: SpoolPressure) {
    const FIRST_BACKOFF: Duration = Duration::from_millis(200);
    let mut delays = reconnect_delays(FIRST_BACKOFF, cfg.max_backoff);
    let mut next = 0usize;
    loop {
        let endpoint = cfg
            .endpoints
            .get(next % cfg.endpoints.len().max(1))
            .cloned()
            .unwrap_or_default();
        let started = std::time::Instant::now();
        let Err(e) = session(&endpoint, &spool, &cfg, links.clone(), &pressure).await;
        if started.elapsed() > Duration::from_secs(10) {
            delays = reconnect_delays(FIRST_BACKOFF, cfg.max_backoff);
        }
        // The next node; the backoff grows only once all were tried.
        next += 1;
        let backoff = if next.is_multiple_of(cfg.endpoints.len().max(1)) {
            delays.next().unwrap_or(cfg.max_backoff)
        } else {
            FIRST_BACKOFF / 2
        };
        tracing::warn!(
            endpoint = %endpoint,
            error = %e,
            spooled = spool.len(),
            retry_in_ms = backoff.as_millis() as u64,
            "control plane unreachable; findings stay spooled"
        );
        tokio::time::sleep(backoff).await;
    }
}

/// Delays between reconnect attempts: doubling from `first` up to `max`,
/// each jittered so that agents cut off together do not return in step.
/// backon's jitter adds up to 100% of a delay, so its bounds are halved:
/// the first delay lies in [first/2, first], the capped ones in [max/2,
/// max], never above the unjittered schedule.
fn reconnect_delays(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::new()
        .with_min_delay(first.min(max) / 2)
        .with_max_delay(max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        // Float rounding in the jitter may pass the cap by a few ns.
        .map(move |d| d.min(max))
}

fn message(body: pb::agent_message::Body) -> pb::AgentMessage {
    pb::AgentMessage { body: Some(body) }
}

fn inventory_message(gpu: vigil_domain::GpuInventory) -> pb::AgentMessage {
    message(pb::agent_message::Body::Inventory(pb::Inventory {
        gpu: Some(gpu.into()),
    }))
}

async fn session(
    endpoint_url: &str,
    spool: &Spool,
    cfg: &ShipperConfig,
    links: ShipperLinks,
    pressure: &SpoolPressure,
) -> anyhow::Result<std::convert::Infallible> {
    let ShipperLinks {
        mut health,
        mut inventory,
        mut policy_status,
        requests,
        models,
    } = links;
    let this_host = ThisHost {
        agent_id: cfg.hello.agent_id.clone(),
        hostname: cfg.hello.hostname.clone(),
    };
    let mut endpoint = Endpoint::from_shared(endpoint_url.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    if let Some(tls) = &cfg.tls {
        endpoint = endpoint.tls_config(tls.client_config(endpoint_url)?)?;
    }
    let channel = endpoint.connect().await?;
    let mut client = AgentServiceClient::new(channel);
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    tx.send(message(pb::agent_message::Body::Hello(
        cfg.hello.clone().into(),
    )))
    .await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    tracing::info!(endpoint = %endpoint_url, spooled = spool.len(), "connected to the control plane");
    // Every session starts with the current inventory, then sends changes.
    let current = inventory.borrow_and_update().clone();
    if let Some(gpu) = current {
        tx.send(inventory_message(gpu)).await?;
    }
    let status = policy_status.borrow_and_update().clone();
    if let Some(s) = status {
        tx.send(message(pb::agent_message::Body::PolicyStatus(s.into())))
            .await?;
    }
    // With a TPM, the session enrolls it (EK, this process's AK); the
    // TPM's answers come back through `attested` while the loop goes on.
    let (attested_tx, mut attested) = mpsc::channel::<pb::AgentMessage>(4);
    let tpm = cfg
        .attestor
        .clone()
        .map(|attestor| TpmWorker::start(attestor, attested_tx));
    if let Some(tpm) = &tpm {
        if let Some(busy) = tpm.submit(TpmJob::Enroll) {
            tx.send(busy).await?;
        }
    }

    let mut acked = spool.ack_floor()?;
    let mut sent = acked;
    let mut heartbeat = tokio::time::interval(cfg.heartbeat);
    loop {
        if sent - acked < cfg.window {
            let batch = spool.pending(sent, cfg.batch_size)?;
            if let Some(last) = batch.last() {
                sent = last.seq;
                spool.flush().await?;
                let findings = batch.into_iter().map(Into::into).collect();
                tx.send(message(pb::agent_message::Body::Findings(
                    pb::FindingBatch { findings },
                )))
                .await?;
                continue;
            }
        }
        tokio::select! {
            msg = inbound.message() => {
                let Some(msg) = msg? else {
                    anyhow::bail!("the control plane closed the stream");
                };
                match msg.body {
                    Some(pb::control_message::Body::Ack(a)) => {
                        // Only what this session sent can be acked: an ack
                        // beyond it would delete findings the control
                        // plane never saw.
                        if a.up_to_seq > sent {
                            anyhow::bail!(
                                "the control plane acked up to seq {} but only {sent} was sent: not trusting this session",
                                a.up_to_seq
                            );
                        }
                        spool.ack(a.up_to_seq)?;
                        acked = acked.max(a.up_to_seq);
                    }
                    Some(pb::control_message::Body::Rejected(r)) => {
                        if r.seq > sent {
                            anyhow::bail!(
                                "the control plane rejected seq {} but only {sent} was sent: not trusting this session",
                                r.seq
                            );
                        }
                        tracing::error!(seq = r.seq, reason = %r.reason, "control plane rejected a finding");
                        spool.reject(r.seq, &r.reason)?;
                    }
                    Some(pb::control_message::Body::Policy(p)) => {
                        requests.send(ControlRequest::Policy { version: p.version, bundle: p.bundle }).await?;
                    }
                    Some(pb::control_message::Body::Unfreeze(u)) => {
                        requests.send(ControlRequest::Unfreeze(u.into())).await?;
                    }
                    Some(pb::control_message::Body::Workloads(w)) => {
                        let mut records = Vec::with_capacity(w.workloads.len());
                        for (i, wire) in w.workloads.into_iter().enumerate() {
                            match vigil_domain::WorkloadApproval::try_from(wire) {
                                Ok(r) => records.push(r),
                                Err(e) => tracing::error!(error = %e.within(format!("workloads[{i}]")), "ignoring a malformed approved workload"),
                            }
                        }
                        requests.send(ControlRequest::Workloads(records)).await?;
                    }
                    Some(pb::control_message::Body::Models(m)) => {
                        let verified = approved_models::verified_models(m, &cfg.trusted_keys, &this_host);
                        approved_models::publish(&models, verified);
                    }
                    Some(pb::control_message::Body::CredentialChallenge(c)) => {
                        submit(&tpm, TpmJob::Activate(c), &tx).await?;
                    }
                    Some(pb::control_message::Body::AttestRequest(r)) => {
                        submit(&tpm, TpmJob::Quote(r), &tx).await?;
                    }
                    None => tracing::warn!("empty message from the control plane"),
                }
            }
            Some(answer) = attested.recv() => {
                tx.send(answer).await?;
            }
            _ = spool.pushed() => {}
            Ok(()) = policy_status.changed() => {
                let status = policy_status.borrow_and_update().clone();
                if let Some(s) = status {
                    tx.send(message(pb::agent_message::Body::PolicyStatus(s.into()))).await?;
                }
            }
            Ok(()) = inventory.changed() => {
                let current = inventory.borrow_and_update().clone();
                if let Some(gpu) = current {
                    tx.send(inventory_message(gpu)).await?;
                }
            }
            _ = heartbeat.tick() => {
                let heartbeat = vigil_domain::AgentHeartbeat {
                    counters: *health.borrow_and_update(),
                    spooled: spool.len() as u64,
                    spool_dropped: pressure.dropped(),
                    spool_full: pressure.is_full(),
                };
                tx.send(message(pb::agent_message::Body::Heartbeat(heartbeat.into()))).await?;
            }
        }
    }
}

/// Hands an attestation request to the TPM worker; without a TPM, or
/// with too many waiting, the failure goes out at once.
async fn submit(
    tpm: &Option<TpmWorker>,
    job: TpmJob,
    tx: &mpsc::Sender<pb::AgentMessage>,
) -> anyhow::Result<()> {
    let refused = match tpm {
        Some(tpm) => tpm.submit(job),
        None => {
            let nonce = match job {
                TpmJob::Quote(r) => r.nonce,
                TpmJob::Enroll | TpmJob::Activate(_) => Vec::new(),
            };
            Some(tpm_worker::failure(nonce, tpm_worker::NO_TPM.into()))
        }
    };
    if let Some(failure) = refused {
        tx.send(failure).await?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "shipper_attestation_tests.rs"]
mod attestation_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_tpm_requests_are_answered_that_there_is_none() {
        let (tx, mut rx) = mpsc::channel(4);
        let request = pb::AttestRequest {
            nonce: b"n1".to_vec(),
            hash_alg: 0x000b,
            pcrs: vec![0],
            want_event_logs: false,
        };
        submit(&None, TpmJob::Quote(request), &tx).await.unwrap();
        submit(
            &None,
            TpmJob::Activate(pb::CredentialChallenge::default()),
            &tx,
        )
        .await
        .unwrap();
        for nonce in [&b"n1"[..], &[]] {
            let Some(pb::agent_message::Body::AttestationFailure(f)) =
                rx.recv().await.unwrap().body
            else {
                panic!("not an attestation failure");
            };
            assert_eq!(f.nonce, nonce);
            assert_eq!(f.reason, "this agent has no TPM configured");
        }
    }

    #[test]
    fn reconnect_delays_grow_are_capped_and_jittered() {
        let first = Duration::from_millis(200);
        let max = Duration::from_secs(5);
        let delays: Vec<Duration> = reconnect_delays(first, max).take(40).collect();
        // Within the old unjittered schedule (200 ms doubling, capped) and
        // at least half of it (give or take the jitter's float rounding).
        let slack = Duration::from_micros(1);
        let mut unjittered = first;
        for d in &delays {
            assert!(
                *d <= unjittered + slack && *d + slack >= unjittered / 2,
                "{d:?} vs {unjittered:?}"
            );
            unjittered = (unjittered * 2).min(max);
        }
        // Growing until the cap: each step at least doubles the base.
        let below_cap: Vec<_> = delays.iter().take_while(|d| **d < max / 2).collect();
        assert!(below_cap.len() >= 4, "{delays:?}");
        assert!(below_cap.windows(2).all(|w| w[1] > w[0]), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= max));
        // Jittered: the capped delays are not all the same.
        let capped = &delays[10..];
        assert!(capped.iter().any(|d| *d != capped[0]), "{capped:?}");
        // Two agents do not share a schedule.
        let other: Vec<Duration> = reconnect_delays(first, max).take(40).collect();
        assert_ne!(delays, other);
        // A cap below the first delay is still the cap.
        let tight: Vec<Duration> = reconnect_delays(first, Duration::from_millis(50))
            .take(10)
            .collect();
        assert!(
            tight.iter().all(|d| *d <= Duration::from_millis(50)),
            "{tight:?}"
        );
    }
}
