//! What vigil knows about AI on a host, as pure functions: model-file
//! formats and content sniffing, the signal lists the kernel's filters and
//! the rules share, DNS question parsing, and the built-in rules that turn
//! an [`Observation`] of a process into a [`vigil_domain::Finding`].
//!
//! Architecture invariant: no I/O, no async, no wire types. The agent (and
//! the bench) feed it bytes and paths they read; `vigil-domain` stays the
//! vocabulary every component shares.
#![forbid(unsafe_code)]

mod builtin_rules;
mod dns_question;
mod model_file;
mod runtime_library;
mod serving_api;
mod signal_lists;
mod tls_client_hello;

pub use builtin_rules::{
    is_model_content, model_runs_code, BuiltinRules, Observation, AI_EGRESS_RULE_ID,
    AI_RUNTIME_RULE_ID, AI_SERVING_RULE_ID, GPU_DEVICE_RULE_ID, GPU_USE_RULE_ID,
    MODEL_RISK_RULE_ID,
};
pub use dns_question::question_name;
pub use model_file::{
    classify_model_path, is_model_file_path, may_be_pickle, sniff_model_format,
    sniff_unnamed_model_format, ModelFormat, ModelPathClass, MODEL_FILE_EXTENSIONS,
    MODEL_FILE_RULE_ID, MODEL_SNIFF_BYTES,
};
pub use runtime_library::{
    identify_runtime_library, RuntimeLibraryBudget, RuntimeLibraryError, RuntimeLibraryIdentity,
    RuntimeMarkers, RUNTIME_MARKERS,
};
pub use serving_api::ServingApi;
pub use signal_lists::{
    ai_api_host, ai_runtime_binary, ai_serving_port, is_ai_runtime_library, is_gpu_device,
    AI_RUNTIME_LIBRARY_PREFIXES, AI_SERVING_PORTS, GPU_DEVICE_PREFIXES,
};
pub use tls_client_hello::{client_hello_server_name, ClientHelloSni};
