//! The ship stage's own task: spools each standing finding, with the
//! shipper running beside it.
//!
//! A full spool (its quota reached, its disk nearly out of space, or a
//! write that failed) never stops the agent: findings wait in memory
//! ([`Overflow`], which drops a flood's before the finding that matters),
//! the heartbeats say `spool-full` and how many were
//! dropped, one alert finding says so per episode, and the findings held
//! go to the spool, oldest first, as soon as it takes them again.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use vigil_domain::{Finding, ProcessInfo, Severity, SignalKind};

use crate::clock;
use crate::detect::TimedFinding;
use crate::metrics::AgentMetrics;
use crate::ship::overflow::{Overflow, SpoolPressure};
use crate::ship::shipper::{self, ShipperConfig, ShipperLinks};
use crate::ship::spool::{Spool, SpoolError};

/// The rule id of the agent's own alert that its spool is full.
pub const SPOOL_FULL_RULE: &str = "vigil.agent.spool-full";

pub struct ShipStage {
    spool: Spool,
    shipper: JoinHandle<()>,
    metrics: AgentMetrics,
    overflow: Overflow,
    /// The alert of the current spool-full episode, until the spool takes it.
    alert: Option<TimedFinding>,
}

/// A finding the spool took, to log once it is durable.
struct Spooled {
    seq: u64,
    found: TimedFinding,
    /// Microseconds from the syscall to the finding reaching this stage.
    detected_us: u64,
    /// ... and to the spool holding it (in sled's cache, not yet on disk).
    spooled_us: u64,
}

impl ShipStage {
    /// Starts the shipper on `spool`; while the spool is full, up to
    /// `memory_findings` of the newest findings wait in memory.
    pub fn start(
        spool: Spool,
        memory_findings: usize,
        config: ShipperConfig,
        links: ShipperLinks,
        metrics: AgentMetrics,
    ) -> Self {
        let pressure = SpoolPressure::default();
        let shipper = tokio::spawn(shipper::run(spool.clone(), config, links, pressure.clone()));
        Self {
            spool,
            shipper,
            metrics,
            overflow: Overflow::new(memory_findings, pressure),
            alert: None,
        }
    }

    /// Runs until the respond stage stops; then stops the shipper and
    /// flushes the spool. A spool that fails is reported, never fatal.
    pub async fn run(
        mut self,
        mut standing: mpsc::Receiver<Vec<TimedFinding>>,
    ) -> anyhow::Result<()> {
        // The shipper empties the spool as the control plane acks; each
        // tick offers the spool what waits in memory.
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                batch = standing.recv() => {
                    let Some(batch) = batch else { break };
                    let mut spooled = self.offer_held();
                    for found in batch {
                        spooled.extend(self.take(found));
                    }
                    self.flushed(spooled).await;
                }
                _ = tick.tick() => {
                    let spooled = self.offer_held();
                    self.flushed(spooled).await;
                    self.metrics.set_spool_depth(self.spool.len());
                }
            }
        }
        self.shipper.abort();
        if !self.overflow.is_empty() {
            tracing::error!(
                held = self.overflow.len(),
                "stopping with findings the full spool never took"
            );
        }
        if let Err(e) = self.spool.flush().await {
            tracing::error!(error = %e, "flushing the spool at exit");
        }
        Ok(())
    }

    /// Spools a finding, or holds it in memory when the spool is full (or
    /// findings already wait there, which go first).
    fn take(&mut self, found: TimedFinding) -> Option<Spooled> {
        if self.overflow.is_empty() && self.alert.is_none() {
            let detected_us = since_event_us(found.event_boot_ns);
            match self.spool.push(found.finding.clone()) {
                Ok(seq) => {
                    let spooled_us = since_event_us(found.event_boot_ns);
                    return Some(Spooled {
                        seq,
                        found,
                        detected_us,
                        spooled_us,
                    });
                }
                Err(e) => self.spool_full(&e),
            }
        }
        self.overflow.hold(found);
        None
    }

    /// The spool refused a finding: the episode starts (with its alert)
    /// unless it is on already.
    fn spool_full(&mut self, e: &SpoolError) {
        if self.overflow.pressure().is_full() {
            return;
        }
        tracing::error!(
            error = %e,
            dropped = self.overflow.pressure().dropped(),
            "spool-full: findings wait in memory; past its bound, routine findings and the busiest user's are dropped first"
        );
        self.alert = Some(spool_full_alert(e));
    }

    /// Offers the spool the alert, then the findings held in memory, oldest
    /// first, until it refuses one; ends the episode when all are in.
    fn offer_held(&mut self) -> Vec<Spooled> {
        let mut spooled = Vec::new();
        if !self.overflow.pressure().is_full() {
            return spooled;
        }
        if let Some(alert) = self.alert.take() {
            let detected_us = since_event_us(alert.event_boot_ns);
            match self.spool.push_over_quota(alert.finding.clone()) {
                Ok(seq) => spooled.push(Spooled {
                    seq,
                    spooled_us: since_event_us(alert.event_boot_ns),
                    found: alert,
                    detected_us,
                }),
                Err(_) => {
                    self.alert = Some(alert);
                    return spooled;
                }
            }
        }
        while let Some(found) = self.overflow.take_oldest() {
            let detected_us = since_event_us(found.event_boot_ns);
            match self.spool.push(found.finding.clone()) {
                Ok(seq) => spooled.push(Spooled {
                    seq,
                    spooled_us: since_event_us(found.event_boot_ns),
                    found,
                    detected_us,
                }),
                Err(_) => {
                    self.overflow.hold_again(found);
                    return spooled;
                }
            }
        }
        self.overflow.relieved();
        tracing::warn!(
            dropped = self.overflow.pressure().dropped(),
            "the spool takes findings again"
        );
        spooled
    }

    /// Flushes the spool, then logs each finding it took with its latency
    /// from the syscall (`event_boot_ns`, on the kernel's clock) to three
    /// points: reaching this stage (`detected_us`), held by the spool
    /// (`spooled_us`) and on disk (`latency_us`). A finding logged is on
    /// disk, an enforcement's included, and survives the agent's crash.
    async fn flushed(&self, spooled: Vec<Spooled>) {
        if spooled.is_empty() {
            return;
        }
        if let Err(e) = self.spool.flush().await {
            tracing::error!(error = %e, findings = spooled.len(), "flushing the spool failed");
            return;
        }
        for Spooled {
            seq,
            found,
            detected_us,
            spooled_us,
        } in spooled
        {
            let f = &found.finding;
            let latency_us = since_event_us(found.event_boot_ns);
            tracing::info!(rule = %f.rule_id, pid = f.process.pid, seq, detected_us, spooled_us, latency_us, summary = %f.summary, action = %f.action, "finding");
            self.metrics.finding_spooled(f.signal);
        }
    }
}

fn since_event_us(event_boot_ns: u64) -> u64 {
    clock::boot_now_ns().saturating_sub(event_boot_ns) / 1_000
}

/// The agent's own alert that its spool is full: a finding on the agent's
/// process.
fn spool_full_alert(e: &SpoolError) -> TimedFinding {
    TimedFinding {
        finding: Finding {
            seq: 0,
            rule_id: SPOOL_FULL_RULE.into(),
            severity: Severity::High,
            signal: SignalKind::Policy,
            observed_at_unix_nanos: clock::unix_now_nanos(),
            process: ProcessInfo {
                pid: std::process::id(),
                comm: "vigil-agent".into(),
                ..Default::default()
            },
            file: None,
            net: None,
            gpu: None,
            action: String::new(),
            summary: format!(
                "the agent's spool is full ({e}): findings wait in memory and, past its bound, routine findings and the busiest user's are dropped first until the control plane acks"
            ),
        },
        event_boot_ns: clock::boot_now_ns(),
    }
}
