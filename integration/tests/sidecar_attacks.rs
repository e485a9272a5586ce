//! A local user against the inference sidecar: its unix socket is 0660
//! and another user cannot connect; a symbolic link planted at the socket
//! path is refused, never followed, and a directory others may write is
//! refused; a model descriptor whose content changes after (or while) it
//! is read cannot change what is served: the bytes hashed are the bytes
//! loaded; a model whose tensor keeps its data in an "external file" (a
//! relative path with `..`, read from the sidecar's working directory `/`)
//! is refused before ONNX Runtime reads that file, and the sidecar never
//! dumps core. Needs no privileges (the connect as `nobody` runs as root
//! only); needs `make deps`.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::memfd::{memfd_create, MFdFlags};
use prost::bytes::Bytes;
use serde_json::Value;
use vigil_integration::sidecar::{
    ort_library, run_sidecar_to_exit, sha256_hex, Sidecar, SidecarListen,
};
use vigil_integration::unprivileged::python_as_nobody;
use vigil_proto::kserve::model_infer_request::InferInputTensor;
use vigil_proto::kserve::ModelInferRequest;
use vigil_sidecar::datatype::Datatype;
use vigil_sidecar::onnx_builder::{linear_fp32, Dim, ModelBuilder};

fn json(reply: &str) -> Value {
    serde_json::from_str(reply).unwrap_or_else(|e| panic!("{e}: {reply}"))
}

fn request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 8],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(
            (0..8)
                .flat_map(|i| (i as f32).to_le_bytes())
                .collect::<Vec<u8>>(),
        )],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unix_socket_is_0660_and_another_user_cannot_connect() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("sidecar.sock");
    let mut sidecar = Sidecar::start(dir.path(), SidecarListen::Unix(socket.clone()), &[], false);
    sidecar.wait_ready().await;
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.mode() & 0o777,
        0o660,
        "not world-writable, nor group-executable"
    );
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());

    if nix::unistd::geteuid().is_root() {
        let out = python_as_nobody(
            "import socket, sys\n\
             s = socket.socket(socket.AF_UNIX)\n\
             try:\n    s.connect(sys.argv[1]); print('connected')\n\
             except PermissionError: print('refused')",
        )
        .arg(&socket)
        .output()
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "refused",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("not root: the connect as nobody is not tried");
    }
}

#[test]
fn a_symlink_planted_at_the_socket_path_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let socket = dir.path().join("sidecar.sock");
    std::os::unix::fs::symlink(&victim, &socket).unwrap();
    let library = ort_library().display().to_string();
    let listen = format!("unix:{}", socket.display());
    let args: Vec<String> = ["--ort-lib", &library, "--listen", &listen]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (status, stderr) = run_sidecar_to_exit(&args, Duration::from_secs(30));
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("is a symbolic link; not followed"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_symlink());

    // In a directory others may write, nothing is created at all.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let listen = format!("unix:{}", shared.join("s.sock").display());
    let args: Vec<String> = ["--ort-lib", &library, "--listen", &listen]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (status, stderr) = run_sidecar_to_exit(&args, Duration::from_secs(30));
    assert_eq!(status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("writable by other users"), "{stderr}");
    assert_eq!(std::fs::read_dir(&shared).unwrap().count(), 0);
}

/// An unsealed memfd holding `bytes`, and a second handle to it that
/// stays writable (whoever else holds it).
fn writable_memfd(bytes: &[u8]) -> (OwnedFd, File) {
    let fd = memfd_create("model", MFdFlags::MFD_CLOEXEC).unwrap();
    let mut file = File::from(fd);
    file.write_all(bytes).unwrap();
    let sent = file.try_clone().unwrap();
    (sent.into(), file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_changed_after_or_while_it_is_read_cannot_change_what_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start(dir.path(), SidecarListen::tcp(), &[], true);
    sidecar.wait_ready().await;
    let approved = linear_fp32(8, 4, 1);
    let tampered = linear_fp32(8, 4, 7);
    assert_eq!(
        approved.len(),
        tampered.len(),
        "same size, so only content differs"
    );
    let digest = sha256_hex(&approved);
    let load_message = format!(
        r#"{{"op":"load","name":"m","version":1,"sha256":"{digest}","size":{}}}"#,
        approved.len()
    );

    // Changed after the load.
    let (sent, mut kept) = writable_memfd(&approved);
    let reply = json(
        &sidecar
            .control()
            .request(load_message.as_bytes(), Some(sent.as_fd())),
    );
    assert_eq!(reply["op"], "loaded", "{reply}");
    let mut client = sidecar.client().await;
    let before = client
        .model_infer(request())
        .await
        .unwrap()
        .into_inner()
        .raw_output_contents;
    kept.seek(SeekFrom::Start(0)).unwrap();
    kept.write_all(&tampered).unwrap();
    let after = client
        .model_infer(request())
        .await
        .unwrap()
        .into_inner()
        .raw_output_contents;
    assert_eq!(before, after);

    // Changed while it is read: the writer flips the content as fast as it
    // can. Each load is refused (it read tampered bytes) or serves exactly
    // the approved model; never the tampered one.
    let (mut loaded, mut refused) = (0, 0);
    for round in 0..20 {
        let (sent, kept) = writable_memfd(&approved);
        let flipping = Arc::new(AtomicBool::new(true));
        let writer = {
            let flipping = flipping.clone();
            let (approved, tampered) = (approved.clone(), tampered.clone());
            std::thread::spawn(move || {
                let mut kept = kept;
                let mut turn = 0u64;
                while flipping.load(Ordering::Relaxed) {
                    let bytes = if turn.is_multiple_of(2) {
                        &tampered
                    } else {
                        &approved
                    };
                    kept.seek(SeekFrom::Start(0)).unwrap();
                    kept.write_all(bytes).unwrap();
                    turn += 1;
                }
            })
        };
        let reply = json(
            &sidecar
                .control()
                .request(load_message.as_bytes(), Some(sent.as_fd())),
        );
        flipping.store(false, Ordering::Relaxed);
        writer.join().unwrap();
        match reply["op"].as_str() {
            Some("loaded") => loaded += 1,
            Some("refused") => {
                refused += 1;
                assert!(
                    reply["reason"]
                        .as_str()
                        .unwrap()
                        .contains("not the approved"),
                    "{reply}"
                );
            }
            _ => panic!("round {round}: {reply}"),
        }
        let served = client
            .model_infer(request())
            .await
            .unwrap()
            .into_inner()
            .raw_output_contents;
        assert_eq!(
            served, before,
            "round {round}: the served model is not the approved one"
        );
    }
    eprintln!("loads under a concurrent writer: {loaded} loaded, {refused} refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_cannot_read_a_file_through_external_data() {
    let dir = tempfile::tempdir().unwrap();
    let secret = b"root:$6$the-secret-hash-nobody-may-read:19000:0:99999:7:::\n";
    let secret_file = dir.path().join("shadow");
    std::fs::write(&secret_file, secret).unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Relative to the sidecar's working directory `/`, with a `..` that
    // ONNX Runtime's own check lets through (it stays under `/`).
    let location = format!("var/lib/../..{}", secret_file.display());
    let n = secret.len() as i64;
    let exploit = ModelBuilder::new("exfiltrate")
        .input("x", Datatype::Fp32, &[Dim::Fixed(1)])
        .output("x_out", Datatype::Fp32, &[Dim::Fixed(1)])
        .output("leak", Datatype::Uint8, &[Dim::Fixed(n)])
        .external_initializer("w", Datatype::Uint8, &[n], &location)
        .node("Identity", &["x"], &["x_out"])
        .node("Identity", &["w"], &["leak"])
        .build();

    let mut sidecar = Sidecar::start_in_root(dir.path(), SidecarListen::tcp(), &[], true);
    sidecar.wait_ready().await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", sidecar.child.id())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );

    // The model approved as it is: its digest is right, its tensor is not.
    let reply = json(&sidecar.control().load("exfiltrate", 1, &exploit));
    assert_eq!(reply["op"], "refused", "{reply}");
    assert_eq!(
        reply["reason"].as_str().unwrap(),
        format!(
            "tensor \"w\" keeps its data in an external file ({location:?}): only self-contained models are served"
        )
    );
    let mut client = sidecar.client().await;
    let err = client
        .model_infer(ModelInferRequest {
            model_name: "exfiltrate".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1],
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from(1f32.to_le_bytes().to_vec())],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let needle = &secret[..20];
    for (what, text) in [
        ("the reply", reply.to_string().into_bytes()),
        ("the error", err.message().as_bytes().to_vec()),
        ("the log", sidecar.log_text().into_bytes()),
    ] {
        assert!(
            !text.windows(needle.len()).any(|w| w == needle),
            "the secret is in {what}"
        );
    }
    // And it keeps serving approved models.
    assert_eq!(
        json(&sidecar.control().load("m", 1, &linear_fp32(8, 4, 0)))["op"],
        "loaded"
    );
    client.model_infer(request()).await.unwrap();
}
