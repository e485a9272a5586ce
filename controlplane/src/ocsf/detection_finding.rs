//! Alerts as OCSF 1.1 Detection Findings (class 2004): an agent's finding,
//! and the outcome of an enforcement with the `security_control` profile
//! (what the control did, and how it came out).

use serde::{Serialize, Serializer};
use vigil_domain::{is_sha256_hex, Alert, GpuContext, ModelIdentity, ModelRisk, NetDirection};

use super::ocsf_objects::{
    device, endpoint, file, is_hostname, metadata, millis, name, path, process, severity_caption,
    severity_id, text, title, type_uid, Capped, Device, Endpoint, File, Metadata, Process,
    CATEGORY_FINDINGS, MAX_EXPORTED_NAME,
};

const CLASS_DETECTION_FINDING: u32 = 2004;
const ACTIVITY_CREATE: u32 = 1;
/// The longest model text, risk reason or import exported, in bytes; at
/// most `MAX_MODEL_LIST` reasons and imports.
const MAX_MODEL_ITEM: usize = 128;
const MAX_MODEL_LIST: usize = 4;

/// How an enforcement came out, as the agent's summary says it
/// (`action kill for rule R on pid N: <outcome> (… ms after the event)`,
/// the outcome "dry run: would …", "FAILED: …", "REFUSED: …" or what it did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Done,
    DryRun,
    Failed,
    Refused,
    /// The summary does not say in the agent's words.
    Unknown,
}

/// `s` without `n` written in decimal at its start.
fn strip_decimal(s: &str, n: u32) -> Option<&str> {
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.as_bytes()
        .starts_with(&digits[at..])
        .then(|| &s[digits.len() - at..])
}

impl Outcome {
    pub(super) fn of(alert: &Alert) -> Outcome {
        let f = &alert.finding;
        // The summary after "action {action} for rule {rule} on pid {pid}: ".
        let rest = f
            .summary
            .strip_prefix("action ")
            .and_then(|s| s.strip_prefix(f.action.as_str()))
            .and_then(|s| s.strip_prefix(" for rule "))
            .and_then(|s| s.strip_prefix(f.rule_id.as_str()))
            .and_then(|s| s.strip_prefix(" on pid "))
            .and_then(|s| strip_decimal(s, f.process.pid))
            .and_then(|s| s.strip_prefix(": "));
        match rest {
            None => Outcome::Unknown,
            Some(rest) if rest.starts_with("dry run: ") => Outcome::DryRun,
            Some(rest) if rest.starts_with("FAILED: ") => Outcome::Failed,
            Some(rest) if rest.starts_with("REFUSED: ") => Outcome::Refused,
            Some(_) => Outcome::Done,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::DryRun => "dry_run",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Unknown => "unknown",
        }
    }
}

/// The `security_control` profile's (action_id, action, disposition_id,
/// disposition) for an enforcement of `action` that came out as `outcome`.
pub(super) fn control(action: &str, outcome: Outcome) -> (u32, &'static str, u32, &'static str) {
    match outcome {
        Outcome::Done => match action {
            // The process tree is gone: what it was doing is stopped.
            "kill" => (2, "Denied", 2, "Blocked"),
            // Frozen in a cgroup of its own until an operator thaws it.
            "freeze" => (2, "Denied", 3, "Quarantined"),
            "deny_gpu" | "block_egress" => (2, "Denied", 2, "Blocked"),
            // Report only.
            "alert" => (1, "Allowed", 19, "Alert"),
            // An action this control plane does not know: not guessed.
            _ => (0, "Unknown", 99, "Other"),
        },
        // Nothing was done: the policy only says what it would have done.
        Outcome::DryRun => (1, "Allowed", 15, "Detected"),
        // The action was attempted and did not (fully) happen.
        Outcome::Failed => (0, "Unknown", 27, "Error"),
        // The target must not be acted on: nothing was done.
        Outcome::Refused => (1, "Allowed", 16, "No Action"),
        Outcome::Unknown => (0, "Unknown", 0, "Unknown"),
    }
}

/// `connection_info`: which way the connection went (and, for TCP, its
/// protocol).
#[derive(Serialize)]
struct ConnectionInfo {
    direction: &'static str,
    direction_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_num: Option<u32>,
}

const TCP_OUT: ConnectionInfo = ConnectionInfo {
    direction: "Outbound",
    direction_id: 2,
    protocol_name: Some("tcp"),
    protocol_num: Some(6),
};
const TCP_IN: ConnectionInfo = ConnectionInfo {
    direction: "Inbound",
    direction_id: 1,
    protocol_name: Some("tcp"),
    protocol_num: Some(6),
};
const DNS_OUT: ConnectionInfo = ConnectionInfo {
    direction: "Outbound",
    direction_id: 2,
    protocol_name: None,
    protocol_num: None,
};

/// The DNS query object: its question.
#[derive(Serialize)]
struct Query<'a> {
    hostname: &'a str,
}

/// The evidence of a finding, shaped like the objects of Process Activity,
/// File System Activity, Network Activity and DNS Activity.
#[derive(Serialize)]
struct Evidence<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    connection_info: Option<ConnectionInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_endpoint: Option<Endpoint<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<File<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<Process<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<Query<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src_endpoint: Option<Endpoint<'a>>,
}

impl<'a> Evidence<'a> {
    fn of(alert: &'a Alert) -> Evidence<'a> {
        let f = &alert.finding;
        let p = &f.process;
        let mut evidence = Evidence {
            connection_info: None,
            dst_endpoint: None,
            // An alert the control plane raised (a failed attestation) is
            // about a host, not a process.
            process: (p.pid != 0 || !p.exe.is_empty() || !p.argv.is_empty() || !p.comm.is_empty())
                .then(|| process(p)),
            file: f.file.as_ref().map(|fo| {
                let sha = fo.model.as_ref().map_or("", |m| m.sha256.as_str());
                file(&fo.path, sha)
            }),
            query: None,
            src_endpoint: None,
        };
        if let Some(net) = &f.net {
            let ep = endpoint(&net.address, net.port);
            match net.direction {
                NetDirection::Connect => {
                    evidence.dst_endpoint = Some(ep);
                    evidence.connection_info = Some(TCP_OUT);
                }
                NetDirection::Listen => {
                    evidence.src_endpoint = Some(ep);
                    evidence.connection_info = Some(TCP_IN);
                }
                // The DNS query object, sent to the resolver.
                NetDirection::DnsQuery => {
                    evidence.dst_endpoint = Some(ep);
                    evidence.connection_info = Some(DNS_OUT);
                    // A question that is no host name OCSF accepts
                    // (hostname_t) travels in unmapped instead.
                    let host = net.host.strip_suffix('.').unwrap_or(&net.host);
                    if is_hostname(host) {
                        evidence.query = Some(Query { hostname: host });
                    }
                }
            }
        }
        evidence
    }

    fn is_empty(&self) -> bool {
        self.connection_info.is_none()
            && self.dst_endpoint.is_none()
            && self.file.is_none()
            && self.process.is_none()
            && self.query.is_none()
            && self.src_endpoint.is_none()
    }
}

/// A list of the model identity cut for export (at most `MAX_MODEL_LIST`
/// items of at most `MAX_MODEL_ITEM` bytes), saying how many were left
/// out.
struct ModelList<'a>(&'a [String]);

impl Serialize for ModelList<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let more = self.0.len().saturating_sub(MAX_MODEL_LIST);
        let mut seq =
            ser.serialize_seq(Some(self.0.len().min(MAX_MODEL_LIST) + (more > 0) as usize))?;
        for s in self.0.iter().take(MAX_MODEL_LIST) {
            seq.serialize_element(&model_text(s))?;
        }
        if more > 0 {
            seq.serialize_element(&More(more))?;
        }
        seq.end()
    }
}

/// "…[N more]".
struct More(usize);

impl Serialize for More {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(&format_args!("…[{} more]", self.0))
    }
}

/// A digest of the model identity: lower-case hex, or empty when it is no
/// sha256 (`ModelIdentity::bounded`).
struct Digest<'a>(&'a str);

impl Serialize for Digest<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        if !is_sha256_hex(self.0) {
            ser.serialize_str("")
        } else if self.0.bytes().any(|b| b.is_ascii_uppercase()) {
            ser.serialize_str(&self.0.to_ascii_lowercase())
        } else {
            ser.serialize_str(self.0)
        }
    }
}

fn model_text(s: &str) -> Capped<'_> {
    Capped::new(s, MAX_MODEL_ITEM)
}

/// What the model file is (format, architecture, size, fingerprints,
/// pickle risk and its dangerous imports): `ModelIdentity`'s fields, its
/// texts and lists cut from the original with a marker.
#[derive(Serialize)]
struct Model<'a> {
    architecture: Capped<'a>,
    dangerous_imports: ModelList<'a>,
    error: Capped<'a>,
    format: Capped<'a>,
    format_version: Capped<'a>,
    name: Capped<'a>,
    parameters: u64,
    quantization: Capped<'a>,
    risk: ModelRisk,
    risk_reasons: ModelList<'a>,
    sha256: Digest<'a>,
    size_label: Capped<'a>,
    structure_fingerprint: Digest<'a>,
    tensor_count: u64,
}

impl<'a> Model<'a> {
    fn of(m: &'a ModelIdentity) -> Model<'a> {
        Model {
            architecture: model_text(&m.architecture),
            dangerous_imports: ModelList(&m.dangerous_imports),
            error: model_text(&m.error),
            format: model_text(&m.format),
            format_version: model_text(&m.format_version),
            name: model_text(&m.name),
            parameters: m.parameters,
            quantization: model_text(&m.quantization),
            risk: m.risk,
            risk_reasons: ModelList(&m.risk_reasons),
            sha256: Digest(&m.sha256),
            size_label: model_text(&m.size_label),
            structure_fingerprint: Digest(&m.structure_fingerprint),
            tensor_count: m.tensor_count,
        }
    }
}

/// The gpu_use evidence: `GpuObject`'s fields, its identifiers cut.
#[derive(Serialize)]
struct Gpu<'a> {
    context: GpuContext,
    index: u32,
    name: Capped<'a>,
    sm_util_percent: Option<u32>,
    used_memory_bytes: Option<u64>,
    uuid: Capped<'a>,
}

#[derive(Serialize)]
struct Enforcement<'a> {
    action: Capped<'a>,
    outcome: &'static str,
}

/// OCSF has no model or GPU object: they travel in unmapped, with what
/// ties the finding to its alert and its process's namespaces.
#[derive(Serialize)]
struct Unmapped<'a> {
    alert_index: u64,
    cgroup_id: u64,
    cgroup_path: Capped<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_question: Option<Capped<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    enforcement: Option<Enforcement<'a>>,
    gpu: Option<Gpu<'a>>,
    mnt_ns: u64,
    model: Option<Model<'a>>,
    ns_pid: u32,
}

#[derive(Serialize)]
struct Analytic<'a> {
    name: Capped<'a>,
    #[serde(rename = "type")]
    type_: &'static str,
    type_id: u32,
    uid: Capped<'a>,
}

/// `finding_info.uid`: an agent numbers its findings from 1 (`agent:seq`);
/// one the control plane raised (seq 0) goes by its alert index.
struct FindingUid<'a> {
    agent_id: &'a str,
    seq: u64,
    alert_index: u64,
}

impl Serialize for FindingUid<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        if self.seq == 0 {
            return ser.collect_str(&format_args!("vigil-alert:{}", self.alert_index));
        }
        // ":" and at most 20 digits.
        if self.agent_id.len() + 21 <= MAX_EXPORTED_NAME {
            ser.collect_str(&format_args!("{}:{}", self.agent_id, self.seq))
        } else {
            name(&format!("{}:{}", self.agent_id, self.seq)).serialize(ser)
        }
    }
}

#[derive(Serialize)]
struct FindingInfo<'a> {
    analytic: Analytic<'a>,
    created_time: i64,
    title: Capped<'a>,
    types: [&'static str; 1],
    uid: FindingUid<'a>,
}

/// An alert as a Detection Finding, numbered by the cursor it is exported
/// at.
#[derive(Serialize)]
pub(super) struct DetectionFinding<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    action_id: Option<u32>,
    activity_id: u32,
    activity_name: &'static str,
    category_name: &'static str,
    category_uid: u32,
    class_name: &'static str,
    class_uid: u32,
    device: Device<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disposition_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    evidences: Option<[Evidence<'a>; 1]>,
    finding_info: FindingInfo<'a>,
    message: Capped<'a>,
    metadata: Metadata,
    severity: &'static str,
    severity_id: u32,
    status: &'static str,
    status_id: u32,
    time: i64,
    type_uid: u64,
    unmapped: Unmapped<'a>,
}

impl<'a> DetectionFinding<'a> {
    pub(super) fn new(cursor: u64, alert: &'a Alert) -> DetectionFinding<'a> {
        let f = &alert.finding;
        let p = &f.process;
        let enforcement = (!f.action.is_empty()).then(|| {
            let outcome = Outcome::of(alert);
            (control(&f.action, outcome), outcome)
        });
        let profiles: &'static [&'static str] = if enforcement.is_some() {
            &["host", "security_control"]
        } else {
            &["host"]
        };
        let evidence = Evidence::of(alert);
        let dns_question = f
            .net
            .as_ref()
            .filter(|n| n.direction == NetDirection::DnsQuery && evidence.query.is_none())
            .map(|n| name(&n.host));
        let rule = name(&f.rule_id);
        DetectionFinding {
            action: enforcement.map(|((_, action, _, _), _)| action),
            action_id: enforcement.map(|((action_id, _, _, _), _)| action_id),
            activity_id: ACTIVITY_CREATE,
            activity_name: "Create",
            category_name: "Findings",
            category_uid: CATEGORY_FINDINGS,
            class_name: "Detection Finding",
            class_uid: CLASS_DETECTION_FINDING,
            device: device(&alert.hostname, &alert.agent_id),
            disposition: enforcement.map(|((_, _, _, disposition), _)| disposition),
            disposition_id: enforcement.map(|((_, _, disposition_id, _), _)| disposition_id),
            evidences: (!evidence.is_empty()).then_some([evidence]),
            finding_info: FindingInfo {
                analytic: Analytic {
                    name: rule,
                    type_: "Rule",
                    type_id: 1,
                    uid: rule,
                },
                created_time: millis(alert.received_at_unix_nanos),
                title: title(&f.summary),
                types: [f.signal.as_str()],
                uid: FindingUid {
                    agent_id: &alert.agent_id,
                    seq: f.seq,
                    alert_index: alert.index,
                },
            },
            message: text(&f.summary),
            metadata: metadata(cursor, profiles, millis(alert.received_at_unix_nanos)),
            severity: severity_caption(f.severity),
            severity_id: severity_id(f.severity),
            status: "New",
            status_id: 1,
            time: millis(f.observed_at_unix_nanos),
            type_uid: type_uid(CLASS_DETECTION_FINDING, ACTIVITY_CREATE),
            unmapped: Unmapped {
                alert_index: alert.index,
                cgroup_id: p.cgroup_id,
                cgroup_path: path(&p.cgroup_path),
                dns_question,
                enforcement: enforcement.map(|(_, outcome)| Enforcement {
                    action: name(&f.action),
                    outcome: outcome.as_str(),
                }),
                gpu: f.gpu.as_ref().map(|g| Gpu {
                    context: g.context,
                    index: g.index,
                    name: name(&g.name),
                    sm_util_percent: g.sm_util_percent,
                    used_memory_bytes: g.used_memory_bytes,
                    uuid: name(&g.uuid),
                }),
                mnt_ns: p.mnt_ns,
                model: f
                    .file
                    .as_ref()
                    .and_then(|fo| fo.model.as_deref())
                    .map(Model::of),
                ns_pid: p.ns_pid,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use vigil_domain::{FileObject, Finding, ProcessInfo, Severity, SignalKind};

    /// The alert as a Detection Finding numbered by its alert index.
    fn detection_finding(alert: &Alert) -> Value {
        serde_json::from_str(
            &serde_json::to_string(&DetectionFinding::new(alert.index, alert)).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn an_alert_maps_to_a_detection_finding() {
        let alert = Alert {
            index: 7,
            agent_id: "a1".into(),
            hostname: "h1".into(),
            received_at_unix_nanos: 2_000_000,
            finding: Finding {
                seq: 3,
                rule_id: "vigil.builtin.model-file-unapproved".into(),
                severity: Severity::High,
                signal: SignalKind::ModelFile,
                observed_at_unix_nanos: 1_000_000,
                process: ProcessInfo {
                    pid: 42,
                    exe: "/usr/bin/python3.11".into(),
                    argv: vec!["python3".into(), "x.py".into()],
                    exe_sha256: "ab".repeat(32),
                    ..Default::default()
                },
                file: Some(FileObject::at("/tmp/model.onnx")),
                net: None,
                gpu: None,
                action: String::new(),
                summary: "s".into(),
            },
        };
        let v = detection_finding(&alert);
        assert_eq!(v["class_uid"], 2004);
        assert_eq!(v["type_uid"], 200401);
        assert_eq!(v["severity_id"], 4);
        assert_eq!(v["time"], 1);
        assert_eq!(v["finding_info"]["uid"], "a1:3");
        assert_eq!(v["evidences"][0]["process"]["name"], "python3.11");
        assert_eq!(v["evidences"][0]["process"]["cmd_line"], "python3 x.py");
        assert_eq!(
            v["evidences"][0]["process"]["file"]["hashes"][0]["value"],
            "ab".repeat(32)
        );
        assert_eq!(v["evidences"][0]["file"]["name"], "model.onnx");
        assert_eq!(v["device"]["hostname"], "h1");
        assert_eq!(v["metadata"]["sequence"], 7);
        assert_eq!(v["metadata"]["profiles"], json!(["host"]));
        assert_eq!(v["unmapped"]["model"], Value::Null);
        // The command line travels once.
        assert!(v["unmapped"].get("argv").is_none());
        assert!(v.get("action_id").is_none());
    }

    #[test]
    fn a_model_findings_identity_and_risk_travel_with_it() {
        let mut f = Finding {
            seq: 1,
            rule_id: "vigil.builtin.model-file-runs-code".into(),
            severity: Severity::Critical,
            signal: SignalKind::ModelRisk,
            observed_at_unix_nanos: 0,
            process: ProcessInfo::default(),
            file: Some(FileObject::at("/tmp/evil.pt")),
            net: None,
            gpu: None,
            action: String::new(),
            summary: "s".into(),
        };
        f.file.as_mut().unwrap().model = Some(Box::new(vigil_domain::ModelIdentity {
            format: "pytorch-zip".into(),
            sha256: "cd".repeat(32),
            structure_fingerprint: "ef".repeat(32),
            risk: vigil_domain::ModelRisk::Dangerous,
            dangerous_imports: vec!["os.system".into()],
            ..Default::default()
        }));
        let v = detection_finding(&Alert {
            index: 1,
            agent_id: "a".into(),
            hostname: "h".into(),
            received_at_unix_nanos: 0,
            finding: f,
        });
        assert_eq!(v["finding_info"]["types"][0], "model_risk");
        assert_eq!(v["severity_id"], 5);
        assert_eq!(
            v["evidences"][0]["file"]["hashes"][0]["value"],
            "cd".repeat(32)
        );
        let m = &v["unmapped"]["model"];
        assert_eq!(m["risk"], "dangerous");
        assert_eq!(m["dangerous_imports"][0], "os.system");
        assert_eq!(m["structure_fingerprint"], "ef".repeat(32));
        assert_eq!(m["format"], "pytorch-zip");
    }

    #[test]
    fn network_findings_carry_their_endpoint() {
        use vigil_domain::NetObject;
        let alert = Alert {
            index: 1,
            agent_id: "a".into(),
            hostname: "h".into(),
            received_at_unix_nanos: 0,
            finding: Finding {
                seq: 1,
                rule_id: "r".into(),
                severity: Severity::High,
                signal: SignalKind::AiServing,
                observed_at_unix_nanos: 0,
                process: ProcessInfo::default(),
                file: None,
                net: Some(NetObject {
                    direction: NetDirection::Listen,
                    address: "0.0.0.0".into(),
                    port: 11434,
                    host: String::new(),
                }),
                gpu: None,
                action: String::new(),
                summary: "s".into(),
            },
        };
        let v = detection_finding(&alert);
        assert_eq!(v["evidences"][0]["src_endpoint"]["port"], 11434);
        assert_eq!(v["evidences"][0]["src_endpoint"]["ip"], "0.0.0.0");
        assert_eq!(v["evidences"][0]["connection_info"]["direction_id"], 1);
        assert_eq!(v["finding_info"]["types"][0], "ai_serving");
    }
}
