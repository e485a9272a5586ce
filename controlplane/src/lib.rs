//! vigil control plane: openraft on sled, serving agents, operators and SIEMs.

pub mod audit_chain;
pub mod config;
pub mod metrics;
pub mod network;
pub mod node;
pub mod ocsf;
pub mod raft_types;
pub mod server;
pub mod service;
pub mod store;
