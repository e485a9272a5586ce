//! What the dashboard reads and writes, behind a trait: the node's state
//! reader and write path in production (`node_data.rs`), an in-memory fake
//! in tests.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;
use vigil_domain::{AgentRecord, Alert, ModelCatalog, Severity, WorkloadApproval};

/// A dashboard role; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Analyst,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

/// A user as the replicated state holds it.
#[derive(Debug, Clone)]
pub struct DashUser {
    pub name: String,
    pub role: Role,
    /// argon2id in PHC string form.
    pub password_hash: String,
    pub disabled: bool,
}

/// One triage step, as recorded in raft.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TriageEntry {
    pub actor: String,
    /// "ack", "assign", "comment", "resolve".
    pub action: String,
    /// The assignee, the comment or the resolution note.
    pub detail: String,
    pub at_unix_nanos: i64,
}

/// Where a finding stands.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TriageState {
    /// "open", "acknowledged" or "resolved".
    pub status: String,
    pub assignee: String,
    pub history: Vec<TriageEntry>,
}

/// What an analyst does to a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriageAction {
    Ack,
    Assign(String),
    Comment(String),
    Resolve(String),
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No such finding (or user...).
    #[error("{0}")]
    NotFound(String),
    /// The request is not possible as asked (a resolved finding acked...).
    #[error("{0}")]
    Refused(String),
    /// The node cannot serve it now (no leader, storage).
    #[error("{0}")]
    Unavailable(String),
}

/// A stored policy version (the policy page's list and diff).
#[derive(Debug, Clone)]
pub struct PolicyVersion {
    pub version: u64,
    /// The signed bundle as pushed (JSON).
    pub bundle: Vec<u8>,
    pub pushed_at_unix_nanos: i64,
    pub note: String,
}

pub type DataFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DataError>> + Send + 'a>>;

/// The dashboard's view of a node.
pub trait DashboardData: Send + Sync + 'static {
    /// The user named `name` (re-read on every request).
    fn user(&self, name: &str) -> Result<Option<DashUser>, DataError>;
    fn agents(&self) -> Result<Vec<AgentRecord>, DataError>;
    /// Alerts with index > `after`, oldest first, at most `limit`.
    fn alerts_after(&self, after: u64, limit: usize) -> Result<Vec<Alert>, DataError>;
    fn last_alert_index(&self) -> u64;
    /// Fires whenever alerts are applied.
    fn watch_alerts(&self) -> watch::Receiver<u64>;
    /// Findings not resolved, by severity (kept at apply time).
    fn open_by_severity(&self) -> Result<Vec<(Severity, u64)>, DataError>;
    /// The triage state and history of the finding at `index`.
    fn triage(&self, index: u64) -> Result<TriageState, DataError>;
    /// Records `action` on the finding at `index` as `actor` (a raft
    /// command with its audit entry).
    fn triage_alert(&self, index: u64, actor: &str, action: TriageAction) -> DataFuture<'_, ()>;
    /// The approved workloads (every host's). The host page's reads
    /// default to nothing (a fake without them).
    fn workloads(&self) -> Result<Vec<WorkloadApproval>, DataError> {
        Ok(Vec::new())
    }
    /// The model records and rollback pins (what each host serves).
    fn model_catalog(&self) -> Result<ModelCatalog, DataError> {
        Ok(ModelCatalog::default())
    }
    /// A page of the AI inventory (one kind or all) in (kind, key) order
    /// after `after`, at most `limit`, and whether there is more
    /// (`StateReader::inventory`). The inventory, policy and audit pages'
    /// reads default to nothing (a fake without them).
    fn inventory(
        &self,
        _kind: Option<vigil_domain::InventoryKind>,
        _after: Option<(vigil_domain::InventoryKind, String)>,
        _limit: usize,
    ) -> Result<(Vec<vigil_domain::InventoryItem>, bool), DataError> {
        Ok((Vec::new(), false))
    }
    /// Every stored policy version, oldest first.
    fn policies(&self) -> Result<Vec<PolicyVersion>, DataError> {
        Ok(Vec::new())
    }
    /// The active policy version (0: none).
    fn active_policy_version(&self) -> u64 {
        0
    }
    /// Audit entries with index > `after`, oldest first, at most `limit`.
    fn audit_after(
        &self,
        _after: u64,
        _limit: usize,
    ) -> Result<Vec<vigil_domain::AuditEntry>, DataError> {
        Ok(Vec::new())
    }
    /// Audit entries stored (dense from 1: the newest one's index).
    fn audit_entries(&self) -> Result<u64, DataError> {
        Ok(0)
    }
    /// (UTC hour since the epoch, stored findings received in it) from
    /// `since_hour` on, oldest first (`StateReader::findings_per_hour`,
    /// kept at apply). The overview's counters default to nothing.
    fn findings_per_hour(&self, _since_hour: u64) -> Result<Vec<(u64, u64)>, DataError> {
        Ok(Vec::new())
    }
    /// The `n` rules, agents (by id) or executables with the most stored
    /// findings, most first (`StateReader::top_counts`, kept at apply).
    fn top_counts(
        &self,
        _kind: crate::store::CountKind,
        _n: usize,
    ) -> Result<Vec<(String, u64)>, DataError> {
        Ok(Vec::new())
    }
}
