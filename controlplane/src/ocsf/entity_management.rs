//! Audit entries (policy and approval changes, certificates, cluster
//! changes, unfreezes, the audit record of an enforcement, refusals) as
//! OCSF 1.1 Entity Management events (class 3004, Identity & Access
//! Management): who (actor) did what (activity, from the action's verb)
//! to which managed entity (the subject, typed by the action's family).

use serde::Serialize;
use vigil_domain::{AuditEntry, Severity, MAX_EXPORTED_TEXT};

use super::ocsf_objects::{
    actor, audit_chain, device, host_of_subject, metadata, millis, name, path, severity_caption,
    severity_id, type_uid, Actor, AuditChain, Capped, Device, Joined, Metadata, CATEGORY_IAM,
};

const CLASS_ENTITY_MANAGEMENT: u32 = 3004;

/// (activity_id, activity_name) of an audit action's verb.
fn activity(verb: &str) -> (u32, Capped<'_>) {
    match verb {
        "push" | "register" | "upload" | "enroll" | "create" | "approve" | "add_node" => {
            (1, name("Create"))
        }
        "rollback" | "renew" | "unfreeze" | "transfer_leader" | "attest" | "update" | "triage" => {
            (3, name("Update"))
        }
        "revoke" | "remove_node" | "prune" | "remove" => (4, name("Delete")),
        "" => (0, name("Unknown")),
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
        "user" => "dashboard user",
        "alert" => "alert triage",
        other => other,
    }
}

#[derive(Serialize)]
struct Entity<'a> {
    name: Capped<'a>,
    #[serde(rename = "type")]
    type_: Capped<'a>,
}

/// An audit entry as an Entity Management event, numbered by the cursor
/// it is exported at.
#[derive(Serialize)]
pub(super) struct EntityManagement<'a> {
    activity_id: u32,
    activity_name: Capped<'a>,
    actor: Actor<'a>,
    category_name: &'static str,
    category_uid: u32,
    class_name: &'static str,
    class_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Device<'a>>,
    entity: Entity<'a>,
    message: Joined<'a, 3>,
    metadata: Metadata,
    severity: &'static str,
    severity_id: u32,
    status: &'static str,
    status_id: u32,
    time: i64,
    type_uid: u64,
    unmapped: AuditChain<'a>,
}

impl<'a> EntityManagement<'a> {
    pub(super) fn new(cursor: u64, entry: &'a AuditEntry) -> EntityManagement<'a> {
        let (family, verb) = entry.action.split_once('.').unwrap_or((&entry.action, ""));
        let (activity_id, activity_name) = activity(verb);
        let refused = matches!(verb, "denied" | "refused");
        let message = if entry.detail.is_empty() {
            [&entry.action, "", ""]
        } else {
            [&entry.action, ": ", &entry.detail]
        };
        let (agent_id, host) = host_of_subject(&entry.subject);
        EntityManagement {
            activity_id,
            activity_name,
            actor: actor(&entry.actor),
            category_name: "Identity & Access Management",
            category_uid: CATEGORY_IAM,
            class_name: "Entity Management",
            class_uid: CLASS_ENTITY_MANAGEMENT,
            device: host.map(|host| device(host, agent_id.unwrap_or(""))),
            entity: Entity {
                name: path(&entry.subject),
                type_: path(entity_type(family)),
            },
            message: Joined::new(message, MAX_EXPORTED_TEXT),
            metadata: metadata(cursor, &["host"], millis(entry.at_unix_nanos)),
            severity: severity_caption(Severity::Info),
            severity_id: severity_id(Severity::Info),
            status: if refused { "Failure" } else { "Success" },
            status_id: if refused { 2 } else { 1 },
            time: millis(entry.at_unix_nanos),
            type_uid: type_uid(CLASS_ENTITY_MANAGEMENT, activity_id),
            unmapped: audit_chain(entry),
        }
    }
}
