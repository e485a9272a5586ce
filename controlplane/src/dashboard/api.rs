//! The JSON API the pages call: overview, findings (newest first, in
//! pages, filtered), one finding with its triage history, triage, hosts
//! (one host's page: `host_detail.rs`).
//! Every value in an answer that came from an agent is untrusted: the
//! pages put it in the DOM as text only.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use vigil_domain::{AgentRecord, Alert, SensorMode, TrustState};

use super::auth::{refuse, Authed};
use super::data::{DataError, Role, TriageAction};
use super::server::Dashboard;
use crate::store::CountKind;

/// Alerts one findings page looks at, at most, to fill itself.
pub const FINDINGS_SCAN: u64 = 20_000;
/// A host without a heartbeat for this long is offline.
pub const OFFLINE_AFTER_NANOS: i64 = 120 * 1_000_000_000;

fn data_error(e: DataError) -> Response {
    match e {
        DataError::NotFound(why) => refuse(StatusCode::NOT_FOUND, &why),
        DataError::Refused(why) => refuse(StatusCode::CONFLICT, &why),
        DataError::Unavailable(why) => refuse(StatusCode::SERVICE_UNAVAILABLE, &why),
    }
}

pub(super) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Runs blocking reads (sled) off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, DataError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(data_error(e)),
        Err(_) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, "the read failed")),
    }
}

/// The filters of the findings list and the live feed; each exact.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct FindingFilter {
    /// A host name or an agent id.
    pub host: Option<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub signal: Option<String>,
}

impl FindingFilter {
    pub fn matches(&self, a: &Alert) -> bool {
        let is = |want: &Option<String>, have: &str| {
            want.as_deref()
                .filter(|w| !w.is_empty())
                .is_none_or(|w| w == have)
        };
        let host_ok = match self.host.as_deref().filter(|h| !h.is_empty()) {
            None => true,
            Some(h) => h == a.hostname || h == a.agent_id,
        };
        host_ok
            && is(&self.rule, &a.finding.rule_id)
            && is(&self.severity, a.finding.severity.as_str())
            && is(&self.signal, a.finding.signal.as_str())
    }
}

/// An alert as the pages show it (and its triage state, when asked).
pub fn alert_json(a: &Alert) -> Value {
    let f = &a.finding;
    json!({
        "index": a.index,
        "agent_id": a.agent_id,
        "hostname": a.hostname,
        "received_at_unix_nanos": a.received_at_unix_nanos,
        "observed_at_unix_nanos": f.observed_at_unix_nanos,
        "rule_id": f.rule_id,
        "severity": f.severity.as_str(),
        "signal": f.signal.as_str(),
        "summary": f.summary,
        "action": f.action,
        "object": f.object(),
        "process": {
            "pid": f.process.pid,
            "ppid": f.process.ppid,
            "uid": f.process.uid,
            "exe": f.process.exe,
            "comm": f.process.comm,
            "argv": f.process.argv,
            "exe_sha256": f.process.exe_sha256,
            "cgroup_path": f.process.cgroup_path,
        },
    })
}

pub(super) fn host_state(a: &AgentRecord, now: i64) -> Value {
    let (trust, trust_reason) = match &a.attestation.trust {
        TrustState::Untrusted { code, reason } => ("untrusted", format!("{code}: {reason}")),
        other => (other.as_str(), String::new()),
    };
    json!({
        "agent_id": a.identity.agent_id,
        "hostname": a.identity.hostname,
        "agent_version": a.identity.agent_version,
        "sensor_mode": a.identity.sensor_mode.as_str(),
        "kernel_release": a.identity.kernel_release,
        "trust": trust,
        "trust_reason": trust_reason,
        "offline": now.saturating_sub(a.last_heartbeat_unix_nanos) > OFFLINE_AFTER_NANOS,
        "dropping": a.counters.dropped > 0 || a.spool_dropped > 0 || a.spool_full,
        "last_heartbeat_unix_nanos": a.last_heartbeat_unix_nanos,
        "first_seen_unix_nanos": a.first_seen_unix_nanos,
        "policy_version": a.policy_version,
        "policy_error": a.policy_error,
        "gpus": a.gpu.gpus.len(),
    })
}

/// The newest alerts, at most `n`, newest first.
pub(super) fn newest(d: &Dashboard, n: usize) -> Result<Vec<Alert>, DataError> {
    let last = d.data.last_alert_index();
    let from = last.saturating_sub(n as u64);
    let mut alerts = d.data.alerts_after(from, n)?;
    alerts.reverse();
    Ok(alerts)
}

fn top(counts: Vec<(String, u64)>) -> Vec<Value> {
    counts
        .into_iter()
        .map(|(name, count)| json!({ "name": name, "count": count }))
        .collect()
}

/// GET /api/overview.
pub async fn overview(State(d): State<Arc<Dashboard>>, _who: Authed) -> Response {
    let dd = d.clone();
    let result = blocking(move || {
        let now = now_nanos();
        let agents = dd.data.agents()?;
        let mut hosts = json!({
            "total": agents.len(), "trusted": 0, "untrusted": 0, "unattested": 0,
            "sensors_degraded": 0, "dropping_events": 0, "offline": 0,
        });
        for a in &agents {
            let mut bump = |k: &str| {
                if let Some(n) = hosts.get_mut(k).and_then(|v| v.as_u64()) {
                    hosts[k] = json!(n + 1);
                }
            };
            bump(a.attestation.trust.as_str());
            if a.identity.sensor_mode == SensorMode::ProcfsDegraded {
                bump("sensors_degraded");
            }
            if a.counters.dropped > 0 || a.spool_dropped > 0 || a.spool_full {
                bump("dropping_events");
            }
            if now.saturating_sub(a.last_heartbeat_unix_nanos) > OFFLINE_AFTER_NANOS {
                bump("offline");
            }
        }
        let open: Vec<Value> = dd
            .data
            .open_by_severity()?
            .into_iter()
            .map(|(s, n)| json!({ "severity": s.as_str(), "count": n }))
            .collect();
        // Every stored finding, from the counters kept at apply: the
        // current UTC hour and the 23 before it, oldest first.
        let this_hour = crate::store::hour_of(now);
        let since = this_hour.saturating_sub(23);
        let mut per_hour = [0u64; 24];
        for (h, n) in dd.data.findings_per_hour(since)? {
            if let Some(slot) = h
                .checked_sub(since)
                .and_then(|i| per_hour.get_mut(usize::try_from(i).ok()?))
            {
                *slot = n;
            }
        }
        // Hosts by agent id, shown by host name.
        let names: HashMap<&str, &str> = agents
            .iter()
            .map(|a| (a.identity.agent_id.as_str(), a.identity.hostname.as_str()))
            .collect();
        let top_hosts: Vec<Value> = dd
            .data
            .top_counts(CountKind::Agent, 10)?
            .into_iter()
            .map(|(id, count)| {
                let name = names.get(id.as_str()).filter(|n| !n.is_empty()).copied();
                json!({ "name": name.unwrap_or(&id), "id": id, "count": count })
            })
            .collect();
        Ok(json!({
            "hosts": hosts,
            "open_by_severity": open,
            "findings_per_hour": per_hour,
            "top_rules": top(dd.data.top_counts(CountKind::Rule, 10)?),
            "top_hosts": top_hosts,
            "top_executables": top(dd.data.top_counts(CountKind::Executable, 10)?),
            "last_index": dd.data.last_alert_index(),
        }))
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// The findings list's query string (numbers taken as text: a bad one is
/// ignored rather than refused).
#[derive(Debug, Default, serde::Deserialize)]
pub struct RawFindingsQuery {
    pub before: Option<String>,
    pub limit: Option<String>,
    pub host: Option<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub signal: Option<String>,
}

#[derive(Debug, Default)]
pub struct FindingsQuery {
    /// Only findings with an index below this (the next page's cursor).
    pub before: Option<u64>,
    pub limit: Option<usize>,
    pub filter: FindingFilter,
}

impl From<RawFindingsQuery> for FindingsQuery {
    fn from(q: RawFindingsQuery) -> Self {
        Self {
            before: q.before.and_then(|b| b.parse().ok()),
            limit: q.limit.and_then(|l| l.parse().ok()),
            filter: FindingFilter {
                host: q.host,
                rule: q.rule,
                severity: q.severity,
                signal: q.signal,
            },
        }
    }
}

/// One page of findings, newest first: at most `limit` (100) that pass
/// the filter, found among at most [`FINDINGS_SCAN`] alerts; `next_before`
/// continues (null at the oldest).
pub fn findings_page(d: &Dashboard, q: &FindingsQuery) -> Result<Value, DataError> {
    let limit = q.limit.unwrap_or(50).clamp(1, 100);
    let mut hi = q
        .before
        .unwrap_or(u64::MAX)
        .min(d.data.last_alert_index().saturating_add(1));
    let mut scanned = 0u64;
    let mut items = Vec::new();
    'scan: while hi > 1 && scanned < FINDINGS_SCAN {
        let window = (hi - 1).min(500);
        let lo = hi - window;
        let page = d
            .data
            .alerts_after(lo - 1, usize::try_from(window).unwrap_or(500))?;
        scanned += window;
        for a in page.iter().rev().filter(|a| a.index < hi) {
            if q.filter.matches(a) {
                items.push(a.clone());
                if items.len() >= limit {
                    hi = a.index;
                    break 'scan;
                }
            }
        }
        hi = lo;
    }
    let mut out = Vec::with_capacity(items.len());
    for a in &items {
        let mut v = alert_json(a);
        let t = d.data.triage(a.index)?;
        v["status"] = json!(t.status);
        v["assignee"] = json!(t.assignee);
        out.push(v);
    }
    Ok(json!({
        "items": out,
        "next_before": (hi > 1).then_some(hi),
        "scanned": scanned,
    }))
}

/// GET /api/findings.
pub async fn findings(
    State(d): State<Arc<Dashboard>>,
    _who: Authed,
    Query(q): Query<RawFindingsQuery>,
) -> Response {
    let q = FindingsQuery::from(q);
    match blocking(move || findings_page(&d, &q)).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// GET /api/findings/{index}: the finding and its triage history.
pub async fn finding(
    State(d): State<Arc<Dashboard>>,
    _who: Authed,
    Path(index): Path<u64>,
) -> Response {
    let result = blocking(move || {
        let Some(a) = d
            .data
            .alerts_after(index.saturating_sub(1), 1)?
            .into_iter()
            .find(|a| a.index == index)
        else {
            return Err(DataError::NotFound(format!("no finding {index}")));
        };
        let t = d.data.triage(index)?;
        let mut v = alert_json(&a);
        v["status"] = json!(t.status);
        v["assignee"] = json!(t.assignee);
        v["history"] = serde_json::to_value(&t.history).unwrap_or_default();
        Ok(v)
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct TriageRequest {
    /// "ack", "assign", "comment" or "resolve".
    pub action: String,
    /// The assignee, the comment or the resolution note.
    #[serde(default)]
    pub text: String,
}

/// The longest comment or note.
pub const MAX_TRIAGE_TEXT: usize = 4096;

/// POST /api/findings/{index}/triage (analyst or admin).
pub async fn triage(
    State(d): State<Arc<Dashboard>>,
    who: Authed,
    Path(index): Path<u64>,
    Json(req): Json<TriageRequest>,
) -> Response {
    if let Err(r) = who.require(Role::Analyst) {
        return r;
    }
    if req.text.len() > MAX_TRIAGE_TEXT {
        return refuse(StatusCode::BAD_REQUEST, "the text is over 4096 bytes");
    }
    let text = req.text.trim().to_string();
    let action = match req.action.as_str() {
        "ack" => TriageAction::Ack,
        "assign" if !text.is_empty() && text.len() <= 255 => TriageAction::Assign(text),
        "comment" if !text.is_empty() => TriageAction::Comment(text),
        "resolve" => TriageAction::Resolve(text),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "action: ack, assign (a name), comment (a text) or resolve",
            )
        }
    };
    match d.data.triage_alert(index, &who.user.name, action).await {
        Ok(()) => Json(json!({ "ok": true })).into_response(),
        Err(e) => data_error(e),
    }
}

/// GET /api/hosts.
pub async fn hosts(State(d): State<Arc<Dashboard>>, _who: Authed) -> Response {
    let result = blocking(move || {
        let now = now_nanos();
        let mut agents = d.data.agents()?;
        agents.sort_by(|a, b| a.identity.hostname.cmp(&b.identity.hostname));
        Ok(json!({ "hosts": agents.iter().map(|a| host_state(a, now)).collect::<Vec<_>>() }))
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}
