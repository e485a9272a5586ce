//! The control plane's Prometheus endpoint (`--metrics-listen`): the key
//! metrics exist with sane values, follow what agents send, and bad HTTP
//! never takes the server down. Needs no privileges: the agent here is a
//! raw gRPC stream.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_integration::raw_agent::{
    findings, heartbeat, hello, model_file_finding as finding, RawAgentStream,
};
use vigil_integration::{free_port, wait_for, ControlPlane};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::agent::v1 as pb;
use vigil_proto::types::v1 as types_pb;

struct HttpReply {
    status: u16,
    headers: String,
    body: String,
}

/// Sends `request` as is on a fresh connection and reads until the server
/// closes it (each request asks for `Connection: close`).
async fn raw_http(port: u16, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .map_err(|_| std::io::Error::other("no reply in 10 s"))??;
    Ok(reply)
}

async fn get(port: u16, path: &str, accept: Option<&str>) -> HttpReply {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{accept}Connection: close\r\n\r\n");
    let reply = raw_http(port, request.as_bytes())
        .await
        .expect("an HTTP reply");
    let reply = String::from_utf8(reply).expect("a UTF-8 reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    HttpReply {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// `name{labels}` → value, for every sample of a text exposition.
fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("sample {l:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("sample value in {l:?}"));
            (name.to_string(), value)
        })
        .collect()
}

async fn scrape(port: u16) -> BTreeMap<String, f64> {
    let reply = get(port, "/metrics", None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    samples(&reply.body)
}

fn value(samples: &BTreeMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from the scrape: {samples:#?}"))
}

async fn start() -> (tempfile::TempDir, ControlPlane, u16) {
    let tmp = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let listen = format!("127.0.0.1:{metrics_port}");
    let cp = ControlPlane::start_with(
        &tmp.path().join("cp"),
        free_port(),
        &["--metrics-listen", &listen],
    );
    cp.wait_leader().await;
    (tmp, cp, metrics_port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_reports_itself_leader_and_counts_what_an_agent_sends() {
    let (_tmp, cp, port) = start().await;
    // A leader is known before its term's first entry is applied (and,
    // since a new cluster records its id, that takes a moment more).
    wait_for(
        "the first entry applied",
        Duration::from_secs(10),
        || async {
            (scrape(port)
                .await
                .get("vigil_controlplane_raft_last_applied_index")
                >= Some(&1.0))
            .then_some(())
        },
    )
    .await;

    let reply = get(port, "/metrics", None).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{}",
        reply.headers
    );
    assert!(
        reply
            .body
            .contains("# TYPE vigil_controlplane_alerts_total counter"),
        "{}",
        reply.body
    );
    let before = samples(&reply.body);
    assert_eq!(value(&before, "vigil_controlplane_raft_is_leader"), 1.0);
    assert_eq!(value(&before, "vigil_controlplane_raft_leader_id"), 1.0);
    assert!(value(&before, "vigil_controlplane_raft_term") >= 1.0);
    assert!(value(&before, "vigil_controlplane_raft_last_log_index") >= 1.0);
    assert!(value(&before, "vigil_controlplane_raft_last_applied_index") >= 1.0);
    assert_eq!(value(&before, "vigil_controlplane_raft_voters"), 1.0);
    assert_eq!(value(&before, "vigil_controlplane_raft_members"), 1.0);
    assert_eq!(value(&before, "vigil_controlplane_alerts_total"), 0.0);
    assert_eq!(
        value(&before, "vigil_controlplane_audit_entries_total"),
        0.0
    );
    assert_eq!(
        value(&before, "vigil_controlplane_policy_active_version"),
        0.0
    );
    assert_eq!(value(&before, "vigil_controlplane_agents_registered"), 0.0);
    assert_eq!(value(&before, "vigil_controlplane_agent_sessions"), 0.0);
    assert_eq!(
        value(&before, "vigil_controlplane_findings_ingested_total"),
        0.0
    );
    assert_eq!(
        value(&before, "vigil_controlplane_findings_refused_total"),
        0.0
    );
    assert!(value(&before, "process_resident_memory_bytes") > 1e6);
    assert!(value(&before, "process_open_fds") > 0.0);

    // An agent: one bad finding and one good, then a heartbeat.
    let mut agent = RawAgentStream::open(
        &cp,
        8,
        vec![
            hello("metrics-agent", "metrics-host"),
            findings(vec![
                finding(1, 99),
                finding(2, types_pb::Severity::High as i32),
            ]),
            heartbeat(pb::Heartbeat {
                counters: Some(types_pb::SensorCounters {
                    emitted: 40,
                    filtered: 30,
                    dropped: 2,
                    received: 38,
                    ..Default::default()
                }),
                spooled: 5,
                ..Default::default()
            }),
        ],
    )
    .await;
    loop {
        let msg = agent.next_message().await;
        if let Some(pb::control_message::Body::Ack(a)) = msg.body {
            assert_eq!(a.up_to_seq, 2);
            break;
        }
    }

    let after = wait_for(
        "the scrape to show the agent's heartbeat",
        Duration::from_secs(10),
        || async {
            let s = scrape(port).await;
            (s.get("vigil_controlplane_agents_spooled_findings") == Some(&5.0)).then_some(s)
        },
    )
    .await;
    assert_eq!(value(&after, "vigil_controlplane_alerts_total"), 1.0);
    assert_eq!(
        value(
            &after,
            r#"vigil_controlplane_alerts_by_signal_total{signal="model_file"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"vigil_controlplane_alerts_by_severity_total{severity="high"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&after, "vigil_controlplane_findings_ingested_total"),
        1.0
    );
    assert_eq!(
        value(&after, "vigil_controlplane_findings_refused_total"),
        1.0
    );
    assert_eq!(value(&after, "vigil_controlplane_agents_registered"), 1.0);
    assert_eq!(value(&after, "vigil_controlplane_agent_sessions"), 1.0);
    for (kind, n) in [
        ("emitted", 40.0),
        ("filtered", 30.0),
        ("dropped", 2.0),
        ("received", 38.0),
    ] {
        let name = format!(r#"vigil_controlplane_agents_sensor_events{{kind="{kind}"}}"#);
        assert_eq!(value(&after, &name), n, "{name}");
    }
    assert!(
        value(&after, "vigil_controlplane_raft_last_applied_index")
            > value(&before, "vigil_controlplane_raft_last_applied_index")
    );

    // A closed stream is no longer a session; the agent stays registered.
    drop(agent);
    wait_for("the session to close", Duration::from_secs(10), || async {
        let s = scrape(port).await;
        (s.get("vigil_controlplane_agent_sessions") == Some(&0.0)).then_some(())
    })
    .await;
    assert_eq!(
        value(&scrape(port).await, "vigil_controlplane_agents_registered"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openmetrics_scraper_gets_openmetrics_and_other_paths_are_not_found() {
    let (_tmp, _cp, port) = start().await;
    let reply = get(
        port,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .headers
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        reply.headers
    );
    assert!(reply.body.ends_with("# EOF\n"), "{}", reply.body);
    assert_eq!(
        value(&samples(&reply.body), "vigil_controlplane_raft_is_leader"),
        1.0
    );
    assert_eq!(get(port, "/", None).await.status, 404);
    assert_eq!(get(port, "/metrics/x", None).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_on_the_metrics_port_does_not_take_the_server_down() {
    let (_tmp, cp, port) = start().await;

    // Bytes that are no HTTP at all.
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let reply = raw_http(port, &garbage).await.unwrap_or_default();
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // A request line of garbage, and a header far past any sane size.
    let reply = raw_http(port, b"\x16\x03\x01 /metrics HTTP/9.9\r\n\r\n")
        .await
        .unwrap_or_default();
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 4 << 20));
    huge.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    // The server may close the connection before it has read it all.
    if let Ok(reply) = raw_http(port, &huge).await {
        assert!(
            reply.is_empty() || reply.starts_with(b"HTTP/1.1 4"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }
    // A connection that says nothing and goes away.
    drop(TcpStream::connect(("127.0.0.1", port)).await.unwrap());

    // Both servers still answer.
    assert_eq!(
        value(&scrape(port).await, "vigil_controlplane_raft_is_leader"),
        1.0
    );
    let status = cp
        .admin()
        .await
        .cluster_status(admin_pb::ClusterStatusRequest {})
        .await
        .expect("gRPC still serving");
    assert_eq!(status.into_inner().leader_id, 1);
}

/// The agent's own endpoint (`--metrics-listen` on `vigil-agent`): a real
/// model open by python moves the sensor counters and the findings by
/// signal; the spool depth and the policy version are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_counts_its_sensor_records_and_findings_by_signal() {
    if !vigil_integration::privileged("the_agent_counts_its_sensor_records") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _agent = vigil_integration::Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "metrics-host",
        &["--metrics-listen", &listen],
    )
    .await;
    let before = scrape(port).await;
    assert_eq!(value(&before, "vigil_agent_policy_version"), 0.0);
    assert!(
        before.contains_key("vigil_agent_spool_depth"),
        "{before:#?}"
    );

    let model = tmp.path().join("metrics-model.onnx");
    std::fs::write(&model, b"\x08\x07").unwrap();
    let pid = vigil_integration::python_opens(&model);
    wait_for("the model_file alert", Duration::from_secs(15), || async {
        cp.alerts()
            .await
            .into_iter()
            .any(|a| {
                a.finding
                    .as_ref()
                    .and_then(|f| f.process.as_ref())
                    .map(|p| p.pid)
                    == Some(pid)
            })
            .then_some(())
    })
    .await;
    // The sensor counters are published once a second, the kernel's and
    // the agent's side each as read (one may lead the other by a
    // publication); findings as they go.
    let emitted_before = value(&before, "vigil_agent_sensor_emitted_total");
    let after = wait_for("the counters to move", Duration::from_secs(10), || async {
        let s = scrape(port).await;
        let found = s.get("vigil_agent_findings_total{signal=\"model_file\"}") >= Some(&1.0);
        let emitted = s.get("vigil_agent_sensor_emitted_total") > Some(&emitted_before);
        let received = s.get("vigil_agent_sensor_received_total") > Some(&0.0);
        (found && emitted && received).then_some(s)
    })
    .await;
    assert_eq!(value(&after, "vigil_agent_sensor_decode_errors_total"), 0.0);
}
