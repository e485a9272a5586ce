//! The dashboard's data on a node: its own state reader (what this node
//! has applied) and its write path (forwarded to the leader).

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::watch;
pub use vigil_domain::TriageAction as DomainAction;
use vigil_domain::{AgentRecord, Alert, AlertTriage, Severity, UserRole};

use super::data::{
    DashUser, DashboardData, DataError, DataFuture, PolicyVersion, Role, TriageAction, TriageEntry,
    TriageState,
};
use crate::node::ControlPlaneNode;
use crate::service::admin_triage::{self, TriageWriteError};

pub struct NodeData {
    pub node: Arc<ControlPlaneNode>,
}

/// A storage read failed: the detail (which can name files) goes to the
/// node's log, the browser gets a plain "unavailable".
fn read_err(e: impl std::fmt::Display) -> DataError {
    tracing::warn!(error = %e, "dashboard: a state read failed");
    DataError::Unavailable("the node's state could not be read; see its log".into())
}

fn role(r: UserRole) -> Role {
    match r {
        UserRole::Viewer => Role::Viewer,
        UserRole::Analyst => Role::Analyst,
        UserRole::Admin => Role::Admin,
    }
}

impl DashboardData for NodeData {
    fn user(&self, name: &str) -> Result<Option<DashUser>, DataError> {
        Ok(self
            .node
            .state
            .user(name)
            .map_err(read_err)?
            .map(|u| DashUser {
                name: u.name,
                role: role(u.role),
                password_hash: u.password_hash,
                disabled: u.disabled,
            }))
    }

    fn agents(&self) -> Result<Vec<AgentRecord>, DataError> {
        self.node.state.agents().map_err(read_err)
    }

    fn alerts_after(&self, after: u64, limit: usize) -> Result<Vec<Alert>, DataError> {
        self.node.state.alerts_after(after, limit).map_err(read_err)
    }

    fn last_alert_index(&self) -> u64 {
        self.node.state.last_alert_index()
    }

    fn watch_alerts(&self) -> watch::Receiver<u64> {
        self.node.state.watch_alerts()
    }

    fn open_by_severity(&self) -> Result<Vec<(Severity, u64)>, DataError> {
        Ok(open_counts(
            &self.node.state.open_by_severity().map_err(read_err)?,
        ))
    }

    fn triage(&self, index: u64) -> Result<TriageState, DataError> {
        Ok(triage_view(
            self.node.state.triage(index).map_err(read_err)?,
        ))
    }

    fn triage_alert(&self, index: u64, actor: &str, action: TriageAction) -> DataFuture<'_, ()> {
        let actor = actor.to_string();
        Box::pin(async move {
            // A resolution note is a comment taken just before the
            // resolve; an alert resolved already takes neither.
            if let TriageAction::Resolve(note) = &action {
                if !note.is_empty() {
                    let t = self.node.state.triage(index).map_err(read_err)?;
                    if t.is_some_and(|t| t.state == vigil_domain::TriageState::Resolved) {
                        return Err(DataError::Refused(format!(
                            "alert {index} is resolved already"
                        )));
                    }
                }
            }
            for step in domain_steps(action) {
                admin_triage::triage_alert(&self.node, &actor, index, step)
                    .await
                    .map_err(write_err)?;
            }
            Ok(())
        })
    }

    fn workloads(&self) -> Result<Vec<vigil_domain::WorkloadApproval>, DataError> {
        self.node.state.workloads().map_err(read_err)
    }

    fn model_catalog(&self) -> Result<vigil_domain::ModelCatalog, DataError> {
        self.node.state.model_catalog().map_err(read_err)
    }

    fn inventory(
        &self,
        kind: Option<vigil_domain::InventoryKind>,
        after: Option<(vigil_domain::InventoryKind, String)>,
        limit: usize,
    ) -> Result<(Vec<vigil_domain::InventoryItem>, bool), DataError> {
        self.node
            .state
            .inventory(
                kind,
                after.as_ref().map(|(k, key)| (*k, key.as_str())),
                limit,
            )
            .map_err(read_err)
    }

    fn policies(&self) -> Result<Vec<PolicyVersion>, DataError> {
        Ok(self
            .node
            .state
            .policies()
            .map_err(read_err)?
            .into_iter()
            .map(|(version, bundle, meta)| PolicyVersion {
                version,
                bundle,
                pushed_at_unix_nanos: meta.pushed_at_unix_nanos,
                note: meta.note,
            })
            .collect())
    }

    fn active_policy_version(&self) -> u64 {
        self.node.state.active_policy_version()
    }

    fn audit_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<vigil_domain::AuditEntry>, DataError> {
        self.node.state.audit_after(after, limit).map_err(read_err)
    }

    fn audit_entries(&self) -> Result<u64, DataError> {
        self.node.state.audit_entries().map_err(read_err)
    }

    fn findings_per_hour(&self, since_hour: u64) -> Result<Vec<(u64, u64)>, DataError> {
        self.node
            .state
            .findings_per_hour(since_hour)
            .map_err(read_err)
    }

    fn top_counts(
        &self,
        kind: crate::store::CountKind,
        n: usize,
    ) -> Result<Vec<(String, u64)>, DataError> {
        self.node.state.top_counts(kind, n).map_err(read_err)
    }
}

/// The severities in the order the overview shows them.
pub const SEVERITIES: [Severity; 5] = [
    Severity::Critical,
    Severity::High,
    Severity::Medium,
    Severity::Low,
    Severity::Info,
];

/// The store's open counts (keyed by `Severity::as_str`) in the
/// overview's order, 0 for a severity without alerts.
pub fn open_counts(by: &BTreeMap<String, u64>) -> Vec<(Severity, u64)> {
    SEVERITIES
        .into_iter()
        .map(|s| (s, by.get(s.as_str()).copied().unwrap_or(0)))
        .collect()
}

/// An alert's triage as the pages show it (`None`: never triaged, open).
pub fn triage_view(t: Option<AlertTriage>) -> TriageState {
    let Some(t) = t else {
        return TriageState {
            status: vigil_domain::TriageState::Open.as_str().into(),
            ..TriageState::default()
        };
    };
    TriageState {
        status: t.state.as_str().into(),
        assignee: t.assignee.unwrap_or_default(),
        history: t
            .history
            .into_iter()
            .map(|e| TriageEntry {
                actor: e.actor,
                action: e.action.verb().into(),
                detail: match e.action {
                    DomainAction::Assign { to } => to,
                    DomainAction::Comment { text } => text,
                    _ => String::new(),
                },
                at_unix_nanos: e.at_unix_nanos,
            })
            .collect(),
    }
}

/// The recorded steps of a dashboard action: a resolve with a note is the
/// note as a comment, then the resolve.
pub fn domain_steps(action: TriageAction) -> Vec<DomainAction> {
    match action {
        TriageAction::Ack => vec![DomainAction::Ack],
        TriageAction::Assign(to) => vec![DomainAction::Assign { to }],
        TriageAction::Comment(text) => vec![DomainAction::Comment { text }],
        TriageAction::Resolve(note) if note.is_empty() => vec![DomainAction::Resolve],
        TriageAction::Resolve(note) => {
            vec![DomainAction::Comment { text: note }, DomainAction::Resolve]
        }
    }
}

/// A refused write as the API answers it: an unknown or pruned alert is
/// 404, a step the alert's state (or the input) does not allow is 409,
/// a write that did not commit is 503.
pub fn write_err(e: TriageWriteError) -> DataError {
    match e {
        TriageWriteError::NotFound(m) => DataError::NotFound(m),
        TriageWriteError::Invalid(m) | TriageWriteError::Refused(m) => DataError::Refused(m),
        TriageWriteError::Write(e) => DataError::Unavailable(e.to_string()),
        TriageWriteError::Internal(m) => DataError::Unavailable(m),
    }
}
