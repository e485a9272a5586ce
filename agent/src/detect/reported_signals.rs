//! What each process has been reported for, with bounds an unprivileged
//! user cannot push: at most `max_per_signal` objects per (process, signal)
//! are reported one by one (a process that opens a million distinct model
//! files is not a million findings), the rest are counted into one
//! aggregate finding; at most `max_per_uid` objects per (uid, signal) in a
//! window of [`UID_WINDOW`] (a user who forks many processes is not many
//! times the per-process cap), the rest counted into one aggregate that
//! names the uid and its busiest processes (root excepted). Past the uid's
//! cap a process's first object for a signal is still reported one by one:
//! a user who spends the cap on decoys must not hide a new process's model
//! load in the aggregate (issue #19). A fork flood then costs a process per
//! finding, bounded by the cap on tracked processes. The uid's aggregate is
//! an alert only ([`is_uid_flood_aggregate`]): the processes it names may
//! be decoys long gone. At most `max_processes`
//! processes and [`MAX_TRACKED_UIDS`] (uid, signal) pairs are tracked, the
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
/// How long a uid's objects count against its cap: a user who opens many
/// distinct models over a day is not a flood; the same in minutes is.
pub const UID_WINDOW: Duration = Duration::from_secs(600);
/// The one uid without a per-user cap: root can stop the agent anyway, so
/// a cap would defend nothing, and would count the host's own many
/// short-lived root processes (package managers, cron, an operator's
/// checks) as a flood. Root's processes keep the per-process cap.
const ROOT: u32 = 0;
/// Uids tracked at most (a container can map many).
pub const MAX_TRACKED_UIDS: usize = 4096;
/// Processes a uid flood tallies one by one (the busiest are kept, by the
/// space-saving scheme: a newcomer replaces the least busy).
const FLOOD_PIDS: usize = 64;
/// Processes a uid flood's aggregate names.
const FLOOD_PIDS_LISTED: usize = 5;

/// How a flood's aggregate finding's summary starts.
const FLOOD_SUMMARY: &str = "flood: ";
/// How a uid flood's aggregate finding's summary starts.
const UID_FLOOD_SUMMARY: &str = "flood: uid ";
/// Objects per (process, signal) reported one by one once the process's
/// uid is over its cap: the process is named, so a rule's action reaches it.
const FIRST_PAST_UID_CAP: usize = 1;

/// Whether `finding` is a flood's aggregate (made here, never by a rule):
/// one finding that stands for many, kept before the findings it counts.
pub fn is_flood_aggregate(finding: &Finding) -> bool {
    finding.summary.starts_with(FLOOD_SUMMARY)
}

/// Whether `finding` is a uid flood's aggregate: it stands for many
/// processes, the one it was moulded on maybe a decoy long gone, so no
/// rule's action may be carried out on it (it is an alert only).
pub fn is_uid_flood_aggregate(finding: &Finding) -> bool {
    finding.summary.starts_with(UID_FLOOD_SUMMARY)
}

/// What became of a finding.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// New: report it.
    New,
    /// Already reported for this process, signal and object.
    Duplicate,
    /// Over the per-(process, signal) or per-(uid, signal) cap: counted,
    /// not reported; with the aggregate finding to send now, if one is due.
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

/// What one uid was reported for, per signal.
#[derive(Debug, Default)]
struct UidSignals {
    budgets: HashMap<SignalKind, UidBudget>,
    touched: u64,
}

/// Objects one uid was reported for, for one signal, in the current window.
#[derive(Debug)]
struct UidBudget {
    window_started: Instant,
    reported: usize,
    flood: Option<UidFlood>,
}

impl UidBudget {
    /// Whether the uid has used its cap in the current window.
    fn spent(&self, max: usize, now: Instant) -> bool {
        self.reported >= max && now.saturating_duration_since(self.window_started) < UID_WINDOW
    }
}

/// Objects over the cap for one (uid, signal), by any of its processes.
#[derive(Debug)]
struct UidFlood {
    flood: Flood,
    /// Objects counted per process, the busiest [`FLOOD_PIDS`].
    pids: HashMap<u32, u64>,
}

impl UidFlood {
    fn count(&mut self, pid: u32, object: &str) {
        self.flood.count(object);
        if let Some(n) = self.pids.get_mut(&pid) {
            *n += 1;
            return;
        }
        if self.pids.len() < FLOOD_PIDS {
            self.pids.insert(pid, 1);
            return;
        }
        // Space-saving: the newcomer takes the least busy one's place and
        // count (an over-estimate, never an under-estimate, of its own).
        if let Some((&least, &n)) = self.pids.iter().min_by_key(|(_, n)| **n) {
            self.pids.remove(&least);
            self.pids.insert(pid, n + 1);
        }
    }
}

impl Flood {
    fn new(first: &Finding, now: Instant) -> Self {
        Self {
            first: first.clone(),
            counted: 0,
            sample: Vec::new(),
            reported_count: 0,
            reported_at: now,
        }
    }

    fn count(&mut self, object: &str) {
        self.counted += 1;
        if self.sample.len() < FLOOD_SAMPLE {
            self.sample.push(object.to_string());
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.reported_count == 0
            || now.saturating_duration_since(self.reported_at) >= FLOOD_REPORT_EVERY
    }
}

#[derive(Debug)]
pub struct ReportedSignals {
    by_process: HashMap<u32, ProcessSignals>,
    by_uid: HashMap<u32, UidSignals>,
    max_per_signal: usize,
    max_per_uid: usize,
    max_processes: usize,
    tick: u64,
    suppressed: u64,
    counted: u64,
    evicted: u64,
    /// What processes that exited were reported for, per signal, kept a
    /// while (oldest dropped past `EXITED_KEPT`): a finding completed after
    /// its process exited (a model examined off the loop) is not that
    /// process's first again, so it cannot pass a spent uid cap as one.
    exited: HashMap<u32, (Instant, HashMap<SignalKind, usize>)>,
    exited_order: std::collections::VecDeque<u32>,
}

/// Exited processes whose reported counts are kept, and for how long (a
/// reused pid after that is a new process).
const EXITED_KEPT: usize = 4096;
const EXITED_FOR: std::time::Duration = std::time::Duration::from_secs(30);

impl ReportedSignals {
    pub fn new(max_per_signal: usize, max_per_uid: usize, max_processes: usize) -> Self {
        Self {
            by_process: HashMap::new(),
            by_uid: HashMap::new(),
            max_per_signal: max_per_signal.max(1),
            max_per_uid: max_per_uid.max(1),
            max_processes: max_processes.max(1),
            tick: 0,
            suppressed: 0,
            counted: 0,
            evicted: 0,
            exited: HashMap::new(),
            exited_order: std::collections::VecDeque::new(),
        }
    }

    /// Decides whether `finding` is reported, recording it if so.
    pub fn admit(&mut self, finding: &Finding, now: Instant) -> Admission {
        let pid = finding.process.pid;
        let uid = finding.process.uid;
        self.make_room_for(pid);
        if uid != ROOT {
            self.make_room_for_uid(uid);
        }
        self.tick += 1;
        let max = self.max_per_signal;
        let exited = &mut self.exited;
        let entry = self
            .by_process
            .entry(pid)
            .or_insert_with(|| ProcessSignals {
                per_signal: exited
                    .remove(&pid)
                    .filter(|(at, _)| now.saturating_duration_since(*at) < EXITED_FOR)
                    .map(|(_, counts)| counts)
                    .unwrap_or_default(),
                ..Default::default()
            });
        entry.touched = self.tick;
        let object = finding.object();
        let key = (finding.signal, object);
        if entry.seen.contains(&key) {
            self.suppressed += 1;
            return Admission::Duplicate;
        }
        let count = entry.per_signal.entry(finding.signal).or_default();
        if *count < max && uid == ROOT {
            *count += 1;
            entry.seen.insert(key);
            return Admission::New;
        }
        if *count < max {
            let uid_signals = self.by_uid.entry(uid).or_default();
            uid_signals.touched = self.tick;
            let budget = uid_signals
                .budgets
                .entry(finding.signal)
                .or_insert_with(|| UidBudget {
                    window_started: now,
                    reported: 0,
                    flood: None,
                });
            if now.saturating_duration_since(budget.window_started) >= UID_WINDOW {
                budget.window_started = now;
                budget.reported = 0;
            }
            if budget.reported < self.max_per_uid {
                budget.reported += 1;
                *count += 1;
                entry.seen.insert(key);
                return Admission::New;
            }
            if *count < FIRST_PAST_UID_CAP {
                // The uid's cap is spent, but this process was never
                // reported for this signal: it is named, not hidden in the
                // aggregate among the decoys that spent the cap.
                *count += 1;
                entry.seen.insert(key);
                return Admission::New;
            }
            // The uid's cap, not the process's: counted into the uid's
            // flood, which names the uid and its busiest processes.
            self.counted += 1;
            let (_, object) = key;
            let flood = budget.flood.get_or_insert_with(|| UidFlood {
                flood: Flood::new(finding, now),
                pids: HashMap::new(),
            });
            flood.count(pid, &object);
            let due = flood.flood.due(now);
            let max = self.max_per_uid;
            return Admission::Counted(due.then(|| Box::new(uid_aggregate(flood, max, now))));
        }
        self.counted += 1;
        let (_, object) = key;
        let flood = entry
            .floods
            .entry(finding.signal)
            .or_insert_with(|| Flood::new(finding, now));
        flood.count(&object);
        let due = flood.due(now);
        Admission::Counted(due.then(|| Box::new(aggregate(flood, max, now))))
    }

    /// For a process already over its cap for `signal`, or whose uid is
    /// over its own and that was already reported for `signal`: counts `object` into the flood (no duplicate check:
    /// an over-cap process is not worth a lookup per event) and returns
    /// the aggregate if one is due. None when neither is flooding: decide
    /// the event in full.
    ///
    /// This is the flood's fast path: the detector asks it before reading
    /// /proc or the file, so a flooder's records cost a map lookup each
    /// and cannot queue an unrelated process's finding behind them.
    pub fn count_if_flooding(
        &mut self,
        pid: u32,
        uid: u32,
        signal: SignalKind,
        object: &str,
        now: Instant,
    ) -> Option<Option<Finding>> {
        let max = self.max_per_signal;
        if let Some(entry) = self.by_process.get_mut(&pid) {
            if let Some(flood) = entry.floods.get_mut(&signal) {
                self.tick += 1;
                entry.touched = self.tick;
                self.counted += 1;
                flood.count(object);
                let due = flood.due(now);
                return Some(due.then(|| aggregate(flood, max, now)));
            }
        }
        // A process not yet reported for this signal is decided in full
        // even past its uid's cap (see `admit`).
        let reported = self
            .by_process
            .get(&pid)
            .and_then(|p| p.per_signal.get(&signal))
            .copied()
            .unwrap_or(0);
        if reported < FIRST_PAST_UID_CAP {
            return None;
        }
        let max = self.max_per_uid;
        let uid_signals = self.by_uid.get_mut(&uid)?;
        let flood = uid_signals
            .budgets
            .get_mut(&signal)
            .filter(|budget| budget.spent(max, now))?
            .flood
            .as_mut()?;
        self.tick += 1;
        uid_signals.touched = self.tick;
        self.counted += 1;
        flood.count(pid, object);
        let due = flood.flood.due(now);
        Some(due.then(|| uid_aggregate(flood, max, now)))
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

    /// Process `pid` of `uid` exited: forgets it, and returns the
    /// aggregates of its floods, and of its uid's floods it took part in,
    /// whose count changed since they were last sent.
    pub fn remove(&mut self, pid: u32, uid: u32, now: Instant) -> Vec<Finding> {
        let mut last = Vec::new();
        if let Some(mut entry) = self.by_process.remove(&pid) {
            if self.exited_order.len() >= EXITED_KEPT {
                if let Some(old) = self.exited_order.pop_front() {
                    self.exited.remove(&old);
                }
            }
            self.exited_order.push_back(pid);
            self.exited
                .insert(pid, (now, std::mem::take(&mut entry.per_signal)));
            let max = self.max_per_signal;
            last.extend(
                entry
                    .floods
                    .values_mut()
                    .filter(|f| f.counted > f.reported_count)
                    .map(|f| aggregate(f, max, now)),
            );
        }
        let max = self.max_per_uid;
        let floods = self
            .by_uid
            .get_mut(&uid)
            .into_iter()
            .flat_map(|u| u.budgets.values_mut())
            .filter_map(|b| b.flood.as_mut());
        for flood in floods {
            if flood.flood.counted > flood.flood.reported_count && flood.pids.contains_key(&pid) {
                last.push(uid_aggregate(flood, max, now));
            }
        }
        last
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

    /// At the cap, a new uid evicts the least recently touched eighth, as
    /// processes are.
    fn make_room_for_uid(&mut self, uid: u32) {
        if self.by_uid.len() < MAX_TRACKED_UIDS || self.by_uid.contains_key(&uid) {
            return;
        }
        let mut ages: Vec<(u64, u32)> = self.by_uid.iter().map(|(u, s)| (s.touched, *u)).collect();
        let evict = (ages.len() / 8).max(1);
        ages.select_nth_unstable(evict - 1);
        for (_, uid) in &ages[..evict] {
            self.by_uid.remove(uid);
        }
        tracing::warn!(
            evicted = evict,
            cap = MAX_TRACKED_UIDS,
            "tracked-uid cap reached: the least recently active uids' counts are forgotten"
        );
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
        "{FLOOD_SUMMARY}pid {} ({}) opened {total} {what}; {max} reported one by one (the per-process cap), {} more counted, first {} listed: {}",
        p.pid,
        p.comm,
        flood.counted,
        flood.sample.len(),
        flood.sample.join(", ")
    );
    finding
}

/// The one finding that stands for a uid's flood: the first finding over
/// the uid's cap, with a summary that names the uid, counts the objects,
/// and names its busiest processes and the first few objects.
fn uid_aggregate(flood: &mut UidFlood, max: usize, now: Instant) -> Finding {
    let f = &mut flood.flood;
    f.reported_count = f.counted;
    f.reported_at = now;
    let mut finding = f.first.clone();
    finding.action = String::new();
    let mut busiest: Vec<(u32, u64)> = flood.pids.iter().map(|(p, n)| (*p, *n)).collect();
    busiest.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let listed: Vec<String> = busiest
        .iter()
        .take(FLOOD_PIDS_LISTED)
        .map(|(pid, n)| format!("pid {pid} ({n})"))
        .collect();
    let what = match finding.signal {
        SignalKind::ModelFile => "model files".to_string(),
        other => format!("distinct {} objects", other.as_str()),
    };
    finding.summary = format!(
        "{UID_FLOOD_SUMMARY}{} opened {} more {what} past the per-user cap ({max} reported one by one in {} min, and each process's first), from {}{} processes; busiest: {}; first {} listed: {}; alert only: no action is taken on this aggregate (the processes it names may be gone), each process's own findings carry the rules' actions",
        finding.process.uid,
        f.counted,
        UID_WINDOW.as_secs() / 60,
        if flood.pids.len() >= FLOOD_PIDS { "at least " } else { "" },
        flood.pids.len(),
        listed.join(", "),
        f.sample.len(),
        f.sample.join(", ")
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
            file: Some(FileObject::at(path)),
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
        let mut r = ReportedSignals::new(3, 1000, 100);
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
        let last = r.remove(7, 0, later);
        assert_eq!(last.len(), 1);
        assert!(
            last[0].summary.contains("opened 1002 model files"),
            "{}",
            last[0].summary
        );
        assert!(r.remove(8, 0, later).is_empty(), "no flood, no aggregate");
    }

    #[test]
    fn a_flooding_process_is_counted_on_the_fast_path_and_others_are_not() {
        let mut r = ReportedSignals::new(2, 1000, 100);
        let t0 = Instant::now();
        let flooding = |r: &mut ReportedSignals, pid, t| {
            r.count_if_flooding(pid, 0, SignalKind::ModelFile, "/m/n.onnx", t)
        };
        // Not over the cap yet (or unknown): decide in full.
        assert_eq!(flooding(&mut r, 7, t0), None);
        for i in 0..3 {
            r.admit(&model(7, &format!("/m/{i}.onnx")), t0);
        }
        assert_eq!(flooding(&mut r, 8, t0), None, "another process");
        assert_eq!(
            r.count_if_flooding(7, 0, SignalKind::GpuDevice, "/dev/nvidia0", t0),
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

    fn model_of(uid: u32, pid: u32, path: &str) -> Finding {
        let mut f = model(pid, path);
        f.process.uid = uid;
        f
    }

    #[test]
    fn many_processes_of_one_user_share_the_users_cap() {
        const NOBODY: u32 = 65534;
        let mut r = ReportedSignals::new(3, 8, 100);
        let t0 = Instant::now();
        let mut new = 0;
        let mut aggregates = Vec::new();
        // 10 processes, 5 distinct objects each: 50 objects, 10 × 3 under
        // the per-process cap alone.
        for pid in 100..110 {
            for i in 0..5 {
                let path = format!("/m/{pid}-{i}.onnx");
                match r.count_if_flooding(pid, NOBODY, SignalKind::ModelFile, &path, t0) {
                    Some(aggregate) => aggregates.extend(aggregate),
                    None => match r.admit(&model_of(NOBODY, pid, &path), t0) {
                        Admission::New => new += 1,
                        Admission::Duplicate => panic!("distinct objects"),
                        Admission::Counted(aggregate) => aggregates.extend(aggregate.map(|a| *a)),
                    },
                }
            }
        }
        assert_eq!(
            new,
            8 + 7,
            "the user's cap, and each later process's first, not 10 × the process's"
        );
        // Processes 100 and 101 went over their own cap first (3 each);
        // 102 took the user's last 2, 103..109 their first one each.
        let (of_uid, of_pid): (Vec<_>, Vec<_>) = aggregates
            .iter()
            .partition(|a| a.summary.starts_with("flood: uid 65534 "));
        assert_eq!(of_pid.len(), 2, "{of_pid:?}");
        assert!(aggregates.iter().all(is_flood_aggregate));
        assert_eq!(of_uid.len(), 1, "one aggregate until an update is due");
        let summary = &of_uid[0].summary;
        assert!(
            summary.starts_with(
                "flood: uid 65534 opened 1 more model files past the per-user cap (8 reported"
            ),
            "{summary}"
        );
        // Another user, and the same user's other signals, are not capped.
        assert_eq!(
            r.admit(&model_of(1000, 200, "/m/a.onnx"), t0),
            Admission::New
        );
        // Nor is root (per process only).
        for pid in 400..410 {
            for i in 0..3 {
                let path = format!("/m/{pid}-{i}.onnx");
                assert_eq!(
                    r.count_if_flooding(pid, 0, SignalKind::ModelFile, &path, t0),
                    None
                );
                assert_eq!(r.admit(&model_of(0, pid, &path), t0), Admission::New);
            }
        }
        let mut gpu = model_of(NOBODY, 100, "/dev/nvidia0");
        gpu.signal = SignalKind::GpuDevice;
        assert_eq!(r.admit(&gpu, t0), Admission::New);
        // The update names the count and the busiest processes first.
        for _ in 0..7 {
            r.count_if_flooding(105, NOBODY, SignalKind::ModelFile, "/m/x.onnx", t0);
        }
        let later = t0 + FLOOD_REPORT_EVERY;
        let Some(Some(update)) =
            r.count_if_flooding(106, NOBODY, SignalKind::ModelFile, "/m/y.onnx", later)
        else {
            panic!("an update is due");
        };
        assert!(
            update.summary.contains("opened 39 more model files"),
            "{}",
            update.summary
        );
        assert!(
            update
                .summary
                .contains("from 8 processes; busiest: pid 105 (11), "),
            "{}",
            update.summary
        );
        // The aggregate goes again when a process that took part exits,
        // only if its count changed.
        assert!(r.remove(106, NOBODY, later).is_empty());
        r.count_if_flooding(107, NOBODY, SignalKind::ModelFile, "/m/z.onnx", later);
        let last = r.remove(100, NOBODY, later);
        assert!(
            last.iter()
                .all(|a| a.summary.starts_with("flood: pid 100 ")),
            "pid 100 took no part in the user's flood: {last:?}"
        );
        let last = r.remove(107, NOBODY, later);
        assert_eq!(last.len(), 1);
        assert!(
            last[0].summary.contains("opened 40 more"),
            "{}",
            last[0].summary
        );
        // A new window: the user's objects are reported again.
        let next = t0 + UID_WINDOW;
        assert_eq!(
            r.count_if_flooding(300, NOBODY, SignalKind::ModelFile, "/m/n.onnx", next),
            None
        );
        assert_eq!(
            r.admit(&model_of(NOBODY, 300, "/m/n.onnx"), next),
            Admission::New
        );
    }

    #[test]
    fn past_the_users_cap_a_new_process_is_still_named() {
        const NOBODY: u32 = 65534;
        let mut r = ReportedSignals::new(64, 8, 100);
        let t0 = Instant::now();
        // Decoys spend the user's cap and start its flood.
        for i in 0..20 {
            let path = format!("/m/decoy-{i}.gguf");
            if r.count_if_flooding(100, NOBODY, SignalKind::ModelFile, &path, t0)
                .is_none()
            {
                let _ = r.admit(&model_of(NOBODY, 100, &path), t0);
            }
        }
        // A new process's load is decided in full and reported.
        let real = "/m/real/llama-3-8b-secret.gguf";
        assert_eq!(
            r.count_if_flooding(200, NOBODY, SignalKind::ModelFile, real, t0),
            None
        );
        assert_eq!(r.admit(&model_of(NOBODY, 200, real), t0), Admission::New);
        // Its next objects are counted into the user's aggregate, which
        // carries no action.
        let mut aggregate = model_of(NOBODY, 100, "/m/x.gguf");
        aggregate.action = "kill".into();
        let mut flood = UidFlood {
            flood: Flood::new(&aggregate, t0),
            pids: HashMap::new(),
        };
        flood.count(100, "/m/x.gguf");
        let finding = uid_aggregate(&mut flood, 8, t0);
        assert!(is_uid_flood_aggregate(&finding), "{}", finding.summary);
        assert!(
            finding.summary.contains("alert only"),
            "{}",
            finding.summary
        );
        assert_eq!(finding.action, "");
        assert_eq!(
            r.count_if_flooding(200, NOBODY, SignalKind::ModelFile, "/m/y.gguf", t0),
            Some(None)
        );
        assert!(r.contains(200, SignalKind::ModelFile, real));
    }

    /// A model examined off the loop may complete after its process
    /// exited: it is not that process's first finding again, so it cannot
    /// pass a spent uid cap as one; a reused pid after a while is new.
    #[test]
    fn a_finding_completed_after_its_process_exited_is_not_its_first_again() {
        const NOBODY: u32 = 65534;
        let mut r = ReportedSignals::new(64, 2, 100);
        let t0 = Instant::now();
        assert_eq!(
            r.admit(&model_of(NOBODY, 100, "/m/a.onnx"), t0),
            Admission::New
        );
        assert_eq!(
            r.admit(&model_of(NOBODY, 100, "/m/b.onnx"), t0),
            Admission::New
        );
        // The cap is spent; pid 300's first is named.
        assert_eq!(
            r.admit(&model_of(NOBODY, 300, "/m/c.onnx"), t0),
            Admission::New
        );
        r.remove(300, NOBODY, t0);
        // Its late second is not a first: counted into the user's flood.
        assert_ne!(
            r.admit(&model_of(NOBODY, 300, "/m/d.onnx"), t0),
            Admission::New
        );
        // The pid reused long after is a new process, named.
        r.remove(300, NOBODY, t0);
        let later = t0 + EXITED_FOR + std::time::Duration::from_secs(1);
        assert_eq!(
            r.admit(&model_of(NOBODY, 300, "/m/e.onnx"), later),
            Admission::New
        );
    }

    #[test]
    fn a_uid_flood_tallies_a_bounded_number_of_processes() {
        let mut r = ReportedSignals::new(64, 1, 100_000);
        let t0 = Instant::now();
        r.admit(&model_of(5, 1, "/m/first.onnx"), t0);
        for pid in 2..10_000 {
            // Each process's first object is its own finding; its second
            // is counted into the uid's flood.
            assert_eq!(r.admit(&model_of(5, pid, "/m/a.onnx"), t0), Admission::New);
            let _ = r.admit(&model_of(5, pid, "/m/b.onnx"), t0);
        }
        let flood = r.by_uid[&5].budgets[&SignalKind::ModelFile]
            .flood
            .as_ref()
            .unwrap();
        assert_eq!(flood.pids.len(), FLOOD_PIDS);
        assert_eq!(flood.flood.counted, 9_998);
        assert_eq!(flood.flood.sample.len(), FLOOD_SAMPLE);
    }

    #[test]
    fn the_least_recently_active_processes_are_evicted_not_all() {
        let mut r = ReportedSignals::new(64, 1000, 16);
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
