//! The dashboard attacked over real HTTP on a real control plane (no
//! browser, no agent, no root): CSRF missing, forged or cross-origin,
//! session fixation, password guessing, an expired session, oversized
//! bodies, path traversal in the static routes, malformed HTTP, and a
//! flood of live feeds.

use std::time::Duration;

use vigil_integration::dashboard::{raw_exchange, serde_json_body, DashboardPlane};

const PW: &str = "analyst-password-1";

fn json() -> (&'static str, &'static str) {
    ("content-type", "application/json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_refuses_forgery_fixation_guessing_traversal_and_floods() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DashboardPlane::start(&tmp.path().join("cp"), &["--dashboard-idle-secs", "3"]).await;
    d.add_user("ana", "analyst", PW).await;
    d.add_user("vic", "viewer", "viewer-password-1").await;

    // Security headers on pages and the API.
    let page = d.request("GET", "/", &[], b"").await;
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));

    // Session fixation: a cookie planted before login is not the session.
    let planted = format!("vigil_session={}", "f".repeat(64));
    let login = d
        .request(
            "POST",
            "/api/login",
            &[json(), ("cookie", &planted)],
            serde_json_body("ana", PW).as_bytes(),
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let set = login.header("set-cookie").unwrap_or_default();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(&"f".repeat(64)), "{set}");
    let fixed = d
        .request("GET", "/api/session", &[("cookie", &planted)], b"")
        .await;
    assert_eq!(fixed.status, 401);

    // CSRF: missing, forged, another session's, from another origin.
    let (cookie, csrf) = d.login("ana", PW).await;
    let (_, other_csrf) = d.login("ana", PW).await;
    let path = "/api/findings/1/triage";
    let ack = br#"{"action":"ack"}"#;
    for headers in [
        vec![json(), ("cookie", cookie.as_str())],
        vec![
            json(),
            ("cookie", cookie.as_str()),
            ("x-csrf-token", "forged"),
        ],
        vec![
            json(),
            ("cookie", cookie.as_str()),
            ("x-csrf-token", other_csrf.as_str()),
        ],
        vec![
            json(),
            ("cookie", cookie.as_str()),
            ("x-csrf-token", csrf.as_str()),
            ("origin", "https://evil.example"),
        ],
    ] {
        let a = d.request("POST", path, &headers, ack).await;
        assert_eq!(a.status, 403, "{headers:?}: {}", a.body);
    }
    let logout = d
        .request("POST", "/api/logout", &[json(), ("cookie", &cookie)], b"{}")
        .await;
    assert_eq!(logout.status, 403, "logout without the token");

    // A viewer may read but not triage.
    let (vcookie, vcsrf) = d.login("vic", "viewer-password-1").await;
    assert_eq!(
        d.request("GET", "/api/findings", &[("cookie", &vcookie)], b"")
            .await
            .status,
        200
    );
    let a = d
        .request(
            "POST",
            path,
            &[json(), ("cookie", &vcookie), ("x-csrf-token", &vcsrf)],
            ack,
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);

    // Oversized and malformed bodies.
    let big = serde_json_body("ana", &"x".repeat(100 * 1024));
    let a = d
        .request("POST", "/api/login", &[json()], big.as_bytes())
        .await;
    assert_eq!(a.status, 413);
    let a = d
        .request("POST", "/api/login", &[json()], b"{\"name\":")
        .await;
    assert!((400..500).contains(&a.status), "{}", a.status);

    // Path traversal and other paths that are not pages.
    for evil in [
        "/static/../../../../etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static/app.js%00.html",
        "/static//etc/passwd",
        "/..\\..\\Cargo.toml",
    ] {
        let a = d.request("GET", evil, &[], b"").await;
        assert!(a.status == 404 || a.status == 400, "{evil}: {}", a.status);
        assert!(!a.body.contains("root:"), "{evil}");
    }

    // Malformed HTTP gets an error status or a closed connection, and the
    // server goes on.
    for garbage in [
        "GARBAGE\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET /\x00 HTTP/1.1\r\n\r\n",
    ] {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", d.port))
            .await
            .unwrap();
        let _ = s.write_all(garbage.as_bytes()).await;
        drop(s);
    }
    let huge_header = "x".repeat(64 * 1024);
    let a = d.request("GET", "/", &[("x-big", &huge_header)], b"").await;
    assert!(
        a.status == 431 || a.status == 0 || a.status == 400,
        "{}",
        a.status
    );
    assert_eq!(d.request("GET", "/login", &[], b"").await.status, 200);

    // Live feeds: four per session; the fifth is 429 while they stay open.
    let mut open = Vec::new();
    for n in 0..4 {
        let (a, stream) = raw_exchange(
            d.port,
            "GET",
            "/api/findings/live",
            &[("cookie", &vcookie)],
            b"",
        )
        .await;
        assert_eq!(a.status, 200, "feed {n}: {}", a.body);
        assert!(a
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/event-stream"));
        open.push(stream);
    }
    let a = d
        .request("GET", "/api/findings/live", &[("cookie", &vcookie)], b"")
        .await;
    assert_eq!(a.status, 429);
    drop(open);

    // Password guessing: five failures a minute, then 429 even for the
    // right password (per name and address; other addresses keep their
    // own budget up to the name's larger one).
    for _ in 0..5 {
        let a = d
            .request(
                "POST",
                "/api/login",
                &[json()],
                serde_json_body("ana", "wrong-guess-123").as_bytes(),
            )
            .await;
        assert_eq!(a.status, 401);
    }
    let a = d
        .request(
            "POST",
            "/api/login",
            &[json()],
            serde_json_body("ana", PW).as_bytes(),
        )
        .await;
    assert_eq!(a.status, 429, "{}", a.body);

    // An expired session (idle 3 s here) is refused.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let a = d
        .request("GET", "/api/session", &[("cookie", &vcookie)], b"")
        .await;
    assert_eq!(a.status, 401);
}

/// The status of one request sent with `host` as its Host header.
async fn status_with_host(port: u16, host: &str, rest: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req =
        format!("GET /api/session HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n{rest}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebinding_pages_and_sessions_of_an_old_password_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DashboardPlane::start(&tmp.path().join("cp"), &[]).await;
    d.add_user("ana", "analyst", PW).await;

    // DNS rebinding: evil.example resolved to 127.0.0.1 is same-origin
    // with itself; the plaintext loopback dashboard answers only to
    // loopback names.
    let (cookie, _) = d.login("ana", PW).await;
    let with_cookie = format!("cookie: {cookie}\r\n");
    let line = status_with_host(d.port, &format!("evil.example:{}", d.port), &with_cookie).await;
    assert!(line.contains(" 421 "), "{line}");
    let line = status_with_host(d.port, &format!("localhost:{}", d.port), &with_cookie).await;
    assert!(line.contains(" 200 "), "{line}");

    // A stolen session ends when the admin gives the user a new password.
    d.add_user("ana", "analyst", "a-brand-new-password").await;
    let a = d
        .request("GET", "/api/session", &[("cookie", &cookie)], b"")
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    d.login("ana", "a-brand-new-password").await;
}
