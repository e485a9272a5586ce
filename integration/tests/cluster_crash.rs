//! Crashes during writes (issue #21): three nodes take a steady stream of
//! writes from a client that moves to another node when one fails; in each
//! round a node picked at random is killed with SIGKILL at a random moment
//! and started again. Every node comes back through its start-up check,
//! catches up, and in the end the three replicated states are byte for
//! byte the same and hold every write that was acknowledged; no write was
//! applied twice (each is audited once at most, and the audit chain
//! verifies). Nodes snapshot every 40 entries, so kills also cut off
//! snapshot builds and installs. `VIGIL_CRASH_ROUNDS` sets the rounds (10 here; `make soak`
//! runs 100). Unprivileged: processes and loopback.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use vigil_integration::loopback_cluster::{admin, revoke_until_stopped, LoopbackCluster};
use vigil_integration::seeded_random::Xorshift;
use vigil_proto::admin::v1 as admin_pb;

#[tokio::test]
async fn nodes_killed_at_random_during_writes_come_back_and_lose_nothing() {
    let rounds: usize = std::env::var("VIGIL_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("VIGIL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    eprintln!("crash rounds: {rounds}, seed {seed} (VIGIL_CRASH_SEED replays it)");
    let mut rng = Xorshift::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Snapshots often (and the log purged behind them), so that kills also
    // land in snapshot builds, transfers and installs.
    let mut cluster = LoopbackCluster::start(dir, 3, &["--snapshot-every", "40"]).await;
    let ports = cluster.ports.clone();

    // The writer: unique serials, each sent until a node answers; what
    // was acknowledged is kept.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = tokio::spawn(revoke_until_stopped(
        ports.clone(),
        stop.clone(),
        |k| format!("c{k:x}"),
        "agent test",
        "crash test",
    ));

    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        let victim = rng.below(3) as usize;
        cluster.kill(victim as u64 + 1);
        tokio::time::sleep(Duration::from_millis(50 + rng.below(500))).await;
        // Back through its start-up check (a refusal panics with the log).
        cluster.start_node(victim as u64 + 1, None);
        eprintln!("round {round}: node {} killed and back", victim + 1);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.await.unwrap();
    assert!(!acked.is_empty(), "no write was acknowledged");

    // Caught up: the same digest everywhere, and every acknowledged write.
    let digests = cluster
        .equal_digests(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e} (seed {seed})\n{}", cluster.logs()));
    eprintln!(
        "{} writes acknowledged; digest {} at index {} on all three",
        acked.len(),
        digests[0].sha256,
        digests[0].last_applied_index
    );
    let mut client = admin(ports[0]).await.unwrap();
    let held: BTreeSet<String> = client
        .list_revoked_certificates(admin_pb::ListRevokedCertificatesRequest {})
        .await
        .unwrap()
        .into_inner()
        .certificates
        .into_iter()
        .map(|c| c.serial)
        .collect();
    let lost: Vec<&String> = acked.difference(&held).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost (seed {seed}): {lost:?}"
    );
    // Applied once: each revocation audited at most once; the chain holds.
    let audit = client
        .list_audit(admin_pb::ListAuditRequest {
            after_index: 0,
            limit: 100_000,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let mut seen = BTreeSet::new();
    for e in audit.iter().filter(|e| e.action == "certificate.revoke") {
        assert!(
            seen.insert(e.subject.clone()),
            "audited twice: {e:?} (seed {seed})"
        );
    }
    let verified = client
        .verify_audit(admin_pb::VerifyAuditRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verified.error.is_empty(), "{verified:?}");
}
