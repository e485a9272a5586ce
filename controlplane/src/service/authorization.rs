//! Who may call what: one table of RPCs and the identity each needs,
//! applied to every request before any service sees it.
//!
//! With mutual TLS the caller is the identity its verified certificate
//! names ([`vigil_pki::Identity`]); a revoked certificate, a method not in
//! the table or an identity without the role is refused with
//! PERMISSION_DENIED and the reason, and audited. Without TLS (a lab, and
//! today's `make run`) every caller is [`Caller::Unauthenticated`] and the
//! table is not applied: the control plane says so at start.
//!
//! Architecture invariant: a handler learns who called from the
//! [`Caller`] this layer put in the request, never from the request body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;
use vigil_pki::{CertificateInfo, Identity, OperatorRole};

use crate::security_events::{SecurityEvent, SecurityEvents};
use crate::store::CertificateStanding;

/// Who is calling, as this layer established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// TLS is off: nobody is authenticated (a lab set-up).
    Unauthenticated,
    /// TLS is on and the peer presented no certificate: it may only enroll.
    Anonymous,
    /// The identity a verified certificate names, and its serial.
    Authenticated { identity: Identity, serial: String },
}

impl Caller {
    /// The caller of a request that passed this layer.
    pub fn of<T>(req: &tonic::Request<T>) -> Caller {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or(Caller::Unauthenticated)
    }

    /// Who to name in the audit log.
    pub fn actor(&self) -> String {
        match self {
            Caller::Unauthenticated => "unauthenticated (TLS off)".into(),
            Caller::Anonymous => "a peer without a certificate".into(),
            Caller::Authenticated { identity, .. } => identity.to_string(),
        }
    }

    /// The agent id the certificate names, when the caller is an agent.
    pub fn agent_id(&self) -> Option<&str> {
        match self {
            Caller::Authenticated { identity, .. } => identity.agent_id(),
            Caller::Unauthenticated | Caller::Anonymous => None,
        }
    }
}

/// What calling an RPC takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any verified peer (health checks).
    AnyPeer,
    /// Anyone, certificate or not: enrollment, which checks its own token.
    Enrollment,
    /// An agent (its own stream).
    Agent,
    /// An operator with at least this role.
    Operator(OperatorRole),
    /// Another control-plane node (raft traffic, joins).
    Node,
}

/// The table. A method missing here is refused to everyone.
pub fn need(path: &str) -> Option<Need> {
    use OperatorRole::*;
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    Some(match (service, method) {
        ("grpc.health.v1.Health", _) => Need::AnyPeer,
        ("grpc.reflection.v1.ServerReflection", _) => Need::Operator(Viewer),
        ("vigil.agent.v1.AgentService", "Stream") => Need::Agent,
        ("vigil.agent.v1.AgentService", "Enroll") => Need::Enrollment,
        ("vigil.agent.v1.AgentService", "Renew") => Need::Agent,
        // Which digests an agent may fetch is the handler's decision (its
        // deployments); who it is, the certificate's.
        ("vigil.agent.v1.AgentService", "FetchModel") => Need::Agent,
        ("vigil.siem.v1.SiemExport", "Subscribe") => Need::Operator(SiemReader),
        (
            "vigil.raft.v1.RaftService",
            "AppendEntries" | "Vote" | "InstallSnapshot" | "Join" | "ClientWrite" | "ClusterInfo"
            | "HoldElections" | "Elect" | "ReadIndex" | "DeliverUnfreeze" | "RequestAttestation"
            | "FetchModelBlob",
        ) => Need::Node,
        ("vigil.admin.v1.AdminService", method) => Need::Operator(match method {
            "QueryAlerts" | "FollowAlerts" | "ClusterStatus" | "GetAgent"
            | "ListPolicies" | "GetPolicy" | "ListWorkloads" | "ListAudit" | "VerifyAudit"
            | "ListInventory" | "ExportInventory" | "ListModels" => {
                Viewer
            }
            "Unfreeze" | "AttestAgent" | "TriageAlert" => Analyst,
            "ListRevokedCertificates" => Viewer,
            "PushPolicy" | "ApproveWorkload" | "RevokeWorkload" | "RevokeCertificate"
            | "CreateJoinToken" | "AddNode" | "RemoveNode" | "TransferLeader"
            | "ResetAttestation"
            // Models: what the fleet serves.
            | "UploadModel" | "RegisterModel" | "ApproveModel" | "RevokeModel" | "RollbackModel"
            // A scan of the whole state: not for every viewer.
            | "StateDigest"
            // Users of the dashboard: who may see and do what.
            | "PutUser" | "RemoveUser" | "ListUsers" => Admin,
            _ => return None,
        }),
        _ => return None,
    })
}

/// What the control plane holds of a serial (lower-case hex); an error
/// reads as revoked.
pub type RevocationCheck = Arc<dyn Fn(&str) -> CertificateStanding + Send + Sync>;

/// The layer: `Server::builder().layer(Authorization::...)`.
#[derive(Clone)]
pub struct Authorization {
    tls: bool,
    revoked: RevocationCheck,
    events: SecurityEvents,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Authorization {
    /// Everyone may call everything (TLS off).
    pub fn open() -> Self {
        Self {
            tls: false,
            revoked: Arc::new(|_| CertificateStanding::Good),
            events: SecurityEvents::discard(),
        }
    }

    /// Certificates decide; refusals are reported to `events`.
    pub fn mutual_tls(revoked: RevocationCheck, events: SecurityEvents) -> Self {
        Self {
            tls: true,
            revoked,
            events,
        }
    }

    /// The caller of `req`, or why it is refused.
    pub fn decide<B>(&self, req: &http::Request<B>) -> Result<Caller, Status> {
        if !self.tls {
            return Ok(Caller::Unauthenticated);
        }
        let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
        let peer = info.and_then(|i| i.get_ref().remote_addr());
        let path = req.uri().path();
        let Some(der) = info
            .and_then(|i| i.peer_certs())
            .and_then(|certs| certs.first().cloned())
        else {
            // Without a certificate (accepted at the handshake only when
            // enrollment is on) the one call open is enrollment.
            if need(path) == Some(Need::Enrollment) {
                return Ok(Caller::Anonymous);
            }
            self.events.report(SecurityEvent::Denied {
                caller: "a peer without a certificate".into(),
                peer,
                what: path.to_string(),
                why: "only enrollment is open without a client certificate".into(),
            });
            return Err(Status::unauthenticated(format!(
                "{path} needs a client certificate from the fleet's CA (enroll first)"
            )));
        };
        let deny = |caller: String, why: String| {
            self.events.report(SecurityEvent::Denied {
                caller: caller.clone(),
                peer,
                what: path.to_string(),
                why: why.clone(),
            });
            Status::permission_denied(format!("{caller}: {why}"))
        };
        let cert = CertificateInfo::from_der(&der).map_err(|e| {
            deny(
                "a peer".into(),
                format!("its certificate cannot be read: {e}"),
            )
        })?;
        let identity = cert.identity.map_err(|e| {
            deny(
                format!("certificate {}", cert.serial_hex),
                format!("names no vigil identity: {e}"),
            )
        })?;
        match (self.revoked)(&cert.serial_hex) {
            CertificateStanding::Good => {}
            // A renewed certificate may only ask for that renewal again
            // (its reply may have been lost); raft decides whether it
            // gets the certificate already issued.
            CertificateStanding::Superseded if path == "/vigil.agent.v1.AgentService/Renew" => {}
            CertificateStanding::Superseded => {
                return Err(deny(
                    identity.to_string(),
                    format!(
                        "certificate {} was renewed; connect with the new one",
                        cert.serial_hex
                    ),
                ))
            }
            CertificateStanding::Revoked => {
                return Err(deny(
                    identity.to_string(),
                    format!("certificate {} is revoked", cert.serial_hex),
                ))
            }
            // Mid-install the revocations may be missing: refuse, for now.
            CertificateStanding::Unsettled => {
                return Err(Status::unavailable(
                    "this node is installing a snapshot of the cluster's state and cannot check certificates; try again or another node",
                ))
            }
        }
        let allowed = match (need(path), &identity) {
            (None, _) => false,
            (Some(Need::AnyPeer), _) | (Some(Need::Enrollment), _) => true,
            (Some(Need::Agent), Identity::Agent { .. }) => true,
            (Some(Need::Node), Identity::Node { .. }) => true,
            (Some(Need::Operator(role)), Identity::Operator { role: have, .. }) => {
                have.allows(role)
            }
            _ => false,
        };
        if !allowed {
            let needs = match need(path) {
                None => "no one may call it".to_string(),
                Some(Need::AnyPeer) | Some(Need::Enrollment) => "any peer".into(),
                Some(Need::Agent) => "it is for agents".into(),
                Some(Need::Node) => "it is for control-plane nodes".into(),
                Some(Need::Operator(role)) => format!("it needs the {} role", role.as_str()),
            };
            return Err(deny(
                identity.to_string(),
                format!("may not call {path}: {needs}"),
            ));
        }
        Ok(Caller::Authenticated {
            identity,
            serial: cert.serial_hex,
        })
    }
}

impl<S> tower::Layer<S> for Authorization {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorized {
            inner,
            policy: self.clone(),
        }
    }
}

/// A service behind [`Authorization`].
#[derive(Debug, Clone)]
pub struct Authorized<S> {
    inner: S,
    policy: Authorization,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for Authorized<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.policy.decide(&req) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every RPC the control plane serves has a line in the table: a new
    /// RPC cannot ship without someone deciding who may call it.
    #[test]
    fn every_rpc_is_in_the_table() {
        let set = prost_types::FileDescriptorSet::decode(vigil_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut seen = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    assert!(need(&path).is_some(), "{path} has no line in the table");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 15, "{seen}");
        assert_eq!(need("/vigil.admin.v1.AdminService/DropTables"), None);
        assert_eq!(need("/vigil.admin.v1.AdminService"), None);
        assert_eq!(need("garbage"), None);
    }
}
