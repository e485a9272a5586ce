//! Linearizability of the replicated control plane (issue #21): clients
//! approve, revoke and list workloads on any of three nodes (each a real
//! process in a network namespace of its own) while a nemesis kills nodes
//! with SIGKILL and cuts them off from the others. Every operation is
//! recorded with when it was called, when it returned and what it
//! answered (a write with no answer, or an error that leaves its fate
//! open, is recorded as such), and the history is checked against a
//! sequential set of workload ids with the Wing & Gong / Lowe checker in
//! `vigil_integration::linearizability`. Listing is a read that must be
//! current: the node answering confirms through the leader
//! (`ensure_linearizable`, or the read index on a follower).
//!
//! `VIGIL_LINEARIZABILITY_RUNS` sets how many randomized runs (5 here;
//! `make soak` runs 100), each on a fresh cluster; a failure prints its
//! seed, and `VIGIL_LINEARIZABILITY_SEED` replays the nemesis and the
//! clients' choices. Root: network namespaces.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vigil_integration::linearizability::{check, describe_violation, Model, Operation, Verdict};
use vigil_integration::netns_cluster::{AdminConnector, NetnsCluster};
use vigil_integration::privileged;
use vigil_integration::seeded_random::Xorshift;
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::types::v1 as types_pb;

/// The approved workloads, as ids (numbers standing for `lin-<n>`).
struct WorkloadSet;

#[derive(Debug, Clone)]
enum Input {
    Approve(u32),
    Revoke(u32),
    List,
}

#[derive(Debug, Clone)]
enum Output {
    Done,
    /// Revoked an id that was not approved (a definite answer: applied).
    NotFound,
    /// No answer, or one that leaves open whether it took effect.
    Unknown,
    Listed(BTreeSet<u32>),
}

impl Model for WorkloadSet {
    type State = BTreeSet<u32>;
    type Input = Input;
    type Output = Output;

    fn init(&self) -> BTreeSet<u32> {
        BTreeSet::new()
    }

    fn step(&self, s: &BTreeSet<u32>, input: &Input, output: &Output) -> Option<BTreeSet<u32>> {
        let mut next = s.clone();
        match (input, output) {
            (Input::Approve(id), Output::Done | Output::Unknown) => {
                next.insert(*id);
            }
            (Input::Revoke(id), Output::Done) => {
                next.remove(id).then_some(())?;
            }
            (Input::Revoke(id), Output::NotFound) => {
                (!s.contains(id)).then_some(())?;
            }
            (Input::Revoke(id), Output::Unknown) => {
                next.remove(id);
            }
            (Input::List, Output::Listed(seen)) => {
                (seen == s).then_some(())?;
            }
            _ => return None,
        }
        Some(next)
    }
}

type History = Arc<Mutex<Vec<Operation<Input, Output>>>>;

const PREFIX: &str = "lin-";
/// How long a client waits for an answer before it gives up on one.
const CALL_TIMEOUT: Duration = Duration::from_secs(8);

fn workload(id: u32) -> types_pb::Workload {
    types_pb::Workload {
        id: format!("{PREFIX}{id}"),
        exe_sha256: "ab".repeat(32),
        approved_by: "linearizability test".into(),
        note: String::new(),
        ..Default::default()
    }
}

/// Runs `input` against node `node` and says what came back.
async fn run_one(connector: &AdminConnector, node: u8, input: &Input) -> Option<Output> {
    let Some(mut admin) = connector.admin_of(node).await else {
        // Not even connected: nothing was sent.
        return match input {
            Input::List => None,
            _ => Some(Output::Unknown),
        };
    };
    match input {
        Input::Approve(id) => {
            let call = admin.approve_workload(admin_pb::ApproveWorkloadRequest {
                workload: Some(workload(*id)),
            });
            Some(match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(_)) => Output::Done,
                _ => Output::Unknown,
            })
        }
        Input::Revoke(id) => {
            let call = admin.revoke_workload(admin_pb::RevokeWorkloadRequest {
                id: format!("{PREFIX}{id}"),
            });
            Some(match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(_)) => Output::Done,
                Ok(Err(s)) if s.code() == tonic::Code::NotFound => Output::NotFound,
                _ => Output::Unknown,
            })
        }
        Input::List => {
            let call = admin.list_workloads(admin_pb::ListWorkloadsRequest {});
            // A failed read constrains nothing: left out of the history.
            let listed = tokio::time::timeout(CALL_TIMEOUT, call).await.ok()?.ok()?;
            let ids = listed
                .into_inner()
                .workloads
                .into_iter()
                .filter_map(|w| w.id.strip_prefix(PREFIX)?.parse().ok())
                .collect();
            Some(Output::Listed(ids))
        }
    }
}

/// One client: random operations on random nodes until `stop`.
async fn client(
    me: usize,
    mut rng: Xorshift,
    connector: AdminConnector,
    epoch: Instant,
    history: History,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut approved: Vec<u32> = Vec::new();
    let mut next_id = me as u32 * 100_000;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let input = match rng.below(10) {
            0..=3 => {
                next_id += 1;
                Input::Approve(next_id)
            }
            // Each id is revoked once at most (see `settle_unknown`).
            4..=5 if !approved.is_empty() => {
                Input::Revoke(approved.swap_remove(rng.below(approved.len() as u64) as usize))
            }
            _ => Input::List,
        };
        let node = 1 + rng.below(3) as u8;
        let call = epoch.elapsed().as_nanos() as u64;
        let Some(output) = run_one(&connector, node, &input).await else {
            continue;
        };
        let ret = epoch.elapsed().as_nanos() as u64;
        if let (Input::Approve(id), Output::Done) = (&input, &output) {
            approved.push(*id);
        }
        let unknown = matches!(output, Output::Unknown);
        history.lock().unwrap().push(Operation {
            client: me,
            input,
            output,
            call,
            // Its effect may come at any time after the call, or never.
            ret: (!unknown).then_some(ret),
        });
        if unknown {
            // Give a struggling cluster room, as a real client would.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Narrows the operations that got no definite answer, using what the
/// reads saw, so the checker need not try every place for each of them
/// (with many such operations, its search grows beyond reach). Sound for
/// this workload, where ids are never reused, a client revokes only ids it
/// saw approved, and each id once at most, and the last reads come after
/// the cluster settled:
/// - an approval of `x` no read ever saw never took effect (or took effect
///   after the last read, which no answer tells apart): dropped;
/// - one some read saw took effect before that read's linearization point,
///   so before the earliest such read returned: that is its return;
/// - a revocation of `x` is seen as a read without `x` that began after
///   `x`'s approval was answered; with none, it never took effect and is
///   dropped; else it took effect before the earliest such read returned.
fn settle_unknown(history: Vec<Operation<Input, Output>>) -> Vec<Operation<Input, Output>> {
    let reads: Vec<(u64, u64, &BTreeSet<u32>)> = history
        .iter()
        .filter_map(|o| match &o.output {
            Output::Listed(ids) => Some((o.call, o.ret?, ids)),
            _ => None,
        })
        .collect();
    let approved_at = |x: u32| -> Option<u64> {
        history.iter().find_map(|o| match (&o.input, &o.output) {
            (Input::Approve(y), Output::Done) if *y == x => o.ret,
            _ => None,
        })
    };
    let mut settled = Vec::with_capacity(history.len());
    for mut op in history.clone() {
        if !matches!(op.output, Output::Unknown) {
            settled.push(op);
            continue;
        }
        let seen_by = match op.input {
            Input::Approve(x) => reads
                .iter()
                .filter(|(_, _, ids)| ids.contains(&x))
                .map(|(_, ret, _)| *ret)
                .min(),
            Input::Revoke(x) => {
                let after = approved_at(x).expect("a client revokes only what it saw approved");
                reads
                    .iter()
                    .filter(|(call, _, ids)| *call > after && !ids.contains(&x))
                    .map(|(_, ret, _)| *ret)
                    .min()
            }
            Input::List => None,
        };
        if let Some(ret) = seen_by {
            op.ret = Some(ret.max(op.call));
            settled.push(op);
        }
    }
    settled
}

/// One randomized run on a fresh cluster; panics on a violation.
async fn one_run(run: usize, seed: u64) {
    let mut rng = Xorshift::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let mut cluster = NetnsCluster::start(tmp.path(), 3, &["--allow-unsigned"])
        .await
        .unwrap_or_else(|e| panic!("run {run} (seed {seed}): {e}"));
    let epoch = Instant::now();
    let history: History = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|me| {
            tokio::spawn(client(
                me,
                Xorshift::new(seed ^ 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(me as u64 + 1)),
                cluster.connector(),
                epoch,
                history.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // The nemesis: four faults, each a kill (and restart) or a cut (and
    // heal) of a random node, with quiet spells between.
    let mut faults = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(700))).await;
        let victim = 1 + rng.below(3) as u8;
        if rng.below(2) == 0 {
            cluster.kill(victim);
            tokio::time::sleep(Duration::from_millis(200 + rng.below(1500))).await;
            cluster
                .start_node(victim, None)
                .unwrap_or_else(|e| panic!("run {run} (seed {seed}): restarting {victim}: {e}"));
            faults.push(format!("kill {victim}"));
        } else {
            cluster.net.cut(victim).unwrap();
            tokio::time::sleep(Duration::from_millis(500 + rng.below(2500))).await;
            cluster.net.heal().unwrap();
            faults.push(format!("cut {victim}"));
        }
    }
    // Quiet at the end, so the clients see the cluster whole again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    // A last read on every node, after everything settled.
    cluster
        .equal_digests(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("run {run} (seed {seed}): {e}"));
    let connector = cluster.connector();
    for node in 1..=3u8 {
        let call = epoch.elapsed().as_nanos() as u64;
        let output = run_one(&connector, node, &Input::List)
            .await
            .unwrap_or_else(|| panic!("run {run} (seed {seed}): node {node} did not list"));
        history.lock().unwrap().push(Operation {
            client: 99,
            input: Input::List,
            output,
            call,
            ret: Some(epoch.elapsed().as_nanos() as u64),
        });
    }

    let history = settle_unknown(history.lock().unwrap().clone());
    let count = |f: fn(&Operation<Input, Output>) -> bool| history.iter().filter(|o| f(o)).count();
    let (writes_ok, reads, unknown) = (
        count(|o| matches!(o.output, Output::Done | Output::NotFound)),
        count(|o| matches!(o.output, Output::Listed(_))),
        count(|o| matches!(o.output, Output::Unknown)),
    );
    let started = Instant::now();
    let verdict = check(&WorkloadSet, &history, 5_000_000);
    eprintln!(
        "run {run} (seed {seed}): faults {faults:?}; {} operations ({writes_ok} writes answered, {reads} reads, {unknown} without an answer but seen by a read); checked in {:?}: {}",
        history.len(),
        started.elapsed(),
        if verdict.is_linearizable() { "linearizable" } else { "NOT linearizable" }
    );
    assert!(
        writes_ok > 0 && reads > 0,
        "run {run} (seed {seed}): too little happened"
    );
    match &verdict {
        Verdict::Linearizable => {}
        Verdict::Undecided { steps } => {
            panic!("run {run} (seed {seed}): the checker gave up after {steps} steps")
        }
        Verdict::Violation { .. } => panic!(
            "run {run} (seed {seed}): {}\n{}",
            describe_violation(&history, &verdict),
            cluster.logs()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histories_under_kills_and_partitions_are_linearizable() {
    if !privileged("histories_under_kills_and_partitions_are_linearizable") {
        return;
    }
    let runs: usize = std::env::var("VIGIL_LINEARIZABILITY_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let replay: Option<u64> = std::env::var("VIGIL_LINEARIZABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let base = replay.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1
    });
    for run in 0..runs {
        let seed = if replay.is_some() {
            base
        } else {
            base.wrapping_add(0x2545_f491_4f6c_dd1d_u64.wrapping_mul(run as u64)) | 1
        };
        one_run(run, seed).await;
        if replay.is_some() {
            break;
        }
    }
}
