//! Three control-plane nodes as real processes over mutual TLS on
//! loopback: two join the first (`--join`), writes sent to any node are
//! forwarded to the leader and replicate, the leader
//! is killed with SIGKILL and the other two elect a new one and go on
//! writing, and the killed node restarts and catches up. Peers that try to
//! speak raft without a node's certificate, or for another node, are
//! refused. (Partitions, network namespaces and the linearizability check
//! come with the rest of issue #21.) Unprivileged: processes and loopback.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use tonic::Code;
use vigil_integration::tls_fleet::TlsFleet;
use vigil_integration::{free_port, try_wait_for, ControlPlane};
use vigil_pki::{Identity, IssuedCertificate, OperatorRole};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;
use vigil_proto::raft::v1 as raft_pb;
use vigil_proto::raft::v1::raft_service_client::RaftServiceClient;

struct Node {
    id: u64,
    port: u16,
    cp: Option<ControlPlane>,
}

fn start(fleet: &TlsFleet, dir: &Path, id: u64, port: u16, join: Option<u16>) -> ControlPlane {
    start_with(fleet, dir, id, port, join, &[])
}

fn start_with(
    fleet: &TlsFleet,
    dir: &Path,
    id: u64,
    port: u16,
    join: Option<u16>,
    extra: &[&str],
) -> ControlPlane {
    let mut flags = fleet.node_flags(&id.to_string());
    flags.extend(extra.iter().map(|f| f.to_string()));
    flags.extend(["--node-id".to_string(), id.to_string()]);
    if let Some(peer) = join {
        flags.extend(["--join".to_string(), format!("127.0.0.1:{peer}")]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    ControlPlane::start_with(&dir.join(format!("node-{id}")), port, &flags)
}

/// Node 1 alone, then 2 and 3 joining it; once every node knows three
/// members and a leader.
async fn start_three(fleet: &TlsFleet, dir: &Path, admin: &IssuedCertificate) -> Vec<Node> {
    start_three_with(fleet, dir, admin, &[]).await
}

async fn start_three_with(
    fleet: &TlsFleet,
    dir: &Path,
    admin: &IssuedCertificate,
    extra: &[&str],
) -> Vec<Node> {
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node {
            id,
            port: free_port(),
            cp: None,
        })
        .collect();
    let first = nodes[0].port;
    nodes[0].cp = Some(start_with(fleet, dir, 1, first, None, extra));
    try_wait_for("node 1 leads", Duration::from_secs(20), || async move {
        (status(fleet, first, admin).await?.leader_id == 1).then_some(())
    })
    .await
    .unwrap();
    for n in &mut nodes[1..] {
        n.cp = Some(start_with(fleet, dir, n.id, n.port, Some(first), extra));
    }
    // A node certificate alone does not make a member: an admin adds
    // each (the node's own join then completes).
    let channel = fleet.channel(first, admin).await.unwrap();
    let mut operator = AdminServiceClient::new(channel);
    for n in &nodes[1..] {
        operator
            .add_node(admin_pb::AddNodeRequest {
                node_id: n.id,
                address: format!("127.0.0.1:{}", n.port),
            })
            .await
            .unwrap_or_else(|e| panic!("adding node {}: {e}\n{}", n.id, logs(&nodes)));
    }
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    try_wait_for(
        "three voters on every node",
        Duration::from_secs(30),
        || {
            let ports = &ports;
            async move {
                for &port in ports {
                    let s = status(fleet, port, admin).await?;
                    (s.members.iter().filter(|m| m.voter).count() == 3 && s.leader_id != 0)
                        .then_some(())?;
                }
                Some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&nodes)));
    nodes
}

async fn status(
    fleet: &TlsFleet,
    port: u16,
    who: &IssuedCertificate,
) -> Option<admin_pb::ClusterStatusResponse> {
    let channel = fleet.channel(port, who).await.ok()?;
    let s = AdminServiceClient::new(channel)
        .cluster_status(admin_pb::ClusterStatusRequest {})
        .await
        .ok()?;
    Some(s.into_inner())
}

/// A certificate revocation: a small replicated write any admin may make.
async fn write(
    fleet: &TlsFleet,
    port: u16,
    admin: &IssuedCertificate,
    serial: &str,
) -> Result<(), tonic::Status> {
    let channel = fleet
        .channel(port, admin)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    AdminServiceClient::new(channel)
        .revoke_certificate(admin_pb::RevokeCertificateRequest {
            serial: serial.into(),
            identity: "agent test".into(),
            reason: "replication test".into(),
        })
        .await
        .map(|_| ())
}

/// The serials node `port` holds as revoked (its own state, not the leader's).
async fn revoked(fleet: &TlsFleet, port: u16, who: &IssuedCertificate) -> Option<BTreeSet<String>> {
    let channel = fleet.channel(port, who).await.ok()?;
    let listed = AdminServiceClient::new(channel)
        .list_revoked_certificates(admin_pb::ListRevokedCertificatesRequest {})
        .await
        .ok()?
        .into_inner();
    Some(listed.certificates.into_iter().map(|c| c.serial).collect())
}

#[tokio::test]
async fn three_nodes_replicate_survive_a_killed_leader_and_catch_up() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TlsFleet::new(tmp.path(), "fleet");
    let admin = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    let mut nodes = start_three(&fleet, tmp.path(), &admin).await;
    let first = nodes[0].port;
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();

    // A write sent to a follower is forwarded to the leader and reaches
    // every node's state machine.
    write(&fleet, nodes[1].port, &admin, "a1").await.unwrap();
    wait_everywhere(&fleet, &admin, &ports, &["a1"], &nodes).await;

    // Kill the leader outright: the other two elect one of themselves.
    let killed_at = Instant::now();
    nodes[0].cp.as_mut().unwrap().daemon.kill();
    let survivors = [nodes[1].port, nodes[2].port];
    let new_leader_port = try_wait_for("a new leader", Duration::from_secs(10), || {
        let (fleet, admin, survivors) = (&fleet, &admin, &survivors);
        async move {
            for &port in survivors {
                let s = status(fleet, port, admin).await?;
                if s.leader_id != 0 && s.leader_id != 1 && s.node_id == s.leader_id {
                    return Some(port);
                }
            }
            None
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&nodes)));
    eprintln!(
        "a new leader {:?} after the leader was killed",
        killed_at.elapsed()
    );
    let follower_port = survivors
        .into_iter()
        .find(|p| *p != new_leader_port)
        .unwrap();
    // The follower may not have heard from the new leader yet ("leader
    // unknown": nothing was written); it forwards once it has.
    try_wait_for(
        "a write through the follower once it knows the new leader",
        Duration::from_secs(10),
        || async {
            match write(&fleet, follower_port, &admin, "b2").await {
                Ok(r) => Some(Ok(r)),
                Err(e) if e.code() == Code::Unavailable => None,
                Err(e) => Some(Err(e)),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&nodes)))
    .unwrap();
    wait_everywhere(&fleet, &admin, &survivors, &["a1", "b2"], &nodes).await;

    // The killed node restarts (no --join: it is a member) and catches up.
    nodes[0].cp = Some(start(&fleet, tmp.path(), 1, first, None));
    write(&fleet, new_leader_port, &admin, "c3").await.unwrap();
    wait_everywhere(&fleet, &admin, &ports, &["a1", "b2", "c3"], &nodes).await;
}

async fn wait_everywhere(
    fleet: &TlsFleet,
    who: &IssuedCertificate,
    ports: &[u16],
    serials: &[&str],
    nodes: &[Node],
) {
    let want: BTreeSet<String> = serials.iter().map(|s| s.to_string()).collect();
    try_wait_for("the writes on every node", Duration::from_secs(20), || {
        let want = want.clone();
        async move {
            for &port in ports {
                (revoked(fleet, port, who).await? == want).then_some(())?;
            }
            Some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(nodes)));
}

fn logs(nodes: &[Node]) -> String {
    nodes
        .iter()
        .filter_map(|n| n.cp.as_ref())
        .map(|cp| {
            format!(
                "--- {}\n{}",
                cp.log.display(),
                std::fs::read_to_string(&cp.log).unwrap_or_default()
            )
        })
        .collect()
}

/// Raft is for nodes, each speaking for itself: an operator's or an
/// agent's certificate cannot call it, a node's certificate cannot vote
/// or append as another node or join under another id, and a join that
/// reuses a member's id at another address is refused.
#[tokio::test]
async fn only_a_node_speaks_raft_and_only_for_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TlsFleet::new(tmp.path(), "fleet");
    let admin = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    let port = free_port();
    let _cp = start(&fleet, tmp.path(), 1, port, None);
    try_wait_for("node 1 leads", Duration::from_secs(20), || {
        let (fleet, admin) = (&fleet, &admin);
        async move { (status(fleet, port, admin).await?.leader_id == 1).then_some(()) }
    })
    .await
    .unwrap();
    let raft = |who: IssuedCertificate| {
        let fleet = &fleet;
        async move { RaftServiceClient::new(fleet.channel(port, &who).await.unwrap()) }
    };
    // A vote request from "node 2" for a far term: if it were taken, node
    // 1 would step down.
    let vote_as = |candidate: u64| raft_pb::RaftPayload {
        json: serde_json::to_vec(&serde_json::json!({
            "vote": {"leader_id": {"term": 1000, "node_id": candidate}, "committed": false},
            "last_log_id": null
        }))
        .unwrap(),
    };
    for who in [
        admin.clone(),
        fleet.issue(Identity::agent("host-1").unwrap()),
    ] {
        let refused = raft(who).await.vote(vote_as(2)).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
        assert!(
            refused.message().contains("control-plane nodes"),
            "{}",
            refused.message()
        );
    }
    // Nor propose a write past the admin service's checks (a forwarded
    // write is proposed as it comes).
    let unsigned = raft_pb::RaftPayload {
        json: serde_json::to_vec(&serde_json::json!({
            "revoke_workload.v1": {"id": "w-1"}
        }))
        .unwrap(),
    };
    for who in [
        admin.clone(),
        fleet.issue(Identity::agent("host-1").unwrap()),
    ] {
        let refused = raft(who)
            .await
            .client_write(unsigned.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let node3 = fleet.issue(Identity::node("3").unwrap());
    let refused = raft(node3.clone())
        .await
        .vote(vote_as(2))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("for raft node 2"),
        "{}",
        refused.message()
    );
    let refused = raft(node3.clone())
        .await
        .join(raft_pb::JoinRequest {
            node_id: 2,
            address: "127.0.0.1:1".into(),
            cluster_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // A node of no cluster here (another cluster's node 3, signed by the
    // same CA) can neither join by itself, nor vote, nor forward writes.
    let refused = raft(node3.clone())
        .await
        .join(raft_pb::JoinRequest {
            node_id: 3,
            address: "127.0.0.1:1".into(),
            cluster_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("vigilctl cluster add"),
        "{}",
        refused.message()
    );
    let refused = raft(node3.clone())
        .await
        .vote(vote_as(3))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("not a voter of this cluster"),
        "{}",
        refused.message()
    );
    let refused = raft(node3.clone())
        .await
        .client_write(unsigned.clone())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // A node waiting to join (started with --join, not yet added) takes
    // raft traffic only from the voters of the cluster it was sent to: a
    // node certificate of no voter here cannot feed it a log of its own.
    let waiting_port = free_port();
    let _waiting = start(&fleet, tmp.path(), 2, waiting_port, Some(port));
    let refused = try_wait_for(
        "the joiner to know its cluster",
        Duration::from_secs(10),
        || {
            let (fleet, node3) = (&fleet, &node3);
            let vote = vote_as(3);
            async move {
                let channel = fleet.channel(waiting_port, node3).await.ok()?;
                let r = RaftServiceClient::new(channel).vote(vote).await;
                match r {
                    Err(s) if s.message().contains("waiting to join") => Some(s),
                    _ => None,
                }
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    // Node 1's own id at another address: already a member.
    let refused = raft(fleet.issue(Identity::node("1").unwrap()))
        .await
        .join(raft_pb::JoinRequest {
            node_id: 1,
            address: "127.0.0.1:1".into(),
            cluster_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    // Garbage where a raft payload goes: a clear error, and node 1 still
    // leads in its own term.
    let refused = raft(node3.clone())
        .await
        .append_entries(raft_pb::RaftPayload {
            json: b"{not json".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // Nor may anyone but a member pass an unfreeze order to an agent's
    // stream: not an agent, not an operator (they go through the admin
    // service's checks), not a node of no cluster here.
    let deliver = raft_pb::DeliverUnfreezeRequest {
        agent_id: "host-1".into(),
        order: Some(Default::default()),
    };
    for who in [
        admin.clone(),
        fleet.issue(Identity::agent("host-1").unwrap()),
        node3.clone(),
    ] {
        let refused = raft(who)
            .await
            .deliver_unfreeze(deliver.clone())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let s = status(&fleet, port, &admin).await.unwrap();
    assert_eq!((s.leader_id, s.term), (1, 1), "{s:?}");
}

/// An agent streams to one node; an operator's unfreeze order sent to any
/// other node reaches it (the node that took the order asks the others),
/// so does an approval, and an order for an agent with no stream open
/// anywhere is refused saying so.
/// Nobody trusts a key here: the control plane passes the unsigned order on
/// and the agent refuses it in a finding, proof that the order got there. Root: the
/// agent's eBPF sensors.
#[tokio::test]
async fn an_unfreeze_reaches_an_agent_streaming_to_another_node() {
    use vigil_integration::{privileged, Agent};
    if !privileged("an_unfreeze_reaches_an_agent_streaming_to_another_node") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TlsFleet::new(tmp.path(), "fleet");
    let admin = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    // A lab: unsigned approvals are taken.
    let nodes = start_three_with(&fleet, tmp.path(), &admin, &["--allow-unsigned"]).await;
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let agent_cert = fleet.issue(Identity::agent("host-u").unwrap());
    let tls = fleet.tls_flags("host-u", &agent_cert);
    let extra: Vec<&str> = tls.iter().map(String::as_str).collect();
    let endpoint = format!("https://127.0.0.1:{}", ports[2]);
    let mut agent = Agent::start_with(&tmp.path().join("agent"), &endpoint, "host-u", &extra).await;
    agent
        .wait_for_log(
            "a session with node 3",
            Duration::from_secs(20),
            &format!("connected to the control plane endpoint={endpoint}"),
        )
        .await;
    let refusals = |port: u16| {
        let (fleet, admin) = (&fleet, &admin);
        async move {
            let channel = fleet.channel(port, admin).await.ok()?;
            let alerts = AdminServiceClient::new(channel)
                .query_alerts(admin_pb::QueryAlertsRequest {
                    after_index: 0,
                    limit: 10_000,
                })
                .await
                .ok()?
                .into_inner()
                .alerts;
            Some(
                alerts
                    .into_iter()
                    .filter_map(|a| a.finding)
                    .filter(|f| {
                        f.rule_id == "vigil.respond.unfreeze" && f.summary.contains("REFUSED")
                    })
                    .map(|f| f.summary)
                    .collect::<Vec<_>>(),
            )
        }
    };
    let first = ports[0];
    // Through node 1, then node 2: neither holds the agent's stream.
    for (n, port) in [ports[0], ports[1]].into_iter().enumerate() {
        let channel = fleet.channel(port, &admin).await.unwrap();
        AdminServiceClient::new(channel)
            .unfreeze(admin_pb::UnfreezeRequest {
                agent: "host-u".into(),
                pid: 4242 + n as u32,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("unfreeze via port {port}: {e}\n{}", logs(&nodes)));
        try_wait_for(
            "the agent's refusal of the order",
            Duration::from_secs(20),
            || async move {
                let seen = refusals(first).await?;
                (seen.len() > n
                    && seen
                        .iter()
                        .any(|s| s.contains(&format!("unfreeze of pid {}", 4242 + n))))
                .then_some(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log_text(), logs(&nodes)));
    }
    // An approval taken by node 1 reaches the agent too (node 3 applies it
    // and streams the new set to its agents).
    let channel = fleet.channel(first, &admin).await.unwrap();
    AdminServiceClient::new(channel)
        .approve_workload(admin_pb::ApproveWorkloadRequest {
            workload: Some(vigil_proto::types::v1::Workload {
                id: "w-cross-node".into(),
                exe_sha256: "ab".repeat(32),
                approved_by: "cluster test".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    agent
        .wait_for_log(
            "the approval from node 1",
            Duration::from_secs(20),
            "approved workloads updated count=1",
        )
        .await;
    // The agent gone: every node says it has no stream open for it.
    agent.daemon.kill();
    let refused = try_wait_for(
        "node 3 to notice the agent is gone",
        Duration::from_secs(20),
        || {
            let (fleet, admin) = (&fleet, &admin);
            async move {
                let channel = fleet.channel(first, admin).await.ok()?;
                let r = AdminServiceClient::new(channel)
                    .unfreeze(admin_pb::UnfreezeRequest {
                        agent: "host-u".into(),
                        pid: 1,
                        ..Default::default()
                    })
                    .await;
                r.err()
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("no stream open on any node")
            && refused.message().contains("node 3: not connected there"),
        "{}",
        refused.message()
    );
}

/// An agent given every node (`--control-plane a,b,c`) moves to another
/// when the one it streams to is killed, and every finding lands: before
/// the kill, across it and after. Root: the agent's eBPF sensors.
#[tokio::test]
async fn an_agent_fails_over_to_another_node_and_loses_no_finding() {
    use vigil_integration::{privileged, python_opens, Agent};
    if !privileged("an_agent_fails_over_to_another_node_and_loses_no_finding") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TlsFleet::new(tmp.path(), "fleet");
    let admin = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    let mut nodes = start_three(&fleet, tmp.path(), &admin).await;
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();

    // The agent lists the followers first: it streams to a follower,
    // whose writes go to the leader.
    let endpoints = [ports[1], ports[2], ports[0]]
        .iter()
        .map(|p| format!("https://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let agent_cert = fleet.issue(Identity::agent("host-f").unwrap());
    let tls = fleet.tls_flags("host-f", &agent_cert);
    let extra: Vec<&str> = tls.iter().map(String::as_str).collect();
    let agent = Agent::start_with(&tmp.path().join("agent"), &endpoints, "host-f", &extra).await;
    agent
        .wait_for_log(
            "a session",
            Duration::from_secs(20),
            &format!(
                "connected to the control plane endpoint=https://127.0.0.1:{}",
                ports[1]
            ),
        )
        .await;

    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let mut paths = Vec::new();
    for i in 0..30 {
        if i == 10 {
            // Kill the node the agent streams to.
            nodes[1].cp.as_mut().unwrap().daemon.kill();
        }
        let p = models.join(format!("f-{i}.onnx"));
        std::fs::write(&p, b"").unwrap();
        python_opens(&p);
        paths.push(p.display().to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every finding, read through a surviving node.
    let survivor = ports[2];
    let found = try_wait_for(
        "every finding in the cluster",
        Duration::from_secs(30),
        || {
            let (fleet, admin, paths) = (&fleet, &admin, &paths);
            async move {
                let channel = fleet.channel(survivor, admin).await.ok()?;
                let alerts = AdminServiceClient::new(channel)
                    .query_alerts(admin_pb::QueryAlertsRequest {
                        after_index: 0,
                        limit: 10_000,
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .alerts;
                let seen: BTreeSet<String> = alerts
                    .iter()
                    .filter_map(|a| a.finding.as_ref()?.file.as_ref().map(|f| f.path.clone()))
                    .collect();
                paths.iter().all(|p| seen.contains(p)).then_some(())
            }
        },
    )
    .await;
    found.unwrap_or_else(|e| panic!("{e}\n{}\n{}", agent.log_text(), logs(&nodes)));
    assert!(
        agent
            .log_text()
            .contains(&format!("endpoint=https://127.0.0.1:{}", ports[2])),
        "the agent never moved to the next node:\n{}",
        agent.log_text()
    );
}

/// `vigilctl cluster`: members with their roles; a leadership transfer
/// asked of a follower goes to the leader and hands leadership to the
/// chosen node; a node is removed; an id in use at another address is
/// refused; a viewer may look but not change.
#[tokio::test]
async fn operators_move_leadership_and_membership_with_vigilctl() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TlsFleet::new(tmp.path(), "fleet");
    let admin = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    let viewer = fleet.issue(Identity::operator(OperatorRole::Viewer, "bob").unwrap());
    let nodes = start_three(&fleet, tmp.path(), &admin).await;
    let vigilctl = |port: u16, who: &IssuedCertificate, name: &str, args: &[&str]| {
        let out = std::process::Command::new(vigil_integration::binary("vigilctl"))
            .args(fleet.vigilctl_flags(port, name, who))
            .args(args)
            .output()
            .expect("running vigilctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let follower = nodes[1].port;
    let (code, out, err) = vigilctl(follower, &admin, "alice", &["cluster", "members"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(!out.contains("learner"), "{out}");

    // Asked of node 2 (a follower), carried out by the leader (node 1).
    let (code, out, err) = vigilctl(
        follower,
        &admin,
        "alice",
        &["cluster", "transfer-leader", "3"],
    );
    assert_eq!(code, Some(0), "{out}{err}\n{}", logs(&nodes));
    assert!(out.contains("node 3 leads"), "{out}");
    for n in &nodes {
        let s = status(&fleet, n.port, &admin).await.unwrap();
        assert_eq!(s.leader_id, 3, "node {} sees {s:?}", n.id);
    }

    // A viewer sees the members and may not change them.
    let (code, _, err) = vigilctl(follower, &viewer, "bob", &["cluster", "remove", "2"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("admin role"), "{err}");
    // Node 3's id at another address is refused.
    let (code, _, err) = vigilctl(
        follower,
        &admin,
        "alice",
        &[
            "cluster",
            "add",
            "--node-id",
            "3",
            "--address",
            "127.0.0.1:1",
        ],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("already a member"), "{err}");

    // Node 2 is removed: two voters remain, and they still commit.
    let (code, out, err) = vigilctl(nodes[0].port, &admin, "alice", &["cluster", "remove", "2"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("voters [1, 3]"), "{out}");
    write(&fleet, nodes[0].port, &admin, "af7e2").await.unwrap();
    let (_, out, _) = vigilctl(nodes[2].port, &admin, "alice", &["cluster", "members"]);
    assert_eq!(out.lines().count(), 2, "{out}");
}
