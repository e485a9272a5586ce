use super::*;
use crate::datatype::Datatype;
use crate::model_identity::{ModelIdentity, Sha256Digest};
use crate::onnx_builder::{linear_fp32, Dim, ModelBuilder};
use crate::served_model::{LoadError, ServedModel};
use crate::session_settings::SessionSettings;
use crate::test_runtime::runtime;

fn load(bytes: &[u8]) -> Result<ServedModel, LoadError> {
    let identity = ModelIdentity::new("m", 1, Sha256Digest::of(bytes)).unwrap();
    ServedModel::load(runtime(), &SessionSettings::default(), identity, bytes)
}

fn refused(bytes: &[u8]) -> String {
    match load(bytes) {
        Err(LoadError::Unservable(reason)) => reason,
        other => panic!("not refused as unservable: {other:?}"),
    }
}

fn leak(name: &str, location: &str) -> String {
    format!(
        "tensor {name:?} keeps its data in an external file ({location:?}): only self-contained models are served"
    )
}

/// `y` FP32 `[4]` from a model with an input `x` it ignores.
fn model() -> ModelBuilder {
    ModelBuilder::new("leak")
        .input("x", Datatype::Fp32, &[Dim::Fixed(1)])
        .output("y", Datatype::Uint8, &[Dim::Fixed(16)])
}

#[test]
fn an_external_data_initializer_is_refused_by_name() {
    let bytes = model()
        .external_initializer("w", Datatype::Uint8, &[16], "var/lib/../../etc/shadow")
        .node("Identity", &["w"], &["y"])
        .build();
    assert_eq!(refused(&bytes), leak("w", "var/lib/../../etc/shadow"));
}

#[test]
fn an_external_tensor_in_an_if_branch_is_refused_by_name() {
    let bytes = ModelBuilder::new("leak")
        .input("c", Datatype::Bool, &[])
        .output("y", Datatype::Uint8, &[Dim::Fixed(16)])
        .if_with_external_branch("c", "y", Datatype::Uint8, &[16], "../etc/shadow")
        .build();
    assert_eq!(refused(&bytes), leak("y", "../etc/shadow"));
}

#[test]
fn an_external_tensor_in_a_function_is_refused_by_name() {
    let bytes = model()
        .function_with_external_constant("y", Datatype::Uint8, &[16], "etc/passwd")
        .build();
    assert_eq!(refused(&bytes), leak("out", "etc/passwd"));
}

#[test]
fn an_external_tensor_in_a_constant_attribute_is_refused_by_name() {
    let bytes = model()
        .external_constant_node("y", Datatype::Uint8, &[16], "proc/self/environ")
        .build();
    assert_eq!(refused(&bytes), leak("y", "proc/self/environ"));
}

fn external(name: &str, entries: &[(&str, &str)], location: Option<i32>) -> Tensor {
    Tensor {
        name: Some(name.as_bytes().to_vec()),
        external_data: entries
            .iter()
            .map(|(k, v)| StringStringEntry {
                key: Some(k.as_bytes().to_vec()),
                value: Some(v.as_bytes().to_vec()),
            })
            .collect(),
        data_location: location,
    }
}

fn plain(name: &str) -> Tensor {
    external(name, &[], None)
}

fn with_graph(graph: Graph) -> Vec<u8> {
    Model {
        graph: Some(graph),
        training_info: vec![],
        functions: vec![],
    }
    .encode_to_vec()
}

fn empty_graph() -> Graph {
    Graph {
        node: vec![],
        name: None,
        initializer: vec![],
        sparse_initializer: vec![],
    }
}

fn attribute() -> Attribute {
    Attribute {
        t: None,
        g: None,
        tensors: vec![],
        graphs: vec![],
        sparse_tensor: None,
        sparse_tensors: vec![],
    }
}

#[test]
fn every_place_a_tensor_can_be_is_looked_at() {
    let location = Some(EXTERNAL);
    let entry = [("location", "f")];
    let sparse = |values: Tensor, indices: Tensor| SparseTensor {
        values: Some(values),
        indices: Some(indices),
    };
    let node = |a: Attribute| Node { attribute: vec![a] };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            with_graph(Graph {
                sparse_initializer: vec![sparse(external("v", &entry, location), plain("i"))],
                ..empty_graph()
            }),
            "v",
        ),
        (
            with_graph(Graph {
                sparse_initializer: vec![sparse(plain("v"), external("i", &entry, location))],
                ..empty_graph()
            }),
            "i",
        ),
        (
            with_graph(Graph {
                node: vec![node(Attribute {
                    tensors: vec![plain("a"), external("b", &entry, location)],
                    ..attribute()
                })],
                ..empty_graph()
            }),
            "b",
        ),
        (
            with_graph(Graph {
                node: vec![node(Attribute {
                    sparse_tensor: Some(Box::new(sparse(external("s", &entry, None), plain("i")))),
                    ..attribute()
                })],
                ..empty_graph()
            }),
            "s",
        ),
        (
            with_graph(Graph {
                node: vec![node(Attribute {
                    sparse_tensors: vec![sparse(plain("v"), external("ss", &entry, location))],
                    ..attribute()
                })],
                ..empty_graph()
            }),
            "ss",
        ),
        (
            // A Loop/Scan body among `graphs`.
            with_graph(Graph {
                node: vec![node(Attribute {
                    graphs: vec![
                        empty_graph(),
                        Graph {
                            initializer: vec![external("body", &entry, location)],
                            ..empty_graph()
                        },
                    ],
                    ..attribute()
                })],
                ..empty_graph()
            }),
            "body",
        ),
        (
            Model {
                graph: None,
                training_info: vec![TrainingInfo {
                    initialization: None,
                    algorithm: Some(Graph {
                        initializer: vec![external("t", &entry, location)],
                        ..empty_graph()
                    }),
                }],
                functions: vec![],
            }
            .encode_to_vec(),
            "t",
        ),
        (
            Model {
                graph: None,
                training_info: vec![],
                functions: vec![Function {
                    node: vec![],
                    attribute_proto: vec![Attribute {
                        t: Some(Box::new(external("default", &entry, location))),
                        ..attribute()
                    }],
                }],
            }
            .encode_to_vec(),
            "default",
        ),
    ];
    for (bytes, name) in cases {
        assert_eq!(
            check(&bytes),
            Err(NotSelfContained::Refused(leak(name, "f"))),
            "{name}"
        );
    }
    // EXTERNAL without a location, and ONNX Runtime's in-memory address.
    let bare = with_graph(Graph {
        initializer: vec![external("w", &[], location)],
        ..empty_graph()
    });
    assert_eq!(
        check(&bare).unwrap_err(),
        NotSelfContained::Refused("tensor \"w\" keeps its data in an external file (no location given): only self-contained models are served".to_string())
    );
    let address = with_graph(Graph {
        initializer: vec![external(
            "w",
            &[("location", "*/_ORT_MEM_ADDR_/*"), ("offset", "4096")],
            location,
        )],
        ..empty_graph()
    });
    assert_eq!(
        check(&address),
        Err(NotSelfContained::Refused(leak("w", "*/_ORT_MEM_ADDR_/*")))
    );
}

#[test]
fn a_model_nested_past_the_recursion_limit_is_refused_not_a_crash() {
    let mut graph = empty_graph();
    for _ in 0..200 {
        graph = Graph {
            node: vec![Node {
                attribute: vec![Attribute {
                    g: Some(Box::new(graph)),
                    ..attribute()
                }],
            }],
            ..empty_graph()
        };
    }
    let reason = match load(&with_graph(graph)) {
        Err(LoadError::Runtime(reason)) => reason,
        other => panic!("not refused: {other:?}"),
    };
    assert!(
        reason
            .starts_with("it does not decode as an ONNX model (nested too deeply, or malformed): "),
        "{reason}"
    );
    assert!(reason.contains("recursion limit"), "{reason}");
}

#[test]
fn an_onnx_runtime_format_model_is_refused() {
    let mut bytes = vec![0u8; 64];
    bytes[4..8].copy_from_slice(b"ORTM");
    assert_eq!(
        refused(&bytes),
        "it is an ONNX Runtime format model (.ort): only ONNX protobuf models are served"
    );
}

#[test]
fn self_contained_models_still_load() {
    let bytes = linear_fp32(4, 3, 0);
    assert_eq!(check(&bytes), Ok(()));
    load(&bytes).unwrap();
    // The If model with both branches inline loads as well.
    let inline = ModelBuilder::new("if")
        .input("c", Datatype::Bool, &[])
        .output("y", Datatype::Fp32, &[Dim::Fixed(2)])
        .constant_f32("k", &[2], &[1.0, 2.0])
        .node("Identity", &["k"], &["y"])
        .build();
    load(&inline).unwrap();
}
