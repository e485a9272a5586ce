//! Alert triage in the replicated state: `triage/<u64 be index>` →
//! [`AlertTriage`] (`triage_alert.v1`), and `meta/triage_tally` →
//! [`TriageTally`], the acknowledged alerts and the resolved ones by
//! severity, kept at apply so that the open findings by severity are the
//! alert tally less the resolved (no scan).
//!
//! Invariant: `triage/<i>` exists only while `alert/<i>` does (retention
//! removes both in the same batch, and the tally with them), and the tally
//! counts exactly the stored triage records in each state.

use std::collections::BTreeMap;

use vigil_domain::{AlertTriage, TriageAction, TriageEntry, TriageState, UserRecord};

use super::{
    alert_key, decode, json, prefixed, AlertTally, ReadError, SledStateMachine, StateReader,
    StorageError, TalliedAlert, ALERT_TALLY,
};
use crate::raft_types::CommandResult;

const TRIAGE_PREFIX: &[u8] = b"triage/";
const TRIAGE_TALLY: &[u8] = b"meta/triage_tally";

pub(super) fn triage_key(index: u64) -> Vec<u8> {
    prefixed(TRIAGE_PREFIX, &index.to_be_bytes())
}

/// Triaged alerts by state: acknowledged, and resolved by severity
/// (`Severity::as_str`). Open alerts are the stored ones not resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TriageTally {
    pub acknowledged: u64,
    pub resolved: BTreeMap<String, u64>,
}

impl TriageTally {
    /// Counts `state` of an alert of `severity` in (`+1`) or out (`-1`).
    fn count(&mut self, state: TriageState, severity: &str, add: bool) {
        let n = match state {
            TriageState::Open => return,
            TriageState::Acknowledged => &mut self.acknowledged,
            TriageState::Resolved => self.resolved.entry(severity.to_string()).or_default(),
        };
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
        self.resolved.retain(|_, n| *n > 0);
    }
}

impl SledStateMachine {
    /// `triage_alert.v1`.
    pub(super) fn triage_alert(
        &self,
        batch: &mut sled::Batch,
        index: u64,
        entry: TriageEntry,
    ) -> Result<CommandResult, StorageError> {
        let Some(alert) = self.get_json::<TalliedAlert>(&alert_key(index))? else {
            return Ok(CommandResult::NotFound {
                reason: format!("no alert {index} (never stored, or removed by retention)"),
            });
        };
        if let TriageAction::Assign { to } = &entry.action {
            let user: Option<UserRecord> =
                self.get_json(&prefixed(super::users::USER_PREFIX, to.as_bytes()))?;
            if user.is_none_or(|u| u.disabled) {
                return Ok(CommandResult::Refused {
                    reason: format!("assignee {to:?}: no such enabled user"),
                });
            }
        }
        let k = triage_key(index);
        let mut triage = self
            .get_json::<AlertTriage>(&k)?
            .unwrap_or_else(|| AlertTriage::new(index));
        let before = triage.state;
        if let Err(e) = triage.apply(entry) {
            return Ok(CommandResult::Refused {
                reason: e.to_string(),
            });
        }
        if triage.state != before {
            let mut tally: TriageTally = self.get_json(TRIAGE_TALLY)?.unwrap_or_default();
            let severity = alert.finding.severity.as_str();
            tally.count(before, severity, false);
            tally.count(triage.state, severity, true);
            batch.insert(TRIAGE_TALLY, json(&tally)?);
        }
        batch.insert(k, json(&triage)?);
        Ok(CommandResult::Triage(Box::new(triage)))
    }

    /// Retention: removes alert `index`'s triage, if any, in `batch`, and
    /// takes it out of `tally` (read from the tree first when `None`).
    pub(super) fn prune_triage(
        &self,
        batch: &mut sled::Batch,
        tally: &mut Option<TriageTally>,
        index: u64,
        severity: &str,
    ) -> Result<(), StorageError> {
        let k = triage_key(index);
        let Some(triage) = self.get_json::<AlertTriage>(&k)? else {
            return Ok(());
        };
        if tally.is_none() {
            *tally = Some(self.get_json(TRIAGE_TALLY)?.unwrap_or_default());
        }
        if let Some(tally) = tally.as_mut() {
            tally.count(triage.state, severity, false);
        }
        batch.remove(k);
        Ok(())
    }

    /// Writes the tally retention changed.
    pub(super) fn write_triage_tally(
        batch: &mut sled::Batch,
        tally: Option<TriageTally>,
    ) -> Result<(), StorageError> {
        if let Some(tally) = tally {
            batch.insert(TRIAGE_TALLY, json(&tally)?);
        }
        Ok(())
    }
}

impl StateReader {
    /// Alert `index`'s triage; `None` when no one triaged it (it is open)
    /// or there is no such alert.
    pub fn triage(&self, index: u64) -> Result<Option<AlertTriage>, ReadError> {
        let k = triage_key(index);
        self.tree
            .get(&k)
            .map_err(ReadError::from)?
            .map(|v| decode(&k, &v))
            .transpose()
    }

    /// The stored alerts not resolved, by severity (`Severity::as_str`;
    /// every severity with a stored alert is named, 0 when all are
    /// resolved). Read from two counters, never a scan.
    pub fn open_by_severity(&self) -> Result<BTreeMap<String, u64>, ReadError> {
        let (alerts, triage) = {
            let _settled = self.between_entries();
            (self.tree.get(ALERT_TALLY)?, self.tree.get(TRIAGE_TALLY)?)
        };
        let alerts: AlertTally = match alerts {
            Some(v) => decode(ALERT_TALLY, &v)?,
            None => AlertTally::default(),
        };
        let triage: TriageTally = match triage {
            Some(v) => decode(TRIAGE_TALLY, &v)?,
            None => TriageTally::default(),
        };
        let mut open = BTreeMap::<String, u64>::new();
        for (_, severity, n) in alerts.counts() {
            *open.entry(severity.to_string()).or_default() += n;
        }
        for (severity, n) in open.iter_mut() {
            *n = n.saturating_sub(triage.resolved.get(severity).copied().unwrap_or(0));
        }
        Ok(open)
    }

    /// Changes whenever a triage step is applied or retention runs (and
    /// when a snapshot is installed): a page showing triage states reads
    /// them again.
    pub fn watch_triage(&self) -> tokio::sync::watch::Receiver<u64> {
        self.triage_changed.clone()
    }

    /// How many stored alerts are acknowledged (not yet resolved).
    pub fn acknowledged_count(&self) -> Result<u64, ReadError> {
        Ok(match self.tree.get(TRIAGE_TALLY)? {
            Some(v) => decode::<TriageTally>(TRIAGE_TALLY, &v)?.acknowledged,
            None => 0,
        })
    }
}
