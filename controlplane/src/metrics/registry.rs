//! The metrics registry: counters the services bump, and a collector that
//! reads raft, the applied state and the process at scrape time.
//!
//! A scrape costs one read of raft's metrics, three small keys of the state
//! machine (the alert tally is kept at apply time, never counted by a scan),
//! one pass over the agent records (their sensor counters are summed), and
//! three reads under `/proc/self`.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::finding_intake::FindingIntake;
use super::process_stats::ProcessStats;
use crate::node::ControlPlaneNode;
use crate::service::AgentSessions;

/// Which text format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpositionFormat {
    /// Prometheus text format 0.0.4: what a plain `curl` gets.
    PrometheusText,
    /// OpenMetrics 1.0 text, for a scraper whose `Accept` names it.
    OpenMetricsText,
}

impl ExpositionFormat {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetricsText,
            _ => Self::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::PrometheusText => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetricsText => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Every metric of this control-plane node.
#[derive(Debug)]
pub struct MetricsRegistry {
    registry: Registry,
}

impl MetricsRegistry {
    pub fn new(
        node: Arc<ControlPlaneNode>,
        sessions: Arc<AgentSessions>,
        intake: &FindingIntake,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "vigil_controlplane_findings_ingested",
            "Findings from agents this node committed as new alerts since it started",
            intake.ingested.clone(),
        );
        registry.register(
            "vigil_controlplane_findings_duplicate",
            "Findings resent by agents that were already committed, since this node started",
            intake.duplicates.clone(),
        );
        registry.register(
            "vigil_controlplane_findings_refused",
            "Findings refused as bad input (rejected by seq) since this node started",
            intake.refused.clone(),
        );
        registry.register_collector(Box::new(StateCollector { node, sessions }));
        registry.register_collector(Box::new(ProcessCollector));
        Self { registry }
    }

    /// The exposition of every metric, now.
    pub fn render(&self, format: ExpositionFormat) -> Result<String, fmt::Error> {
        let mut out = String::new();
        match format {
            ExpositionFormat::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?
            }
            ExpositionFormat::OpenMetricsText => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)?
            }
        }
        Ok(out)
    }
}

fn gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> fmt::Result
where
    N: prometheus_client::encoding::EncodeGaugeValue,
{
    let metric = ConstGauge::new(value);
    let help = format!("{help}.");
    metric.encode(encoder.encode_descriptor(name, &help, None, metric.metric_type())?)
}

/// `name` without `_total`: the encoder appends it to counters (and a
/// full stop to every help text, as `Registry::register` does).
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    let help = format!("{help}.");
    metric.encode(encoder.encode_descriptor(name, &help, None, metric.metric_type())?)
}

/// One metric with a sample per value of `label`.
fn labelled<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    label: &str,
    values: impl IntoIterator<Item = (&'a str, u64)>,
) -> fmt::Result {
    let help = format!("{help}.");
    let mut family = encoder.encode_descriptor(name, &help, None, metric_type)?;
    for (value, n) in values {
        let labels = [(label, value)];
        let sample = family.encode_family(&labels)?;
        match metric_type {
            MetricType::Counter => ConstCounter::new(n).encode(sample)?,
            _ => ConstGauge::new(n).encode(sample)?,
        }
    }
    Ok(())
}

/// Reads raft, the applied state and the sessions at scrape time.
struct StateCollector {
    node: Arc<ControlPlaneNode>,
    sessions: Arc<AgentSessions>,
}

impl fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateCollector")
            .field("node_id", &self.node.node_id)
            .finish_non_exhaustive()
    }
}

impl StateCollector {
    fn encode_raft(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let raft = self.node.raft.metrics().borrow().clone();
        let is_leader = raft.current_leader == Some(raft.id);
        gauge(
            encoder,
            "vigil_controlplane_raft_is_leader",
            "1 while this node is the raft leader, else 0",
            u64::from(is_leader),
        )?;
        gauge(
            encoder,
            "vigil_controlplane_raft_leader_id",
            "The raft leader's node id as this node knows it, 0 when none is known",
            raft.current_leader.unwrap_or(0),
        )?;
        gauge(
            encoder,
            "vigil_controlplane_raft_term",
            "This node's current raft term",
            raft.current_term,
        )?;
        gauge(
            encoder,
            "vigil_controlplane_raft_last_log_index",
            "Index of the last entry in this node's raft log",
            raft.last_log_index.unwrap_or(0),
        )?;
        gauge(
            encoder,
            "vigil_controlplane_raft_last_applied_index",
            "Index of the last raft entry applied to this node's state machine",
            raft.last_applied.map(|l| l.index).unwrap_or(0),
        )?;
        let membership = raft.membership_config.membership();
        gauge(
            encoder,
            "vigil_controlplane_raft_voters",
            "Voting members of the raft cluster",
            membership.voter_ids().count() as u64,
        )?;
        gauge(
            encoder,
            "vigil_controlplane_raft_members",
            "Members of the raft cluster, voters and learners",
            membership.nodes().count() as u64,
        )
    }

    fn encode_state(&self, encoder: &mut DescriptorEncoder) -> fmt::Result {
        let state = &self.node.state;
        match state.alert_tally() {
            Ok(stored) => gauge(
                encoder,
                "vigil_controlplane_alerts_stored",
                "Alerts the replicated state holds now (retention removes the oldest)",
                stored.total(),
            )?,
            Err(e) => tracing::warn!(error = %e, "metrics: reading the alert tally"),
        }
        match state.alert_tally_ever() {
            Ok(tally) => {
                counter(
                    encoder,
                    "vigil_controlplane_alerts",
                    "Alerts stored in the replicated state, ever (retention's removals included)",
                    tally.total(),
                )?;
                let mut by_signal = std::collections::BTreeMap::<&str, u64>::new();
                let mut by_severity = std::collections::BTreeMap::<&str, u64>::new();
                for (signal, severity, n) in tally.counts() {
                    *by_signal.entry(signal).or_default() += n;
                    *by_severity.entry(severity).or_default() += n;
                }
                labelled(
                    encoder,
                    "vigil_controlplane_alerts_by_signal",
                    "Alerts stored ever, by signal kind",
                    MetricType::Counter,
                    "signal",
                    by_signal,
                )?;
                labelled(
                    encoder,
                    "vigil_controlplane_alerts_by_severity",
                    "Alerts stored ever, by severity",
                    MetricType::Counter,
                    "severity",
                    by_severity,
                )?;
            }
            Err(e) => tracing::warn!(error = %e, "metrics: reading the alert tally"),
        }
        match state.audit_entries() {
            Ok(n) => counter(
                encoder,
                "vigil_controlplane_audit_entries",
                "Entries in the audit hash chain",
                n,
            )?,
            Err(e) => tracing::warn!(error = %e, "metrics: reading the audit head"),
        }
        gauge(
            encoder,
            "vigil_controlplane_policy_active_version",
            "Version of the active policy bundle, 0 when none was pushed",
            state.active_policy_version(),
        )?;
        gauge(
            encoder,
            "vigil_controlplane_agent_sessions",
            "Agent streams open on this node",
            self.sessions.connected() as u64,
        )?;
        match state.agents() {
            Ok(agents) => {
                let (mut emitted, mut filtered, mut dropped, mut received, mut spooled) =
                    (0u64, 0u64, 0u64, 0u64, 0u64);
                let (mut spool_dropped, mut spool_full) = (0u64, 0u64);
                for a in &agents {
                    emitted = emitted.saturating_add(a.counters.emitted);
                    filtered = filtered.saturating_add(a.counters.filtered);
                    dropped = dropped.saturating_add(a.counters.dropped);
                    received = received.saturating_add(a.counters.received);
                    spooled = spooled.saturating_add(a.spooled);
                    spool_dropped = spool_dropped.saturating_add(a.spool_dropped);
                    spool_full += u64::from(a.spool_full);
                }
                gauge(
                    encoder,
                    "vigil_controlplane_agents_registered",
                    "Agents the control plane knows",
                    agents.len() as u64,
                )?;
                labelled(
                    encoder,
                    "vigil_controlplane_agents_sensor_events",
                    "Sensor counters of every agent's last heartbeat, summed (a gauge: an \
                     agent's restart resets its own)",
                    MetricType::Gauge,
                    "kind",
                    [
                        ("emitted", emitted),
                        ("filtered", filtered),
                        ("dropped", dropped),
                        ("received", received),
                    ],
                )?;
                gauge(
                    encoder,
                    "vigil_controlplane_agents_spooled_findings",
                    "Findings waiting in agents' spools, as of their last heartbeats, summed",
                    spooled,
                )?;
                gauge(
                    encoder,
                    "vigil_controlplane_agents_spool_dropped_findings",
                    "Findings agents dropped for a full spool, as of their last heartbeats, \
                     summed (a gauge: an agent's restart resets its own)",
                    spool_dropped,
                )?;
                gauge(
                    encoder,
                    "vigil_controlplane_agents_spool_full",
                    "Agents whose spool was full (spool-full) at their last heartbeat",
                    spool_full,
                )?;
            }
            Err(e) => tracing::warn!(error = %e, "metrics: reading the agent records"),
        }
        Ok(())
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_raft(&mut encoder)?;
        self.encode_state(&mut encoder)
    }
}

/// The standard `process_*` metrics this process can read cheaply.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let stats = ProcessStats::read();
        if let Some(v) = stats.resident_memory_bytes {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                v,
            )?;
        }
        if let Some(v) = stats.open_fds {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                v,
            )?;
        }
        if let Some(v) = stats.max_fds {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                v,
            )?;
        }
        Ok(())
    }
}
