use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use prost::bytes::Bytes;
use vigil_proto::kserve::model_infer_request::InferInputTensor;
use vigil_proto::kserve::ModelInferRequest;

use super::*;
use crate::control_socket::tests::{pair, send_from_agent};
use crate::onnx_builder::linear_fp32;
use crate::served_models::ServedModels;
use crate::session_settings::SessionSettings;
use crate::test_runtime::runtime;

fn loader() -> ModelLoader {
    ModelLoader::new(
        runtime().clone(),
        SessionSettings::default(),
        Arc::new(ServedModels::new()),
    )
}

/// A sealed memfd holding `bytes`, as the agent sends models.
fn sealed_memfd(bytes: &[u8]) -> File {
    let fd = memfd_create("model", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    let mut file = File::from(fd);
    file.write_all(bytes).unwrap();
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .unwrap();
    file
}

fn load_message(name: &str, version: u64, sha256: &str, size: usize) -> Vec<u8> {
    format!(
        r#"{{"op":"load","name":"{name}","version":{version},"sha256":"{sha256}","size":{size}}}"#
    )
    .into_bytes()
}

fn load(loader: &ModelLoader, version: u64, bytes: &[u8], digest_of: &[u8]) -> ControlReply {
    let fd: OwnedFd = sealed_memfd(bytes).into();
    let digest = Sha256Digest::of(digest_of).to_hex();
    handle_request(
        loader,
        &load_message("m", version, &digest, bytes.len()),
        vec![fd],
    )
}

/// The served version's first output for x = [1, 0, 0, 0].
fn first_output(loader: &ModelLoader) -> (String, Vec<u8>) {
    let model = loader.models().resolve("m", "").unwrap();
    let x: Vec<u8> = [1.0f32, 0.0, 0.0, 0.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let response = model
        .infer(&ModelInferRequest {
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, 4],
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from(x)],
            ..Default::default()
        })
        .unwrap();
    (
        response.model_version,
        response.raw_output_contents[0].to_vec(),
    )
}

#[test]
fn load_swap_status_and_unload() {
    let loader = loader();
    let v1 = linear_fp32(4, 3, 1);
    let v2 = linear_fp32(4, 3, 2);
    let reply = load(&loader, 1, &v1, &v1);
    assert!(
        matches!(reply, ControlReply::Loaded { ref name, version: 1, .. } if name == "m"),
        "{reply:?}"
    );
    let (version, out1) = first_output(&loader);
    assert_eq!(version, "1");

    assert!(matches!(
        load(&loader, 2, &v2, &v2),
        ControlReply::Loaded { version: 2, .. }
    ));
    let (version, out2) = first_output(&loader);
    assert_eq!(version, "2");
    assert_ne!(out1, out2);
    assert!(loader.models().resolve("m", "1").is_err());

    assert_eq!(
        handle_request(&loader, br#"{"op":"status"}"#, vec![]),
        ControlReply::Status {
            models: vec![ModelStatus {
                name: "m".into(),
                version: 2,
                sha256: Sha256Digest::of(&v2).to_hex()
            }]
        }
    );
    assert_eq!(
        handle_request(&loader, br#"{"op":"unload","name":"m"}"#, vec![]),
        ControlReply::Unloaded { name: "m".into() }
    );
    assert!(loader.models().get("m").is_none());
    // Unloading what is not served says the same.
    assert_eq!(
        handle_request(&loader, br#"{"op":"unload","name":"m"}"#, vec![]),
        ControlReply::Unloaded { name: "m".into() }
    );
}

#[test]
fn a_load_whose_bytes_do_not_hash_to_the_digest_is_refused_and_the_old_version_keeps_serving() {
    let loader = loader();
    let v1 = linear_fp32(4, 3, 1);
    let v2 = linear_fp32(4, 3, 2);
    load(&loader, 1, &v1, &v1);
    let before = first_output(&loader);
    // Version 2 approved, other bytes sent.
    let tampered = linear_fp32(4, 3, 3);
    match load(&loader, 2, &tampered, &v2) {
        ControlReply::Refused {
            name,
            version,
            reason,
        } => {
            assert_eq!((name.as_str(), version), ("m", 2));
            assert_eq!(
                reason,
                format!(
                    "its bytes hash to sha256 {}, not the approved {}",
                    Sha256Digest::of(&tampered),
                    Sha256Digest::of(&v2)
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(first_output(&loader), before);
}

#[test]
fn a_model_changed_after_it_was_read_cannot_change_what_was_loaded() {
    let loader = loader();
    let v1 = linear_fp32(4, 3, 1);
    let unsealed = memfd_create("model", MFdFlags::MFD_CLOEXEC).unwrap();
    let mut file = File::from(unsealed);
    file.write_all(&v1).unwrap();
    let agent_copy = file.try_clone().unwrap();
    let reply = handle_request(
        &loader,
        &load_message("m", 1, &Sha256Digest::of(&v1).to_hex(), v1.len()),
        vec![agent_copy.into()],
    );
    assert!(matches!(reply, ControlReply::Loaded { .. }), "{reply:?}");
    let before = first_output(&loader);
    // Whoever still holds the memfd rewrites it with another model.
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(&linear_fp32(4, 3, 9)).unwrap();
    assert_eq!(first_output(&loader), before);
}

#[test]
fn bad_requests_are_answered_and_refused_with_reasons() {
    let loader = loader();
    let v1 = linear_fp32(4, 3, 1);
    let digest = Sha256Digest::of(&v1).to_hex();
    let refusal = |reply: ControlReply| match reply {
        ControlReply::Refused { reason, .. } => reason,
        other => panic!("{other:?}"),
    };
    let error = |reply: ControlReply| match reply {
        ControlReply::Error { reason } => reason,
        other => panic!("{other:?}"),
    };
    // No fd.
    assert_eq!(
        refusal(handle_request(
            &loader,
            &load_message("m", 1, &digest, v1.len()),
            vec![]
        )),
        "a load carries exactly one file descriptor (the model); this one carried 0"
    );
    // Two fds.
    let two = vec![sealed_memfd(&v1).into(), sealed_memfd(&v1).into()];
    assert!(refusal(handle_request(
        &loader,
        &load_message("m", 1, &digest, v1.len()),
        two
    ))
    .ends_with("carried 2"));
    // A size that is not the fd's.
    assert_eq!(
        refusal(handle_request(
            &loader,
            &load_message("m", 1, &digest, v1.len() + 1),
            vec![sealed_memfd(&v1).into()]
        )),
        format!(
            "the load request says {} bytes, but the file holds {}",
            v1.len() + 1,
            v1.len()
        )
    );
    // A bad digest and a bad name.
    assert!(refusal(handle_request(
        &loader,
        &load_message("m", 1, "abc", 3),
        vec![]
    ))
    .contains("is not 64 hex digits"));
    assert!(refusal(handle_request(
        &loader,
        &load_message("../m", 1, &digest, 3),
        vec![]
    ))
    .contains("model name"));
    // Not ONNX.
    let junk = b"not a model";
    let reason = refusal(handle_request(
        &loader,
        &load_message("m", 1, &Sha256Digest::of(junk).to_hex(), junk.len()),
        vec![sealed_memfd(junk).into()],
    ));
    assert!(
        reason.starts_with("ONNX Runtime cannot load it: "),
        "{reason}"
    );
    // Bad JSON, an unknown op, an fd where none belongs.
    assert!(error(handle_request(&loader, b"{{{", vec![])).starts_with("not a control request"));
    assert!(
        error(handle_request(&loader, br#"{"op":"shutdown"}"#, vec![]))
            .contains("unknown variant `shutdown`")
    );
    assert_eq!(
        error(handle_request(
            &loader,
            br#"{"op":"status"}"#,
            vec![sealed_memfd(&v1).into()]
        )),
        "only a load request carries a file descriptor"
    );
    assert!(loader.models().get("m").is_none());
}

#[test]
fn the_session_answers_in_order_and_ends_when_the_agent_closes() {
    let loader = loader();
    let (socket, agent) = pair();
    let v1 = linear_fp32(4, 3, 1);
    let server = std::thread::spawn(move || {
        let result = serve_control(&socket, &loader);
        (result.is_ok(), loader.models().identities().len())
    });
    let recv = |agent: &OwnedFd| {
        let mut buf = vec![0u8; MAX_CONTROL_MESSAGE];
        let n = nix::sys::socket::recv(
            agent.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        serde_json::from_slice::<serde_json::Value>(&buf[..n]).unwrap()
    };
    send_from_agent(&agent, b"garbage", &[]);
    assert_eq!(recv(&agent)["op"], "error");
    let memfd = sealed_memfd(&v1);
    send_from_agent(
        &agent,
        &load_message("m", 1, &Sha256Digest::of(&v1).to_hex(), v1.len()),
        &[memfd.as_raw_fd()],
    );
    let loaded = recv(&agent);
    assert_eq!(loaded["op"], "loaded", "{loaded}");
    assert_eq!(loaded["version"], 1);
    assert!(loaded["load_ms"].is_u64());
    send_from_agent(&agent, br#"{"op":"status"}"#, &[]);
    assert_eq!(recv(&agent)["models"][0]["name"], "m");
    drop(agent);
    assert_eq!(server.join().unwrap(), (true, 1));
}
