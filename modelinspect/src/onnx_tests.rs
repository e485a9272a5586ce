use std::io::Cursor;
use std::time::Duration;

use prost::Message;

use super::pb;
use crate::{inspect, inspect_as, Bounded, Budget, Format, InspectError, ModelReport};

fn tensor_type(elem: i32, dims: &[Option<&str>]) -> pb::TypeProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: Some(elem),
            shape: Some(pb::TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| Dimension {
                        value: d.map(|d| match d.parse::<i64>() {
                            Ok(v) => Value::DimValue(v),
                            Err(_) => Value::DimParam(d.to_string()),
                        }),
                        denotation: None,
                    })
                    .collect(),
            }),
        })),
        denotation: None,
    }
}

fn value_info(name: &str, ty: pb::TypeProto) -> pb::ValueInfoProto {
    pb::ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(ty),
        ..Default::default()
    }
}

fn initializer(name: &str, dims: &[i64], data_type: i32, raw: usize) -> pb::TensorProto {
    pb::TensorProto {
        dims: dims.to_vec(),
        data_type: Some(data_type),
        name: Some(name.into()),
        raw_data: Some(vec![0x5a; raw]),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], output: &str) -> pb::NodeProto {
    pb::NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: Some(format!("{op}_0")),
        ..Default::default()
    }
}

fn entry(k: &str, v: &str) -> pb::StringStringEntryProto {
    pb::StringStringEntryProto {
        key: Some(k.into()),
        value: Some(v.into()),
    }
}

/// A small convolutional model: two nodes, three initializers (float32,
/// float16, bfloat16), one symbolic and one unknown dimension, two opset
/// imports and metadata.
fn sample() -> pb::ModelProto {
    pb::ModelProto {
        ir_version: Some(8),
        opset_import: vec![
            pb::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(17),
            },
            pb::OperatorSetIdProto {
                domain: Some("com.microsoft".into()),
                version: Some(1),
            },
        ],
        producer_name: Some("pytorch".into()),
        producer_version: Some("2.1.0".into()),
        domain: Some("ai.vigil.test".into()),
        model_version: Some(3),
        doc_string: Some("a model for tests".into()),
        graph: Some(pb::GraphProto {
            node: vec![
                node("Conv", &["input", "conv.weight", "conv.bias"], "c"),
                node("Relu", &["c"], "output"),
            ],
            name: Some("main_graph".into()),
            initializer: vec![
                initializer("conv.weight", &[8, 3, 3, 3], 1, 8 * 27 * 4),
                initializer("conv.bias", &[8], 10, 16),
                initializer("scale", &[2, 4], 16, 16),
            ],
            doc_string: Some("graph doc".into()),
            input: vec![value_info(
                "input",
                tensor_type(1, &[Some("batch"), Some("3"), Some("224"), Some("224")]),
            )],
            output: vec![value_info(
                "output",
                tensor_type(1, &[Some("batch"), Some("8"), None, Some("224")]),
            )],
            ..Default::default()
        }),
        metadata_props: vec![entry("model_type", "resnet"), entry("author", "vigil")],
        ..Default::default()
    }
}

/// The sample model's bytes (a fuzz seed).
pub(crate) fn sample_model() -> Vec<u8> {
    sample().encode_to_vec()
}

fn read(bytes: &[u8], budget: Budget) -> Result<ModelReport, InspectError> {
    let mut r = Bounded::new(Cursor::new(bytes), budget)?;
    inspect_as(&mut r, Format::Onnx)
}

fn error_of(bytes: &[u8], budget: Budget) -> InspectError {
    match read(bytes, budget) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(e) => e,
    }
}

#[test]
fn every_field_of_the_model_graph_and_initializers_is_read() {
    let bytes = sample_model();
    let report = inspect(
        Cursor::new(bytes.clone()),
        Budget::default(),
        Some("m.onnx"),
    )
    .unwrap();
    assert_eq!(report.format, Format::Onnx);
    assert_eq!(report.format_version, "8");
    assert_eq!(report.name, "main_graph");
    assert_eq!(report.architecture, "resnet");
    assert_eq!(report.metadata["author"], "vigil");
    assert_eq!(report.metadata["model_type"], "resnet");
    let d = report.onnx.as_ref().unwrap();
    assert_eq!(d.ir_version, 8);
    assert_eq!(
        d.opsets.iter().collect::<Vec<_>>(),
        [(&String::new(), &17), (&"com.microsoft".to_string(), &1)]
    );
    assert_eq!(d.producer_name, "pytorch");
    assert_eq!(d.producer_version, "2.1.0");
    assert_eq!(d.domain, "ai.vigil.test");
    assert_eq!(d.model_version, 3);
    assert_eq!(d.graph_name, "main_graph");
    assert_eq!(d.node_count, 2);
    assert!(!d.external_data);
    assert_eq!(
        d.inputs,
        [("input".to_string(), "float32[batch,3,224,224]".to_string())]
    );
    assert_eq!(
        d.outputs,
        [("output".to_string(), "float32[batch,8,?,224]".to_string())]
    );
    let tensors: Vec<_> = report
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.clone(), t.dtype.as_str()))
        .collect();
    assert_eq!(
        tensors,
        [
            ("conv.weight", vec![8, 3, 3, 3], "float32"),
            ("conv.bias", vec![8], "float16"),
            ("scale", vec![2, 4], "bfloat16"),
        ]
    );
    assert_eq!(report.tensor_count, 3);
    assert_eq!(report.parameters, 216 + 8 + 8);
    assert_eq!(report.quantization, "float32");
    assert_eq!(
        report.dtypes.iter().map(String::as_str).collect::<Vec<_>>(),
        ["bfloat16", "float16", "float32"]
    );
    assert_eq!(report.structure_fingerprint.len(), 64);
    assert!(report.onnx.is_some() && report.tflite.is_none() && report.pickle.is_none());
}

#[test]
fn the_fingerprint_survives_a_resave_with_other_metadata_but_not_a_reshape() {
    let base = read(&sample_model(), Budget::default()).unwrap();
    let mut m = sample();
    m.producer_name = Some("onnxruntime".into());
    m.doc_string = None;
    m.metadata_props
        .retain(|e| e.key.as_deref() == Some("model_type"));
    m.graph.as_mut().unwrap().initializer[1].data_type = Some(1);
    let resaved = read(&m.encode_to_vec(), Budget::default()).unwrap();
    assert_eq!(base.structure_fingerprint, resaved.structure_fingerprint);
    m.graph.as_mut().unwrap().initializer[0].dims = vec![16, 3, 3, 3];
    let reshaped = read(&m.encode_to_vec(), Budget::default()).unwrap();
    assert_ne!(base.structure_fingerprint, reshaped.structure_fingerprint);
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, number: u64, wire: u8) {
    varint(out, number << 3 | u64::from(wire));
}

fn len_field(out: &mut Vec<u8>, number: u64, body: &[u8]) {
    key(out, number, 2);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// A model holding just `graph` (encoded by hand).
fn model_with_graph(graph: &[u8]) -> Vec<u8> {
    let mut m = vec![0x08, 0x07];
    len_field(&mut m, 7, graph);
    m
}

#[test]
fn packed_dims_negative_dims_and_unknown_fields_of_every_wire_type() {
    let mut t = Vec::new();
    let mut dims = Vec::new();
    for d in [4u64, 1 << 40, 0] {
        varint(&mut dims, d);
    }
    len_field(&mut t, 1, &dims); // packed dims
    key(&mut t, 1, 0);
    varint(&mut t, 7); // and one unpacked
    key(&mut t, 2, 0);
    varint(&mut t, 3); // int8
    key(&mut t, 40, 1);
    t.extend_from_slice(&[0; 8]); // fixed64 unknown
    key(&mut t, 41, 5);
    t.extend_from_slice(&[0; 4]); // fixed32 unknown
    key(&mut t, 42, 3); // a group holding a group and a varint
    key(&mut t, 43, 3);
    key(&mut t, 44, 0);
    varint(&mut t, 1);
    key(&mut t, 43, 4);
    key(&mut t, 42, 4);
    len_field(&mut t, 8, "packed".as_bytes());
    len_field(&mut t, 9, &[1; 10_000]); // raw_data, skipped
    let mut g = Vec::new();
    len_field(&mut g, 5, &t);
    key(&mut g, 99, 0);
    varint(&mut g, u64::MAX); // a 10-byte varint, unknown
    let report = read(&model_with_graph(&g), Budget::default()).unwrap();
    assert_eq!(report.tensors.len(), 1);
    let t0 = &report.tensors[0];
    assert_eq!(
        (t0.name.as_str(), t0.shape.as_slice(), t0.dtype.as_str()),
        ("packed", &[4, 1 << 40, 0, 7][..], "int8")
    );
    assert_eq!(report.onnx.unwrap().node_count, 0);

    let mut t = Vec::new();
    key(&mut t, 1, 0);
    varint(&mut t, (-3i64) as u64);
    let mut g = Vec::new();
    len_field(&mut g, 5, &t);
    let e = error_of(&model_with_graph(&g), Budget::default());
    assert!(
        matches!(&e, InspectError::Malformed { what, .. } if what.contains("negative dimension -3")),
        "{e}"
    );
}

#[test]
fn external_data_and_sparse_initializers() {
    let mut m = sample();
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(pb::TensorProto {
        dims: vec![1000, 1000],
        data_type: Some(1),
        name: Some("big.weight".into()),
        data_location: Some(pb::tensor_proto::DataLocation::External as i32),
        external_data: vec![entry("location", "weights.bin"), entry("offset", "0")],
        ..Default::default()
    });
    g.sparse_initializer.push(pb::SparseTensorProto {
        values: Some(initializer("sparse.values", &[5], 1, 20)),
        indices: Some(initializer("sparse.indices", &[5], 7, 40)),
        dims: vec![10, 10],
    });
    let report = read(&m.encode_to_vec(), Budget::default()).unwrap();
    assert!(report.onnx.as_ref().unwrap().external_data);
    let names: Vec<_> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv.weight",
            "conv.bias",
            "scale",
            "big.weight",
            "sparse.values"
        ]
    );
    assert_eq!(report.tensors[4].shape, [10, 10]);
    assert_eq!(report.parameters, 216 + 8 + 8 + 1_000_000 + 100);
}

#[test]
fn fifty_megabytes_of_raw_data_are_skipped_under_a_one_megabyte_budget() {
    let mut m = sample();
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .push(initializer("huge", &[50 << 20], 2, 50 << 20));
    // After the huge one, so the walk must get past its data.
    m.graph
        .as_mut()
        .unwrap()
        .initializer
        .push(initializer("after", &[3], 1, 12));
    let bytes = m.encode_to_vec();
    assert!(bytes.len() > 50 << 20);
    let budget = Budget {
        max_bytes: 1 << 20,
        ..Budget::default()
    };
    let report = read(&bytes, budget).unwrap();
    assert_eq!(report.tensors.len(), 5);
    assert_eq!(report.tensors[3].shape, [50 << 20]);
    assert_eq!(report.tensors[4].name, "after");
    assert_eq!(report.quantization, "uint8");
    assert!(report.bytes_read < 1 << 20, "{}", report.bytes_read);
    // With a budget too small for the header, the error is a budget one.
    let e = error_of(
        &bytes,
        Budget {
            max_bytes: 100,
            ..Budget::default()
        },
    );
    assert!(matches!(e, InspectError::OverBytes { max: 100 }), "{e}");
}

/// Where each top-level field of a valid model ends.
fn top_level_ends(bytes: &[u8]) -> Vec<usize> {
    fn var(b: &[u8], at: &mut usize) -> u64 {
        let mut v = 0;
        for i in 0.. {
            let x = b[*at];
            *at += 1;
            v |= u64::from(x & 0x7f) << (7 * i);
            if x < 0x80 {
                break;
            }
        }
        v
    }
    let mut ends = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let k = var(bytes, &mut at);
        match k & 7 {
            0 => {
                var(bytes, &mut at);
            }
            2 => {
                let n = var(bytes, &mut at);
                at += n as usize;
            }
            w => panic!("wire type {w} in the fixture"),
        }
        ends.push(at);
    }
    ends
}

#[test]
fn every_truncation_is_an_error_unless_it_ends_between_top_level_fields() {
    let bytes = sample_model();
    let ends = top_level_ends(&bytes);
    assert!(ends.len() > 8);
    for n in 0..bytes.len() {
        let result = std::panic::catch_unwind(|| read(&bytes[..n], Budget::default()));
        let result = result.unwrap_or_else(|_| panic!("panicked on the first {n} bytes"));
        // A protobuf message has no end marker: cut between fields it is
        // a smaller valid model. Anywhere else, an error.
        assert_eq!(
            result.is_ok(),
            ends.contains(&n),
            "first {n} bytes: {result:?}"
        );
        if let Err(e) = result {
            assert!(!e.to_string().is_empty());
        }
    }
}

#[test]
fn a_length_claiming_2_pow_60_bytes_is_refused_without_allocating() {
    // The graph's length, at the top level: truncation.
    let mut m = vec![0x08, 0x07];
    key(&mut m, 7, 2);
    varint(&mut m, 1 << 60);
    m.extend_from_slice(&[0; 32]);
    let e = error_of(&m, Budget::default());
    assert!(
        matches!(&e, InspectError::Truncated { offset: 3, what } if what.contains("graph") && what.contains("1152921504606846976 bytes claimed")),
        "{e}"
    );
    // A graph input's length inside a graph that does not reach the end
    // of the file: past its message.
    let mut g = Vec::new();
    key(&mut g, 11, 2);
    varint(&mut g, 1 << 60);
    g.extend_from_slice(&[0; 32]);
    let mut m = model_with_graph(&g);
    len_field(&mut m, 2, b"a producer after the graph");
    let e = error_of(&m, Budget::default());
    assert!(
        matches!(&e, InspectError::Malformed { what, .. } if what.contains("graph input") && what.contains("past the end")),
        "{e}"
    );
    // An initializer name and a metadata value: likewise, the field named.
    for (outer, inner, name) in [(5u64, 8u64, "tensor name"), (14, 2, "metadata value")] {
        let mut t = Vec::new();
        key(&mut t, inner, 2);
        varint(&mut t, 1 << 60);
        let mut m = vec![0x08, 0x07];
        if outer == 5 {
            let mut g = Vec::new();
            len_field(&mut g, 5, &t);
            len_field(&mut m, 7, &g);
        } else {
            len_field(&mut m, 14, &t);
        }
        len_field(&mut m, 2, b"a producer after");
        let e = error_of(&m, Budget::default());
        assert!(
            matches!(&e, InspectError::Malformed { what, .. } if what.contains(name)),
            "{e}"
        );
    }
    // A varint longer than ten bytes.
    let e = error_of(
        &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        Budget::default(),
    );
    assert!(
        matches!(&e, InspectError::Malformed { offset: 1, what } if what.contains("ir_version") && what.contains("64 bits")),
        "{e}"
    );
}

#[test]
fn a_known_field_with_the_wrong_wire_type_is_named() {
    let mut m = Vec::new();
    len_field(&mut m, 1, b"eight");
    let e = error_of(&m, Budget::default());
    assert!(
        matches!(&e, InspectError::Malformed { offset: 0, what } if what.contains("ir_version")),
        "{e}"
    );
    // No ir_version at all: not ONNX.
    let mut m = Vec::new();
    len_field(&mut m, 2, b"producer");
    let e = error_of(&m, Budget::default());
    assert!(e.to_string().contains("no ir_version"), "{e}");
    // Wire types 6 and 7 do not exist; an end-group with no group.
    for bad in [
        [0x08, 0x07, 0x16, 0x00],
        [0x08, 0x07, 0x17, 0x00],
        [0x08, 0x07, 0x14, 0x00],
    ] {
        let e = error_of(&bad, Budget::default());
        assert!(
            matches!(e, InspectError::Malformed { offset: 2, .. }),
            "{e}"
        );
    }
}

#[test]
fn deep_nesting_is_refused() {
    // A graph input's type nested 300 sequences deep: prost's own limit.
    let mut ty = tensor_type(1, &[Some("1")]);
    for _ in 0..300 {
        ty = pb::TypeProto {
            value: Some(pb::type_proto::Value::SequenceType(Box::new(
                pb::type_proto::Sequence {
                    elem_type: Some(Box::new(ty)),
                },
            ))),
            denotation: None,
        };
    }
    let mut m = sample();
    m.graph.as_mut().unwrap().input[0].r#type = Some(ty);
    let e = error_of(&m.encode_to_vec(), Budget::default());
    assert!(
        matches!(&e, InspectError::Malformed { what, .. } if what.contains("graph input") && what.contains("recursion")),
        "{e}"
    );
    // 20 deep is within prost's limit but not within a budget of 10.
    let mut ty = tensor_type(1, &[Some("1")]);
    for _ in 0..20 {
        ty = pb::TypeProto {
            value: Some(pb::type_proto::Value::OptionalType(Box::new(
                pb::type_proto::Optional {
                    elem_type: Some(Box::new(ty)),
                },
            ))),
            denotation: None,
        };
    }
    m.graph.as_mut().unwrap().input[0].r#type = Some(ty);
    let bytes = m.encode_to_vec();
    let ok = read(&bytes, Budget::default()).unwrap();
    assert_eq!(
        ok.onnx.unwrap().inputs[0].1,
        format!("{}float32[1]{}", "optional(".repeat(20), ")".repeat(20))
    );
    let small = Budget {
        max_depth: 10,
        ..Budget::default()
    };
    let e = error_of(&bytes, small);
    assert!(matches!(e, InspectError::TooDeep { max: 10, .. }), "{e}");
    // Groups nested 100,000 deep in an unknown field.
    let mut g = Vec::new();
    for _ in 0..100_000 {
        key(&mut g, 50, 3);
    }
    let e = error_of(&model_with_graph(&g), Budget::default());
    assert!(
        matches!(&e, InspectError::TooDeep { what, max: 256 } if what.contains("group")),
        "{e}"
    );
}

#[test]
fn tables_past_the_item_budget_are_refused() {
    let budget = Budget {
        max_items: 2,
        ..Budget::default()
    };
    let mut m = sample();
    m.graph.as_mut().unwrap().initializer[0].dims = vec![8, 27];
    let e = error_of(&m.encode_to_vec(), budget);
    assert!(
        matches!(&e, InspectError::TooMany { what, count: 3, max: 2 } if what == "initializers"),
        "{e}"
    );
    m.graph.as_mut().unwrap().initializer.truncate(1);
    m.graph.as_mut().unwrap().initializer[0].dims = vec![1, 2, 3];
    let e = error_of(&m.encode_to_vec(), budget);
    assert!(
        matches!(&e, InspectError::TooMany { what, .. } if what == "dims"),
        "{e}"
    );
}

#[test]
fn long_strings_are_cut_not_kept_whole() {
    let mut m = sample();
    m.metadata_props
        .push(entry("labels", &"cat,dog,".repeat(100_000)));
    m.graph.as_mut().unwrap().name = Some("g".repeat(10_000));
    let report = read(&m.encode_to_vec(), Budget::default()).unwrap();
    let labels = &report.metadata["labels"];
    assert!(
        labels.len() < 600 && labels.ends_with('…'),
        "{}",
        labels.len()
    );
    assert!(report.name.len() < 4200 && report.name.ends_with('…'));
}

#[test]
fn hostile_inputs_never_panic() {
    // Every byte of the sample set to a few interesting values in turn.
    let bytes = sample_model();
    let budget = Budget {
        max_bytes: 1 << 20,
        max_time: Duration::from_secs(1),
        max_items: 1 << 12,
        max_depth: 32,
    };
    for i in 0..bytes.len() {
        for v in [0x00, 0x7f, 0x80, 0xff, 0x0a, 0x0b, 0x0c] {
            let mut b = bytes.clone();
            b[i] = v;
            let r = std::panic::catch_unwind(|| read(&b, budget).map(|_| ()));
            assert!(r.is_ok(), "panicked with byte {i} set to {v:#x}");
        }
    }
}

/// The Python that writes models with the real `onnx` package.
const WRITE_WITH_ONNX: &str = r#"
import sys
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "conv.weight")
b = numpy_helper.from_array(np.zeros((8,), np.float32), "conv.bias")
x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 8, None, None])
conv = helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], pads=[1, 1, 1, 1])
relu = helper.make_node("Relu", ["c"], ["output"])
graph = helper.make_graph([conv, relu], "tiny_cnn", [x], [y], [w, b])
model = helper.make_model(
    graph,
    producer_name="vigil-test",
    producer_version="1.0",
    opset_imports=[helper.make_opsetid("", 17)],
)
model.ir_version = 8
helper.set_model_props(model, {"model_type": "cnn", "author": "vigil"})
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1])
onnx.save_model(
    model,
    sys.argv[2],
    save_as_external_data=True,
    all_tensors_to_one_file=True,
    location="weights.bin",
    size_threshold=0,
)
print(onnx.__version__)
"#;

/// Models written by the real `onnx` package, where it is installed: the
/// Python is `$VIGIL_TEST_PYTHON` (a venv with `onnx` and `numpy`), else
/// `python3`. Skipped, saying why, where it is not.
#[test]
fn models_written_by_the_onnx_package() {
    let python = std::env::var("VIGIL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = std::env::temp_dir().join(format!("vigil-onnx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (inline, external) = (dir.join("inline.onnx"), dir.join("external.onnx"));
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(WRITE_WITH_ONNX)
        .arg(&inline)
        .arg(&external)
        .output();
    let version = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => {
            eprintln!(
                "skipped: {python} could not write models with the onnx package: {}",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
        Err(e) => {
            eprintln!("skipped: no {python} to run the onnx package ({e})");
            let _ = std::fs::remove_dir_all(&dir);
            return;
        }
    };
    eprintln!("onnx {version}");
    let open = |p: &std::path::Path| std::fs::File::open(p).unwrap();
    let report = inspect(open(&inline), Budget::default(), Some("inline.onnx")).unwrap();
    let d = report.onnx.as_ref().unwrap();
    assert_eq!(report.format_version, "8");
    assert_eq!(d.producer_name, "vigil-test");
    assert_eq!(d.producer_version, "1.0");
    assert_eq!(d.opsets.get(""), Some(&17));
    assert_eq!(d.graph_name, "tiny_cnn");
    assert_eq!(d.node_count, 2);
    assert_eq!(
        d.inputs,
        [("input".to_string(), "float32[batch,3,32,32]".to_string())]
    );
    assert_eq!(
        d.outputs,
        [("output".to_string(), "float32[batch,8,?,?]".to_string())]
    );
    assert!(!d.external_data);
    assert_eq!(report.architecture, "cnn");
    assert_eq!(report.metadata["author"], "vigil");
    assert_eq!(report.parameters, 216 + 8);
    let shapes: Vec<_> = report
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice(), t.dtype.as_str()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("conv.weight", &[8u64, 3, 3, 3][..], "float32"),
            ("conv.bias", &[8][..], "float32")
        ]
    );
    let ext = inspect(open(&external), Budget::default(), Some("external.onnx")).unwrap();
    assert!(ext.onnx.as_ref().unwrap().external_data);
    assert_eq!(ext.structure_fingerprint, report.structure_fingerprint);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fuzz_onnx() {
    let mut with_external = sample();
    let g = with_external.graph.as_mut().unwrap();
    g.initializer[0].data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    g.sparse_initializer.push(pb::SparseTensorProto {
        values: Some(initializer("sparse.values", &[2], 1, 8)),
        indices: None,
        dims: vec![4],
    });
    let seeds = vec![sample_model(), with_external.encode_to_vec()];
    crate::fuzz_tests::fuzz("onnx", "m.onnx", &seeds);
}
