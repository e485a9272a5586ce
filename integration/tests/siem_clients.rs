//! The SIEM export's clients against a real control plane (mutual TLS, a
//! `siem-reader` certificate) and a real agent (eBPF), with findings made
//! by real processes opening model files:
//! - the Python example (`examples/python-siem`) resumes from its saved
//!   cursor after a `kill -9`, with no gap and no duplicate;
//! - `vigilctl siem otlp` delivers to a real OTLP/gRPC receiver (Python,
//!   OpenTelemetry's generated stubs), including everything made while the
//!   receiver was down for 30 s, and its cursor file never passes what the
//!   receiver acknowledged.
//!
//! Runs as root (eBPF); needs `make deps` (.vigil/deps/siem).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vigil_integration::siem_clients::{
    complete_lines, python_siem_example, read_cursor, siem_python_path, OtlpReceiver,
};
use vigil_integration::tls_fleet::TlsFleet;
use vigil_integration::{
    binary, free_port, privileged, python_opens, wait_for, wait_leader_of, Agent, ControlPlane,
    Killed,
};
use vigil_pki::{Identity, OperatorRole};
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

/// A control plane and an agent speaking mutual TLS, and the files of a
/// `siem-reader` operator.
struct TlsHost {
    dir: PathBuf,
    port: u16,
    /// `--tls-ca CA --tls-cert CERT --tls-key KEY` of the SIEM reader.
    reader: Vec<String>,
    _agent: Agent,
    _cp: ControlPlane,
    _tmp: tempfile::TempDir,
}

impl TlsHost {
    async fn start(agent_id: &str) -> TlsHost {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("work");
        std::fs::create_dir_all(&dir).unwrap();
        let fleet = TlsFleet::new(tmp.path(), "fleet");
        let port = free_port();
        let cp = fleet.start_control_plane(&tmp.path().join("cp"), port, &[]);
        let admin_cert = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
        let admin = AdminServiceClient::new(fleet.channel(port, &admin_cert).await.unwrap());
        wait_leader_of(&admin).await;
        let agent_cert = fleet.issue(Identity::agent(agent_id).unwrap());
        let tls = fleet.tls_flags(agent_id, &agent_cert);
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
        let agent = Agent::start_with(
            &tmp.path().join("agent"),
            &format!("https://127.0.0.1:{port}"),
            agent_id,
            &tls,
        )
        .await;
        let reader_cert =
            fleet.issue(Identity::operator(OperatorRole::SiemReader, "splunk").unwrap());
        let reader = fleet.tls_flags("reader", &reader_cert);
        TlsHost {
            dir,
            port,
            reader,
            _agent: agent,
            _cp: cp,
            _tmp: tmp,
        }
    }

    /// The reader's file for `flag` (`--tls-ca`, `--tls-cert`, `--tls-key`).
    fn reader_file(&self, flag: &str) -> &str {
        let at = self.reader.iter().position(|f| f == flag).unwrap();
        &self.reader[at + 1]
    }

    /// A model file `name` in the work directory, opened by a python3
    /// process: a finding.
    fn open_model(&self, name: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, b"\x08\x07").unwrap();
        python_opens(&path);
        path.display().to_string()
    }
}

/// The JSON objects of a JSON-lines file's complete lines.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    complete_lines(path)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn log_file(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_resumes_after_kill_9_with_no_gap_and_no_duplicate() {
    if !privileged("the_python_example_resumes_after_kill_9") {
        return;
    }
    let host = TlsHost::start("siem-python").await;
    let out = host.dir.join("events.jsonl");
    let cursor_file = host.dir.join("siem.cursor");
    let log = host.dir.join("siem_follow.log");
    let start = || {
        Killed(
            Command::new("python3")
                .arg(python_siem_example())
                .args(["--endpoint", &format!("127.0.0.1:{}", host.port)])
                .args(["--ca", host.reader_file("--tls-ca")])
                .args(["--cert", host.reader_file("--tls-cert")])
                .args(["--key", host.reader_file("--tls-key")])
                .arg("--cursor-file")
                .arg(&cursor_file)
                .arg("--out")
                .arg(&out)
                .arg("--stubs-dir")
                .arg(host.dir.join("stubs"))
                .env("PYTHONPATH", siem_python_path())
                .stdout(Stdio::null())
                .stderr(log_file(&log))
                .spawn()
                .unwrap(),
        )
    };
    let wait_path = |path: String| {
        let out = out.clone();
        async move {
            wait_for(
                &format!("the Python client to write the finding for {path}"),
                Duration::from_secs(30),
                || async {
                    complete_lines(&out)
                        .iter()
                        .any(|l| l.contains(&path))
                        .then_some(())
                },
            )
            .await;
        }
    };

    let mut client = start();
    let first = host.open_model("first.onnx");
    wait_path(first.clone()).await;
    let line = complete_lines(&out)
        .into_iter()
        .find(|l| l.contains(&first))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["kind"], "finding", "{line}");
    assert_eq!(v["ocsf"]["class_uid"], 2004, "{line}");

    // Findings flow while the client is killed (SIGKILL: no chance to
    // tidy up), and more while it is down.
    let mut made = vec![first];
    for i in 0..5 {
        made.push(host.open_model(&format!("burst-{i}.onnx")));
    }
    let _ = client.0.kill();
    let _ = client.0.wait();
    drop(client);
    for i in 5..10 {
        made.push(host.open_model(&format!("burst-{i}.onnx")));
    }
    let saved = read_cursor(&cursor_file);
    let written = json_lines(&out).last().unwrap()["cursor"].as_u64().unwrap();
    assert!(
        written == saved || written == saved + 1,
        "the cursor file ({saved}) is the last line written ({written}) or one behind (killed between the two)"
    );

    let _client = start();
    let last = host.open_model("last.onnx");
    made.push(last.clone());
    wait_path(last).await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!("after cursor {written}")),
        "the restarted client resumed after cursor {written}:\n{text}"
    );

    let events = json_lines(&out);
    let cursors: Vec<u64> = events
        .iter()
        .map(|e| e["cursor"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (1..=*cursors.last().unwrap()).collect();
    assert_eq!(
        cursors, want,
        "cursors across both runs: from 1, strictly increasing, no gap, no duplicate"
    );
    for path in &made {
        let n = events
            .iter()
            .filter(|e| e["ocsf"].to_string().contains(path.as_str()))
            .count();
        assert!(n >= 1, "no event for {path}");
    }
    wait_for(
        "the cursor file at the last event",
        Duration::from_secs(5),
        || async { (read_cursor(&cursor_file) == *cursors.last().unwrap()).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_delivers_everything_made_while_the_receiver_was_down_for_30_s() {
    if !privileged("otlp_export_delivers_everything_made_while_the_receiver_was_down") {
        return;
    }
    let host = TlsHost::start("siem-otlp").await;
    let received = host.dir.join("otlp.jsonl");
    let receiver_log = host.dir.join("otlp_receiver.log");
    let cursor_file = host.dir.join("otlp.cursor");
    let exporter_log = host.dir.join("vigilctl-otlp.log");
    let rport = free_port();
    let mut receiver = OtlpReceiver::start(rport, &received, &receiver_log);
    let mut exporter = Killed(
        Command::new(binary("vigilctl"))
            .args(["--endpoint", &format!("https://127.0.0.1:{}", host.port)])
            .args(&host.reader)
            .args(["siem", "otlp", "--collector", &receiver.endpoint()])
            .arg("--cursor-file")
            .arg(&cursor_file)
            .args(["--max-batch-delay-ms", "50"])
            .stdout(Stdio::null())
            .stderr(log_file(&exporter_log))
            .spawn()
            .unwrap(),
    );
    let bodies_with = |path: &str| {
        json_lines(&received)
            .into_iter()
            .filter(|r| r["body"].as_str().is_some_and(|b| b.contains(path)))
            .collect::<Vec<_>>()
    };

    let first = host.open_model("first.onnx");
    let record = wait_for(
        "the receiver to get the first finding",
        Duration::from_secs(30),
        || async { bodies_with(&first).into_iter().next() },
    )
    .await;
    assert_eq!(record["kind"], "finding", "{record}");
    assert_eq!(record["class_uid"], 2004, "{record}");
    assert_eq!(record["event_name"], "vigil.siem.finding", "{record}");
    assert!(record["severity_number"].as_i64().unwrap() > 0, "{record}");
    assert_eq!(record["resource"]["service.name"], "vigil", "{record}");
    assert!(record["cursor"].as_u64().unwrap() >= 1, "{record}");

    // The receiver dies; findings are made while it is down.
    receiver.daemon.kill();
    let acknowledged = json_lines(&received)
        .iter()
        .filter_map(|r| r["cursor"].as_u64())
        .max()
        .unwrap();
    let down_since = Instant::now();
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(host.open_model(&format!("while-down-{i}.onnx")));
    }
    // For 30 s the exporter retries, and its cursor file stays at or
    // below what the receiver wrote before it died.
    while down_since.elapsed() < Duration::from_secs(30) {
        let saved = read_cursor(&cursor_file);
        assert!(
            saved <= acknowledged,
            "the cursor file ({saved}) passed what the receiver acknowledged ({acknowledged})"
        );
        assert!(
            exporter.0.try_wait().unwrap().is_none(),
            "the exporter exited: {}",
            std::fs::read_to_string(&exporter_log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let retried = std::fs::read_to_string(&exporter_log).unwrap();
    assert!(
        retried.contains("retrying the same batch"),
        "the exporter said it retries:\n{retried}"
    );

    // Back on the same port: everything arrives.
    let _receiver = OtlpReceiver::start(rport, &received, &receiver_log);
    let last = host.open_model("after.onnx");
    made.push(last);
    wait_for(
        "every finding made while the receiver was down, and after",
        Duration::from_secs(45),
        || async {
            made.iter()
                .all(|p| !bodies_with(p).is_empty())
                .then_some(())
        },
    )
    .await;
    let records = json_lines(&received);
    let got: BTreeSet<u64> = records
        .iter()
        .filter_map(|r| r["cursor"].as_u64())
        .collect();
    let newest = *got.last().unwrap();
    let missing: Vec<u64> = (1..=newest).filter(|c| !got.contains(c)).collect();
    assert!(
        missing.is_empty(),
        "every cursor arrives at least once; missing {missing:?}"
    );
    wait_for(
        "the cursor file at the newest delivered event",
        Duration::from_secs(15),
        || async {
            let saved = read_cursor(&cursor_file);
            let delivered = json_lines(&received)
                .iter()
                .filter_map(|r| r["cursor"].as_u64())
                .max()
                .unwrap_or(0);
            assert!(
                saved <= delivered,
                "the cursor file ({saved}) passed what the receiver got ({delivered})"
            );
            (saved >= newest).then_some(())
        },
    )
    .await;
    eprintln!(
        "{} records for {} cursors ({} sent again after the outage)",
        records.len(),
        got.len(),
        records.len() - got.len()
    );

    // SIGTERM: it exits 0 with its cursor written; started again, it
    // resumes after that cursor and sends nothing before it again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(exporter.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = exporter.0.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
    let stopped_at = read_cursor(&cursor_file);
    let sent_before = json_lines(&received).len();
    let _exporter = Killed(
        Command::new(binary("vigilctl"))
            .args(["--endpoint", &format!("https://127.0.0.1:{}", host.port)])
            .args(&host.reader)
            .args([
                "siem",
                "otlp",
                "--collector",
                &format!("http://127.0.0.1:{rport}"),
            ])
            .arg("--cursor-file")
            .arg(&cursor_file)
            .args(["--max-batch-delay-ms", "50"])
            .stdout(Stdio::null())
            .stderr(log_file(&exporter_log))
            .spawn()
            .unwrap(),
    );
    let again = host.open_model("after-restart.onnx");
    wait_for(
        "the restarted exporter to deliver a new finding",
        Duration::from_secs(30),
        || async { (!bodies_with(&again).is_empty()).then_some(()) },
    )
    .await;
    let resent: Vec<u64> = json_lines(&received)[sent_before..]
        .iter()
        .filter_map(|r| r["cursor"].as_u64())
        .filter(|&c| c <= stopped_at)
        .collect();
    assert!(
        resent.is_empty(),
        "resumed after cursor {stopped_at}, yet sent {resent:?} again"
    );
}
