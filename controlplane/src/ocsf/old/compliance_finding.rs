//! TPM attestation audit entries (`attest.enroll|verdict|baseline|reset`)
//! as OCSF 1.1 Compliance Findings (class 2003): one finding per host,
//! created by its enrollment, updated by its verdicts and baseline, closed
//! by an operator's reset; a verdict says pass or fail.

use serde_json::{json, Value};
use vigil_domain::{AuditEntry, Severity};

use super::ocsf_objects::{
    actor, audit_chain, classification, device, host_of_subject, merge, metadata, millis, name,
    severity_caption, severity_id, text, title, CATEGORY_FINDINGS,
};

const CLASS_COMPLIANCE_FINDING: u32 = 2003;
/// What the host is checked against.
const STANDARD: &str = "vigil TPM attestation";

/// The compliance status a verdict's text (`TrustState`'s Display:
/// "trusted", "unattested", "untrusted (code): reason") says:
/// (status_id, status).
fn verdict_status(detail: &str) -> (u32, &'static str) {
    if detail == "trusted" {
        (1, "Pass")
    } else if detail.starts_with("untrusted") {
        (3, "Fail")
    } else {
        // Unattested: no TPM verified, neither a pass nor a failure.
        (0, "Unknown")
    }
}

/// An `attest.*` audit entry as a Compliance Finding, numbered by `cursor`.
pub fn compliance_finding(cursor: u64, entry: &AuditEntry) -> Value {
    let verb = entry.action.split_once('.').map_or("", |(_, v)| v);
    // (activity_id, activity_name, control).
    let (activity_id, activity_name, control) = match verb {
        "enroll" => (1, "Create", "TPM enrollment (EK and AK bound to the host)"),
        "verdict" => (2, "Update", "TPM quote verification and PCR policy"),
        "baseline" => (2, "Update", "golden PCR baseline"),
        "reset" => (3, "Close", "attestation reset by an operator"),
        _ => (0, "Unknown", "TPM attestation"),
    };
    let (agent_id, host) = host_of_subject(&entry.subject);
    let mut compliance = json!({
        "standards": [STANDARD],
        "control": control,
    });
    if verb == "verdict" {
        let (status_id, status) = verdict_status(&entry.detail);
        compliance["status_id"] = json!(status_id);
        compliance["status"] = json!(status);
        compliance["status_detail"] = json!(text(&entry.detail));
    }
    let mut v = classification(
        CATEGORY_FINDINGS,
        "Findings",
        CLASS_COMPLIANCE_FINDING,
        "Compliance Finding",
        activity_id,
        activity_name,
    );
    merge(
        &mut v,
        json!({
            // Audit entries are informational (`SiemEvent::severity`); an
            // untrusted verdict also raises an alert of its own severity.
            "severity_id": severity_id(Severity::Info),
            "severity": severity_caption(Severity::Info),
            "time": millis(entry.at_unix_nanos),
            "message": text(&format!("{}: {}", entry.action, entry.detail)),
            "finding_info": {
                // The same for every attestation event of a host.
                "uid": name(&format!("attestation:{}", agent_id.unwrap_or(&entry.subject))),
                "title": title(&format!("TPM attestation of {}", entry.subject)),
                "types": ["attestation"],
            },
            "compliance": compliance,
            "actor": actor(&entry.actor),
            "metadata": metadata(cursor, &["host"], millis(entry.at_unix_nanos)),
            "unmapped": audit_chain(entry),
        }),
    );
    if let (Some(agent_id), Some(host)) = (agent_id, host) {
        v["device"] = device(host, agent_id);
    }
    v
}
