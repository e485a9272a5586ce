//! The dashboard's listener: its accept loop and its router.
//!
//! The accept loop never waits on a client: past `max_connections` in all,
//! or `max_connections_per_address` from one address (an IPv6 one by its
//! /64), a new connection is closed at once; a TLS handshake and each request head get
//! `header_timeout`; a connection lives at most `connection_lifetime`.
//! hyper answers a malformed request or an oversized head (16 KiB) with an
//! error status; a body over `max_body_bytes` is 413; an API request
//! unanswered after `request_timeout` is 503. Every answer carries the
//! security headers (`security_headers`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::auth::{refuse, Peer};
use super::config::{DashboardSettings, DashboardTransport};
use super::data::DashboardData;
use super::session::{client_key, LoginLimiter, Sessions};

/// The Content-Security-Policy of every answer: nothing but this origin's
/// own files runs or loads, no inline script or style, no framing.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// What the handlers share.
pub struct Dashboard {
    pub data: Arc<dyn DashboardData>,
    pub sessions: Sessions,
    pub limiter: LoginLimiter,
    pub settings: DashboardSettings,
    /// Cookies get `Secure` (served over TLS).
    pub secure_cookies: bool,
    pub dummy_hash: String,
    /// Password verifications at once.
    pub verifying: Arc<Semaphore>,
    /// Live feeds open on this node.
    pub live_open: AtomicUsize,
    /// Inventory exports rendered at once (`inventory_api`); a permit
    /// lives as long as the read, not the request, which a timeout drops.
    pub exports: Arc<Semaphore>,
    /// Policy reads (every stored bundle) and diffs at once (`policy_api`).
    pub policy_reads: Arc<Semaphore>,
    /// Host pages (each scans recent alerts and audit entries) read at
    /// once (`host_detail`); the permit lives as long as the read.
    pub host_reads: Arc<Semaphore>,
}

impl Dashboard {
    pub fn new(data: Arc<dyn DashboardData>, settings: DashboardSettings, tls: bool) -> Arc<Self> {
        Arc::new(Self {
            data,
            sessions: Sessions::new(
                settings.idle_timeout,
                settings.absolute_timeout,
                settings.max_sessions,
                settings.max_sessions_per_user,
            ),
            limiter: LoginLimiter::new(
                settings.failed_logins_per_minute,
                settings.failed_logins_per_address_per_minute,
                settings.failed_logins_per_name_per_minute,
            ),
            secure_cookies: tls,
            dummy_hash: super::auth::dummy_hash(),
            verifying: Arc::new(Semaphore::new(4)),
            live_open: AtomicUsize::new(0),
            exports: Arc::new(Semaphore::new(super::inventory_api::EXPORTS_AT_ONCE)),
            policy_reads: Arc::new(Semaphore::new(super::policy_api::POLICY_READS_AT_ONCE)),
            host_reads: Arc::new(Semaphore::new(super::host_detail::HOST_READS_AT_ONCE)),
            settings,
        })
    }
}

/// The dashboard's routes, with its limits and headers.
pub fn router(d: Arc<Dashboard>) -> Router {
    let timeout = d.settings.request_timeout;
    let api = Router::new()
        .route("/api/login", post(super::auth::login))
        .route("/api/logout", post(super::auth::logout))
        .route("/api/session", get(super::auth::session))
        .route("/api/overview", get(super::api::overview))
        .route("/api/findings", get(super::api::findings))
        .route("/api/findings/{index}", get(super::api::finding))
        .route("/api/findings/{index}/triage", post(super::api::triage))
        .route("/api/hosts", get(super::api::hosts))
        .route("/api/inventory", get(super::inventory_api::inventory))
        .route(
            "/api/inventory.csv",
            get(super::inventory_api::inventory_csv),
        )
        .route(
            "/api/inventory.cdx.json",
            get(super::inventory_api::inventory_cyclonedx),
        )
        .route("/api/policy", get(super::policy_api::policy))
        .route("/api/policy/diff", get(super::policy_api::policy_diff))
        .route("/api/audit", get(super::audit_api::audit))
        .route("/api/audit/verify", get(super::audit_api::verify))
        .route("/api/hosts/{agent_id}", get(super::host_detail::host))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                match tokio::time::timeout(timeout, next.run(req)).await {
                    Ok(resp) => resp,
                    Err(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "timed out"),
                }
            },
        ));
    let loopback_hosts_only = d.settings.loopback_hosts_only;
    Router::new()
        .merge(api)
        // The live feed runs for as long as its session; not under the timeout.
        .route("/api/findings/live", get(super::live::live))
        .merge(super::assets::routes())
        .fallback(|| async { refuse(StatusCode::NOT_FOUND, "no such page") })
        .layer(DefaultBodyLimit::max(d.settings.max_body_bytes))
        .layer(middleware::from_fn(
            move |req: Request, next: Next| async move {
                if loopback_hosts_only && !loopback_host(&req) {
                    return refuse(
                        StatusCode::MISDIRECTED_REQUEST,
                        "this dashboard answers only to 127.0.0.1, [::1] or localhost",
                    );
                }
                next.run(req).await
            },
        ))
        .layer(middleware::from_fn(security_headers))
        .with_state(d)
}

/// Whether the request's `Host` is a loopback address or `localhost`
/// (with or without a port): what a browser sends to a loopback listener
/// unless a DNS-rebinding page sent it.
fn loopback_host(req: &Request) -> bool {
    let Some(host) = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || port.starts_with(':') => inside,
            _ => return false,
        },
        None => host.split_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The headers every answer carries.
async fn security_headers(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if api || !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Connections open per client address (an IPv6 address by its /64).
/// Holds at most as many keys as connections are open.
struct PerAddress {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One connection counted against its address, until dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    key: String,
}

impl PerAddress {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = client_key(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            table: self.clone(),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .table
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Serves the dashboard on `listener` until the task is dropped.
pub async fn serve_dashboard(
    listener: TcpListener,
    data: Arc<dyn DashboardData>,
    transport: DashboardTransport,
    settings: DashboardSettings,
) {
    let mut settings = settings;
    // Plaintext on loopback: only loopback host names (DNS rebinding).
    settings.loopback_hosts_only |=
        !transport.is_tls() && listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let d = Dashboard::new(data, settings.clone(), transport.is_tls());
    let app = router(d);
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let per_address = Arc::new(PerAddress {
        max: settings.max_connections_per_address.max(1),
        open: Mutex::new(HashMap::new()),
    });
    let tls = match &transport {
        DashboardTransport::Tls(config) => Some(tokio_rustls::TlsAcceptor::from(config.clone())),
        DashboardTransport::Plain => None,
    };
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "dashboard: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let Some(slot) = per_address.take(peer.ip()) else {
            tracing::debug!(%peer, "dashboard: too many connections from this address");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let service = app.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(Peer(peer));
                req
            });
            let service = TowerToHyperService::new(service.map_err(|e: Infallible| e));
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(settings.header_timeout)
                .max_buf_size(16 * 1024);
            let served = async {
                match tls {
                    Some(acceptor) => {
                        let stream = match tokio::time::timeout(
                            settings.header_timeout,
                            acceptor.accept(stream),
                        )
                        .await
                        {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "dashboard: TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            };
            let _ = tokio::time::timeout(settings.connection_lifetime, served).await;
        });
    }
}
