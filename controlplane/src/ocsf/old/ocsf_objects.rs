//! OCSF 1.1 objects the classes share (metadata, device, process, file,
//! endpoints, actor), and the caps every exported string keeps to.

use std::net::IpAddr;

use serde_json::{json, Value};
use vigil_domain::{
    truncate_marked, AuditEntry, ProcessInfo, Severity, MAX_EXPORTED_CMDLINE, MAX_EXPORTED_PATH,
    MAX_EXPORTED_TEXT,
};

pub const OCSF_VERSION: &str = "1.1.0";

/// The longest identifier (agent id, rule id, user, process or GPU name)
/// an exported event carries, in bytes. A host name OCSF accepts (at most
/// 253 bytes) is never cut.
pub(super) const MAX_EXPORTED_NAME: usize = 128;
/// The longest file name: Linux's NAME_MAX.
const MAX_FILE_NAME: usize = 255;
/// The longest title (`finding_info.title`): the summary's start; the
/// whole summary is the event's `message`.
pub(super) const MAX_EXPORTED_TITLE: usize = 256;

/// OCSF category and class ids (`class_uid` = category * 1000 + class).
pub(super) const CATEGORY_FINDINGS: u32 = 2;
pub(super) const CATEGORY_IAM: u32 = 3;

/// Free text (a summary, an audit detail) within its cap.
pub(super) fn text(s: &str) -> String {
    truncate_marked(s, MAX_EXPORTED_TEXT).into_owned()
}

/// A path (executable, file, cgroup) within its cap.
pub(super) fn path(s: &str) -> String {
    truncate_marked(s, MAX_EXPORTED_PATH).into_owned()
}

/// An identifier within its cap.
pub(super) fn name(s: &str) -> String {
    truncate_marked(s, MAX_EXPORTED_NAME).into_owned()
}

/// A title within its cap.
pub(super) fn title(s: &str) -> String {
    truncate_marked(s, MAX_EXPORTED_TITLE).into_owned()
}

/// OCSF times are milliseconds since the Unix epoch.
pub(super) fn millis(unix_nanos: i64) -> i64 {
    unix_nanos.div_euclid(1_000_000)
}

pub(super) fn severity_id(s: Severity) -> u32 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

/// The caption OCSF gives `severity_id`.
pub(super) fn severity_caption(s: Severity) -> &'static str {
    match s {
        Severity::Info => "Informational",
        Severity::Low => "Low",
        Severity::Medium => "Medium",
        Severity::High => "High",
        Severity::Critical => "Critical",
    }
}

/// The base event's classification: class, category, activity, type.
pub(super) fn classification(
    category_uid: u32,
    category_name: &str,
    class_uid: u32,
    class_name: &str,
    activity_id: u32,
    activity_name: &str,
) -> Value {
    json!({
        "category_uid": category_uid,
        "category_name": category_name,
        "class_uid": class_uid,
        "class_name": class_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid as u64 * 100 + activity_id as u64,
    })
}

/// Copies every key of `from` (an object) into `into` (an object).
pub(super) fn merge(into: &mut Value, from: Value) {
    if let (Some(into), Value::Object(from)) = (into.as_object_mut(), from) {
        into.extend(from);
    }
}

/// `metadata`: the event's cursor is both its sequence and its uid;
/// `logged_time` when the control plane committed it (ms).
pub(super) fn metadata(cursor: u64, profiles: &[&str], logged_time: i64) -> Value {
    json!({
        "version": OCSF_VERSION,
        "logged_time": logged_time,
        "uid": cursor.to_string(),
        "sequence": cursor,
        "product": {
            "name": "vigil",
            "vendor_name": "vigil",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "profiles": profiles,
    })
}

/// Whether `s` is a host name OCSF's `hostname_t` accepts (RFC 1123
/// labels joined by dots).
pub(super) fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// `device`: the host, by its agent id (when known) and host name. A name that is not
/// a valid `hostname_t` travels as the device's `name` only.
pub(super) fn device(hostname: &str, agent_id: &str) -> Value {
    let mut d = json!({
        "name": name(hostname),
        "type_id": 0,
        "type": "Unknown",
    });
    if !agent_id.is_empty() {
        d["uid"] = json!(name(agent_id));
    }
    if is_hostname(hostname) {
        d["hostname"] = json!(hostname);
    }
    d
}

/// A SHA-256 `fingerprint`.
pub(super) fn sha256(hex: &str) -> Value {
    json!({ "algorithm_id": 3, "algorithm": "SHA-256", "value": hex })
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `file`: a regular file at `path`, with its SHA-256 when known (a
/// `file_hash_t` is at most 64 characters: anything else is dropped).
pub(super) fn file(p: &str, sha: &str) -> Value {
    let mut f = json!({
        "path": path(p),
        "name": truncate_marked(file_name(p), MAX_FILE_NAME),
        "type_id": 1,
        "type": "Regular File",
    });
    if !sha.is_empty() && vigil_domain::is_sha256_hex(sha) {
        f["hashes"] = json!([sha256(sha)]);
    }
    f
}

/// `process`: the process a finding is about, its command line cut once.
pub(super) fn process(p: &ProcessInfo) -> Value {
    let mut v = json!({
        "pid": p.pid,
        "name": name(p.name()),
        "cmd_line": truncate_marked(&p.cmdline(), MAX_EXPORTED_CMDLINE),
        "user": { "uid": p.uid.to_string() },
        "parent_process": { "pid": p.ppid },
    });
    if !p.exe.is_empty() {
        v["file"] = file(&p.exe, &p.exe_sha256);
    }
    v
}

/// A `network_endpoint` at `address:port`: `ip` when the address is one,
/// else its `name`.
pub(super) fn endpoint(address: &str, port: u16) -> Value {
    match address.trim().parse::<IpAddr>() {
        Ok(ip) => json!({ "ip": ip.to_string(), "port": port }),
        Err(_) => json!({ "name": name(address), "port": port }),
    }
}

/// `actor`: who did it, by name.
pub(super) fn actor(user: &str) -> Value {
    json!({ "user": { "name": name(user) } })
}

/// The agent id and host name an audit subject names: attestation
/// entries say "agent ID on HOST", enforcements "pid N on HOST".
pub(super) fn host_of_subject(subject: &str) -> (Option<&str>, Option<&str>) {
    let Some((what, host)) = subject.split_once(" on ") else {
        return (None, None);
    };
    let host = Some(host).filter(|h| !h.is_empty());
    match what.strip_prefix("agent ") {
        Some(agent) if !agent.is_empty() => (Some(agent), host),
        _ => (None, host),
    }
}

/// The audit entry's place in the tamper-evident chain (index, hash,
/// previous hash: a SIEM can check that each entry names the one before
/// it) and its action as the control plane spells it.
pub(super) fn audit_chain(entry: &AuditEntry) -> Value {
    json!({
        "audit_index": entry.index,
        "audit_action": name(&entry.action),
        "audit_hash": name(&entry.hash),
        "audit_prev_hash": name(&entry.prev_hash),
    })
}
