//! The inference sidecar over real gRPC: the unchanged Triton client
//! (tritonclient.grpc, Python) gets the outputs onnxruntime computes
//! in-process on the same model and input, over TCP and a unix socket;
//! bad input (wrong shape, wrong dtype, short raw buffers, missing inputs,
//! unknown models and versions, truncated protobuf sent raw over h2, a
//! request over the size limit) gets a clear error and the sidecar keeps
//! answering. Needs no privileges; needs `make deps` (ONNX Runtime,
//! tritonclient), and fails saying so without them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use prost::bytes::Bytes;
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::Code;
use vigil_integration::raw_codec::RawCodec;
use vigil_integration::sidecar::{
    ort_library, python_path, run_sidecar_to_exit, sha256_hex, triton_client_script, Sidecar,
    SidecarListen,
};
use vigil_proto::kserve::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use vigil_proto::kserve::*;
use vigil_sidecar::onnx_builder::{doubler_int64, linear_fp32, sum_and_difference};

/// Writes `bytes` as `dir/name.onnx` and returns the `--model` argument.
fn model_arg(dir: &Path, name: &str, version: u64, bytes: &[u8]) -> String {
    let path = dir.join(format!("{name}.onnx"));
    std::fs::write(&path, bytes).unwrap();
    format!("{name}:{version}:{}:{}", sha256_hex(bytes), path.display())
}

/// Runs the Triton client script against `target` for model `name`.
fn triton_client(target: &str, name: &str, file: &Path, version: u64) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(triton_client_script())
        .arg(target)
        .arg(name)
        .arg(file)
        .arg(version.to_string())
        .env("PYTHONPATH", python_path())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Triton client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn fp32_input(name: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn fp32_raw(values: &[f32]) -> Bytes {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

/// A good request to the linear model (4 inputs): x = one row.
fn linear_request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "linear".into(),
        inputs: vec![fp32_input("x", &[1, 4])],
        raw_input_contents: vec![fp32_raw(&[1.0, 2.0, 3.0, 4.0])],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_triton_client_gets_what_onnxruntime_computes_over_tcp_and_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let linear = linear_fp32(16, 8, 3);
    let doubler = doubler_int64();
    let pair = sum_and_difference();
    let args = vec![
        "--model".into(),
        model_arg(dir.path(), "linear", 3, &linear),
        "--model".into(),
        model_arg(dir.path(), "doubler", 1, &doubler),
        "--model".into(),
        model_arg(dir.path(), "pair", 5, &pair),
        "--intra-threads".into(),
        "1".into(),
    ];
    let mut tcp = Sidecar::start(dir.path(), SidecarListen::tcp(), &args, false);
    tcp.wait_ready().await;
    for (name, version) in [("linear", 3), ("doubler", 1), ("pair", 5)] {
        let seen = triton_client(
            &tcp.listen.grpc_target(),
            name,
            &dir.path().join(format!("{name}.onnx")),
            version,
        );
        assert_eq!(seen["server"], "vigil-sidecar");
        assert_eq!(seen["model_version"], version.to_string());
        assert_eq!(seen["id"], "py-1");
        assert!(
            seen["bad_shape_error"]
                .as_str()
                .unwrap()
                .contains("does not match the model's"),
            "{seen}"
        );
        // No peer credentials on TCP: shared memory refused, saying why.
        assert!(
            seen["shm"]["refused"]
                .as_str()
                .is_some_and(|m| m.contains("--tcp-shared-memory-uid")),
            "{seen}"
        );
        eprintln!("{name}: {seen}");
    }

    let unix_dir = tempfile::tempdir().unwrap();
    let socket = unix_dir.path().join("sidecar.sock");
    let mut unix = Sidecar::start(
        unix_dir.path(),
        SidecarListen::Unix(socket.clone()),
        &args,
        false,
    );
    unix.wait_ready().await;
    // Over the unix socket every model also infers through system shared
    // memory (the client's own /dev/shm files), matching onnxruntime.
    for (name, version) in [("linear", 3), ("doubler", 1), ("pair", 5)] {
        let seen = triton_client(
            &unix.listen.grpc_target(),
            name,
            &dir.path().join(format!("{name}.onnx")),
            version,
        );
        assert_eq!(seen["model_version"], version.to_string());
        assert!(seen["shm"]["outputs"].is_object(), "{seen}");
        assert!(
            seen["shm"]["traversal_refused"]
                .as_str()
                .is_some_and(|m| m.contains("refused")),
            "{seen}"
        );
        eprintln!("{name} over the unix socket: {seen}");
    }
    // SIGTERM: a clean stop that removes the socket.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(unix.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = unix
        .wait_exit(Duration::from_secs(10))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}\n{}", unix.log_text());
    assert!(!socket.exists(), "the socket file is removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_the_sidecar_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--model".into(),
        model_arg(dir.path(), "linear", 2, &linear_fp32(4, 3, 1)),
        "--max-request-bytes".into(),
        (1 << 20).to_string(),
    ];
    let mut sidecar = Sidecar::start(dir.path(), SidecarListen::tcp(), &args, false);
    sidecar.wait_ready().await;
    let mut client = sidecar.client().await;

    let good = client
        .model_infer(linear_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(good.model_version, "2");
    assert_eq!(good.outputs[0].shape, vec![1, 3]);

    let cases: Vec<(&str, ModelInferRequest, Code, String)> = vec![
        (
            "wrong shape",
            ModelInferRequest {
                inputs: vec![fp32_input("x", &[1, 5])],
                raw_input_contents: vec![fp32_raw(&[0.0; 5])],
                ..linear_request()
            },
            Code::InvalidArgument,
            "input \"x\": shape [1,5] does not match the model's [-1,4]".into(),
        ),
        (
            "wrong dtype",
            ModelInferRequest {
                inputs: vec![InferInputTensor {
                    datatype: "FP64".into(),
                    ..fp32_input("x", &[1, 4])
                }],
                raw_input_contents: vec![Bytes::from(vec![0u8; 32])],
                ..linear_request()
            },
            Code::InvalidArgument,
            "input \"x\": datatype FP64 does not match the model's FP32".into(),
        ),
        (
            "short raw buffer",
            ModelInferRequest {
                raw_input_contents: vec![fp32_raw(&[1.0, 2.0, 3.0])],
                ..linear_request()
            },
            Code::InvalidArgument,
            "input \"x\": shape [1,4] has 4 elements, raw contents hold 3 (FP32, 12 bytes)".into(),
        ),
        (
            "missing input",
            ModelInferRequest {
                inputs: vec![],
                raw_input_contents: vec![],
                ..linear_request()
            },
            Code::InvalidArgument,
            "input \"x\" is missing (the model takes FP32 [-1,4])".into(),
        ),
        (
            "unknown output",
            ModelInferRequest {
                outputs: vec![InferRequestedOutputTensor {
                    name: "logits".into(),
                    ..Default::default()
                }],
                ..linear_request()
            },
            Code::InvalidArgument,
            "output \"logits\" is not an output of the model (its outputs: y)".into(),
        ),
        (
            "unknown model",
            ModelInferRequest {
                model_name: "foo".into(),
                ..linear_request()
            },
            Code::NotFound,
            "model \"foo\" is not served here (only approved, verified models are loaded)".into(),
        ),
        (
            "other version",
            ModelInferRequest {
                model_version: "1".into(),
                ..linear_request()
            },
            Code::NotFound,
            "model \"linear\" version \"1\" is not served here; version 2 is".into(),
        ),
    ];
    for (what, request, code, message) in cases {
        let err = client.model_infer(request).await.unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (code, message.as_str()),
            "{what}"
        );
    }

    // Truncated and garbage protobuf, raw over h2.
    let mut grpc = tonic::client::Grpc::new(sidecar.channel().await.unwrap());
    let whole = linear_request().encode_to_vec();
    for garbage in [
        whole[..whole.len() - 3].to_vec(),
        vec![0x2a, 0xff, 0xff, 0xff, 0xff],
    ] {
        grpc.ready().await.unwrap();
        let err = grpc
            .unary(
                tonic::Request::new(garbage),
                PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer"),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(
            err.message()
                .starts_with("malformed request: failed to decode Protobuf message"),
            "{err:?}"
        );
    }

    // Over the 1 MiB limit: refused before it is buffered.
    let big = ModelInferRequest {
        inputs: vec![fp32_input("x", &[(1 << 19) / 4 + 1, 4])],
        raw_input_contents: vec![Bytes::from(vec![0u8; (1 << 19) * 4 + 16])],
        ..linear_request()
    };
    let size = big.encoded_len();
    let err = client.model_infer(big).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        format!("request of {size} bytes is over the limit of 1048576 bytes (--max-request-bytes)")
    );

    // What is not served says so.
    let err = client
        .model_config(ModelConfigRequest {
            name: "linear".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message()
            .starts_with("ModelConfig is not served by vigil-sidecar"),
        "{err:?}"
    );

    // Still serving, same process.
    assert!(sidecar.is_running());
    let mut client = sidecar.client().await;
    assert_eq!(
        client
            .model_infer(linear_request())
            .await
            .unwrap()
            .into_inner()
            .outputs
            .len(),
        1
    );
    let ready = client
        .model_ready(ModelReadyRequest {
            name: "linear".into(),
            version: "2".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ready.ready);
    let not_ready = client
        .model_ready(ModelReadyRequest {
            name: "linear".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!not_ready.ready);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_refusals_have_their_own_exit_status_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let library = ort_library().display().to_string();
    let listen = format!("tcp:127.0.0.1:{}", vigil_integration::free_port());
    let linear = linear_fp32(4, 3, 1);
    let path = dir.path().join("linear.onnx");
    std::fs::write(&path, &linear).unwrap();
    let wrong_digest = format!("linear:1:{}:{}", sha256_hex(b"other"), path.display());
    let world_writable = dir.path().join("open");
    std::fs::create_dir(&world_writable).unwrap();
    std::fs::set_permissions(
        &world_writable,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();

    let s = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            s(&[
                "--ort-lib",
                "/nonexistent/libonnxruntime.so",
                "--listen",
                &listen,
            ]),
            3,
            "ONNX Runtime library /nonexistent/libonnxruntime.so: No such file".into(),
        ),
        (
            s(&[
                "--ort-lib",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "--listen",
                &listen,
            ]),
            3,
            "does not export `OrtGetApiBase`".into(),
        ),
        (
            s(&[
                "--ort-lib",
                &path.display().to_string(),
                "--listen",
                &listen,
            ]),
            3,
            "not a shared library (no ELF header)".into(),
        ),
        (
            s(&[
                "--ort-lib",
                &library,
                "--listen",
                &listen,
                "--model",
                &wrong_digest,
            ]),
            4,
            format!(
                "refused: its bytes hash to sha256 {}, not the approved {}",
                sha256_hex(&linear),
                sha256_hex(b"other")
            ),
        ),
        (
            s(&[
                "--ort-lib",
                &library,
                "--listen",
                &format!("unix:{}/s.sock", world_writable.display()),
            ]),
            5,
            "is writable by other users (mode 0777); refused".into(),
        ),
        (
            s(&[
                "--ort-lib",
                &library,
                "--listen",
                &listen,
                "--control-fd",
                "987654",
            ]),
            2,
            "--control-fd 987654: not an open file descriptor".into(),
        ),
        (
            s(&[
                "--ort-lib",
                &library,
                "--listen",
                &listen,
                "--model",
                &format!("linear:1:{}:{}", sha256_hex(&linear), path.display()),
                "--model",
                &format!("linear:2:{}:{}", sha256_hex(&linear), path.display()),
            ]),
            2,
            "--model names \"linear\" twice".into(),
        ),
        (
            s(&["--ort-lib", &library, "--listen", "http://x"]),
            2,
            "is neither tcp:HOST:PORT nor unix:PATH".into(),
        ),
    ];
    for (args, code, expected) in cases {
        let (status, stderr) = run_sidecar_to_exit(&args, Duration::from_secs(30));
        assert_eq!(status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(&expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// The sidecar's peak resident memory (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_many_empty_entries_is_refused_before_it_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let args = vec![
        "--model".into(),
        model_arg(dir.path(), "linear", 1, &linear_fp32(4, 3, 1)),
    ];
    let mut sidecar = Sidecar::start(dir.path(), SidecarListen::tcp(), &args, false);
    sidecar.wait_ready().await;
    let mut client = sidecar.client().await;
    client.model_infer(linear_request()).await.unwrap();
    let pid = sidecar.child.id();
    let before = peak_rss(pid);

    // 60 MiB of empty `inputs` entries (field 5, length 0): under the
    // 64 MiB request limit, ~150 times that once decoded.
    let size = 60 << 20;
    let flood = [0x2Au8, 0].repeat(size / 2);
    let mut grpc = tonic::client::Grpc::new(sidecar.channel().await.unwrap())
        .max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let started = std::time::Instant::now();
    let err = grpc
        .unary(
            tonic::Request::new(flood),
            PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer"),
            RawCodec,
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "request has more than 256 inputs: at most 256 are accepted"
    );
    assert!(took < Duration::from_secs(20), "refused after {took:?}");
    let grown = peak_rss(pid).saturating_sub(before);
    assert!(
        grown < 3 * size as u64,
        "peak RSS grew by {grown} bytes for a request of {size}"
    );
    assert!(sidecar.is_running());
    let good = client
        .model_infer(linear_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(good.outputs[0].shape, vec![1, 3]);
}
