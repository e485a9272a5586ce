//! The gRPC services of the control plane.

mod admin_models;
mod admin_service;
pub mod admin_triage;
pub mod admin_users;
mod agent_attestation;
mod agent_service;
mod agent_sessions;
mod alert_feed;
pub mod authorization;
pub mod enrollment;
mod event_feed;
mod model_transfer;
pub mod raft_service;
mod siem_service;

pub use admin_service::AdminServiceImpl;
pub use agent_service::AgentServiceImpl;
pub use agent_sessions::AgentSessions;
pub use authorization::{Authorization, Caller};
pub use raft_service::RaftServiceImpl;
pub use siem_service::SiemExportImpl;
