//! The session's TPM worker: the control plane's attestation requests in,
//! the agent's answers out, one TPM operation at a time, in the order
//! asked (enrollment first). TPM calls block (a quote takes ~100 ms on a
//! slow TPM), so each runs on tokio's blocking pool and its answer comes
//! back to the session's loop through a channel: findings, acks and
//! heartbeats keep flowing meanwhile.
//!
//! This is the wire edge of attestation: TPM structures travel as the TPM
//! made them (bytes), so the messages are built here, not converted from
//! domain values.

use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vigil_proto::agent::v1 as pb;

use crate::attest::{Attestor, PcrBank, PcrList, TpmError};

/// Requests waiting for the TPM, at most; past it a request is answered
/// with a failure at once.
const QUEUED_JOBS: usize = 4;

/// What the agent says when it has no TPM.
pub const NO_TPM: &str = "this agent has no TPM configured";

/// One request for the TPM.
#[derive(Debug)]
pub enum TpmJob {
    /// TpmEnrollment, sent once per session after Hello.
    Enroll,
    Activate(pb::CredentialChallenge),
    Quote(pb::AttestRequest),
}

impl TpmJob {
    fn nonce(&self) -> Vec<u8> {
        match self {
            TpmJob::Quote(r) => r.nonce.clone(),
            TpmJob::Enroll | TpmJob::Activate(_) => Vec::new(),
        }
    }
}

/// The worker of one session; stops when dropped (an operation already
/// on the TPM finishes, its answer is dropped).
pub struct TpmWorker {
    jobs: mpsc::Sender<TpmJob>,
    task: JoinHandle<()>,
}

impl TpmWorker {
    /// Starts the worker; its answers go to `answers`.
    pub fn start(attestor: Attestor, answers: mpsc::Sender<pb::AgentMessage>) -> TpmWorker {
        let (jobs, mut queue) = mpsc::channel::<TpmJob>(QUEUED_JOBS);
        let task = tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let attestor = attestor.clone();
                let nonce = job.nonce();
                let answer = tokio::task::spawn_blocking(move || answer(&attestor, job))
                    .await
                    .unwrap_or_else(|e| failure(nonce, format!("the TPM operation panicked: {e}")));
                if answers.send(answer).await.is_err() {
                    break;
                }
            }
        });
        TpmWorker { jobs, task }
    }

    /// Queues `job`; when too many wait, it is refused and the failure to
    /// send instead is returned.
    #[must_use = "a refused job's failure is to be sent"]
    pub fn submit(&self, job: TpmJob) -> Option<pb::AgentMessage> {
        let job = match self.jobs.try_send(job) {
            Ok(()) => return None,
            Err(mpsc::error::TrySendError::Full(job) | mpsc::error::TrySendError::Closed(job)) => {
                job
            }
        };
        Some(failure(
            job.nonce(),
            format!("the TPM is busy: {QUEUED_JOBS} requests are waiting"),
        ))
    }
}

impl Drop for TpmWorker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn message(body: pb::agent_message::Body) -> pb::AgentMessage {
    pb::AgentMessage { body: Some(body) }
}

/// An AttestationFailure answering the request with `nonce`.
pub fn failure(nonce: Vec<u8>, reason: String) -> pb::AgentMessage {
    message(pb::agent_message::Body::AttestationFailure(
        pb::AttestationFailure { nonce, reason },
    ))
}

/// The answer to a job (blocks on the TPM).
fn answer(attestor: &Attestor, job: TpmJob) -> pb::AgentMessage {
    let started = Instant::now();
    let nonce = job.nonce();
    let (what, done) = match job {
        TpmJob::Enroll => ("enrollment", enroll(attestor)),
        TpmJob::Activate(challenge) => ("credential activation", activate(attestor, challenge)),
        TpmJob::Quote(request) => ("quote", quote(attestor, request)),
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match done {
        Ok(answer) => {
            tracing::debug!(tpm = %attestor.target(), elapsed_ms, "TPM {what} done");
            answer
        }
        Err(e) => {
            let reason = format!("TPM {what}: {e}");
            tracing::warn!(tpm = %attestor.target(), elapsed_ms, error = %reason, "answering the control plane with an attestation failure");
            failure(nonce, reason)
        }
    }
}

fn enroll(attestor: &Attestor) -> Result<pb::AgentMessage, TpmError> {
    let enrollment = attestor.enrollment()?;
    Ok(message(pb::agent_message::Body::TpmEnrollment(
        pb::TpmEnrollment {
            ek_certificate: enrollment.endorsement.ek_certificate_der,
            ek_public: enrollment.endorsement.ek_public,
            ak_public: enrollment.ak_public,
        },
    )))
}

fn activate(
    attestor: &Attestor,
    challenge: pb::CredentialChallenge,
) -> Result<pb::AgentMessage, TpmError> {
    let secret = attestor.activate_credential(&challenge.id_object, &challenge.encrypted_secret)?;
    Ok(message(pb::agent_message::Body::CredentialActivated(
        pb::CredentialActivated { secret },
    )))
}

fn quote(attestor: &Attestor, request: pb::AttestRequest) -> Result<pb::AgentMessage, TpmError> {
    let bank = PcrBank::from_alg_id(request.hash_alg)?;
    let pcrs = PcrList::from_indices(&request.pcrs)?;
    let attested = attestor.quote(&request.nonce, bank, &pcrs, request.want_event_logs)?;
    Ok(message(pb::agent_message::Body::Quote(pb::Quote {
        nonce: request.nonce,
        attest: attested.quote.attest,
        signature: attested.quote.signature,
        pcrs: vec![pb::PcrBankValues {
            hash_alg: u32::from(bank.alg_id()),
            values: attested
                .quote
                .pcr_values
                .into_iter()
                .map(|(index, digest)| pb::PcrValue { index, digest })
                .collect(),
        }],
        boot_event_log: attested.logs.boot.unwrap_or_default(),
        ima_log: attested.logs.ima.unwrap_or_default(),
    })))
}

#[cfg(test)]
#[path = "tpm_worker_tests.rs"]
mod tests;
