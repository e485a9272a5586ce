//! A `ModelInferRequest` checked against the model it names, before
//! anything is allocated or handed to ONNX Runtime: every input the model
//! has, given once, with the model's datatype and a shape its dimensions
//! allow; element counts computed with checked arithmetic and compared
//! with the bytes or values that arrived; requested outputs known and
//! given once. Each refusal names the input or output and what was
//! expected.

use std::collections::HashSet;

use vigil_proto::kserve::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use vigil_proto::kserve::{InferParameter, InferTensorContents, ModelInferRequest};

use crate::bounded_text::cut;
use crate::datatype::Datatype;
use crate::infer_error::InferError;
use crate::tensor_data::TensorData;

/// Longest request-given name echoed back in an error.
const ECHO: usize = 256;

/// A model input or output as the model declares it; -1 marks a dynamic
/// dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<i64>,
}

/// One input, checked and decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

/// A request the model can run: its inputs in the model's order, and the
/// outputs to return (indexes into the model's outputs, in the order
/// requested; every output when the request names none).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRequest {
    pub inputs: Vec<CheckedInput>,
    pub outputs: Vec<usize>,
    /// True when the request named no outputs (all are returned).
    pub all_outputs: bool,
}

/// `shape` written `[1,3]`.
pub fn shape_text(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", dims.join(","))
}

/// Parameters that ask for what the sidecar does not do.
fn refuse_unsupported_parameters(
    what: &str,
    parameters: &std::collections::HashMap<String, InferParameter>,
) -> Result<(), InferError> {
    for key in [
        "shared_memory_region",
        "shared_memory_byte_size",
        "shared_memory_offset",
    ] {
        if parameters.contains_key(key) {
            return Err(InferError::invalid(format!(
                "{what}: shared memory is not supported; send the tensor in the request"
            )));
        }
    }
    if parameters.contains_key("classification") {
        return Err(InferError::invalid(format!(
            "{what}: classification outputs are not supported"
        )));
    }
    Ok(())
}

impl CheckedRequest {
    /// Checks `request` against a model with `inputs` and `outputs`.
    pub fn check(
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        request: &ModelInferRequest,
    ) -> Result<CheckedRequest, InferError> {
        let raw = &request.raw_input_contents;
        if !raw.is_empty() && raw.len() != request.inputs.len() {
            return Err(InferError::invalid(format!(
                "raw_input_contents has {} entries for {} inputs (send every input raw, in order, or none)",
                raw.len(),
                request.inputs.len()
            )));
        }
        let mut given: Vec<Option<CheckedInput>> = vec![None; inputs.len()];
        for (i, tensor) in request.inputs.iter().enumerate() {
            let Some(index) = inputs.iter().position(|spec| spec.name == tensor.name) else {
                let names: Vec<&str> = inputs.iter().map(|s| s.name.as_str()).collect();
                return Err(InferError::invalid(format!(
                    "input {:?} is not an input of model {:?} (its inputs: {})",
                    cut(&tensor.name, ECHO),
                    cut(&request.model_name, ECHO),
                    names.join(", ")
                )));
            };
            if given[index].is_some() {
                return Err(InferError::invalid(format!(
                    "input {:?} is given twice",
                    tensor.name
                )));
            }
            given[index] = Some(check_input(
                &inputs[index],
                tensor,
                raw.get(i).map(|b| &b[..]),
            )?);
        }
        let mut checked = Vec::with_capacity(inputs.len());
        for (spec, input) in inputs.iter().zip(given) {
            match input {
                Some(input) => checked.push(input),
                None => {
                    return Err(InferError::invalid(format!(
                        "input {:?} is missing (the model takes {} {})",
                        spec.name,
                        spec.datatype,
                        shape_text(&spec.shape)
                    )))
                }
            }
        }
        let (outputs, all_outputs) = check_outputs(outputs, &request.outputs)?;
        Ok(CheckedRequest {
            inputs: checked,
            outputs,
            all_outputs,
        })
    }
}

/// One input against its spec; `raw` is its `raw_input_contents` entry
/// when the request sends inputs raw.
fn check_input(
    spec: &TensorSpec,
    tensor: &InferInputTensor,
    raw: Option<&[u8]>,
) -> Result<CheckedInput, InferError> {
    let what = format!("input {:?}", spec.name);
    refuse_unsupported_parameters(&what, &tensor.parameters)?;
    let datatype = Datatype::from_kserve(&tensor.datatype)
        .map_err(|e| InferError::invalid(format!("{what}: {e}")))?;
    if datatype != spec.datatype {
        return Err(InferError::invalid(format!(
            "{what}: datatype {datatype} does not match the model's {}",
            spec.datatype
        )));
    }
    let shape = &tensor.shape;
    let shape_shown = cut(&shape_text(shape), ECHO);
    if shape.iter().any(|d| *d < 0) {
        return Err(InferError::invalid(format!(
            "{what}: shape {shape_shown} has a negative dimension"
        )));
    }
    let fits = shape.len() == spec.shape.len()
        && shape
            .iter()
            .zip(&spec.shape)
            .all(|(given, declared)| *declared < 0 || given == declared);
    if !fits {
        return Err(InferError::invalid(format!(
            "{what}: shape {shape_shown} does not match the model's {}",
            shape_text(&spec.shape)
        )));
    }
    let count = element_count(shape).ok_or_else(|| {
        InferError::invalid(format!(
            "{what}: shape {shape_shown} has more elements than can be addressed"
        ))
    })?;
    let size = datatype.element_bytes();
    let data = match raw {
        Some(raw) => {
            if tensor.contents.as_ref().is_some_and(has_values) {
                return Err(InferError::invalid(format!(
                    "{what}: both raw_input_contents and contents are given; send one"
                )));
            }
            let expected = count.checked_mul(size).ok_or_else(|| {
                InferError::invalid(format!(
                    "{what}: shape {shape_shown} has more bytes than can be addressed"
                ))
            })?;
            if raw.len() != expected {
                let held = if raw.len() % size == 0 {
                    format!("{} ({datatype}, {} bytes)", raw.len() / size, raw.len())
                } else {
                    format!(
                        "{} bytes, not a whole number of {datatype} elements ({size} bytes each)",
                        raw.len()
                    )
                };
                return Err(InferError::invalid(format!(
                    "{what}: shape {shape_shown} has {count} elements, raw contents hold {held}"
                )));
            }
            TensorData::from_le_bytes(datatype, raw)
        }
        None => {
            let empty = InferTensorContents::default();
            let contents = tensor.contents.as_ref().unwrap_or(&empty);
            let (Some(held), Some(field)) = (
                TensorData::contents_len(datatype, contents),
                datatype.contents_field(),
            ) else {
                return Err(InferError::invalid(format!(
                    "{what}: {datatype} has no typed contents field; send it in raw_input_contents"
                )));
            };
            if held != count {
                return Err(InferError::invalid(format!(
                    "{what}: shape {shape_shown} has {count} elements, {field} hold {held}"
                )));
            }
            TensorData::from_contents(datatype, contents)
                .map_err(|e| InferError::invalid(format!("{what}: {e}")))?
        }
    };
    Ok(CheckedInput {
        name: spec.name.clone(),
        shape: shape.clone(),
        data,
    })
}

/// Elements in a tensor of `shape`: 0 when any dimension is 0, else the
/// product, or None when it overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    if shape.contains(&0) {
        return Some(0);
    }
    shape.iter().try_fold(1usize, |n, d| {
        usize::try_from(*d).ok().and_then(|d| n.checked_mul(d))
    })
}

/// Whether typed contents carry any value at all.
fn has_values(c: &InferTensorContents) -> bool {
    !(c.bool_contents.is_empty()
        && c.int_contents.is_empty()
        && c.int64_contents.is_empty()
        && c.uint_contents.is_empty()
        && c.uint64_contents.is_empty()
        && c.fp32_contents.is_empty()
        && c.fp64_contents.is_empty()
        && c.bytes_contents.is_empty())
}

/// The requested outputs as indexes into the model's, or all of them.
fn check_outputs(
    outputs: &[TensorSpec],
    requested: &[InferRequestedOutputTensor],
) -> Result<(Vec<usize>, bool), InferError> {
    if requested.is_empty() {
        return Ok(((0..outputs.len()).collect(), true));
    }
    let mut seen = HashSet::new();
    let mut indexes = Vec::with_capacity(requested.len());
    for wanted in requested {
        let Some(index) = outputs.iter().position(|o| o.name == wanted.name) else {
            let names: Vec<&str> = outputs.iter().map(|s| s.name.as_str()).collect();
            return Err(InferError::invalid(format!(
                "output {:?} is not an output of the model (its outputs: {})",
                cut(&wanted.name, ECHO),
                names.join(", ")
            )));
        };
        let what = format!("output {:?}", outputs[index].name);
        if !seen.insert(index) {
            return Err(InferError::invalid(format!("{what} is requested twice")));
        }
        refuse_unsupported_parameters(&what, &wanted.parameters)?;
        indexes.push(index);
    }
    Ok((indexes, false))
}

#[cfg(test)]
#[path = "inference_request_tests.rs"]
mod tests;
