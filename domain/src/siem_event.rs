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

/// The record an event carries. Unboxed: events live one at a time on
/// their way to a subscriber, and most are alerts.
#[allow(clippy::large_enum_variant)]
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

/// The marker [`truncate_marked`] puts where it cut `cut` bytes.
pub fn truncation_marker(cut: usize) -> String {
    format!("…[truncated {cut} bytes]")
}

fn marker(cut: usize) -> String {
    truncation_marker(cut)
}

/// Which events a subscriber wants; every part empty (or `None`) passes
/// everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiemFilter {
    /// Only these kinds.
    pub kinds: Vec<EventKind>,
    /// Only events at or above this severity (events that are not alerts
    /// are informational).
    pub min_severity: Option<Severity>,
    /// Only events about these hosts (a hostname or an agent id): events
    /// about no host (a policy change) pass only when this and
    /// `agent_ids` are empty.
    pub hosts: Vec<String>,
    /// Only events about these agents, matched on the agent id alone (the
    /// export moves a `hosts` value that names an enrolled agent here: a
    /// host name is what an agent reports, so any agent may report another
    /// agent's id as its host name; the id is its certificate's).
    pub agent_ids: Vec<String>,
    /// Only alerts with these rule ids (no audit entry passes).
    pub rules: Vec<String>,
    /// Only alerts with these signals (no audit entry passes).
    pub signals: Vec<SignalKind>,
}

/// What a filter looks at in an event, read without its record.
#[derive(Debug, Clone, Copy)]
pub struct EventFacets<'a> {
    pub kind: EventKind,
    pub severity: Severity,
    /// For an alert.
    pub signal: Option<SignalKind>,
    /// The host the event is about; empty when none.
    pub agent_id: &'a str,
    pub hostname: &'a str,
    /// For an alert.
    pub rule_id: &'a str,
}

impl SiemFilter {
    pub fn matches(&self, e: &EventFacets<'_>) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && self.min_severity.is_none_or(|min| e.severity >= min)
            && ((self.hosts.is_empty() && self.agent_ids.is_empty())
                || self
                    .hosts
                    .iter()
                    .any(|h| !h.is_empty() && (*h == e.agent_id || *h == e.hostname))
                || self
                    .agent_ids
                    .iter()
                    .any(|id| !id.is_empty() && *id == e.agent_id))
            && (self.rules.is_empty()
                || (e.signal.is_some() && self.rules.iter().any(|r| r == e.rule_id)))
            && (self.signals.is_empty() || e.signal.is_some_and(|s| self.signals.contains(&s)))
    }
}

impl SiemEvent {
    /// This event with its record's large fields capped: the command line
    /// at [`MAX_EXPORTED_CMDLINE`] bytes (arguments kept whole while they
    /// fit, then a marker argument saying how much was cut), paths at
    /// [`MAX_EXPORTED_PATH`], summary, host names and audit text at
    /// [`MAX_EXPORTED_TEXT`], each cut marked. One huge command line then
    /// costs a subscriber no more than a few KiB.
    pub fn capped(mut self) -> Self {
        match &mut self.record {
            EventRecord::Alert(a) => cap_alert(a),
            EventRecord::Audit(e) => {
                cap(&mut e.actor, MAX_EXPORTED_TEXT);
                cap(&mut e.action, MAX_EXPORTED_TEXT);
                cap(&mut e.subject, MAX_EXPORTED_TEXT);
                cap(&mut e.detail, MAX_EXPORTED_TEXT);
            }
        }
        self
    }
}

fn cap(s: &mut String, max: usize) {
    if s.len() > max {
        *s = truncate_marked(s, max).into_owned();
    }
}

fn cap_alert(a: &mut Alert) {
    cap(&mut a.agent_id, MAX_EXPORTED_TEXT);
    cap(&mut a.hostname, MAX_EXPORTED_TEXT);
    let f = &mut a.finding;
    cap(&mut f.rule_id, MAX_EXPORTED_TEXT);
    cap(&mut f.summary, MAX_EXPORTED_TEXT);
    cap(&mut f.action, MAX_EXPORTED_TEXT);
    let p = &mut f.process;
    cap(&mut p.exe, MAX_EXPORTED_PATH);
    cap(&mut p.cgroup_path, MAX_EXPORTED_PATH);
    cap(&mut p.comm, MAX_EXPORTED_PATH);
    cap(&mut p.exe_sha256, MAX_EXPORTED_PATH);
    p.argv = capped_argv(std::mem::take(&mut p.argv), MAX_EXPORTED_CMDLINE);
    if let Some(file) = &mut f.file {
        cap(&mut file.path, MAX_EXPORTED_PATH);
    }
    if let Some(net) = &mut f.net {
        cap(&mut net.address, MAX_EXPORTED_PATH);
        cap(&mut net.host, MAX_EXPORTED_PATH);
    }
}

/// `argv` whose joined length (`argv.join(" ")`) is at most `max` bytes:
/// unchanged when it fits, else the leading arguments that fit (the one
/// that does not cut on a character boundary) and a last argument
/// `…[truncated N bytes]` naming how many bytes of the joined command line
/// were cut, the marker counted in `max`.
pub fn capped_argv(argv: Vec<String>, max: usize) -> Vec<String> {
    let joined: usize = argv.iter().map(String::len).sum::<usize>() + argv.len().saturating_sub(1);
    if joined <= max {
        return argv;
    }
    // Room for the marker (at its widest) and the space before it.
    let budget = max.saturating_sub(marker(joined).len() + 1);
    let mut out = Vec::new();
    let mut used = 0usize;
    for arg in argv {
        let sep = usize::from(!out.is_empty());
        let room = budget.saturating_sub(used + sep);
        if arg.len() <= room {
            used += sep + arg.len();
            out.push(arg);
            continue;
        }
        if room > 0 {
            let mut end = room;
            while !arg.is_char_boundary(end) {
                end -= 1;
            }
            if end > 0 {
                used += sep + end;
                out.push(arg[..end].to_string());
            }
        }
        break;
    }
    let kept = used;
    out.push(marker(joined - kept));
    out
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
    fn facets<'a>(kind: EventKind, signal: Option<SignalKind>) -> EventFacets<'a> {
        EventFacets {
            kind,
            severity: if signal.is_some() {
                Severity::High
            } else {
                Severity::Info
            },
            signal,
            agent_id: if signal.is_some() { "a-1" } else { "" },
            hostname: if signal.is_some() { "gpu-1" } else { "" },
            rule_id: if signal.is_some() { "r.one" } else { "" },
        }
    }

    #[test]
    fn a_filter_passes_what_each_part_names() {
        let finding = facets(EventKind::Finding, Some(SignalKind::ModelFile));
        let policy = facets(EventKind::PolicyChange, None);
        assert!(SiemFilter::default().matches(&finding));
        assert!(SiemFilter::default().matches(&policy));
        let kinds = SiemFilter {
            kinds: vec![EventKind::PolicyChange],
            ..Default::default()
        };
        assert!(!kinds.matches(&finding) && kinds.matches(&policy));
        let high = SiemFilter {
            min_severity: Some(Severity::High),
            ..Default::default()
        };
        assert!(high.matches(&finding) && !high.matches(&policy));
        for host in ["a-1", "gpu-1"] {
            let hosts = SiemFilter {
                hosts: vec![host.into()],
                ..Default::default()
            };
            assert!(hosts.matches(&finding) && !hosts.matches(&policy), "{host}");
        }
        // An empty name never matches an event about no host.
        let empty = SiemFilter {
            hosts: vec![String::new()],
            ..Default::default()
        };
        assert!(!empty.matches(&policy));
        let rules = SiemFilter {
            rules: vec!["r.one".into()],
            ..Default::default()
        };
        assert!(rules.matches(&finding) && !rules.matches(&policy));
        let signals = SiemFilter {
            signals: vec![SignalKind::GpuUse],
            ..Default::default()
        };
        assert!(!signals.matches(&finding) && !signals.matches(&policy));
    }

    #[test]
    fn argv_is_capped_whole_arguments_first_with_a_marker() {
        let short = vec!["python".to_string(), "serve.py".to_string()];
        assert_eq!(capped_argv(short.clone(), 100), short);
        let argv = vec!["python".to_string(), "-c".to_string(), "x".repeat(100_000)];
        let joined = argv.join(" ").len();
        let capped = capped_argv(argv, 4096);
        assert!(capped.join(" ").len() <= 4096, "{}", capped.join(" ").len());
        assert_eq!(&capped[..2], &["python", "-c"]);
        let last = capped.last().unwrap();
        assert!(last.starts_with("…[truncated "), "{last}");
        let cut: usize = last
            .trim_start_matches("…[truncated ")
            .trim_end_matches(" bytes]")
            .parse()
            .unwrap();
        let kept = capped[..capped.len() - 1].join(" ").len();
        assert_eq!(kept + cut, joined);
        // Many tiny arguments are bounded too.
        let many = vec!["a".to_string(); 1_000_000];
        let capped = capped_argv(many, 4096);
        assert!(capped.join(" ").len() <= 4096);
    }

    #[test]
    fn a_capped_event_carries_no_field_past_its_cap() {
        let huge = "é".repeat(50_000);
        let alert = Alert {
            index: 1,
            agent_id: "a".into(),
            hostname: "h".into(),
            received_at_unix_nanos: 1,
            finding: crate::Finding {
                seq: 1,
                rule_id: "r".into(),
                severity: Severity::High,
                signal: SignalKind::ModelFile,
                observed_at_unix_nanos: 1,
                process: crate::ProcessInfo {
                    exe: huge.clone(),
                    argv: vec![huge.clone(), huge.clone()],
                    cgroup_path: huge.clone(),
                    ..Default::default()
                },
                file: Some(crate::FileObject::at(huge.clone())),
                net: None,
                gpu: None,
                action: String::new(),
                summary: huge.clone(),
            },
        };
        let event = SiemEvent {
            cursor: 1,
            kind: EventKind::Finding,
            record: EventRecord::Alert(alert),
        }
        .capped();
        let EventRecord::Alert(a) = &event.record else {
            unreachable!()
        };
        let p = &a.finding.process;
        assert!(p.argv.join(" ").len() <= MAX_EXPORTED_CMDLINE);
        assert!(p.exe.len() <= MAX_EXPORTED_PATH && p.exe.ends_with("bytes]"));
        assert!(p.cgroup_path.len() <= MAX_EXPORTED_PATH);
        assert!(a.finding.file.as_ref().unwrap().path.len() <= MAX_EXPORTED_PATH);
        assert!(a.finding.summary.len() <= MAX_EXPORTED_TEXT);
        let audit = SiemEvent {
            cursor: 2,
            kind: EventKind::Audit,
            record: EventRecord::Audit(AuditEntry {
                index: 1,
                at_unix_nanos: 0,
                actor: "a".into(),
                action: "x".into(),
                subject: huge.clone(),
                detail: huge,
                prev_hash: String::new(),
                hash: String::new(),
            }),
        }
        .capped();
        let EventRecord::Audit(e) = &audit.record else {
            unreachable!()
        };
        assert!(e.detail.len() <= MAX_EXPORTED_TEXT && e.subject.len() <= MAX_EXPORTED_TEXT);
    }
}
