//! The AI inventory page's API: every AI runtime, model file and AI
//! endpoint seen across the fleet (approved or not), in pages in (kind,
//! key) order, one kind or all; and the whole inventory as CSV or a
//! CycloneDX 1.6 ML-BOM (`inventory_export.rs`, what `vigilctl inventory
//! export` gets) as a download.
//!
//! Every value here came from the fleet (file names, model metadata, host
//! names): the page puts it in the DOM as text only, the CSV defuses
//! formulas, the JSON is serde's.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use vigil_domain::{InventoryItem, InventoryKind};

use super::api::{blocking, now_nanos};
use super::auth::{refuse, Authed};
use super::data::{DataError, Role};
use super::server::Dashboard;

/// Items one page holds at most (and by default).
pub const MAX_PAGE: usize = 200;
pub const DEFAULT_PAGE: usize = 50;
/// Hosts and paths of one item a page carries at most (the exports carry
/// every one the store keeps).
pub const MAX_LISTED: usize = 20;
/// Exports rendered at once on a node (each reads the whole inventory);
/// past it 429. The permit is held by the blocking read itself, so a
/// request the timeout drops does not free it while its read runs on.
pub const EXPORTS_AT_ONCE: usize = 2;

/// The query string (taken as text: a bad number is the default).
#[derive(Debug, Default, serde::Deserialize)]
pub struct InventoryQuery {
    /// "runtime", "model" or "endpoint"; empty or absent: every kind.
    pub kind: Option<String>,
    /// The cursor: `<kind>:<key>` of the previous page's last item.
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// `<kind>:<key>`, the cursor of the item after which a page starts.
pub fn cursor(i: &InventoryItem) -> Option<String> {
    i.kind.map(|k| format!("{}:{}", k.as_str(), i.key))
}

fn parse_cursor(s: &str) -> Option<(InventoryKind, String)> {
    let (kind, key) = s.split_once(':')?;
    Some((InventoryKind::parse(kind)?, key.to_string()))
}

fn capped(v: &[String]) -> Value {
    json!(v.iter().take(MAX_LISTED).collect::<Vec<_>>())
}

/// An item as the page shows it.
pub fn item_json(i: &InventoryItem) -> Value {
    let mut v = json!({
        "kind": i.kind.map_or("unknown", InventoryKind::as_str),
        "key": i.key,
        "name": i.name,
        "approved": i.approved,
        "sha256": i.sha256().unwrap_or(""),
        "hosts": capped(&i.hosts),
        "hosts_named": i.hosts.len(),
        "unnamed_host_sightings": i.unnamed_host_sightings,
        "paths": capped(&i.paths),
        "paths_named": i.paths.len(),
        "first_seen_unix_nanos": i.first_seen_unix_nanos,
        "last_seen_unix_nanos": i.last_seen_unix_nanos,
        "sightings": i.sightings,
    });
    if let Some(m) = i.model.as_deref() {
        v["model"] = json!({
            "format": m.format,
            "architecture": m.architecture,
            "name": m.name,
            "size_label": m.size_label,
            "quantization": m.quantization,
            "parameters": m.parameters,
            "risk": m.risk.as_str(),
            "dangerous_imports": m.dangerous_imports.iter().take(MAX_LISTED).collect::<Vec<_>>(),
        });
    }
    v
}

/// GET /api/inventory?kind=&after=&limit=: one page (at most
/// [`MAX_PAGE`]); `next_after` continues (null on the last page, which
/// ends with what approved workloads name and no finding showed yet).
pub async fn inventory(
    State(d): State<Arc<Dashboard>>,
    who: Authed,
    Query(q): Query<InventoryQuery>,
) -> Response {
    if let Err(r) = who.require(Role::Viewer) {
        return r;
    }
    let kind = match q.kind.as_deref().filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => match InventoryKind::parse(k) {
            Some(k) => Some(k),
            None => return refuse(StatusCode::BAD_REQUEST, "kind: runtime, model or endpoint"),
        },
    };
    let after = match q.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => match parse_cursor(a) {
            Some(c) => Some(c),
            None => return refuse(StatusCode::BAD_REQUEST, "after: <kind>:<key>"),
        },
    };
    let limit = q
        .limit
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(DEFAULT_PAGE)
        .clamp(1, MAX_PAGE);
    let result = blocking(move || {
        let (items, more) = d.data.inventory(kind, after, limit)?;
        let next_after = if more {
            items.last().and_then(cursor)
        } else {
            None
        };
        Ok(json!({
            "items": items.iter().map(item_json).collect::<Vec<_>>(),
            "next_after": next_after,
            "kind": kind.map(InventoryKind::as_str),
        }))
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Clone, Copy)]
enum Format {
    Csv,
    CycloneDx,
}

async fn export(d: Arc<Dashboard>, who: Authed, format: Format) -> Response {
    if let Err(r) = who.require(Role::Viewer) {
        return r;
    }
    let Ok(permit) = d.exports.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "other exports are running; try again",
        );
    };
    let result = blocking(move || {
        let _permit = permit;
        // Every item the store keeps (it holds at most MAX_INVENTORY_ITEMS).
        let (items, _) = d.data.inventory(None, None, usize::MAX)?;
        match format {
            Format::Csv => crate::inventory_export::to_csv(&items)
                .map_err(|e| DataError::Unavailable(format!("csv: {e}"))),
            Format::CycloneDx => {
                let serial = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
                let bom = crate::inventory_export::to_cyclonedx(&items, serial, now_nanos());
                serde_json::to_vec_pretty(&bom)
                    .map_err(|e| DataError::Unavailable(format!("json: {e}")))
            }
        }
    })
    .await;
    let body = match result {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (content_type, file) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "vigil-ai-inventory.csv"),
        Format::CycloneDx => (
            "application/vnd.cyclonedx+json; version=1.6",
            "vigil-ai-inventory.cdx.json",
        ),
    };
    (
        [
            (CONTENT_TYPE, content_type.to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// GET /api/inventory.csv: the whole inventory as CSV, a download.
pub async fn inventory_csv(State(d): State<Arc<Dashboard>>, who: Authed) -> Response {
    export(d, who, Format::Csv).await
}

/// GET /api/inventory.cdx.json: the whole inventory as a CycloneDX 1.6
/// ML-BOM, a download.
pub async fn inventory_cyclonedx(State(d): State<Arc<Dashboard>>, who: Authed) -> Response {
    export(d, who, Format::CycloneDx).await
}
