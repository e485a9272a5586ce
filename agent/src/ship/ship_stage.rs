//! The ship stage's own task: spools each standing finding, with the
//! shipper running beside it.

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::clock;
use crate::detect::TimedFinding;
use crate::metrics::AgentMetrics;
use crate::ship::shipper::{self, ShipperConfig, ShipperLinks};
use crate::ship::spool::Spool;

pub struct ShipStage {
    spool: Spool,
    shipper: JoinHandle<()>,
    metrics: AgentMetrics,
}

impl ShipStage {
    /// Starts the shipper on `spool`.
    pub fn start(
        spool: Spool,
        config: ShipperConfig,
        links: ShipperLinks,
        metrics: AgentMetrics,
    ) -> Self {
        let shipper = tokio::spawn(shipper::run(spool.clone(), config, links));
        Self {
            spool,
            shipper,
            metrics,
        }
    }

    /// Runs until the respond stage stops; then stops the shipper and
    /// flushes the spool.
    pub async fn run(self, mut standing: mpsc::Receiver<Vec<TimedFinding>>) -> anyhow::Result<()> {
        // The shipper empties the spool as the control plane acks.
        let mut depth_tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                batch = standing.recv() => {
                    let Some(batch) = batch else { break };
                    for found in batch {
                        self.spool_finding(found)?;
                    }
                }
                _ = depth_tick.tick() => self.metrics.set_spool_depth(self.spool.len()),
            }
        }
        self.shipper.abort();
        self.spool.flush().await?;
        Ok(())
    }

    /// Spools a finding and logs it with its latency from the syscall
    /// (`event_boot_ns`, on the kernel's clock) to the spool.
    fn spool_finding(&self, found: TimedFinding) -> anyhow::Result<()> {
        let TimedFinding {
            finding,
            event_boot_ns,
        } = found;
        let (rule, pid, summary, signal) = (
            finding.rule_id.clone(),
            finding.process.pid,
            finding.summary.clone(),
            finding.signal,
        );
        let detected_us = clock::boot_now_ns().saturating_sub(event_boot_ns) / 1_000;
        let seq = self
            .spool
            .push(finding)
            .context("writing a finding to the spool")?;
        let latency_us = clock::boot_now_ns().saturating_sub(event_boot_ns) / 1_000;
        tracing::info!(%rule, pid, seq, detected_us, latency_us, %summary, "finding");
        self.metrics.finding_spooled(signal);
        Ok(())
    }
}
