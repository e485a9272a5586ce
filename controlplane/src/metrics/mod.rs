//! Prometheus metrics of the control plane, served on their own listener
//! (`--metrics-listen`).

mod finding_intake;
mod http_endpoint;
mod process_stats;
mod registry;

pub use finding_intake::FindingIntake;
pub use http_endpoint::serve_metrics;
pub use registry::{ExpositionFormat, MetricsRegistry};
