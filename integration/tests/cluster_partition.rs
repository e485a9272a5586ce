//! A partition of a 3-node control plane, each node a real process in a
//! network namespace of its own, links cut with `ip`: the leader cut off
//! from the others refuses writes (not committed within its deadline), the
//! other two elect a leader and go on, and after the links are healed the
//! three replicated states are byte for byte the same (equal digests) and
//! hold nothing the cut-off leader took alone. Root: network namespaces.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use vigil_integration::node_network::NodeNetwork;
use vigil_integration::tls_fleet::TlsFleet;
use vigil_integration::{binary, privileged, try_wait_for, Daemon, READY_TIMEOUT};
use vigil_pki::{Identity, IssuedCertificate, OperatorRole};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

const PORT: u16 = 7700;

struct Cluster<'a> {
    fleet: &'a TlsFleet,
    admin: &'a IssuedCertificate,
    net: &'a NodeNetwork,
}

impl Cluster<'_> {
    async fn admin_of(&self, i: u8) -> Option<AdminServiceClient<tonic::transport::Channel>> {
        let channel = self
            .fleet
            .channel_at(self.net.ip(i), PORT, self.admin)
            .await
            .ok()?;
        Some(AdminServiceClient::new(channel))
    }

    async fn status(&self, i: u8) -> Option<admin_pb::ClusterStatusResponse> {
        let s = self
            .admin_of(i)
            .await?
            .cluster_status(admin_pb::ClusterStatusRequest {})
            .await
            .ok()?;
        Some(s.into_inner())
    }

    async fn digest(&self, i: u8) -> Option<admin_pb::StateDigestResponse> {
        let d = self
            .admin_of(i)
            .await?
            .state_digest(admin_pb::StateDigestRequest {})
            .await
            .ok()?;
        Some(d.into_inner())
    }

    /// A small replicated write (a revocation), sent to node `i`.
    async fn write(&self, i: u8, serial: &str) -> Result<(), String> {
        let mut admin = self
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

    async fn revoked(&self, i: u8) -> Option<BTreeSet<String>> {
        let listed = self
            .admin_of(i)
            .await?
            .list_revoked_certificates(admin_pb::ListRevokedCertificatesRequest {})
            .await
            .ok()?
            .into_inner();
        Some(listed.certificates.into_iter().map(|c| c.serial).collect())
    }
}

fn start(
    net: &NodeNetwork,
    fleet: &TlsFleet,
    dir: &std::path::Path,
    i: u8,
    join: Option<IpAddr>,
) -> Daemon {
    let at = format!("{}:{PORT}", net.ip(i));
    let mut cmd = net.command_in(i, &binary("vigil-controlplane"));
    cmd.args([
        "--node-id",
        &i.to_string(),
        "--listen",
        &at,
        "--advertise",
        &at,
    ])
    .arg("--data-dir")
    .arg(dir.join(format!("node-{i}")))
    .args(fleet.node_flags_at(&i.to_string(), net.ip(i)));
    if let Some(peer) = join {
        cmd.args(["--join", &format!("{peer}:{PORT}")]);
    }
    Daemon::spawn(
        cmd,
        &format!("node {i}"),
        "vigil-controlplane ready",
        READY_TIMEOUT,
        Some(&dir.join(format!("node-{i}.log"))),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn logs(dir: &std::path::Path) -> String {
    (1..=3)
        .map(|i| {
            let p = dir.join(format!("node-{i}.log"));
            format!(
                "--- node {i}\n{}",
                std::fs::read_to_string(&p).unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_cut_off_leader_takes_no_write_and_the_majority_goes_on() {
    if !privileged("a_cut_off_leader_takes_no_write_and_the_majority_goes_on") {
        return;
    }
    let net = NodeNetwork::create(3).unwrap_or_else(|e| panic!("making the namespaces: {e}"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fleet = TlsFleet::new(dir, "fleet");
    let admin = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    let c = Cluster {
        fleet: &fleet,
        admin: &admin,
        net: &net,
    };
    let mut daemons = vec![start(&net, &fleet, dir, 1, None)];
    try_wait_for("node 1 leads", Duration::from_secs(20), || async {
        (c.status(1).await?.leader_id == 1).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    for i in 2..=3 {
        daemons.push(start(&net, &fleet, dir, i, Some(net.ip(1))));
        c.admin_of(1)
            .await
            .unwrap()
            .add_node(admin_pb::AddNodeRequest {
                node_id: i as u64,
                address: format!("{}:{PORT}", net.ip(i)),
            })
            .await
            .unwrap_or_else(|e| panic!("adding node {i}: {e}\n{}", logs(dir)));
    }
    c.write(2, "a1").await.unwrap();
    try_wait_for("a1 on every node", Duration::from_secs(20), || async {
        for i in 1..=3 {
            c.revoked(i).await?.contains("a1").then_some(())?;
        }
        Some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));

    // Cut the leader off from the other two.
    let leader = c.status(1).await.unwrap().leader_id as u8;
    let others: Vec<u8> = (1..=3).filter(|i| *i != leader).collect();
    net.cut(leader).unwrap();
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
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    eprintln!(
        "leader {leader} cut off; node {new_leader} leads the majority {:?} after the cut",
        cut_at.elapsed()
    );
    // The cut-off leader refuses writes: not committed, said as such.
    let refused = c.write(leader, "c3").await.unwrap_err();
    assert!(
        refused.contains("not committed") || refused.contains("majority"),
        "{refused}"
    );
    c.write(others[1], "b2").await.unwrap();

    // Healed: the three states are the same, byte for byte, and hold
    // what the majority committed, not what the cut-off leader took.
    net.heal().unwrap();
    let digests = try_wait_for(
        "equal digests after healing",
        Duration::from_secs(30),
        || async {
            let mut seen = Vec::new();
            for i in 1..=3 {
                seen.push(c.digest(i).await?);
            }
            let same = seen.iter().all(|d| {
                d.sha256 == seen[0].sha256 && d.last_applied_index == seen[0].last_applied_index
            });
            same.then_some(seen)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(dir)));
    eprintln!(
        "healed: digest {} at index {} on all three",
        digests[0].sha256, digests[0].last_applied_index
    );
    for i in 1..=3 {
        let revoked = c.revoked(i).await.unwrap();
        assert_eq!(
            revoked,
            BTreeSet::from(["a1".to_string(), "b2".to_string()]),
            "node {i}"
        );
    }
    drop(daemons);
}
