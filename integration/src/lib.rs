//! The test harness of vigil, shared by the end-to-end tests (`tests/`) and
//! the benchmarks (`bench/`): starts the real binaries (control plane,
//! agent, vigilctl) as processes, waits for them to be ready, kills them
//! when dropped, and talks to them over real gRPC.
//!
//! Each fallible step has a `try_` form returning [`HarnessError`] (for the
//! benchmarks) and a panicking form (for tests, where a panic is the
//! failure report).

#![forbid(unsafe_code)]

mod agent;
mod agent_host;
pub mod alert_filter;
pub mod attesting_client;
mod binaries;
mod control_plane;
mod daemon;
pub mod dashboard;
mod error;
mod host;
pub mod linearizability;
pub mod loopback_cluster;
mod net;
pub mod netns_cluster;
pub mod node_network;
pub mod policy_fixture;
mod polling;
mod privilege;
pub mod raw_agent;
pub mod raw_codec;
pub mod seeded_random;
pub mod sidecar;
pub mod siem_clients;
pub mod swtpm;
pub mod tls_fleet;
mod tmpfs;
pub mod unprivileged;

pub use agent::{log_number, Agent};
pub use agent_host::AgentHost;
pub use binaries::{bin_dir, binary, try_binary};
pub use control_plane::{try_wait_leader_of, wait_leader_of, ControlPlane};
pub use daemon::{Daemon, Killed, READY_TIMEOUT};
pub use error::HarnessError;
pub use host::{cgroup2_mount, compile_c, fake_nvml_library, python_opens, sha256_file};
pub use net::{connect, free_port, try_connect};
pub use polling::{try_wait_for, wait_for};
pub use privilege::privileged;
pub use tmpfs::Tmpfs;
