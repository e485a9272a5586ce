//! Bad input at start (issue #21): a store that lost writes or all of
//! itself, a data directory of another cluster. Each node refuses with a clear error (no panic), and
//! the cluster it would have joined is unharmed. Unprivileged: processes
//! and loopback.

use std::path::Path;
use std::time::Duration;

use vigil_integration::{binary, free_port, try_wait_for, ControlPlane};
use vigil_proto::admin::v1 as admin_pb;

/// Starts a control plane that is expected to refuse: its exit status
/// (None when it was still running after 30 s, then killed) and what it
/// said.
fn refused_start(data_dir: &Path, port: u16, extra: &[&str]) -> (Option<i32>, String) {
    let log = data_dir.with_extension("refused.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = std::process::Command::new(binary("vigil-controlplane"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("running vigil-controlplane");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

async fn revoke(cp: &ControlPlane, serial: &str) {
    cp.admin()
        .await
        .revoke_certificate(admin_pb::RevokeCertificateRequest {
            serial: serial.into(),
            identity: "agent test".into(),
            reason: "durability test".into(),
        })
        .await
        .unwrap();
}

async fn wait_cluster_id(dir: &Path) -> String {
    try_wait_for("the cluster id file", Duration::from_secs(20), || async {
        std::fs::read_to_string(dir.join("cluster_id"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| s.len() == 32)
    })
    .await
    .unwrap()
}

/// A store that came back older than it was (a disk that lost writes, a
/// restored copy) or empty does not serve an old state or start a new
/// cluster: the node refuses, naming what it found.
#[tokio::test]
async fn a_node_whose_store_lost_writes_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cp");
    let mut cp = ControlPlane::start_leading(&dir).await;
    wait_cluster_id(&dir).await;
    cp.daemon.terminate();
    // The store as it is now, kept aside.
    let older = tmp.path().join("older");
    copy_dir(&dir.join("raft"), &older);

    let cp = ControlPlane::start_with(&dir, free_port(), &[]);
    cp.wait_leader().await;
    for i in 0..5 {
        revoke(&cp, &format!("a{i}")).await;
    }
    let applied = |d: &Path| {
        std::fs::read_to_string(d.join("applied_floor"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let first = applied(&dir).unwrap_or(0);
    try_wait_for(
        "the applied index recorded",
        Duration::from_secs(20),
        || async { applied(&dir).filter(|a| *a >= first + 5) },
    )
    .await
    .unwrap();
    let mut cp = cp;
    cp.daemon.terminate();

    // The older store put back: refused.
    std::fs::remove_dir_all(dir.join("raft")).unwrap();
    copy_dir(&older, &dir.join("raft"));
    let (code, said) = refused_start(&dir, free_port(), &[]);
    assert!(
        code.is_some() && code != Some(0),
        "started over a store that lost writes:\n{said}"
    );
    assert!(!said.contains("panicked"), "{said}");
    assert!(
        said.contains("is damaged") && said.contains("lost writes"),
        "{said}"
    );

    // Nothing left of the store at all: refused too, not a new cluster.
    std::fs::remove_dir_all(dir.join("raft")).unwrap();
    let (code, said) = refused_start(&dir, free_port(), &[]);
    assert!(
        code.is_some() && code != Some(0),
        "started a new cluster over a lost store:\n{said}"
    );
    assert!(said.contains("raft store is empty"), "{said}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A data directory of one cluster, started to join another: refused
/// with both ids named; the other cluster goes on as before.
#[tokio::test]
async fn a_directory_of_another_cluster_cannot_join() {
    let tmp = tempfile::tempdir().unwrap();
    let a_dir = tmp.path().join("a");
    let b_dir = tmp.path().join("b");
    let a = ControlPlane::start_leading(&a_dir).await;
    let mut b = ControlPlane::start_leading(&b_dir).await;
    let a_id = wait_cluster_id(&a_dir).await;
    let b_id = wait_cluster_id(&b_dir).await;
    assert_ne!(a_id, b_id);
    revoke(&a, "a1").await;
    let before = a
        .admin()
        .await
        .state_digest(admin_pb::StateDigestRequest {})
        .await
        .unwrap()
        .into_inner();
    b.daemon.terminate();

    let (code, said) = refused_start(
        &b_dir,
        b.port,
        &["--node-id", "2", "--join", &format!("127.0.0.1:{}", a.port)],
    );
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains(&a_id) && said.contains(&b_id) && said.contains("belongs to cluster"),
        "{said}"
    );
    let after = a
        .admin()
        .await
        .state_digest(admin_pb::StateDigestRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.sha256, after.sha256, "cluster a changed");
    let s = a
        .admin()
        .await
        .cluster_status(admin_pb::ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.members.len(), 1, "{s:?}");

    // Its own file changed to another cluster's id: refused at start.
    std::fs::write(b_dir.join("cluster_id"), format!("{a_id}\n")).unwrap();
    let (code, said) = refused_start(&b_dir, free_port(), &[]);
    assert_ne!(code, Some(0), "{said}");
    assert!(said.contains("does not belong here"), "{said}");
}
