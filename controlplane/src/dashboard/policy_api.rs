//! The policy page's API: the active bundle version, the stored versions
//! (newest first) with when each was pushed, its note, signer and digest,
//! and who pushed it (the `policy.push`/`policy.rollback` audit entry
//! naming it, among the newest [`AUDIT_SCAN`] entries); and the diff of
//! two versions (`vigil_policy::bundle_diff`, what `vigilctl policy diff`
//! prints) as lines, the active one against the one before by default.
//!
//! The bundles' files, notes and actors are text the page shows as text.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use vigil_policy::Bundle;

use super::api::blocking;
use super::auth::{refuse, Authed};
use super::data::{DataError, PolicyVersion, Role};
use super::server::Dashboard;

/// Versions the list carries at most (the newest).
pub const MAX_VERSIONS: usize = 200;
/// Audit entries looked at (the newest) to find who pushed each version.
pub const AUDIT_SCAN: u64 = 20_000;
/// Diff lines an answer carries at most.
pub const MAX_DIFF_LINES: usize = 5_000;
/// Lines (both sides, of the files that differ) the page diffs at most:
/// the diff's cost grows with their square, so two large bundles that
/// differ throughout would hold a blocking thread for minutes. Past it the
/// answer is 409 and points at `vigilctl policy diff`.
pub const MAX_DIFF_INPUT_LINES: usize = 20_000;
/// Policy reads (each reads every stored bundle) and diffs at once on a
/// node; past it 429. The permit is held by the blocking read itself.
pub const POLICY_READS_AT_ONCE: usize = 2;

fn policy_permit(d: &Dashboard) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    d.policy_reads.clone().try_acquire_owned().map_err(|_| {
        refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "other policy reads are running; try again",
        )
    })
}

/// Who pushed each version: version → (actor, action, audit index), from
/// the newest [`AUDIT_SCAN`] audit entries.
fn pushers(d: &Dashboard) -> Result<HashMap<u64, (String, String, u64)>, DataError> {
    let last = d.data.audit_entries()?;
    let mut after = last.saturating_sub(AUDIT_SCAN);
    let mut by = HashMap::new();
    while after < last {
        let page = d.data.audit_after(after, 1000)?;
        let Some(end) = page.last().map(|e| e.index) else {
            break;
        };
        for e in page {
            if e.action != "policy.push" && e.action != "policy.rollback" {
                continue;
            }
            if let Some(v) = e
                .subject
                .strip_prefix("policy version ")
                .and_then(|v| v.parse::<u64>().ok())
            {
                // The newest entry naming a version wins.
                by.insert(v, (e.actor, e.action, e.index));
            }
        }
        after = end;
    }
    Ok(by)
}

fn version_json(
    p: &PolicyVersion,
    active: u64,
    pushers: &HashMap<u64, (String, String, u64)>,
) -> Value {
    let bundle = Bundle::from_json(&p.bundle).ok();
    let (pushed_by, action, audit_index) = match pushers.get(&p.version) {
        Some((actor, action, index)) => (actor.as_str(), action.as_str(), Some(*index)),
        None => ("", "", None),
    };
    json!({
        "version": p.version,
        "active": p.version == active,
        "pushed_at_unix_nanos": p.pushed_at_unix_nanos,
        "note": p.note,
        "signer": bundle.as_ref().map(|b| b.signer.clone()).unwrap_or_default(),
        "digest": bundle.as_ref().map(Bundle::digest).unwrap_or_default(),
        "files": bundle.as_ref().map_or(0, |b| b.files.len()),
        "pushed_by": pushed_by,
        "audit_action": action,
        "audit_index": audit_index,
    })
}

/// GET /api/policy: the active version and the newest [`MAX_VERSIONS`]
/// versions, newest first.
pub async fn policy(State(d): State<Arc<Dashboard>>, who: Authed) -> Response {
    if let Err(r) = who.require(Role::Viewer) {
        return r;
    }
    let permit = match policy_permit(&d) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = blocking(move || {
        let _permit = permit;
        let active = d.data.active_policy_version();
        let mut versions = d.data.policies()?;
        let total = versions.len();
        versions.reverse();
        versions.truncate(MAX_VERSIONS);
        let pushers = pushers(&d)?;
        let previous = versions
            .iter()
            .map(|p| p.version)
            .filter(|v| *v < active)
            .max();
        Ok(json!({
            "active_version": active,
            "previous_version": previous,
            "versions": versions.iter().map(|p| version_json(p, active, &pushers)).collect::<Vec<_>>(),
            "versions_total": total,
            "audit_scanned_at_most": AUDIT_SCAN,
        }))
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Debug, Default, serde::Deserialize)]
pub struct DiffQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A diff line's class: "file" (a `---`/`+++` header), "hunk" (`@@`),
/// "add", "del" or "ctx".
pub fn line_class(line: &str) -> &'static str {
    if line.starts_with("+++ ") || line.starts_with("--- ") {
        "file"
    } else if line.starts_with("@@") {
        "hunk"
    } else if line.starts_with('+') {
        "add"
    } else if line.starts_with('-') {
        "del"
    } else {
        "ctx"
    }
}

/// The lines of the files that differ between `a` and `b`, both sides.
pub fn differing_lines(a: &Bundle, b: &Bundle) -> usize {
    let lines = |f: Option<&String>| f.map_or(0, |t| t.lines().count());
    a.files
        .keys()
        .chain(b.files.keys().filter(|k| !a.files.contains_key(*k)))
        .filter(|k| a.files.get(*k) != b.files.get(*k))
        .map(|k| lines(a.files.get(k)) + lines(b.files.get(k)))
        .sum()
}

/// The diff of two versions as classed lines, at most [`MAX_DIFF_LINES`].
pub fn diff_lines(from: u64, a: &Bundle, to: u64, b: &Bundle) -> (Vec<Value>, bool) {
    let text = vigil_policy::bundle_diff(from, &a.files, to, &b.files);
    let mut lines = Vec::new();
    let mut truncated = false;
    for line in text.lines() {
        if lines.len() == MAX_DIFF_LINES {
            truncated = true;
            break;
        }
        lines.push(json!({ "class": line_class(line), "text": line }));
    }
    (lines, truncated)
}

/// GET /api/policy/diff?from=&to=: `to` defaults to the active version,
/// `from` to the newest version before `to`.
pub async fn policy_diff(
    State(d): State<Arc<Dashboard>>,
    who: Authed,
    Query(q): Query<DiffQuery>,
) -> Response {
    if let Err(r) = who.require(Role::Viewer) {
        return r;
    }
    let parse = |v: Option<String>| -> Result<Option<u64>, Response> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(s) => s
                .parse()
                .map(Some)
                .map_err(|_| refuse(StatusCode::BAD_REQUEST, "from, to: version numbers")),
        }
    };
    let (from, to) = match (parse(q.from), parse(q.to)) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let permit = match policy_permit(&d) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = blocking(move || {
        let _permit = permit;
        let versions = d.data.policies()?;
        let to = to.unwrap_or_else(|| d.data.active_policy_version());
        let from = from.or_else(|| versions.iter().map(|p| p.version).filter(|v| *v < to).max());
        let bundle = |v: u64| -> Result<Bundle, DataError> {
            let p = versions
                .iter()
                .find(|p| p.version == v)
                .ok_or_else(|| DataError::NotFound(format!("no policy version {v}")))?;
            Bundle::from_json(&p.bundle)
                .map_err(|e| DataError::Unavailable(format!("policy version {v}: {e}")))
        };
        let Some(from) = from else {
            return Err(DataError::NotFound(format!(
                "no policy version before {to} to compare with"
            )));
        };
        let (a, b) = (bundle(from)?, bundle(to)?);
        let n = differing_lines(&a, &b);
        if n > MAX_DIFF_INPUT_LINES {
            return Err(DataError::Refused(format!(
                "v{from} and v{to} differ in files of {n} lines, more than the {MAX_DIFF_INPUT_LINES} this page compares: use vigilctl policy diff"
            )));
        }
        let (lines, truncated) = diff_lines(from, &a, to, &b);
        Ok(json!({ "from": from, "to": to, "lines": lines, "truncated": truncated }))
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}
