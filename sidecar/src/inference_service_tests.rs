use std::collections::HashMap;
use std::os::unix::fs::chown;
use std::path::Path;

use prost::bytes::Bytes;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use vigil_proto::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use vigil_proto::kserve::infer_parameter::ParameterChoice;
use vigil_proto::kserve::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};

use super::*;
use crate::listen_address::ListenAddress;
use crate::model_identity::{ModelIdentity, Sha256Digest};
use crate::onnx_builder::doubler_int64;
use crate::served_model::ServedModel;
use crate::server::{bind, serve_grpc};
use crate::session_settings::SessionSettings;
use crate::test_runtime::runtime;

/// A service serving the doubler (y = 2x, INT64 [batch, 4]) with regions
/// of files in `shm_dir`.
fn service(shm_dir: &Path, tcp_uid: Option<u32>) -> InferenceService {
    let bytes = doubler_int64();
    let identity = ModelIdentity::new("doubler", 1, Sha256Digest::of(&bytes)).unwrap();
    let model =
        ServedModel::load(runtime(), &SessionSettings::default(), identity, &bytes).unwrap();
    let models = Arc::new(ServedModels::new());
    models.serve(model).unwrap();
    InferenceService::new(models, Arc::new(AtomicBool::new(true))).with_shared_memory(
        Arc::new(SharedMemory::new(shm_dir, Limits::default())),
        tcp_uid,
    )
}

fn i64_bytes(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn shm_params(region: &str, offset: i64, size: i64) -> HashMap<String, InferParameter> {
    let p = |c| InferParameter {
        parameter_choice: Some(c),
    };
    HashMap::from([
        (
            "shared_memory_region".to_string(),
            p(ParameterChoice::StringParam(region.into())),
        ),
        (
            "shared_memory_offset".to_string(),
            p(ParameterChoice::Int64Param(offset)),
        ),
        (
            "shared_memory_byte_size".to_string(),
            p(ParameterChoice::Int64Param(size)),
        ),
    ])
}

/// x (INT64 [2, 4], 64 bytes) at offset 0 of region "io", y to `out_size`
/// bytes at offset 64.
fn shm_request(out_size: i64) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "doubler".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "INT64".into(),
            shape: vec![2, 4],
            parameters: shm_params("io", 0, 64),
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: "y".into(),
            parameters: shm_params("io", 64, out_size),
        }],
        ..Default::default()
    }
}

fn register(name: &str, key: &str, byte_size: u64) -> SystemSharedMemoryRegisterRequest {
    SystemSharedMemoryRegisterRequest {
        name: name.into(),
        key: key.into(),
        offset: 0,
        byte_size,
    }
}

async fn unix_client(path: &Path) -> GrpcInferenceServiceClient<Channel> {
    let path = path.to_path_buf();
    let channel = Endpoint::from_static("http://sidecar.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    GrpcInferenceServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_on_the_unix_socket_infers_through_its_own_shared_memory() {
    let shm = tempfile::tempdir().unwrap();
    let sockets = tempfile::tempdir().unwrap();
    let me = nix::unistd::geteuid().as_raw();
    let mut bytes = i64_bytes(&[1, 2, 3, 4, -5, -6, 7, 8]);
    bytes.resize(4096, 0xAA);
    std::fs::write(shm.path().join("io"), &bytes).unwrap();
    std::fs::write(shm.path().join("theirs"), [0u8; 128]).unwrap();
    chown(shm.path().join("theirs"), Some(65534), Some(65534)).unwrap();

    let service = service(shm.path(), None);
    let socket = sockets.path().join("s.sock");
    let listener = bind(&ListenAddress::Unix(socket.clone())).await.unwrap();
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_grpc(listener, service.clone(), 1 << 20, async {
        let _ = stopping.await;
    }));
    let mut client = unix_client(&socket).await;

    let meta = client
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.extensions, vec!["system_shared_memory"]);

    // The peer is this process (SO_PEERCRED): another uid's file is
    // refused, its own is registered.
    let err = client
        .system_shared_memory_register(register("r", "/theirs", 128))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("not by the caller (uid {me})")),
        "{err:?}"
    );
    client
        .system_shared_memory_register(register("io", "/io", 4096))
        .await
        .unwrap();
    let status = client
        .system_shared_memory_status(SystemSharedMemoryStatusRequest {
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.regions["io"].key, "/io");
    assert_eq!(status.regions["io"].byte_size, 4096);

    let reply = client
        .model_infer(shm_request(64))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outputs[0].shape, vec![2, 4]);
    assert_eq!(reply.outputs[0].datatype, "INT64");
    // As Triton: an empty entry for an output that went to shared memory.
    assert_eq!(reply.raw_output_contents, vec![Bytes::new()]);
    let file = std::fs::read(shm.path().join("io")).unwrap();
    assert_eq!(&file[64..128], i64_bytes(&[2, 4, 6, 8, -10, -12, 14, 16]));
    assert_eq!(file[128], 0xAA, "nothing written past the output");

    // Too small a place for the output: a clear INVALID_ARGUMENT.
    let err = client.model_infer(shm_request(63)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("takes 64 bytes, more than the 63"),
        "{err:?}"
    );

    // Truncated after registration: an error, and the sidecar answers on.
    std::fs::File::options()
        .write(true)
        .open(shm.path().join("io"))
        .unwrap()
        .set_len(10)
        .unwrap();
    let err = client.model_infer(shm_request(64)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("truncated"), "{err:?}");

    // Another uid sees none of it and cannot unregister it.
    let stranger = Caller::Uid(65534);
    let err = service
        .shm_status(
            &stranger,
            &SystemSharedMemoryStatusRequest { name: "io".into() },
        )
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    service
        .shm_unregister(
            &stranger,
            &SystemSharedMemoryUnregisterRequest {
                name: String::new(),
            },
        )
        .unwrap();
    let err = service.infer(stranger, shm_request(64)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert_eq!(service.shared_memory().count(), 1);

    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest { name: "io".into() })
        .await
        .unwrap();
    assert_eq!(service.shared_memory().count(), 0);
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn tcp_callers_are_refused_unless_a_uid_is_named_for_them() {
    let shm = tempfile::tempdir().unwrap();
    std::fs::write(shm.path().join("io"), [0u8; 128]).unwrap();
    let plain = service(shm.path(), None);
    // A request with no unix-socket connect info is a TCP one.
    let caller = plain.caller(&Request::new(()));
    let err = plain
        .shm_register(&caller, &register("io", "/io", 128))
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("--tcp-shared-memory-uid"), "{err:?}");
    let err = plain.infer(caller, shm_request(64)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let me = nix::unistd::geteuid().as_raw();
    let allowed = service(shm.path(), Some(me));
    let caller = allowed.caller(&Request::new(()));
    assert_eq!(caller, Caller::Uid(me));
    allowed
        .shm_register(&caller, &register("io", "/io", 128))
        .unwrap();
}

#[tokio::test]
async fn cuda_shared_memory_is_not_served_and_says_so() {
    let shm = tempfile::tempdir().unwrap();
    let service = service(shm.path(), None);
    let err = service
        .cuda_shared_memory_register(Request::new(CudaSharedMemoryRegisterRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(
        err.message().contains("use system shared memory"),
        "{err:?}"
    );
}

/// Where the test below tells its child, run as uid 65534, to connect.
const PEER_SOCKET_ENV: &str = "VIGIL_SHM_PEER_SOCKET";

/// The child of the test below, run as uid 65534 by `setpriv`: does
/// nothing unless that test started it.
#[tokio::test]
async fn as_uid_65534_a_peer_gets_only_its_own_files_and_regions() {
    let Ok(socket) = std::env::var(PEER_SOCKET_ENV) else {
        return;
    };
    let mut client = unix_client(Path::new(&socket)).await;
    let err = client
        .system_shared_memory_register(register("io", "/roots", 4096))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("not by the caller (uid 65534)"),
        "{err:?}"
    );
    // Root's "io" does not take the name from this uid.
    client
        .system_shared_memory_register(register("io", "/nobodys", 4096))
        .await
        .unwrap();
    let status = client
        .system_shared_memory_status(SystemSharedMemoryStatusRequest {
            name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.regions.len(), 1, "{status:?}");
    assert_eq!(status.regions["io"].key, "/nobodys");
    client
        .system_shared_memory_unregister(SystemSharedMemoryUnregisterRequest {
            name: String::new(),
        })
        .await
        .unwrap();
    println!("PEER-OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_connecting_to_the_socket_is_bound_to_its_own_uid() {
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: connecting as uid 65534 needs root to switch uid");
        return;
    }
    let shm = tempfile::tempdir().unwrap();
    std::fs::write(shm.path().join("roots"), [0u8; 4096]).unwrap();
    std::fs::write(shm.path().join("nobodys"), [0u8; 4096]).unwrap();
    chown(shm.path().join("nobodys"), Some(65534), Some(65534)).unwrap();
    let sockets = tempfile::tempdir().unwrap();
    std::fs::set_permissions(sockets.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let socket = sockets.path().join("s.sock");
    let service = service(shm.path(), None);
    let listener = bind(&ListenAddress::Unix(socket.clone())).await.unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_grpc(listener, service.clone(), 1 << 20, async {
        let _ = stopping.await;
    }));
    let root = Caller::Uid(0);
    service
        .shm_register(&root, &register("io", "/roots", 4096))
        .unwrap();

    let child = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inference_service::tests::as_uid_65534_a_peer_gets_only_its_own_files_and_regions",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PEER_SOCKET_ENV, &socket)
        .output()
        .await
        .unwrap();
    let out = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && out.contains("PEER-OK"),
        "{}\n{}\n{out}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
    // Root's region is untouched by the other uid's unregister-all.
    let status = service
        .shm_status(
            &root,
            &SystemSharedMemoryStatusRequest {
                name: String::new(),
            },
        )
        .unwrap();
    assert_eq!(status.regions["io"].key, "/roots");
    assert_eq!(service.shared_memory().count(), 1);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// The doubler's service with a budget of `budget` input bytes in flight,
/// a request waiting at most `wait` for room.
fn service_with_budget(shm_dir: &Path, budget: u64, wait: std::time::Duration) -> InferenceService {
    service(shm_dir, None).with_input_budget(Arc::new(InputBudget::new(budget, wait)))
}

/// `rows` rows of x (INT64 [rows, 4]) at `offset` of region "big", y
/// right after them.
fn big_request(offset: u64, rows: i64) -> ModelInferRequest {
    let bytes = rows * 32;
    ModelInferRequest {
        model_name: "doubler".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "INT64".into(),
            shape: vec![rows, 4],
            parameters: shm_params("big", offset as i64, bytes),
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: "y".into(),
            parameters: shm_params("big", offset as i64 + bytes, bytes),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_shared_memory_infers_never_hold_more_than_the_budget() {
    const REQUESTS: u64 = 24;
    const ROWS: i64 = 8192; // 256 KiB of input each
    const INPUT: u64 = ROWS as u64 * 32;
    let shm = tempfile::tempdir().unwrap();
    // One large region: each request its own input and output.
    let mut file = Vec::with_capacity((REQUESTS * 2 * INPUT) as usize);
    for r in 0..REQUESTS {
        let values: Vec<i64> = (0..ROWS * 4).map(|i| i + r as i64).collect();
        file.extend(i64_bytes(&values));
        file.resize(file.len() + INPUT as usize, 0);
    }
    std::fs::write(shm.path().join("big"), &file).unwrap();
    // Room for two requests' inputs at once, never a third.
    let budget = 2 * INPUT + 1024;
    let service = service_with_budget(shm.path(), budget, std::time::Duration::from_secs(120));
    let me = Caller::Uid(nix::unistd::geteuid().as_raw());
    service
        .shm_register(&me, &register("big", "/big", file.len() as u64))
        .unwrap();
    assert_eq!(service.input_budget().bytes(), budget);

    let tasks: Vec<_> = (0..REQUESTS)
        .map(|r| {
            let service = service.clone();
            let me = me.clone();
            tokio::spawn(async move { service.infer(me, big_request(r * 2 * INPUT, ROWS)).await })
        })
        .collect();
    let sampler = {
        let budget_now = service.input_budget().clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..2000 {
                let held = budget_now.held_bytes();
                assert!(held + budget_now.available_bytes() <= budget);
                most = most.max(held);
                tokio::task::yield_now().await;
            }
            most
        })
    };
    for task in tasks {
        let reply = task.await.unwrap().unwrap();
        assert_eq!(reply.outputs[0].shape, vec![ROWS, 4]);
    }
    let sampled = sampler.await.unwrap();
    let held = service.input_budget();
    assert!(sampled <= budget, "{sampled} > {budget}");
    assert!(
        held.peak_bytes() <= budget,
        "at most {budget} bytes of inputs at once, {} held",
        held.peak_bytes()
    );
    assert!(held.peak_bytes() >= INPUT, "the budget was used");
    assert_eq!(held.held_bytes(), 0, "every request gave its bytes back");
    assert_eq!(held.available_bytes(), budget);
    // And each request read its own input and wrote its own output.
    let after = std::fs::read(shm.path().join("big")).unwrap();
    for r in 0..REQUESTS {
        let at = (r * 2 * INPUT + INPUT) as usize;
        let first = i64::from_le_bytes(after[at..at + 8].try_into().unwrap());
        assert_eq!(first, 2 * r as i64);
    }
}

#[tokio::test]
async fn the_budget_is_taken_before_shared_memory_is_read() {
    let shm = tempfile::tempdir().unwrap();
    std::fs::write(shm.path().join("big"), vec![0u8; 1 << 20]).unwrap();
    let service = service_with_budget(shm.path(), 1 << 20, std::time::Duration::from_millis(50));
    let me = Caller::Uid(nix::unistd::geteuid().as_raw());
    service
        .shm_register(&me, &register("big", "/big", 1 << 20))
        .unwrap();
    // Truncated after registration: reading it would answer "truncated".
    std::fs::File::options()
        .write(true)
        .open(shm.path().join("big"))
        .unwrap()
        .set_len(0)
        .unwrap();
    let all = service.input_budget().reserve(1 << 20).await.unwrap();
    let err = service
        .infer(me.clone(), big_request(0, 1024))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message()
            .contains("held the sidecar's 1048576 bytes in flight")
            && err.message().contains("--max-input-bytes-in-flight"),
        "{err:?}"
    );
    drop(all);
    // With room, the request reaches the file (and finds it truncated).
    let err = service.infer(me, big_request(0, 1024)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("truncated"), "{err:?}");
    assert_eq!(service.input_budget().held_bytes(), 0);
}

#[tokio::test]
async fn a_request_over_the_whole_budget_is_refused_at_once() {
    let shm = tempfile::tempdir().unwrap();
    std::fs::write(shm.path().join("big"), vec![0u8; 4 << 20]).unwrap();
    // A long wait: the refusal must not wait for it.
    let service = service_with_budget(shm.path(), 1 << 20, std::time::Duration::from_secs(3600));
    let me = Caller::Uid(nix::unistd::geteuid().as_raw());
    service
        .shm_register(&me, &register("big", "/big", 4 << 20))
        .unwrap();
    // 1 MiB + 32 bytes of input in shared memory.
    let err = service
        .infer(me.clone(), big_request(0, (1 << 15) + 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains(
            "the request's inputs take 1048608 bytes, more than the 1048576 bytes all \
             requests' inputs may hold at once (--max-input-bytes-in-flight)"
        ),
        "{err:?}"
    );
    // Sent raw, the same: counted alike.
    let rows = (1 << 15) + 1;
    let raw = ModelInferRequest {
        model_name: "doubler".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "INT64".into(),
            shape: vec![rows, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; rows as usize * 32])],
        ..Default::default()
    };
    let err = service.infer(me.clone(), raw).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("1048608 bytes"), "{err:?}");
    // Just the budget: served.
    let reply = service.infer(me, big_request(0, 1 << 14)).await.unwrap();
    assert_eq!(reply.outputs[0].shape, vec![1 << 14, 4]);
    assert_eq!(service.input_budget().available_bytes(), 1 << 20);
}

/// x (INT64 [rows, 4]) sent in the request, y (rows × 32 bytes) asked
/// for in the response.
fn raw_rows(rows: i64) -> ModelInferRequest {
    let values: Vec<i64> = (0..rows * 4).collect();
    ModelInferRequest {
        model_name: "doubler".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "INT64".into(),
            shape: vec![rows, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(i64_bytes(&values))],
        ..Default::default()
    }
}

#[tokio::test]
async fn outputs_over_the_response_limit_are_refused_before_they_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let service = service(dir.path(), None).with_max_response_bytes(2048);
    let me = Caller::Unidentified("test".into());
    // 65 rows: 2,080 output bytes, over 2,048.
    let err = service.infer(me.clone(), raw_rows(65)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("2080 bytes") && err.message().contains("--max-response-bytes 2048"),
        "{}",
        err.message()
    );
    // 64 rows: exactly the limit, served, and the budget was given back.
    let ok = service.infer(me, raw_rows(64)).await.unwrap();
    assert_eq!(ok.raw_output_contents[0].len(), 2048);
    assert_eq!(service.input_budget().held_bytes(), 0);
}
