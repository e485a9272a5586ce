//! The pages, their script and style, embedded at build time from
//! `controlplane/assets/dashboard/` (no build step, nothing fetched). Only
//! these fixed paths exist: no path reaches the file system.

use std::sync::Arc;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::server::Dashboard;

const HTML: &str = "text/html; charset=utf-8";

/// (path, content type, body).
pub const ASSETS: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../assets/dashboard/index.html")),
    (
        "/login",
        HTML,
        include_str!("../../assets/dashboard/login.html"),
    ),
    (
        "/findings",
        HTML,
        include_str!("../../assets/dashboard/findings.html"),
    ),
    (
        "/finding",
        HTML,
        include_str!("../../assets/dashboard/finding.html"),
    ),
    (
        "/hosts",
        HTML,
        include_str!("../../assets/dashboard/hosts.html"),
    ),
    (
        "/host",
        HTML,
        include_str!("../../assets/dashboard/host.html"),
    ),
    (
        "/inventory",
        HTML,
        include_str!("../../assets/dashboard/inventory.html"),
    ),
    (
        "/policy",
        HTML,
        include_str!("../../assets/dashboard/policy.html"),
    ),
    (
        "/audit",
        HTML,
        include_str!("../../assets/dashboard/audit.html"),
    ),
    (
        "/static/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard/app.js"),
    ),
    (
        "/static/app.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/dashboard/app.css"),
    ),
    (
        "/static/pages.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/dashboard/pages.js"),
    ),
];

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

pub fn routes() -> Router<Arc<Dashboard>> {
    ASSETS
        .iter()
        .fold(Router::new(), |r, &(path, content_type, body)| {
            r.route(path, get(move || async move { asset(content_type, body) }))
        })
}
