//! `vigil.agent.v1.AgentService`: the agents' session. Findings are acked
//! only after raft has committed them.
//!
//! Architecture invariant: nothing an agent sends can crash the session
//! handler; a bad finding is rejected by seq with the field that is wrong,
//! and the rest of its batch is still taken.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vigil_domain::{AgentIdentity, Finding};
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_server::AgentService;

use super::{AgentSessions, Caller};
use crate::metrics::FindingIntake;
use crate::node::ControlPlaneNode;
use crate::raft_types::{Command, CommandResult};
use crate::security_events::{SecurityEvent, SecurityEvents};

pub struct AgentServiceImpl {
    node: Arc<ControlPlaneNode>,
    sessions: Arc<AgentSessions>,
    intake: FindingIntake,
    events: SecurityEvents,
    enrollment: Option<Arc<super::enrollment::Enrollment>>,
    /// The TPM verifier (None: no `--tpm-ca`, attestation off).
    verifier: Option<Arc<crate::attestation::Verifier>>,
    /// The admin keys model records must be signed by (an agent is never
    /// given a record that does not verify against them).
    trusted: vigil_policy::TrustedKeys,
}

impl AgentServiceImpl {
    pub fn new(
        node: Arc<ControlPlaneNode>,
        sessions: Arc<AgentSessions>,
        intake: FindingIntake,
        events: SecurityEvents,
        enrollment: Option<Arc<super::enrollment::Enrollment>>,
    ) -> Self {
        Self {
            node,
            sessions,
            intake,
            events,
            enrollment,
            verifier: None,
            trusted: vigil_policy::TrustedKeys::default(),
        }
    }

    /// Model records are given out only when these keys verify them.
    pub fn with_trusted_keys(mut self, trusted: vigil_policy::TrustedKeys) -> Self {
        self.trusted = trusted;
        self
    }

    /// Attestation on, with this verifier.
    pub fn with_verifier(mut self, verifier: Option<Arc<crate::attestation::Verifier>>) -> Self {
        self.verifier = verifier;
        self
    }
}

fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn registration(h: pb::Hello) -> Result<AgentIdentity, Status> {
    AgentIdentity::try_from(h).map_err(|e| Status::invalid_argument(e.within("hello").to_string()))
}

fn control(body: pb::control_message::Body) -> Result<pb::ControlMessage, Status> {
    Ok(pb::ControlMessage { body: Some(body) })
}

type Outbound = mpsc::Sender<Result<pb::ControlMessage, Status>>;

/// How far past the last committed seq a finding may be. An agent's seqs
/// are consecutive (gaps only where the control plane rejected a finding),
/// and it sends a bounded window; a seq far ahead would make every later
/// real finding a "duplicate" (the seq high-water mark only rises).
pub const MAX_SEQ_JUMP: u64 = 100_000;

struct Session {
    node: Arc<ControlPlaneNode>,
    sessions: Arc<AgentSessions>,
    intake: FindingIntake,
    events: SecurityEvents,
    agent_id: String,
    /// The serial of the certificate the stream was opened with (None
    /// without TLS): when it is revoked, the stream ends.
    serial: Option<String>,
    /// The highest seq taken from this agent (committed, or in this
    /// session's writes): the base a jump is measured from.
    last_seq: std::sync::atomic::AtomicU64,
    tx: Outbound,
    /// The session's attestation (None: attestation off).
    attestation: Option<super::agent_attestation::SessionAttestation>,
    /// Hosts without a verified TPM get no approved workloads.
    require_attestation: bool,
    /// What model records must verify against.
    trusted: vigil_policy::TrustedKeys,
}

/// Whether a host in this trust state is given nothing to run: its
/// attestation failed, or attestation is required and it has no verified
/// TPM.
fn withheld(trust: &vigil_domain::TrustState, require_attestation: bool) -> bool {
    trust.is_untrusted() || (require_attestation && *trust != vigil_domain::TrustState::Trusted)
}

/// The models the host `agent_id` named `hostname` serves: from the
/// records the trusted keys verify (a record that does not is dropped,
/// and logged), never one whose signature fails.
fn verified_deployments(
    catalog: vigil_domain::ModelCatalog,
    trusted: &vigil_policy::TrustedKeys,
    agent_id: &str,
    hostname: &str,
) -> vigil_domain::ModelCatalog {
    let mut catalog = catalog;
    catalog.retain(|r| match trusted.verify_model(r) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(agent = %agent_id, host = %hostname, name = %r.name, version = r.version, error = %e, "a model record does not verify against the trusted keys: not given out");
            false
        }
    });
    catalog
}

impl Session {
    /// Why the stream must end now that its certificate is revoked.
    fn revoked(&self) -> Option<Status> {
        use crate::store::CertificateStanding;
        let serial = self.serial.as_deref()?;
        match self
            .node
            .state
            .certificate_standing(serial)
            .unwrap_or(CertificateStanding::Revoked)
        {
            // Mid-install: checked again when the install has notified the
            // revocation watchers.
            CertificateStanding::Good | CertificateStanding::Unsettled => None,
            CertificateStanding::Superseded => {
                tracing::info!(agent = %self.agent_id, %serial, "ending the stream: its certificate was renewed");
                // UNAVAILABLE: the agent reconnects, with the new files.
                Some(Status::unavailable(format!(
                    "agent {}: certificate {serial} was renewed; reconnect with the new one",
                    self.agent_id
                )))
            }
            CertificateStanding::Revoked => {
                tracing::warn!(agent = %self.agent_id, %serial, "ending the stream: its certificate was revoked");
                Some(Status::permission_denied(format!(
                    "agent {}: certificate {serial} is revoked",
                    self.agent_id
                )))
            }
        }
    }

    async fn on_findings(&self, batch: pb::FindingBatch) -> Result<(), Status> {
        use std::sync::atomic::Ordering;
        let mut valid: Vec<Finding> = Vec::with_capacity(batch.findings.len());
        let mut up_to = 0;
        let base = self.last_seq.load(Ordering::Relaxed);
        for (i, wire) in batch.findings.into_iter().enumerate() {
            let seq = wire.seq;
            let parsed = Finding::try_from(wire)
                .map_err(|e| e.within(format!("findings[{i}]")).to_string())
                .and_then(|f| {
                    if f.signal == vigil_domain::SignalKind::Attestation {
                        let why = format!(
                            "findings[{i}].signal: attestation alerts are raised by the control plane's verifier, never by an agent"
                        );
                        self.events.report(SecurityEvent::Denied {
                            caller: format!("agent {}", self.agent_id),
                            peer: None,
                            what: "/vigil.agent.v1.AgentService/Stream".into(),
                            why: why.clone(),
                        });
                        Err(why)
                    } else if f.seq > base.saturating_add(MAX_SEQ_JUMP) {
                        let why = format!(
                            "findings[{i}].seq: {seq} jumps more than {MAX_SEQ_JUMP} past the last seq taken from this agent ({base})"
                        );
                        self.events.report(SecurityEvent::Denied {
                            caller: format!("agent {}", self.agent_id),
                            peer: None,
                            what: "/vigil.agent.v1.AgentService/Stream".into(),
                            why: why.clone(),
                        });
                        Err(why)
                    } else {
                        Ok(f)
                    }
                });
            // A refused seq is acked (the agent moves it aside) but never
            // raises the high-water mark.
            up_to = up_to.max(seq);
            match parsed {
                Ok(f) => valid.push(f),
                Err(reason) => {
                    self.intake.refused.inc();
                    tracing::warn!(agent = %self.agent_id, seq, %reason, "rejecting a finding");
                    let _ = self
                        .tx
                        .send(control(pb::control_message::Body::Rejected(pb::Rejected {
                            seq,
                            reason,
                        })))
                        .await;
                }
            }
        }
        valid.sort_by_key(|f| f.seq);
        if let Some(last) = valid.last() {
            self.last_seq.fetch_max(last.seq, Ordering::Relaxed);
        }
        if !valid.is_empty() {
            let result = self
                .node
                .write_coalesced(Command::AppendAlerts {
                    agent_id: self.agent_id.clone(),
                    received_at_unix_nanos: now_unix_nanos(),
                    findings: valid,
                })
                .await?;
            if let CommandResult::AlertsAppended {
                appended,
                duplicates,
                ..
            } = result
            {
                self.intake.ingested.inc_by(appended);
                self.intake.duplicates.inc_by(duplicates);
                tracing::debug!(agent = %self.agent_id, appended, duplicates, "findings committed");
            }
        }
        if up_to > 0 {
            let _ = self
                .tx
                .send(control(pb::control_message::Body::Ack(pb::Ack {
                    up_to_seq: up_to,
                })))
                .await;
        }
        Ok(())
    }

    async fn on_policy_status(&self, st: pb::PolicyStatus) -> Result<(), Status> {
        let st = vigil_domain::PolicyStatus::try_from(st)
            .map_err(|e| Status::invalid_argument(e.within("policy_status").to_string()))?;
        if !st.error.is_empty() {
            tracing::warn!(agent = %self.agent_id, refused = st.refused_version, active = st.active_version, error = %st.error, "agent refused a policy bundle");
        }
        self.node
            .write(Command::PolicyStatus {
                agent_id: self.agent_id.clone(),
                active_version: st.active_version,
                error: st.error,
            })
            .await?;
        Ok(())
    }

    /// This agent's trust as the state says it now.
    fn trust_state(&self) -> vigil_domain::TrustState {
        self.node
            .state
            .agent(&self.agent_id)
            .ok()
            .flatten()
            .map(|r| r.attestation.trust)
            .unwrap_or_default()
    }

    /// Sends the active policy bundle, if there is one.
    async fn send_active_policy(&self) -> Result<(), Status> {
        let active = self
            .node
            .state
            .active_policy()
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Some((version, bundle)) = active {
            let _ = self
                .tx
                .send(control(pb::control_message::Body::Policy(
                    pb::PolicyBundle { version, bundle },
                )))
                .await;
        }
        Ok(())
    }

    async fn on_heartbeat(&self, hb: pb::Heartbeat) -> Result<(), Status> {
        let hb = vigil_domain::AgentHeartbeat::try_from(hb)
            .map_err(|e| Status::invalid_argument(e.within("heartbeat").to_string()))?;
        if hb.spool_full {
            tracing::warn!(agent = %self.agent_id, spooled = hb.spooled, dropped = hb.spool_dropped, "agent reports spool-full");
        }
        self.node
            .write_coalesced(Command::Heartbeat {
                agent_id: self.agent_id.clone(),
                at_unix_nanos: now_unix_nanos(),
                counters: hb.counters,
                spooled: hb.spooled,
                spool_dropped: hb.spool_dropped,
                spool_full: hb.spool_full,
            })
            .await?;
        Ok(())
    }

    async fn on_inventory(&self, inv: pb::Inventory) -> Result<(), Status> {
        let gpu = inv
            .gpu
            .map(vigil_domain::GpuInventory::try_from)
            .transpose()
            .map_err(|e| Status::invalid_argument(e.within("inventory.gpu").to_string()))?
            .unwrap_or_default();
        self.node
            .write(Command::UpdateInventory {
                agent_id: self.agent_id.clone(),
                gpu,
            })
            .await?;
        Ok(())
    }

    /// Sends the approved workloads this host may run: those for the whole
    /// fleet or naming it, and none while its attestation failed (or, with
    /// `--require-attestation`, while it has no verified TPM).
    async fn send_workloads(&self) -> Result<(), Status> {
        let record = self
            .node
            .state
            .agent(&self.agent_id)
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or_default();
        let trust = &record.attestation.trust;
        let workloads = if withheld(trust, self.require_attestation) {
            tracing::info!(agent = %self.agent_id, %trust, "withholding approved workloads");
            Vec::new()
        } else {
            self.node
                .state
                .workloads()
                .map_err(|e| Status::internal(e.to_string()))?
                .into_iter()
                .filter(|w| w.covers_host(&self.agent_id, &record.identity.hostname))
                .collect()
        };
        let _ = self
            .tx
            .send(control(pb::control_message::Body::Workloads(
                pb::Workloads {
                    workloads: workloads.into_iter().map(Into::into).collect(),
                },
            )))
            .await;
        Ok(())
    }

    /// Sends the models this host serves (`ApprovedModels`, replacing
    /// what it had): per name the active version and the fallbacks whose
    /// host scope covers it and whose signature verifies, and none while
    /// its trust withholds approvals.
    async fn send_models(&self) -> Result<(), Status> {
        let record = self
            .node
            .state
            .agent(&self.agent_id)
            .map_err(|e| Status::internal(e.to_string()))?
            .unwrap_or_default();
        let trust = &record.attestation.trust;
        let hostname = &record.identity.hostname;
        let deployments = if withheld(trust, self.require_attestation) {
            tracing::info!(agent = %self.agent_id, %trust, "withholding approved models");
            Vec::new()
        } else {
            let catalog = self
                .node
                .state
                .model_catalog()
                .map_err(|e| Status::internal(e.to_string()))?;
            verified_deployments(catalog, &self.trusted, &self.agent_id, hostname)
                .deployments_for(&self.agent_id)
        };
        tracing::debug!(agent = %self.agent_id, models = deployments.len(), "sending the approved models");
        let _ = self
            .tx
            .send(control(pb::control_message::Body::Models(
                pb::ApprovedModels {
                    models: deployments.into_iter().map(Into::into).collect(),
                },
            )))
            .await;
        Ok(())
    }

    async fn run(self, mut inbound: Streaming<pb::AgentMessage>) {
        let mut policy = self.node.state.watch_policy();
        policy.mark_changed();
        let mut workloads = self.node.state.watch_workloads();
        workloads.mark_changed();
        let mut models = self.node.state.watch_models();
        models.mark_changed();
        let mut revocations = self.node.state.watch_revocations();
        let mut trust = self.node.state.watch_trust();
        let mut last_trust = self.trust_state();
        let period = self
            .attestation
            .as_ref()
            .map_or(Duration::from_secs(3600), |a| a.interval());
        let mut attest_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        attest_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let attest_now = self.attestation.as_ref().map(|a| a.attest_now.clone());
        loop {
            let next = tokio::select! {
                m = inbound.message() => m,
                _ = attest_tick.tick(), if self.attestation.is_some() => {
                    if let Some(a) = &self.attestation {
                        if let Err(status) = a.on_tick(&self.node, &self.tx).await {
                            tracing::warn!(agent = %self.agent_id, error = %status, "attestation tick");
                        }
                    }
                    continue;
                }
                _ = async { match &attest_now { Some(n) => n.notified().await, None => std::future::pending().await } } => {
                    if let Some(a) = &self.attestation {
                        if let Err(status) = a.quote_now(&self.node, &self.tx).await {
                            tracing::warn!(agent = %self.agent_id, error = %status, "attestation on demand");
                        }
                    }
                    continue;
                }
                changed = trust.changed() => {
                    if changed.is_ok() {
                        trust.borrow_and_update();
                        let now = self.trust_state();
                        if now != last_trust {
                            last_trust = now;
                            if let Err(status) = self.send_workloads().await {
                                tracing::warn!(agent = %self.agent_id, error = %status, "sending the approved workloads");
                            }
                            if let Err(status) = self.send_models().await {
                                tracing::warn!(agent = %self.agent_id, error = %status, "sending the approved models");
                            }
                        }
                    }
                    continue;
                }
                changed = revocations.changed(), if self.serial.is_some() => {
                    if changed.is_ok() {
                        revocations.borrow_and_update();
                        if let Some(status) = self.revoked() {
                            let _ = self.tx.send(Err(status)).await;
                            break;
                        }
                    }
                    continue;
                }
                changed = workloads.changed() => {
                    if changed.is_ok() {
                        workloads.borrow_and_update();
                        if let Err(status) = self.send_workloads().await {
                            tracing::warn!(agent = %self.agent_id, error = %status, "sending the approved workloads");
                        }
                    }
                    continue;
                }
                changed = models.changed() => {
                    if changed.is_ok() {
                        models.borrow_and_update();
                        if let Err(status) = self.send_models().await {
                            tracing::warn!(agent = %self.agent_id, error = %status, "sending the approved models");
                        }
                    }
                    continue;
                }
                changed = policy.changed() => {
                    if changed.is_ok() {
                        policy.borrow_and_update();
                        if let Err(status) = self.send_active_policy().await {
                            tracing::warn!(agent = %self.agent_id, error = %status, "sending the policy bundle");
                        }
                    }
                    continue;
                }
            };
            let msg = match next {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(status) => {
                    tracing::warn!(agent = %self.agent_id, error = %status, "bad message on an agent stream");
                    let _ = self
                        .tx
                        .send(Err(Status::invalid_argument(format!(
                            "malformed agent message: {}",
                            status.message()
                        ))))
                        .await;
                    break;
                }
            };
            let handled = match msg.body {
                Some(pb::agent_message::Body::Findings(b)) => self.on_findings(b).await,
                Some(pb::agent_message::Body::Heartbeat(h)) => self.on_heartbeat(h).await,
                Some(pb::agent_message::Body::Inventory(i)) => self.on_inventory(i).await,
                Some(pb::agent_message::Body::PolicyStatus(p)) => self.on_policy_status(p).await,
                Some(pb::agent_message::Body::TpmEnrollment(m)) => match &self.attestation {
                    Some(a) => a.on_enrollment(&self.node, &self.tx, m).await,
                    None => {
                        tracing::debug!(agent = %self.agent_id, "TPM enrollment ignored: attestation is off (no --tpm-ca)");
                        Ok(())
                    }
                },
                Some(pb::agent_message::Body::CredentialActivated(m)) => match &self.attestation {
                    Some(a) => a.on_activated(&self.node, &self.tx, m).await,
                    None => Err(Status::failed_precondition(
                        "credential_activated: attestation is off",
                    )),
                },
                Some(pb::agent_message::Body::Quote(m)) => match &self.attestation {
                    Some(a) => a.on_quote(&self.node, m).await,
                    None => Err(Status::failed_precondition("quote: attestation is off")),
                },
                Some(pb::agent_message::Body::AttestationFailure(m)) => match &self.attestation {
                    Some(a) => a.on_failure(&self.node, m).await,
                    None => Ok(()),
                },
                Some(pb::agent_message::Body::Hello(_)) => Err(Status::invalid_argument(
                    "hello may only be the first message",
                )),
                None => Err(Status::invalid_argument("agent message without a body")),
            };
            if let Err(status) = handled {
                tracing::warn!(agent = %self.agent_id, error = %status, "ending an agent session");
                let _ = self.tx.send(Err(status)).await;
                break;
            }
        }
        self.sessions.remove(&self.agent_id, &self.tx);
        tracing::info!(agent = %self.agent_id, "agent session ended");
    }
}

impl AgentServiceImpl {
    /// The agent a `FetchModel` is for: the certificate's (another id in
    /// the request is refused), or without TLS the one the request names.
    fn fetching_agent(&self, caller: &Caller, named: &str) -> Result<String, Status> {
        match caller {
            Caller::Authenticated { .. } => {
                let certified = caller.agent_id().ok_or_else(|| {
                    Status::permission_denied(format!(
                        "{}: only agents fetch models",
                        caller.actor()
                    ))
                })?;
                if !named.is_empty() && named != certified {
                    let why = format!(
                        "its request names agent {named:?}; its certificate is for {certified:?}"
                    );
                    self.events.report(SecurityEvent::Denied {
                        caller: caller.actor(),
                        peer: None,
                        what: "/vigil.agent.v1.AgentService/FetchModel".into(),
                        why: why.clone(),
                    });
                    return Err(Status::permission_denied(format!(
                        "agent {certified}: {why}"
                    )));
                }
                Ok(certified.to_string())
            }
            Caller::Unauthenticated if !named.is_empty() => Ok(named.to_string()),
            Caller::Unauthenticated => Err(Status::invalid_argument(
                "agent_id: must be set (without mutual TLS the request names its agent)",
            )),
            Caller::Anonymous => Err(Status::unauthenticated(
                "fetching a model needs an agent certificate",
            )),
        }
    }

    /// Whether `agent_id` may have the model file `sha256`, and the size
    /// its record says: only a digest among the host's deployments
    /// (approved, the active version or a fallback, its host scope
    /// covering the agent's id or hostname, signed by a trusted key) while
    /// the host's trust does not withhold approvals.
    fn model_for_agent(&self, agent_id: &str, sha256: &str) -> Result<u64, Status> {
        let deny = |why: String| {
            tracing::warn!(agent = %agent_id, %sha256, %why, "model fetch refused");
            self.events.report(SecurityEvent::Denied {
                caller: format!("agent {agent_id}"),
                peer: None,
                what: "/vigil.agent.v1.AgentService/FetchModel".into(),
                why: why.clone(),
            });
            Status::permission_denied(format!("agent {agent_id}: {why}"))
        };
        let record = self
            .node
            .state
            .agent(agent_id)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                deny("is not registered with the control plane (open a session first)".into())
            })?;
        let require = self
            .verifier
            .as_ref()
            .is_some_and(|v| v.config().require_attestation);
        let trust = &record.attestation.trust;
        if withheld(trust, require) {
            return Err(deny(format!(
                "its host is {trust}: it is given no model while its attestation does not pass"
            )));
        }
        let catalog = self
            .node
            .state
            .model_catalog()
            .map_err(|e| Status::internal(e.to_string()))?;
        if !catalog.records().any(|r| r.sha256 == sha256) {
            return Err(Status::not_found(format!(
                "no model record names sha256 {sha256}"
            )));
        }
        let hostname = &record.identity.hostname;
        let verified = verified_deployments(catalog, &self.trusted, agent_id, hostname);
        verified
            .deployments_for(agent_id)
            .iter()
            .flat_map(|d| d.records())
            .find(|r| r.sha256 == sha256)
            .map(|r| r.size)
            .ok_or_else(|| {
                deny(format!(
                    "model file {sha256} is not among the models this host serves (not approved, revoked, above a rollback pin, or scoped to other hosts)"
                ))
            })
    }
}

#[tonic::async_trait]
impl AgentService for AgentServiceImpl {
    type StreamStream = ReceiverStream<Result<pb::ControlMessage, Status>>;
    type FetchModelStream = super::model_transfer::ChunkStream;

    async fn fetch_model(
        &self,
        req: Request<pb::FetchModelRequest>,
    ) -> Result<Response<Self::FetchModelStream>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let agent_id = self.fetching_agent(&caller, &req.agent_id)?;
        crate::model_blobs::checked_digest(&req.sha256)
            .map_err(|e| Status::invalid_argument(format!("sha256: {e}")))?;
        let size = self.model_for_agent(&agent_id, &req.sha256)?;
        super::model_transfer::ensure_stored(&self.node, &req.sha256, size).await?;
        let reader = self
            .node
            .models
            .read_from(&req.sha256, req.offset)
            .await
            .map_err(super::model_transfer::blob_status)?;
        tracing::info!(agent = %agent_id, sha256 = %req.sha256, offset = req.offset, size, "giving out a model file");
        Ok(Response::new(super::model_transfer::chunk_stream(reader)))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        let Some(enrollment) = &self.enrollment else {
            return Err(Status::failed_precondition(
                "renewal is off on this control plane (start it with --tls-ca-key)",
            ));
        };
        let caller = Caller::of(&req);
        let (Some(agent_id), Caller::Authenticated { serial, .. }) =
            (caller.agent_id().map(str::to_string), &caller)
        else {
            return Err(Status::permission_denied(
                "only an agent with its current certificate may renew it",
            ));
        };
        let answer = enrollment
            .renew(
                &self.node,
                &self.events,
                &agent_id,
                serial,
                &req.into_inner().csr_pem,
            )
            .await?;
        Ok(Response::new(answer))
    }

    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let Some(enrollment) = &self.enrollment else {
            return Err(Status::failed_precondition(
                "enrollment is off on this control plane (start it with --tls-ca-key)",
            ));
        };
        let peer = req.remote_addr();
        let answer = enrollment
            .enroll(&self.node, &self.events, req.into_inner(), peer)
            .await?;
        Ok(Response::new(answer))
    }

    async fn stream(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let caller = Caller::of(&req);
        let peer = req.remote_addr();
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await
            .map_err(|s| {
                Status::invalid_argument(format!("malformed agent message: {}", s.message()))
            })?
            .ok_or_else(|| Status::invalid_argument("stream closed before hello"))?;
        let Some(pb::agent_message::Body::Hello(hello)) = first.body else {
            return Err(Status::invalid_argument("the first message must be hello"));
        };
        let agent = registration(hello)?;
        // With mutual TLS the certificate says which agent this is; a
        // hello naming another is an agent posing as another host.
        if let Some(certified) = caller.agent_id() {
            if certified != agent.agent_id {
                let why = format!(
                    "its hello names agent {:?}; its certificate is for {certified:?}",
                    agent.agent_id
                );
                self.events.report(SecurityEvent::Denied {
                    caller: caller.actor(),
                    peer,
                    what: "/vigil.agent.v1.AgentService/Stream".into(),
                    why: why.clone(),
                });
                tracing::warn!(agent = %certified, claimed = %agent.agent_id, "agent refused: hello names another agent");
                return Err(Status::permission_denied(format!(
                    "agent {certified}: {why}"
                )));
            }
        }
        let agent_id = agent.agent_id.clone();
        tracing::info!(agent = %agent_id, hostname = %agent.hostname, mode = agent.sensor_mode.as_str(), "agent connected");
        let registered = self
            .node
            .write(Command::RegisterAgent {
                agent,
                at_unix_nanos: now_unix_nanos(),
            })
            .await?;
        // From the apply (on the leader when forwarded), not from this
        // node's state, which may lag: a session on a catching-up node
        // must not take the agent's next findings for a seq jump.
        let last_seq = match registered {
            CommandResult::Registered { last_acked_seq } => last_acked_seq,
            other => {
                return Err(Status::internal(format!(
                    "registering the agent: unexpected result {other:?}"
                )))
            }
        };
        let (tx, rx) = mpsc::channel(64);
        self.sessions.register(&agent_id, tx.clone());
        let attestation = self.verifier.as_ref().map(|v| {
            let a = super::agent_attestation::SessionAttestation::new(v.clone(), agent_id.clone());
            self.sessions
                .register_attest_now(&agent_id, a.attest_now.clone());
            a
        });
        let require_attestation = self
            .verifier
            .as_ref()
            .is_some_and(|v| v.config().require_attestation);
        let session = Session {
            node: self.node.clone(),
            sessions: self.sessions.clone(),
            intake: self.intake.clone(),
            events: self.events.clone(),
            agent_id,
            serial: match &caller {
                Caller::Authenticated { serial, .. } => Some(serial.clone()),
                Caller::Unauthenticated | Caller::Anonymous => None,
            },
            last_seq: last_seq.into(),
            tx,
            attestation,
            require_attestation,
            trusted: self.trusted.clone(),
        };
        tokio::spawn(session.run(inbound));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
