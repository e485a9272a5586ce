//! Alerts as OCSF 1.1 Detection Findings (class 2004): an agent's finding,
//! and the outcome of an enforcement with the `security_control` profile
//! (what the control did, and how it came out).

use serde_json::{json, Value};
use vigil_domain::{truncate_marked, Alert, NetDirection};

use super::ocsf_objects::{
    classification, device, endpoint, file, is_hostname, merge, metadata, millis, name, path,
    process, severity_caption, severity_id, text, title, CATEGORY_FINDINGS,
};

const CLASS_DETECTION_FINDING: u32 = 2004;
const ACTIVITY_CREATE: u32 = 1;
/// The longest model text, risk reason or import exported, in bytes; at
/// most `MAX_MODEL_LIST` reasons and imports.
const MAX_MODEL_ITEM: usize = 128;
const MAX_MODEL_LIST: usize = 4;

/// An alert as a Detection Finding, numbered by its alert index (the SIEM
/// export numbers events by their cursor: `ocsf_event`).
pub fn detection_finding(alert: &Alert) -> Value {
    finding_at(alert.index, alert)
}

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

impl Outcome {
    pub(super) fn of(alert: &Alert) -> Outcome {
        let f = &alert.finding;
        let prefix = format!(
            "action {} for rule {} on pid {}: ",
            f.action, f.rule_id, f.process.pid
        );
        match f.summary.strip_prefix(&prefix) {
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

/// The evidence of a finding, shaped like the objects of Process Activity,
/// File System Activity, Network Activity and DNS Activity.
fn evidence(alert: &Alert) -> Value {
    let f = &alert.finding;
    let mut evidence = json!({});
    // An alert the control plane raised (a failed attestation) is about a
    // host, not a process.
    let p = &f.process;
    if p.pid != 0 || !p.exe.is_empty() || !p.argv.is_empty() || !p.comm.is_empty() {
        evidence["process"] = process(p);
    }
    if let Some(fo) = &f.file {
        let sha = fo.model.as_ref().map_or("", |m| m.sha256.as_str());
        evidence["file"] = file(&fo.path, sha);
    }
    if let Some(net) = &f.net {
        let ep = endpoint(&net.address, net.port);
        match net.direction {
            NetDirection::Connect => {
                evidence["dst_endpoint"] = ep;
                evidence["connection_info"] = json!({
                    "direction_id": 2, "direction": "Outbound",
                    "protocol_num": 6, "protocol_name": "tcp",
                });
            }
            NetDirection::Listen => {
                evidence["src_endpoint"] = ep;
                evidence["connection_info"] = json!({
                    "direction_id": 1, "direction": "Inbound",
                    "protocol_num": 6, "protocol_name": "tcp",
                });
            }
            // The DNS query object, sent to the resolver.
            NetDirection::DnsQuery => {
                evidence["dst_endpoint"] = ep;
                evidence["connection_info"] = json!({ "direction_id": 2, "direction": "Outbound" });
                // A question that is no host name OCSF accepts (hostname_t)
                // travels in unmapped instead.
                let host = net.host.strip_suffix('.').unwrap_or(&net.host);
                if is_hostname(host) {
                    evidence["query"] = json!({ "hostname": host });
                }
            }
        }
    }
    evidence
}

/// A list of the model identity cut for export, saying how many were left
/// out.
fn model_list(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = v
        .iter()
        .take(MAX_MODEL_LIST)
        .map(|s| truncate_marked(s, MAX_MODEL_ITEM).into_owned())
        .collect();
    if v.len() > MAX_MODEL_LIST {
        out.push(format!("…[{} more]", v.len() - MAX_MODEL_LIST));
    }
    out
}

pub(super) fn finding_at(cursor: u64, alert: &Alert) -> Value {
    let f = &alert.finding;
    let p = &f.process;
    let enforcement = !f.action.is_empty();
    // OCSF has no model object: its identity travels in unmapped.
    let model = match f.file.as_ref().and_then(|fo| fo.model.as_ref()) {
        Some(src) => {
            // bounded() drops a digest that is no sha256; the texts and
            // lists are cut here, from the original, with a marker.
            let cut = |t: &str| truncate_marked(t, MAX_MODEL_ITEM).into_owned();
            let mut m = src.bounded();
            m.format = cut(&src.format);
            m.format_version = cut(&src.format_version);
            m.architecture = cut(&src.architecture);
            m.name = cut(&src.name);
            m.size_label = cut(&src.size_label);
            m.quantization = cut(&src.quantization);
            m.error = cut(&src.error);
            m.risk_reasons = model_list(&src.risk_reasons);
            m.dangerous_imports = model_list(&src.dangerous_imports);
            json!(m)
        }
        None => Value::Null,
    };
    // OCSF has no GPU object: the gpu_use evidence travels in unmapped.
    let gpu = match &f.gpu {
        Some(g) => {
            let mut g = g.clone();
            g.uuid = name(&g.uuid);
            g.name = name(&g.name);
            json!(g)
        }
        None => Value::Null,
    };
    let profiles: &[&str] = if enforcement {
        &["host", "security_control"]
    } else {
        &["host"]
    };
    let mut v = classification(
        CATEGORY_FINDINGS,
        "Findings",
        CLASS_DETECTION_FINDING,
        "Detection Finding",
        ACTIVITY_CREATE,
        "Create",
    );
    merge(
        &mut v,
        json!({
            "severity_id": severity_id(f.severity),
            "severity": severity_caption(f.severity),
            "status_id": 1,
            "status": "New",
            "time": millis(f.observed_at_unix_nanos),
            "message": text(&f.summary),
            "finding_info": {
                // An agent numbers its findings from 1; one the control
                // plane raised (seq 0) goes by its alert index.
                "uid": if f.seq == 0 {
                    format!("vigil-alert:{}", alert.index)
                } else {
                    name(&format!("{}:{}", alert.agent_id, f.seq))
                },
                "title": title(&f.summary),
                "types": [f.signal.as_str()],
                "analytic": {
                    "uid": name(&f.rule_id),
                    "name": name(&f.rule_id),
                    "type_id": 1,
                    "type": "Rule",
                },
                "created_time": millis(alert.received_at_unix_nanos),
            },
            "metadata": metadata(cursor, profiles, millis(alert.received_at_unix_nanos)),
            "device": device(&alert.hostname, &alert.agent_id),
            "unmapped": {
                "alert_index": alert.index,
                "cgroup_id": p.cgroup_id,
                "mnt_ns": p.mnt_ns,
                "ns_pid": p.ns_pid,
                "cgroup_path": path(&p.cgroup_path),
                "gpu": gpu,
                // What the model file is (format, architecture, size,
                // fingerprints, pickle risk and its dangerous imports).
                "model": model,
            },
        }),
    );
    let evidence = evidence(alert);
    let dns_query = evidence.get("query").is_some();
    if evidence.as_object().is_some_and(|e| !e.is_empty()) {
        v["evidences"] = json!([evidence]);
    }
    if let Some(net) = f
        .net
        .as_ref()
        .filter(|n| n.direction == NetDirection::DnsQuery)
    {
        if !dns_query {
            v["unmapped"]["dns_question"] = json!(name(&net.host));
        }
    }
    if enforcement {
        let outcome = Outcome::of(alert);
        let (action_id, action, disposition_id, disposition) = control(&f.action, outcome);
        merge(
            &mut v,
            json!({
                "action_id": action_id,
                "action": action,
                "disposition_id": disposition_id,
                "disposition": disposition,
            }),
        );
        v["unmapped"]["enforcement"] = json!({
            "action": name(&f.action),
            "outcome": outcome.as_str(),
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::{FileObject, Finding, ProcessInfo, Severity, SignalKind};

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
