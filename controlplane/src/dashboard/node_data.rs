//! The dashboard's data on a node: its own state reader (what this node
//! has applied) and its write path (forwarded to the leader).

use std::sync::Arc;

use tokio::sync::watch;
use vigil_domain::{AgentRecord, Alert, Severity, UserRole};

use super::data::{
    DashUser, DashboardData, DataError, DataFuture, Role, TriageAction, TriageState,
};
use crate::node::ControlPlaneNode;

pub struct NodeData {
    pub node: Arc<ControlPlaneNode>,
}

fn read_err(e: impl std::fmt::Display) -> DataError {
    DataError::Unavailable(e.to_string())
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
        let tally = self.node.state.alert_tally().map_err(read_err)?;
        let mut by = std::collections::BTreeMap::<&str, u64>::new();
        for (_signal, severity, n) in tally.counts() {
            *by.entry(severity).or_default() += n;
        }
        Ok([
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
            Severity::Info,
        ]
        .into_iter()
        .map(|s| (s, by.get(s.as_str()).copied().unwrap_or(0)))
        .collect())
    }

    fn triage(&self, _index: u64) -> Result<TriageState, DataError> {
        Ok(TriageState {
            status: "open".into(),
            ..TriageState::default()
        })
    }

    fn triage_alert(&self, _index: u64, _actor: &str, _action: TriageAction) -> DataFuture<'_, ()> {
        Box::pin(async { Err(DataError::Unavailable("triage is not in this build".into())) })
    }
}
