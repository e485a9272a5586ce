//! What both daemons (agent and control plane) expose about themselves:
//! their log output (`--log-format text|json`) and the HTTP endpoint their
//! Prometheus metrics are served on (`--metrics-listen`).
//!
//! Architecture invariant: a peer of the metrics port cannot hold the
//! daemon's resources: a request head must arrive within a deadline, a
//! connection lives a bounded time, and connections are capped; past the
//! cap new ones are closed at once.
#![forbid(unsafe_code)]

mod log_output;
mod metrics_endpoint;

pub use log_output::{init_logging, LogFormat};
pub use metrics_endpoint::{serve_metrics_router, EndpointLimits};
