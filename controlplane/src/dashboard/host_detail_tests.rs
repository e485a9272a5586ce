//! The host page's API against an in-memory fake of the node: processes
//! with AI signals (evidence, parent chain), attestation history, the
//! workloads that apply, the sidecar, roles, untrusted text and bounds.

use axum::http::StatusCode;
use serde_json::json;
use vigil_domain::{
    Ancestor, FileObject, ModelIdentity, ModelRecord, ModelState, SignalKind, WorkloadApproval,
};

use super::host_detail::{
    HOST_AUDIT_SCAN, HOST_READS_AT_ONCE, HOST_SCAN, MAX_EVIDENCE, MAX_PROCESSES,
};
use super::test_fleet::{FakeNode, Harness, EVIL};

/// A viewer, "vic", and agents on h1 and h2.
fn base() -> FakeNode {
    FakeNode::viewer()
        .with_agent("agent-h1")
        .with_agent("agent-h2")
}

#[tokio::test]
async fn the_parent_chain_is_the_agents_ancestors_when_the_finding_has_them() {
    let fake = base();
    // Nothing else on the host names pid 10 or 1: only the agent's chain does.
    let i = fake.add_process_alert("agent-h1", 20, 10, EVIL, SignalKind::ModelFile);
    fake.add_process_alert("agent-h1", 21, 11, "/usr/bin/old", SignalKind::ModelFile);
    fake.alerts.lock().unwrap()[i as usize - 1]
        .finding
        .process
        .ancestors = vec![
        Ancestor::new(10, EVIL, "bash"),
        Ancestor::new(1, "/sbin/init", "systemd"),
    ];
    let app = Harness::of(fake);
    let cookie = app.login("vic").await.0;
    let (status, v) = app.json("/api/hosts/agent-h1", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let procs = v["processes"]["items"].as_array().unwrap();
    let by_pid = |pid: u32| procs.iter().find(|p| p["pid"] == pid).unwrap();
    assert_eq!(
        by_pid(20)["parent_chain"],
        json!([
            { "pid": 10, "exe": EVIL, "comm": "bash", "known": true },
            { "pid": 1, "exe": "/sbin/init", "comm": "systemd", "known": true },
        ])
    );
    assert_eq!(by_pid(20)["parent_chain_from"], "agent");
    // A finding without ancestors (an older agent's): the old fallback.
    assert_eq!(
        by_pid(21)["parent_chain"],
        json!([{ "pid": 11, "known": false }])
    );
    assert_eq!(by_pid(21)["parent_chain_from"], "findings");
}

#[tokio::test]
async fn a_viewer_sees_processes_evidence_chain_attestation_workloads_and_sidecar() {
    let mut fake = base();
    // The parent (a shell, pid 10 under init) and a child named like markup
    // loading a runtime, then opening a model; another host's finding.
    fake.add_process_alert("agent-h1", 10, 1, "/usr/bin/bash", SignalKind::AiEgress);
    fake.add_process_alert("agent-h1", 20, 10, EVIL, SignalKind::AiRuntime);
    fake.add_process_alert("agent-h1", 20, 10, EVIL, SignalKind::ModelFile);
    fake.add_process_alert("agent-h2", 99, 1, "/usr/bin/other", SignalKind::ModelFile);
    // Not AI evidence: a policy finding is no process of the list.
    fake.add_process_alert(
        "agent-h1",
        30,
        1,
        "/usr/bin/vigil-agent",
        SignalKind::Policy,
    );
    // The sidecar: started v1 then rolled back to it from v2.
    let i = fake.add_process_alert(
        "agent-h1",
        40,
        1,
        "/usr/lib/vigil/sidecar",
        SignalKind::Sidecar,
    );
    let j = fake.add_process_alert(
        "agent-h1",
        40,
        1,
        "/usr/lib/vigil/sidecar",
        SignalKind::Sidecar,
    );
    for (index, action, version) in [(i, "sidecar_start", 2), (j, "model_rollback", 1)] {
        let mut all = fake.alerts.lock().unwrap();
        let f = &mut all[index as usize - 1].finding;
        f.action = action.into();
        f.summary = format!("{action} {EVIL}");
        f.file = Some(FileObject {
            path: "/var/lib/vigil/models/m".into(),
            model: Some(Box::new(ModelIdentity {
                format: "onnx".into(),
                name: format!("llm v{version}"),
                ..Default::default()
            })),
        });
    }
    fake.add_audit(
        "verifier",
        "attest.enroll",
        "agent agent-h1 on h1",
        "bound to EK",
    );
    fake.add_audit(
        "verifier",
        "attest.verdict",
        "agent agent-h2 on h2",
        "trusted",
    );
    fake.add_audit("verifier", "policy.push", "7", "");
    fake.add_audit(
        "verifier",
        "attest.verdict",
        "agent agent-h1 on h1",
        "untrusted (pcr-policy): PCR 7",
    );
    // agent-h10 shares agent-h1's prefix: not its history.
    fake.add_audit(
        "verifier",
        "attest.verdict",
        "agent agent-h10 on h10",
        "trusted",
    );
    for (id, hosts) in [
        ("fleet", vec![]),
        ("mine", vec!["h1"]),
        ("theirs", vec!["agent-h2"]),
    ] {
        fake = fake.with_workload(WorkloadApproval {
            id: id.into(),
            exe_sha256: "ab".repeat(32),
            hosts: hosts.into_iter().map(String::from).collect(),
            approved_by: "admin".into(),
            note: EVIL.into(),
            ..Default::default()
        });
    }
    for (version, hosts) in [(1, vec![]), (2, vec!["agent-h2"])] {
        fake = fake.with_model(ModelRecord {
            name: "llm".into(),
            version,
            sha256: format!("{version:064x}"),
            format: "onnx".into(),
            hosts: hosts.into_iter().map(String::from).collect(),
            state: ModelState::Approved,
            ..Default::default()
        });
    }
    let app = Harness::of(fake);
    let cookie = app.login("vic").await.0;
    let (status, v) = app.json("/api/hosts/agent-h1", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{v}");

    let procs = v["processes"]["items"].as_array().unwrap();
    assert_eq!(procs.len(), 2, "{procs:#?}");
    let evil = &procs[0];
    // The markup is a JSON string, as the agent sent it.
    assert_eq!(evil["exe"], json!(EVIL));
    assert_eq!(evil["pid"], 20);
    assert_eq!(evil["signals"], json!(["ai_runtime", "model_file"]));
    assert_eq!(evil["findings"], 2);
    assert_eq!(evil["evidence"].as_array().unwrap().len(), 2);
    assert_eq!(evil["evidence"][0]["signal"], "model_file");
    assert_eq!(
        evil["parent_chain"],
        json!([
            { "pid": 10, "exe": "/usr/bin/bash", "comm": "bash", "known": true },
            { "pid": 1, "known": false },
        ])
    );
    assert_eq!(procs[1]["exe"], "/usr/bin/bash");
    assert!(v["processes"]["parent_chain_note"]
        .as_str()
        .unwrap()
        .contains("parent pid only"));

    let hist = v["attestation_history"]["items"].as_array().unwrap();
    let actions: Vec<&str> = hist.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["attest.verdict", "attest.enroll"], "{hist:#?}");
    assert_eq!(hist[0]["detail"], "untrusted (pcr-policy): PCR 7");

    let ids: Vec<&str> = v["workloads"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fleet", "mine"]);
    assert_eq!(v["workloads"]["fleet_total"], 3);
    assert_eq!(v["workloads"]["items"][0]["scope"], "every host");
    assert_eq!(v["workloads"]["items"][1]["note"], json!(EVIL));

    // The catalog has h1 serve v1 (v2 is h2's); its last event the rollback.
    let models = v["sidecar"]["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{models:#?}");
    assert_eq!(models[0]["version"], 1);
    assert_eq!(models[0]["last_event"], "model_rollback");
    assert_eq!(models[0]["last_event_version"], 1);
    assert_eq!(v["sidecar"]["events_total"], 2);
    assert_eq!(
        v["sidecar"]["events"][0]["summary"],
        json!(format!("model_rollback {EVIL}"))
    );

    // Its own findings only, and what was read said.
    assert_eq!(v["findings"].as_array().unwrap().len(), 6);
    assert_eq!(v["scanned"]["alerts"], 7);
    assert_eq!(v["scanned"]["at_most"], HOST_SCAN);
    assert_eq!(v["scanned"]["audit_entries"], 5);
}

#[tokio::test]
async fn the_host_page_is_for_sessions_only_and_unknown_hosts_are_404() {
    let app = Harness::of(base());
    assert_eq!(
        app.json("/api/hosts/agent-h1", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let cookie = app.login("vic").await.0;
    let (status, v) = app.json("/api/hosts/agent-h1", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["processes"]["items"], json!([]));
    assert_eq!(v["sidecar"]["models"], json!([]));
    assert_eq!(
        app.json("/api/hosts/nobody", Some(&cookie)).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_list_is_bounded_and_old_records_are_not_read() {
    let fake = base();
    // Beyond the scans: the oldest alert and audit entry are of h1.
    fake.add_process_alert("agent-h1", 5, 1, "/old", SignalKind::ModelFile);
    fake.add_audit("verifier", "attest.enroll", "agent agent-h1 on h1", "old");
    for n in 0..HOST_AUDIT_SCAN {
        fake.add_audit("verifier", "policy.push", &n.to_string(), "");
    }
    // More processes than shown, one with more evidence than shown.
    for pid in 0..(MAX_PROCESSES as u32 + 10) {
        fake.add_process_alert(
            "agent-h1",
            1000 + pid,
            1,
            "/usr/bin/ollama",
            SignalKind::AiServing,
        );
    }
    for _ in 0..MAX_EVIDENCE + 5 {
        fake.add_process_alert("agent-h1", 7, 1, "/usr/bin/llama", SignalKind::ModelFile);
    }
    // All but the oldest (h1's "/old") in the scan.
    let filler = HOST_SCAN - (MAX_PROCESSES + 10 + MAX_EVIDENCE + 5) - 1;
    for _ in 0..filler {
        fake.add_process_alert("agent-h2", 9, 1, "/usr/bin/x", SignalKind::ModelFile);
    }
    // The newest of h1's: the many-evidence process, seen once more.
    fake.add_process_alert("agent-h1", 7, 1, "/usr/bin/llama", SignalKind::ModelFile);
    let app = Harness::of(fake);
    let cookie = app.login("vic").await.0;
    let (status, v) = app.json("/api/hosts/agent-h1", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["scanned"]["alerts"], HOST_SCAN);
    assert_eq!(v["scanned"]["audit_entries"], HOST_AUDIT_SCAN);
    let procs = v["processes"]["items"].as_array().unwrap();
    assert_eq!(procs.len(), MAX_PROCESSES);
    assert_eq!(v["processes"]["total"], MAX_PROCESSES + 11);
    assert!(procs.iter().all(|p| p["exe"] != "/old"));
    assert_eq!(procs[0]["exe"], "/usr/bin/llama");
    assert_eq!(procs[0]["findings"], MAX_EVIDENCE + 6);
    assert_eq!(procs[0]["evidence"].as_array().unwrap().len(), MAX_EVIDENCE);
    assert_eq!(v["attestation_history"]["items"], json!([]));
    assert!(v["findings"].as_array().unwrap().len() <= 100);
}

#[tokio::test]
async fn host_pages_read_at_once_are_bounded() {
    // Attack (review): each host page scans 10,000 alerts and audit
    // entries on a blocking thread that outlives a timed-out request, so
    // a viewer asking again and again could pile scans up. Past the limit
    // the answer is 429; a permit given back serves again.
    let app = Harness::of(base());
    let cookie = app.login("vic").await.0;
    let held = app
        .dashboard
        .host_reads
        .clone()
        .try_acquire_many_owned(HOST_READS_AT_ONCE as u32)
        .unwrap();
    assert_eq!(
        app.json("/api/hosts/agent-h1", Some(&cookie)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    drop(held);
    assert_eq!(
        app.json("/api/hosts/agent-h1", Some(&cookie)).await.0,
        StatusCode::OK
    );
}
