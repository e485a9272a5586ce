//! The sidecar as the agent drives it, over a SOCK_SEQPACKET control
//! socket the test holds: load version 1, hot-swap to version 2 while
//! clients keep inferring (no request fails, none sees version 1 after
//! version 2), a version whose bytes do not hash to its digest refused
//! while version 2 keeps serving, unload, bad control messages answered
//! with `error`; the agent's end closing stops the sidecar with exit 0,
//! and the agent's death kills it even while the socket stays open.
//! Needs no privileges; needs `make deps`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use prost::bytes::Bytes;
use serde_json::Value;
use tonic::Code;
use vigil_integration::sidecar::{ort_library, sha256_hex, Sidecar, SidecarListen};
use vigil_integration::{binary, free_port};
use vigil_proto::kserve::model_infer_request::InferInputTensor;
use vigil_proto::kserve::{ModelInferRequest, ModelReadyRequest};
use vigil_sidecar::onnx_builder::linear_fp32;

fn json(reply: &str) -> Value {
    serde_json::from_str(reply).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

fn request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![2, 8],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(
            (0..16)
                .flat_map(|i| (i as f32 * 0.1).to_le_bytes())
                .collect::<Vec<u8>>(),
        )],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn versions_load_hot_swap_under_load_and_a_bad_digest_is_refused_while_the_old_version_serves(
) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sidecar.sock");
    let mut sidecar = Sidecar::start(dir.path(), SidecarListen::Unix(socket.clone()), &[], true);
    sidecar.wait_ready().await;
    let v1 = linear_fp32(8, 4, 1);
    let v2 = linear_fp32(8, 4, 2);

    // Nothing served yet.
    let mut client = sidecar.client().await;
    let err = client.model_infer(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    let loaded = json(&sidecar.control().load("m", 1, &v1));
    assert_eq!(loaded["op"], "loaded", "{loaded}");
    assert_eq!(
        (loaded["name"].as_str(), loaded["version"].as_u64()),
        (Some("m"), Some(1))
    );
    assert!(loaded["load_ms"].is_u64());
    let out_v1 = client.model_infer(request()).await.unwrap().into_inner();
    assert_eq!(out_v1.model_version, "1");

    // Clients infer in a loop through the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let mut loops = Vec::new();
    for _ in 0..3 {
        let mut client = sidecar.client().await;
        let stop = stop.clone();
        loops.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.model_infer(request()).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        seen.push((r.model_version, r.raw_output_contents[0].clone()));
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (seen, failures)
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let swapped = json(&sidecar.control().load("m", 2, &v2));
    assert_eq!(swapped["op"], "loaded", "{swapped}");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Version 3 approved with v2's digest, other bytes sent: refused,
    // both digests named; version 2 keeps serving.
    let v3 = linear_fp32(8, 4, 3);
    let refused = json(
        &sidecar
            .control()
            .load_approved("m", 3, &v3, &sha256_hex(&v2)),
    );
    assert_eq!(refused["op"], "refused", "{refused}");
    assert_eq!(refused["version"], 3);
    assert_eq!(
        refused["reason"],
        format!(
            "its bytes hash to sha256 {}, not the approved {}",
            sha256_hex(&v3),
            sha256_hex(&v2)
        )
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    let mut output_of = std::collections::HashMap::new();
    for l in loops {
        let (seen, failures) = l.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed during the swap: {failures:?}"
        );
        total += seen.len();
        let first_v2 = seen
            .iter()
            .position(|(v, _)| v == "2")
            .expect("version 2 answered");
        assert!(
            seen[first_v2..].iter().all(|(v, _)| v == "2"),
            "version 1 answered after version 2"
        );
        for (version, output) in seen {
            assert_ne!(version, "3");
            // Each version always gives the same output for the same input.
            let first = output_of.entry(version.clone()).or_insert(output.clone());
            assert_eq!(*first, output, "version {version}");
        }
    }
    assert!(total > 10, "only {total} requests ran");
    assert_ne!(output_of["1"], output_of["2"]);

    let status = json(&sidecar.control().request(br#"{"op":"status"}"#, None));
    assert_eq!(
        status,
        serde_json::json!({"op":"status","models":[{"name":"m","version":2,"sha256":sha256_hex(&v2)}]})
    );
    let ready = |version: &str| ModelReadyRequest {
        name: "m".into(),
        version: version.into(),
    };
    assert!(
        client
            .model_ready(ready("2"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("1"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !client
            .model_ready(ready("3"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );

    // Rolling back is loading the old version again.
    assert_eq!(json(&sidecar.control().load("m", 1, &v1))["op"], "loaded");
    let back = client.model_infer(request()).await.unwrap().into_inner();
    assert_eq!(
        (back.model_version.as_str(), &back.raw_output_contents[0]),
        ("1", &output_of["1"])
    );

    let unloaded = json(
        &sidecar
            .control()
            .request(br#"{"op":"unload","name":"m"}"#, None),
    );
    assert_eq!(unloaded, serde_json::json!({"op":"unloaded","name":"m"}));
    let err = client.model_infer(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        "model \"m\" is not served here (only approved, verified models are loaded)"
    );

    // The agent's end closing: exit 0, socket file gone.
    sidecar.control = None;
    let status = sidecar
        .wait_exit(Duration::from_secs(10))
        .expect("exits when the agent's end closes");
    assert_eq!(status.code(), Some(0), "{}", sidecar.log_text());
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_control_messages_get_error_replies_and_the_sidecar_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start(dir.path(), SidecarListen::tcp(), &[], true);
    sidecar.wait_ready().await;
    let control = sidecar.control();
    let oversize = vec![b' '; 70 * 1024];
    let no_fd = format!(
        r#"{{"op":"load","name":"m","version":1,"sha256":"{}","size":3}}"#,
        sha256_hex(b"abc")
    );
    let cases: Vec<(&[u8], &str, &str)> = vec![
        (b"{not json", "error", "not a control request"),
        (br#"{"op":"reboot"}"#, "error", "unknown variant `reboot`"),
        (
            br#"{"op":"status","all":true}"#,
            "error",
            "unknown field `all`",
        ),
        (
            &oversize,
            "error",
            "a control message is at most 65536 bytes",
        ),
        (
            no_fd.as_bytes(),
            "refused",
            "a load carries exactly one file descriptor",
        ),
    ];
    for (message, op, reason) in cases {
        let reply = json(&control.request(message, None));
        assert_eq!(reply["op"], op, "{reply}");
        assert!(
            reply["reason"].as_str().unwrap().contains(reason),
            "{reply}"
        );
    }
    // Not an ONNX model, honestly hashed.
    let junk = b"these bytes are no model";
    let reply = json(&control.load("m", 1, junk));
    assert_eq!(reply["op"], "refused");
    assert!(
        reply["reason"]
            .as_str()
            .unwrap()
            .starts_with("ONNX Runtime cannot load it:"),
        "{reply}"
    );
    assert!(sidecar.is_running());
    assert_eq!(
        json(&sidecar.control().load("m", 1, &linear_fp32(8, 4, 1)))["op"],
        "loaded"
    );
}

/// SIGKILLs a pid this test started, should the test fail first.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// `/proc/PID/stat`'s state letter, or None when the process is gone.
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_death_kills_the_sidecar_even_while_the_control_socket_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (agent_end, sidecar_end) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::empty(),
    )
    .unwrap();
    fcntl(&agent_end, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    // A stand-in agent (sh) starts the sidecar, says its pid, and exits
    // when told; the test keeps the socket's agent end open throughout.
    let mut agent = Command::new("sh")
        .arg("-c")
        .arg(r#""$@" </dev/null 2>"$LOG" & echo $!; read _"#)
        .arg("sh")
        .arg(binary("vigil-sidecar"))
        .arg("--ort-lib")
        .arg(ort_library())
        .arg("--listen")
        .arg(format!("tcp:127.0.0.1:{port}"))
        .arg("--control-fd")
        .arg(sidecar_end.as_raw_fd().to_string())
        .env("LOG", dir.path().join("sidecar.log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    drop(sidecar_end);
    let mut line = String::new();
    BufReader::new(agent.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: i32 = line.trim().parse().unwrap();
    let _cleanup = KillOnDrop(pid);

    // Ready (so PR_SET_PDEATHSIG is set): ask over gRPC.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
            let mut client =
                vigil_proto::kserve::grpc_inference_service_client::GrpcInferenceServiceClient::new(
                    channel,
                );
            client
                .server_ready(vigil_proto::kserve::ServerReadyRequest {})
                .await
                .ok()
                .map(|r| r.into_inner().ready)
        };
        if ready.await == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready: {}",
            std::fs::read_to_string(dir.path().join("sidecar.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    agent.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    agent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(process_state(pid), None | Some('Z')) {
        assert!(Instant::now() < deadline, "the sidecar outlived its agent");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(agent_end);
}
