//! Pure domain types and detection logic of vigil.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of the
//! wire (protobuf) or of storage. The agent, the control plane and vigilctl
//! all speak these types; `vigil-proto` converts at the edge.
#![forbid(unsafe_code)]

mod alert;
mod approval;
mod audit;
mod builtin_rules;
mod dns_question;
mod finding;
mod gpu;
mod model_file;
mod process;
mod signal_lists;

pub use alert::{AgentIdentity, AgentRecord, Alert, SensorCounters, SensorMode};
pub use approval::{ApprovalScope, ApprovedWorkloads, WorkloadApproval};
pub use audit::AuditEntry;
pub use builtin_rules::{
    BuiltinRules, Observation, OwnedObservation, AI_EGRESS_RULE_ID, AI_RUNTIME_RULE_ID,
    AI_SERVING_RULE_ID, GPU_DEVICE_RULE_ID, GPU_USE_RULE_ID,
};
pub use dns_question::question_name;
pub use finding::{FileObject, Finding, NetDirection, NetObject, Severity, SignalKind};
pub use gpu::{GpuContext, GpuDevice, GpuInventory, GpuObject, GpuProcess, MigDevice};
pub use model_file::{
    classify_model_path, is_model_file_path, sniff_model_format, sniff_unnamed_model_format,
    ModelFormat, ModelPathClass, MODEL_FILE_EXTENSIONS, MODEL_FILE_RULE_ID, MODEL_SNIFF_BYTES,
};
pub use process::ProcessInfo;
pub use signal_lists::{
    ai_api_host, ai_serving_port, is_ai_runtime_library, is_gpu_device,
    AI_RUNTIME_LIBRARY_PREFIXES, AI_SERVING_PORTS, GPU_DEVICE_PREFIXES, OPENAI_PROBE_PORTS,
};
