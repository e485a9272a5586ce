//! Approved inference: the agent runs the models the control plane
//! approved for this host, each through a supervised `vigil-sidecar`
//! (ONNX Runtime behind the KServe v2 gRPC protocol) in a cgroup of its
//! own, from an encrypted content-addressed store, and rolls back to the
//! next approved version that verifies when one fails.
//!
//! Downstream of the ship stage: it follows the deployments the shipper
//! verified and publishes, fetches model files with the shipper's
//! fetcher, and sends what it did, as findings, into the ship stage.
//!
//! - `serve_stage.rs`: the stage's task (one supervisor per model name,
//!   records verified again, the agent's own approval of its sidecars).
//! - `sidecar_supervisor.rs`: one sidecar's life: start, load, health,
//!   restart with backoff, rollback, stop.
//! - `model_choice.rs`: which version to serve (pure).
//! - `restart_backoff.rs`: restart delays (pure); `load_deaths.rs`: when
//!   a death during a load is the version's fault (pure).
//! - `model_store.rs`, `store_key.rs`, `sealed_memfd.rs`, `store_filler.rs`:
//!   the encrypted store, its key, plaintext only in sealed memfds, fetches.
//! - `sidecar_process.rs`, `sidecar_cgroup.rs`, `control_channel.rs`,
//!   `control_messages.rs`, `kserve_health.rs`: the sidecar's process,
//!   cgroup, control socket and health; `sidecar_socket.rs`: where its
//!   unix socket may be and what may be deleted there; `listen_holder.rs`:
//!   who holds a port it could not listen on.
//! - `sidecar_findings.rs`: what it did, as findings.

pub mod control_channel;
pub mod control_messages;
pub mod kserve_health;
pub mod listen_holder;
pub mod load_deaths;
pub mod model_choice;
pub mod model_store;
pub mod restart_backoff;
pub mod sealed_memfd;
mod serve_stage;
pub mod sidecar_cgroup;
pub mod sidecar_findings;
pub mod sidecar_process;
pub mod sidecar_socket;
pub mod sidecar_supervisor;
pub mod store_filler;
pub mod store_key;

pub use serve_stage::{ServeLinks, ServeStage, SIDECAR_APPROVAL_ID};
