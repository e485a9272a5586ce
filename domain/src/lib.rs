//! Pure domain types of vigil: the vocabulary every component shares.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of the
//! wire (protobuf) or of storage. The agent, the control plane and vigilctl
//! all speak these types; `vigil-proto` converts at the edge.
#![forbid(unsafe_code)]

mod ai_inventory;
mod alert;
mod alert_triage;
mod approval;
mod attestation;
mod audit;
mod cluster;
mod finding;
mod gpu;
mod model_record;
mod policy_status;
mod policy_summary;
mod process;
mod revoked_certificate;
mod siem_event;
mod unfreeze_order;
mod user;

pub use ai_inventory::{
    approved_but_unseen, sightings, InventoryItem, InventoryKind, Sighting, MAX_SIGHTING_AGE_NANOS,
};
pub use alert::{AgentHeartbeat, AgentIdentity, AgentRecord, Alert, SensorCounters, SensorMode};
pub use alert_triage::{
    AlertTriage, TriageAction, TriageEntry, TriageError, TriageState, MAX_TRIAGE_COMMENT,
    MAX_TRIAGE_HISTORY,
};
pub use approval::{ApprovalScope, ApprovedWorkloads, WorkloadApproval};
pub use attestation::{
    first_pcr_difference, AttestationRecord, ClockChange, ClockError, QuoteResult, TpmClock,
    TrustState, MAX_CODE, MAX_REASON,
};
pub use audit::AuditEntry;
pub use cluster::{ClusterMember, ClusterStatus};
pub use finding::{
    cut_text, is_sha256_hex, FileObject, Finding, ModelIdentity, ModelRisk, NetDirection,
    NetObject, Severity, SignalKind, MAX_IDENTITY_LIST, MAX_IDENTITY_REASON, MAX_IDENTITY_TEXT,
};
pub use gpu::{GpuContext, GpuDevice, GpuInventory, GpuObject, GpuProcess, MigDevice};
pub use model_record::{
    check_model_name, is_model_digest, ActiveModel, ModelCatalog, ModelDeployment, ModelListen,
    ModelRecord, ModelRecordError, ModelState, MAX_MODEL_HOSTS, MAX_MODEL_HOST_LEN,
    MAX_MODEL_LISTEN_LEN, MODEL_FORMAT_ONNX,
};
pub use policy_status::PolicyStatus;
pub use policy_summary::PolicySummary;
pub use process::{
    bounded_ancestors, Ancestor, ProcessInfo, MAX_ANCESTORS, MAX_ANCESTOR_COMM, MAX_ANCESTOR_EXE,
};
pub use revoked_certificate::RevokedCertificate;
pub use siem_event::{
    capped_argv, truncate_marked, truncation_marker, EventFacets, EventKind, EventRecord,
    SiemEvent, SiemFilter, MAX_EXPORTED_CMDLINE, MAX_EXPORTED_PATH, MAX_EXPORTED_TEXT,
};
pub use unfreeze_order::UnfreezeOrder;
pub use user::{
    check_password, check_user_name, UserError, UserRecord, UserRole, MAX_PASSWORD_BYTES,
    MAX_USER_NAME, MIN_PASSWORD_CHARS,
};
