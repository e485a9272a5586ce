//! The dashboard's users (issue #26) against a real control plane over
//! mutual TLS, driven by vigilctl as an admin operator: users added (a
//! generated password printed once, or one from standard input), listed
//! without hashes, changed, removed; the last enabled admin is never
//! removed or demoted; a viewer's certificate is refused the user RPCs;
//! and no raw password is anywhere in the node's store (raft log, state,
//! audit entries) once it is stopped. Unprivileged: processes and loopback
//! only.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use tonic::Code;
use vigil_integration::tls_fleet::TlsFleet;
use vigil_integration::{binary, free_port, wait_leader_of};
use vigil_pki::{Identity, OperatorRole};
use vigil_proto::admin::v1 as pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

fn vigilctl(flags: &[String], args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(binary("vigilctl"))
        .args(flags)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running vigilctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("writing stdin");
    }
    drop(input);
    child.wait_with_output().expect("vigilctl output")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn succeeds(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn fails(out: Output, code: i32, says: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", text(&out));
    assert!(text(&out).contains(says), "wanted {says:?}: {}", text(&out));
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path.display().to_string(), bytes));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_manage_users_the_last_admin_stays_and_no_password_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TlsFleet::new(tmp.path(), "users");
    let port = free_port();
    let data_dir = tmp.path().join("cp");
    let mut cp = fleet.start_control_plane(&data_dir, port, &[]);
    let admin_cert = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    let mut admin = AdminServiceClient::new(fleet.channel(port, &admin_cert).await.unwrap());
    wait_leader_of(&admin).await;
    let alice = fleet.vigilctl_flags(port, "alice", &admin_cert);

    // The first admin, with a generated password shown once.
    let out = succeeds(vigilctl(
        &alice,
        &["user", "add", "root", "--role", "admin"],
        None,
    ));
    let generated = out
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .unwrap_or_else(|| panic!("no password printed: {out}"))
        .to_string();
    assert_eq!(generated.len(), 20, "{out}");
    // An analyst with a password from standard input; a short one refused.
    let ann_password = "ann's long passphrase <script>";
    succeeds(vigilctl(
        &alice,
        &[
            "user",
            "add",
            "ann",
            "--role",
            "analyst",
            "--password-stdin",
        ],
        Some(&format!("{ann_password}\n")),
    ));
    fails(
        vigilctl(
            &alice,
            &["user", "add", "bob", "--role", "viewer", "--password-stdin"],
            Some("too-short\n"),
        ),
        2,
        "at least 12 characters",
    );
    // The server refuses a short password too, and bad names, whoever
    // sends them.
    let short = admin
        .put_user(pb::PutUserRequest {
            name: "bob".into(),
            role: "viewer".into(),
            password: Some("short".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument, "{short:?}");
    assert!(!short.message().contains("short\""), "{short:?}");
    let bad = admin
        .put_user(pb::PutUserRequest {
            name: "Bad Name".into(),
            role: "viewer".into(),
            password: Some("long enough password".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    // Adding an existing user is refused and changes nothing.
    fails(
        vigilctl(&alice, &["user", "add", "ann", "--role", "viewer"], None),
        1,
        "already exists",
    );

    let listed = succeeds(vigilctl(&alice, &["user", "list", "-o", "json"], None));
    let users: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let summary: Vec<(String, String, bool)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["name"].as_str().unwrap().to_string(),
                u["role"].as_str().unwrap().to_string(),
                u["disabled"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ann".to_string(), "analyst".to_string(), false),
            ("root".to_string(), "admin".to_string(), false)
        ]
    );
    assert!(!listed.contains("argon2"), "no hash listed: {listed}");

    // Changes: role and disabled; a password alone.
    let out = succeeds(vigilctl(
        &alice,
        &["user", "set", "ann", "--role", "viewer", "--disable"],
        None,
    ));
    assert!(out.contains("ann: viewer, disabled"), "{out}");
    succeeds(vigilctl(
        &alice,
        &["user", "set", "ann", "--enable", "--password-stdin"],
        Some("another long passphrase\n"),
    ));
    fails(
        vigilctl(&alice, &["user", "set", "ghost", "--disable"], None),
        4,
        "no user ghost",
    );

    // The last enabled admin can be neither removed, demoted nor disabled.
    fails(
        vigilctl(&alice, &["user", "remove", "root"], None),
        1,
        "last enabled admin",
    );
    fails(
        vigilctl(&alice, &["user", "set", "root", "--role", "analyst"], None),
        1,
        "last enabled admin",
    );
    fails(
        vigilctl(&alice, &["user", "set", "root", "--disable"], None),
        1,
        "last enabled admin",
    );
    // With another admin it can.
    succeeds(vigilctl(
        &alice,
        &["user", "set", "ann", "--role", "admin"],
        None,
    ));
    succeeds(vigilctl(&alice, &["user", "remove", "root"], None));
    fails(
        vigilctl(&alice, &["user", "remove", "root"], None),
        4,
        "no user root",
    );
    let listed = succeeds(vigilctl(&alice, &["user", "list"], None));
    assert!(
        listed.starts_with("ann  admin  enabled  created "),
        "{listed}"
    );
    assert_eq!(listed.lines().count(), 1, "{listed}");

    // A viewer's (and an analyst's) certificate is refused every user RPC.
    for (name, role) in [
        ("vic", OperatorRole::Viewer),
        ("ana", OperatorRole::Analyst),
    ] {
        let cert = fleet.issue(Identity::operator(role, name).unwrap());
        let mut low = AdminServiceClient::new(fleet.channel(port, &cert).await.unwrap());
        let denied = low
            .put_user(pb::PutUserRequest {
                name: name.into(),
                role: "admin".into(),
                password: Some("let me in, I am admin".into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        assert!(denied.message().contains("admin role"), "{denied:?}");
        let denied = low
            .remove_user(pb::RemoveUserRequest { name: "ann".into() })
            .await
            .unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let denied = low.list_users(pb::ListUsersRequest {}).await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    }
    assert!(admin
        .list_users(pb::ListUsersRequest {})
        .await
        .unwrap()
        .into_inner()
        .users
        .iter()
        .all(|u| u.name == "ann"));

    // Every change that took effect is audited, naming the operator; no
    // audit entry holds a password or a hash.
    let entries = admin
        .list_audit(pb::ListAuditRequest {
            after_index: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let users_audit: Vec<(String, String)> = entries
        .iter()
        .filter(|e| e.action.starts_with("user."))
        .map(|e| (e.action.clone(), e.subject.clone()))
        .collect();
    assert_eq!(
        users_audit,
        [
            ("user.create", "user root"),
            ("user.create", "user ann"),
            ("user.update", "user ann"),
            ("user.update", "user ann"),
            ("user.update", "user ann"),
            ("user.remove", "user root"),
        ]
        .map(|(a, s)| (a.to_string(), s.to_string()))
    );
    for e in &entries {
        let all = format!("{} {} {} {}", e.actor, e.action, e.subject, e.detail);
        assert!(
            !all.contains(&generated) && !all.contains(ann_password),
            "{all}"
        );
        assert!(!all.contains("argon2"), "{all}");
        if e.action.starts_with("user.") {
            assert!(e.actor.contains("alice"), "{all}");
        }
    }

    // Stopped and flushed: no raw password is anywhere in its store (the
    // raft log, the state, snapshots), while the hashes the log carries are.
    drop(admin);
    cp.daemon.terminate();
    let files = files_under(&data_dir);
    assert!(
        files.iter().any(|(_, b)| contains(b, b"$argon2id$")),
        "the scan sees the raft entries"
    );
    for password in [
        generated.as_str(),
        ann_password,
        "another long passphrase",
        "let me in, I am admin",
    ] {
        for (path, bytes) in &files {
            assert!(
                !contains(bytes, password.as_bytes()),
                "a raw password is in {path}"
            );
        }
    }
    let log = std::fs::read_to_string(&cp.log).unwrap_or_default();
    assert!(!log.contains(&generated) && !log.contains(ann_password));
}

/// A user written through a follower (forwarded to the leader) is on every
/// node, and the nodes' states stay equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_takes_user_writes_and_every_node_has_them() {
    use std::time::Duration;
    use vigil_integration::loopback_cluster::{admin, leader, LoopbackCluster};
    let tmp = tempfile::tempdir().unwrap();
    let cluster = LoopbackCluster::start(tmp.path(), 3, &[]).await;
    let leading = vigil_integration::wait_for("a leader", Duration::from_secs(20), || {
        leader(&cluster.ports)
    })
    .await;
    let follower = (1..=3).find(|id| *id != leading).unwrap();
    let mut client = admin(cluster.port(follower)).await.unwrap();
    vigil_integration::wait_for(
        "the follower takes a write",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            async move {
                client
                    .put_user(pb::PutUserRequest {
                        name: "root".into(),
                        role: "admin".into(),
                        password: Some("a long enough password".into()),
                        create_only: true,
                        ..Default::default()
                    })
                    .await
                    .ok()
            }
        },
    )
    .await;
    client
        .put_user(pb::PutUserRequest {
            name: "ann".into(),
            role: "analyst".into(),
            password: Some("another long password".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = client
        .remove_user(pb::RemoveUserRequest {
            name: "root".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    for id in 1..=3 {
        let users = admin(cluster.port(id))
            .await
            .unwrap()
            .list_users(pb::ListUsersRequest {})
            .await
            .unwrap()
            .into_inner()
            .users;
        let names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["ann", "root"], "node {id}");
    }
    cluster
        .equal_digests(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
}
