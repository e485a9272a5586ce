//! Approved inference: the agent runs the models the control plane
//! approved for this host, each through a supervised `vigil-sidecar`
//! (ONNX Runtime behind the KServe v2 gRPC protocol) in a cgroup of its
//! own, from an encrypted content-addressed store, and rolls back to the
//! next approved version that verifies when one fails.
//!
//! - `model_choice.rs`: which version to serve (pure).
//! - `restart_backoff.rs`: restart delays (pure).
//! - `model_store.rs`, `store_key.rs`, `sealed_memfd.rs`: the encrypted
//!   store, its key, plaintext only in sealed memfds.
//! - `sidecar_process.rs`, `sidecar_cgroup.rs`, `control_channel.rs`,
//!   `control_messages.rs`: the sidecar's process, cgroup and control
//!   socket.

pub mod control_channel;
pub mod control_messages;
pub mod model_choice;
pub mod model_store;
pub mod restart_backoff;
pub mod sealed_memfd;
pub mod sidecar_cgroup;
pub mod sidecar_process;
pub mod store_key;
