//! The sensor stage's own task: drains the sensor and hands each batch of
//! events on whole (one channel send per ring-buffer drain, not per
//! event); once a second it publishes the kernel's counters.

use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use vigil_domain::{SensorCounters, SensorMode};

use super::{EbpfOptions, Sensor, SensorChoice, SensorEvent};
use crate::metrics::AgentMetrics;

/// Events a fresh batch has room for before it grows.
const BATCH_CAPACITY: usize = 1024;

pub struct SensorStage {
    sensor: Sensor,
    counters: watch::Sender<SensorCounters>,
    metrics: AgentMetrics,
}

impl SensorStage {
    /// Attaches the chosen sensor.
    pub fn start(
        choice: SensorChoice,
        ebpf: EbpfOptions,
        poll_interval: Duration,
        metrics: AgentMetrics,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            sensor: Sensor::start(choice, ebpf, poll_interval)?,
            counters: watch::channel(SensorCounters::default()).0,
            metrics,
        })
    }

    pub fn mode(&self) -> SensorMode {
        self.sensor.mode()
    }

    pub fn hooks(&self) -> Vec<String> {
        self.sensor.hooks()
    }

    /// Whether the sensor polls /proc (degraded): then every poll is a
    /// batch, even an empty one, for the detect stage to rescan after.
    pub fn is_polling(&self) -> bool {
        matches!(self.sensor, Sensor::Procfs(_))
    }

    /// Processes already known (the detect stage's snapshot): a poller
    /// reports only processes that start after it.
    pub fn assume_known(&mut self, pids: Vec<u32>) {
        if let Sensor::Procfs(poller) = &mut self.sensor {
            poller.assume_known(pids);
        }
    }

    /// The kernel's counters, as of the last second.
    pub fn counters(&self) -> watch::Receiver<SensorCounters> {
        self.counters.subscribe()
    }

    /// Runs until `stop` fires or the detect stage is gone; returns how
    /// many records could not be decoded.
    pub async fn run(
        mut self,
        batches: mpsc::Sender<Vec<SensorEvent>>,
        mut drained: mpsc::Receiver<Vec<SensorEvent>>,
        mut stop: oneshot::Receiver<()>,
    ) -> anyhow::Result<u64> {
        let polling = self.is_polling();
        let mut events = Vec::with_capacity(BATCH_CAPACITY);
        let mut counters_tick = tokio::time::interval(Duration::from_secs(1));
        let mut dropped_reported = 0u64;
        loop {
            tokio::select! {
                r = self.sensor.next_batch(&mut events) => {
                    r.context("reading the sensors")?;
                    if events.is_empty() && !polling {
                        continue;
                    }
                    let next = drained
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(BATCH_CAPACITY));
                    if batches.send(std::mem::replace(&mut events, next)).await.is_err() {
                        break;
                    }
                }
                _ = counters_tick.tick() => {
                    let counters = self.sensor.counters();
                    if counters.dropped > dropped_reported {
                        tracing::warn!(
                            dropped = counters.dropped - dropped_reported,
                            total_dropped = counters.dropped,
                            emitted = counters.emitted,
                            "the kernel's ring buffer was full: sensor records lost (raise --ring-buffer-kib)"
                        );
                        dropped_reported = counters.dropped;
                    }
                    self.metrics.set_sensor_counters(&counters, self.sensor.decode_errors());
                    self.counters.send_replace(counters);
                }
                _ = &mut stop => break,
            }
        }
        Ok(self.sensor.decode_errors())
    }
}
