//! The replicated command set and openraft's type configuration.
//!
//! Architecture invariant: a `Command` is applied deterministically: every
//! timestamp and identity is chosen by the proposer, none by the apply.
//! Each variant's serialised tag carries a version (`*.v1`); a changed
//! command gets a new variant, so old log entries always replay.

use serde::{Deserialize, Serialize};
use vigil_domain::{AgentIdentity, Finding, SensorCounters};

pub type NodeId = u64;

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;

/// The audit entry an `audited.v1` command appends after its change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditNote {
    pub at_unix_nanos: i64,
    pub actor: String,
    pub action: String,
    pub subject: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    #[serde(rename = "register_agent.v1")]
    RegisterAgent {
        agent: AgentIdentity,
        at_unix_nanos: i64,
    },
    #[serde(rename = "heartbeat.v1")]
    Heartbeat {
        agent_id: String,
        at_unix_nanos: i64,
        counters: SensorCounters,
        spooled: u64,
        /// Absent in entries written before agents reported their spool's
        /// state.
        #[serde(default)]
        spool_dropped: u64,
        #[serde(default)]
        spool_full: bool,
    },
    /// What an agent's host has (GPUs and their users), replacing the last report.
    #[serde(rename = "update_inventory.v1")]
    UpdateInventory {
        agent_id: String,
        gpu: vigil_domain::GpuInventory,
    },
    /// Findings of one agent, in ascending seq. Findings at or below the
    /// agent's last committed seq are duplicates of a resend and skipped.
    #[serde(rename = "append_alerts.v1")]
    AppendAlerts {
        agent_id: String,
        received_at_unix_nanos: i64,
        findings: Vec<Finding>,
    },
    /// A signed bundle (verified and compiled by the proposer) becomes the
    /// active version. Versions only grow; a rollback is a new version
    /// carrying an old one's files, with a note saying so.
    #[serde(rename = "put_policy_bundle.v1")]
    PutPolicyBundle {
        version: u64,
        bundle: Vec<u8>,
        #[serde(default)]
        pushed_at_unix_nanos: i64,
        #[serde(default)]
        note: String,
    },
    /// An entry of the audit log; the state machine chains it.
    #[serde(rename = "append_audit.v1")]
    AppendAudit {
        at_unix_nanos: i64,
        actor: String,
        action: String,
        subject: String,
        detail: String,
    },
    /// A change and its audit entry in one raft entry: the entry is
    /// appended, in the same apply, only when the change took effect (not
    /// refused, not found), so an acknowledged change never lacks its
    /// audit entry (and its SIEM event) when a leader is lost between two
    /// writes, and a refused attempt is not audited as a change.
    #[serde(rename = "audited.v1")]
    Audited {
        command: Box<Command>,
        audit: AuditNote,
    },
    /// An approved workload is recorded (or replaced, by id).
    #[serde(rename = "approve_workload.v1")]
    ApproveWorkload {
        workload: vigil_domain::WorkloadApproval,
    },
    #[serde(rename = "revoke_workload.v1")]
    RevokeWorkload { id: String },
    /// A join token is created (only its digest is stored).
    #[serde(rename = "put_join_token.v1")]
    PutJoinToken { record: vigil_pki::TokenRecord },
    /// An agent enrolls with a join token: admitted against the record at
    /// the proposer's time, then marked used.
    #[serde(rename = "use_join_token.v1")]
    UseJoinToken {
        id: String,
        secret_sha256: String,
        agent_id: String,
        now_unix_secs: u64,
    },
    /// A certificate is no longer trusted (refused if it already is not).
    #[serde(rename = "revoke_certificate.v1")]
    RevokeCertificate {
        certificate: vigil_domain::RevokedCertificate,
    },
    /// As `revoke_certificate.v1`, and when the certificate was renewed
    /// since, what its renewals led to is revoked too (renewals only: a
    /// re-enrollment starts a new line the operator chose).
    #[serde(rename = "revoke_certificate.v2")]
    RevokeCertificateV2 {
        certificate: vigil_domain::RevokedCertificate,
    },
    /// An agent's certificate is renewed: the one it presented
    /// (`presented_serial`) is superseded by the new one and from then on
    /// accepted only to ask for that renewal again (a lost reply), which
    /// returns the stored certificate when the request is for the same
    /// key. Refused when the presented one is revoked, was renewed for
    /// another key, or is not the agent's current certificate, or the
    /// agent renewed less than a minute before `at`; the audit entry is
    /// part of the same apply.
    #[serde(rename = "renew_certificate.v1")]
    RenewCertificate {
        agent_id: String,
        presented_serial: String,
        new_serial: String,
        new_certificate_pem: String,
        valid_days: u32,
        at_unix_nanos: i64,
    },
    /// As `use_join_token.v1`, and the certificate issued (`serial`)
    /// becomes the agent's current one. An agent id that already has one
    /// enrolls again only with a token made for that agent id; its
    /// previous certificate is then superseded (no longer accepted).
    #[serde(rename = "use_join_token.v2")]
    UseJoinTokenV2 {
        id: String,
        secret_sha256: String,
        agent_id: String,
        serial: String,
        now_unix_secs: u64,
    },
    /// Commands of many agents in one entry (heartbeats, finding batches),
    /// so that they share one raft round and one fsync. Applied in order,
    /// each seeing the ones before; a batch is never nested.
    #[serde(rename = "batch.v1")]
    Batch { commands: Vec<Command> },
    /// The cluster's id, chosen by its first node; set once (a different
    /// one later is refused).
    #[serde(rename = "set_cluster_id.v1")]
    SetClusterId { cluster_id: String },
    /// Alert retention, proposed by the leader from its clock and its
    /// configuration (so every node removes the same alerts): removes the
    /// oldest alerts while more than `keep_at_most` are stored (0: no
    /// limit) and those received before `older_than_unix_nanos` (0: no
    /// limit), at most `PRUNE_AT_MOST` per entry (the leader proposes
    /// again while there are more); the removal is an audit entry.
    #[serde(rename = "prune_alerts.v1")]
    PruneAlerts {
        at_unix_nanos: i64,
        keep_at_most: u64,
        older_than_unix_nanos: i64,
    },
    /// An agent's TPM passed enrollment (EK certificate chain, EK matching
    /// it, AK activated through the EK): the host is bound to this EK.
    /// Refused ("ek-changed: ...") when the host is bound to another EK
    /// (until an operator's `reset_attestation.v1`), and ("ek-in-use:
    /// ...") when another host is bound to this EK: one TPM vouches for
    /// one host. Trust does not change here.
    #[serde(rename = "record_tpm_enrollment.v1")]
    RecordTpmEnrollment {
        agent_id: String,
        ek_sha256: String,
        ek_certificate_issuer: String,
        ak_sha256: String,
        at_unix_nanos: i64,
    },
    /// The verifier's result for one quote (or for its absence, or a failed
    /// enrollment). The apply compares a verified quote's clock with the
    /// last one and its PCRs with the host's golden values (set by the
    /// first verified quote) and decides trust; a change of trust is an
    /// audit entry, and a change to untrusted an alert (signal
    /// `attestation`), in the same apply.
    #[serde(rename = "record_quote.v1")]
    RecordQuote {
        agent_id: String,
        at_unix_nanos: i64,
        result: vigil_domain::QuoteResult,
        /// The EK (sha256 of its TPM2B_PUBLIC) of the TPM the session
        /// enrolled; a verified quote of a TPM other than the one the host
        /// is bound to is judged `ek-changed`. Empty: no TPM enrolled in
        /// the session (a stale or missing host).
        #[serde(default)]
        ek_sha256: String,
    },
    /// An operator forgets a host's EK binding and golden PCRs; its trust
    /// becomes unattested until its next enrollment and quote.
    #[serde(rename = "reset_attestation.v1")]
    ResetAttestation {
        agent_id: String,
        actor: String,
        at_unix_nanos: i64,
    },
    /// A model record is registered (state `registered`): its signature
    /// was verified by the proposer against its trusted keys and its file
    /// is stored beside raft on the proposing node (the bytes never come
    /// here). Refused when (name, version) is registered with another
    /// digest or other signed fields; the same record again changes
    /// nothing. The audit entry (who, what) is part of the same apply.
    #[serde(rename = "register_model.v1")]
    RegisterModel {
        record: vigil_domain::ModelRecord,
        actor: String,
        at_unix_nanos: i64,
        /// Why (the record's reason, and the audit entry's).
        #[serde(default)]
        note: String,
    },
    /// A model version is approved (from registered) or revoked (from
    /// registered or approved; for good). Approving a version above the
    /// name's rollback pin clears the pin; revoking the pinned version
    /// clears it too. Refused for an unknown version (`NotFound`) or a
    /// change its state does not allow. The audit entry (who, why) is part
    /// of the same apply.
    #[serde(rename = "set_model_state.v1")]
    SetModelState {
        name: String,
        version: u64,
        state: vigil_domain::ModelState,
        actor: String,
        reason: String,
        at_unix_nanos: i64,
    },
    /// A rollback on purpose: the name serves this approved version, and
    /// none above it, until a newer version is approved (or it is
    /// revoked). The audit entry is part of the same apply.
    #[serde(rename = "rollback_model.v1")]
    RollbackModel {
        name: String,
        version: u64,
        actor: String,
        reason: String,
        at_unix_nanos: i64,
    },
    /// A user is added, or its role, password hash or disabled flag
    /// changed (each `None` field kept as it is). A new user needs a role
    /// and a password hash. Only a hash (argon2id, made by the node that
    /// took the admin call) is ever in the log, never a password. Refused
    /// when it would leave no enabled admin where there was one.
    #[serde(rename = "put_user.v1")]
    PutUser {
        name: String,
        #[serde(default)]
        role: Option<vigil_domain::UserRole>,
        #[serde(default)]
        password_hash: Option<String>,
        #[serde(default)]
        disabled: Option<bool>,
        at_unix_nanos: i64,
        /// Only add: refused when the user exists.
        #[serde(default)]
        create_only: bool,
    },
    /// A user is removed (`NotFound` when there is none); refused for the
    /// last enabled admin.
    #[serde(rename = "remove_user.v1")]
    RemoveUser { name: String },
    /// A triage step by `actor` on alert `index` (ack, assign, comment,
    /// resolve, reopen). Refused for an unknown or pruned alert, an
    /// assignee who is not an enabled user, and a step the alert's state
    /// does not allow. Keeps `triage/<index>` and the open and
    /// acknowledged counts.
    #[serde(rename = "triage_alert.v1")]
    TriageAlert {
        index: u64,
        actor: String,
        action: vigil_domain::TriageAction,
        at_unix_nanos: i64,
    },
    /// What an agent did with the bundle it last received.
    #[serde(rename = "policy_status.v1")]
    PolicyStatus {
        agent_id: String,
        active_version: u64,
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum CommandResult {
    #[default]
    Done,
    AlertsAppended {
        /// Index of the first new alert (0 when none was new).
        first_index: u64,
        appended: u64,
        duplicates: u64,
        /// The agent's highest committed seq after this command.
        up_to_seq: u64,
    },
    Refused {
        reason: String,
    },
    /// One result per command of a `Batch`, in order.
    Batch(Vec<CommandResult>),
    /// An agent registered; its highest committed seq as of this command
    /// (what its session starts from, even on a node that lags).
    Registered {
        last_acked_seq: u64,
    },
    /// The certificate a renewal hands out (the stored one when the
    /// renewal was asked again).
    Renewed {
        certificate_pem: String,
    },
    /// A quote's result as the apply judged it: the host's trust after it.
    Attested {
        trust: vigil_domain::TrustState,
    },
    /// Alerts removed by retention, and whether more are due.
    AlertsPruned {
        removed: u64,
        more: bool,
    },
    /// What the command was about does not exist (an unknown model
    /// version), and nothing changed.
    NotFound {
        reason: String,
    },
    /// A model record as the command left it.
    Model(Box<vigil_domain::ModelRecord>),
    /// A user as the command left it.
    User(Box<vigil_domain::UserRecord>),
    /// An alert's triage as the command left it.
    Triage(Box<vigil_domain::AlertTriage>),
}
