//! The host page's API against an in-memory fake of the node: processes
//! with AI signals (evidence, parent chain), attestation history, the
//! workloads that apply, the sidecar, roles, untrusted text and bounds.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;
use vigil_domain::{
    AgentRecord, Alert, AuditEntry, FileObject, ModelCatalog, ModelIdentity, ModelRecord,
    ModelState, Severity, SignalKind, WorkloadApproval,
};

use super::data::TriageState;
use super::data::{DashUser, DashboardData, DataError, DataFuture, Role, TriageAction};
use super::host_detail::{HOST_AUDIT_SCAN, HOST_SCAN, MAX_EVIDENCE, MAX_PROCESSES};
use super::server::{router, Dashboard};
use super::DashboardSettings;

const PASSWORD: &str = "correct horse battery";
const EVIL: &str = "<img src=x onerror=alert(1)>";

#[derive(Default)]
struct Fake {
    users: Vec<DashUser>,
    agents: Vec<AgentRecord>,
    alerts: Mutex<Vec<Alert>>,
    audit: Mutex<Vec<AuditEntry>>,
    workloads: Vec<WorkloadApproval>,
    models: Vec<ModelRecord>,
    last: Option<watch::Sender<u64>>,
}

impl DashboardData for Fake {
    fn user(&self, name: &str) -> Result<Option<DashUser>, DataError> {
        Ok(self.users.iter().find(|u| u.name == name).cloned())
    }
    fn agents(&self) -> Result<Vec<AgentRecord>, DataError> {
        Ok(self.agents.clone())
    }
    fn alerts_after(&self, after: u64, limit: usize) -> Result<Vec<Alert>, DataError> {
        let all = self.alerts.lock().unwrap();
        Ok(all
            .iter()
            .filter(|a| a.index > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn last_alert_index(&self) -> u64 {
        self.alerts.lock().unwrap().len() as u64
    }
    fn watch_alerts(&self) -> watch::Receiver<u64> {
        self.last.as_ref().unwrap().subscribe()
    }
    fn open_by_severity(&self) -> Result<Vec<(Severity, u64)>, DataError> {
        Ok(Vec::new())
    }
    fn triage(&self, _index: u64) -> Result<TriageState, DataError> {
        Ok(TriageState::default())
    }
    fn triage_alert(&self, _index: u64, _actor: &str, _action: TriageAction) -> DataFuture<'_, ()> {
        Box::pin(async { Err(DataError::Refused("read only".into())) })
    }
    fn audit_entries(&self) -> Result<u64, DataError> {
        Ok(self.audit.lock().unwrap().len() as u64)
    }
    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, DataError> {
        let all = self.audit.lock().unwrap();
        Ok(all
            .iter()
            .filter(|e| e.index > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn workloads(&self) -> Result<Vec<WorkloadApproval>, DataError> {
        Ok(self.workloads.clone())
    }
    fn model_catalog(&self) -> Result<ModelCatalog, DataError> {
        Ok(ModelCatalog::new(self.models.clone(), []))
    }
}

impl Fake {
    fn alert(&self, agent: &str, pid: u32, ppid: u32, exe: &str, signal: SignalKind) -> u64 {
        let mut all = self.alerts.lock().unwrap();
        let index = all.len() as u64 + 1;
        let mut finding = crate::realistic_finding::realistic_model_finding(index);
        finding.signal = signal;
        finding.process.pid = pid;
        finding.process.ppid = ppid;
        finding.process.exe = exe.to_string();
        finding.process.comm = exe
            .rsplit('/')
            .next()
            .unwrap_or("")
            .chars()
            .take(15)
            .collect();
        all.push(Alert {
            index,
            agent_id: agent.to_string(),
            hostname: agent.trim_start_matches("agent-").to_string(),
            received_at_unix_nanos: 1_000 + index as i64,
            finding,
        });
        index
    }

    fn audit(&self, action: &str, subject: &str, detail: &str) {
        let mut all = self.audit.lock().unwrap();
        let index = all.len() as u64 + 1;
        all.push(AuditEntry {
            index,
            at_unix_nanos: index as i64,
            actor: "verifier".into(),
            action: action.into(),
            subject: subject.into(),
            detail: detail.into(),
            prev_hash: String::new(),
            hash: String::new(),
        });
    }
}

fn agent(id: &str) -> AgentRecord {
    let mut a = AgentRecord::default();
    a.identity.agent_id = id.into();
    a.identity.hostname = id.trim_start_matches("agent-").into();
    a
}

fn base() -> Fake {
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let hash = Argon2::default()
        .hash_password(PASSWORD.as_bytes(), &salt)
        .unwrap()
        .to_string();
    Fake {
        users: vec![DashUser {
            name: "vic".into(),
            role: Role::Viewer,
            password_hash: hash,
            disabled: false,
        }],
        agents: vec![agent("agent-h1"), agent("agent-h2")],
        last: Some(watch::channel(0).0),
        ..Fake::default()
    }
}

fn app(fake: Fake) -> Router {
    router(Dashboard::new(
        Arc::new(fake),
        DashboardSettings::default(),
        false,
    ))
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn login(app: &Router) -> String {
    let req = Request::post("/api/login")
        .header(header::HOST, "dash.test")
        .header(header::ORIGIN, "http://dash.test")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({ "name": "vic", "password": PASSWORD }).to_string(),
        ))
        .unwrap();
    let (status, headers, body) = call(app, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn get(app: &Router, path: &str, cookie: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::get(path).header(header::HOST, "dash.test");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, c);
    }
    let (status, _, body) = call(app, req.body(Body::empty()).unwrap()).await;
    (status, body)
}

#[tokio::test]
async fn a_viewer_sees_processes_evidence_chain_attestation_workloads_and_sidecar() {
    let mut fake = base();
    // The parent (a shell, pid 10 under init) and a child named like markup
    // loading a runtime, then opening a model; another host's finding.
    fake.alert("agent-h1", 10, 1, "/usr/bin/bash", SignalKind::AiEgress);
    fake.alert("agent-h1", 20, 10, EVIL, SignalKind::AiRuntime);
    fake.alert("agent-h1", 20, 10, EVIL, SignalKind::ModelFile);
    fake.alert("agent-h2", 99, 1, "/usr/bin/other", SignalKind::ModelFile);
    // Not AI evidence: a policy finding is no process of the list.
    fake.alert(
        "agent-h1",
        30,
        1,
        "/usr/bin/vigil-agent",
        SignalKind::Policy,
    );
    // The sidecar: started v1 then rolled back to it from v2.
    let i = fake.alert(
        "agent-h1",
        40,
        1,
        "/usr/lib/vigil/sidecar",
        SignalKind::Sidecar,
    );
    let j = fake.alert(
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
    fake.audit("attest.enroll", "agent agent-h1 on h1", "bound to EK");
    fake.audit("attest.verdict", "agent agent-h2 on h2", "trusted");
    fake.audit("policy.push", "7", "");
    fake.audit(
        "attest.verdict",
        "agent agent-h1 on h1",
        "untrusted (pcr-policy): PCR 7",
    );
    // agent-h10 shares agent-h1's prefix: not its history.
    fake.audit("attest.verdict", "agent agent-h10 on h10", "trusted");
    for (id, hosts) in [
        ("fleet", vec![]),
        ("mine", vec!["h1"]),
        ("theirs", vec!["agent-h2"]),
    ] {
        fake.workloads.push(WorkloadApproval {
            id: id.into(),
            exe_sha256: "ab".repeat(32),
            hosts: hosts.into_iter().map(String::from).collect(),
            approved_by: "admin".into(),
            note: EVIL.into(),
            ..Default::default()
        });
    }
    for (version, hosts) in [(1, vec![]), (2, vec!["agent-h2"])] {
        fake.models.push(ModelRecord {
            name: "llm".into(),
            version,
            sha256: format!("{version:064x}"),
            format: "onnx".into(),
            hosts: hosts.into_iter().map(String::from).collect(),
            state: ModelState::Approved,
            ..Default::default()
        });
    }
    let app = app(fake);
    let cookie = login(&app).await;
    let (status, v) = get(&app, "/api/hosts/agent-h1", Some(&cookie)).await;
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
    let app = app(base());
    assert_eq!(
        get(&app, "/api/hosts/agent-h1", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let cookie = login(&app).await;
    let (status, v) = get(&app, "/api/hosts/agent-h1", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["processes"]["items"], json!([]));
    assert_eq!(v["sidecar"]["models"], json!([]));
    assert_eq!(
        get(&app, "/api/hosts/nobody", Some(&cookie)).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_list_is_bounded_and_old_records_are_not_read() {
    let fake = base();
    // Beyond the scans: the oldest alert and audit entry are of h1.
    fake.alert("agent-h1", 5, 1, "/old", SignalKind::ModelFile);
    fake.audit("attest.enroll", "agent agent-h1 on h1", "old");
    for n in 0..HOST_AUDIT_SCAN {
        fake.audit("policy.push", &n.to_string(), "");
    }
    // More processes than shown, one with more evidence than shown.
    for pid in 0..(MAX_PROCESSES as u32 + 10) {
        fake.alert(
            "agent-h1",
            1000 + pid,
            1,
            "/usr/bin/ollama",
            SignalKind::AiServing,
        );
    }
    for _ in 0..MAX_EVIDENCE + 5 {
        fake.alert("agent-h1", 7, 1, "/usr/bin/llama", SignalKind::ModelFile);
    }
    // All but the oldest (h1's "/old") in the scan.
    let filler = HOST_SCAN - (MAX_PROCESSES + 10 + MAX_EVIDENCE + 5) - 1;
    for _ in 0..filler {
        fake.alert("agent-h2", 9, 1, "/usr/bin/x", SignalKind::ModelFile);
    }
    // The newest of h1's: the many-evidence process, seen once more.
    fake.alert("agent-h1", 7, 1, "/usr/bin/llama", SignalKind::ModelFile);
    let app = app(fake);
    let cookie = login(&app).await;
    let (status, v) = get(&app, "/api/hosts/agent-h1", Some(&cookie)).await;
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
