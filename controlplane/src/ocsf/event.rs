//! One exported event as OCSF: the class its kind and record call for.

use serde::Serialize;
use vigil_domain::{EventKind, EventRecord, SiemEvent};

use super::compliance_finding::ComplianceFinding;
use super::detection_finding::DetectionFinding;
use super::entity_management::EntityManagement;

/// Room for a typical event's JSON (a finding like the SIEM benchmark's
/// is about 1.8 KiB, one with a model identity more): most are written
/// without growing the buffer.
const TYPICAL_EVENT_BYTES: usize = 2048;

/// The event as OCSF 1.1 JSON, numbered by its cursor (`metadata.uid` and
/// `metadata.sequence`): a Detection Finding (2004) for a finding or an
/// enforcement outcome, a Compliance Finding (2003) for an attestation
/// entry, an Entity Management event (3004) for every other audit entry.
/// The record decides where the kind disagrees with it.
pub fn ocsf_json(event: &SiemEvent) -> String {
    let mut out = Vec::with_capacity(TYPICAL_EVENT_BYTES);
    write_ocsf(event, &mut out);
    // serde_json writes UTF-8 only.
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Appends the event's OCSF JSON (`ocsf_json`) to `out`.
pub fn write_ocsf(event: &SiemEvent, out: &mut Vec<u8>) {
    match &event.record {
        EventRecord::Alert(alert) => write(out, &DetectionFinding::new(event.cursor, alert)),
        EventRecord::Audit(entry) => match EventKind::of_audit(entry) {
            EventKind::Attestation => write(out, &ComplianceFinding::new(event.cursor, entry)),
            _ => write(out, &EntityManagement::new(event.cursor, entry)),
        },
    }
}

fn write(out: &mut Vec<u8>, v: &impl Serialize) {
    // Writing to a Vec cannot fail, nor can serialising these structs (no
    // maps with non-string keys, no failing Serialize impls).
    serde_json::to_writer(out, v).expect("an OCSF event serialises");
}

/// The event's OCSF as a `Value`, for tests that look into it.
#[cfg(test)]
pub fn ocsf_event(event: &SiemEvent) -> serde_json::Value {
    serde_json::from_str(&ocsf_json(event)).expect("valid JSON")
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use vigil_domain::{Alert, AuditEntry, Finding, ProcessInfo, Severity, SignalKind};

    use super::*;

    fn audit(action: &str, subject: &str, detail: &str) -> SiemEvent {
        let entry = AuditEntry {
            index: 9,
            at_unix_nanos: 5_000_000,
            actor: "admin-key-1".into(),
            action: action.into(),
            subject: subject.into(),
            detail: detail.into(),
            prev_hash: "0".repeat(64),
            hash: "1".repeat(64),
        };
        SiemEvent {
            cursor: 41,
            kind: EventKind::of_audit(&entry),
            record: EventRecord::Audit(entry),
        }
    }

    fn enforcement(action: &str, outcome: &str) -> SiemEvent {
        let alert = Alert {
            index: 3,
            agent_id: "a1".into(),
            hostname: "h1".into(),
            received_at_unix_nanos: 0,
            finding: Finding {
                seq: 2,
                rule_id: "r".into(),
                severity: Severity::High,
                signal: SignalKind::AiRuntime,
                observed_at_unix_nanos: 0,
                process: ProcessInfo {
                    pid: 77,
                    ..Default::default()
                },
                file: None,
                net: None,
                gpu: None,
                action: action.into(),
                summary: format!(
                    "action {action} for rule r on pid 77: {outcome} (1.0 ms after the event)"
                ),
            },
        };
        SiemEvent {
            cursor: 12,
            kind: EventKind::of_alert(&alert),
            record: EventRecord::Alert(alert),
        }
    }

    #[test]
    fn the_cursor_numbers_every_event() {
        let v = ocsf_event(&enforcement("kill", "killed 1 process"));
        assert_eq!(v["metadata"]["uid"], "12");
        assert_eq!(v["metadata"]["sequence"], 12);
        assert_eq!(v["unmapped"]["alert_index"], 3);
        let v = ocsf_event(&audit("policy.push", "policy v3", "3 rules"));
        assert_eq!(v["metadata"]["sequence"], 41);
        assert_eq!(v["metadata"]["version"], "1.1.0");
    }

    #[test]
    fn enforcements_say_what_the_control_did() {
        let v = ocsf_event(&enforcement("kill", "killed 1 process"));
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(
            v["metadata"]["profiles"],
            json!(["host", "security_control"])
        );
        assert_eq!(v["action_id"], 2);
        assert_eq!(v["disposition"], "Blocked");
        let v = ocsf_event(&enforcement("freeze", "froze 2 processes"));
        assert_eq!(v["disposition"], "Quarantined");
        let v = ocsf_event(&enforcement("kill", "dry run: would kill 1 process"));
        assert_eq!(v["action_id"], 1);
        assert_eq!(v["disposition"], "Detected");
        assert_eq!(v["unmapped"]["enforcement"]["outcome"], "dry_run");
        let v = ocsf_event(&enforcement("deny_gpu", "FAILED: no cgroup"));
        assert_eq!(v["disposition"], "Error");
        assert_eq!(v["action_id"], 0);
        let v = ocsf_event(&enforcement("block_egress", "REFUSED: pid 1 is init"));
        assert_eq!(v["action"], "Allowed");
        assert_eq!(v["disposition"], "No Action");
        // An action it does not know is not said to have denied anything.
        let v = ocsf_event(&enforcement("teleport", "teleported 1 process"));
        assert_eq!(v["action_id"], 0);
        assert_eq!(v["disposition_id"], 99);
    }

    #[test]
    fn an_alert_the_verifier_raised_is_about_the_host() {
        let alert = Alert {
            index: 31,
            agent_id: "a1".into(),
            hostname: "h1".into(),
            received_at_unix_nanos: 9_000_000,
            finding: Finding {
                seq: 0,
                rule_id: "vigil.attestation.pcr-policy".into(),
                severity: Severity::Critical,
                signal: SignalKind::Attestation,
                observed_at_unix_nanos: 9_000_000,
                process: ProcessInfo::default(),
                file: None,
                net: None,
                gpu: None,
                action: String::new(),
                summary: "host h1 (agent a1) failed attestation (pcr-policy): PCR 7".into(),
            },
        };
        let v = ocsf_event(&SiemEvent {
            cursor: 50,
            kind: EventKind::Finding,
            record: EventRecord::Alert(alert),
        });
        assert_eq!(v["class_uid"], 2004);
        assert!(v.get("evidences").is_none(), "no process to show");
        assert_eq!(v["finding_info"]["uid"], "vigil-alert:31");
        assert_eq!(v["device"]["uid"], "a1");
        assert_eq!(v["metadata"]["logged_time"], 9);
    }

    #[test]
    fn attestation_entries_are_compliance_findings() {
        let pass = ocsf_event(&audit("attest.verdict", "agent a1 on h1", "trusted"));
        assert_eq!(pass["class_uid"], 2003);
        assert_eq!(pass["type_uid"], 200302);
        assert_eq!(pass["compliance"]["status"], "Pass");
        assert_eq!(pass["device"]["hostname"], "h1");
        assert_eq!(pass["device"]["uid"], "a1");
        let fail = ocsf_event(&audit(
            "attest.verdict",
            "agent a1 on h1",
            "untrusted (pcr-policy): PCR 7 differs",
        ));
        assert_eq!(fail["compliance"]["status_id"], 3);
        assert_eq!(fail["finding_info"]["uid"], "attestation:a1");
        let reset = ocsf_event(&audit("attest.reset", "agent a1 on h1", "was trusted"));
        assert_eq!(reset["activity_id"], 3);
        assert!(reset["compliance"].get("status_id").is_none());
    }

    #[test]
    fn other_audit_entries_are_entity_management() {
        let v = ocsf_event(&audit("workload.revoke", "w-7", "no longer needed"));
        assert_eq!(v["class_uid"], 3004);
        assert_eq!(v["category_uid"], 3);
        assert_eq!(v["type_uid"], 300404);
        assert_eq!(v["actor"]["user"]["name"], "admin-key-1");
        assert_eq!(v["entity"]["name"], "w-7");
        assert_eq!(v["entity"]["type"], "workload approval");
        assert_eq!(v["unmapped"]["audit_index"], 9);
        assert_eq!(v["unmapped"]["audit_prev_hash"], "0".repeat(64));
        // Dashboard users and alert triage are updates and deletes of
        // their entities, not activities of their own.
        for (action, id, kind) in [
            ("user.create", 1, "dashboard user"),
            ("user.update", 3, "dashboard user"),
            ("user.remove", 4, "dashboard user"),
            ("alert.triage", 3, "alert triage"),
        ] {
            let v = ocsf_event(&audit(action, "x", "y"));
            assert_eq!(v["activity_id"], id, "{action}");
            assert_eq!(v["entity"]["type"], kind, "{action}");
        }
        let v = ocsf_event(&audit("enforce.kill", "pid 7 on h2", "action kill ..."));
        assert_eq!(v["activity_id"], 99);
        assert_eq!(v["activity_name"], "kill");
        assert_eq!(v["device"]["hostname"], "h2");
        let v = ocsf_event(&audit("request.denied", "AdminService/PushPolicy", "role"));
        assert_eq!(v["status_id"], 2);
    }
}
