//! TEMPORARY: the `json!` builders the typed renderer replaces, kept only
//! to check that both render the same JSON. Deleted with the check.
#![allow(dead_code, unused_imports)]

mod compliance_finding;
mod detection_finding;
mod entity_management;
mod event;
mod ocsf_objects;

pub use event::ocsf_event;

/// The new rendering `json` of `event` is the old one: the same JSON
/// content, and byte for byte the same text.
pub fn assert_same(event: &vigil_domain::SiemEvent, json: &str) {
    let old = ocsf_event(event);
    let new: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
    assert_eq!(new, old, "content differs for {event:?}");
    assert_eq!(json, old.to_string(), "text differs for {event:?}");
    CHECKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

pub static CHECKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

#[cfg(test)]
mod tests {
    use vigil_domain::{
        Alert, AuditEntry, EventKind, EventRecord, FileObject, Finding, GpuObject, ModelIdentity,
        NetDirection, NetObject, ProcessInfo, Severity, SiemEvent, SignalKind,
        MAX_EXPORTED_CMDLINE, MAX_EXPORTED_PATH, MAX_EXPORTED_TEXT,
    };

    fn alert(f: Finding, agent_id: &str) -> SiemEvent {
        let alert = Alert {
            index: 3,
            agent_id: agent_id.into(),
            hostname: "h1".into(),
            received_at_unix_nanos: -1_500_000,
            finding: f,
        };
        SiemEvent {
            cursor: u64::MAX,
            kind: EventKind::of_alert(&alert),
            record: EventRecord::Alert(alert),
        }
    }

    fn finding() -> Finding {
        Finding {
            seq: u64::MAX,
            rule_id: "r".into(),
            severity: Severity::Low,
            signal: SignalKind::AiEgress,
            observed_at_unix_nanos: i64::MIN,
            process: ProcessInfo {
                pid: 0,
                comm: "c".into(),
                ..Default::default()
            },
            file: None,
            net: None,
            gpu: None,
            action: String::new(),
            summary: String::new(),
        }
    }

    /// Every boundary of the caps and the odd values the generated records
    /// may miss render the same, old and new.
    #[test]
    fn the_typed_rendering_is_the_json_one() {
        let check = |e: &SiemEvent| {
            let json = super::super::ocsf_json(e);
            super::assert_same(e, &json);
        };
        for n in [0, 1, 106, 107, 108, 127, 128, 129, 300] {
            check(&alert(finding(), &"a".repeat(n)));
            check(&alert(finding(), &"é".repeat(n / 2)));
        }
        for cap in [
            MAX_EXPORTED_CMDLINE,
            MAX_EXPORTED_PATH,
            MAX_EXPORTED_TEXT,
            128,
            255,
            256,
        ] {
            for len in [cap - 1, cap, cap + 1, cap + 40] {
                let s = "x".repeat(len);
                let mut f = finding();
                f.summary = s.clone();
                f.rule_id = s.clone();
                f.process.argv = vec![s[..len / 2].to_string(), s[len / 2 + 1..].to_string()];
                f.process.exe = format!("/{}", &s[1..]);
                f.process.cgroup_path = s.clone();
                let mut file = FileObject::at(s.clone());
                file.model = Some(Box::new(ModelIdentity {
                    format: s.clone(),
                    error: s.clone(),
                    risk_reasons: vec![s.clone(); len % 7],
                    dangerous_imports: vec![s.clone(); 5],
                    sha256: "AbCd".repeat(16),
                    structure_fingerprint: "abcd".repeat(16),
                    ..Default::default()
                }));
                f.file = Some(file);
                f.gpu = Some(GpuObject {
                    uuid: s.clone(),
                    ..Default::default()
                });
                check(&alert(f, &s));
                let mut e = AuditEntry {
                    index: 1,
                    at_unix_nanos: -1,
                    actor: s.clone(),
                    action: "attest.verdict".into(),
                    subject: format!("agent {s} on {s}"),
                    detail: s.clone(),
                    prev_hash: s.clone(),
                    hash: String::new(),
                };
                for action in [
                    "attest.verdict",
                    "attest.x",
                    "policy.push",
                    "x",
                    "enforce.kill",
                ] {
                    e.action = action.into();
                    for detail in ["", "d", &s] {
                        e.detail = detail.into();
                        check(&SiemEvent {
                            cursor: 0,
                            kind: EventKind::of_audit(&e),
                            record: EventRecord::Audit(e.clone()),
                        });
                    }
                }
            }
        }
        for (address, direction, host) in [
            ("::0001", NetDirection::Connect, ""),
            (" 10.0.0.1 ", NetDirection::Listen, ""),
            ("0:0:0:0:0:ffff:1.2.3.4", NetDirection::DnsQuery, "a.b."),
            ("x", NetDirection::DnsQuery, "-bad-"),
            ("", NetDirection::DnsQuery, ""),
        ] {
            let mut f = finding();
            f.net = Some(NetObject {
                direction,
                address: address.into(),
                port: 1,
                host: host.into(),
            });
            check(&alert(f, "a"));
        }
        for (pid, summary) in [
            (0, "action kill for rule r on pid 0: done"),
            (0, "action kill for rule r on pid 00: done"),
            (7, "action kill for rule r on pid 7: dry run: x"),
            (7, "action kill for rule r on pid 71: dry run: x"),
            (
                u32::MAX,
                "action kill for rule r on pid 4294967295: FAILED: x",
            ),
            (10, "action kill for rule r on pid 10: REFUSED: x"),
            (10, "action kill for rule r on pid 10:"),
            (10, "action kill for rule r on pid 1"),
        ] {
            for action in ["kill", "alert", "teleport"] {
                let mut f = finding();
                f.process.pid = pid;
                f.action = action.into();
                f.summary = summary.replace("kill", action);
                check(&alert(f, "a"));
            }
        }
        let mut f = finding();
        f.seq = 0;
        f.process = ProcessInfo::default();
        check(&alert(f, ""));
        assert!(super::CHECKED.load(std::sync::atomic::Ordering::Relaxed) > 100);
    }
}
