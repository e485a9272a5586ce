//! OCSF 1.1 objects the classes share (metadata, device, process, file,
//! endpoints, actor), and the caps every exported string keeps to.
//!
//! Every object is a struct that borrows from the record it renders and
//! is serialised straight to JSON (no `serde_json::Value` in between).
//! Fields are declared in the order of their keys (byte order), so an
//! event's JSON has its keys sorted at every level. A string is cut to its
//! cap when it is written, copied only when it is over it.

use std::fmt::{self, Display};
use std::net::IpAddr;

use serde::{Serialize, Serializer};
use std::borrow::Cow;

use vigil_domain::{
    truncation_marker, AuditEntry, ProcessInfo, Severity, MAX_EXPORTED_CMDLINE, MAX_EXPORTED_PATH,
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
/// The most bytes `process.lineage` carries (escaped, quotes and commas
/// counted): the nearest ancestors' paths that fit, a first one cut to it.
pub(super) const MAX_EXPORTED_LINEAGE: usize = 512;

/// OCSF category and class ids (`class_uid` = category * 1000 + class).
pub(super) const CATEGORY_FINDINGS: u32 = 2;
pub(super) const CATEGORY_IAM: u32 = 3;

/// The bytes `b` takes in a JSON string as serde_json writes it: quote
/// and backslash escaped, control characters as `\n` or `\u00XX`.
fn json_len(b: u8) -> usize {
    match b {
        b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 2,
        0..=0x1f => 6,
        _ => 1,
    }
}

/// The bytes `s` takes inside a JSON string.
fn escaped_len(s: &str) -> usize {
    s.bytes().map(json_len).sum()
}

/// `s` within `max` bytes of JSON string (escapes counted, so text full of
/// control characters a host chose cannot grow an event sixfold): itself
/// when it fits, else its start and the marker naming how many bytes of
/// the text were cut (`…[truncated N bytes]`, which needs no escape).
pub(super) fn cut_for_json(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max && escaped_len(s) <= max {
        return Cow::Borrowed(s);
    }
    let budget = max.saturating_sub(truncation_marker(s.len()).len());
    let (mut used, mut end) = (0, 0);
    for (i, b) in s.bytes().enumerate() {
        used += json_len(b);
        if used > budget {
            break;
        }
        end = i + 1;
    }
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 32);
    out.push_str(&s[..end]);
    out.push_str(&truncation_marker(s.len() - end));
    Cow::Owned(out)
}

/// A string within `max` bytes of JSON: itself when it fits, else its
/// start and a marker naming how much was cut ([`cut_for_json`]).
#[derive(Clone, Copy)]
pub(super) struct Capped<'a> {
    s: &'a str,
    max: usize,
}

impl<'a> Capped<'a> {
    pub(super) fn new(s: &'a str, max: usize) -> Self {
        Capped { s, max }
    }
}

impl Serialize for Capped<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&cut_for_json(self.s, self.max))
    }
}

/// Free text (a summary, an audit detail) within its cap.
pub(super) fn text(s: &str) -> Capped<'_> {
    Capped {
        s,
        max: MAX_EXPORTED_TEXT,
    }
}

/// A path (executable, file, cgroup) within its cap.
pub(super) fn path(s: &str) -> Capped<'_> {
    Capped {
        s,
        max: MAX_EXPORTED_PATH,
    }
}

/// An identifier within its cap.
pub(super) fn name(s: &str) -> Capped<'_> {
    Capped {
        s,
        max: MAX_EXPORTED_NAME,
    }
}

/// A title within its cap.
pub(super) fn title(s: &str) -> Capped<'_> {
    Capped {
        s,
        max: MAX_EXPORTED_TITLE,
    }
}

/// The parts written one after another as one string within `max` bytes:
/// streamed from the parts when they fit, else joined and cut like
/// [`Capped`].
pub(super) struct Joined<'a, const N: usize> {
    parts: [&'a str; N],
    max: usize,
}

impl<'a, const N: usize> Joined<'a, N> {
    pub(super) fn new(parts: [&'a str; N], max: usize) -> Self {
        Joined { parts, max }
    }
}

impl<const N: usize> Display for Joined<'_, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts.iter().try_for_each(|p| f.write_str(p))
    }
}

impl<const N: usize> Serialize for Joined<'_, N> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let len: usize = self.parts.iter().map(|p| escaped_len(p)).sum();
        if len <= self.max {
            ser.collect_str(self)
        } else {
            ser.serialize_str(&cut_for_json(&self.parts.concat(), self.max))
        }
    }
}

/// A value written as a JSON string of its `Display` (`"42"`).
pub(super) struct AsString<T>(pub(super) T);

impl<T: Display> Serialize for AsString<T> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(&self.0)
    }
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

/// `type_uid`: the class and the activity in one number.
pub(super) fn type_uid(class_uid: u32, activity_id: u32) -> u64 {
    class_uid as u64 * 100 + activity_id as u64
}

/// `metadata.product`.
#[derive(Serialize)]
pub(super) struct Product {
    name: &'static str,
    vendor_name: &'static str,
    version: &'static str,
}

/// `metadata`: the event's cursor is both its sequence and its uid;
/// `logged_time` when the control plane committed it (ms).
#[derive(Serialize)]
pub(super) struct Metadata {
    logged_time: i64,
    product: Product,
    profiles: &'static [&'static str],
    sequence: u64,
    uid: AsString<u64>,
    version: &'static str,
}

pub(super) fn metadata(
    cursor: u64,
    profiles: &'static [&'static str],
    logged_time: i64,
) -> Metadata {
    Metadata {
        logged_time,
        product: Product {
            name: "vigil",
            vendor_name: "vigil",
            version: env!("CARGO_PKG_VERSION"),
        },
        profiles,
        sequence: cursor,
        uid: AsString(cursor),
        version: OCSF_VERSION,
    }
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

/// `device`: the host, by its agent id (when known) and host name.
#[derive(Serialize)]
pub(super) struct Device<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hostname: Option<&'a str>,
    name: Capped<'a>,
    #[serde(rename = "type")]
    type_: &'static str,
    type_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<Capped<'a>>,
}

/// The device of `hostname` and `agent_id` (none when empty). A name that
/// is not a valid `hostname_t` travels as the device's `name` only.
pub(super) fn device<'a>(hostname: &'a str, agent_id: &'a str) -> Device<'a> {
    Device {
        hostname: Some(hostname).filter(|h| is_hostname(h)),
        name: name(hostname),
        type_: "Unknown",
        type_id: 0,
        uid: Some(agent_id).filter(|a| !a.is_empty()).map(name),
    }
}

/// A SHA-256 `fingerprint`.
#[derive(Serialize)]
pub(super) struct Fingerprint<'a> {
    algorithm: &'static str,
    algorithm_id: u32,
    value: &'a str,
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `file`: a regular file.
#[derive(Serialize)]
pub(super) struct File<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    hashes: Option<[Fingerprint<'a>; 1]>,
    name: Capped<'a>,
    path: Capped<'a>,
    #[serde(rename = "type")]
    type_: &'static str,
    type_id: u32,
}

/// The regular file at `p`, with its SHA-256 when known (a `file_hash_t`
/// is at most 64 characters: anything else is dropped).
pub(super) fn file<'a>(p: &'a str, sha: &'a str) -> File<'a> {
    File {
        hashes: vigil_domain::is_sha256_hex(sha).then_some([Fingerprint {
            algorithm: "SHA-256",
            algorithm_id: 3,
            value: sha,
        }]),
        name: Capped {
            s: file_name(p),
            max: MAX_FILE_NAME,
        },
        path: path(p),
        type_: "Regular File",
        type_id: 1,
    }
}

/// A command line (the arguments joined by spaces, the way `ps` shows
/// it), cut once within its cap.
pub(super) struct CmdLine<'a>(&'a [String]);

impl Display for CmdLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, arg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(arg)?;
        }
        Ok(())
    }
}

impl Serialize for CmdLine<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let len = self.0.iter().map(|a| escaped_len(a) + 1).sum::<usize>();
        if len.saturating_sub(1) <= MAX_EXPORTED_CMDLINE {
            ser.collect_str(self)
        } else {
            ser.serialize_str(&cut_for_json(&self.0.join(" "), MAX_EXPORTED_CMDLINE))
        }
    }
}

#[derive(Serialize)]
pub(super) struct Uid {
    uid: AsString<u32>,
}

/// `process.parent_process`: its pid, and its name when the finding's
/// first ancestor (what the agent knew of it) is the parent.
#[derive(Serialize)]
pub(super) struct Parent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Capped<'a>>,
    pid: u32,
}

/// `process`: the process a finding is about.
#[derive(Serialize)]
pub(super) struct Process<'a> {
    cmd_line: CmdLine<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<File<'a>>,
    /// The ancestors' executable paths (the task name where the path is
    /// unknown), nearest first, within [`MAX_EXPORTED_LINEAGE`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lineage: Vec<Capped<'a>>,
    name: Capped<'a>,
    parent_process: Parent<'a>,
    pid: u32,
    user: Uid,
}

/// The nearest ancestors' paths that fit [`MAX_EXPORTED_LINEAGE`]; a
/// first one that does not is cut to it.
fn lineage(ancestors: &[vigil_domain::Ancestor]) -> Vec<Capped<'_>> {
    let mut left = MAX_EXPORTED_LINEAGE;
    let mut out = Vec::new();
    for a in ancestors.iter().take(vigil_domain::MAX_ANCESTORS) {
        let p = if a.exe.is_empty() { &a.comm } else { &a.exe };
        // Two quotes and a comma.
        let len = escaped_len(p) + 3;
        if len <= left {
            out.push(Capped::new(p, len - 3));
            left -= len;
        } else {
            if out.is_empty() {
                out.push(Capped::new(p, left - 3));
            }
            break;
        }
    }
    out
}

pub(super) fn process(p: &ProcessInfo) -> Process<'_> {
    let parent = p.ancestors.first().filter(|a| a.pid == p.ppid);
    Process {
        cmd_line: CmdLine(&p.argv),
        file: (!p.exe.is_empty()).then(|| file(&p.exe, &p.exe_sha256)),
        lineage: lineage(&p.ancestors),
        name: name(p.name()),
        parent_process: Parent {
            name: parent.map(|a| name(a.name())),
            pid: p.ppid,
        },
        pid: p.pid,
        user: Uid {
            uid: AsString(p.uid),
        },
    }
}

/// A `network_endpoint`: `ip` when its address is one, else `name`.
#[derive(Serialize)]
pub(super) struct Endpoint<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ip: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Capped<'a>>,
    port: u16,
}

/// The endpoint at `address:port`.
pub(super) fn endpoint(address: &str, port: u16) -> Endpoint<'_> {
    match address.trim().parse::<IpAddr>() {
        Ok(ip) => Endpoint {
            ip: Some(ip),
            name: None,
            port,
        },
        Err(_) => Endpoint {
            ip: None,
            name: Some(name(address)),
            port,
        },
    }
}

#[derive(Serialize)]
pub(super) struct User<'a> {
    name: Capped<'a>,
}

/// `actor`: who did it, by name.
#[derive(Serialize)]
pub(super) struct Actor<'a> {
    user: User<'a>,
}

pub(super) fn actor(user: &str) -> Actor<'_> {
    Actor {
        user: User { name: name(user) },
    }
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
#[derive(Serialize)]
pub(super) struct AuditChain<'a> {
    audit_action: Capped<'a>,
    audit_hash: Capped<'a>,
    audit_index: u64,
    audit_prev_hash: Capped<'a>,
}

pub(super) fn audit_chain(entry: &AuditEntry) -> AuditChain<'_> {
    AuditChain {
        audit_action: name(&entry.action),
        audit_hash: name(&entry.hash),
        audit_index: entry.index,
        audit_prev_hash: name(&entry.prev_hash),
    }
}
