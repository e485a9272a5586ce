//! The AI inventory, policy and audit pages' APIs against an in-memory
//! fake of the node: sessions only, pages bounded, untrusted text as JSON
//! strings, CSV formulas defused, the downloads' headers, the diff and the
//! chain's verification.

use std::collections::BTreeMap;

use axum::http::{header, StatusCode};
use serde_json::{json, Value};
use vigil_domain::{InventoryItem, InventoryKind, ModelIdentity};

use super::data::PolicyVersion;
use super::test_fleet::{FakeNode, Harness, EVIL};

fn item(kind: InventoryKind, key: &str, name: &str) -> InventoryItem {
    InventoryItem {
        kind: Some(kind),
        key: key.into(),
        name: name.into(),
        hosts: vec!["h1".into()],
        first_seen_unix_nanos: 1,
        last_seen_unix_nanos: 2,
        sightings: 1,
        ..Default::default()
    }
}

const PATHS: [&str; 7] = [
    "/api/inventory",
    "/api/inventory.csv",
    "/api/inventory.cdx.json",
    "/api/policy",
    "/api/policy/diff",
    "/api/audit",
    "/api/audit/verify",
];

#[tokio::test]
async fn every_new_api_needs_a_session_and_a_viewer_reads_them() {
    let fake = FakeNode::viewer().with_inventory(item(InventoryKind::Model, "path:/m", "m"));
    fake.add_audit("alice", "policy.push", "policy version 1", "push");
    let app = Harness::of(fake);
    for p in PATHS {
        let (status, _, _) = app.raw(p, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
        let (status, _, _) = app.raw(p, Some("vigil_session=forged")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{p}");
    }
    let cookie = app.login("vic").await.0;
    for p in [
        "/api/inventory",
        "/api/inventory.csv",
        "/api/inventory.cdx.json",
        "/api/policy",
        "/api/audit",
        "/api/audit/verify",
    ] {
        let (status, headers, _) = app.raw(p, Some(&cookie)).await;
        assert_eq!(status, StatusCode::OK, "{p}");
        assert!(headers.contains_key(header::CONTENT_SECURITY_POLICY), "{p}");
    }
    // No policy pushed: nothing to compare.
    let (status, _) = app.json("/api/policy/diff", Some(&cookie)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The pages themselves.
    for p in ["/inventory", "/policy", "/audit", "/static/pages.js"] {
        let (status, _, _) = app.raw(p, None).await;
        assert_eq!(status, StatusCode::OK, "{p}");
    }
}

#[tokio::test]
async fn the_inventory_is_paged_filtered_and_markup_is_a_json_string() {
    let mut fake = FakeNode::viewer();
    for n in 0..250 {
        fake = fake.with_inventory(item(
            InventoryKind::Runtime,
            &format!("path:/usr/bin/r{n:03}"),
            &format!("/usr/bin/r{n:03}"),
        ));
    }
    let mut evil = item(InventoryKind::Model, &format!("path:/m/{EVIL}"), EVIL);
    evil.model = Some(Box::new(ModelIdentity {
        format: "gguf".into(),
        name: EVIL.into(),
        ..Default::default()
    }));
    evil.hosts = (0..100).map(|h| format!("host-{h}")).collect();
    fake = fake.with_inventory(evil);
    fake = fake.with_inventory(item(
        InventoryKind::Endpoint,
        "connect:api.openai.com:443",
        "api.openai.com:443",
    ));
    let app = Harness::of(fake);
    let cookie = app.login("vic").await.0;

    // A page is at most 200 whatever is asked; the cursor continues.
    let (status, first) = app.json("/api/inventory?limit=100000", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["items"].as_array().unwrap().len(), 200);
    let after = first["next_after"].as_str().unwrap().to_string();
    assert_eq!(after, "runtime:path:/usr/bin/r199");
    let q = url_encode(&after);
    let (_, second) = app
        .json(
            &format!("/api/inventory?limit=100000&after={q}"),
            Some(&cookie),
        )
        .await;
    let items = second["items"].as_array().unwrap();
    assert_eq!(items.len(), 52);
    assert!(second["next_after"].is_null());
    let (_, one) = app.json("/api/inventory?limit=0", Some(&cookie)).await;
    assert_eq!(one["items"].as_array().unwrap().len(), 1);

    // The kind filter; the markup comes back as the same JSON string, the
    // hosts listed capped with the count said.
    let (_, models) = app.json("/api/inventory?kind=model", Some(&cookie)).await;
    let models = models["items"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    assert_eq!(models[0]["name"], json!(EVIL));
    assert_eq!(models[0]["model"]["name"], json!(EVIL));
    assert_eq!(models[0]["kind"], "model");
    assert_eq!(models[0]["hosts"].as_array().unwrap().len(), 20);
    assert_eq!(models[0]["hosts_named"], 100);
    let (_, endpoints) = app
        .json("/api/inventory?kind=endpoint", Some(&cookie))
        .await;
    assert_eq!(endpoints["items"][0]["name"], "api.openai.com:443");

    for bad in [
        "/api/inventory?kind=everything",
        "/api/inventory?after=nocolon",
        "/api/inventory?after=bogus:x",
    ] {
        let (status, _) = app.json(bad, Some(&cookie)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_downloads_are_attachments_with_formulas_defused_and_a_cyclonedx_bom() {
    let mut fake = FakeNode::viewer();
    fake = fake.with_inventory(item(
        InventoryKind::Model,
        "path:/m/x",
        "=HYPERLINK(\"http://x\")",
    ));
    fake = fake.with_inventory(item(InventoryKind::Model, &format!("path:/m/{EVIL}"), EVIL));
    let app = Harness::of(fake);
    let cookie = app.login("vic").await.0;

    let (status, headers, body) = app.raw("/api/inventory.csv", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"vigil-ai-inventory.csv\""
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let csv = String::from_utf8(body).unwrap();
    assert!(csv.contains("\"'=HYPERLINK(\"\"http://x\"\")\""), "{csv}");
    assert!(!csv.contains(",\"=HYPERLINK"), "{csv}");
    assert!(csv.contains(&format!("\"{EVIL}\"")), "{csv}");

    let (status, headers, body) = app.raw("/api/inventory.cdx.json", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "application/vnd.cyclonedx+json; version=1.6"
    );
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"vigil-ai-inventory.cdx.json\""
    );
    let bom: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.6");
    let names: Vec<&str> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&EVIL), "{names:?}");
}

fn bundle(key: &vigil_policy::SigningKey, version: u64, rules: &str) -> PolicyVersion {
    let files: BTreeMap<String, String> = [("rules.yaml".to_string(), rules.to_string())].into();
    PolicyVersion {
        version,
        bundle: key.sign(version, files).to_json(),
        pushed_at_unix_nanos: version as i64 * 1_000_000_000,
        note: if version == 1 {
            EVIL.into()
        } else {
            "push".into()
        },
    }
}

#[tokio::test]
async fn the_policy_page_names_who_pushed_each_version_and_diffs_them() {
    let key = vigil_policy::SigningKey::generate();
    let fake = FakeNode::viewer().with_policies(
        vec![
            bundle(&key, 1, "a: 1\nb: 2\n"),
            bundle(&key, 2, "a: 1\nb: 3\n"),
            bundle(&key, 3, "a: 1\nb: 3\nc: 4\n"),
        ],
        2,
    );
    fake.add_audit("alice", "policy.push", "policy version 1", "push");
    fake.add_audit("bob", "policy.push", "policy version 2", "push");
    fake.add_audit(EVIL, "policy.push", "policy version 3", "push");
    fake.add_audit(
        "carol",
        "policy.rollback",
        "policy version 2",
        "rollback to 2",
    );
    let app = Harness::of(fake);
    let cookie = app.login("vic").await.0;

    let (status, p) = app.json("/api/policy", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p["active_version"], 2);
    assert_eq!(p["previous_version"], 1);
    let v = p["versions"].as_array().unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0]["version"], 3);
    assert_eq!(v[0]["pushed_by"], json!(EVIL));
    assert_eq!(v[1]["active"], true);
    assert_eq!(v[1]["pushed_by"], "carol");
    assert_eq!(v[1]["audit_action"], "policy.rollback");
    assert_eq!(v[2]["pushed_by"], "alice");
    assert_eq!(v[2]["note"], json!(EVIL));
    assert_eq!(v[2]["signer"], json!(key.public_hex()));

    // By default the active version against the one before.
    let (status, d) = app.json("/api/policy/diff", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((d["from"].as_u64(), d["to"].as_u64()), (Some(1), Some(2)));
    let lines: Vec<(String, String)> = d["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["class"].as_str().unwrap().into(),
                l["text"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(lines.contains(&("del".into(), "-b: 2".into())), "{lines:?}");
    assert!(lines.contains(&("add".into(), "+b: 3".into())), "{lines:?}");
    assert!(
        lines.contains(&("file".into(), "--- v1/rules.yaml".into())),
        "{lines:?}"
    );
    assert!(lines.iter().any(|(c, _)| c == "hunk"), "{lines:?}");
    // Any two chosen.
    let (_, d) = app
        .json("/api/policy/diff?from=3&to=1", Some(&cookie))
        .await;
    assert!(
        d["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["text"] == "-c: 4"),
        "{d}"
    );
    let (status, _) = app
        .json("/api/policy/diff?from=9&to=1", Some(&cookie))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.json("/api/policy/diff?from=x", Some(&cookie)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_audit_log_is_paged_newest_first_and_its_chain_verified() {
    let fake = FakeNode::viewer();
    for n in 1..=250 {
        fake.add_audit(
            "alice",
            "workload.approve",
            &format!("w{n}"),
            if n == 7 { EVIL } else { "" },
        );
    }
    let broken = FakeNode::viewer();
    *broken.audit.lock().unwrap() = fake.audit.lock().unwrap().clone();
    broken.audit.lock().unwrap()[99].detail = "changed".into();
    let app_ok = Harness::of(fake);
    let cookie = app_ok.login("vic").await.0;

    let (status, page) = app_ok.json("/api/audit?limit=100000", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    let e = page["entries"].as_array().unwrap();
    assert_eq!(e.len(), 200);
    assert_eq!(e[0]["index"], 250);
    assert_eq!(e[199]["index"], 51);
    assert_eq!(page["total"], 250);
    assert_eq!(page["next_before"], 51);
    assert_eq!(e[0]["hash"].as_str().unwrap().len(), 64);
    assert_eq!(e[0]["target"], "w250");
    let (_, rest) = app_ok
        .json("/api/audit?before=51&limit=100", Some(&cookie))
        .await;
    let r = rest["entries"].as_array().unwrap();
    assert_eq!(r.len(), 50);
    assert_eq!(r[43]["index"], 7);
    assert_eq!(r[43]["detail"], json!(EVIL));
    assert!(rest["next_before"].is_null());
    let (_, past) = app_ok.json("/api/audit?before=1", Some(&cookie)).await;
    assert!(past["entries"].as_array().unwrap().is_empty());

    let (status, v) = app_ok.json("/api/audit/verify", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["complete"], true);
    assert_eq!(v["checked"], 250);

    let app_broken = Harness::of(broken);
    let cookie = app_broken.login("vic").await.0;
    let (_, v) = app_broken.json("/api/audit/verify", Some(&cookie)).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["checked"], 99);
    assert_eq!(v["error"], "entry 100: its content does not match its hash");
}
