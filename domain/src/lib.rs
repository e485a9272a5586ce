//! Pure domain types and detection logic of vigil.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of the
//! wire (protobuf) or of storage. The agent, the control plane and vigilctl
//! all speak these types; `vigil-proto` converts at the edge.
#![forbid(unsafe_code)]

mod alert;
mod approval;
mod finding;
mod model_file;
mod process;

pub use alert::{AgentRecord, Alert, SensorCounters, SensorMode};
pub use approval::ApprovedWorkloads;
pub use finding::{FileObject, Finding, Severity, SignalKind};
pub use model_file::{
    classify_model_path, is_model_file_path, sniff_model_format, ModelFileOpenRule, ModelFormat,
    ModelPathClass, MODEL_FILE_EXTENSIONS, MODEL_FILE_RULE_ID, MODEL_SNIFF_BYTES,
};
pub use process::ProcessInfo;
