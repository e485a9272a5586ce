//! Only self-contained ONNX models are served: a tensor may keep its data
//! outside the model (`TensorProto.data_location` EXTERNAL, `external_data`
//! naming a `location` file, or ONNX Runtime's in-memory address form),
//! which ONNX Runtime would read relative to the sidecar's working
//! directory (`/`): any file the sidecar may read, handed back as a
//! model's output. Such a model is refused before ONNX Runtime sees it.
//!
//! The model is decoded with a shallow schema: only the fields that lead
//! to a tensor, by their tags in ONNX's `onnx.proto` (vendored in
//! `modelinspect/proto/onnx/`); every other field (`raw_data`, the weights)
//! is skipped by prost without being copied. prost's recursion limit (100
//! nested messages) bounds nested graphs; a deeper model is refused.

use prost::Message;

use crate::bounded_text::cut;
use crate::served_model::LoadError;

/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// `ModelProto`: graph 7, training_info 20, functions 25.
#[derive(Clone, PartialEq, Message)]
struct Model {
    #[prost(message, optional, tag = "7")]
    graph: Option<Graph>,
    #[prost(message, repeated, tag = "20")]
    training_info: Vec<TrainingInfo>,
    #[prost(message, repeated, tag = "25")]
    functions: Vec<Function>,
}

/// `TrainingInfoProto`: initialization 1, algorithm 2.
#[derive(Clone, PartialEq, Message)]
struct TrainingInfo {
    #[prost(message, optional, tag = "1")]
    initialization: Option<Graph>,
    #[prost(message, optional, tag = "2")]
    algorithm: Option<Graph>,
}

/// `GraphProto`: node 1, name 2, initializer 5, sparse_initializer 15.
#[derive(Clone, PartialEq, Message)]
struct Graph {
    #[prost(message, repeated, tag = "1")]
    node: Vec<Node>,
    #[prost(bytes = "vec", optional, tag = "2")]
    name: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<Tensor>,
    #[prost(message, repeated, tag = "15")]
    sparse_initializer: Vec<SparseTensor>,
}

/// `FunctionProto`: node 7, attribute_proto 11 (attribute defaults).
#[derive(Clone, PartialEq, Message)]
struct Function {
    #[prost(message, repeated, tag = "7")]
    node: Vec<Node>,
    #[prost(message, repeated, tag = "11")]
    attribute_proto: Vec<Attribute>,
}

/// `NodeProto`: attribute 5.
#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<Attribute>,
}

/// `AttributeProto`: t 5, g 6, tensors 10, graphs 11, sparse_tensor 22,
/// sparse_tensors 23.
#[derive(Clone, PartialEq, Message)]
struct Attribute {
    #[prost(message, optional, boxed, tag = "5")]
    t: Option<Box<Tensor>>,
    #[prost(message, optional, boxed, tag = "6")]
    g: Option<Box<Graph>>,
    #[prost(message, repeated, tag = "10")]
    tensors: Vec<Tensor>,
    #[prost(message, repeated, tag = "11")]
    graphs: Vec<Graph>,
    #[prost(message, optional, boxed, tag = "22")]
    sparse_tensor: Option<Box<SparseTensor>>,
    #[prost(message, repeated, tag = "23")]
    sparse_tensors: Vec<SparseTensor>,
}

/// `SparseTensorProto`: values 1, indices 2.
#[derive(Clone, PartialEq, Message)]
struct SparseTensor {
    #[prost(message, optional, tag = "1")]
    values: Option<Tensor>,
    #[prost(message, optional, tag = "2")]
    indices: Option<Tensor>,
}

/// `TensorProto`: name 8, external_data 13, data_location 14.
#[derive(Clone, PartialEq, Message)]
struct Tensor {
    #[prost(bytes = "vec", optional, tag = "8")]
    name: Option<Vec<u8>>,
    #[prost(message, repeated, tag = "13")]
    external_data: Vec<StringStringEntry>,
    #[prost(int32, optional, tag = "14")]
    data_location: Option<i32>,
}

/// `StringStringEntryProto`: key 1, value 2.
#[derive(Clone, PartialEq, Message)]
struct StringStringEntry {
    #[prost(bytes = "vec", optional, tag = "1")]
    key: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "2")]
    value: Option<Vec<u8>>,
}

/// Text of a proto2 string field (ONNX does not insist on UTF-8), cut.
fn text(bytes: Option<&Vec<u8>>) -> String {
    cut(
        &String::from_utf8_lossy(bytes.map_or(&[][..], Vec::as_slice)),
        256,
    )
}

/// Why a model is not served as self-contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotSelfContained {
    /// Bytes that do not decode as an ONNX model (malformed, or nested
    /// deeper than the recursion limit, prost's and ONNX Runtime's both
    /// 100): ONNX Runtime could not load them either.
    Undecodable(String),
    /// An ONNX Runtime format model, or a tensor with external data.
    Refused(String),
}

impl From<NotSelfContained> for LoadError {
    fn from(e: NotSelfContained) -> LoadError {
        match e {
            NotSelfContained::Undecodable(reason) => LoadError::Runtime(reason),
            NotSelfContained::Refused(reason) => LoadError::Unservable(reason),
        }
    }
}

/// `Err` with the reason when `bytes` are not a self-contained ONNX model
/// protobuf: an ONNX Runtime format model, bytes that do not decode, a
/// model nested deeper than prost's recursion limit, or a tensor anywhere
/// (initializers, sparse initializers, node attributes, subgraphs,
/// functions, training graphs) whose data is external.
pub fn check(bytes: &[u8]) -> Result<(), NotSelfContained> {
    // ONNX Runtime's own format (a flatbuffer, "ORTM" at offset 4) is
    // loaded from bytes too; only ONNX protobuf models are checked here.
    if bytes.get(4..8) == Some(b"ORTM") {
        return Err(NotSelfContained::Refused(
            "it is an ONNX Runtime format model (.ort): only ONNX protobuf models are served"
                .to_string(),
        ));
    }
    let model = Model::decode(bytes).map_err(|e| {
        NotSelfContained::Undecodable(format!(
            "it does not decode as an ONNX model (nested too deeply, or malformed): {e}"
        ))
    })?;
    model_tensors(&model).map_err(NotSelfContained::Refused)
}

fn model_tensors(model: &Model) -> Result<(), String> {
    if let Some(graph) = &model.graph {
        graph_tensors(graph)?;
    }
    for info in &model.training_info {
        for graph in info.initialization.iter().chain(&info.algorithm) {
            graph_tensors(graph)?;
        }
    }
    for function in &model.functions {
        for node in &function.node {
            node_tensors(node)?;
        }
        for attribute in &function.attribute_proto {
            attribute_tensors(attribute)?;
        }
    }
    Ok(())
}

// The walk's depth is bounded by the decode's: prost refused anything
// nested deeper than its recursion limit.
fn graph_tensors(graph: &Graph) -> Result<(), String> {
    for tensor in &graph.initializer {
        self_contained(tensor)?;
    }
    for sparse in &graph.sparse_initializer {
        sparse_tensors(sparse)?;
    }
    for node in &graph.node {
        node_tensors(node)?;
    }
    Ok(())
}

fn node_tensors(node: &Node) -> Result<(), String> {
    node.attribute.iter().try_for_each(attribute_tensors)
}

fn attribute_tensors(attribute: &Attribute) -> Result<(), String> {
    for tensor in attribute.t.as_deref().into_iter().chain(&attribute.tensors) {
        self_contained(tensor)?;
    }
    for sparse in attribute
        .sparse_tensor
        .as_deref()
        .into_iter()
        .chain(&attribute.sparse_tensors)
    {
        sparse_tensors(sparse)?;
    }
    for graph in attribute.g.as_deref().into_iter().chain(&attribute.graphs) {
        graph_tensors(graph)?;
    }
    Ok(())
}

fn sparse_tensors(sparse: &SparseTensor) -> Result<(), String> {
    for tensor in sparse.values.iter().chain(&sparse.indices) {
        self_contained(tensor)?;
    }
    Ok(())
}

/// A tensor is self-contained unless its data location is EXTERNAL or it
/// has any `external_data` entry.
fn self_contained(tensor: &Tensor) -> Result<(), String> {
    if tensor.data_location != Some(EXTERNAL) && tensor.external_data.is_empty() {
        return Ok(());
    }
    let location = tensor
        .external_data
        .iter()
        .find(|e| e.key.as_deref() == Some(b"location"))
        .map_or_else(
            || "no location given".to_string(),
            |e| format!("{:?}", text(e.value.as_ref())),
        );
    Err(format!(
        "tensor {:?} keeps its data in an external file ({location}): only self-contained models are served",
        text(tensor.name.as_ref())
    ))
}

#[cfg(test)]
#[path = "self_contained_tests.rs"]
mod tests;
