//! Small ONNX models written in code, for tests and benchmarks: a
//! `ModelProto` built with the prost types of ONNX's own schema and
//! encoded. No Python, no files to keep in the repository.

use prost::Message;

use crate::datatype::Datatype;

/// The prost types of `onnx.proto` (package `onnx`).
#[allow(clippy::all, clippy::pedantic)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use pb::tensor_shape_proto::{dimension, Dimension};
use pb::type_proto;

/// The ONNX IR version and default-domain opset the models declare
/// (ONNX Runtime 1.24+ reads both).
const IR_VERSION: i64 = 9;
const OPSET: i64 = 17;

/// The domain of the functions a model defines.
const FUNCTION_DOMAIN: &str = "vigil.test";

/// A tensor whose data is in the file `location` (ONNX's external data).
fn external_tensor(
    name: &str,
    datatype: Datatype,
    dims: &[i64],
    location: &str,
) -> pb::TensorProto {
    let entry = |key: &str, value: String| pb::StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value),
    };
    let length = dims.iter().product::<i64>() as usize * datatype.element_bytes();
    pb::TensorProto {
        name: Some(name.to_string()),
        dims: dims.to_vec(),
        data_type: Some(elem_type(datatype)),
        data_location: Some(pb::tensor_proto::DataLocation::External as i32),
        external_data: vec![
            entry("location", location.to_string()),
            entry("offset", "0".to_string()),
            entry("length", length.to_string()),
        ],
        ..Default::default()
    }
}

/// A `Constant` node `-> output` with an external-data `value`.
fn external_constant(
    output: &str,
    datatype: Datatype,
    dims: &[i64],
    location: &str,
) -> pb::NodeProto {
    pb::NodeProto {
        name: Some(format!("Constant_{output}")),
        op_type: Some("Constant".to_string()),
        output: vec![output.to_string()],
        attribute: vec![pb::AttributeProto {
            name: Some("value".to_string()),
            r#type: Some(pb::attribute_proto::AttributeType::Tensor as i32),
            t: Some(external_tensor(output, datatype, dims, location)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A dimension of an input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    /// A dynamic dimension with its symbolic name (`batch`).
    Dynamic(&'static str),
}

/// The ONNX element type of a datatype.
fn elem_type(datatype: Datatype) -> i32 {
    use pb::tensor_proto::DataType;
    let ty = match datatype {
        Datatype::Bool => DataType::Bool,
        Datatype::Uint8 => DataType::Uint8,
        Datatype::Uint16 => DataType::Uint16,
        Datatype::Uint32 => DataType::Uint32,
        Datatype::Uint64 => DataType::Uint64,
        Datatype::Int8 => DataType::Int8,
        Datatype::Int16 => DataType::Int16,
        Datatype::Int32 => DataType::Int32,
        Datatype::Int64 => DataType::Int64,
        Datatype::Fp16 => DataType::Float16,
        Datatype::Bf16 => DataType::Bfloat16,
        Datatype::Fp32 => DataType::Float,
        Datatype::Fp64 => DataType::Double,
    };
    ty as i32
}

fn value_info(name: &str, datatype: Datatype, dims: &[Dim]) -> pb::ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            denotation: None,
            value: Some(match d {
                Dim::Fixed(n) => dimension::Value::DimValue(*n),
                Dim::Dynamic(s) => dimension::Value::DimParam((*s).to_string()),
            }),
        })
        .collect();
    pb::ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(pb::TypeProto {
            denotation: None,
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type(datatype)),
                shape: Some(pb::TensorShapeProto { dim }),
            })),
        }),
        ..Default::default()
    }
}

/// A model under construction: inputs, outputs, constant tensors and
/// nodes of the default ONNX domain.
#[derive(Debug, Default, Clone)]
pub struct ModelBuilder {
    graph: pb::GraphProto,
    functions: Vec<pb::FunctionProto>,
}

impl ModelBuilder {
    pub fn new(graph_name: &str) -> ModelBuilder {
        ModelBuilder {
            graph: pb::GraphProto {
                name: Some(graph_name.to_string()),
                ..Default::default()
            },
            functions: Vec::new(),
        }
    }

    pub fn input(mut self, name: &str, datatype: Datatype, dims: &[Dim]) -> Self {
        self.graph.input.push(value_info(name, datatype, dims));
        self
    }

    pub fn output(mut self, name: &str, datatype: Datatype, dims: &[Dim]) -> Self {
        self.graph.output.push(value_info(name, datatype, dims));
        self
    }

    /// A constant FP32 tensor.
    pub fn constant_f32(mut self, name: &str, dims: &[i64], values: &[f32]) -> Self {
        self.graph.initializer.push(pb::TensorProto {
            name: Some(name.to_string()),
            dims: dims.to_vec(),
            data_type: Some(elem_type(Datatype::Fp32)),
            float_data: values.to_vec(),
            ..Default::default()
        });
        self
    }

    /// A constant INT64 tensor.
    pub fn constant_i64(mut self, name: &str, dims: &[i64], values: &[i64]) -> Self {
        self.graph.initializer.push(pb::TensorProto {
            name: Some(name.to_string()),
            dims: dims.to_vec(),
            data_type: Some(elem_type(Datatype::Int64)),
            int64_data: values.to_vec(),
            ..Default::default()
        });
        self
    }

    /// A node `op_type(inputs) -> outputs` without attributes.
    pub fn node(mut self, op_type: &str, inputs: &[&str], outputs: &[&str]) -> Self {
        let name = format!("{op_type}_{}", self.graph.node.len());
        self.graph.node.push(pb::NodeProto {
            name: Some(name),
            op_type: Some(op_type.to_string()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
        self
    }

    /// A constant tensor whose data is in an external file at `location`
    /// (`data_location` EXTERNAL): what the sidecar refuses to serve.
    pub fn external_initializer(
        mut self,
        name: &str,
        datatype: Datatype,
        dims: &[i64],
        location: &str,
    ) -> Self {
        self.graph
            .initializer
            .push(external_tensor(name, datatype, dims, location));
        self
    }

    /// A `Constant` node `-> output` whose `value` attribute is an
    /// external-data tensor.
    pub fn external_constant_node(
        mut self,
        output: &str,
        datatype: Datatype,
        dims: &[i64],
        location: &str,
    ) -> Self {
        self.graph
            .node
            .push(external_constant(output, datatype, dims, location));
        self
    }

    /// An `If(cond) -> output` node whose `then_branch` holds an
    /// external-data initializer `output` of `datatype`/`dims` and whose
    /// `else_branch` a self-contained zero of the same.
    pub fn if_with_external_branch(
        mut self,
        cond: &str,
        output: &str,
        datatype: Datatype,
        dims: &[i64],
        location: &str,
    ) -> Self {
        let fixed: Vec<Dim> = dims.iter().map(|d| Dim::Fixed(*d)).collect();
        let branch = |name: &str, tensor: pb::TensorProto| pb::GraphProto {
            name: Some(name.to_string()),
            initializer: vec![tensor],
            output: vec![value_info(output, datatype, &fixed)],
            ..Default::default()
        };
        let zero = pb::TensorProto {
            name: Some(output.to_string()),
            dims: dims.to_vec(),
            data_type: Some(elem_type(datatype)),
            raw_data: Some(vec![
                0;
                dims.iter().product::<i64>() as usize
                    * datatype.element_bytes()
            ]),
            ..Default::default()
        };
        let graph_attribute = |name: &str, g: pb::GraphProto| pb::AttributeProto {
            name: Some(name.to_string()),
            r#type: Some(pb::attribute_proto::AttributeType::Graph as i32),
            g: Some(g),
            ..Default::default()
        };
        self.graph.node.push(pb::NodeProto {
            name: Some(format!("If_{}", self.graph.node.len())),
            op_type: Some("If".to_string()),
            input: vec![cond.to_string()],
            output: vec![output.to_string()],
            attribute: vec![
                graph_attribute(
                    "then_branch",
                    branch("then", external_tensor(output, datatype, dims, location)),
                ),
                graph_attribute("else_branch", branch("else", zero)),
            ],
            ..Default::default()
        });
        self
    }

    /// A local function `vigil.test.Leak() -> out` whose body is a
    /// `Constant` with an external-data tensor, and a node calling it
    /// `-> output`.
    pub fn function_with_external_constant(
        mut self,
        output: &str,
        datatype: Datatype,
        dims: &[i64],
        location: &str,
    ) -> Self {
        self.functions.push(pb::FunctionProto {
            name: Some("Leak".to_string()),
            domain: Some(FUNCTION_DOMAIN.to_string()),
            output: vec!["out".to_string()],
            node: vec![external_constant("out", datatype, dims, location)],
            opset_import: vec![pb::OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(OPSET),
            }],
            ..Default::default()
        });
        self.graph.node.push(pb::NodeProto {
            name: Some(format!("Leak_{}", self.graph.node.len())),
            op_type: Some("Leak".to_string()),
            domain: Some(FUNCTION_DOMAIN.to_string()),
            output: vec![output.to_string()],
            ..Default::default()
        });
        self
    }

    /// The encoded model.
    pub fn build(self) -> Vec<u8> {
        let mut opset_import = vec![pb::OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }];
        if !self.functions.is_empty() {
            opset_import.push(pb::OperatorSetIdProto {
                domain: Some(FUNCTION_DOMAIN.to_string()),
                version: Some(1),
            });
        }
        pb::ModelProto {
            ir_version: Some(IR_VERSION),
            opset_import,
            functions: self.functions,
            producer_name: Some("vigil-sidecar onnx_builder".to_string()),
            graph: Some(self.graph),
            ..Default::default()
        }
        .encode_to_vec()
    }
}

/// The weights of [`linear_fp32`]: `w` is `inputs × outputs`, row-major.
pub fn linear_weights(inputs: usize, outputs: usize, seed: u32) -> (Vec<f32>, Vec<f32>) {
    let w = (0..inputs * outputs)
        .map(|i| ((i as u32 * 7 + seed * 13) % 11) as f32 * 0.25 - 1.25)
        .collect();
    let b = (0..outputs)
        .map(|j| ((j as u32 + seed) % 5) as f32 * 0.5 - 1.0)
        .collect();
    (w, b)
}

/// `y = x · W + b`: input `x` FP32 `[batch, inputs]`, output `y` FP32
/// `[batch, outputs]`, weights from [`linear_weights`] (a different `seed`
/// is a different model).
pub fn linear_fp32(inputs: usize, outputs: usize, seed: u32) -> Vec<u8> {
    let (w, b) = linear_weights(inputs, outputs, seed);
    let (k, n) = (inputs as i64, outputs as i64);
    ModelBuilder::new("linear")
        .input("x", Datatype::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(k)])
        .output("y", Datatype::Fp32, &[Dim::Dynamic("batch"), Dim::Fixed(n)])
        .constant_f32("w", &[k, n], &w)
        .constant_f32("b", &[n], &b)
        .node("MatMul", &["x", "w"], &["xw"])
        .node("Add", &["xw", "b"], &["y"])
        .build()
}

/// `y = x * 2`: input `x` INT64 `[batch, 4]`, output `y` INT64 `[batch, 4]`.
pub fn doubler_int64() -> Vec<u8> {
    ModelBuilder::new("doubler")
        .input(
            "x",
            Datatype::Int64,
            &[Dim::Dynamic("batch"), Dim::Fixed(4)],
        )
        .output(
            "y",
            Datatype::Int64,
            &[Dim::Dynamic("batch"), Dim::Fixed(4)],
        )
        .constant_i64("two", &[1], &[2])
        .node("Mul", &["x", "two"], &["y"])
        .build()
}

/// `y = x` for one datatype: input `x` `[batch, 3]`, output `y`.
pub fn identity(datatype: Datatype) -> Vec<u8> {
    let dims = [Dim::Dynamic("batch"), Dim::Fixed(3)];
    ModelBuilder::new("identity")
        .input("x", datatype, &dims)
        .output("y", datatype, &dims)
        .node("Identity", &["x"], &["y"])
        .build()
}

/// Two inputs and two outputs, FP32 `[batch, 3]`: `sum = a + b` and
/// `difference = a - b`.
pub fn sum_and_difference() -> Vec<u8> {
    let dims = [Dim::Dynamic("batch"), Dim::Fixed(3)];
    ModelBuilder::new("sum_and_difference")
        .input("a", Datatype::Fp32, &dims)
        .input("b", Datatype::Fp32, &dims)
        .output("sum", Datatype::Fp32, &dims)
        .output("difference", Datatype::Fp32, &dims)
        .node("Add", &["a", "b"], &["sum"])
        .node("Sub", &["a", "b"], &["difference"])
        .build()
}
