//! Alerts as OCSF 1.1 Detection Findings (class 2004), the form SIEMs ingest.

use serde_json::{json, Value};
use vigil_domain::{Alert, NetDirection, Severity};

pub const OCSF_VERSION: &str = "1.1.0";
const CLASS_DETECTION_FINDING: u32 = 2004;
const CATEGORY_FINDINGS: u32 = 2;
const ACTIVITY_CREATE: u32 = 1;

fn severity_id(s: Severity) -> u32 {
    match s {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

pub fn detection_finding(alert: &Alert) -> Value {
    let f = &alert.finding;
    let p = &f.process;
    let mut evidence = json!({
        "process": {
            "pid": p.pid,
            "name": p.name(),
            "cmd_line": p.cmdline(),
            "file": { "path": p.exe, "name": file_name(&p.exe),
                      "hashes": if p.exe_sha256.is_empty() { json!([]) } else {
                          json!([{ "algorithm_id": 3, "algorithm": "SHA-256", "value": p.exe_sha256 }]) } },
            "user": { "uid": p.uid.to_string() },
            "parent_process": { "pid": p.ppid },
        }
    });
    let mut model = Value::Null;
    if let Some(file) = &f.file {
        evidence["file"] = json!({ "path": file.path, "name": file_name(&file.path) });
        if let Some(m) = &file.model {
            if !m.sha256.is_empty() {
                evidence["file"]["hashes"] =
                    json!([{ "algorithm_id": 3, "algorithm": "SHA-256", "value": m.sha256 }]);
            }
            // OCSF has no model object: its identity travels in unmapped.
            model = json!(m);
        }
    }
    if let Some(net) = &f.net {
        let endpoint = json!({ "ip": net.address, "port": net.port });
        match net.direction {
            NetDirection::Connect => evidence["dst_endpoint"] = endpoint,
            NetDirection::Listen => evidence["src_endpoint"] = endpoint,
            // OCSF evidence: the DNS query object, sent to the resolver.
            NetDirection::DnsQuery => {
                evidence["dst_endpoint"] = endpoint;
                evidence["query"] = json!({ "hostname": net.host });
            }
        }
    }
    json!({
        "class_uid": CLASS_DETECTION_FINDING,
        "class_name": "Detection Finding",
        "category_uid": CATEGORY_FINDINGS,
        "category_name": "Findings",
        "activity_id": ACTIVITY_CREATE,
        "activity_name": "Create",
        "type_uid": CLASS_DETECTION_FINDING * 100 + ACTIVITY_CREATE,
        "severity_id": severity_id(f.severity),
        "severity": f.severity.as_str(),
        "status_id": 1,
        "status": "New",
        "time": f.observed_at_unix_nanos / 1_000_000,
        "message": f.summary,
        "finding_info": {
            "uid": format!("{}:{}", alert.agent_id, f.seq),
            "title": f.summary,
            "types": [f.signal.as_str()],
            "analytic": { "uid": f.rule_id, "name": f.rule_id, "type_id": 1, "type": "Rule" },
            "created_time": alert.received_at_unix_nanos / 1_000_000,
        },
        "metadata": {
            "version": OCSF_VERSION,
            "uid": alert.index.to_string(),
            "product": { "name": "vigil", "vendor_name": "vigil", "version": env!("CARGO_PKG_VERSION") },
            "sequence": alert.index,
        },
        "device": { "hostname": alert.hostname, "uid": alert.agent_id, "type_id": 0 },
        "evidences": [evidence],
        "unmapped": {
            "cgroup_id": p.cgroup_id,
            "mnt_ns": p.mnt_ns,
            "ns_pid": p.ns_pid,
            "cgroup_path": p.cgroup_path,
            "argv": p.argv,
            // OCSF has no GPU object: the gpu_use evidence travels here.
            "gpu": f.gpu,
            // What the model file is (format, architecture, size,
            // fingerprints, pickle risk and its dangerous imports).
            "model": model,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::{FileObject, Finding, ProcessInfo, SignalKind};

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
                    exe_sha256: "ab".into(),
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
        assert_eq!(v["evidences"][0]["file"]["name"], "model.onnx");
        assert_eq!(v["device"]["hostname"], "h1");
        assert_eq!(v["metadata"]["sequence"], 7);
        assert_eq!(v["unmapped"]["model"], Value::Null);
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
        use vigil_domain::{Finding, NetObject, ProcessInfo, SignalKind};
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
        assert_eq!(v["finding_info"]["types"][0], "ai_serving");
    }
}
