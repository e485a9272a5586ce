//! One model the sidecar serves: its identity, its inputs and outputs as
//! KServe datatypes and shapes, and the ONNX Runtime session that runs it.
//!
//! A model is built only from bytes that hash to its approved digest: the
//! hash is taken here, on the very bytes handed to ONNX Runtime.

use std::time::Instant;

use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session};
use ort::value::{DynValue, Outlet, ValueType};
use prost::bytes::Bytes;
use vigil_proto::kserve::model_infer_response::InferOutputTensor;
use vigil_proto::kserve::model_metadata_response::TensorMetadata;
use vigil_proto::kserve::{ModelInferRequest, ModelInferResponse, ModelMetadataResponse};

use crate::bounded_text::cut;
use crate::datatype::Datatype;
use crate::infer_error::InferError;
use crate::inference_request::{CheckedRequest, TensorSpec};
use crate::model_identity::{ModelIdentity, Sha256Digest};
use crate::ort_runtime::OrtRuntime;
use crate::session_runner::{RunError, SessionRunner};
use crate::session_settings::{build_session, SessionSettings};
use crate::shared_memory::{ShmError, ShmScope, ShmSlice};
use crate::tensor_data::{ort_value_le_bytes, write_le_with, ShmTensorError};

/// `platform` in model metadata, as Triton names ONNX Runtime models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Why a model was refused; the model it was to replace keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    #[error("its bytes hash to sha256 {actual}, not the approved {expected}")]
    DigestMismatch {
        expected: Sha256Digest,
        actual: Sha256Digest,
    },
    #[error("ONNX Runtime cannot load it: {0}")]
    Runtime(String),
    #[error("{0}")]
    Unservable(String),
    #[error("ONNX Runtime panicked while loading it")]
    Panicked,
}

/// A model ready to serve.
#[derive(Debug)]
pub struct ServedModel {
    pub identity: ModelIdentity,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Milliseconds from the bytes in memory to the session built
    /// (hashing included).
    pub load_ms: u64,
    /// ort's `Session::run` takes `&mut self`; requests take turns, here
    /// or on the model's runner thread.
    runner: SessionRunner,
}

/// A checked request's tensors, ready for the session.
struct SessionInput {
    inputs: Vec<(String, DynValue)>,
    /// Only the outputs asked for (ONNX Runtime prunes the graph to
    /// them); None: all.
    options: Option<RunOptions<HasSelectedOutputs>>,
}

/// Which outputs a request asked for, in its order (indexes into the
/// model's outputs), and where each goes: shared memory or the response.
struct OutputPlan {
    outputs: Vec<usize>,
    output_shm: Vec<Option<ShmSlice>>,
}

impl ServedModel {
    /// Hashes `bytes`, refuses them unless they hash to
    /// `identity.sha256`, and builds the session from those same bytes.
    pub fn load(
        runtime: &OrtRuntime,
        settings: &SessionSettings,
        identity: ModelIdentity,
        bytes: &[u8],
    ) -> Result<ServedModel, LoadError> {
        let started = Instant::now();
        let actual = Sha256Digest::of(bytes);
        if actual != identity.sha256 {
            return Err(LoadError::DigestMismatch {
                expected: identity.sha256,
                actual,
            });
        }
        // Before ONNX Runtime sees them: no tensor may read another file.
        crate::self_contained::check(bytes)?;
        // ort may panic on what it did not expect from a model's metadata;
        // a refusal, never the sidecar's end.
        let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let session = build_session(runtime, settings, bytes)
                .map_err(|e| LoadError::Runtime(cut(&e.0, 2048)))?;
            let inputs = specs("input", session.inputs())?;
            let outputs = specs("output", session.outputs())?;
            Ok::<_, LoadError>((session, inputs, outputs))
        }))
        .map_err(|_| LoadError::Panicked)??;
        let (session, inputs, outputs) = built;
        let runner = SessionRunner::start(session)
            .map_err(|e| LoadError::Runtime(format!("cannot start its runner thread: {e}")))?;
        Ok(ServedModel {
            identity,
            inputs,
            outputs,
            load_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            runner,
        })
    }

    /// KServe model metadata: the served version, the platform, inputs and
    /// outputs with their datatypes and shapes (-1: dynamic).
    pub fn metadata(&self) -> ModelMetadataResponse {
        let tensor = |s: &TensorSpec| TensorMetadata {
            name: s.name.clone(),
            datatype: s.datatype.kserve_name().to_string(),
            shape: s.shape.clone(),
        };
        ModelMetadataResponse {
            name: self.identity.name.clone(),
            versions: vec![self.identity.version.to_string()],
            platform: PLATFORM.to_string(),
            inputs: self.inputs.iter().map(tensor).collect(),
            outputs: self.outputs.iter().map(tensor).collect(),
        }
    }

    /// Whether a request is running on the session now or waiting for it.
    pub fn is_busy(&self) -> bool {
        self.runner.is_busy()
    }

    /// Runs `request` (already routed to this model): checks it, runs the
    /// session, returns the requested outputs as `raw_output_contents`.
    /// A tensor in shared memory is refused.
    pub fn infer(&self, request: &ModelInferRequest) -> Result<ModelInferResponse, InferError> {
        self.infer_with(request, None)
    }

    /// As [`ServedModel::infer`], with the caller's shared-memory regions:
    /// inputs placed there are read from them (one copy, into the buffer
    /// ONNX Runtime runs on), outputs placed there are written to them
    /// (one copy, from ONNX Runtime's buffer) and have an empty
    /// `raw_output_contents` entry (as Triton answers).
    pub fn infer_with(
        &self,
        request: &ModelInferRequest,
        shm: Option<ShmScope<'_>>,
    ) -> Result<ModelInferResponse, InferError> {
        let (input, plan) = self.prepare(request, shm)?;
        let values = self.runner.run_here(|session| input.run(session))?;
        self.respond(request, plan, values)
    }

    /// As [`ServedModel::infer_with`], awaiting the session without holding
    /// a thread while other requests have it (see [`SessionRunner::run`]).
    /// `hold` (the request's input-budget permit) is kept until the
    /// response is made, or the inputs were dropped unrun. Outputs to
    /// return in the response of more than `max_output_bytes` together
    /// are refused (RESOURCE_EXHAUSTED) before they are copied.
    pub async fn infer_async<H: Send + 'static>(
        &self,
        request: &ModelInferRequest,
        shm: Option<ShmScope<'_>>,
        hold: H,
        max_output_bytes: u64,
    ) -> Result<ModelInferResponse, InferError> {
        let (input, plan) = self.prepare(request, shm)?;
        let (values, hold) = self
            .runner
            .run(move |session| (input.run(session), hold))
            .await
            .map_err(|e| match e {
                RunError::QueueFull(_) => InferError::Busy(e.to_string()),
                RunError::Unloaded | RunError::Panicked => InferError::RuntimeFailed(e.to_string()),
            })?;
        let values = values?;
        plan.check_response_bytes(&self.outputs, &values, max_output_bytes)?;
        let response = self.respond(request, plan, values);
        drop(hold);
        response
    }

    /// Checks `request` against the model and builds its input tensors
    /// (the copies out of the request or shared memory).
    fn prepare(
        &self,
        request: &ModelInferRequest,
        shm: Option<ShmScope<'_>>,
    ) -> Result<(SessionInput, OutputPlan), InferError> {
        let checked = CheckedRequest::check_with(&self.inputs, &self.outputs, request, shm)?;
        let mut inputs: Vec<(String, DynValue)> = Vec::with_capacity(checked.inputs.len());
        for input in checked.inputs {
            let value = input
                .data
                .into_ort_value(input.shape)
                .map_err(InferError::from_runtime)?;
            inputs.push((input.name, value));
        }
        let options = if checked.all_outputs {
            None
        } else {
            let selector = checked
                .outputs
                .iter()
                .fold(OutputSelector::no_default(), |s, i| {
                    s.with(self.outputs[*i].name.as_str())
                });
            Some(
                RunOptions::new()
                    .map_err(InferError::from_runtime)?
                    .with_outputs(selector),
            )
        };
        Ok((
            SessionInput { inputs, options },
            OutputPlan {
                outputs: checked.outputs,
                output_shm: checked.output_shm,
            },
        ))
    }

    /// The response: each output asked for, in the response or written to
    /// its shared-memory place.
    fn respond(
        &self,
        request: &ModelInferRequest,
        plan: OutputPlan,
        mut values: Vec<(String, DynValue)>,
    ) -> Result<ModelInferResponse, InferError> {
        let mut response = ModelInferResponse {
            model_name: self.identity.name.clone(),
            model_version: self.identity.version.to_string(),
            id: request.id.clone(),
            ..Default::default()
        };
        for (index, place) in plan.outputs.into_iter().zip(plan.output_shm) {
            let name = &self.outputs[index].name;
            let at = values.iter().position(|(n, _)| n == name).ok_or_else(|| {
                InferError::RuntimeFailed(format!("ONNX Runtime returned no output {name:?}"))
            })?;
            let (_, value) = values.swap_remove(at);
            let (datatype, shape) = tensor_type(&value).ok_or_else(|| {
                InferError::RuntimeFailed(format!(
                    "output {name:?} is not a tensor the sidecar serves"
                ))
            })?;
            let raw = match place {
                Some(place) => {
                    write_to_shm(name, &value, datatype, &place)?;
                    Vec::new()
                }
                None => ort_value_le_bytes(&value, datatype).map_err(InferError::from_runtime)?,
            };
            response.outputs.push(InferOutputTensor {
                name: name.clone(),
                datatype: datatype.kserve_name().to_string(),
                shape,
                ..Default::default()
            });
            response.raw_output_contents.push(Bytes::from(raw));
        }
        Ok(response)
    }
}

impl SessionInput {
    /// Runs `session` on these inputs: the outputs it gave, by name, owned
    /// (so the next request may run while these are encoded).
    fn run(self, session: &mut Session) -> Result<Vec<(String, DynValue)>, InferError> {
        let results = match &self.options {
            None => session.run(self.inputs),
            Some(options) => session.run_with_options(self.inputs, options),
        }
        .map_err(InferError::from_runtime)?;
        Ok(results
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect())
    }
}

impl OutputPlan {
    /// Refuses outputs that would go in the response (not to shared
    /// memory) of more than `max` bytes together, before any is copied.
    fn check_response_bytes(
        &self,
        specs: &[TensorSpec],
        values: &[(String, DynValue)],
        max: u64,
    ) -> Result<(), InferError> {
        let mut total = 0u64;
        for (index, place) in self.outputs.iter().zip(&self.output_shm) {
            if place.is_some() {
                continue;
            }
            let name = &specs[*index].name;
            let Some((_, value)) = values.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let Some((datatype, shape)) = tensor_type(value) else {
                continue;
            };
            let elements = crate::inference_request::element_count(&shape).unwrap_or(usize::MAX);
            let bytes = (elements as u64).saturating_mul(datatype.element_bytes() as u64);
            total = total.saturating_add(bytes);
        }
        if total > max {
            return Err(InferError::Busy(format!(
                "the outputs take {total} bytes, over this sidecar's --max-response-bytes {max}; \
                 ask for fewer outputs or a smaller batch, or place them in shared memory"
            )));
        }
        Ok(())
    }
}

/// Writes output `name` into its shared-memory place, refusing a place
/// too small for it.
fn write_to_shm(
    name: &str,
    value: &DynValue,
    datatype: Datatype,
    place: &ShmSlice,
) -> Result<(), InferError> {
    let what = format!("output {name:?}");
    write_le_with(value, datatype, |bytes| {
        if bytes.len() as u64 > place.byte_size {
            return Err(ShmError::Invalid(format!(
                "{what} takes {} bytes, more than the {} of its shared_memory_byte_size",
                bytes.len(),
                place.byte_size
            )));
        }
        place
            .region
            .write_at(place.offset, bytes)
            .map_err(|e| ShmError::Invalid(format!("{what}: {e}")))
    })
    .map(|_| ())
    .map_err(|e| match e {
        ShmTensorError::Io(e) => InferError::SharedMemory(e),
        ShmTensorError::Runtime(m) => InferError::RuntimeFailed(format!("{what}: {m}")),
        ShmTensorError::Allocation(n) => {
            InferError::RuntimeFailed(format!("{what}: {n} elements do not fit in memory"))
        }
    })
}

/// The datatype and shape of a tensor value.
fn tensor_type(value: &DynValue) -> Option<(Datatype, Vec<i64>)> {
    match value.dtype() {
        ValueType::Tensor { ty, shape, .. } => Some((Datatype::from_ort(*ty)?, shape.to_vec())),
        _ => None,
    }
}

/// The inputs or outputs of a session as specs; a model with a
/// non-tensor one (sequence, map) or an element type KServe cannot carry
/// here (strings, 8-bit floats…) is refused.
fn specs(kind: &str, outlets: &[Outlet]) -> Result<Vec<TensorSpec>, LoadError> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => match Datatype::from_ort(*ty) {
                Some(datatype) => Ok(TensorSpec {
                    name: o.name().to_string(),
                    datatype,
                    shape: shape.iter().map(|d| if *d < 0 { -1 } else { *d }).collect(),
                }),
                None => Err(LoadError::Unservable(format!(
                    "{kind} {:?} has element type {ty:?}, which the sidecar does not serve",
                    o.name()
                ))),
            },
            other => Err(LoadError::Unservable(format!(
                "{kind} {:?} is a {other}, not a tensor; only tensor inputs and outputs are served",
                o.name()
            ))),
        })
        .collect()
}

#[cfg(test)]
#[path = "served_model_tests.rs"]
mod tests;
