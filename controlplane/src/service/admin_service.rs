//! `vigil.admin.v1.AdminService`: what operators (vigilctl) ask.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};
use vigil_domain::{ClusterMember, ClusterStatus, PolicySummary};
use vigil_proto::admin::v1 as pb;
use vigil_proto::admin::v1::admin_service_server::AdminService;
use vigil_proto::types::v1 as types_pb;

use vigil_policy::{Bundle, PolicySet, TrustedKeys};
use vigil_proto::agent::v1 as agent_pb;

use super::alert_feed::spawn_alert_feed;
use super::{AgentSessions, Caller};
use crate::node::ControlPlaneNode;
use crate::raft_types::{Command, CommandResult};

const DEFAULT_LIMIT: usize = 1_000;
/// An inventory page stops at about this many encoded bytes (an item can
/// name 256 hosts and 8 paths), well under a client's 4 MiB message limit.
const INVENTORY_PAGE_BYTES: usize = 2 << 20;
const MAX_LIMIT: usize = 10_000;

pub struct AdminServiceImpl {
    pub(super) node: Arc<ControlPlaneNode>,
    membership: Arc<crate::cluster_membership::ClusterMembership>,
    sessions: Arc<AgentSessions>,
    pub(super) trusted: TrustedKeys,
    /// Unsigned approvals are taken when no key is trusted (a lab).
    allow_unsigned: bool,
}

impl AdminServiceImpl {
    pub fn new(
        node: Arc<ControlPlaneNode>,
        membership: Arc<crate::cluster_membership::ClusterMembership>,
        sessions: Arc<AgentSessions>,
        trusted: TrustedKeys,
        allow_unsigned: bool,
    ) -> Self {
        Self {
            node,
            membership,
            sessions,
            trusted,
            allow_unsigned,
        }
    }
}

impl AdminServiceImpl {
    /// Passes an unfreeze order to the agent's stream, on this node or on
    /// whichever member holds it (an agent streams to one node): which
    /// node did, or UNAVAILABLE with what each member answered.
    async fn deliver_unfreeze(
        &self,
        agent_id: &str,
        order: agent_pb::Unfreeze,
    ) -> Result<String, Status> {
        if let Some(tx) = self.sessions.get(agent_id) {
            let msg = agent_pb::ControlMessage {
                body: Some(agent_pb::control_message::Body::Unfreeze(order.clone())),
            };
            if tx.send(Ok(msg)).await.is_ok() {
                return Ok(format!("node {}", self.node.node_id));
            }
        }
        let others = self.other_members();
        let asks = others.iter().map(|(id, addr)| {
            let order = order.clone();
            async move {
                let r = self
                    .node
                    .network()
                    .deliver_unfreeze(addr, agent_id, order)
                    .await;
                (*id, r)
            }
        });
        let mut answers = Vec::new();
        for (id, r) in futures::future::join_all(asks).await {
            match r {
                Ok(true) => return Ok(format!("node {id}")),
                Ok(false) => answers.push(format!("node {id}: not connected there")),
                Err(e) => answers.push(format!("node {id}: {e}")),
            }
        }
        answers.insert(0, format!("node {}: not connected here", self.node.node_id));
        Err(Status::unavailable(format!(
            "agent {agent_id} has no stream open on any node of the cluster ({})",
            answers.join("; ")
        )))
    }
}

impl AdminServiceImpl {
    /// The cluster's other members, (id, address).
    fn other_members(&self) -> Vec<(u64, String)> {
        self.node.other_members()
    }

    /// The agent `name` names: its id, or a hostname only one agent has
    /// (a hostname is what an agent says of itself: another agent may
    /// claim the same one, and an operator's attestation command must not
    /// land on it).
    fn one_agent(&self, name: &str) -> Result<vigil_domain::AgentRecord, Status> {
        if let Some(record) = self
            .node
            .state
            .agent(name)
            .map_err(|e| Status::internal(e.to_string()))?
        {
            return Ok(record);
        }
        let mut named: Vec<vigil_domain::AgentRecord> = self
            .node
            .state
            .agents()
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .filter(|a| a.identity.hostname == name)
            .collect();
        match named.len() {
            0 => Err(Status::not_found(format!(
                "no agent with id or hostname {name:?}"
            ))),
            1 => Ok(named.remove(0)),
            _ => Err(Status::failed_precondition(format!(
                "hostname {name:?} is claimed by agents {}: name the agent id",
                named
                    .iter()
                    .map(|a| a.identity.agent_id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Asks the node holding the agent's session (this one, or another
    /// member) for a quote now: which node did.
    async fn request_attestation(&self, agent_id: &str) -> Result<String, Status> {
        if self.sessions.attest_now(agent_id) {
            return Ok(format!("node {}", self.node.node_id));
        }
        let others = self.other_members();
        let asks = others.iter().map(|(id, addr)| async move {
            (
                *id,
                self.node
                    .network()
                    .request_attestation(addr, agent_id)
                    .await,
            )
        });
        let mut answers = vec![format!(
            "node {}: no session with attestation here",
            self.node.node_id
        )];
        for (id, r) in futures::future::join_all(asks).await {
            match r {
                Ok(true) => return Ok(format!("node {id}")),
                Ok(false) => answers.push(format!("node {id}: no session with attestation there")),
                Err(e) => answers.push(format!("node {id}: {e}")),
            }
        }
        Err(Status::failed_precondition(format!(
            "agent {agent_id} cannot be quoted now: {} (attestation needs --tpm-ca and an agent with a TPM)",
            answers.join("; ")
        )))
    }
}

fn req_note_is_rollback(note: &str) -> bool {
    note.starts_with("rollback")
}

impl AdminServiceImpl {
    /// Proposes `command` with its audit entry in one raft entry
    /// (`audited.v1`): the entry is appended only when the change took
    /// effect, in the same apply, so an acknowledged change always has it.
    pub(super) async fn write_audited(
        &self,
        command: Command,
        actor: String,
        action: &str,
        subject: String,
        detail: String,
    ) -> Result<CommandResult, crate::node::WriteError> {
        write_audited_on(&self.node, command, actor, action, subject, detail).await
    }

    /// Appends an audit entry of something that is not a raft command (a
    /// membership change, an order delivered to an agent), after it.
    pub(super) async fn audit(&self, actor: String, action: &str, subject: String, detail: String) {
        let r = self
            .node
            .write(Command::AppendAudit {
                at_unix_nanos: now_unix_nanos(),
                actor,
                action: action.to_string(),
                subject,
                detail,
            })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, action, "could not append the audit entry");
        }
    }
}

/// Proposes `command` with its audit entry in one raft entry
/// (`audited.v1`) on `node` (forwarded to the leader when this node is not
/// it): for writes that do not come through gRPC (the dashboard) too.
pub(crate) async fn write_audited_on(
    node: &ControlPlaneNode,
    command: Command,
    actor: String,
    action: &str,
    subject: String,
    detail: String,
) -> Result<CommandResult, crate::node::WriteError> {
    node.write(Command::Audited {
        command: Box::new(command),
        audit: crate::raft_types::AuditNote {
            at_unix_nanos: now_unix_nanos(),
            actor,
            action: action.to_string(),
            subject,
            detail,
        },
    })
    .await
}

/// The audit detail naming who signed what an operator sent.
fn signed_by(signer: &str) -> String {
    if signer.is_empty() {
        "unsigned".into()
    } else {
        format!("signed by {signer}")
    }
}

pub(super) fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    async fn query_alerts(
        &self,
        req: Request<pb::QueryAlertsRequest>,
    ) -> Result<Response<pb::QueryAlertsResponse>, Status> {
        let req = req.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n => (n as usize).min(MAX_LIMIT),
        };
        let alerts = self
            .node
            .state
            .alerts_after(req.after_index, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        // One key read per alert of the page: those triaged.
        let mut triage = Vec::new();
        for alert in &alerts {
            if let Some(t) = self
                .node
                .state
                .triage(alert.index)
                .map_err(|e| Status::internal(e.to_string()))?
            {
                triage.push(super::admin_triage::to_wire(t));
            }
        }
        Ok(Response::new(pb::QueryAlertsResponse {
            alerts: alerts.into_iter().map(Into::into).collect(),
            triage,
        }))
    }

    type FollowAlertsStream =
        tokio_stream::wrappers::ReceiverStream<Result<types_pb::Alert, Status>>;

    async fn follow_alerts(
        &self,
        req: Request<pb::QueryAlertsRequest>,
    ) -> Result<Response<Self::FollowAlertsStream>, Status> {
        let caller = Caller::of(&req);
        let after = req.into_inner().after_index;
        Ok(Response::new(spawn_alert_feed(
            self.node.state.clone(),
            &caller,
            after,
            |a| Some(a.into()),
        )))
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let m = self.node.raft.metrics().borrow().clone();
        let voters: std::collections::BTreeSet<u64> =
            m.membership_config.membership().voter_ids().collect();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| ClusterMember {
                node_id: *id,
                address: n.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let agents = self
            .node
            .state
            .agents()
            .map_err(|e| Status::internal(e.to_string()))?;
        let status = ClusterStatus {
            node_id: self.node.node_id,
            leader_id: m.current_leader,
            term: m.current_term,
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            members,
            agents,
            alert_count: self.node.state.last_alert_index(),
        };
        Ok(Response::new(status.into()))
    }

    async fn state_digest(
        &self,
        _req: Request<pb::StateDigestRequest>,
    ) -> Result<Response<pb::StateDigestResponse>, Status> {
        // A scan of the whole state: off the async workers, so raft's
        // heartbeats do not wait behind it.
        let state = self.node.state.clone();
        let (last_applied_index, sha256) = tokio::task::spawn_blocking(move || state.digest())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::StateDigestResponse {
            node_id: self.node.node_id,
            last_applied_index,
            sha256,
        }))
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::AddNodeResponse>, Status> {
        let caller = Caller::of(&req);
        let pb::AddNodeRequest { node_id, address } = req.into_inner();
        let voters = self.membership.add_voter(node_id, &address).await?;
        self.audit(
            caller.actor(),
            "cluster.add_node",
            format!("node {node_id}"),
            format!("at {address}; voters {voters:?}"),
        )
        .await;
        Ok(Response::new(pb::AddNodeResponse { voters }))
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let caller = Caller::of(&req);
        let node_id = req.into_inner().node_id;
        let voters = self.membership.remove(node_id).await?;
        self.audit(
            caller.actor(),
            "cluster.remove_node",
            format!("node {node_id}"),
            format!("voters {voters:?}"),
        )
        .await;
        Ok(Response::new(pb::RemoveNodeResponse { voters }))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let caller = Caller::of(&req);
        let target = req.into_inner().node_id;
        let (leader_id, term) = self.membership.transfer_leader(target).await?;
        self.audit(
            caller.actor(),
            "cluster.transfer_leader",
            format!("node {target}"),
            format!("term {term}"),
        )
        .await;
        Ok(Response::new(pb::TransferLeaderResponse {
            leader_id,
            term,
        }))
    }

    async fn push_policy(
        &self,
        req: Request<pb::PushPolicyRequest>,
    ) -> Result<Response<pb::PushPolicyResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        if self.trusted.is_empty() {
            return Err(Status::failed_precondition(
                "this control plane has no trusted policy keys (--trusted-policy-key)",
            ));
        }
        let bundle =
            Bundle::from_json(&req.bundle).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.trusted
            .verify(&bundle)
            .map_err(|e| Status::permission_denied(format!("bundle refused: {e}")))?;
        if let Err(diags) = PolicySet::compile(&bundle.files) {
            let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
            return Err(Status::invalid_argument(format!(
                "bundle refused: it does not compile: {}",
                lines.join("; ")
            )));
        }
        let note = if req.note.trim().is_empty() {
            "push".to_string()
        } else {
            req.note
        };
        let action = if req_note_is_rollback(&note) {
            "policy.rollback"
        } else {
            "policy.push"
        };
        let detail = format!(
            "{note}; signed by {}; digest {}; {} files",
            bundle.signer,
            bundle.digest(),
            bundle.files.len()
        );
        let result = self
            .write_audited(
                Command::PutPolicyBundle {
                    version: bundle.version,
                    bundle: req.bundle,
                    pushed_at_unix_nanos: now_unix_nanos(),
                    note,
                },
                caller.actor(),
                action,
                format!("policy version {}", bundle.version),
                detail,
            )
            .await?;
        if let CommandResult::Refused { reason } = result {
            return Err(Status::failed_precondition(reason));
        }
        tracing::info!(version = bundle.version, signer = %bundle.signer, "policy version active");
        Ok(Response::new(pb::PushPolicyResponse {
            version: bundle.version,
        }))
    }

    async fn list_policies(
        &self,
        _req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let state = &self.node.state;
        let active = state
            .active_policy()
            .map_err(|e| Status::internal(e.to_string()))?
            .map(|(v, _)| v);
        let policies = state
            .policies()
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(|(version, bytes, meta)| {
                let bundle = Bundle::from_json(&bytes).ok();
                let rules = bundle
                    .as_ref()
                    .and_then(|b| PolicySet::compile(&b.files).ok())
                    .map(|s| s.rule_ids().len() as u32)
                    .unwrap_or(0);
                PolicySummary {
                    version,
                    signer: bundle
                        .as_ref()
                        .map(|b| b.signer.clone())
                        .unwrap_or_default(),
                    digest: bundle.as_ref().map(Bundle::digest).unwrap_or_default(),
                    pushed_at_unix_nanos: meta.pushed_at_unix_nanos,
                    note: meta.note,
                    active: active == Some(version),
                    rules,
                }
                .into()
            })
            .collect();
        Ok(Response::new(pb::ListPoliciesResponse { policies }))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let version = req.into_inner().version;
        let bundle = self
            .node
            .state
            .policy(version)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no policy version {version}")))?;
        Ok(Response::new(pb::GetPolicyResponse { bundle }))
    }

    async fn unfreeze(
        &self,
        req: Request<pb::UnfreezeRequest>,
    ) -> Result<Response<pb::UnfreezeResponse>, Status> {
        let caller = Caller::of(&req);
        let order = vigil_domain::UnfreezeOrder::from(req.into_inner());
        // The agent verifies the order whatever happens here (signer,
        // expiry, nonce); with trusted keys the control plane refuses a bad
        // one first. Nonces are the agent's to remember.
        if self.trusted.is_empty() {
            tracing::warn!(
                pid = order.pid,
                "passing an unfreeze order on unverified: no trusted keys are configured"
            );
        } else {
            self.trusted
                .verify_unfreeze(&order, now_unix_nanos() / 1_000_000_000)
                .map_err(|e| Status::permission_denied(format!("unfreeze refused: {e}")))?;
        }
        let record = self
            .node
            .state
            .agent_by_id_or_hostname(&order.agent)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!("no agent with id or hostname {:?}", order.agent))
            })?;
        let agent_id = record.identity.agent_id;
        let (pid, signer) = (order.pid, order.signer.clone());
        let via = self.deliver_unfreeze(&agent_id, order.into()).await?;
        self.audit(
            caller.actor(),
            "agent.unfreeze",
            format!("pid {pid} on {agent_id}"),
            format!("{}, via {via}", signed_by(&signer)),
        )
        .await;
        Ok(Response::new(pb::UnfreezeResponse {}))
    }

    async fn approve_workload(
        &self,
        req: Request<pb::ApproveWorkloadRequest>,
    ) -> Result<Response<pb::ApproveWorkloadResponse>, Status> {
        let caller = Caller::of(&req);
        let wire = req
            .into_inner()
            .workload
            .ok_or_else(|| Status::invalid_argument("workload: must be set"))?;
        let mut workload = vigil_domain::WorkloadApproval::try_from(wire)
            .map_err(|e| Status::invalid_argument(e.within("workload").to_string()))?;
        if self.trusted.is_empty() {
            if !self.allow_unsigned {
                return Err(Status::failed_precondition(
                    "workload approval refused: this control plane trusts no admin key (--trusted-policy-key), so approvals cannot be verified; configure one and sign with `vigilctl workload approve --key`, or start it with --allow-unsigned for a lab",
                ));
            }
            tracing::warn!(
                "accepting an unsigned workload approval (--allow-unsigned, no trusted keys)"
            );
        } else {
            self.trusted.verify_workload(&workload).map_err(|e| {
                Status::permission_denied(format!("workload approval refused: {e}"))
            })?;
        }
        let now = now_unix_nanos();
        if workload.id.is_empty() {
            workload.id = format!("w-{:x}", now);
        }
        workload.approved_at_unix_nanos = now;
        let id = workload.id.clone();
        let (signer, approved_by, digest) = (
            workload.signer.clone(),
            workload.approved_by.clone(),
            workload.exe_sha256.clone(),
        );
        let result = self
            .write_audited(
                Command::ApproveWorkload { workload },
                caller.actor(),
                "workload.approve",
                format!("workload {id}"),
                format!(
                    "exe sha256 {digest}; approved by {approved_by:?}; {}",
                    signed_by(&signer)
                ),
            )
            .await?;
        if let CommandResult::Refused { reason } = result {
            return Err(Status::failed_precondition(reason));
        }
        tracing::info!(%id, "workload approved");
        Ok(Response::new(pb::ApproveWorkloadResponse { id }))
    }

    async fn revoke_workload(
        &self,
        req: Request<pb::RevokeWorkloadRequest>,
    ) -> Result<Response<pb::RevokeWorkloadResponse>, Status> {
        let caller = Caller::of(&req);
        let id = req.into_inner().id;
        let result = self
            .write_audited(
                Command::RevokeWorkload { id: id.clone() },
                caller.actor(),
                "workload.revoke",
                format!("workload {id}"),
                String::new(),
            )
            .await?;
        if let CommandResult::Refused { reason } = result {
            return Err(Status::not_found(reason));
        }
        tracing::info!(%id, "workload revoked");
        Ok(Response::new(pb::RevokeWorkloadResponse {}))
    }

    async fn revoke_certificate(
        &self,
        req: Request<pb::RevokeCertificateRequest>,
    ) -> Result<Response<pb::RevokeCertificateResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let serial =
            vigil_domain::RevokedCertificate::normalise_serial(&req.serial).ok_or_else(|| {
                Status::invalid_argument(format!("serial: {:?} is not a hex serial", req.serial))
            })?;
        let certificate = vigil_domain::RevokedCertificate {
            serial: serial.clone(),
            identity: req.identity,
            reason: req.reason,
            revoked_by: caller.actor(),
            revoked_at_unix_nanos: now_unix_nanos(),
        };
        let (identity, reason) = (certificate.identity.clone(), certificate.reason.clone());
        let revoke = Command::RevokeCertificateV2 { certificate };
        let detail = format!("{identity}; reason: {reason}");
        // A serial already revoked here: raft refuses it (ALREADY_EXISTS,
        // no audit entry) unless a renewal of it is still to revoke, which
        // is then audited apart.
        let standing = self
            .node
            .state
            .certificate_standing(&serial)
            .map_err(|e| Status::internal(format!("reading the revocations: {e}")))?;
        if standing == crate::store::CertificateStanding::Revoked {
            if let CommandResult::Refused { reason } = self.node.write(revoke).await? {
                return Err(Status::already_exists(reason));
            }
            tracing::warn!(%serial, %identity, "certificate's renewal revoked");
            self.audit(
                caller.actor(),
                "certificate.revoke",
                format!("certificate {serial}"),
                detail,
            )
            .await;
            return Ok(Response::new(pb::RevokeCertificateResponse {}));
        }
        // The revocation and its audit entry (the SIEM export's event of
        // it) in one raft entry: written apart, a leader lost between the
        // two left an acknowledged revocation that no audit entry, and no
        // SIEM subscriber, ever saw.
        let audit = Command::AppendAudit {
            at_unix_nanos: now_unix_nanos(),
            actor: caller.actor(),
            action: "certificate.revoke".into(),
            subject: format!("certificate {serial}"),
            detail,
        };
        let revoked = match self
            .node
            .write(Command::Batch {
                commands: vec![revoke, audit],
            })
            .await?
        {
            CommandResult::Batch(results) if results.len() == 2 => {
                results.into_iter().next().expect("two results")
            }
            other => {
                return Err(Status::internal(format!(
                    "revoking certificate {serial}: unexpected result {other:?}"
                )))
            }
        };
        if let CommandResult::Refused { reason } = revoked {
            // Revoked meanwhile by another call: this one's audit entry
            // records the attempt.
            return Err(Status::already_exists(reason));
        }
        tracing::warn!(%serial, %identity, "certificate revoked");
        Ok(Response::new(pb::RevokeCertificateResponse {}))
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        const WEEK: u64 = 7 * 24 * 3600;
        let caller = Caller::of(&req);
        let req = req.into_inner();
        if req.ttl_secs == 0 || req.ttl_secs > WEEK {
            return Err(Status::invalid_argument(format!(
                "ttl_secs: {} is not between 1 and {WEEK} (a week)",
                req.ttl_secs
            )));
        }
        let for_agent = if req.agent_id.is_empty() {
            None
        } else {
            vigil_pki::Identity::agent(&req.agent_id)
                .map_err(|e| Status::invalid_argument(format!("agent_id: {e}")))?;
            Some(req.agent_id.clone())
        };
        let now_secs = (now_unix_nanos() / 1_000_000_000).max(0) as u64;
        let token = vigil_pki::JoinToken::generate();
        let mut record = token.record(now_secs + req.ttl_secs);
        record.for_agent = for_agent;
        let expires = record.expires_at_unix_secs;
        let result = self
            .write_audited(
                Command::PutJoinToken { record },
                caller.actor(),
                "join_token.create",
                format!("join token {}", token.id()),
                format!(
                    "expires at {expires} (unix s); for agent {}",
                    if req.agent_id.is_empty() {
                        "any"
                    } else {
                        &req.agent_id
                    }
                ),
            )
            .await?;
        if let CommandResult::Refused { reason } = result {
            return Err(Status::aborted(reason));
        }
        Ok(Response::new(pb::CreateJoinTokenResponse {
            token: token.reveal(),
            expires_at_unix_secs: expires as i64,
        }))
    }

    async fn list_revoked_certificates(
        &self,
        _req: Request<pb::ListRevokedCertificatesRequest>,
    ) -> Result<Response<pb::ListRevokedCertificatesResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let certificates = self
            .node
            .state
            .revoked_certificates()
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(Into::into)
            .collect();
        Ok(Response::new(pb::ListRevokedCertificatesResponse {
            certificates,
        }))
    }

    async fn list_workloads(
        &self,
        _req: Request<pb::ListWorkloadsRequest>,
    ) -> Result<Response<pb::ListWorkloadsResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let workloads = self
            .node
            .state
            .workloads()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListWorkloadsResponse {
            workloads: workloads.into_iter().map(Into::into).collect(),
        }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let req = req.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n => (n as usize).min(MAX_LIMIT),
        };
        let entries = self
            .node
            .state
            .audit_after(req.after_index, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.into_iter().map(Into::into).collect(),
        }))
    }

    async fn verify_audit(
        &self,
        _req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let entries = self
            .node
            .state
            .audit_after(0, usize::MAX)
            .map_err(|e| Status::internal(e.to_string()))?;
        let error = crate::audit_chain::verify(&entries)
            .err()
            .unwrap_or_default();
        Ok(Response::new(pb::VerifyAuditResponse {
            entries: entries.len() as u64,
            error,
        }))
    }

    async fn attest_agent(
        &self,
        req: Request<pb::AttestAgentRequest>,
    ) -> Result<Response<pb::AttestAgentResponse>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().agent;
        let record = self.one_agent(&name)?;
        let agent_id = record.identity.agent_id.clone();
        let before = record.attestation.last_quote_at_unix_nanos;
        let via = self.request_attestation(&agent_id).await?;
        tracing::debug!(agent = %agent_id, %via, "quote requested");
        self.audit(
            caller.actor(),
            "agent.attest",
            format!("agent {agent_id}"),
            "quote requested".into(),
        )
        .await;
        // The verdict: the record's next quote result (this node applies
        // what its session wrote).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let now = self
                .node
                .state
                .agent(&agent_id)
                .map_err(|e| Status::internal(e.to_string()))?
                .unwrap_or_default();
            if now.attestation.last_quote_at_unix_nanos != before {
                return Ok(Response::new(pb::AttestAgentResponse {
                    attestation: Some(now.attestation.into()),
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "agent {agent_id} did not answer the quote request within 15 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn reset_attestation(
        &self,
        req: Request<pb::ResetAttestationRequest>,
    ) -> Result<Response<pb::ResetAttestationResponse>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().agent;
        let record = self.one_agent(&name)?;
        let r = self
            .node
            .write(Command::ResetAttestation {
                agent_id: record.identity.agent_id.clone(),
                actor: caller.actor(),
                at_unix_nanos: now_unix_nanos(),
            })
            .await?;
        if let CommandResult::Refused { reason } = r {
            return Err(Status::failed_precondition(reason));
        }
        Ok(Response::new(pb::ResetAttestationResponse {}))
    }

    async fn get_agent(
        &self,
        req: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let name = req.into_inner().agent;
        if name.trim().is_empty() {
            return Err(Status::invalid_argument("agent: must not be empty"));
        }
        let record = self
            .node
            .state
            .agent_by_id_or_hostname(&name)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no agent with id or hostname {name:?}")))?;
        Ok(Response::new(record.into()))
    }

    async fn list_inventory(
        &self,
        req: Request<pb::ListInventoryRequest>,
    ) -> Result<Response<pb::ListInventoryResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let req = req.into_inner();
        let bad = |e: vigil_proto::WireError| Status::invalid_argument(e.to_string());
        let kind = vigil_proto::inventory_kind_from_wire("kind", req.kind).map_err(bad)?;
        let after_kind =
            vigil_proto::inventory_kind_from_wire("after_kind", req.after_kind).map_err(bad)?;
        let after = match (after_kind, req.after_key.is_empty()) {
            (Some(k), _) => Some((k, req.after_key.as_str())),
            (None, true) => None,
            (None, false) => {
                return Err(Status::invalid_argument(
                    "after_kind: must be set with after_key",
                ))
            }
        };
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n => (n as usize).min(MAX_LIMIT),
        };
        let internal = |e: crate::store::ReadError| Status::internal(e.to_string());
        let (items, more) = self
            .node
            .state
            .inventory(kind, after, limit)
            .map_err(internal)?;
        let refused_sightings = self.node.state.inventory_refused().map_err(internal)?;
        let (items, more) = within_page_bytes(items, more);
        let (next_after_kind, next_after_key) = match items.last().filter(|_| more) {
            Some(last) => (
                vigil_proto::inventory_kind_to_wire(last.kind).into(),
                last.key.clone(),
            ),
            None => (0, String::new()),
        };
        Ok(Response::new(pb::ListInventoryResponse {
            items: items.into_iter().map(Into::into).collect(),
            more,
            next_after_kind,
            next_after_key,
            refused_sightings,
        }))
    }

    async fn upload_model(
        &self,
        req: Request<tonic::Streaming<pb::UploadModelChunk>>,
    ) -> Result<Response<pb::UploadModelResponse>, Status> {
        self.upload_model_rpc(req).await
    }

    async fn register_model(
        &self,
        req: Request<pb::RegisterModelRequest>,
    ) -> Result<Response<pb::RegisterModelResponse>, Status> {
        self.register_model_rpc(req).await
    }

    async fn approve_model(
        &self,
        req: Request<pb::ModelVersionRequest>,
    ) -> Result<Response<pb::ModelVersionResponse>, Status> {
        self.set_model_state_rpc(req, vigil_domain::ModelState::Approved)
            .await
    }

    async fn revoke_model(
        &self,
        req: Request<pb::ModelVersionRequest>,
    ) -> Result<Response<pb::ModelVersionResponse>, Status> {
        self.set_model_state_rpc(req, vigil_domain::ModelState::Revoked)
            .await
    }

    async fn rollback_model(
        &self,
        req: Request<pb::ModelVersionRequest>,
    ) -> Result<Response<pb::ModelVersionResponse>, Status> {
        self.rollback_model_rpc(req).await
    }

    async fn list_models(
        &self,
        req: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        self.list_models_rpc(req).await
    }

    async fn put_user(
        &self,
        req: Request<pb::PutUserRequest>,
    ) -> Result<Response<pb::PutUserResponse>, Status> {
        self.put_user_rpc(req).await
    }

    async fn remove_user(
        &self,
        req: Request<pb::RemoveUserRequest>,
    ) -> Result<Response<pb::RemoveUserResponse>, Status> {
        self.remove_user_rpc(req).await
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        self.list_users_rpc(req).await
    }

    async fn triage_alert(
        &self,
        req: Request<pb::TriageAlertRequest>,
    ) -> Result<Response<pb::TriageAlertResponse>, Status> {
        self.triage_alert_rpc(req).await
    }

    type ExportInventoryStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::ExportInventoryChunk, Status>>;

    async fn export_inventory(
        &self,
        req: Request<pb::ExportInventoryRequest>,
    ) -> Result<Response<Self::ExportInventoryStream>, Status> {
        self.node.ensure_fresh().await?;
        let format = pb::InventoryFormat::try_from(req.into_inner().format)
            .ok()
            .filter(|f| *f != pb::InventoryFormat::Unspecified)
            .ok_or_else(|| Status::invalid_argument("format: must be csv or cyclonedx-json"))?;
        let state = self.node.state.clone();
        // Every item (at most MAX_INVENTORY_ITEMS), rendered off the runtime.
        let (document, media_type) = tokio::task::spawn_blocking(move || {
            let (items, _) = state
                .inventory(None, None, usize::MAX)
                .map_err(|e| Status::internal(e.to_string()))?;
            Ok::<_, Status>(match format {
                pb::InventoryFormat::Csv => (
                    crate::inventory_export::to_csv(&items)
                        .map_err(|e| Status::internal(format!("csv: {e}")))?,
                    "text/csv",
                ),
                _ => {
                    let serial = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i64);
                    let bom = crate::inventory_export::to_cyclonedx(&items, serial, now);
                    (
                        serde_json::to_vec_pretty(&bom)
                            .map_err(|e| Status::internal(format!("json: {e}")))?,
                        "application/vnd.cyclonedx+json",
                    )
                }
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            const CHUNK: usize = 1 << 20;
            for (n, data) in document.chunks(CHUNK).enumerate() {
                let chunk = pb::ExportInventoryChunk {
                    data: data.to_vec(),
                    media_type: if n == 0 {
                        media_type.into()
                    } else {
                        String::new()
                    },
                };
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }
}

/// The first items of a page that encode to at most `INVENTORY_PAGE_BYTES`
/// (at least one), and whether more follow. Only items the agents reported
/// are cut: the approved-but-unseen ones at the end of the last page are
/// small and follow the last stored item, so a page cut before them drops
/// them too and the next page (after the last item kept) brings them back.
fn within_page_bytes(
    items: Vec<vigil_domain::InventoryItem>,
    more: bool,
) -> (Vec<vigil_domain::InventoryItem>, bool) {
    use prost::Message;
    let mut bytes = 0;
    for (n, item) in items.iter().enumerate() {
        bytes += types_pb::InventoryItem::from(item.clone()).encoded_len();
        if bytes > INVENTORY_PAGE_BYTES && n > 0 && item.sightings > 0 {
            let mut items = items;
            items.truncate(n);
            return (items, true);
        }
    }
    (items, more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::{InventoryItem, InventoryKind};

    fn item(n: usize, hosts: usize, seen: bool) -> InventoryItem {
        InventoryItem {
            kind: Some(InventoryKind::Model),
            key: format!("sha256:{n:064}"),
            hosts: (0..hosts).map(|h| format!("{h:0>250}")).collect(),
            sightings: u64::from(seen),
            ..Default::default()
        }
    }

    #[test]
    fn an_inventory_page_stops_near_two_mib_and_never_cuts_only_approved_leftovers() {
        // 256 hosts of 250 bytes: ~64 KiB an item.
        let items: Vec<_> = (0..100).map(|n| item(n, 256, true)).collect();
        let (page, more) = within_page_bytes(items, false);
        assert!(more);
        assert!(page.len() > 20 && page.len() < 40, "{}", page.len());
        // Small pages pass as they are, approved leftovers included.
        let mut small: Vec<_> = (0..10).map(|n| item(n, 1, true)).collect();
        small.push(item(99, 0, false));
        assert_eq!(within_page_bytes(small.clone(), false), (small, false));
        // One item larger than a page still goes out alone.
        let (page, _) = within_page_bytes(vec![item(0, 256, true)], false);
        assert_eq!(page.len(), 1);
    }
}
