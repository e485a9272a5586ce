//! Audit entries (policy and approval changes, certificates, cluster
//! changes, unfreezes, the audit record of an enforcement, refusals) as
//! OCSF 1.1 Entity Management events (class 3004, Identity & Access
//! Management): who (actor) did what (activity, from the action's verb)
//! to which managed entity (the subject, typed by the action's family).

use serde_json::{json, Value};
use vigil_domain::{AuditEntry, Severity};

use super::ocsf_objects::{
    actor, audit_chain, classification, device, host_of_subject, merge, metadata, millis, name,
    path, severity_caption, severity_id, text, CATEGORY_IAM,
};

const CLASS_ENTITY_MANAGEMENT: u32 = 3004;

/// (activity_id, activity_name) of an audit action's verb.
fn activity(verb: &str) -> (u32, String) {
    match verb {
        "push" | "register" | "upload" | "enroll" | "create" | "approve" | "add_node" => {
            (1, "Create".into())
        }
        "rollback" | "renew" | "unfreeze" | "transfer_leader" | "attest" => (3, "Update".into()),
        "revoke" | "remove_node" | "prune" => (4, "Delete".into()),
        "" => (0, "Unknown".into()),
        // An enforcement (kill, freeze, ...), a refusal, a summary: no
        // create/read/update/delete; the verb names it.
        other => (99, name(other)),
    }
}

/// The type of entity an audit action's family acts on.
fn entity_type(family: &str) -> &str {
    match family {
        "policy" => "policy bundle",
        "workload" => "workload approval",
        "model" => "model",
        "certificate" => "certificate",
        "agent" => "agent",
        "cluster" => "cluster member",
        "join_token" => "join token",
        "alerts" => "alert log",
        "enforce" => "process",
        "attest" => "attestation",
        other => other,
    }
}

/// An audit entry as an Entity Management event, numbered by `cursor`.
pub fn entity_management(cursor: u64, entry: &AuditEntry) -> Value {
    let (family, verb) = entry.action.split_once('.').unwrap_or((&entry.action, ""));
    let (activity_id, activity_name) = activity(verb);
    let refused = matches!(verb, "denied" | "refused");
    let message = if entry.detail.is_empty() {
        entry.action.clone()
    } else {
        format!("{}: {}", entry.action, entry.detail)
    };
    let mut v = classification(
        CATEGORY_IAM,
        "Identity & Access Management",
        CLASS_ENTITY_MANAGEMENT,
        "Entity Management",
        activity_id,
        &activity_name,
    );
    merge(
        &mut v,
        json!({
            "severity_id": severity_id(Severity::Info),
            "severity": severity_caption(Severity::Info),
            "status_id": if refused { 2 } else { 1 },
            "status": if refused { "Failure" } else { "Success" },
            "time": millis(entry.at_unix_nanos),
            "message": text(&message),
            "actor": actor(&entry.actor),
            "entity": {
                "name": path(&entry.subject),
                "type": path(entity_type(family)),
            },
            "metadata": metadata(cursor, &["host"], millis(entry.at_unix_nanos)),
            "unmapped": audit_chain(entry),
        }),
    );
    if let (agent_id, Some(host)) = host_of_subject(&entry.subject) {
        v["device"] = device(host, agent_id.unwrap_or(""));
    }
    v
}
