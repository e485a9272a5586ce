//! Policy as code: rules written in YAML with CEL conditions
//! (`policies/`), checked with `file:line:col` diagnostics, compiled into a
//! `PolicySet` the agent evaluates per finding, and shipped as
//! ed25519-signed, versioned bundles.
//!
//! Architecture invariant: nothing here does I/O; callers hand in file
//! contents and get values or diagnostics back. A bundle is only ever
//! compiled after its signature verified against a trusted key.

#![forbid(unsafe_code)]

mod bundle;
mod cel_schema;
mod condition_limits;
mod diagnostic;
mod diff;
mod document_schema;
mod facts;
mod model_signature;
mod policy_set;
mod rule_file;
mod unfreeze_signature;
mod workload_signature;

pub use bundle::{canonical_bytes, Bundle, BundleError, SigningKey, TrustedKeys};
pub use diagnostic::Diagnostic;
pub use diff::bundle_diff;
pub use document_schema::policy_document_schema;
pub use facts::HostFacts;
pub use model_signature::{model_canonical_bytes, MODEL_SIGNATURE_FORMAT};
pub use policy_set::{Action, Decision, PolicySet};
pub use rule_file::{parse_policy_files, PolicySource, RuleSpec};
pub use unfreeze_signature::{
    unfreeze_canonical_bytes, UnfreezeRefusal, UNFREEZE_FORMAT, UNFREEZE_MAX_VALIDITY_SECS,
};
pub use workload_signature::workload_canonical_bytes;
