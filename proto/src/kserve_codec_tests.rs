use prost::bytes::Bytes;
use prost::Message;

use super::*;
use crate::kserve::infer_parameter::ParameterChoice;
use crate::kserve::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::kserve::{InferParameter, InferTensorContents};

fn check(request: &ModelInferRequest) -> Result<(), String> {
    InferRequestLimits::DEFAULT.check(&request.encode_to_vec())
}

fn parameters(n: usize) -> std::collections::HashMap<String, InferParameter> {
    (0..n)
        .map(|i| {
            (
                format!("p{i}"),
                InferParameter {
                    parameter_choice: Some(ParameterChoice::Int64Param(i as i64)),
                },
            )
        })
        .collect()
}

fn input(name: &str) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![1, 4],
        ..Default::default()
    }
}

#[test]
fn a_request_within_the_limits_passes() {
    let request = ModelInferRequest {
        model_name: "m".into(),
        id: "r".into(),
        model_version: String::new(),
        parameters: parameters(64),
        inputs: (0..256)
            .map(|i| InferInputTensor {
                parameters: parameters(64),
                contents: Some(InferTensorContents {
                    fp32_contents: vec![1.0; 4],
                    int64_contents: vec![300, 1, -1],
                    bytes_contents: vec![Bytes::from_static(b"x"); 256],
                    ..Default::default()
                }),
                ..input(&format!("x{i}"))
            })
            .collect(),
        outputs: (0..256)
            .map(|i| InferRequestedOutputTensor {
                name: format!("y{i}"),
                parameters: parameters(64),
            })
            .collect(),
        raw_input_contents: vec![Bytes::from_static(&[0; 16]); 1024],
    };
    assert_eq!(check(&request), Ok(()));
    assert_eq!(check(&ModelInferRequest::default()), Ok(()));
}

#[test]
fn each_count_past_its_limit_is_refused_naming_it() {
    let cases: Vec<(ModelInferRequest, &str)> = vec![
        (
            ModelInferRequest {
                inputs: vec![InferInputTensor::default(); 257],
                ..Default::default()
            },
            "request has more than 256 inputs",
        ),
        (
            ModelInferRequest {
                outputs: vec![InferRequestedOutputTensor::default(); 257],
                ..Default::default()
            },
            "request has more than 256 outputs",
        ),
        (
            ModelInferRequest {
                raw_input_contents: vec![Bytes::new(); 1025],
                ..Default::default()
            },
            "request has more than 1024 raw_input_contents entries",
        ),
        (
            ModelInferRequest {
                parameters: parameters(65),
                ..Default::default()
            },
            "request has more than 64 parameters",
        ),
        (
            ModelInferRequest {
                inputs: vec![InferInputTensor {
                    parameters: parameters(65),
                    ..input("x")
                }],
                ..Default::default()
            },
            "an input has more than 64 parameters",
        ),
        (
            ModelInferRequest {
                outputs: vec![InferRequestedOutputTensor {
                    name: "y".into(),
                    parameters: parameters(65),
                }],
                ..Default::default()
            },
            "an output has more than 64 parameters",
        ),
        (
            ModelInferRequest {
                inputs: vec![InferInputTensor {
                    shape: vec![1; 65],
                    ..input("x")
                }],
                ..Default::default()
            },
            "an input's shape has more than 64 dimensions",
        ),
        (
            // Counted over all inputs together.
            ModelInferRequest {
                inputs: (0..2)
                    .map(|_| InferInputTensor {
                        contents: Some(InferTensorContents {
                            bytes_contents: vec![Bytes::new(); 32_769],
                            ..Default::default()
                        }),
                        ..input("x")
                    })
                    .collect(),
                ..Default::default()
            },
            "request has more than 65536 bytes_contents entries",
        ),
        (
            ModelInferRequest {
                inputs: (0..3)
                    .map(|_| InferInputTensor {
                        contents: Some(InferTensorContents {
                            bool_contents: vec![true; 6 * 1024 * 1024],
                            ..Default::default()
                        }),
                        ..input("x")
                    })
                    .collect(),
                ..Default::default()
            },
            "request has more than 16777216 typed contents elements",
        ),
    ];
    for (request, expected) in cases {
        let err = check(&request).unwrap_err();
        assert!(
            err.starts_with(expected),
            "{err:?} should start {expected:?}"
        );
    }
}

#[test]
fn packed_and_unpacked_contents_count_the_same() {
    let limits = InferRequestLimits {
        typed_contents: 4,
        ..InferRequestLimits::DEFAULT
    };
    let packed = |n: usize| {
        ModelInferRequest {
            inputs: vec![InferInputTensor {
                contents: Some(InferTensorContents {
                    int64_contents: vec![1 << 40; n],
                    ..Default::default()
                }),
                ..input("x")
            }],
            ..Default::default()
        }
        .encode_to_vec()
    };
    assert_eq!(limits.check(&packed(4)), Ok(()));
    assert!(limits.check(&packed(5)).is_err());
    // Contents 5 → int64_contents 3 unpacked: five varints of one key each.
    let unpacked: Vec<u8> = [3u8 << 3, 7].repeat(5);
    let mut contents = vec![(5 << 3) | 2, unpacked.len() as u8];
    contents.extend(&unpacked);
    let mut request = vec![(5 << 3) | 2, contents.len() as u8];
    request.extend(&contents);
    assert!(limits
        .check(&request)
        .unwrap_err()
        .contains("typed contents"));
    assert_eq!(
        limits.check(&request[..request.len() - 2]),
        Err(truncated())
    );
}

#[test]
fn malformed_wire_data_is_refused() {
    let cases: &[(&[u8], &str)] = &[
        // A key cut short.
        (&[0x80], "truncated"),
        // inputs (5) of 10 bytes, 1 present.
        (&[0x2A, 10, 0], "truncated"),
        // A length varint cut short.
        (&[0x2A, 0xFF], "truncated"),
        // An eleven-byte varint.
        (
            &[
                0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
            ],
            "over 64 bits",
        ),
        // The tenth byte over 1.
        (
            &[
                0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02,
            ],
            "over 64 bits",
        ),
        // Field number 0.
        (&[0x00, 0x00], "invalid field number 0"),
        // A group (wire type 3).
        (&[0x0B], "wire type 3"),
        // A fixed64 cut short.
        (&[0x09, 1, 2, 3], "truncated"),
        // Malformed inside an input: its shape's length past its end.
        (&[0x2A, 2, 0x1A, 5], "truncated"),
    ];
    for (bytes, expected) in cases {
        let err = InferRequestLimits::DEFAULT.check(bytes).unwrap_err();
        assert!(err.starts_with("malformed request"), "{bytes:?}: {err}");
        assert!(
            err.contains(expected),
            "{bytes:?}: {err} should say {expected:?}"
        );
    }
    // A ten-byte varint (u64::MAX) is fine, as prost reads it.
    let max = [
        0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01,
    ];
    assert_eq!(InferRequestLimits::DEFAULT.check(&max), Ok(()));
}

#[test]
fn sixty_mib_of_empty_inputs_stop_at_the_257th() {
    let bytes = [0x2Au8, 0].repeat(30 * 1024 * 1024);
    let err = InferRequestLimits::DEFAULT.check(&bytes).unwrap_err();
    assert_eq!(
        err,
        "request has more than 256 inputs: at most 256 are accepted"
    );
}
