//! Every exported event validates against the official OCSF 1.1.0 JSON
//! Schema of its class (vendored in `controlplane/ocsf-schema/1.1.0`,
//! compiled from the OCSF definitions by `ocsf-schema/generate.py`): each
//! kind, each signal, each enforcement action and outcome, each audit
//! family, and many generated records with odd, empty and huge fields.

use std::sync::OnceLock;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use vigil_domain::{
    Alert, Ancestor, AuditEntry, EventKind, EventRecord, FileObject, Finding, GpuContext,
    GpuObject, ModelIdentity, ModelRisk, NetDirection, NetObject, ProcessInfo, Severity, SiemEvent,
    SignalKind,
};

use super::ocsf_event;

const DETECTION_FINDING: &str = include_str!("../../ocsf-schema/1.1.0/detection_finding.json");
const COMPLIANCE_FINDING: &str = include_str!("../../ocsf-schema/1.1.0/compliance_finding.json");
const ENTITY_MANAGEMENT: &str = include_str!("../../ocsf-schema/1.1.0/entity_management.json");

const SIGNALS: [SignalKind; 10] = [
    SignalKind::ModelFile,
    SignalKind::ModelRisk,
    SignalKind::AiRuntime,
    SignalKind::GpuDevice,
    SignalKind::AiEgress,
    SignalKind::AiServing,
    SignalKind::GpuUse,
    SignalKind::Policy,
    SignalKind::Attestation,
    SignalKind::Sidecar,
];
const SEVERITIES: [Severity; 5] = [
    Severity::Info,
    Severity::Low,
    Severity::Medium,
    Severity::High,
    Severity::Critical,
];
const ACTIONS: [&str; 4] = ["kill", "freeze", "deny_gpu", "block_egress"];
/// Every audit action the control plane writes.
const AUDIT_ACTIONS: [&str; 29] = [
    "user.create",
    "user.update",
    "user.remove",
    "alert.triage",
    "policy.push",
    "policy.rollback",
    "workload.approve",
    "workload.revoke",
    "model.register",
    "model.upload",
    "model.approve",
    "model.revoke",
    "model.rollback",
    "attest.enroll",
    "attest.verdict",
    "attest.baseline",
    "attest.reset",
    "agent.enroll",
    "agent.attest",
    "agent.unfreeze",
    "alerts.prune",
    "certificate.renew",
    "certificate.revoke",
    "cluster.add_node",
    "cluster.remove_node",
    "cluster.transfer_leader",
    "join_token.create",
    "connection.refused",
    "request.denied",
];

/// The class schemas by class_uid, compiled once.
fn validators() -> &'static [(u64, jsonschema::Validator)] {
    static V: OnceLock<Vec<(u64, jsonschema::Validator)>> = OnceLock::new();
    V.get_or_init(|| {
        [DETECTION_FINDING, COMPLIANCE_FINDING, ENTITY_MANAGEMENT]
            .into_iter()
            .map(|text| {
                let schema: Value = serde_json::from_str(text).unwrap();
                let uid = schema["properties"]["class_uid"]["const"].as_u64().unwrap();
                (uid, jsonschema::validator_for(&schema).unwrap())
            })
            .collect()
    })
}

/// `v` validates against its class's schema; the errors and the event
/// otherwise.
fn assert_valid(v: &Value) {
    let uid = v["class_uid"].as_u64().expect("class_uid");
    let (_, validator) = validators()
        .iter()
        .find(|(u, _)| *u == uid)
        .unwrap_or_else(|| panic!("no schema for class {uid}"));
    // What the schema cannot say: the ids agree with each other.
    let activity = v["activity_id"].as_u64().unwrap();
    assert_eq!(v["type_uid"].as_u64(), Some(uid * 100 + activity), "{v}");
    assert_eq!(v["category_uid"].as_u64(), Some(uid / 1000), "{v}");
    let severity = [
        "Unknown",
        "Informational",
        "Low",
        "Medium",
        "High",
        "Critical",
    ];
    assert_eq!(
        v["severity"].as_str(),
        severity
            .get(v["severity_id"].as_u64().unwrap() as usize)
            .copied()
    );
    assert_eq!(v["metadata"]["uid"], v["metadata"]["sequence"].to_string());
    let errors: Vec<String> = validator
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{errors:#?}\n{}",
        serde_json::to_string_pretty(v).unwrap()
    );
}

fn alert_event(cursor: u64, finding: Finding) -> SiemEvent {
    let alert = Alert {
        index: cursor + 100,
        agent_id: "agent-1".into(),
        hostname: "host-1.example".into(),
        received_at_unix_nanos: 1_700_000_000_000_000_000,
        finding,
    };
    SiemEvent {
        cursor,
        kind: EventKind::of_alert(&alert),
        record: EventRecord::Alert(alert),
    }
}

fn audit_event(cursor: u64, entry: AuditEntry) -> SiemEvent {
    SiemEvent {
        cursor,
        kind: EventKind::of_audit(&entry),
        record: EventRecord::Audit(entry),
    }
}

fn entry(action: &str, subject: &str, detail: &str) -> AuditEntry {
    AuditEntry {
        index: 5,
        at_unix_nanos: 1_700_000_000_000_000_000,
        actor: "admin".into(),
        action: action.into(),
        subject: subject.into(),
        detail: detail.into(),
        prev_hash: "a".repeat(64),
        hash: "b".repeat(64),
    }
}

fn process() -> ProcessInfo {
    ProcessInfo {
        pid: 4242,
        ppid: 900,
        uid: 1000,
        exe: "/usr/bin/python3.11".into(),
        argv: vec!["python3".into(), "serve.py".into(), "--port=8000".into()],
        comm: "python3".into(),
        cgroup_id: 77,
        mnt_ns: 4026531840,
        exe_sha256: "ab".repeat(32),
        ns_pid: 12,
        cgroup_path: "/system.slice/docker-abc.scope".into(),
        ancestors: vec![
            Ancestor::new(900, "/usr/bin/bash", "bash"),
            Ancestor::new(1, "", "systemd"),
        ],
    }
}

fn model() -> ModelIdentity {
    ModelIdentity {
        format: "gguf".into(),
        architecture: "llama".into(),
        name: "TinyLlama".into(),
        size_label: "1.1B".into(),
        quantization: "Q4_K_M".into(),
        parameters: 1_100_000_000,
        sha256: "cd".repeat(32),
        structure_fingerprint: "ef".repeat(32),
        risk: ModelRisk::Safe,
        ..Default::default()
    }
}

/// A finding of `signal` with the evidence that signal carries.
fn finding(signal: SignalKind, severity: Severity) -> Finding {
    let mut f = Finding {
        seq: 9,
        rule_id: format!("vigil.builtin.{}", signal.as_str()),
        severity,
        signal,
        observed_at_unix_nanos: 1_700_000_000_000_000_000,
        process: process(),
        file: None,
        net: None,
        gpu: None,
        action: String::new(),
        summary: format!("{} seen", signal.as_str()),
    };
    match signal {
        SignalKind::ModelFile | SignalKind::ModelRisk => {
            let mut file = FileObject::at("/srv/models/tiny.gguf");
            file.model = Some(Box::new(model()));
            f.file = Some(file);
        }
        SignalKind::AiRuntime | SignalKind::Policy | SignalKind::Sidecar => {
            f.file = Some(FileObject::at("/usr/lib/libonnxruntime.so.1"));
        }
        SignalKind::GpuDevice => f.file = Some(FileObject::at("/dev/nvidia0")),
        SignalKind::AiEgress => {
            f.net = Some(NetObject {
                direction: NetDirection::Connect,
                address: "2606:4700::6810:85e5".into(),
                port: 443,
                host: "api.openai.com".into(),
            })
        }
        SignalKind::AiServing => {
            f.net = Some(NetObject {
                direction: NetDirection::Listen,
                address: "0.0.0.0".into(),
                port: 11434,
                host: String::new(),
            })
        }
        SignalKind::GpuUse => {
            f.gpu = Some(GpuObject {
                uuid: "GPU-1234".into(),
                name: "NVIDIA H100".into(),
                index: 0,
                used_memory_bytes: Some(1 << 30),
                sm_util_percent: Some(93),
                context: GpuContext::Compute,
            })
        }
        SignalKind::Attestation => {
            f.process = ProcessInfo::default();
            f.summary = "host failed TPM attestation: untrusted (pcr-policy)".into();
        }
    }
    f
}

#[test]
fn the_parent_and_lineage_come_from_the_ancestors() {
    let v = ocsf_event(&alert_event(
        1,
        finding(SignalKind::AiRuntime, Severity::High),
    ));
    assert_valid(&v);
    let p = &v["evidences"][0]["process"];
    assert_eq!(p["parent_process"]["pid"], 900);
    assert_eq!(p["parent_process"]["name"], "bash");
    assert_eq!(
        p["lineage"],
        serde_json::json!(["/usr/bin/bash", "systemd"])
    );
    // Without ancestors (an older agent's finding): the parent's pid only.
    let mut f = finding(SignalKind::AiRuntime, Severity::High);
    f.process.ancestors.clear();
    let v = ocsf_event(&alert_event(2, f));
    assert_valid(&v);
    let p = &v["evidences"][0]["process"];
    assert_eq!(p["parent_process"], serde_json::json!({ "pid": 900 }));
    assert!(p.get("lineage").is_none());
}

#[test]
fn the_vendored_schemas_are_json_schemas_of_their_class() {
    for (text, uid) in [
        (DETECTION_FINDING, 2004),
        (COMPLIANCE_FINDING, 2003),
        (ENTITY_MANAGEMENT, 3004),
    ] {
        let schema: Value = serde_json::from_str(text).unwrap();
        jsonschema::meta::validate(&schema).unwrap();
        assert_eq!(schema["properties"]["class_uid"]["const"], uid);
        assert_eq!(schema["additionalProperties"], false);
        // unmapped is the one free-form object.
        assert_eq!(schema["properties"]["unmapped"]["type"], "object");
        assert!(schema["properties"]["unmapped"].get("$ref").is_none());
    }
    // The schema refuses what OCSF 1.1 refuses: an unknown attribute, a
    // missing required one, a file without its type.
    let mut v = ocsf_event(&alert_event(
        1,
        finding(SignalKind::ModelFile, Severity::High),
    ));
    assert_valid(&v);
    let (_, validator) = &validators()[0];
    v["not_ocsf"] = Value::Bool(true);
    assert!(!validator.is_valid(&v));
    v.as_object_mut().unwrap().remove("not_ocsf");
    v["evidences"][0]["file"]
        .as_object_mut()
        .unwrap()
        .remove("type_id");
    assert!(!validator.is_valid(&v));
    let mut v = ocsf_event(&alert_event(
        1,
        finding(SignalKind::ModelFile, Severity::High),
    ));
    v.as_object_mut().unwrap().remove("finding_info");
    assert!(!validator.is_valid(&v));
    // An enforcement names the security_control profile, so it must say
    // what the control did.
    let mut f = finding(SignalKind::AiRuntime, Severity::High);
    f.action = "kill".into();
    let mut v = ocsf_event(&alert_event(1, f));
    assert_valid(&v);
    v.as_object_mut().unwrap().remove("action_id");
    assert!(!validator.is_valid(&v));
}

#[test]
fn every_signal_and_severity_exports_a_valid_detection_finding() {
    for (i, signal) in SIGNALS.into_iter().enumerate() {
        for severity in SEVERITIES {
            let v = ocsf_event(&alert_event(i as u64 + 1, finding(signal, severity)));
            assert_eq!(v["class_uid"], 2004);
            assert_eq!(v["finding_info"]["types"][0], signal.as_str());
            assert_valid(&v);
        }
    }
    // The DNS question travels as a DNS Activity query.
    let mut f = finding(SignalKind::AiEgress, Severity::Medium);
    f.net = Some(NetObject {
        direction: NetDirection::DnsQuery,
        address: "127.0.0.53".into(),
        port: 53,
        host: "api.anthropic.com".into(),
    });
    let v = ocsf_event(&alert_event(3, f));
    assert_eq!(v["evidences"][0]["query"]["hostname"], "api.anthropic.com");
    assert_eq!(v["evidences"][0]["dst_endpoint"]["port"], 53);
    assert_valid(&v);
}

#[test]
fn every_enforcement_action_and_outcome_exports_a_valid_finding() {
    let outcomes = [
        ("killed 3 processes", "done"),
        ("dry run: would kill the tree of pid 4242", "dry_run"),
        ("FAILED: cgroup.freeze: permission denied", "failed"),
        ("REFUSED: pid 1 is init", "refused"),
    ];
    for action in ACTIONS {
        for (outcome, said) in outcomes {
            let mut f = finding(SignalKind::AiServing, Severity::High);
            f.action = action.into();
            f.summary = format!(
                "action {action} for rule {} on pid {}: {outcome} (0.4 ms after the event)",
                f.rule_id, f.process.pid
            );
            let v = ocsf_event(&alert_event(7, f));
            assert_eq!(v["metadata"]["profiles"][1], "security_control");
            assert_eq!(v["unmapped"]["enforcement"]["outcome"], said, "{action}");
            assert_valid(&v);
        }
    }
    // A summary not in the agent's words: the outcome is not guessed.
    let mut f = finding(SignalKind::GpuUse, Severity::Low);
    f.action = "deny_gpu".into();
    f.summary = "something else".into();
    let v = ocsf_event(&alert_event(8, f));
    assert_eq!(v["action_id"], 0);
    assert_eq!(v["disposition_id"], 0);
    assert_valid(&v);
}

#[test]
fn every_audit_family_exports_a_valid_event() {
    for (i, action) in AUDIT_ACTIONS.into_iter().enumerate() {
        let subject = if action.starts_with("attest.") {
            "agent a-1 on host-1"
        } else {
            "v7"
        };
        let v = ocsf_event(&audit_event(i as u64 + 1, entry(action, subject, "detail")));
        let class = if action.starts_with("attest.") {
            2003
        } else {
            3004
        };
        assert_eq!(v["class_uid"], class, "{action}");
        assert_eq!(v["unmapped"]["audit_action"], action);
        assert_valid(&v);
    }
    // The audit record of an enforcement, about a process on a host.
    let v = ocsf_event(&audit_event(
        30,
        entry("enforce.freeze", "pid 4242 on host-1", "action freeze ..."),
    ));
    assert_eq!(v["device"]["hostname"], "host-1");
    assert_valid(&v);
}

#[test]
fn attestation_verdicts_pass_or_fail() {
    for (detail, status) in [
        ("trusted", "Pass"),
        ("untrusted (pcr-policy): PCR 7 changed", "Fail"),
        ("untrusted (stale): no quote for 10 minutes", "Fail"),
        ("unattested", "Unknown"),
    ] {
        let v = ocsf_event(&audit_event(
            1,
            entry("attest.verdict", "agent a-1 on host-1", detail),
        ));
        assert_eq!(v["compliance"]["status"], status, "{detail}");
        assert_eq!(v["compliance"]["status_detail"], detail);
        assert_eq!(v["device"]["uid"], "a-1");
        assert_valid(&v);
    }
}

/// Control characters a host chose are escaped six bytes each in JSON:
/// the caps count the escaped bytes, so such text cannot grow an event
/// sixfold (attack: every agent-set string full of `\x01` made a 74 KB
/// event when the caps counted text bytes).
#[test]
fn text_of_control_characters_is_capped_by_its_escaped_size() {
    let ctl = |n: usize| "\u{1}".repeat(n);
    let mut f = finding(SignalKind::ModelRisk, Severity::Critical);
    f.process.argv = vec![ctl(1 << 20), ctl(10)];
    f.process.exe = format!("/{}", ctl(64 << 10));
    f.process.cgroup_path = format!("/{}", ctl(64 << 10));
    f.process.comm = ctl(64 << 10);
    f.rule_id = ctl(64 << 10);
    f.summary = ctl(1 << 20);
    let mut file = FileObject::at(format!("/{}", ctl(64 << 10)));
    let mut m = model();
    m.risk = ModelRisk::Dangerous;
    m.risk_reasons = vec![ctl(2000); 40];
    m.dangerous_imports = vec![ctl(2000); 40];
    m.name = ctl(64 << 10);
    file.model = Some(Box::new(m));
    f.file = Some(file);
    let mut event = alert_event(1, f);
    if let EventRecord::Alert(a) = &mut event.record {
        a.hostname = ctl(255);
    }
    let json = crate::ocsf::ocsf_json(&event);
    assert!(json.len() < 16 << 10, "{} bytes", json.len());
    let v = ocsf_event(&event);
    assert_valid(&v);
    let cmd = v["evidences"][0]["process"]["cmd_line"].as_str().unwrap();
    assert!(cmd.ends_with("bytes]"), "marked");
    // What is kept plus what the marker says was cut is the whole line.
    let cut: usize = cmd
        .rsplit("truncated ")
        .next()
        .unwrap()
        .trim_end_matches(" bytes]")
        .parse()
        .unwrap();
    let kept = cmd.len() - vigil_domain::truncation_marker(cut).len();
    assert_eq!(kept + cut, (1 << 20) + 1 + 10);
    // Escaped, the command line keeps to its cap.
    let escaped = serde_json::to_string(cmd).unwrap().len() - 2;
    assert!(escaped <= vigil_domain::MAX_EXPORTED_CMDLINE, "{escaped}");
    // Plain text still fills its cap.
    assert!(
        escaped > vigil_domain::MAX_EXPORTED_CMDLINE - 64,
        "{escaped}"
    );
}

#[test]
fn a_huge_finding_is_capped_and_still_valid() {
    let mut f = finding(SignalKind::ModelRisk, Severity::Critical);
    f.process.argv = vec!["x".repeat(1 << 20)];
    f.process.exe = format!("/{}", "e".repeat(64 << 10));
    f.process.cgroup_path = format!("/{}", "c".repeat(64 << 10));
    f.process.comm = "ç".repeat(64 << 10);
    f.process.ancestors = (0..1000)
        .map(|pid| Ancestor {
            pid,
            exe: format!("/{}", "a".repeat(64 << 10)),
            comm: "ç".repeat(64 << 10),
        })
        .collect();
    f.process.ppid = 0;
    f.rule_id = "r".repeat(64 << 10);
    f.summary = "s".repeat(1 << 20);
    let mut file = FileObject::at(format!("/{}", "f".repeat(64 << 10)));
    let mut m = model();
    m.risk = ModelRisk::Dangerous;
    m.risk_reasons = vec!["why ".repeat(500); 40];
    m.dangerous_imports = vec!["os.system".repeat(200); 40];
    m.name = "n".repeat(64 << 10);
    file.model = Some(Box::new(m));
    f.file = Some(file);
    let mut event = alert_event(1, f);
    if let EventRecord::Alert(a) = &mut event.record {
        a.hostname = "h".repeat(64 << 10);
        a.agent_id = "a".repeat(64 << 10);
    }
    let v = ocsf_event(&event);
    let len = serde_json::to_string(&v).unwrap().len();
    assert!(len < 16 << 10, "{len} bytes: {}", size_report(&v, ""));
    assert_valid(&v);
    let cmd = v["evidences"][0]["process"]["cmd_line"].as_str().unwrap();
    assert!(cmd.len() <= vigil_domain::MAX_EXPORTED_CMDLINE);
    assert!(cmd.ends_with("bytes]"), "marked");
    let lineage = v["evidences"][0]["process"]["lineage"].as_array().unwrap();
    assert_eq!(lineage.len(), 1, "the first path, cut to the budget");
    assert!(
        serde_json::to_string(lineage).unwrap().len()
            <= super::ocsf_objects::MAX_EXPORTED_LINEAGE + 2
    );
    for p in [
        &v["evidences"][0]["process"]["file"]["path"],
        &v["evidences"][0]["file"]["path"],
        &v["unmapped"]["cgroup_path"],
    ] {
        assert!(p.as_str().unwrap().len() <= vigil_domain::MAX_EXPORTED_PATH);
    }
    assert!(v["message"].as_str().unwrap().len() <= vigil_domain::MAX_EXPORTED_TEXT);
    assert!(v["unmapped"].get("argv").is_none());
    let lineage = v["evidences"][0]["process"]["lineage"].as_array().unwrap();
    assert_eq!(lineage.len(), 1, "the first path, cut to the budget");
    assert!(
        serde_json::to_string(lineage).unwrap().len()
            <= super::ocsf_objects::MAX_EXPORTED_LINEAGE + 2
    );
    let m = &v["unmapped"]["model"];
    assert_eq!(m["dangerous_imports"].as_array().unwrap().len(), 5);
    assert_eq!(m["dangerous_imports"][4], "…[36 more]");
    assert!(m["name"]
        .as_str()
        .unwrap()
        .ends_with("[truncated 65434 bytes]"));
    assert_eq!(m["sha256"], "cd".repeat(32));
    // A huge audit entry too.
    let mut e = entry("policy.push", &"s".repeat(1 << 20), &"d".repeat(1 << 20));
    e.actor = "a".repeat(1 << 20);
    let v = ocsf_event(&audit_event(2, e));
    assert!(serde_json::to_string(&v).unwrap().len() < 16 << 10);
    assert_valid(&v);
    let e = entry(
        "attest.verdict",
        &format!("agent {} on {}", "a".repeat(1 << 20), "h".repeat(1 << 20)),
        &format!("untrusted (x): {}", "r".repeat(1 << 20)),
    );
    let v = ocsf_event(&audit_event(3, e));
    assert!(serde_json::to_string(&v).unwrap().len() < 16 << 10);
    assert_valid(&v);
}

/// Where the bytes of `v` are: its leaves over 100 bytes, by path.
fn size_report(v: &Value, at: &str) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| size_report(v, &format!("{at}/{k}")))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, v)| size_report(v, &format!("{at}/{i}")))
            .collect(),
        leaf => {
            let n = leaf.to_string().len();
            if n > 100 {
                format!("\n{at}: {n}")
            } else {
                String::new()
            }
        }
    }
}

/// An odd string: empty, unicode, control characters, separators the
/// mapping parses (" on ", ": "), look-alikes of addresses and host
/// names, or a long one.
fn odd(rng: &mut StdRng) -> String {
    const PIECES: [&str; 16] = [
        "",
        " ",
        "é",
        "日本語",
        "\u{0}",
        "\n\t",
        "\"\\",
        " on ",
        ": ",
        "agent ",
        "FAILED: ",
        "dry run: ",
        "256.1.1.1",
        "::1",
        "host_name.",
        "-x-",
    ];
    match rng.gen_range(0..10) {
        0 => String::new(),
        1 => "é".repeat(rng.gen_range(0..20_000)),
        2 => (0..rng.gen_range(0..50))
            .map(|_| char::from_u32(rng.gen_range(0..0x11_0000)).unwrap_or('?'))
            .collect(),
        _ => (0..rng.gen_range(1..6))
            .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
            .collect(),
    }
}

fn random_alert(rng: &mut StdRng) -> Finding {
    let signal = SIGNALS[rng.gen_range(0..SIGNALS.len())];
    let mut f = finding(signal, SEVERITIES[rng.gen_range(0..SEVERITIES.len())]);
    f.seq = rng.gen();
    f.rule_id = odd(rng);
    f.observed_at_unix_nanos = rng.gen();
    f.summary = odd(rng);
    f.process = ProcessInfo {
        pid: rng.gen(),
        ppid: rng.gen(),
        uid: rng.gen(),
        exe: odd(rng),
        argv: (0..rng.gen_range(0..4)).map(|_| odd(rng)).collect(),
        comm: odd(rng),
        cgroup_id: rng.gen(),
        mnt_ns: rng.gen(),
        exe_sha256: if rng.gen() { "AB".repeat(32) } else { odd(rng) },
        ns_pid: rng.gen(),
        cgroup_path: odd(rng),
        ancestors: (0..rng.gen_range(0..10))
            .map(|_| Ancestor {
                pid: rng.gen(),
                exe: odd(rng),
                comm: odd(rng),
            })
            .collect(),
    };
    if rng.gen_bool(0.5) {
        let mut file = FileObject::at(odd(rng));
        if rng.gen() {
            let mut m = model();
            m.name = odd(rng);
            m.sha256 = odd(rng);
            m.risk_reasons = (0..rng.gen_range(0..30)).map(|_| odd(rng)).collect();
            m.dangerous_imports = (0..rng.gen_range(0..30)).map(|_| odd(rng)).collect();
            file.model = Some(Box::new(m));
        }
        f.file = Some(file);
    }
    if rng.gen_bool(0.5) {
        let direction = [
            NetDirection::Connect,
            NetDirection::Listen,
            NetDirection::DnsQuery,
        ][rng.gen_range(0..3)];
        let address = match rng.gen_range(0..3) {
            0 => "10.0.0.1".to_string(),
            1 => "fe80::1%eth0".to_string(),
            _ => odd(rng),
        };
        f.net = Some(NetObject {
            direction,
            address,
            port: rng.gen(),
            host: odd(rng),
        });
    }
    if rng.gen_bool(0.3) {
        f.gpu = Some(GpuObject {
            uuid: odd(rng),
            name: odd(rng),
            index: rng.gen(),
            used_memory_bytes: rng.gen(),
            sm_util_percent: rng.gen(),
            context: GpuContext::Graphics,
        });
    }
    if rng.gen_bool(0.4) {
        f.action = if rng.gen() {
            ACTIONS[rng.gen_range(0..ACTIONS.len())].to_string()
        } else {
            odd(rng)
        };
        if rng.gen() {
            f.summary = format!(
                "action {} for rule {} on pid {}: {}",
                f.action,
                f.rule_id,
                f.process.pid,
                odd(rng)
            );
        }
    }
    f
}

#[test]
fn generated_records_all_export_valid_ocsf() {
    let mut rng = StdRng::seed_from_u64(0x0c5f_1100);
    for cursor in 1..=1500u64 {
        let event = if rng.gen_bool(0.6) {
            let mut e = alert_event(cursor, random_alert(&mut rng));
            if let EventRecord::Alert(a) = &mut e.record {
                a.hostname = odd(&mut rng);
                a.agent_id = odd(&mut rng);
                a.received_at_unix_nanos = rng.gen();
            }
            e
        } else {
            let action = if rng.gen_bool(0.7) {
                AUDIT_ACTIONS[rng.gen_range(0..AUDIT_ACTIONS.len())].to_string()
            } else {
                odd(&mut rng)
            };
            let subject = if rng.gen() {
                format!("agent {} on {}", odd(&mut rng), odd(&mut rng))
            } else {
                odd(&mut rng)
            };
            let mut e = entry(&action, &subject, &odd(&mut rng));
            e.actor = odd(&mut rng);
            e.hash = odd(&mut rng);
            e.prev_hash = odd(&mut rng);
            e.at_unix_nanos = rng.gen();
            e.index = rng.gen();
            audit_event(cursor, e)
        };
        let v = ocsf_event(&event);
        assert_eq!(v["metadata"]["sequence"], cursor);
        assert!(serde_json::to_string(&v).unwrap().len() < 16 << 10);
        assert_valid(&v);
    }
}
