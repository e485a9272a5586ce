//! Snapshots streamed to a node far behind (issue #21: bounded state): a
//! leader that snapshots every 50 entries and purges its log behind them
//! brings a node that joins after 600 writes up to date with a snapshot
//! (sent in chunks from a file, installed in batches), and the two
//! replicated states are byte for byte the same. Unprivileged: loopback.

use std::time::Duration;

use vigil_integration::loopback_cluster::{admin, state_digests};
use vigil_integration::{free_port, try_wait_for, ControlPlane};
use vigil_proto::admin::v1 as admin_pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_from_a_streamed_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let one = ControlPlane::start_with(
        &tmp.path().join("node-1"),
        p1,
        &["--node-id", "1", "--snapshot-every", "50"],
    );
    one.wait_leader().await;
    let mut client = admin(p1).await.unwrap();
    // 600 entries (a revocation and its audit entry are one): the log is
    // purged in batches of 256 behind the last 50.
    for k in 0..600u32 {
        client
            .revoke_certificate(admin_pb::RevokeCertificateRequest {
                serial: format!("{k:x}0"),
                identity: "agent test".into(),
                reason: "snapshot test".into(),
            })
            .await
            .unwrap();
    }
    let join = format!("127.0.0.1:{p1}");
    let two = ControlPlane::start_with(
        &tmp.path().join("node-2"),
        p2,
        &["--node-id", "2", "--snapshot-every", "50", "--join", &join],
    );
    client
        .add_node(admin_pb::AddNodeRequest {
            node_id: 2,
            address: format!("127.0.0.1:{p2}"),
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "adding node 2: {e}\n{}",
                std::fs::read_to_string(&two.log).unwrap_or_default()
            )
        });
    let digests = try_wait_for("equal digests", Duration::from_secs(30), || async {
        let seen = state_digests(&[p1, p2]).await?;
        (seen[0].sha256 == seen[1].sha256
            && seen[0].last_applied_index == seen[1].last_applied_index)
            .then_some(seen)
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            std::fs::read_to_string(&one.log).unwrap_or_default(),
            std::fs::read_to_string(&two.log).unwrap_or_default()
        )
    });
    let log = std::fs::read_to_string(&two.log).unwrap();
    assert!(
        log.contains("installed a snapshot"),
        "node 2 caught up without a snapshot:\n{log}"
    );
    eprintln!(
        "node 2 caught up from a snapshot: digest {} at index {}",
        digests[0].sha256, digests[0].last_applied_index
    );
    // The snapshot is a file, and only the current one is kept.
    let files: Vec<String> = std::fs::read_dir(tmp.path().join("node-2/snapshots.v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with("snapshot-"), "{files:?}");
    // It holds the whole state: the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(tmp.path().join("node-2/snapshots.v1").join(&files[0]))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let revoked = admin(p2)
        .await
        .unwrap()
        .list_revoked_certificates(admin_pb::ListRevokedCertificatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificates;
    assert_eq!(revoked.len(), 600);
    drop((one, two));
}
