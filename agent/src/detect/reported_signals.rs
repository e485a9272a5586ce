//! What each process has been reported for, with bounds an unprivileged
//! user cannot push: at most `max_per_signal` objects per (process, signal)
//! are reported one by one (a process that opens a million distinct model
//! files is not a million findings), the rest are counted into one
//! aggregate finding; at most `max_processes` processes are tracked, the
//! least recently touched evicted first.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use vigil_domain::{Finding, SignalKind};

/// The signals and objects one process was reported for.
pub type Signals = HashSet<(SignalKind, String)>;

/// How often a flood's aggregate finding is sent again with its count
/// (and once more when the process exits).
pub const FLOOD_REPORT_EVERY: Duration = Duration::from_secs(10);
/// Objects a flood's aggregate finding lists by name.
const FLOOD_SAMPLE: usize = 10;

/// What became of a finding.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// New: report it.
    New,
    /// Already reported for this process, signal and object.
    Duplicate,
    /// Over the per-(process, signal) cap: counted, not reported; with the
    /// aggregate finding to send now, if one is due.
    Counted(Option<Box<Finding>>),
}

/// Objects over the cap for one (process, signal).
#[derive(Debug)]
struct Flood {
    /// The first finding over the cap, the mould of the aggregate.
    first: Finding,
    counted: u64,
    sample: Vec<String>,
    /// `counted` when the aggregate was last sent, and when.
    reported_count: u64,
    reported_at: Instant,
}

#[derive(Debug, Default)]
struct ProcessSignals {
    seen: Signals,
    per_signal: HashMap<SignalKind, usize>,
    floods: HashMap<SignalKind, Flood>,
    touched: u64,
}

#[derive(Debug)]
pub struct ReportedSignals {
    by_process: HashMap<u32, ProcessSignals>,
    max_per_signal: usize,
    max_processes: usize,
    tick: u64,
    suppressed: u64,
    counted: u64,
    evicted: u64,
}

impl ReportedSignals {
    pub fn new(max_per_signal: usize, max_processes: usize) -> Self {
        Self {
            by_process: HashMap::new(),
            max_per_signal: max_per_signal.max(1),
            max_processes: max_processes.max(1),
            tick: 0,
            suppressed: 0,
            counted: 0,
            evicted: 0,
        }
    }

    /// Decides whether `finding` is reported, recording it if so.
    pub fn admit(&mut self, finding: &Finding, now: Instant) -> Admission {
        let pid = finding.process.pid;
        self.make_room_for(pid);
        self.tick += 1;
        let max = self.max_per_signal;
        let entry = self.by_process.entry(pid).or_default();
        entry.touched = self.tick;
        let object = finding.object();
        let key = (finding.signal, object);
        if entry.seen.contains(&key) {
            self.suppressed += 1;
            return Admission::Duplicate;
        }
        let count = entry.per_signal.entry(finding.signal).or_default();
        if *count < max {
            *count += 1;
            entry.seen.insert(key);
            return Admission::New;
        }
        self.counted += 1;
        let (_, object) = key;
        let flood = entry.floods.entry(finding.signal).or_insert_with(|| Flood {
            first: finding.clone(),
            counted: 0,
            sample: Vec::new(),
            reported_count: 0,
            reported_at: now,
        });
        flood.counted += 1;
        if flood.sample.len() < FLOOD_SAMPLE {
            flood.sample.push(object);
        }
        let due = flood.reported_count == 0
            || now.saturating_duration_since(flood.reported_at) >= FLOOD_REPORT_EVERY;
        Admission::Counted(due.then(|| Box::new(aggregate(flood, max, now))))
    }

    /// For a process already over its cap for `signal`: counts `object`
    /// into the flood (no duplicate check: an over-cap process is not worth
    /// a lookup per event) and returns the aggregate if one is due. None
    /// when the process is not flooding: decide the event in full.
    ///
    /// This is the flood's fast path: the detector asks it before reading
    /// /proc or the file, so a flooder's records cost a map lookup each
    /// and cannot queue an unrelated process's finding behind them.
    pub fn count_if_flooding(
        &mut self,
        pid: u32,
        signal: SignalKind,
        object: &str,
        now: Instant,
    ) -> Option<Option<Finding>> {
        let max = self.max_per_signal;
        let entry = self.by_process.get_mut(&pid)?;
        let flood = entry.floods.get_mut(&signal)?;
        self.tick += 1;
        entry.touched = self.tick;
        self.counted += 1;
        flood.counted += 1;
        if flood.sample.len() < FLOOD_SAMPLE {
            flood.sample.push(object.to_string());
        }
        let due = now.saturating_duration_since(flood.reported_at) >= FLOOD_REPORT_EVERY;
        Some(due.then(|| aggregate(flood, max, now)))
    }

    /// Records signals reported before a restart.
    pub fn restore(&mut self, pid: u32, signals: Signals) {
        self.make_room_for(pid);
        self.tick += 1;
        let entry = self.by_process.entry(pid).or_default();
        entry.touched = self.tick;
        for (signal, object) in signals {
            if entry.seen.insert((signal, object)) {
                *entry.per_signal.entry(signal).or_default() += 1;
            }
        }
    }

    /// Whether `pid` was reported for `signal` about `object`.
    pub fn contains(&self, pid: u32, signal: SignalKind, object: &str) -> bool {
        self.by_process
            .get(&pid)
            .is_some_and(|p| p.seen.contains(&(signal, object.to_string())))
    }

    /// Whether `pid` was reported for `signal` about anything.
    pub fn has_signal(&self, pid: u32, signal: SignalKind) -> bool {
        self.by_process
            .get(&pid)
            .is_some_and(|p| p.per_signal.get(&signal).is_some_and(|n| *n > 0))
    }

    /// The signals reported so far for a process.
    pub fn signals(&self, pid: u32) -> Option<&Signals> {
        self.by_process.get(&pid).map(|p| &p.seen)
    }

    /// The process exited: forgets it, and returns the aggregates of its
    /// floods whose count changed since they were last sent.
    pub fn remove(&mut self, pid: u32, now: Instant) -> Vec<Finding> {
        let Some(mut entry) = self.by_process.remove(&pid) else {
            return Vec::new();
        };
        let max = self.max_per_signal;
        entry
            .floods
            .values_mut()
            .filter(|f| f.counted > f.reported_count)
            .map(|f| aggregate(f, max, now))
            .collect()
    }

    /// Findings not made again for the same process, signal and object.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Findings over a per-process cap, counted into an aggregate.
    pub fn counted(&self) -> u64 {
        self.counted
    }

    /// Processes forgotten to stay within the cap on tracked processes.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn len(&self) -> usize {
        self.by_process.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_process.is_empty()
    }

    /// At the cap, a new process evicts the least recently touched eighth
    /// (a batch, so that the cost of finding them is paid rarely).
    fn make_room_for(&mut self, pid: u32) {
        if self.by_process.len() < self.max_processes || self.by_process.contains_key(&pid) {
            return;
        }
        let mut ages: Vec<(u64, u32)> = self
            .by_process
            .iter()
            .map(|(pid, p)| (p.touched, *pid))
            .collect();
        let evict = (ages.len() / 8).max(1);
        ages.select_nth_unstable(evict - 1);
        for (_, pid) in &ages[..evict] {
            self.by_process.remove(pid);
        }
        self.evicted += evict as u64;
        tracing::warn!(
            evicted = evict,
            cap = self.max_processes,
            "tracked-process cap reached: the least recently active processes' signals are forgotten"
        );
    }
}

/// The one finding that stands for a flood: the first finding over the cap,
/// with a summary that counts them all and names the first few.
fn aggregate(flood: &mut Flood, max: usize, now: Instant) -> Finding {
    flood.reported_count = flood.counted;
    flood.reported_at = now;
    let mut finding = flood.first.clone();
    let p = &finding.process;
    let total = max as u64 + flood.counted;
    let what = match finding.signal {
        SignalKind::ModelFile => "model files".to_string(),
        other => format!("distinct {} objects", other.as_str()),
    };
    finding.summary = format!(
        "flood: pid {} ({}) opened {total} {what}; {max} reported one by one (the per-process cap), {} more counted, first {} listed: {}",
        p.pid,
        p.comm,
        flood.counted,
        flood.sample.len(),
        flood.sample.join(", ")
    );
    finding
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::{FileObject, ProcessInfo};

    fn model(pid: u32, path: &str) -> Finding {
        Finding {
            signal: SignalKind::ModelFile,
            process: ProcessInfo {
                pid,
                comm: "python3".into(),
                ..Default::default()
            },
            file: Some(FileObject { path: path.into() }),
            seq: 0,
            rule_id: "model_file".into(),
            severity: vigil_domain::Severity::High,
            observed_at_unix_nanos: 0,
            net: None,
            gpu: None,
            action: String::new(),
            summary: String::new(),
        }
    }

    #[test]
    fn objects_over_the_cap_are_counted_into_one_aggregate() {
        let mut r = ReportedSignals::new(3, 100);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(
                r.admit(&model(7, &format!("/m/{i}.onnx")), t0),
                Admission::New
            );
        }
        assert_eq!(r.admit(&model(7, "/m/0.onnx"), t0), Admission::Duplicate);
        let Admission::Counted(Some(first)) = r.admit(&model(7, "/m/3.onnx"), t0) else {
            panic!("the first object over the cap makes the aggregate");
        };
        assert!(
            first.summary.contains("opened 4 model files"),
            "{}",
            first.summary
        );
        for i in 4..1000 {
            assert_eq!(
                r.admit(&model(7, &format!("/m/{i}.onnx")), t0),
                Admission::Counted(None)
            );
        }
        // Another signal and another process have their own caps.
        assert_eq!(r.admit(&model(8, "/m/0.onnx"), t0), Admission::New);
        let later = t0 + FLOOD_REPORT_EVERY;
        let Admission::Counted(Some(update)) = r.admit(&model(7, "/m/x.onnx"), later) else {
            panic!("an update is due");
        };
        assert!(
            update.summary.contains("opened 1001 model files"),
            "{}",
            update.summary
        );
        assert!(
            update.summary.contains("first 10 listed: /m/3.onnx"),
            "{}",
            update.summary
        );
        assert_eq!(r.signals(7).unwrap().len(), 3, "bounded per process");
        r.admit(&model(7, "/m/y.onnx"), later);
        let last = r.remove(7, later);
        assert_eq!(last.len(), 1);
        assert!(
            last[0].summary.contains("opened 1002 model files"),
            "{}",
            last[0].summary
        );
        assert!(r.remove(8, later).is_empty(), "no flood, no aggregate");
    }

    #[test]
    fn a_flooding_process_is_counted_on_the_fast_path_and_others_are_not() {
        let mut r = ReportedSignals::new(2, 100);
        let t0 = Instant::now();
        let flooding = |r: &mut ReportedSignals, pid, t| {
            r.count_if_flooding(pid, SignalKind::ModelFile, "/m/n.onnx", t)
        };
        // Not over the cap yet (or unknown): decide in full.
        assert_eq!(flooding(&mut r, 7, t0), None);
        for i in 0..3 {
            r.admit(&model(7, &format!("/m/{i}.onnx")), t0);
        }
        assert_eq!(flooding(&mut r, 8, t0), None, "another process");
        assert_eq!(
            r.count_if_flooding(7, SignalKind::GpuDevice, "/dev/nvidia0", t0),
            None,
            "another signal"
        );
        // Over the cap: counted, the aggregate only when due.
        for _ in 0..100 {
            assert_eq!(flooding(&mut r, 7, t0), Some(None));
        }
        let Some(Some(update)) = flooding(&mut r, 7, t0 + FLOOD_REPORT_EVERY) else {
            panic!("an update is due");
        };
        assert!(
            update.summary.contains("opened 104 model files"),
            "{}",
            update.summary
        );
    }

    #[test]
    fn the_least_recently_active_processes_are_evicted_not_all() {
        let mut r = ReportedSignals::new(64, 16);
        let t = Instant::now();
        for pid in 0..16 {
            r.admit(&model(pid, "/m/a.onnx"), t);
        }
        // Process 0 is active again: the eviction spares it.
        r.admit(&model(0, "/m/b.onnx"), t);
        r.admit(&model(100, "/m/a.onnx"), t);
        assert_eq!(r.len(), 16 - 2 + 1);
        assert!(r.contains(0, SignalKind::ModelFile, "/m/a.onnx"));
        assert!(!r.contains(1, SignalKind::ModelFile, "/m/a.onnx"));
        assert!(r.contains(15, SignalKind::ModelFile, "/m/a.onnx"));
        assert_eq!(r.evicted(), 2);
    }
}
