//! The audit page's API: the hash-chained audit log in pages, newest
//! first (actor, action, target, detail, index, hashes), and the chain's
//! verification (`audit_chain`, what `VerifyAudit` runs, checked in
//! pieces so the whole chain is never held at once).
//!
//! Actors, targets and details are text (an agent id, a note, a host
//! name): the page shows them as text.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use vigil_domain::AuditEntry;

use super::api::blocking;
use super::auth::{refuse, Authed};
use super::data::Role;
use super::server::Dashboard;
use crate::audit_chain::ChainCheck;

/// Entries one page holds at most, and by default.
pub const MAX_PAGE: u64 = 200;
pub const DEFAULT_PAGE: u64 = 50;
/// Entries one verification reads at a time, and at most in all (past it
/// the answer says how far it got).
pub const VERIFY_CHUNK: usize = 1_000;
pub const MAX_VERIFY: u64 = 2_000_000;

/// One verification at a time on a node; another asked meanwhile is 429.
static VERIFYING: Semaphore = Semaphore::const_new(1);

/// The query string (numbers as text: a bad one is the default).
#[derive(Debug, Default, serde::Deserialize)]
pub struct AuditQuery {
    /// Only entries with an index below this (the next page's cursor).
    pub before: Option<String>,
    pub limit: Option<String>,
}

pub fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "index": e.index,
        "at_unix_nanos": e.at_unix_nanos,
        "actor": e.actor,
        "action": e.action,
        "target": e.subject,
        "detail": e.detail,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}

/// GET /api/audit?before=&limit=: at most [`MAX_PAGE`] entries, newest
/// first; `next_before` continues (null at the first entry).
pub async fn audit(
    State(d): State<Arc<Dashboard>>,
    who: Authed,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Err(r) = who.require(Role::Viewer) {
        return r;
    }
    let before = q.before.and_then(|b| b.parse::<u64>().ok());
    let limit = q
        .limit
        .and_then(|l| l.parse::<u64>().ok())
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    let result = blocking(move || {
        let total = d.data.audit_entries()?;
        // Entries are dense from 1: this page is [lo, hi).
        let hi = before.unwrap_or(u64::MAX).min(total.saturating_add(1));
        let lo = hi.saturating_sub(limit).max(1);
        let mut page = if hi > lo {
            d.data
                .audit_after(lo - 1, usize::try_from(hi - lo).unwrap_or(0))?
        } else {
            Vec::new()
        };
        page.retain(|e| e.index >= lo && e.index < hi);
        page.reverse();
        Ok(json!({
            "entries": page.iter().map(entry_json).collect::<Vec<_>>(),
            "total": total,
            "next_before": (lo > 1 && hi > lo).then_some(lo),
        }))
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// GET /api/audit/verify: the chain checked from its first entry (at most
/// [`MAX_VERIFY`] entries): `ok`, the entries that held, and the first
/// error.
pub async fn verify(State(d): State<Arc<Dashboard>>, who: Authed) -> Response {
    if let Err(r) = who.require(Role::Viewer) {
        return r;
    }
    let Ok(permit) = VERIFYING.try_acquire() else {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "a verification is running; try again",
        );
    };
    let result = blocking(move || {
        let _permit = permit;
        let total = d.data.audit_entries()?;
        let mut check = ChainCheck::default();
        let mut error = String::new();
        while check.checked() < total.min(MAX_VERIFY) {
            let page = d.data.audit_after(check.checked(), VERIFY_CHUNK)?;
            if page.is_empty() {
                error = format!("entry {} is missing", check.checked() + 1);
                break;
            }
            if let Err(e) = check.feed(&page) {
                error = e;
                break;
            }
        }
        let complete = error.is_empty() && check.checked() >= total;
        Ok(json!({
            "entries": total,
            "checked": check.checked(),
            "ok": error.is_empty(),
            "complete": complete,
            "error": error,
            "at_most": MAX_VERIFY,
        }))
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}
