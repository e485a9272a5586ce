//! TPM attestation audit entries (`attest.enroll|verdict|baseline|reset`)
//! as OCSF 1.1 Compliance Findings (class 2003): one finding per host,
//! created by its enrollment, updated by its verdicts and baseline, closed
//! by an operator's reset; a verdict says pass or fail.

use serde::Serialize;
use vigil_domain::{AuditEntry, Severity, MAX_EXPORTED_TEXT};

use super::ocsf_objects::{
    actor, audit_chain, device, host_of_subject, metadata, millis, severity_caption, severity_id,
    text, type_uid, Actor, AuditChain, Capped, Device, Joined, Metadata, CATEGORY_FINDINGS,
    MAX_EXPORTED_NAME, MAX_EXPORTED_TITLE,
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

#[derive(Serialize)]
struct Compliance<'a> {
    control: &'static str,
    standards: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_detail: Option<Capped<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_id: Option<u32>,
}

#[derive(Serialize)]
struct FindingInfo<'a> {
    title: Joined<'a, 2>,
    types: [&'static str; 1],
    /// The same for every attestation event of a host.
    uid: Joined<'a, 2>,
}

/// An `attest.*` audit entry as a Compliance Finding, numbered by the
/// cursor it is exported at.
#[derive(Serialize)]
pub(super) struct ComplianceFinding<'a> {
    activity_id: u32,
    activity_name: &'static str,
    actor: Actor<'a>,
    category_name: &'static str,
    category_uid: u32,
    class_name: &'static str,
    class_uid: u32,
    compliance: Compliance<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Device<'a>>,
    finding_info: FindingInfo<'a>,
    message: Joined<'a, 3>,
    metadata: Metadata,
    severity: &'static str,
    severity_id: u32,
    time: i64,
    type_uid: u64,
    unmapped: AuditChain<'a>,
}

impl<'a> ComplianceFinding<'a> {
    pub(super) fn new(cursor: u64, entry: &'a AuditEntry) -> ComplianceFinding<'a> {
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
        let status = (verb == "verdict").then(|| verdict_status(&entry.detail));
        ComplianceFinding {
            activity_id,
            activity_name,
            actor: actor(&entry.actor),
            category_name: "Findings",
            category_uid: CATEGORY_FINDINGS,
            class_name: "Compliance Finding",
            class_uid: CLASS_COMPLIANCE_FINDING,
            compliance: Compliance {
                control,
                standards: [STANDARD],
                status: status.map(|(_, s)| s),
                status_detail: status.map(|_| text(&entry.detail)),
                status_id: status.map(|(id, _)| id),
            },
            device: match (agent_id, host) {
                (Some(agent_id), Some(host)) => Some(device(host, agent_id)),
                _ => None,
            },
            finding_info: FindingInfo {
                title: Joined::new(["TPM attestation of ", &entry.subject], MAX_EXPORTED_TITLE),
                types: ["attestation"],
                uid: Joined::new(
                    ["attestation:", agent_id.unwrap_or(&entry.subject)],
                    MAX_EXPORTED_NAME,
                ),
            },
            message: Joined::new([&entry.action, ": ", &entry.detail], MAX_EXPORTED_TEXT),
            metadata: metadata(cursor, &["host"], millis(entry.at_unix_nanos)),
            // Audit entries are informational (`SiemEvent::severity`); an
            // untrusted verdict also raises an alert of its own severity.
            severity: severity_caption(Severity::Info),
            severity_id: severity_id(Severity::Info),
            time: millis(entry.at_unix_nanos),
            type_uid: type_uid(CLASS_COMPLIANCE_FINDING, activity_id),
            unmapped: audit_chain(entry),
        }
    }
}
