//! The SOC dashboard (`--dashboard-listen`): an HTTP(S) listener of its own
//! serving static pages (`controlplane/assets/dashboard/`, embedded) and a
//! JSON API under `/api` that the pages call, read from this node's state.
//!
//! - `config.rs`: limits and timeouts, the TLS set-up (the node's own
//!   certificate, no client certificates asked).
//! - `server.rs`: the accept loop (connection cap, handshake and header
//!   deadlines) and the router with the security headers on every answer.
//! - `session.rs`: node-local sessions (256-bit random ids, idle and
//!   absolute expiry) and the failed-login limits.
//! - `csrf.rs`: the checks every state-changing request passes.
//! - `auth.rs`: login, logout, the session and role of a request.
//! - `api.rs`: overview, findings, triage, hosts; `host_detail.rs`: one
//!   host's page; `live.rs`: server-sent events of new findings;
//!   `assets.rs`: the embedded pages.
//! - `inventory_api.rs`, `policy_api.rs`, `audit_api.rs`: the AI
//!   inventory (pages, CSV and CycloneDX downloads), policy versions and
//!   their diff, the audit log and its chain's verification.
//! - `data.rs`: what the dashboard reads and writes, as a trait
//!   (`node_data.rs` implements it on a node; tests use a fake).

// Handlers return an axum `Response` as their error (128 bytes): the
// answer itself, made once, on a path that is not hot.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod assets;
pub mod audit_api;
pub mod auth;
pub mod config;
pub mod csrf;
pub mod data;
pub mod host_detail;
pub mod inventory_api;
pub mod live;
pub mod node_data;
pub mod policy_api;
pub mod server;
pub mod session;

#[cfg(test)]
mod host_detail_tests;
#[cfg(test)]
mod pages_attack_tests;
#[cfg(test)]
mod pages_tests;
#[cfg(test)]
mod test_fleet;
#[cfg(test)]
mod tests;

pub use config::{DashboardSettings, DashboardTransport};
pub use data::{DashUser, DashboardData, Role, TriageAction, TriageEntry, TriageState};
pub use server::serve_dashboard;
