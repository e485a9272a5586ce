//! Agent enrollment: a one-time join token and a certificate request in,
//! a certificate naming the agent out.
//!
//! The control plane signs with the fleet CA's key (`--tls-ca-key`); in a
//! fleet that keeps its root offline, give it an intermediate CA instead.
//! The certificate is signed before the token is spent (a bad request
//! does not burn a token) and returned only once raft has marked the token
//! used, so a token enrolls at most one agent even when two nodes race.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::Status;
use vigil_pki::{CertificateAuthority, Identity, JoinToken, LeafRequest};
use vigil_proto::agent::v1 as pb;

use crate::node::ControlPlaneNode;
use crate::raft_types::{Command, CommandResult};
use crate::security_events::{SecurityEvent, SecurityEvents};

/// What enrollment needs: the CA that signs, and how long its
/// certificates last.
pub struct Enrollment {
    pub ca: CertificateAuthority,
    pub days: u32,
}

impl Enrollment {
    pub async fn enroll(
        &self,
        node: &Arc<ControlPlaneNode>,
        events: &SecurityEvents,
        req: pb::EnrollRequest,
        peer: Option<SocketAddr>,
    ) -> Result<pb::EnrollResponse, Status> {
        let refuse = |why: String| {
            events.report(SecurityEvent::Denied {
                caller: format!("enrolling agent {:?}", req.agent_id),
                peer,
                what: "/vigil.agent.v1.AgentService/Enroll".into(),
                why: why.clone(),
            });
            Status::permission_denied(format!("enrollment refused: {why}"))
        };
        let token = JoinToken::parse(&req.token)
            .map_err(|e| Status::invalid_argument(format!("token: {e}")))?;
        let identity = Identity::agent(&req.agent_id)
            .map_err(|e| Status::invalid_argument(format!("agent_id: {e}")))?;
        let now = time::OffsetDateTime::now_utc();
        let certificate_pem = self
            .ca
            .sign_request(&req.csr_pem, &LeafRequest::new(identity, now, self.days))
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        let serial = vigil_pki::CertificateInfo::from_pem(&certificate_pem)
            .map(|i| i.serial_hex)
            .map_err(|e| Status::internal(format!("reading the certificate just signed: {e}")))?;
        let result = node
            .write(Command::UseJoinTokenV2 {
                id: token.id().to_string(),
                secret_sha256: token.secret_sha256(),
                agent_id: req.agent_id.clone(),
                serial,
                now_unix_secs: now.unix_timestamp().max(0) as u64,
            })
            .await?;
        if let CommandResult::Refused { reason } = result {
            return Err(refuse(reason));
        }
        tracing::info!(agent = %req.agent_id, token = %token.id(), "agent enrolled");
        append_audit(
            node,
            format!("agent {}", req.agent_id),
            format!("join token {}", token.id()),
        )
        .await;
        Ok(pb::EnrollResponse {
            certificate_pem,
            ca_pem: self.ca.cert_pem().to_string(),
        })
    }
}

impl Enrollment {
    /// A new certificate for the agent `agent_id` (the caller's own, from
    /// its current certificate, serial `presented_serial`) for the key in
    /// `csr_pem`. Returned only once raft has recorded that it supersedes
    /// the presented one (accepted from then on only to ask again) and
    /// audited it, so one certificate renews at most once, a revoked one
    /// never, and the decision is the cluster's, not a lagging node's. A
    /// renewal asked again for the same key (its reply was lost) gets the
    /// certificate first issued.
    pub async fn renew(
        &self,
        node: &Arc<ControlPlaneNode>,
        events: &SecurityEvents,
        agent_id: &str,
        presented_serial: &str,
        csr_pem: &str,
    ) -> Result<pb::RenewResponse, Status> {
        let identity = Identity::agent(agent_id)
            .map_err(|e| Status::invalid_argument(format!("agent id: {e}")))?;
        let now = time::OffsetDateTime::now_utc();
        let refuse = |reason: String| {
            events.report(SecurityEvent::Denied {
                caller: format!("agent {agent_id}"),
                peer: None,
                what: "/vigil.agent.v1.AgentService/Renew".into(),
                why: reason.clone(),
            });
            Status::failed_precondition(format!("renewal refused: {reason}"))
        };
        // What this node already holds settles most repeats without a
        // signature or a raft write (what it holds is committed: a retired
        // certificate stays retired, a renewal time only grows).
        let read = |e: crate::store::ReadError| Status::internal(e.to_string());
        if let Some(s) = node.state.supersession(presented_serial).map_err(read)? {
            let asked = vigil_pki::public_key_info_of_request(csr_pem)
                .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
            let stored = vigil_pki::CertificateInfo::from_pem(&s.new_certificate_pem)
                .ok()
                .map(|c| c.public_key_der);
            return match stored {
                Some(stored) if stored == asked && s.agent_id == agent_id => {
                    Ok(pb::RenewResponse {
                        certificate_pem: s.new_certificate_pem,
                    })
                }
                _ => Err(refuse(format!(
                    "certificate {presented_serial} was already renewed (as {}), for another key",
                    s.new_serial
                ))),
            };
        }
        if let Some(last) = node.state.last_renewal(agent_id).map_err(read)? {
            let since = (now.unix_timestamp_nanos() as i64).saturating_sub(last);
            if since < crate::store::MIN_RENEWAL_INTERVAL_NANOS {
                return Err(refuse(format!(
                    "agent {agent_id} renewed its certificate {} s ago; at most one renewal a minute",
                    since.max(0) / 1_000_000_000
                )));
            }
        }
        let certificate_pem = self
            .ca
            .sign_request(csr_pem, &LeafRequest::new(identity, now, self.days))
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))?;
        let new_serial = vigil_pki::CertificateInfo::from_pem(&certificate_pem)
            .map(|i| i.serial_hex)
            .map_err(|e| Status::internal(format!("reading the certificate just signed: {e}")))?;
        let result = node
            .write(Command::RenewCertificate {
                agent_id: agent_id.to_string(),
                presented_serial: presented_serial.to_string(),
                new_serial: new_serial.clone(),
                new_certificate_pem: certificate_pem,
                valid_days: self.days,
                at_unix_nanos: now.unix_timestamp_nanos() as i64,
            })
            .await?;
        match result {
            CommandResult::Renewed { certificate_pem } => {
                tracing::info!(agent = %agent_id, old = %presented_serial, "agent certificate renewed");
                Ok(pb::RenewResponse { certificate_pem })
            }
            CommandResult::Refused { reason } => Err(refuse(reason)),
            other => Err(Status::internal(format!(
                "renewal: unexpected result {other:?}"
            ))),
        }
    }
}

async fn append_audit(node: &ControlPlaneNode, actor: String, detail: String) {
    append_audit_action(node, "agent.enroll", actor, detail).await
}

async fn append_audit_action(node: &ControlPlaneNode, action: &str, actor: String, detail: String) {
    let at_unix_nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64;
    if let Err(e) = node
        .write(Command::AppendAudit {
            at_unix_nanos,
            actor: actor.clone(),
            action: action.into(),
            subject: actor,
            detail,
        })
        .await
    {
        tracing::error!(error = %e, action, "could not audit");
    }
}
