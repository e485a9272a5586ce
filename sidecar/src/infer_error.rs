//! What can go wrong with an inference request, and the gRPC status each
//! is: the caller's mistakes are `INVALID_ARGUMENT` or `NOT_FOUND` with a
//! message naming the input and what was expected; only a failure inside
//! ONNX Runtime is `INTERNAL`.

use tonic::{Code, Status};

use crate::bounded_text::cut;

/// Longest message sent back (ONNX Runtime's messages can be long).
const MAX_MESSAGE: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferError {
    #[error("model {name:?} is not served here (only approved, verified models are loaded)")]
    UnknownModel { name: String },
    #[error("model {name:?} version {requested:?} is not served here; version {served} is")]
    UnknownVersion {
        name: String,
        requested: String,
        served: u64,
    },
    /// A request that cannot be run as sent: the message names the input
    /// or output and what was expected.
    #[error("{0}")]
    InvalidRequest(String),
    /// ONNX Runtime refused the inputs (e.g. dimensions a dynamic shape
    /// allowed but an operator does not).
    #[error("ONNX Runtime refused the request: {0}")]
    RuntimeRefused(String),
    #[error("inference failed: {0}")]
    RuntimeFailed(String),
    /// A tensor in shared memory that cannot be used (its code says why:
    /// not the caller's, out of range, truncated…).
    #[error("{0}")]
    SharedMemory(#[from] crate::shared_memory::ShmError),
    /// RESOURCE_EXHAUSTED: the inputs in flight of all requests hold the
    /// budget (`--max-input-bytes-in-flight`), or this request's alone
    /// would be over it.
    #[error("{0}")]
    Busy(String),
}

impl InferError {
    /// An invalid request, its message bounded.
    pub fn invalid(message: impl AsRef<str>) -> InferError {
        InferError::InvalidRequest(cut(message.as_ref(), MAX_MESSAGE))
    }

    /// An ONNX Runtime error: the caller's when ONNX Runtime says the
    /// argument is invalid, the sidecar's otherwise.
    pub fn from_runtime<R>(error: ort::Error<R>) -> InferError {
        let message = cut(error.message(), MAX_MESSAGE);
        match error.code() {
            ort::error::ErrorCode::InvalidArgument => InferError::RuntimeRefused(message),
            _ => InferError::RuntimeFailed(message),
        }
    }

    /// The gRPC status code this error is.
    pub fn code(&self) -> Code {
        match self {
            InferError::UnknownModel { .. } | InferError::UnknownVersion { .. } => Code::NotFound,
            InferError::InvalidRequest(_) | InferError::RuntimeRefused(_) => Code::InvalidArgument,
            InferError::RuntimeFailed(_) => Code::Internal,
            InferError::SharedMemory(e) => e.code(),
            InferError::Busy(_) => Code::ResourceExhausted,
        }
    }
}

impl From<InferError> for Status {
    fn from(error: InferError) -> Status {
        Status::new(error.code(), error.to_string())
    }
}
