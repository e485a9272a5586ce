//! Login, logout and the session a request belongs to.
//!
//! A password is verified with argon2 against the user record read from
//! the replicated state; an unknown or disabled user is verified against a
//! dummy hash of the same cost, so the answer takes as long. After
//! `failed_logins_per_minute` failures for a name, or from an address, a
//! login is answered 429 (without looking at the password). Every request
//! re-reads its user: one removed, disabled or demoted loses access (or
//! the role) at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rand::RngCore;

use super::data::{DashUser, Role};
use super::server::Dashboard;
use super::session::cookie_name;

/// The client's address, put in every request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// An error answer: a status and a short JSON reason.
pub fn refuse(status: StatusCode, why: &str) -> Response {
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}

/// A hash of a random password at argon2's default cost (what users'
/// hashes are made with), verified against when the user is unknown.
pub fn dummy_hash() -> String {
    let mut salt = [0u8; 16];
    let mut password = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut password);
    let salt = SaltString::encode_b64(&salt)
        .unwrap_or_else(|_| SaltString::from_b64("c2FsdHNhbHRzYWx0").expect("a valid salt"));
    Argon2::default()
        .hash_password(&password, &salt)
        .map(|h| h.to_string())
        .unwrap_or_default()
}

fn verify(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// The values of the session cookies (named `name`) the request carries.
pub fn session_cookies(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name && !value.is_empty() && value.len() <= 128).then(|| value.to_string())
        })
        .collect()
}

fn cookie(d: &Dashboard, value: &str, max_age: u64) -> HeaderValue {
    let secure = if d.secure_cookies { "; Secure" } else { "" };
    let name = cookie_name(d.secure_cookies);
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("vigil_session=; Max-Age=0"))
}

/// The logged-in caller of a request: its session and its user, as the
/// state holds it now. For a state-changing method, the request also
/// passed the CSRF checks. Refuses with 401 (no valid session, or the
/// user is gone or disabled) or 403 (CSRF).
pub struct Authed {
    pub session_id: String,
    pub csrf: String,
    pub user: DashUser,
}

impl Authed {
    /// 403 unless the user's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), Response> {
        if self.user.role >= role {
            Ok(())
        } else {
            Err(refuse(
                StatusCode::FORBIDDEN,
                &format!("this needs the {} role", role.as_str()),
            ))
        }
    }
}

impl FromRequestParts<Arc<Dashboard>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        d: &Arc<Dashboard>,
    ) -> Result<Self, Self::Rejection> {
        let found = session_cookies(&parts.headers, cookie_name(d.secure_cookies))
            .into_iter()
            .find_map(|id| d.sessions.get(&id, true).map(|s| (id, s)));
        let Some((session_id, session)) = found else {
            return Err(refuse(StatusCode::UNAUTHORIZED, "not logged in"));
        };
        if super::csrf::changes_state(&parts.method)
            && !(super::csrf::same_origin(&parts.headers)
                && super::csrf::token_matches(&parts.headers, &session.csrf))
        {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token, or another origin",
            ));
        }
        // A new password (or a user removed and made anew) ends the
        // sessions made with the old one.
        let user = match d.data.user(&session.user) {
            Ok(Some(u)) if !u.disabled && session.holds(&u.password_hash) => u,
            Ok(_) => {
                d.sessions.remove(&session_id);
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "the user is gone or disabled, or its password changed",
                ));
            }
            Err(e) => return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
        };
        Ok(Authed {
            session_id,
            csrf: session.csrf,
            user,
        })
    }
}

#[derive(serde::Deserialize)]
pub struct LoginRequest {
    pub name: String,
    pub password: String,
}

fn who_value(name: &str, role: Role, csrf: &str) -> serde_json::Value {
    serde_json::json!({ "name": name, "role": role.as_str(), "csrf": csrf })
}

/// POST /api/login.
pub async fn login(
    State(d): State<Arc<Dashboard>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Json(req): Json<LoginRequest>,
) -> Response {
    if !super::csrf::same_origin(&headers) {
        return refuse(StatusCode::FORBIDDEN, "another origin");
    }
    if req.name.is_empty() || req.name.len() > 255 || req.password.len() > 1024 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a name (1 to 255 bytes) and a password (at most 1024)",
        );
    }
    let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(p)| p.0.ip());
    // Counted as a failure from here until it succeeds: guesses sent at
    // once cannot all pass this check before the first fails.
    if !d.limiter.attempt(&req.name, ip) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins: wait a minute",
        );
    }
    let user = match d.data.user(&req.name) {
        Ok(u) => u.filter(|u| !u.disabled),
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    let hash = user
        .as_ref()
        .map_or_else(|| d.dummy_hash.clone(), |u| u.password_hash.clone());
    // argon2 costs tens of milliseconds of CPU: a few at a time. The
    // permit goes with the verification, which runs on even when this
    // request is dropped (a client gone, the request timeout).
    let Ok(permit) = d.verifying.clone().acquire_owned().await else {
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        verify(&hash, &password)
    })
    .await
    .unwrap_or(false);
    let user = match user {
        Some(u) if ok => {
            d.limiter.succeeded(&req.name, ip);
            u
        }
        _ => {
            tracing::info!(user = %req.name.escape_debug(), %ip, "dashboard: failed login");
            return refuse(StatusCode::UNAUTHORIZED, "wrong name or password");
        }
    };
    // Always a new session id: one set before login is never accepted as
    // this one (and an old session of this browser goes).
    for old in session_cookies(&headers, cookie_name(d.secure_cookies)) {
        d.sessions.remove(&old);
    }
    let (id, csrf) = d.sessions.create(&user.name, &user.password_hash);
    tracing::info!(user = %user.name, role = user.role.as_str(), %ip, "dashboard: login");
    let mut resp = Json(who_value(&user.name, user.role, &csrf)).into_response();
    resp.headers_mut().insert(
        SET_COOKIE,
        cookie(&d, &id, d.settings.absolute_timeout.as_secs()),
    );
    resp
}

/// POST /api/logout.
pub async fn logout(State(d): State<Arc<Dashboard>>, who: Authed) -> Response {
    d.sessions.remove(&who.session_id);
    let mut resp = Json(serde_json::json!({ "ok": true })).into_response();
    resp.headers_mut().insert(SET_COOKIE, cookie(&d, "", 0));
    resp
}

/// GET /api/session: who is logged in, and the CSRF token to send.
pub async fn session(who: Authed) -> Response {
    Json(who_json(&who)).into_response()
}

fn who_json(who: &Authed) -> serde_json::Value {
    who_value(&who.user.name, who.user.role, &who.csrf)
}
