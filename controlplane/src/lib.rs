//! vigil control plane: openraft on sled, serving agents, operators and SIEMs.

pub mod alert_retention;
pub mod attestation;
pub mod audit_chain;
pub mod cluster_join;
pub mod cluster_membership;
pub mod config;
pub mod dashboard;
pub mod inventory_export;
pub mod metrics;
pub mod model_blobs;
pub mod mtls;
pub mod network;
pub mod node;
pub mod ocsf;
pub mod raft_types;
#[cfg(test)]
pub(crate) mod realistic_finding;
pub mod security_events;
pub mod server;
pub mod service;
pub mod storage_guard;
pub mod store;
