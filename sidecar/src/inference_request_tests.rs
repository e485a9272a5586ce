use std::collections::HashMap;

use prost::bytes::Bytes;
use vigil_proto::kserve::infer_parameter::ParameterChoice;

use super::*;

fn spec(name: &str, datatype: Datatype, shape: &[i64]) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        shape: shape.to_vec(),
    }
}

fn model_inputs() -> Vec<TensorSpec> {
    vec![
        spec("x", Datatype::Fp32, &[-1, 3]),
        spec("ids", Datatype::Int64, &[2]),
    ]
}

fn model_outputs() -> Vec<TensorSpec> {
    vec![
        spec("y", Datatype::Fp32, &[-1, 3]),
        spec("z", Datatype::Int64, &[2]),
    ]
}

fn tensor(name: &str, datatype: &str, shape: &[i64]) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        ..Default::default()
    }
}

fn f32_bytes(values: &[f32]) -> Bytes {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn i64_bytes(values: &[i64]) -> Bytes {
    values
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

/// A good raw request: x = [[1,2,3]], ids = [7, 8].
fn raw_request() -> ModelInferRequest {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![tensor("x", "FP32", &[1, 3]), tensor("ids", "INT64", &[2])],
        raw_input_contents: vec![f32_bytes(&[1.0, 2.0, 3.0]), i64_bytes(&[7, 8])],
        ..Default::default()
    }
}

fn check(request: &ModelInferRequest) -> Result<CheckedRequest, InferError> {
    CheckedRequest::check(&model_inputs(), &model_outputs(), request)
}

/// The refusal's message; panics unless it is an invalid request.
fn refusal(request: &ModelInferRequest) -> String {
    match check(request) {
        Err(InferError::InvalidRequest(message)) => message,
        other => panic!("expected an invalid request, got {other:?}"),
    }
}

#[test]
fn a_raw_request_is_decoded_in_the_models_input_order_with_every_output() {
    let mut request = raw_request();
    // Inputs may come in any order; raw contents follow the request's order.
    request.inputs.reverse();
    request.raw_input_contents.reverse();
    let checked = check(&request).unwrap();
    assert_eq!(
        checked.inputs,
        vec![
            CheckedInput {
                name: "x".into(),
                shape: vec![1, 3],
                data: TensorData::Fp32(vec![1.0, 2.0, 3.0])
            },
            CheckedInput {
                name: "ids".into(),
                shape: vec![2],
                data: TensorData::Int64(vec![7, 8])
            },
        ]
    );
    assert_eq!(checked.outputs, vec![0, 1]);
    assert!(checked.all_outputs);
}

#[test]
fn typed_contents_are_decoded_too() {
    let mut request = raw_request();
    request.raw_input_contents.clear();
    request.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![1.0, 2.0, 3.0],
        ..Default::default()
    });
    request.inputs[1].contents = Some(InferTensorContents {
        int64_contents: vec![7, 8],
        ..Default::default()
    });
    let checked = check(&request).unwrap();
    assert_eq!(
        checked.inputs[0].data,
        TensorData::Fp32(vec![1.0, 2.0, 3.0])
    );
    assert_eq!(checked.inputs[1].data, TensorData::Int64(vec![7, 8]));
}

#[test]
fn requested_outputs_are_returned_in_the_order_asked() {
    let mut request = raw_request();
    request.outputs = vec![
        InferRequestedOutputTensor {
            name: "z".into(),
            ..Default::default()
        },
        InferRequestedOutputTensor {
            name: "y".into(),
            ..Default::default()
        },
    ];
    let checked = check(&request).unwrap();
    assert_eq!(checked.outputs, vec![1, 0]);
    assert!(!checked.all_outputs);
}

#[test]
fn a_raw_buffer_of_the_wrong_length_names_the_input_the_shape_and_what_it_holds() {
    let mut request = raw_request();
    request.raw_input_contents[0] = f32_bytes(&[1.0, 2.0]);
    assert_eq!(
        refusal(&request),
        "input \"x\": shape [1,3] has 3 elements, raw contents hold 2 (FP32, 8 bytes)"
    );
    request.raw_input_contents[0] = Bytes::from(vec![0u8; 9]);
    assert_eq!(
        refusal(&request),
        "input \"x\": shape [1,3] has 3 elements, raw contents hold 9 bytes, not a whole number of FP32 elements (4 bytes each)"
    );
}

#[test]
fn wrong_shapes_are_refused_with_the_models_shape() {
    for (shape, expected) in [
        (
            vec![3],
            "input \"x\": shape [3] does not match the model's [-1,3]",
        ),
        (
            vec![1, 4],
            "input \"x\": shape [1,4] does not match the model's [-1,3]",
        ),
        (
            vec![1, 3, 1],
            "input \"x\": shape [1,3,1] does not match the model's [-1,3]",
        ),
        (
            vec![-1, 3],
            "input \"x\": shape [-1,3] has a negative dimension",
        ),
    ] {
        let mut request = raw_request();
        request.inputs[0].shape = shape;
        assert_eq!(refusal(&request), expected);
    }
}

#[test]
fn a_shape_whose_element_or_byte_count_overflows_is_refused_before_any_allocation() {
    let mut request = raw_request();
    request.inputs[0].shape = vec![i64::MAX, 3];
    assert_eq!(
        refusal(&request),
        "input \"x\": shape [9223372036854775807,3] has more elements than can be addressed"
    );
    // The elements can be counted, their bytes cannot.
    request.inputs[0].shape = vec![1 << 62, 3];
    assert_eq!(
        refusal(&request),
        "input \"x\": shape [4611686018427387904,3] has more bytes than can be addressed"
    );
    // A zero dimension makes an empty tensor whatever the others say.
    assert_eq!(element_count(&[0, i64::MAX, i64::MAX]), Some(0));
    assert_eq!(element_count(&[]), Some(1));
}

#[test]
fn a_wrong_or_unknown_datatype_is_refused() {
    let mut request = raw_request();
    request.inputs[0].datatype = "INT64".into();
    assert_eq!(
        refusal(&request),
        "input \"x\": datatype INT64 does not match the model's FP32"
    );
    request.inputs[0].datatype = "FLOAT".into();
    assert!(refusal(&request).starts_with("input \"x\": unknown datatype \"FLOAT\""));
    request.inputs[0].datatype = "BYTES".into();
    assert_eq!(
        refusal(&request),
        "input \"x\": datatype BYTES (strings) is not served"
    );
}

#[test]
fn a_missing_unknown_or_repeated_input_is_refused() {
    let mut request = raw_request();
    request.inputs.truncate(1);
    request.raw_input_contents.truncate(1);
    assert_eq!(
        refusal(&request),
        "input \"ids\" is missing (the model takes INT64 [2])"
    );

    let mut request = raw_request();
    request.inputs[1].name = "nope".into();
    assert_eq!(
        refusal(&request),
        "input \"nope\" is not an input of model \"m\" (its inputs: x, ids)"
    );

    let mut request = raw_request();
    request.inputs[1] = request.inputs[0].clone();
    request.raw_input_contents[1] = request.raw_input_contents[0].clone();
    assert_eq!(refusal(&request), "input \"x\" is given twice");
}

#[test]
fn raw_contents_must_cover_every_input_and_not_be_mixed_with_typed_ones() {
    let mut request = raw_request();
    request.raw_input_contents.pop();
    assert_eq!(
        refusal(&request),
        "raw_input_contents has 1 entries for 2 inputs sent in the request (send every such input raw, in order, or none)"
    );

    let mut request = raw_request();
    request.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![1.0],
        ..Default::default()
    });
    assert_eq!(
        refusal(&request),
        "input \"x\": both raw_input_contents and contents are given; send one"
    );
}

#[test]
fn typed_contents_of_the_wrong_count_or_field_are_refused() {
    let mut request = raw_request();
    request.raw_input_contents.clear();
    request.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![1.0, 2.0],
        ..Default::default()
    });
    assert_eq!(
        refusal(&request),
        "input \"x\": shape [1,3] has 3 elements, fp32_contents hold 2"
    );
    // FP64 values for an FP32 input: the FP32 field is empty.
    request.inputs[0].contents = Some(InferTensorContents {
        fp64_contents: vec![1.0, 2.0, 3.0],
        ..Default::default()
    });
    assert_eq!(
        refusal(&request),
        "input \"x\": shape [1,3] has 3 elements, fp32_contents hold 0"
    );
}

#[test]
fn fp16_inputs_need_raw_contents() {
    let inputs = vec![spec("h", Datatype::Fp16, &[2])];
    let request = ModelInferRequest {
        inputs: vec![tensor("h", "FP16", &[2])],
        ..Default::default()
    };
    match CheckedRequest::check(&inputs, &[], &request) {
        Err(InferError::InvalidRequest(m)) => assert_eq!(
            m,
            "input \"h\": FP16 has no typed contents field; send it in raw_input_contents"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_or_repeated_outputs_are_refused() {
    let mut request = raw_request();
    request.outputs = vec![InferRequestedOutputTensor {
        name: "w".into(),
        ..Default::default()
    }];
    assert_eq!(
        refusal(&request),
        "output \"w\" is not an output of the model (its outputs: y, z)"
    );
    request.outputs = vec![
        InferRequestedOutputTensor {
            name: "y".into(),
            ..Default::default()
        },
        InferRequestedOutputTensor {
            name: "y".into(),
            ..Default::default()
        },
    ];
    assert_eq!(refusal(&request), "output \"y\" is requested twice");
}

#[test]
fn shared_memory_and_classification_are_refused_as_unsupported() {
    let param = |s: &str| InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(s.into())),
    };
    let mut request = raw_request();
    request.inputs[0].parameters = HashMap::from([
        ("shared_memory_region".to_string(), param("r")),
        ("shared_memory_byte_size".to_string(), int(12)),
    ]);
    request.raw_input_contents.remove(0);
    assert_eq!(
        refusal(&request),
        "input \"x\": shared memory is not available on this path; send the tensor in the request"
    );
    let mut request = raw_request();
    request.outputs = vec![InferRequestedOutputTensor {
        name: "y".into(),
        parameters: HashMap::from([(
            "classification".to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(3)),
            },
        )]),
    }];
    assert_eq!(
        refusal(&request),
        "output \"y\": classification outputs are not supported"
    );
}

fn int(v: i64) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::Int64Param(v)),
    }
}

fn shm_params(region: &str, offset: i64, size: i64) -> HashMap<String, InferParameter> {
    HashMap::from([
        (
            "shared_memory_region".to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::StringParam(region.into())),
            },
        ),
        ("shared_memory_offset".to_string(), int(offset)),
        ("shared_memory_byte_size".to_string(), int(size)),
    ])
}

/// A shared-memory directory with one 4 KiB region "r" of the caller's,
/// x = [[1,2,3]] at offset 0.
fn shm_fixture() -> (
    tempfile::TempDir,
    SharedMemory,
    crate::shared_memory::Caller,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = f32_bytes(&[1.0, 2.0, 3.0]).to_vec();
    bytes.resize(4096, 0);
    std::fs::write(dir.path().join("t"), &bytes).unwrap();
    let memory = SharedMemory::new(dir.path(), crate::shared_memory::Limits::default());
    let caller = crate::shared_memory::Caller::Uid(nix::unistd::geteuid().as_raw());
    memory.register(&caller, "r", "/t", 0, 4096).unwrap();
    (dir, memory, caller)
}

use crate::shared_memory::SharedMemory;

#[test]
fn an_input_in_shared_memory_is_read_and_the_raw_entries_are_the_others() {
    let (_dir, memory, caller) = shm_fixture();
    let scope = Some(ShmScope {
        memory: &memory,
        caller: &caller,
    });
    let mut request = raw_request();
    request.inputs[0].parameters = shm_params("r", 0, 12);
    // Only "ids" travels raw.
    request.raw_input_contents.remove(0);
    request.outputs = vec![
        InferRequestedOutputTensor {
            name: "y".into(),
            // Over the input's own bytes: allowed, inputs are read first.
            parameters: shm_params("r", 0, 12),
        },
        InferRequestedOutputTensor {
            name: "z".into(),
            ..Default::default()
        },
    ];
    let checked =
        CheckedRequest::check_with(&model_inputs(), &model_outputs(), &request, scope).unwrap();
    assert_eq!(
        checked.inputs[0].data,
        TensorData::Fp32(vec![1.0, 2.0, 3.0])
    );
    assert_eq!(checked.inputs[1].data, TensorData::Int64(vec![7, 8]));
    assert!(checked.output_shm[0].is_some() && checked.output_shm[1].is_none());

    let refused = |request: &ModelInferRequest| {
        CheckedRequest::check_with(&model_inputs(), &model_outputs(), request, scope)
            .unwrap_err()
            .to_string()
    };
    let mut wrong_size = request.clone();
    wrong_size.inputs[0].parameters = shm_params("r", 0, 16);
    assert!(
        refused(&wrong_size)
            .contains("shared_memory_byte_size is 16, but shape [1,3] of FP32 takes 12"),
        "{}",
        refused(&wrong_size)
    );
    let mut negative = request.clone();
    negative.inputs[0].parameters = shm_params("r", -4, 12);
    assert!(refused(&negative).contains("is negative"));
    let mut past = request.clone();
    past.inputs[0].parameters = shm_params("r", 4090, 12);
    assert!(
        refused(&past).contains("past the end"),
        "{}",
        refused(&past)
    );
    let mut unknown = request.clone();
    unknown.inputs[0].parameters = shm_params("nope", 0, 12);
    assert!(refused(&unknown).contains("Unable to find"));
    let mut no_size = request.clone();
    no_size.inputs[0]
        .parameters
        .remove("shared_memory_byte_size");
    assert!(refused(&no_size).contains("without shared_memory_byte_size"));
    let mut no_region = request.clone();
    no_region.inputs[0]
        .parameters
        .remove("shared_memory_region");
    assert!(refused(&no_region).contains("without shared_memory_region"));
    let mut both = request.clone();
    both.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![1.0, 2.0, 3.0],
        ..Default::default()
    });
    assert!(refused(&both).contains("both shared memory and contents"));
    let mut miscounted = request.clone();
    miscounted.raw_input_contents.push(f32_bytes(&[1.0]));
    assert!(refused(&miscounted).contains("2 entries for 1 inputs sent in the request"));
    let mut overlapping = request.clone();
    overlapping.outputs[1].parameters = shm_params("r", 8, 16);
    assert!(
        refused(&overlapping).contains("overlaps another output"),
        "{}",
        refused(&overlapping)
    );
    let mut apart = request.clone();
    apart.outputs[1].parameters = shm_params("r", 12, 16);
    CheckedRequest::check_with(&model_inputs(), &model_outputs(), &apart, scope).unwrap();

    let stranger = crate::shared_memory::Caller::Uid(65534);
    let err = CheckedRequest::check_with(
        &model_inputs(),
        &model_outputs(),
        &request,
        Some(ShmScope {
            memory: &memory,
            caller: &stranger,
        }),
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
}

#[test]
fn inputs_read_from_shared_memory_are_bounded_per_request() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t"), vec![0u8; 4096]).unwrap();
    let memory = SharedMemory::new(
        dir.path(),
        crate::shared_memory::Limits {
            max_input_bytes: 20,
            ..Default::default()
        },
    );
    let caller = crate::shared_memory::Caller::Uid(nix::unistd::geteuid().as_raw());
    memory.register(&caller, "r", "/t", 0, 4096).unwrap();
    let mut request = raw_request();
    request.inputs[0].parameters = shm_params("r", 0, 12);
    request.inputs[1].parameters = shm_params("r", 16, 16);
    request.raw_input_contents.clear();
    let err = CheckedRequest::check_with(
        &model_inputs(),
        &model_outputs(),
        &request,
        Some(ShmScope {
            memory: &memory,
            caller: &caller,
        }),
    )
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
}

#[test]
fn names_echoed_from_a_request_are_bounded() {
    let mut request = raw_request();
    request.inputs[1].name = "n".repeat(100_000);
    assert!(refusal(&request).len() < 1000);
}

#[test]
fn shapes_print_compactly() {
    assert_eq!(shape_text(&[]), "[]");
    assert_eq!(shape_text(&[-1, 3]), "[-1,3]");
}
