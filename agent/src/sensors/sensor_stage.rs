//! The sensor stage's own task: drains the sensor and hands each batch of
//! events on whole (one channel send per ring-buffer drain, not per
//! event); once a second it publishes the kernel's counters and reports
//! a process whose records the full ring buffer lost at the flood rate (a
//! `SensorFlood` event, once per episode, for the detect stage to turn into
//! a finding).

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use vigil_domain::{SensorCounters, SensorMode};

use super::flood_watch::{FloodStart, FloodWatch};
use super::{EbpfOptions, EventContext, Sensor, SensorChoice, SensorEvent};
use crate::clock;
use crate::metrics::AgentMetrics;
use crate::procfs::Procfs;

/// Events a fresh batch has room for before it grows.
const BATCH_CAPACITY: usize = 1024;

pub struct SensorStage {
    sensor: Sensor,
    counters: watch::Sender<SensorCounters>,
    metrics: AgentMetrics,
    floods: FloodWatch,
    /// The kernel's dropped total at the last flood check, and when.
    drops_checked: (u64, Instant),
    procfs: Procfs,
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
            floods: FloodWatch::new(ebpf.flood_drops_per_sec),
            drops_checked: (0, Instant::now()),
            procfs: Procfs::default(),
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
    /// The kernel's verdicts on executable files, for the detector.
    pub fn library_verdicts(&self) -> Option<super::LibraryVerdicts> {
        self.sensor.library_verdicts()
    }

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
        let mut evicted_reported = 0u64;
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
                    if counters.evicted > evicted_reported {
                        tracing::warn!(
                            evicted = counters.evicted - evicted_reported,
                            total_evicted = counters.evicted,
                            "model/device opens lost in the kernel: no memory to keep them until their syscall returned"
                        );
                        evicted_reported = counters.evicted;
                    }
                    self.metrics.set_sensor_counters(&counters, self.sensor.decode_errors());
                    self.counters.send_replace(counters);
                    let floods = self.flood_events(&counters);
                    if !floods.is_empty() {
                        self.metrics.sensor_floods(floods.len() as u64);
                        events.extend(floods);
                        let next = drained
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(BATCH_CAPACITY));
                        if batches.send(std::mem::replace(&mut events, next)).await.is_err() {
                            break;
                        }
                    }
                }
                _ = &mut stop => break,
            }
        }
        Ok(self.sensor.decode_errors())
    }

    /// The processes that started flooding the sensors since the last
    /// check, as events. The per-process map is read only when the kernel
    /// lost records since then.
    fn flood_events(&mut self, counters: &SensorCounters) -> Vec<SensorEvent> {
        let (dropped_before, checked_at) = self.drops_checked;
        self.drops_checked = (counters.dropped, Instant::now());
        if counters.dropped == dropped_before {
            self.floods.quiet();
            return Vec::new();
        }
        let started = self
            .floods
            .observe(self.sensor.drops_by_process(), checked_at.elapsed());
        started.into_iter().map(|f| self.flood_event(f)).collect()
    }

    fn flood_event(&self, flood: FloodStart) -> SensorEvent {
        let p = self.procfs.process(flood.tgid).unwrap_or_default();
        tracing::error!(
            pid = flood.tgid,
            comm = %p.comm,
            dropped = flood.dropped,
            total_dropped = flood.dropped_total,
            "a process floods the sensors: its records are lost for a full ring buffer"
        );
        SensorEvent::SensorFlood {
            ctx: EventContext {
                ktime_boot_ns: clock::boot_now_ns(),
                cgroup_id: p.cgroup_id,
                mnt_ns: p.mnt_ns,
                tid: flood.tgid,
                pid: flood.tgid,
                ppid: p.ppid,
                uid: p.uid,
                gid: 0,
                comm: p.comm,
            },
            dropped: flood.dropped,
            dropped_total: flood.dropped_total,
        }
    }
}
