//! Attacks on the inventory and policy pages' APIs by a logged-in viewer,
//! against a fake of their own (slow reads, large bundles): a request the
//! timeout drops keeps its export or policy permit while its blocking read
//! runs on, and a diff of two large bundles is refused, not run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;
use tower::ServiceExt;
use vigil_domain::{AgentRecord, Alert, InventoryItem, InventoryKind};

use super::data::{
    DashUser, DashboardData, DataError, DataFuture, PolicyVersion, Role, TriageAction, TriageState,
};
use super::server::{router, Dashboard};
use super::DashboardSettings;

const PASSWORD: &str = "correct horse battery";

struct Slow {
    user: DashUser,
    /// How long an inventory or policy read takes.
    read: Duration,
    policies: Vec<PolicyVersion>,
    active: u64,
    last: watch::Sender<u64>,
}

impl DashboardData for Slow {
    fn user(&self, name: &str) -> Result<Option<DashUser>, DataError> {
        Ok((name == self.user.name).then(|| self.user.clone()))
    }
    fn agents(&self) -> Result<Vec<AgentRecord>, DataError> {
        Ok(Vec::new())
    }
    fn alerts_after(&self, _after: u64, _limit: usize) -> Result<Vec<Alert>, DataError> {
        Ok(Vec::new())
    }
    fn last_alert_index(&self) -> u64 {
        0
    }
    fn watch_alerts(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }
    fn open_by_severity(&self) -> Result<Vec<(vigil_domain::Severity, u64)>, DataError> {
        Ok(Vec::new())
    }
    fn triage(&self, _index: u64) -> Result<TriageState, DataError> {
        Ok(TriageState::default())
    }
    fn triage_alert(&self, _index: u64, _actor: &str, _action: TriageAction) -> DataFuture<'_, ()> {
        Box::pin(async { Err(DataError::Refused("no".into())) })
    }
    fn inventory(
        &self,
        _kind: Option<InventoryKind>,
        _after: Option<(InventoryKind, String)>,
        _limit: usize,
    ) -> Result<(Vec<InventoryItem>, bool), DataError> {
        std::thread::sleep(self.read);
        Ok((Vec::new(), false))
    }
    fn policies(&self) -> Result<Vec<PolicyVersion>, DataError> {
        std::thread::sleep(self.read);
        Ok(self.policies.clone())
    }
    fn active_policy_version(&self) -> u64 {
        self.active
    }
}

fn app(read: Duration, timeout: Duration, policies: Vec<PolicyVersion>, active: u64) -> Router {
    // Cheap hashing parameters: the login runs under the short timeout too.
    let params = Params::new(8, 1, 1, None).unwrap();
    let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
    let hash = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(PASSWORD.as_bytes(), &salt)
        .unwrap()
        .to_string();
    let fake = Slow {
        user: DashUser {
            name: "vic".into(),
            role: Role::Viewer,
            password_hash: hash,
            disabled: false,
        },
        read,
        policies,
        active,
        last: watch::channel(0).0,
    };
    let settings = DashboardSettings {
        request_timeout: timeout,
        ..DashboardSettings::default()
    };
    router(Dashboard::new(Arc::new(fake), settings, false))
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
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn get(app: &Router, path: &str, cookie: &str) -> (StatusCode, Value) {
    let req = Request::get(path)
        .header(header::HOST, "dash.test")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Each request the timeout gives up on (503) leaves its read running:
/// its permit must stay taken, or a viewer runs any number of exports
/// (or whole-store policy reads) at once by asking again and again.
async fn timed_out_reads_keep_their_permits(path: &str, at_once: usize) {
    let app = app(
        Duration::from_secs(3),
        Duration::from_millis(300),
        Vec::new(),
        0,
    );
    let cookie = login(&app).await;
    for _ in 0..at_once {
        let (status, _) = get(&app, path, &cookie).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    // Every permit is still held by a read that runs on.
    let (status, v) = get(&app, path, &cookie).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path}: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_the_timeout_dropped_keeps_its_permit() {
    timed_out_reads_keep_their_permits("/api/inventory.csv", super::inventory_api::EXPORTS_AT_ONCE)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_read_the_timeout_dropped_keeps_its_permit() {
    timed_out_reads_keep_their_permits("/api/policy", super::policy_api::POLICY_READS_AT_ONCE)
        .await;
    let app = app(
        Duration::from_secs(3),
        Duration::from_millis(300),
        Vec::new(),
        0,
    );
    let cookie = login(&app).await;
    for _ in 0..super::policy_api::POLICY_READS_AT_ONCE {
        assert_eq!(
            get(&app, "/api/policy/diff?from=1&to=2", &cookie).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    assert_eq!(
        get(&app, "/api/policy/diff?from=1&to=2", &cookie).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
}

fn bundle(key: &vigil_policy::SigningKey, version: u64, rules: String) -> PolicyVersion {
    let files: BTreeMap<String, String> = [("rules.yaml".to_string(), rules)].into();
    PolicyVersion {
        version,
        bundle: key.sign(version, files).to_json(),
        pushed_at_unix_nanos: 0,
        note: String::new(),
    }
}

#[tokio::test]
async fn a_diff_of_two_large_bundles_differing_throughout_is_refused_not_run() {
    let key = vigil_policy::SigningKey::generate();
    let n = super::policy_api::MAX_DIFF_INPUT_LINES;
    // No line in common: the diff's worst case.
    let a: String = (0..n).map(|i| format!("a{i}\n")).collect();
    let b: String = (0..n).map(|i| format!("b{i}\n")).collect();
    let app = app(
        Duration::ZERO,
        Duration::from_secs(10),
        vec![bundle(&key, 1, a), bundle(&key, 2, b)],
        2,
    );
    let cookie = login(&app).await;
    let started = Instant::now();
    let (status, v) = get(&app, "/api/policy/diff", &cookie).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    let why = v["error"].as_str().unwrap();
    assert!(why.contains("vigilctl policy diff"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Small bundles are still diffed.
    let app2 = self::app(
        Duration::ZERO,
        Duration::from_secs(10),
        vec![
            bundle(&key, 1, "a: 1\n".into()),
            bundle(&key, 2, "a: 2\n".into()),
        ],
        2,
    );
    let cookie = login(&app2).await;
    let (status, v) = get(&app2, "/api/policy/diff", &cookie).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["lines"].as_array().unwrap().len() > 2);
}
