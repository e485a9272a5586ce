//! GET /api/findings/live: server-sent events, one `finding` event per new
//! alert that passes the filters (the same as the list's), from the node's
//! alert watch, so a finding shows within moments of its apply. `after`
//! (an alert index) resumes without a gap; by default only alerts applied
//! after the request are sent. At most `max_live_total` feeds on a node and
//! `max_live_per_session` per session (429 past either); a feed ends when
//! its session expires or its user is removed, disabled or given a new
//! password (checked at least every 5 s).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::api::{alert_json, FindingFilter};
use super::auth::{refuse, Authed};
use super::server::Dashboard;

/// Alerts read at a time.
const PAGE: usize = 256;
/// How often a quiet feed checks that its session still holds.
const RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, Default, serde::Deserialize)]
pub struct LiveQuery {
    pub after: Option<String>,
    pub host: Option<String>,
    pub rule: Option<String>,
    pub severity: Option<String>,
    pub signal: Option<String>,
}

/// Holds a feed's place in the counts until it ends.
struct LiveSlot {
    d: Arc<Dashboard>,
    session: String,
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        self.d.live_open.fetch_sub(1, Ordering::AcqRel);
        self.d.sessions.close_live(&self.session);
    }
}

pub async fn live(
    State(d): State<Arc<Dashboard>>,
    who: Authed,
    Query(q): Query<LiveQuery>,
) -> Response {
    let max_total = d.settings.max_live_total;
    if d.live_open
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max_total).then_some(n + 1)
        })
        .is_err()
    {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many live feeds on this node",
        );
    }
    if !d
        .sessions
        .open_live(&who.session_id, d.settings.max_live_per_session)
    {
        d.live_open.fetch_sub(1, Ordering::AcqRel);
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many live feeds for this session",
        );
    }
    let slot = LiveSlot {
        d: d.clone(),
        session: who.session_id.clone(),
    };
    let filter = FindingFilter {
        host: q.host,
        rule: q.rule,
        severity: q.severity,
        signal: q.signal,
    };
    let mut cursor = q
        .after
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or_else(|| d.data.last_alert_index());
    let (tx, rx) = mpsc::channel::<Result<Event, Infallible>>(64);
    let session_id = who.session_id;
    let user = who.user.name;
    tokio::spawn(async move {
        let _slot = slot;
        let d = _slot.d.clone();
        let mut changed = d.data.watch_alerts();
        loop {
            changed.borrow_and_update();
            let still = d.sessions.get(&session_id, false).is_some_and(|s| {
                matches!(d.data.user(&user), Ok(Some(u)) if !u.disabled && s.holds(&u.password_hash))
            });
            if !still {
                let _ = tx
                    .send(Ok(Event::default().event("end").data("session ended")))
                    .await;
                return;
            }
            let page = {
                let d = d.clone();
                match tokio::task::spawn_blocking(move || d.data.alerts_after(cursor, PAGE)).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        let _ = tx
                            .send(Ok(Event::default().event("end").data("reading failed")))
                            .await;
                        return;
                    }
                }
            };
            if page.is_empty() {
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = tx.closed() => return,
                }
                continue;
            }
            for a in page {
                cursor = a.index;
                if !filter.matches(&a) {
                    continue;
                }
                let event = Event::default()
                    .event("finding")
                    .id(a.index.to_string())
                    .json_data(alert_json(&a));
                let Ok(event) = event else { continue };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        }
    });
    Sse::new(ReceiverStream::new(rx))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
