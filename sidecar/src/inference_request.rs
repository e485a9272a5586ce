//! A `ModelInferRequest` checked against the model it names, before
//! anything is allocated or handed to ONNX Runtime: every input the model
//! has, given once, with the model's datatype and a shape its dimensions
//! allow; element counts computed with checked arithmetic and compared
//! with the bytes or values that arrived; requested outputs known and
//! given once. Each refusal names the input or output and what was
//! expected.

use std::collections::HashSet;

use vigil_proto::kserve::infer_parameter::ParameterChoice;
use vigil_proto::kserve::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use vigil_proto::kserve::{InferParameter, InferTensorContents, ModelInferRequest};

use crate::bounded_text::cut;
use crate::datatype::Datatype;
use crate::infer_error::InferError;
use crate::shared_memory::{ShmError, ShmScope, ShmSlice};
use crate::tensor_data::{read_le_with, ShmTensorError, TensorData};

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
    /// For each of `outputs`, where in shared memory it goes, if it goes
    /// there rather than in the response.
    pub output_shm: Vec<Option<ShmSlice>>,
    /// True when the request named no outputs (all are returned).
    pub all_outputs: bool,
}

/// The shared-memory parameters of a tensor.
const SHM_PARAMETERS: [&str; 3] = [
    "shared_memory_region",
    "shared_memory_byte_size",
    "shared_memory_offset",
];

/// Where a tensor's parameters place it in shared memory: region name,
/// offset, byte size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ShmPlace {
    region: String,
    offset: u64,
    byte_size: u64,
}

/// The shared-memory place `parameters` give, or None when they name no
/// region; a parameter of the wrong type or a negative number is refused.
fn shm_place(
    what: &str,
    parameters: &std::collections::HashMap<String, InferParameter>,
) -> Result<Option<ShmPlace>, InferError> {
    if !SHM_PARAMETERS.iter().any(|k| parameters.contains_key(*k)) {
        return Ok(None);
    }
    let number = |key: &str| -> Result<Option<u64>, InferError> {
        match parameters
            .get(key)
            .and_then(|p| p.parameter_choice.as_ref())
        {
            None => Ok(None),
            Some(ParameterChoice::Int64Param(v)) => u64::try_from(*v)
                .map(Some)
                .map_err(|_| InferError::invalid(format!("{what}: {key} {v} is negative"))),
            Some(ParameterChoice::Uint64Param(v)) => Ok(Some(*v)),
            Some(_) => Err(InferError::invalid(format!(
                "{what}: {key} must be an integer"
            ))),
        }
    };
    let region = match parameters
        .get("shared_memory_region")
        .and_then(|p| p.parameter_choice.as_ref())
    {
        Some(ParameterChoice::StringParam(name)) => name.clone(),
        Some(_) => {
            return Err(InferError::invalid(format!(
                "{what}: shared_memory_region must be a string"
            )))
        }
        None => {
            return Err(InferError::invalid(format!(
                "{what}: shared_memory_byte_size or shared_memory_offset is given without \
                 shared_memory_region"
            )))
        }
    };
    let byte_size = number("shared_memory_byte_size")?.ok_or_else(|| {
        InferError::invalid(format!(
            "{what}: shared_memory_region is given without shared_memory_byte_size"
        ))
    })?;
    let offset = number("shared_memory_offset")?.unwrap_or(0);
    Ok(Some(ShmPlace {
        region,
        offset,
        byte_size,
    }))
}

/// `place` as a slice of one of the caller's regions.
fn shm_slice(
    what: &str,
    place: &ShmPlace,
    shm: Option<ShmScope<'_>>,
) -> Result<ShmSlice, InferError> {
    let Some(scope) = shm else {
        return Err(InferError::invalid(format!(
            "{what}: shared memory is not available on this path; send the tensor in the request"
        )));
    };
    scope
        .memory
        .slice(scope.caller, &place.region, place.offset, place.byte_size)
        .map_err(|e| InferError::SharedMemory(prefixed(what, e)))
}

/// `error` with `what` in front of its message.
fn prefixed(what: &str, error: ShmError) -> ShmError {
    let text = |m: String| format!("{what}: {m}");
    match error {
        ShmError::Refused(m) => ShmError::Refused(text(m)),
        ShmError::Invalid(m) => ShmError::Invalid(text(m)),
        ShmError::NotFound(m) => ShmError::NotFound(text(m)),
        ShmError::AlreadyExists(m) => ShmError::AlreadyExists(text(m)),
        ShmError::Exhausted(m) => ShmError::Exhausted(text(m)),
    }
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
    if parameters.contains_key("classification") {
        return Err(InferError::invalid(format!(
            "{what}: classification outputs are not supported"
        )));
    }
    Ok(())
}

impl CheckedRequest {
    /// Checks `request` against a model with `inputs` and `outputs`, with
    /// no shared memory (a tensor placed there is refused).
    pub fn check(
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        request: &ModelInferRequest,
    ) -> Result<CheckedRequest, InferError> {
        CheckedRequest::check_with(inputs, outputs, request, None)
    }

    /// Checks `request`; tensors placed in shared memory are looked up
    /// among the caller's regions in `shm`, and inputs read from there
    /// (after their datatype, shape and byte size are checked).
    pub fn check_with(
        inputs: &[TensorSpec],
        outputs: &[TensorSpec],
        request: &ModelInferRequest,
        shm: Option<ShmScope<'_>>,
    ) -> Result<CheckedRequest, InferError> {
        // Inputs in shared memory have no raw_input_contents entry (as
        // Triton's clients send them): the entries are the other inputs',
        // in order.
        let mut places = Vec::with_capacity(request.inputs.len());
        for tensor in &request.inputs {
            let what = format!("input {:?}", cut(&tensor.name, ECHO));
            places.push(shm_place(&what, &tensor.parameters)?);
        }
        let in_request = places.iter().filter(|p| p.is_none()).count();
        let raw = &request.raw_input_contents;
        if !raw.is_empty() && raw.len() != in_request {
            return Err(InferError::invalid(format!(
                "raw_input_contents has {} entries for {} inputs sent in the request (send every \
                 such input raw, in order, or none)",
                raw.len(),
                in_request
            )));
        }
        let mut raw_index = 0;
        let mut shm_budget = shm.map_or(0, |s| s.memory.limits().max_input_bytes);
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
            let source = match &places[i] {
                Some(place) => Source::Shm(place, shm, &mut shm_budget),
                None => {
                    raw_index += 1;
                    match raw.get(raw_index - 1) {
                        Some(bytes) => Source::Raw(bytes),
                        None => Source::Contents,
                    }
                }
            };
            given[index] = Some(check_input(&inputs[index], tensor, source)?);
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
        let (outputs, output_shm, all_outputs) = check_outputs(outputs, &request.outputs, shm)?;
        Ok(CheckedRequest {
            inputs: checked,
            outputs,
            output_shm,
            all_outputs,
        })
    }
}

/// Where an input's elements come from.
enum Source<'a, 'b> {
    /// Its `raw_input_contents` entry.
    Raw(&'a [u8]),
    /// Its typed contents.
    Contents,
    /// Shared memory, with the bytes the request may still read from it.
    Shm(&'a ShmPlace, Option<ShmScope<'b>>, &'a mut u64),
}

/// One input against its spec, its elements from `source`.
fn check_input(
    spec: &TensorSpec,
    tensor: &InferInputTensor,
    source: Source<'_, '_>,
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
    let data = match source {
        Source::Shm(place, shm, budget) => {
            if tensor.contents.as_ref().is_some_and(has_values) {
                return Err(InferError::invalid(format!(
                    "{what}: both shared memory and contents are given; send one"
                )));
            }
            let expected = count
                .checked_mul(size)
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    InferError::invalid(format!(
                        "{what}: shape {shape_shown} has more bytes than can be addressed"
                    ))
                })?;
            if place.byte_size != expected {
                return Err(InferError::invalid(format!(
                    "{what}: shared_memory_byte_size is {}, but shape {shape_shown} of \
                     {datatype} takes {expected} bytes",
                    place.byte_size
                )));
            }
            let slice = shm_slice(&what, place, shm)?;
            *budget = budget.checked_sub(expected).ok_or_else(|| {
                InferError::SharedMemory(ShmError::Exhausted(format!(
                    "{what}: the request's inputs in shared memory are over the {} bytes a \
                     request may read (--max-request-bytes)",
                    shm.map_or(0, |s| s.memory.limits().max_input_bytes)
                )))
            })?;
            read_le_with(datatype, count, |buf| {
                slice.region.read_at(slice.offset, buf)
            })
            .map_err(|e| match e {
                ShmTensorError::Io(e) => InferError::SharedMemory(prefixed(&what, e)),
                other => InferError::invalid(format!("{what}: {other}")),
            })?
        }
        Source::Raw(raw) => {
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
        Source::Contents => {
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

/// The bytes `request`'s inputs take once checked and copied (or read
/// from shared memory): each input's elements (its shape) times its
/// datatype's size, the very buffer it becomes. An input the check will
/// refuse before any buffer is made (unknown datatype, negative or
/// unaddressable shape) counts 0; a sum past u64 is u64::MAX.
pub fn input_bytes(request: &ModelInferRequest) -> u64 {
    request.inputs.iter().fold(0u64, |sum, tensor| {
        let Ok(datatype) = Datatype::from_kserve(&tensor.datatype) else {
            return sum;
        };
        if tensor.shape.iter().any(|d| *d < 0) {
            return sum;
        }
        let Some(count) = element_count(&tensor.shape) else {
            return sum;
        };
        let bytes = (count as u64).saturating_mul(datatype.element_bytes() as u64);
        sum.saturating_add(bytes)
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

/// The requested outputs as indexes into the model's (or all of them),
/// and where each goes in shared memory, if it does. Two outputs placed
/// on the same bytes are refused; an output placed over an input's bytes
/// is allowed (inputs are read before the model runs).
type CheckedOutputs = (Vec<usize>, Vec<Option<ShmSlice>>, bool);

fn check_outputs(
    outputs: &[TensorSpec],
    requested: &[InferRequestedOutputTensor],
    shm: Option<ShmScope<'_>>,
) -> Result<CheckedOutputs, InferError> {
    if requested.is_empty() {
        return Ok((
            (0..outputs.len()).collect(),
            vec![None; outputs.len()],
            true,
        ));
    }
    let mut seen = HashSet::new();
    let mut indexes = Vec::with_capacity(requested.len());
    let mut places: Vec<Option<ShmSlice>> = Vec::with_capacity(requested.len());
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
        let place = match shm_place(&what, &wanted.parameters)? {
            Some(place) => {
                let slice = shm_slice(&what, &place, shm)?;
                if let Some(other) = places.iter().flatten().find(|o| o.overlaps(&slice)) {
                    return Err(InferError::invalid(format!(
                        "{what}: its shared memory overlaps another output's (region {:?}); \
                         give each output its own bytes",
                        other.region.name
                    )));
                }
                Some(slice)
            }
            None => None,
        };
        indexes.push(index);
        places.push(place);
    }
    Ok((indexes, places, false))
}

#[cfg(test)]
#[path = "inference_request_tests.rs"]
mod tests;
