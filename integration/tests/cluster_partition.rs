//! A partition of a 3-node control plane, each node a real process in a
//! network namespace of its own, links cut with `ip`: the leader cut off
//! from the others refuses writes (not committed within its deadline), the
//! other two elect a leader and go on, and after the links are healed the
//! three replicated states are byte for byte the same (equal digests) and
//! hold nothing the cut-off leader took alone. Root: network namespaces.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use vigil_integration::netns_cluster::NetnsCluster;
use vigil_integration::{privileged, try_wait_for};
use vigil_proto::admin::v1 as admin_pb;

/// A small replicated write (a revocation), sent to node `i`.
async fn write(c: &NetnsCluster, i: u8, serial: &str) -> Result<(), String> {
    let mut admin = c
        .admin_of(i)
        .await
        .ok_or_else(|| format!("node {i} unreachable"))?;
    let call = admin.revoke_certificate(admin_pb::RevokeCertificateRequest {
        serial: serial.into(),
        identity: "agent test".into(),
        reason: "partition test".into(),
    });
    match tokio::time::timeout(Duration::from_secs(20), call).await {
        Err(_) => Err("no answer within 20 s".into()),
        Ok(Err(status)) => Err(format!("{}: {}", status.code(), status.message())),
        Ok(Ok(_)) => Ok(()),
    }
}

async fn revoked(c: &NetnsCluster, i: u8) -> Option<BTreeSet<String>> {
    let listed = c
        .admin_of(i)
        .await?
        .list_revoked_certificates(admin_pb::ListRevokedCertificatesRequest {})
        .await
        .ok()?
        .into_inner();
    Some(listed.certificates.into_iter().map(|c| c.serial).collect())
}

#[tokio::test]
async fn a_cut_off_leader_takes_no_write_and_the_majority_goes_on() {
    if !privileged("a_cut_off_leader_takes_no_write_and_the_majority_goes_on") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let c = NetnsCluster::start(tmp.path(), 3, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    write(&c, 2, "a1").await.unwrap();
    try_wait_for("a1 on every node", Duration::from_secs(20), || async {
        for i in 1..=3 {
            revoked(&c, i).await?.contains("a1").then_some(())?;
        }
        Some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    // Cut the leader off from the other two.
    let leader = c.status(1).await.unwrap().leader_id as u8;
    let others: Vec<u8> = (1..=3).filter(|i| *i != leader).collect();
    c.net.cut(leader).unwrap();
    let cut_at = Instant::now();

    // The other two elect one of themselves and take writes.
    let new_leader = try_wait_for(
        "a leader among the majority",
        Duration::from_secs(15),
        || async {
            let s = c.status(others[0]).await?;
            (s.leader_id != 0 && s.leader_id != leader as u64).then_some(s.leader_id)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    eprintln!(
        "leader {leader} cut off; node {new_leader} leads the majority {:?} after the cut",
        cut_at.elapsed()
    );
    // The cut-off leader refuses writes: not committed, said as such.
    let refused = write(&c, leader, "c3").await.unwrap_err();
    assert!(
        refused.contains("not committed") || refused.contains("majority"),
        "{refused}"
    );
    // And it refuses a read that must be current: it cannot confirm it
    // still leads.
    let stale = c
        .admin_of(leader)
        .await
        .unwrap()
        .list_revoked_certificates(admin_pb::ListRevokedCertificatesRequest {})
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::Unavailable, "{stale}");
    write(&c, others[1], "b2").await.unwrap();

    // Healed: the three states are the same, byte for byte, and hold
    // what the majority committed, not what the cut-off leader took.
    c.net.heal().unwrap();
    let digests = c
        .equal_digests(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "healed: digest {} at index {} on all three",
        digests[0].sha256, digests[0].last_applied_index
    );
    for i in 1..=3 {
        let revoked = revoked(&c, i).await.unwrap();
        assert_eq!(
            revoked,
            BTreeSet::from(["a1".to_string(), "b2".to_string()]),
            "node {i}"
        );
    }
}
