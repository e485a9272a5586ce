//! The dashboard tests' in-memory node: one fake (`FakeNode`) of what the
//! dashboard reads and writes, built up with `with_*` setters and filled
//! with `add_*` while a test runs, and a harness (`Harness`) with the
//! router over it: logins, requests with the session cookie and CSRF
//! token, JSON answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use axum::body::Body;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;
use vigil_domain::{
    AgentRecord, Alert, AlertTriage, AuditEntry, InventoryItem, InventoryKind, ModelCatalog,
    ModelRecord, Severity, SignalKind, WorkloadApproval,
};

use super::data::{
    DashUser, DashboardData, DataError, DataFuture, PolicyVersion, Role, TriageAction, TriageState,
};
use super::node_data::{domain_steps, open_counts, triage_view};
use super::server::{router, Dashboard};
use super::DashboardSettings;
use crate::audit_chain::{entry_hash, GENESIS};

/// Every fake user's password.
pub(super) const PASSWORD: &str = "correct horse battery";
/// Markup as untrusted text (a process, a note, an actor).
pub(super) const EVIL: &str = "<img src=x onerror=alert(1)>";

/// `password` as argon2id in PHC form (a fixed salt).
pub(super) fn hash(password: &str) -> String {
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// `PASSWORD`'s hash, made once.
fn password_hash() -> String {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| hash(PASSWORD)).clone()
}

/// A node in memory: users, agents, alerts with their triage (the
/// domain's own steps), the audit chain, workloads, the model catalog,
/// the AI inventory and policy versions.
#[derive(Default)]
pub(super) struct FakeNode {
    /// By name; a test may change or remove one while sessions are live.
    pub(super) users: Mutex<HashMap<String, DashUser>>,
    agents: Vec<AgentRecord>,
    /// Dense from index 1; a test may edit one in place.
    pub(super) alerts: Mutex<Vec<Alert>>,
    triage: Mutex<HashMap<u64, AlertTriage>>,
    /// Hash-chained from `GENESIS`; a test may tamper with one.
    pub(super) audit: Mutex<Vec<AuditEntry>>,
    workloads: Vec<WorkloadApproval>,
    models: Vec<ModelRecord>,
    inventory: Vec<InventoryItem>,
    policies: Vec<PolicyVersion>,
    active_policy: u64,
    last: watch::Sender<u64>,
}

impl FakeNode {
    /// One viewer, "vic".
    pub(super) fn viewer() -> Self {
        Self::default().with_user("vic", Role::Viewer)
    }

    /// An analyst, "ana", and a viewer, "vic".
    pub(super) fn analyst_and_viewer() -> Self {
        Self::viewer().with_user("ana", Role::Analyst)
    }

    /// A user named `name` with `PASSWORD`.
    pub(super) fn with_user(mut self, name: &str, role: Role) -> Self {
        self.users.get_mut().unwrap().insert(
            name.to_string(),
            DashUser {
                name: name.to_string(),
                role,
                password_hash: password_hash(),
                disabled: false,
            },
        );
        self
    }

    /// An enrolled agent `agent-<host>` on `<host>`.
    pub(super) fn with_agent(mut self, id: &str) -> Self {
        let mut a = AgentRecord::default();
        a.identity.agent_id = id.into();
        a.identity.hostname = id.trim_start_matches("agent-").into();
        self.agents.push(a);
        self
    }

    pub(super) fn with_workload(mut self, w: WorkloadApproval) -> Self {
        self.workloads.push(w);
        self
    }

    pub(super) fn with_model(mut self, m: ModelRecord) -> Self {
        self.models.push(m);
        self
    }

    pub(super) fn with_inventory(mut self, item: InventoryItem) -> Self {
        self.inventory.push(item);
        self
    }

    /// The stored policy versions (oldest first) and the active one.
    pub(super) fn with_policies(mut self, versions: Vec<PolicyVersion>, active: u64) -> Self {
        self.policies = versions;
        self.active_policy = active;
        self
    }

    /// Stores the next alert (agent `agent_id`, its host the id without
    /// `agent-`) as `edit` leaves a realistic model finding; the live
    /// feeds are told.
    fn push_alert(&self, agent_id: String, received: i64, edit: impl FnOnce(&mut Alert)) -> u64 {
        let mut alerts = self.alerts.lock().unwrap();
        let index = alerts.len() as u64 + 1;
        let mut alert = Alert {
            index,
            hostname: agent_id.trim_start_matches("agent-").to_string(),
            agent_id,
            received_at_unix_nanos: received,
            finding: crate::realistic_finding::realistic_model_finding(index),
        };
        edit(&mut alert);
        alerts.push(alert);
        self.last.send_replace(index);
        index
    }

    /// A finding of `severity` about `exe` on `host` (agent `agent-<host>`).
    pub(super) fn add_alert(&self, host: &str, exe: &str, severity: Severity) -> u64 {
        self.push_alert(
            format!("agent-{host}"),
            super::api::OFFLINE_AFTER_NANOS,
            |a| {
                a.finding.severity = severity;
                a.finding.process.exe = exe.to_string();
            },
        )
    }

    /// A finding of rule `rule` about `exe` on `host` (agent
    /// `agent-<host>`) received at `received` (unix nanos).
    pub(super) fn add_rule_alert(&self, host: &str, exe: &str, rule: &str, received: i64) -> u64 {
        self.push_alert(format!("agent-{host}"), received, |a| {
            a.finding.rule_id = rule.to_string();
            a.finding.process.exe = exe.to_string();
        })
    }

    /// A `signal` finding about process `pid` (parent `ppid`) running `exe`
    /// on `agent`.
    pub(super) fn add_process_alert(
        &self,
        agent: &str,
        pid: u32,
        ppid: u32,
        exe: &str,
        signal: SignalKind,
    ) -> u64 {
        self.push_alert(agent.to_string(), 1_000, |a| {
            a.received_at_unix_nanos += a.index as i64;
            let p = &mut a.finding.process;
            a.finding.signal = signal;
            p.pid = pid;
            p.ppid = ppid;
            // The parent pid only, as an agent without ancestors sends.
            p.ancestors.clear();
            p.exe = exe.to_string();
            p.comm = exe
                .rsplit('/')
                .next()
                .unwrap_or("")
                .chars()
                .take(15)
                .collect();
        })
    }

    /// The next audit entry, chained to the one before.
    pub(super) fn add_audit(&self, actor: &str, action: &str, subject: &str, detail: &str) {
        let mut audit = self.audit.lock().unwrap();
        let prev = audit.last().map_or(GENESIS.to_string(), |e| e.hash.clone());
        let mut e = AuditEntry {
            index: audit.len() as u64 + 1,
            at_unix_nanos: 1_000_000_000,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            detail: detail.into(),
            prev_hash: prev,
            hash: String::new(),
        };
        e.hash = entry_hash(&e);
        audit.push(e);
    }
}

impl DashboardData for FakeNode {
    fn user(&self, name: &str) -> Result<Option<DashUser>, DataError> {
        Ok(self.users.lock().unwrap().get(name).cloned())
    }
    fn agents(&self) -> Result<Vec<AgentRecord>, DataError> {
        Ok(self.agents.clone())
    }
    fn alerts_after(&self, after: u64, limit: usize) -> Result<Vec<Alert>, DataError> {
        Ok(self
            .alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.index > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn last_alert_index(&self) -> u64 {
        *self.last.borrow()
    }
    fn watch_alerts(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }
    /// Counted like the store: every stored alert's severity, less the
    /// resolved ones.
    fn open_by_severity(&self) -> Result<Vec<(Severity, u64)>, DataError> {
        let triage = self.triage.lock().unwrap();
        let mut by = BTreeMap::<String, u64>::new();
        for a in self.alerts.lock().unwrap().iter() {
            let n = by
                .entry(a.finding.severity.as_str().to_string())
                .or_default();
            if triage
                .get(&a.index)
                .is_none_or(|t| t.state != vigil_domain::TriageState::Resolved)
            {
                *n += 1;
            }
        }
        Ok(open_counts(&by))
    }
    fn triage(&self, index: u64) -> Result<TriageState, DataError> {
        Ok(triage_view(
            self.triage.lock().unwrap().get(&index).cloned(),
        ))
    }
    /// The domain's own triage steps (what the store applies), taken in
    /// memory; the node's refusals mapped as `node_data` maps them.
    fn triage_alert(&self, index: u64, actor: &str, action: TriageAction) -> DataFuture<'_, ()> {
        let actor = actor.to_string();
        Box::pin(async move {
            if index == 0 || index > self.last_alert_index() {
                return Err(DataError::NotFound(format!("no finding {index}")));
            }
            let mut all = self.triage.lock().unwrap();
            let t = all.entry(index).or_insert_with(|| AlertTriage::new(index));
            for step in domain_steps(action) {
                let known = self.users.lock().unwrap().contains_key(match &step {
                    vigil_domain::TriageAction::Assign { to } => to.as_str(),
                    _ => actor.as_str(),
                });
                if !known {
                    return Err(DataError::Refused("no such user".into()));
                }
                t.apply(vigil_domain::TriageEntry {
                    at_unix_nanos: 1,
                    actor: actor.clone(),
                    action: step,
                })
                .map_err(|e| DataError::Refused(e.to_string()))?;
            }
            Ok(())
        })
    }
    fn workloads(&self) -> Result<Vec<WorkloadApproval>, DataError> {
        Ok(self.workloads.clone())
    }
    fn model_catalog(&self) -> Result<ModelCatalog, DataError> {
        Ok(ModelCatalog::new(self.models.clone(), []))
    }
    /// As the store pages it: (kind, key) order, after the cursor.
    fn inventory(
        &self,
        kind: Option<InventoryKind>,
        after: Option<(InventoryKind, String)>,
        limit: usize,
    ) -> Result<(Vec<InventoryItem>, bool), DataError> {
        let mut all: Vec<&InventoryItem> = self
            .inventory
            .iter()
            .filter(|i| kind.is_none() || i.kind == kind)
            .filter(|i| {
                after
                    .as_ref()
                    .is_none_or(|(k, key)| (i.kind.unwrap(), &i.key) > (*k, key))
            })
            .collect();
        all.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        let more = all.len() > limit;
        Ok((all.into_iter().take(limit).cloned().collect(), more))
    }
    fn policies(&self) -> Result<Vec<PolicyVersion>, DataError> {
        Ok(self.policies.clone())
    }
    fn active_policy_version(&self) -> u64 {
        self.active_policy
    }
    fn audit_after(&self, after: u64, limit: usize) -> Result<Vec<AuditEntry>, DataError> {
        Ok(self
            .audit
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.index > after)
            .take(limit)
            .cloned()
            .collect())
    }
    fn audit_entries(&self) -> Result<u64, DataError> {
        Ok(self.audit.lock().unwrap().len() as u64)
    }
    /// Counted like the store's counters: every stored alert by the hour
    /// it was received in.
    fn findings_per_hour(&self, since_hour: u64) -> Result<Vec<(u64, u64)>, DataError> {
        let mut by = BTreeMap::<u64, u64>::new();
        for a in self.alerts.lock().unwrap().iter() {
            *by.entry(crate::store::hour_of(a.received_at_unix_nanos))
                .or_default() += 1;
        }
        Ok(by.into_iter().filter(|(h, _)| *h >= since_hour).collect())
    }
    /// Every stored alert by rule, agent id or executable (an empty one not
    /// counted), most first, ties by name.
    fn top_counts(
        &self,
        kind: crate::store::CountKind,
        n: usize,
    ) -> Result<Vec<(String, u64)>, DataError> {
        use crate::store::CountKind::*;
        let mut by = BTreeMap::<String, u64>::new();
        for a in self.alerts.lock().unwrap().iter() {
            let name = match kind {
                Rule => &a.finding.rule_id,
                Agent => &a.agent_id,
                Executable => &a.finding.process.exe,
            };
            if !name.is_empty() {
                *by.entry(name.clone()).or_default() += 1;
            }
        }
        let mut v: Vec<(String, u64)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        Ok(v)
    }
}

/// The dashboard's router over a `FakeNode`.
pub(super) struct Harness {
    pub(super) fake: Arc<FakeNode>,
    /// The dashboard behind `app`, for tests that hold its limits.
    pub(super) dashboard: Arc<Dashboard>,
    pub(super) app: Router,
}

/// An answer: its status, headers, body and the body as JSON (null when
/// it is not).
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Value,
    pub(super) bytes: Vec<u8>,
}

impl Harness {
    /// Over `FakeNode::analyst_and_viewer`, plaintext, default settings.
    pub(super) fn new() -> Self {
        Self::with(DashboardSettings::default(), false)
    }

    /// Over `FakeNode::analyst_and_viewer`.
    pub(super) fn with(settings: DashboardSettings, tls: bool) -> Self {
        Self::over(FakeNode::analyst_and_viewer(), settings, tls)
    }

    /// Over `fake`, plaintext, default settings.
    pub(super) fn of(fake: FakeNode) -> Self {
        Self::over(fake, DashboardSettings::default(), false)
    }

    fn over(fake: FakeNode, settings: DashboardSettings, tls: bool) -> Self {
        let fake = Arc::new(fake);
        let d = Dashboard::new(fake.clone(), settings, tls);
        Self {
            fake,
            dashboard: d.clone(),
            app: router(d),
        }
    }

    pub(super) async fn call(&self, req: Request<Body>) -> Answer {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap_or_default()
            .to_vec();
        Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            bytes,
        }
    }

    /// A GET, with the session cookie if given.
    pub(super) async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut req = Request::get(path).header(header::HOST, "dash.test");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.call(req.body(Body::empty()).unwrap()).await
    }

    /// A GET's status and JSON.
    pub(super) async fn json(&self, path: &str, cookie: Option<&str>) -> (StatusCode, Value) {
        let a = self.get(path, cookie).await;
        (a.status, a.body)
    }

    /// A GET's status, headers and body.
    pub(super) async fn raw(
        &self,
        path: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let a = self.get(path, cookie).await;
        (a.status, a.headers, a.bytes)
    }

    /// A same-origin JSON POST, with the session cookie and CSRF token if
    /// given.
    pub(super) async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        csrf: Option<&str>,
        body: Value,
    ) -> Answer {
        let mut req = Request::post(path)
            .header(header::HOST, "dash.test")
            .header(header::ORIGIN, "http://dash.test")
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        self.call(req.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// Logs in as `name`: (cookie, csrf token).
    pub(super) async fn login(&self, name: &str) -> (String, String) {
        let a = self
            .post(
                "/api/login",
                None,
                None,
                serde_json::json!({ "name": name, "password": PASSWORD }),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        let set = a.headers[header::SET_COOKIE].to_str().unwrap().to_string();
        let cookie = set.split(';').next().unwrap().to_string();
        (cookie, a.body["csrf"].as_str().unwrap().to_string())
    }
}
