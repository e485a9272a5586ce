//! One agent session's attestation: enrollment (challenge, activation),
//! then a quote every interval and on demand, each result through raft.
//!
//! Architecture invariant: every way an agent can fail (a bad enrollment,
//! a wrong secret, a bad or late quote, a TPM error, no TPM where one was
//! enrolled) is recorded as a failed quote result (untrusted, an alert);
//! a protocol violation (a message out of turn) also ends the session.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Status;
use vigil_domain::QuoteResult;
use vigil_proto::agent::v1 as pb;

use crate::attestation::{EnrolledTpm, PendingEnrollment, Refusal, Verifier};
use crate::node::ControlPlaneNode;
use crate::raft_types::{Command, CommandResult};

use super::agent_sessions::Outbound;

enum Phase {
    /// No TpmEnrollment yet (since the session began).
    AwaitingEnrollment { since: Instant },
    Challenged {
        pending: PendingEnrollment,
        since: Instant,
    },
    Enrolled {
        tpm: EnrolledTpm,
        /// The last request not answered yet, and when it was sent.
        outstanding: Option<(Vec<u8>, Instant)>,
    },
    /// Enrollment failed: no more requests in this session.
    Failed,
}

pub struct SessionAttestation {
    verifier: Arc<Verifier>,
    agent_id: String,
    phase: Mutex<Phase>,
    pub attest_now: Arc<tokio::sync::Notify>,
}

fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

async fn send(tx: &Outbound, body: pb::control_message::Body) -> Result<(), Status> {
    tx.send(Ok(pb::ControlMessage { body: Some(body) }))
        .await
        .map_err(|_| Status::unavailable("the agent's session is closed"))
}

impl SessionAttestation {
    pub fn new(verifier: Arc<Verifier>, agent_id: String) -> SessionAttestation {
        SessionAttestation {
            verifier,
            agent_id,
            phase: Mutex::new(Phase::AwaitingEnrollment {
                since: Instant::now(),
            }),
            attest_now: Arc::new(tokio::sync::Notify::new()),
        }
    }

    pub fn interval(&self) -> Duration {
        self.verifier.config().interval
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a result through raft; the apply decides trust.
    async fn record(&self, node: &ControlPlaneNode, result: QuoteResult) -> Result<(), Status> {
        let ek_sha256 = match &*self.phase() {
            Phase::Enrolled { tpm, .. } => tpm.ek_sha256.clone(),
            _ => String::new(),
        };
        if let QuoteResult::Failed { code, reason } = &result {
            tracing::warn!(agent = %self.agent_id, %code, %reason, "attestation failed");
        }
        let r = node
            .write_coalesced(Command::RecordQuote {
                agent_id: self.agent_id.clone(),
                at_unix_nanos: now_unix_nanos(),
                result,
                ek_sha256,
            })
            .await?;
        if let CommandResult::Refused { reason } = r {
            tracing::warn!(agent = %self.agent_id, %reason, "quote result refused");
        }
        Ok(())
    }

    async fn fail(&self, node: &ControlPlaneNode, refusal: Refusal) -> Result<(), Status> {
        self.record(node, refusal.into_result()).await
    }

    pub async fn on_enrollment(
        &self,
        node: &ControlPlaneNode,
        tx: &Outbound,
        msg: pb::TpmEnrollment,
    ) -> Result<(), Status> {
        if !matches!(*self.phase(), Phase::AwaitingEnrollment { .. }) {
            return Err(Status::failed_precondition(
                "tpm_enrollment may be sent once per session",
            ));
        }
        let now_secs = now_unix_nanos() / 1_000_000_000;
        match self.verifier.challenge(&msg, now_secs) {
            Ok((pending, challenge)) => {
                *self.phase() = Phase::Challenged {
                    pending,
                    since: Instant::now(),
                };
                send(
                    tx,
                    pb::control_message::Body::CredentialChallenge(challenge),
                )
                .await
            }
            Err(refusal) => {
                *self.phase() = Phase::Failed;
                self.fail(node, refusal).await
            }
        }
    }

    pub async fn on_activated(
        &self,
        node: &ControlPlaneNode,
        tx: &Outbound,
        msg: pb::CredentialActivated,
    ) -> Result<(), Status> {
        let pending = {
            let mut phase = self.phase();
            match std::mem::replace(&mut *phase, Phase::Failed) {
                Phase::Challenged { pending, .. } => pending,
                other => {
                    *phase = other;
                    return Err(Status::failed_precondition(
                        "credential_activated without a credential challenge",
                    ));
                }
            }
        };
        let tpm = match self.verifier.activated(pending, &msg) {
            Ok(tpm) => tpm,
            Err(refusal) => return self.fail(node, refusal).await,
        };
        if !self.record_enrollment(node, &tpm).await? {
            return Ok(());
        }
        tracing::info!(agent = %self.agent_id, ek = %tpm.ek_sha256, "TPM enrolled");
        *self.phase() = Phase::Enrolled {
            tpm,
            outstanding: None,
        };
        self.request(node, tx).await
    }

    /// Binds the host to this TPM through raft; false (and the failure
    /// recorded) when the host is bound to another EK.
    async fn record_enrollment(
        &self,
        node: &ControlPlaneNode,
        tpm: &EnrolledTpm,
    ) -> Result<bool, Status> {
        let r = node
            .write(Command::RecordTpmEnrollment {
                agent_id: self.agent_id.clone(),
                ek_sha256: tpm.ek_sha256.clone(),
                ek_certificate_issuer: tpm.ek_certificate_issuer.clone(),
                ak_sha256: tpm.ak_sha256.clone(),
                at_unix_nanos: now_unix_nanos(),
            })
            .await?;
        if let CommandResult::Refused { reason } = r {
            *self.phase() = Phase::Failed;
            let (code, why) = match reason.split_once(": ") {
                Some((code @ ("ek-changed" | "ek-in-use"), why)) => (code, why.to_string()),
                _ => ("ek-changed", reason.clone()),
            };
            self.fail(node, Refusal::new(code, why)).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Sends a quote request with a fresh nonce (enrolled only).
    async fn request(&self, node: &ControlPlaneNode, tx: &Outbound) -> Result<(), Status> {
        let request = {
            let mut phase = self.phase();
            let Phase::Enrolled { outstanding, .. } = &mut *phase else {
                return Ok(());
            };
            match self.verifier.request(&self.agent_id, true) {
                Ok(r) => {
                    *outstanding = Some((r.nonce.clone(), Instant::now()));
                    Ok(r)
                }
                Err(refusal) => Err(refusal),
            }
        };
        match request {
            Ok(r) => send(tx, pb::control_message::Body::AttestRequest(r)).await,
            Err(refusal) => self.fail(node, refusal).await,
        }
    }

    pub async fn on_quote(&self, node: &ControlPlaneNode, quote: pb::Quote) -> Result<(), Status> {
        let tpm = {
            let mut phase = self.phase();
            let Phase::Enrolled { tpm, outstanding } = &mut *phase else {
                return Err(Status::failed_precondition(
                    "quote before the TPM enrolled in this session",
                ));
            };
            if outstanding.as_ref().is_some_and(|(n, _)| *n == quote.nonce) {
                *outstanding = None;
            }
            tpm.clone()
        };
        // An operator reset the host's attestation since it enrolled in
        // this session: bind it to this TPM again before judging.
        let bound = node
            .state
            .agent(&self.agent_id)
            .map_err(|e| Status::internal(e.to_string()))?
            .map(|r| r.attestation.ek_sha256)
            .unwrap_or_default();
        if bound.is_empty() && !self.record_enrollment(node, &tpm).await? {
            return Ok(());
        }
        // RSA verification is CPU work (tens of microseconds): off the
        // async workers.
        let verifier = self.verifier.clone();
        let agent_id = self.agent_id.clone();
        let result = tokio::task::spawn_blocking(move || verifier.judge(&agent_id, &tpm, &quote))
            .await
            .map_err(|e| Status::internal(format!("quote verification: {e}")))?;
        self.record(node, result).await
    }

    pub async fn on_failure(
        &self,
        node: &ControlPlaneNode,
        failure: pb::AttestationFailure,
    ) -> Result<(), Status> {
        let reason = vigil_domain::cut_text(&failure.reason, 512);
        let enrolled = {
            let mut phase = self.phase();
            match &mut *phase {
                Phase::Enrolled { outstanding, .. } => {
                    if outstanding
                        .as_ref()
                        .is_some_and(|(n, _)| *n == failure.nonce)
                    {
                        *outstanding = None;
                    }
                    true
                }
                Phase::Challenged { .. } => {
                    *phase = Phase::Failed;
                    true
                }
                Phase::AwaitingEnrollment { .. } | Phase::Failed => false,
            }
        };
        if !enrolled {
            // An agent without a TPM says so; it is judged on its tick.
            tracing::debug!(agent = %self.agent_id, %reason, "agent cannot attest");
            return Ok(());
        }
        self.fail(
            node,
            Refusal::new("tpm-error", format!("the agent's TPM failed: {reason}")),
        )
        .await
    }

    /// Every interval: a late answer is a stale host, a host that enrolled
    /// a TPM once and now shows none is untrusted, and an enrolled one is
    /// asked again.
    pub async fn on_tick(&self, node: &ControlPlaneNode, tx: &Outbound) -> Result<(), Status> {
        let interval = self.interval();
        enum Due {
            Request,
            Stale(Duration),
            Unanswered,
            NoTpm,
            Nothing,
        }
        let due = match &mut *self.phase() {
            Phase::Enrolled { outstanding, .. } => match outstanding {
                Some((_, at)) if at.elapsed() >= interval => {
                    let late = at.elapsed();
                    *outstanding = None;
                    Due::Stale(late)
                }
                // One request at a time: the TPM is still answering.
                Some(_) => Due::Nothing,
                None => Due::Request,
            },
            p @ Phase::Challenged { .. } => {
                if matches!(p, Phase::Challenged { since, .. } if since.elapsed() >= interval) {
                    *p = Phase::Failed;
                    Due::Unanswered
                } else {
                    Due::Nothing
                }
            }
            p @ Phase::AwaitingEnrollment { .. } => {
                if matches!(p, Phase::AwaitingEnrollment { since } if since.elapsed() >= interval) {
                    *p = Phase::Failed;
                    Due::NoTpm
                } else {
                    Due::Nothing
                }
            }
            Phase::Failed => Due::Nothing,
        };
        match due {
            Due::Request => self.request(node, tx).await,
            Due::Stale(late) => {
                self.fail(
                    node,
                    Refusal::new(
                        "stale",
                        format!(
                            "no quote within {late:.1?} of the request (interval {interval:?})"
                        ),
                    ),
                )
                .await?;
                self.request(node, tx).await
            }
            Due::Unanswered => {
                self.fail(
                    node,
                    Refusal::new(
                        "ak-not-bound",
                        format!("no answer to the credential challenge within {interval:?}"),
                    ),
                )
                .await
            }
            Due::NoTpm => {
                let bound = node
                    .state
                    .agent(&self.agent_id)
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map(|r| r.attestation.ek_sha256)
                    .unwrap_or_default();
                if bound.is_empty() {
                    return Ok(());
                }
                self.fail(
                    node,
                    Refusal::new(
                        "no-tpm",
                        format!(
                            "this host enrolled the TPM with EK sha256 {bound}, and its session presents none"
                        ),
                    ),
                )
                .await
            }
            Due::Nothing => Ok(()),
        }
    }

    /// An operator asked for a quote now: a request unless one is
    /// already out (its verdict is the next one either way), so that
    /// operators asking in a loop cannot queue up the host's TPM.
    pub async fn quote_now(&self, node: &ControlPlaneNode, tx: &Outbound) -> Result<(), Status> {
        if matches!(
            &*self.phase(),
            Phase::Enrolled {
                outstanding: Some(_),
                ..
            }
        ) {
            return Ok(());
        }
        self.request(node, tx).await
    }
}
