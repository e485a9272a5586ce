use prost::bytes::Bytes;
use vigil_proto::kserve::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use vigil_proto::kserve::InferTensorContents;

use super::*;
use crate::datatype::ALL_DATATYPES;
use crate::onnx_builder::{
    doubler_int64, identity, linear_fp32, linear_weights, sum_and_difference,
};
use crate::test_runtime::runtime;

fn load(name: &str, version: u64, bytes: &[u8]) -> Result<ServedModel, LoadError> {
    let identity = ModelIdentity::new(name, version, Sha256Digest::of(bytes)).unwrap();
    ServedModel::load(runtime(), &SessionSettings::default(), identity, bytes)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn raw_input(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

/// x · W + b computed here, for comparison.
fn linear_expected(x: &[f32], inputs: usize, outputs: usize, seed: u32) -> Vec<f32> {
    let (w, b) = linear_weights(inputs, outputs, seed);
    let rows = x.len() / inputs;
    let mut y = Vec::new();
    for r in 0..rows {
        for j in 0..outputs {
            let mut acc = b[j];
            for k in 0..inputs {
                acc += x[r * inputs + k] * w[k * outputs + j];
            }
            y.push(acc);
        }
    }
    y
}

#[test]
fn a_linear_model_serves_its_metadata_and_the_right_outputs() {
    let model = load("linear", 1, &linear_fp32(4, 3, 0)).unwrap();
    let meta = model.metadata();
    assert_eq!(meta.name, "linear");
    assert_eq!(meta.versions, vec!["1"]);
    assert_eq!(meta.platform, "onnxruntime_onnx");
    assert_eq!(
        (
            meta.inputs[0].name.as_str(),
            meta.inputs[0].datatype.as_str(),
            meta.inputs[0].shape.clone()
        ),
        ("x", "FP32", vec![-1, 4])
    );
    assert_eq!(
        (
            meta.outputs[0].name.as_str(),
            meta.outputs[0].datatype.as_str(),
            meta.outputs[0].shape.clone()
        ),
        ("y", "FP32", vec![-1, 3])
    );

    let x: Vec<f32> = (0..8).map(|i| i as f32 * 0.5 - 1.0).collect();
    let request = ModelInferRequest {
        model_name: "linear".into(),
        id: "req-1".into(),
        inputs: vec![raw_input("x", "FP32", &[2, 4])],
        raw_input_contents: vec![x
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()],
        ..Default::default()
    };
    let response = model.infer(&request).unwrap();
    assert_eq!(response.model_name, "linear");
    assert_eq!(response.model_version, "1");
    assert_eq!(response.id, "req-1");
    assert_eq!(response.outputs.len(), 1);
    assert_eq!(response.outputs[0].name, "y");
    assert_eq!(response.outputs[0].datatype, "FP32");
    assert_eq!(response.outputs[0].shape, vec![2, 3]);
    let y = f32s(&response.raw_output_contents[0]);
    let expected = linear_expected(&x, 4, 3, 0);
    for (a, b) in y.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-5, "{y:?} vs {expected:?}");
    }
}

#[test]
fn an_int64_model_doubles_typed_and_raw_inputs() {
    let model = load("doubler", 7, &doubler_int64()).unwrap();
    let typed = ModelInferRequest {
        inputs: vec![InferInputTensor {
            contents: Some(InferTensorContents {
                int64_contents: vec![1, -2, 3, i64::MAX / 2],
                ..Default::default()
            }),
            ..raw_input("x", "INT64", &[1, 4])
        }],
        ..Default::default()
    };
    let response = model.infer(&typed).unwrap();
    let y: Vec<i64> = response.raw_output_contents[0]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(y, vec![2, -4, 6, i64::MAX / 2 * 2]);
    assert_eq!(response.outputs[0].datatype, "INT64");
}

#[test]
fn every_datatype_passes_through_an_identity_model_unchanged() {
    for dt in ALL_DATATYPES {
        let model = load("id", 1, &identity(dt)).unwrap();
        assert_eq!(model.inputs[0].datatype, dt);
        let bytes: Vec<u8> = (0..6 * dt.element_bytes()).map(|i| (i % 2) as u8).collect();
        let request = ModelInferRequest {
            inputs: vec![raw_input("x", dt.kserve_name(), &[2, 3])],
            raw_input_contents: vec![Bytes::from(bytes.clone())],
            ..Default::default()
        };
        let response = model
            .infer(&request)
            .unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(response.outputs[0].datatype, dt.kserve_name());
        assert_eq!(response.outputs[0].shape, vec![2, 3]);
        assert_eq!(response.raw_output_contents[0], Bytes::from(bytes), "{dt}");
    }
}

#[test]
fn only_the_requested_outputs_come_back() {
    let model = load("sd", 1, &sum_and_difference()).unwrap();
    let a = [1.0f32, 2.0, 3.0];
    let b = [0.5f32, 0.5, 0.5];
    let raw = |v: &[f32]| Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>());
    let mut request = ModelInferRequest {
        inputs: vec![
            raw_input("a", "FP32", &[1, 3]),
            raw_input("b", "FP32", &[1, 3]),
        ],
        raw_input_contents: vec![raw(&a), raw(&b)],
        outputs: vec![InferRequestedOutputTensor {
            name: "difference".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let response = model.infer(&request).unwrap();
    assert_eq!(response.outputs.len(), 1);
    assert_eq!(response.outputs[0].name, "difference");
    assert_eq!(f32s(&response.raw_output_contents[0]), vec![0.5, 1.5, 2.5]);

    request.outputs.clear();
    let response = model.infer(&request).unwrap();
    let names: Vec<&str> = response.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, vec!["sum", "difference"]);
    assert_eq!(f32s(&response.raw_output_contents[0]), vec![1.5, 2.5, 3.5]);
}

#[test]
fn bytes_that_do_not_hash_to_the_approved_digest_are_refused_naming_both_digests() {
    let approved = linear_fp32(4, 3, 0);
    let tampered = linear_fp32(4, 3, 1);
    let identity = ModelIdentity::new("m", 2, Sha256Digest::of(&approved)).unwrap();
    let err =
        ServedModel::load(runtime(), &SessionSettings::default(), identity, &tampered).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "its bytes hash to sha256 {}, not the approved {}",
            Sha256Digest::of(&tampered),
            Sha256Digest::of(&approved)
        )
    );
}

#[test]
fn bytes_that_are_no_onnx_model_are_refused_by_onnx_runtime() {
    for garbage in [&b"definitely not a model"[..], &[0xff; 64][..], &[][..]] {
        let err = load("m", 1, garbage).unwrap_err();
        assert!(matches!(err, LoadError::Runtime(_)), "{err:?}");
        assert!(
            err.to_string().starts_with("ONNX Runtime cannot load it: "),
            "{err}"
        );
    }
}

#[test]
fn string_and_sequence_signatures_are_refused_as_unservable() {
    let _ = runtime();
    let strings = [Outlet::new(
        "s",
        ValueType::Tensor {
            ty: ort::value::TensorElementType::String,
            shape: ort::value::Shape::new([1]),
            dimension_symbols: ort::value::SymbolicDimensions::empty(1),
        },
    )];
    assert_eq!(
        specs("input", &strings).unwrap_err().to_string(),
        "input \"s\" has element type String, which the sidecar does not serve"
    );
    let sequence = [Outlet::new(
        "q",
        ValueType::Sequence(Box::new(ValueType::Tensor {
            ty: ort::value::TensorElementType::Float32,
            shape: ort::value::Shape::new([1]),
            dimension_symbols: ort::value::SymbolicDimensions::empty(1),
        })),
    )];
    let err = specs("output", &sequence).unwrap_err().to_string();
    assert!(err.starts_with("output \"q\" is a "), "{err}");
    assert!(
        err.ends_with("not a tensor; only tensor inputs and outputs are served"),
        "{err}"
    );
}

#[test]
fn an_error_from_onnx_runtime_during_a_run_is_an_error_reply_not_a_crash() {
    // A MatMul with a dynamic inner dimension: shapes the signature allows
    // but the operator does not.
    use crate::onnx_builder::{Dim, ModelBuilder};
    let bytes = ModelBuilder::new("mm")
        .input("a", Datatype::Fp32, &[Dim::Dynamic("n"), Dim::Dynamic("k")])
        .input(
            "b",
            Datatype::Fp32,
            &[Dim::Dynamic("k2"), Dim::Dynamic("m")],
        )
        .output("c", Datatype::Fp32, &[Dim::Dynamic("n"), Dim::Dynamic("m")])
        .node("MatMul", &["a", "b"], &["c"])
        .build();
    let model = load("mm", 1, &bytes).unwrap();
    let zeros = |n: usize| Bytes::from(vec![0u8; n * 4]);
    let request = ModelInferRequest {
        inputs: vec![
            raw_input("a", "FP32", &[2, 3]),
            raw_input("b", "FP32", &[4, 2]),
        ],
        raw_input_contents: vec![zeros(6), zeros(8)],
        ..Default::default()
    };
    // ONNX Runtime reports it as a failure of the node (ORT_FAIL), not as
    // an invalid argument: INTERNAL, as Triton answers it, with its words.
    let err = model.infer(&request).unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(err.to_string().starts_with("inference failed: "), "{err}");
    assert!(
        err.to_string().contains("MatMul dimension mismatch"),
        "{err}"
    );
    // An empty tensor whose other dimensions multiply past any size:
    // ONNX Runtime's own arithmetic refuses it, nothing overflows here.
    let huge = ModelInferRequest {
        inputs: vec![
            raw_input("a", "FP32", &[0, 1 << 62]),
            raw_input("b", "FP32", &[1 << 62, 1 << 62]),
        ],
        raw_input_contents: vec![zeros(0), zeros(0)],
        ..Default::default()
    };
    match model.infer(&huge) {
        Err(InferError::InvalidRequest(m)) => {
            assert!(m.contains("more elements than can be addressed"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let empty_but_wide = ModelInferRequest {
        inputs: vec![
            raw_input("a", "FP32", &[0, 1 << 62]),
            raw_input("b", "FP32", &[1 << 62, 0]),
        ],
        raw_input_contents: vec![zeros(0), zeros(0)],
        ..Default::default()
    };
    // Empty on both sides: a valid empty product.
    let empty = model.infer(&empty_but_wide).unwrap();
    assert_eq!(empty.outputs[0].shape, vec![0, 0]);
    assert!(empty.raw_output_contents[0].is_empty());
    // The model still serves.
    let ok = ModelInferRequest {
        inputs: vec![
            raw_input("a", "FP32", &[2, 3]),
            raw_input("b", "FP32", &[3, 2]),
        ],
        raw_input_contents: vec![zeros(6), zeros(6)],
        ..Default::default()
    };
    assert_eq!(model.infer(&ok).unwrap().outputs[0].shape, vec![2, 2]);
}

#[test]
fn settings_for_threads_and_optimisation_build_sessions() {
    use crate::session_settings::{ExecutionProviderChoice, OptLevel};
    let bytes = linear_fp32(4, 3, 0);
    for opt_level in [
        OptLevel::Disable,
        OptLevel::Basic,
        OptLevel::Extended,
        OptLevel::All,
    ] {
        let settings = SessionSettings {
            intra_threads: 1,
            inter_threads: 2,
            opt_level,
            // Not available in the CPU wheel: falls back to CPU.
            execution_provider: ExecutionProviderChoice::Cuda,
        };
        let identity = ModelIdentity::new("m", 1, Sha256Digest::of(&bytes)).unwrap();
        ServedModel::load(runtime(), &settings, identity, &bytes).unwrap();
    }
}
