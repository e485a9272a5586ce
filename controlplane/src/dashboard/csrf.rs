//! Cross-site request forgery: every state-changing request (any method
//! but GET and HEAD) must come from the dashboard's own origin and, once
//! logged in, carry its session's token in `X-CSRF-Token`.
//!
//! The origin check: an `Origin` header, when the browser sends one (it
//! does on every POST), must name the host the request was sent to; a
//! `Sec-Fetch-Site` other than `same-origin` or `none` is refused too. The
//! token is compared in constant time. The session cookie is
//! `SameSite=Strict` besides.

use axum::http::{HeaderMap, Method};
use subtle::ConstantTimeEq;

/// The header the pages send the token in.
pub const HEADER: &str = "x-csrf-token";

/// Whether the method changes state (and so needs the checks).
pub fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request comes from a page of this origin (as far as the
/// browser says): refused when `Origin` names another host than `Host`,
/// or `Sec-Fetch-Site` says cross-site.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    match header("origin") {
        None => true,
        Some(origin) => {
            let Some(host) = header("host") else {
                return false;
            };
            let Some(rest) = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
            else {
                // "null" (a sandboxed frame, a file) and anything else.
                return false;
            };
            rest.eq_ignore_ascii_case(host)
        }
    }
}

/// Whether the request's `X-CSRF-Token` is `expected` (constant time).
pub fn token_matches(headers: &HeaderMap, expected: &str) -> bool {
    let Some(given) = headers.get(HEADER) else {
        return false;
    };
    let given = given.as_bytes();
    given.len() == expected.len() && bool::from(given.ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins_must_name_the_host_asked() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:8443")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:8443"),
            ("origin", "https://127.0.0.1:8443")
        ])));
        for bad in [
            "https://evil.example",
            "null",
            "https://127.0.0.1:8443.evil.example",
            "https://127.0.0.1",
        ] {
            assert!(
                !same_origin(&headers(&[("host", "127.0.0.1:8443"), ("origin", bad)])),
                "{bad}"
            );
        }
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:8443"),
            ("sec-fetch-site", "cross-site")
        ])));
    }

    #[test]
    fn tokens_must_match_exactly() {
        assert!(token_matches(&headers(&[(HEADER, "abc")]), "abc"));
        assert!(!token_matches(&headers(&[(HEADER, "abd")]), "abc"));
        assert!(!token_matches(&headers(&[(HEADER, "ab")]), "abc"));
        assert!(!token_matches(&headers(&[]), "abc"));
    }
}
