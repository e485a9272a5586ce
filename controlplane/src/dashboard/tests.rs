//! The dashboard's router against an in-memory fake of the node: login,
//! sessions, CSRF, roles, limits, headers, and the API's answers.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;
use vigil_domain::Severity;

use super::data::{DashboardData, Role};
use super::server::CSP;
use super::test_fleet::{hash, FakeNode, Harness, PASSWORD};
use super::DashboardSettings;

#[tokio::test]
async fn login_sets_a_strict_http_only_cookie_and_session_tells_the_role() {
    let h = Harness::new();
    let a = h
        .post(
            "/api/login",
            None,
            None,
            serde_json::json!({ "name": "ana", "password": PASSWORD }),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let set = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.starts_with("vigil_session="), "{set}");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(part), "{set}");
    }
    assert!(!set.contains("Secure"), "plaintext: no Secure: {set}");
    let (cookie, csrf) = h.login("ana").await;
    let s = h.get("/api/session", Some(&cookie)).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.body["role"], "analyst");
    assert_eq!(s.body["csrf"], csrf.as_str());
    assert_eq!(
        h.get("/api/session", None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let tls = Harness::with(DashboardSettings::default(), true);
    let a = tls
        .post(
            "/api/login",
            None,
            None,
            serde_json::json!({ "name": "ana", "password": PASSWORD }),
        )
        .await;
    // Over TLS the cookie is __Host- prefixed (Secure, Path=/, no
    // Domain: a sibling subdomain or a plaintext page cannot plant it).
    let set = a.headers[header::SET_COOKIE].to_str().unwrap().to_string();
    assert!(set.starts_with("__Host-vigil_session="), "{set}");
    assert!(set.contains("; Secure") && set.contains("Path=/"), "{set}");
    assert!(!set.to_ascii_lowercase().contains("domain="), "{set}");
    let cookie = set.split(';').next().unwrap();
    let s = tls.get("/api/session", Some(cookie)).await;
    assert_eq!(s.status, StatusCode::OK);
    // The plaintext name is not the TLS session's cookie.
    let plain = cookie.replacen("__Host-", "", 1);
    assert_eq!(
        tls.get("/api/session", Some(&plain)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_are_refused_alike_then_limited() {
    let h = Harness::new();
    for (name, pw) in [("ana", "wrong"), ("nobody", PASSWORD)] {
        let a = h
            .post(
                "/api/login",
                None,
                None,
                serde_json::json!({ "name": name, "password": pw }),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert_eq!(a.body["error"], "wrong name or password");
        assert!(!a.headers.contains_key(header::SET_COOKIE));
    }
    // Five failures a minute for a name from an address: then 429 there,
    // even with the right password; other names from it still log in.
    for _ in 0..4 {
        h.post(
            "/api/login",
            None,
            None,
            serde_json::json!({ "name": "ana", "password": "guess" }),
        )
        .await;
    }
    let a = h
        .post(
            "/api/login",
            None,
            None,
            serde_json::json!({ "name": "ana", "password": PASSWORD }),
        )
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    h.login("vic").await;
}

#[tokio::test]
async fn state_changes_need_the_sessions_csrf_token_and_the_same_origin() {
    let h = Harness::new();
    let i = h.fake.add_alert("web-1", "/usr/bin/ollama", Severity::High);
    let (cookie, csrf) = h.login("ana").await;
    let ack = serde_json::json!({ "action": "ack" });
    let path = format!("/api/findings/{i}/triage");
    for token in [None, Some("forged"), Some(&"0".repeat(64)[..])] {
        let a = h.post(&path, Some(&cookie), token, ack.clone()).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{token:?}");
    }
    // Another session's token is no good either.
    let (_, other) = h.login("ana").await;
    assert_eq!(
        h.post(&path, Some(&cookie), Some(&other), ack.clone())
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // The right token from another origin.
    let req = Request::post(&path)
        .header(header::HOST, "dash.test")
        .header(header::ORIGIN, "https://evil.test")
        .header(header::COOKIE, &cookie)
        .header("x-csrf-token", &csrf)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(ack.to_string()))
        .unwrap();
    assert_eq!(h.call(req).await.status, StatusCode::FORBIDDEN);
    assert_eq!(h.fake.triage(i).unwrap().status, "open");
    let a = h.post(&path, Some(&cookie), Some(&csrf), ack).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(h.fake.triage(i).unwrap().status, "acknowledged");
    // Logout needs the token too, and ends the session.
    assert_eq!(
        h.post("/api/logout", Some(&cookie), None, serde_json::json!({}))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let out = h
        .post(
            "/api/logout",
            Some(&cookie),
            Some(&csrf),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(out.status, StatusCode::OK);
    assert!(out.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(
        h.get("/api/session", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn viewers_read_but_cannot_triage_and_roles_are_read_on_each_request() {
    let h = Harness::new();
    let i = h.fake.add_alert("web-1", "/usr/bin/ollama", Severity::High);
    let (cookie, csrf) = h.login("vic").await;
    assert_eq!(
        h.get("/api/findings", Some(&cookie)).await.status,
        StatusCode::OK
    );
    let a = h
        .post(
            &format!("/api/findings/{i}/triage"),
            Some(&cookie),
            Some(&csrf),
            serde_json::json!({ "action": "ack" }),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // An analyst demoted to viewer loses triage at once; disabled, everything.
    let (acookie, acsrf) = h.login("ana").await;
    h.fake.users.lock().unwrap().get_mut("ana").unwrap().role = Role::Viewer;
    let a = h
        .post(
            &format!("/api/findings/{i}/triage"),
            Some(&acookie),
            Some(&acsrf),
            serde_json::json!({ "action": "ack" }),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    h.fake
        .users
        .lock()
        .unwrap()
        .get_mut("ana")
        .unwrap()
        .disabled = true;
    assert_eq!(
        h.get("/api/findings", Some(&acookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_cookie_set_before_login_is_not_the_session_after_it() {
    let h = Harness::new();
    let planted = format!("vigil_session={}", "a".repeat(64));
    let req = Request::post("/api/login")
        .header(header::HOST, "dash.test")
        .header(header::COOKIE, &planted)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::json!({ "name": "ana", "password": PASSWORD }).to_string(),
        ))
        .unwrap();
    let a = h.call(req).await;
    assert_eq!(a.status, StatusCode::OK);
    let set = a.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(!set.contains(&"a".repeat(64)));
    assert_eq!(
        h.get("/api/session", Some(&planted)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn sessions_expire() {
    let settings = DashboardSettings {
        idle_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let h = Harness::with(settings, false);
    let (cookie, _) = h.login("ana").await;
    assert_eq!(
        h.get("/api/session", Some(&cookie)).await.status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.get("/api/session", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn every_answer_has_the_security_headers_and_only_fixed_paths_exist() {
    let h = Harness::new();
    for path in [
        "/",
        "/login",
        "/static/app.js",
        "/api/session",
        "/static/../Cargo.toml",
        "/static/%2e%2e/%2e%2e/Cargo.toml",
        "/..%2f..%2fetc/passwd",
        "/static/app.js/../../src/main.rs",
        "/nope",
    ] {
        let a = h.get(path, None).await;
        assert_eq!(a.headers[header::CONTENT_SECURITY_POLICY], CSP, "{path}");
        assert_eq!(a.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(a.headers[header::REFERRER_POLICY], "no-referrer");
        if path.starts_with("/api/") {
            assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");
        }
        let ok = matches!(path, "/" | "/login" | "/static/app.js");
        assert_eq!(
            a.status.is_success(),
            ok,
            "{path}: {} {:?}",
            a.status,
            a.body
        );
    }
    let js = h
        .app
        .clone()
        .oneshot(Request::get("/static/app.js").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
}

#[tokio::test]
async fn oversized_and_malformed_bodies_are_refused_without_harm() {
    let h = Harness::new();
    let big = serde_json::json!({ "name": "ana", "password": "x".repeat(64 * 1024) });
    let a = h.post("/api/login", None, None, big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::post("/api/login")
        .header(header::HOST, "dash.test")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": \"ana\", \"pass"))
        .unwrap();
    assert!(h.call(req).await.status.is_client_error());
    let (cookie, _) = h.login("ana").await;
    for path in [
        "/api/findings/not-a-number",
        "/api/findings?before=-1&limit=99999999999999999999",
        "/api/findings/18446744073709551615",
        "/api/hosts/%00",
    ] {
        let a = h.get(path, Some(&cookie)).await;
        assert!(a.status != StatusCode::INTERNAL_SERVER_ERROR, "{path}");
    }
}

#[tokio::test]
async fn findings_are_paged_newest_first_and_filtered() {
    let h = Harness::new();
    for n in 0..130u64 {
        let host = if n % 2 == 0 { "web-1" } else { "db-1" };
        let sev = if n % 5 == 0 {
            Severity::Critical
        } else {
            Severity::Low
        };
        h.fake.add_alert(host, "/usr/bin/ollama", sev);
    }
    let (cookie, _) = h.login("vic").await;
    let a = h.get("/api/findings?limit=50", Some(&cookie)).await;
    let items = a.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 50);
    assert_eq!(items[0]["index"], 130);
    assert_eq!(items[49]["index"], 81);
    assert_eq!(a.body["next_before"], 81);
    let b = h
        .get(
            "/api/findings?limit=50&before=81&host=web-1&severity=critical",
            Some(&cookie),
        )
        .await;
    let items = b.body["items"].as_array().unwrap();
    assert!(!items.is_empty());
    for it in items {
        assert_eq!(it["hostname"], "web-1");
        assert_eq!(it["severity"], "critical");
        assert!(it["index"].as_u64().unwrap() < 81);
    }
    assert_eq!(b.body["next_before"], serde_json::Value::Null);
    let o = h.get("/api/overview", Some(&cookie)).await;
    assert_eq!(o.status, StatusCode::OK);
    assert_eq!(o.body["top_hosts"].as_array().unwrap().len(), 2);
    assert_eq!(o.body["findings_per_hour"].as_array().unwrap().len(), 24);
}

/// The overview's chart and top lists come from the counters kept at
/// apply (`findings_per_hour`, `top_counts`): every stored finding, no
/// scan of the newest ones, hosts by agent id shown by host name.
#[tokio::test]
async fn the_overview_reads_the_counters_kept_at_apply() {
    let h = Harness::of(FakeNode::viewer().with_agent("agent-web-1"));
    let hour = 3_600_000_000_000i64;
    let now = super::api::now_nanos();
    for _ in 0..3 {
        h.fake
            .add_rule_alert("web-1", "/usr/bin/ollama", "r.a", now);
    }
    for _ in 0..2 {
        h.fake
            .add_rule_alert("db-1", "/usr/bin/python3", "r.b", now - 2 * hour);
    }
    // Older than the chart, still in the top lists; no executable.
    h.fake.add_rule_alert("db-1", "", "r.a", now - 30 * hour);
    let (cookie, _) = h.login("vic").await;
    let o = h.get("/api/overview", Some(&cookie)).await;
    assert_eq!(o.status, StatusCode::OK);
    let per_hour: Vec<u64> = o.body["findings_per_hour"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(per_hour.len(), 24);
    assert_eq!(per_hour.iter().sum::<u64>(), 5, "{per_hour:?}");
    // The current hour is last (or, had the hour turned since, the one
    // before it).
    assert!(per_hour[23] == 3 || per_hour[22] == 3, "{per_hour:?}");
    let pairs = |k: &str| -> Vec<(String, u64)> {
        o.body[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().into(),
                    v["count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(pairs("top_rules"), [("r.a".into(), 4), ("r.b".into(), 2)]);
    assert_eq!(
        pairs("top_executables"),
        [
            ("/usr/bin/ollama".into(), 3),
            ("/usr/bin/python3".into(), 2)
        ]
    );
    // Ties by agent id; an enrolled agent shown by its host name.
    assert_eq!(
        pairs("top_hosts"),
        [("agent-db-1".into(), 3), ("web-1".into(), 3)]
    );
    assert_eq!(o.body["top_hosts"][1]["id"], "agent-web-1");
    assert!(o.body.get("scanned").is_none());
}

fn open_high(overview: &serde_json::Value) -> u64 {
    overview["open_by_severity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["severity"] == "high")
        .map(|c| c["count"].as_u64().unwrap())
        .unwrap()
}

#[tokio::test]
async fn triage_steps_are_the_domains_and_their_history_is_shown_with_the_finding() {
    let h = Harness::new();
    let i = h.fake.add_alert("web-1", "/usr/bin/ollama", Severity::High);
    h.fake.add_alert("web-2", "/usr/bin/ollama", Severity::High);
    let (cookie, csrf) = h.login("ana").await;
    let path = format!("/api/findings/{i}/triage");
    let finding = format!("/api/findings/{i}");
    assert_eq!(h.get(&finding, Some(&cookie)).await.body["status"], "open");
    assert_eq!(
        open_high(&h.get("/api/overview", Some(&cookie)).await.body),
        2
    );

    // Ack: acknowledged, with the analyst as the step's actor.
    let a = h
        .post(
            &path,
            Some(&cookie),
            Some(&csrf),
            serde_json::json!({ "action": "ack" }),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let f = h.get(&finding, Some(&cookie)).await;
    assert_eq!(f.body["status"], "acknowledged");
    assert_eq!(f.body["history"][0]["actor"], "ana");
    assert_eq!(f.body["history"][0]["action"], "ack");
    // Listed with its state too; a second ack is refused by the domain.
    let list = h.get("/api/findings", Some(&cookie)).await;
    let row = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["index"] == i)
        .unwrap()
        .clone();
    assert_eq!(row["status"], "acknowledged");
    let again = h
        .post(
            &path,
            Some(&cookie),
            Some(&csrf),
            serde_json::json!({ "action": "ack" }),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);

    // A viewer is refused and changes nothing.
    let (vcookie, vcsrf) = h.login("vic").await;
    let v = h
        .post(
            &path,
            Some(&vcookie),
            Some(&vcsrf),
            serde_json::json!({ "action": "comment", "text": "mine" }),
        )
        .await;
    assert_eq!(v.status, StatusCode::FORBIDDEN);
    assert_eq!(h.fake.triage(i).unwrap().history.len(), 1);

    let script = "<script>alert(1)</script>";
    for body in [
        serde_json::json!({ "action": "assign", "text": "vic" }),
        serde_json::json!({ "action": "comment", "text": script }),
    ] {
        let a = h.post(&path, Some(&cookie), Some(&csrf), body).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    }
    for bad in [
        serde_json::json!({ "action": "delete" }),
        serde_json::json!({ "action": "assign" }),
        serde_json::json!({ "action": "comment", "text": "x".repeat(5000) }),
    ] {
        let a = h.post(&path, Some(&cookie), Some(&csrf), bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
    }
    let f = h.get(&finding, Some(&cookie)).await;
    assert!(f.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(f.body["assignee"], "vic");
    // The comment is kept verbatim and sent as a JSON string: the page
    // renders it as text.
    assert_eq!(f.body["history"][2]["action"], "comment");
    assert_eq!(f.body["history"][2]["detail"].as_str(), Some(script));

    // Resolve with a note: the note, then the resolve; the open count drops.
    let a = h
        .post(
            &path,
            Some(&cookie),
            Some(&csrf),
            serde_json::json!({ "action": "resolve", "text": "approved later" }),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    let f = h.get(&finding, Some(&cookie)).await;
    assert_eq!(f.body["status"], "resolved");
    let history = f.body["history"].as_array().unwrap();
    let steps: Vec<_> = history
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("ack", ""),
            ("assign", "vic"),
            ("comment", script),
            ("comment", "approved later"),
            ("resolve", "")
        ]
    );
    assert_eq!(
        open_high(&h.get("/api/overview", Some(&cookie)).await.body),
        1
    );
    // Resolved is final here: no second resolve, no ack.
    for body in [
        serde_json::json!({ "action": "resolve" }),
        serde_json::json!({ "action": "ack" }),
    ] {
        let a = h.post(&path, Some(&cookie), Some(&csrf), body).await;
        assert_eq!(a.status, StatusCode::CONFLICT);
    }
    assert_eq!(
        h.post(
            "/api/findings/999/triage",
            Some(&cookie),
            Some(&csrf),
            serde_json::json!({ "action": "ack" })
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/api/findings/999", Some(&cookie)).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn live_feeds_send_new_findings_and_are_bounded() {
    let settings = DashboardSettings {
        max_live_per_session: 2,
        max_live_total: 3,
        ..Default::default()
    };
    let h = Harness::with(settings, false);
    let (cookie, _) = h.login("ana").await;
    let resp = h
        .app
        .clone()
        .oneshot(
            Request::get("/api/findings/live?host=web-1")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    h.fake.add_alert("db-1", "/usr/bin/ollama", Severity::High);
    let want = h
        .fake
        .add_alert("web-1", "/tmp/<img src=x onerror=alert(1)>", Severity::High);
    let mut body = resp.into_body().into_data_stream();
    let mut text = String::new();
    let read = async {
        use futures::StreamExt;
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: finding") && text.contains("\n\n") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .unwrap();
    assert!(text.contains(&format!("id: {want}")), "{text}");
    assert!(!text.contains("db-1"), "{text}");
    // A second feed for this session fits; a third does not.
    let open = |cookie: String| {
        let app = h.app.clone();
        async move {
            app.oneshot(
                Request::get("/api/findings/live")
                    .header(header::COOKIE, cookie)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
        }
    };
    let second = open(cookie.clone()).await;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(
        open(cookie.clone()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // And the node's total holds across sessions.
    let (other, _) = h.login("vic").await;
    let third = open(other.clone()).await;
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(
        open(other.clone()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Closing one frees its place.
    drop(second);
    drop(third);
    tokio::time::timeout(Duration::from_secs(7), async {
        loop {
            if open(other.clone()).await.status() == StatusCode::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap();
    drop(text);
}

#[tokio::test]
async fn parallel_guesses_cannot_pass_the_failure_limit() {
    // Attack: many wrong passwords sent at once all passed the limit's
    // check before the first failure was counted.
    let h = Harness::new();
    let mut guesses = Vec::new();
    for n in 0..20 {
        let app = h.app.clone();
        guesses.push(tokio::spawn(async move {
            let req = Request::post("/api/login")
                .header(header::HOST, "dash.test")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    serde_json::json!({ "name": "ana", "password": format!("guess-{n}") })
                        .to_string(),
                ))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        }));
    }
    let mut checked = 0;
    for g in guesses {
        if g.await.unwrap() == StatusCode::UNAUTHORIZED {
            checked += 1;
        }
    }
    assert!(
        checked <= 5,
        "{checked} passwords tried in parallel past a limit of 5"
    );
}

#[tokio::test]
async fn a_new_password_or_a_user_made_anew_ends_the_old_sessions() {
    // Attack: a stolen session kept working after the admin reset the
    // user's password (or removed the user and made one of that name).
    let h = Harness::new();
    let (cookie, _) = h.login("ana").await;
    let (vcookie, _) = h.login("vic").await;
    assert_eq!(
        h.get("/api/session", Some(&cookie)).await.status,
        StatusCode::OK
    );
    h.fake
        .users
        .lock()
        .unwrap()
        .get_mut("ana")
        .unwrap()
        .password_hash = hash("a brand new password");
    assert_eq!(
        h.get("/api/session", Some(&cookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    {
        let mut users = h.fake.users.lock().unwrap();
        let mut vic = users.remove("vic").unwrap();
        vic.password_hash = hash("the new vic's password");
        users.insert("vic".into(), vic);
    }
    assert_eq!(
        h.get("/api/session", Some(&vcookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.get("/api/findings/live", Some(&vcookie)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn one_user_logging_in_again_and_again_does_not_push_others_out() {
    // Attack: a viewer logged in max_sessions times and so evicted every
    // other session on the node (the admin's too), and then held all the
    // node's live feeds.
    let settings = DashboardSettings {
        max_sessions: 8,
        max_sessions_per_user: 3,
        ..DashboardSettings::default()
    };
    let h = Harness::with(settings, false);
    let (ana, _) = h.login("ana").await;
    let mut vics = Vec::new();
    for _ in 0..20 {
        vics.push(h.login("vic").await.0);
    }
    assert_eq!(
        h.get("/api/session", Some(&ana)).await.status,
        StatusCode::OK
    );
    // vic's newest sessions hold; its oldest went.
    assert_eq!(
        h.get("/api/session", Some(&vics[19])).await.status,
        StatusCode::OK
    );
    assert_eq!(
        h.get("/api/session", Some(&vics[0])).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_plaintext_loopback_dashboard_answers_only_loopback_host_names() {
    // Attack: DNS rebinding. A page on http://evil.example:7780 whose name
    // is made to resolve to 127.0.0.1 is same-origin with itself, so its
    // Origin matched its Host and the browser let it read the answers of
    // the loopback dashboard (and guess passwords through it).
    let settings = DashboardSettings {
        loopback_hosts_only: true,
        ..DashboardSettings::default()
    };
    let h = Harness::with(settings, false);
    for host in [
        "evil.example:7780",
        "127.0.0.1.evil.example",
        "",
        "evil.example",
    ] {
        let req = Request::get("/api/session")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        let a = h.call(req).await;
        assert_eq!(a.status, StatusCode::MISDIRECTED_REQUEST, "{host:?}");
        let req = Request::post("/api/login")
            .header(header::HOST, host)
            .header(header::ORIGIN, format!("http://{host}"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::json!({ "name": "ana", "password": PASSWORD }).to_string(),
            ))
            .unwrap();
        assert_eq!(
            h.call(req).await.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{host:?}"
        );
    }
    for host in [
        "127.0.0.1:7780",
        "localhost:7780",
        "[::1]:7780",
        "127.0.0.1",
        "LOCALHOST",
    ] {
        let req = Request::get("/api/session")
            .header(header::HOST, host)
            .body(Body::empty())
            .unwrap();
        assert_eq!(h.call(req).await.status, StatusCode::UNAUTHORIZED, "{host}");
    }
    // Served on another address (TLS, or --allow-plaintext), any name.
    assert_eq!(
        Harness::new().get("/login", None).await.status,
        StatusCode::OK
    );
}

/// Sends `GET /login` on `s` and reads the answer's head: None when the
/// server closed the connection instead (or said nothing within 5 s).
async fn head_of(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET /login HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                return Some(String::from_utf8_lossy(&got[..end]).into_owned());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .ok()
        .flatten()
}

async fn connect_from(from: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    // Attack: one client opening the 256 connections the listener serves
    // at once (idle ones, or slow live feeds) shut everyone else out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = DashboardSettings {
        max_connections_per_address: 2,
        header_timeout: Duration::from_secs(30),
        ..DashboardSettings::default()
    };
    let server = tokio::spawn(super::serve_dashboard(
        listener,
        Arc::new(FakeNode::analyst_and_viewer()),
        super::DashboardTransport::Plain,
        settings,
    ));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.1", addr).await;
        let head = head_of(&mut s).await.expect("served");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(s);
    }
    // A third from the same address is closed unanswered...
    let mut third = connect_from("127.0.0.1", addr).await;
    assert_eq!(head_of(&mut third).await, None);
    // ...while another address is served.
    let mut other = connect_from("127.0.0.2", addr).await;
    let head = head_of(&mut other).await.expect("another address served");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // Once one of its connections closes, the address is served again.
    drop(held.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = connect_from("127.0.0.1", addr).await;
        if head_of(&mut s).await.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a closed connection's slot was not given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.abort();
}
