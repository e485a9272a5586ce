//! The gRPC services of the control plane.

mod admin_service;
mod agent_service;
mod agent_sessions;
mod alert_feed;
pub mod authorization;
pub mod enrollment;
mod siem_service;

pub use admin_service::AdminServiceImpl;
pub use agent_service::AgentServiceImpl;
pub use agent_sessions::AgentSessions;
pub use authorization::{Authorization, Caller};
pub use siem_service::SiemExportImpl;
