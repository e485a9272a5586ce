//! What the SIEM export streams: every kind of event the control plane
//! commits (findings, enforcement outcomes, policy and approval changes,
//! attestation verdicts, other audit entries) in one order, each with one
//! cursor from one dense sequence.

use serde::{Deserialize, Serialize};

use crate::{Alert, AuditEntry, Severity, SignalKind};

/// The kind of an exported event, decided once when it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An agent's finding, or an alert the verifier raised.
    Finding,
    /// The outcome of an enforcement (kill, freeze, deny_gpu, ...): a
    /// finding with its action set.
    Enforcement,
    /// A policy bundle published or rolled back (`policy.*` audit entries).
    PolicyChange,
    /// A workload or model approved, revoked or rolled back
    /// (`workload.*`, `model.*` audit entries).
    ApprovalChange,
    /// A TPM attestation enrollment, verdict, baseline or reset
    /// (`attest.*` audit entries).
    Attestation,
    /// Every other audit entry (certificates, unfreezes, retention, the
    /// audit record of an enforcement, ...).
    Audit,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Finding,
        EventKind::Enforcement,
        EventKind::PolicyChange,
        EventKind::ApprovalChange,
        EventKind::Attestation,
        EventKind::Audit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Finding => "finding",
            EventKind::Enforcement => "enforcement",
            EventKind::PolicyChange => "policy_change",
            EventKind::ApprovalChange => "approval_change",
            EventKind::Attestation => "attestation",
            EventKind::Audit => "audit",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind of an alert: an enforcement outcome when its finding names
    /// an action, else a finding.
    pub fn of_alert(alert: &Alert) -> EventKind {
        if alert.finding.action.is_empty() {
            EventKind::Finding
        } else {
            EventKind::Enforcement
        }
    }

    /// The kind of an audit entry, by its action's prefix.
    pub fn of_audit(entry: &AuditEntry) -> EventKind {
        let family = entry.action.split('.').next().unwrap_or("");
        match family {
            "policy" => EventKind::PolicyChange,
            "workload" | "model" => EventKind::ApprovalChange,
            "attest" => EventKind::Attestation,
            _ => EventKind::Audit,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The record an event carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventRecord {
    Alert(Alert),
    Audit(AuditEntry),
}

/// One exported event: its cursor in the one sequence, its kind and its
/// record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiemEvent {
    /// Dense from 1 across every kind; a subscriber resumes after it.
    pub cursor: u64,
    pub kind: EventKind,
    pub record: EventRecord,
}

impl SiemEvent {
    /// Its severity: an alert's, else informational.
    pub fn severity(&self) -> Severity {
        match &self.record {
            EventRecord::Alert(a) => a.finding.severity,
            EventRecord::Audit(_) => Severity::Info,
        }
    }

    /// Its signal, for an alert.
    pub fn signal(&self) -> Option<SignalKind> {
        match &self.record {
            EventRecord::Alert(a) => Some(a.finding.signal),
            EventRecord::Audit(_) => None,
        }
    }

    /// When it was committed (the proposer's clock).
    pub fn time_unix_nanos(&self) -> i64 {
        match &self.record {
            EventRecord::Alert(a) => a.received_at_unix_nanos,
            EventRecord::Audit(e) => e.at_unix_nanos,
        }
    }
}

/// The longest command line an exported event carries, in bytes.
pub const MAX_EXPORTED_CMDLINE: usize = 4096;
/// The longest path (executable, file, cgroup) an exported event carries.
pub const MAX_EXPORTED_PATH: usize = 1024;
/// The longest free text (summary, audit detail) an exported event carries.
pub const MAX_EXPORTED_TEXT: usize = 4096;

/// `s` cut to at most `max` bytes on a character boundary, with a marker
/// saying how much was cut (`…[truncated 123 bytes]`), the marker
/// included in `max`. Unchanged when it fits.
pub fn truncate_marked(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return std::borrow::Cow::Borrowed(s);
    }
    // The marker's length depends on the count it names; reserve the
    // widest it can be for this input.
    let widest = marker(s.len());
    let keep = max.saturating_sub(widest.len());
    let mut end = keep.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(max);
    out.push_str(&s[..end]);
    out.push_str(&marker(s.len() - end));
    std::borrow::Cow::Owned(out)
}

fn marker(cut: usize) -> String {
    format!("…[truncated {cut} bytes]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_kinds_follow_the_action_family() {
        let entry = |action: &str| AuditEntry {
            index: 1,
            at_unix_nanos: 0,
            actor: "a".into(),
            action: action.into(),
            subject: String::new(),
            detail: String::new(),
            prev_hash: String::new(),
            hash: String::new(),
        };
        assert_eq!(
            EventKind::of_audit(&entry("policy.push")),
            EventKind::PolicyChange
        );
        assert_eq!(
            EventKind::of_audit(&entry("workload.approve")),
            EventKind::ApprovalChange
        );
        assert_eq!(
            EventKind::of_audit(&entry("model.rollback")),
            EventKind::ApprovalChange
        );
        assert_eq!(
            EventKind::of_audit(&entry("attest.verdict")),
            EventKind::Attestation
        );
        assert_eq!(
            EventKind::of_audit(&entry("enforce.kill")),
            EventKind::Audit
        );
        assert_eq!(EventKind::of_audit(&entry("policyx")), EventKind::Audit);
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn truncation_is_marked_bounded_and_on_a_boundary() {
        assert_eq!(truncate_marked("short", 10), "short");
        let long = "é".repeat(3000);
        let cut = truncate_marked(&long, 100);
        assert!(cut.len() <= 100, "{}", cut.len());
        assert!(cut.ends_with("bytes]"));
        assert!(cut.starts_with("éé"));
        let named: usize = cut
            .rsplit("truncated ")
            .next()
            .unwrap()
            .trim_end_matches(" bytes]")
            .parse()
            .unwrap();
        let kept = cut.len() - marker(named).len();
        assert_eq!(kept + named, long.len());
        // A limit smaller than the marker keeps nothing of the text.
        assert!(truncate_marked(&long, 3).starts_with('…'));
    }
}
