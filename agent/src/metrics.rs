//! The agent's Prometheus metrics, served at `http://ADDR/metrics` when
//! `--metrics-listen ADDR` is given. Stages set them as they go (atomic
//! stores, never per event); a scrape only encodes them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use vigil_domain::{SensorCounters, SignalKind};

type SignalLabel = [(&'static str, &'static str); 1];

/// Handles on every metric of the agent; clones share them.
#[derive(Clone, Default)]
pub struct AgentMetrics {
    sensor_emitted: Counter<u64, AtomicU64>,
    sensor_filtered: Counter<u64, AtomicU64>,
    sensor_dropped: Counter<u64, AtomicU64>,
    sensor_received: Counter<u64, AtomicU64>,
    sensor_evicted: Counter<u64, AtomicU64>,
    sensor_floods: Counter<u64, AtomicU64>,
    decode_errors: Counter<u64, AtomicU64>,
    findings: Family<SignalLabel, Counter<u64, AtomicU64>>,
    suppressed_duplicates: Counter<u64, AtomicU64>,
    spool_depth: Gauge<u64, AtomicU64>,
    policy_version: Gauge<u64, AtomicU64>,
}

impl AgentMetrics {
    /// The kernel's running totals (they only grow while the sensor lives).
    pub fn set_sensor_counters(&self, c: &SensorCounters, decode_errors: u64) {
        for (metric, value) in [
            (&self.sensor_emitted, c.emitted),
            (&self.sensor_filtered, c.filtered),
            (&self.sensor_dropped, c.dropped),
            (&self.sensor_received, c.received),
            (&self.sensor_evicted, c.evicted),
            (&self.decode_errors, decode_errors),
        ] {
            metric.inner().store(value, Ordering::Relaxed);
        }
    }

    /// Processes found flooding the sensors (episodes started).
    pub fn sensor_floods(&self, started: u64) {
        self.sensor_floods.inc_by(started);
    }

    pub fn finding_spooled(&self, signal: SignalKind) {
        self.findings
            .get_or_create(&[("signal", signal.as_str())])
            .inc();
    }

    pub fn set_suppressed_duplicates(&self, total: u64) {
        self.suppressed_duplicates
            .inner()
            .store(total, Ordering::Relaxed);
    }

    pub fn set_spool_depth(&self, findings: usize) {
        self.spool_depth.set(findings as u64);
    }

    pub fn set_policy_version(&self, version: u64) {
        self.policy_version.set(version);
    }

    /// A registry over these handles.
    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        r.register(
            "vigil_agent_sensor_emitted",
            "Records the kernel wrote into the ring buffer",
            self.sensor_emitted.clone(),
        );
        r.register(
            "vigil_agent_sensor_filtered",
            "Events the kernel programs filtered out",
            self.sensor_filtered.clone(),
        );
        r.register(
            "vigil_agent_sensor_dropped",
            "Records lost because the ring buffer was full",
            self.sensor_dropped.clone(),
        );
        r.register(
            "vigil_agent_sensor_received",
            "Records the agent read from the ring buffer",
            self.sensor_received.clone(),
        );
        r.register(
            "vigil_agent_sensor_evicted",
            "Model and device opens lost from the kernel's in-flight table before their syscall returned",
            self.sensor_evicted.clone(),
        );
        r.register(
            "vigil_agent_sensor_floods",
            "Processes found flooding the sensors (records lost for a full ring buffer at the flood rate), once per episode",
            self.sensor_floods.clone(),
        );
        r.register(
            "vigil_agent_sensor_decode_errors",
            "Records the agent could not decode",
            self.decode_errors.clone(),
        );
        r.register(
            "vigil_agent_findings",
            "Findings spooled since the agent started, by signal",
            self.findings.clone(),
        );
        r.register(
            "vigil_agent_suppressed_duplicates",
            "Findings not made again for the same process, signal and object",
            self.suppressed_duplicates.clone(),
        );
        r.register(
            "vigil_agent_spool_depth",
            "Findings in the spool not yet acked by the control plane",
            self.spool_depth.clone(),
        );
        r.register(
            "vigil_agent_policy_version",
            "The policy bundle version the agent enforces (0: built-in rules)",
            self.policy_version.clone(),
        );
        r
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `listener`; anything
/// else is a 404.
pub async fn serve_metrics(listener: TcpListener, metrics: AgentMetrics) {
    let registry = Arc::new(metrics.registry());
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry);
    vigil_observability::serve_metrics_router(listener, app, Default::default()).await
}

async fn scrape(State(registry): State<Arc<Registry>>) -> Response {
    let mut body = String::new();
    match prometheus_text::encode(&mut body, &registry) {
        Ok(()) => ([(CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_encoded_with_its_value() {
        let m = AgentMetrics::default();
        m.set_sensor_counters(
            &SensorCounters {
                emitted: 7,
                filtered: 3,
                dropped: 1,
                received: 6,
                evicted: 8,
            },
            2,
        );
        m.sensor_floods(1);
        m.finding_spooled(SignalKind::ModelFile);
        m.finding_spooled(SignalKind::ModelFile);
        m.set_suppressed_duplicates(4);
        m.set_spool_depth(5);
        m.set_policy_version(9);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &m.registry()).unwrap();
        for line in [
            "vigil_agent_sensor_emitted_total 7",
            "vigil_agent_sensor_filtered_total 3",
            "vigil_agent_sensor_dropped_total 1",
            "vigil_agent_sensor_received_total 6",
            "vigil_agent_sensor_evicted_total 8",
            "vigil_agent_sensor_floods_total 1",
            "vigil_agent_sensor_decode_errors_total 2",
            "vigil_agent_findings_total{signal=\"model_file\"} 2",
            "vigil_agent_suppressed_duplicates_total 4",
            "vigil_agent_spool_depth 5",
            "vigil_agent_policy_version 9",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
