//! The supervisor driving the real `vigil-sidecar` (built beside these
//! tests, with the onnxruntime wheel's library) in real cgroups: what it
//! serves, rollback on a tampered store file, restarts with backoff, an
//! OOM kill, a version the sidecar refuses, stopping. Root only (cgroups);
//! skipped with the reason otherwise.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use sha2::Digest;
use vigil_domain::{ModelRecord, ModelState, SignalKind};
use vigil_sidecar::onnx_builder::linear_fp32;

use super::*;
use crate::serve::model_store::ModelStore;
use crate::serve::store_filler::{FetchFailure, ModelSource};
use crate::serve::store_key::StoreKey;

/// Serves model files from memory, by digest.
struct Files(BTreeMap<String, Vec<u8>>);

impl ModelSource for Files {
    fn fetch_to<'a>(
        &'a self,
        sha256: &'a str,
        _size: u64,
        dest: &'a Path,
    ) -> Pin<Box<dyn Future<Output = Result<(), FetchFailure>> + Send + 'a>> {
        Box::pin(async move {
            let bytes = self.0.get(sha256).ok_or_else(|| FetchFailure {
                reason: format!("{sha256}: not found"),
                refused: true,
            })?;
            std::fs::write(dest, bytes).map_err(|e| FetchFailure {
                reason: e.to_string(),
                refused: false,
            })
        })
    }
}

fn record(name: &str, version: u64, bytes: &[u8]) -> ModelRecord {
    ModelRecord {
        name: name.into(),
        version,
        sha256: hex::encode(sha2::Sha256::digest(bytes)),
        size: bytes.len() as u64,
        format: "onnx".into(),
        state: ModelState::Approved,
        ..Default::default()
    }
}

struct Bench {
    _data: tempfile::TempDir,
    ctx: Arc<ServeContext>,
    findings: mpsc::Receiver<Vec<TimedFinding>>,
    name: String,
}

/// A context for model `name` whose files are `models`, or None (the
/// test skips) when not root.
fn bench(test: &str, models: &[&[u8]], health: Duration) -> Option<Bench> {
    if !vigil_integration::privileged(test) {
        return None;
    }
    let data = tempfile::tempdir().unwrap();
    let key = Arc::new(StoreKey::from_bytes(&[7; 32], "test").unwrap());
    let (store, _) = ModelStore::open(data.path(), key).unwrap();
    let files = Files(
        models
            .iter()
            .map(|b| (hex::encode(sha2::Sha256::digest(b)), b.to_vec()))
            .collect(),
    );
    let filler = StoreFiller::new(Arc::new(files), store, data.path()).unwrap();
    let mount = crate::procfs::Procfs::default()
        .cgroup2_mount()
        .expect("a cgroup v2 hierarchy")
        .to_path_buf();
    let (tx, rx) = mpsc::channel(64);
    let ctx = ServeContext {
        command: SidecarCommand {
            binary: vigil_integration::binary("vigil-sidecar"),
            ort_lib: vigil_integration::sidecar::ort_library(),
            intra_threads: Some(1),
        },
        sidecar_sha256: "ab".repeat(32),
        cgroups: SidecarCgroups::prepare(&mount).unwrap(),
        filler,
        data_dir: data.path().to_path_buf(),
        socket_dirs: SocketDirs::new(
            crate::serve::sidecar_process::socket_dir(data.path()).unwrap(),
            &[],
        ),
        sockets: SocketLedger::open(data.path().join("sidecar-sockets")),
        default_memory_max: 1 << 30,
        health_interval: health,
        stop_grace: Duration::from_secs(3),
        findings: tx,
        agent: ProcessInfo {
            pid: std::process::id(),
            comm: "vigil-agent".into(),
            ..Default::default()
        },
    };
    // A name of its own: tests run side by side.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("test-{}-{n}", std::process::id());
    Some(Bench {
        _data: data,
        ctx: Arc::new(ctx),
        findings: rx,
        name,
    })
}

impl Bench {
    /// The next finding with `action`, within `within` (others are kept in
    /// `seen`).
    async fn next(&mut self, action: &str, within: Duration, seen: &mut Vec<Finding>) -> Finding {
        let until = tokio::time::Instant::now() + within;
        loop {
            let batch = tokio::time::timeout_at(until, self.findings.recv())
                .await
                .unwrap_or_else(|_| panic!("no {action} finding within {within:?}; saw {seen:#?}"))
                .expect("the findings channel is open");
            for f in batch {
                assert_eq!(f.finding.signal, SignalKind::Sidecar);
                assert_ne!(f.finding.process.pid, 0, "the control plane refuses pid 0");
                if f.finding.action == action {
                    return f.finding;
                }
                seen.push(f.finding);
            }
        }
    }

    fn socket(&self) -> SidecarAddress {
        SidecarAddress::Unix(self.socket_path())
    }

    fn socket_path(&self) -> std::path::PathBuf {
        self.ctx
            .socket_dirs
            .default_dir()
            .join(format!("{}.sock", self.name))
    }

    fn memory_limit(&self) -> String {
        self.ctx.cgroups.of(&self.name).memory_limit()
    }

    fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.ctx.cgroups.dir(&self.name).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

use vigil_domain::Finding;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_active_version_rolls_back_a_tampered_file_hot_restarts_with_backoff_and_stops()
{
    let v1 = linear_fp32(8, 4, 1);
    let v2 = linear_fp32(8, 4, 2);
    let Some(mut b) = bench(
        "serves_the_active_version_rolls_back_a_tampered_file_hot_restarts_with_backoff_and_stops",
        &[&v1, &v2],
        Duration::from_millis(300),
    ) else {
        return;
    };
    let (r1, r2) = (record(&b.name, 1, &v1), record(&b.name, 2, &v2));
    let deployment = ModelDeployment {
        active: r2.clone(),
        fallbacks: vec![r1.clone()],
    };
    // The agent shields itself from the OOM killer; its sidecar must not
    // (checked where this process may lower its own score).
    let shielded = std::fs::write("/proc/self/oom_score_adj", "-500").is_ok();
    let (tx, rx) = watch::channel(Desired::Serve(Box::new(deployment.clone())));
    let task = tokio::spawn(Supervisor::new(b.ctx.clone(), deployment).run(rx));
    let mut seen = Vec::new();

    let start = b
        .next("sidecar_start", Duration::from_secs(60), &mut seen)
        .await;
    let adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", start.process.pid));
    if shielded {
        std::fs::write("/proc/self/oom_score_adj", "0").unwrap();
    }
    assert_eq!(adj.unwrap().trim(), "0");
    assert!(start.summary.contains("serving v2"), "{}", start.summary);
    assert_eq!(start.process.exe_sha256, "ab".repeat(32));
    assert_eq!(
        start.file.as_ref().unwrap().model.as_ref().unwrap().sha256,
        r2.sha256
    );
    kserve_health::check(&b.socket(), &b.name, 2, Duration::from_secs(2))
        .await
        .unwrap();
    let pids = b.pids();
    assert_eq!(pids.len(), 1);
    assert_eq!(start.process.pid, pids[0]);
    assert_eq!(b.memory_limit(), (1u64 << 30).to_string());
    // The fallback is fetched too, so a rollback needs no network.
    let store = b.ctx.filler.store().clone();
    wait_until("v1 stored", || store.contains(&r1.sha256)).await;

    // A byte of the served file flipped: back to v1 within an interval,
    // in the same sidecar.
    let path = store.path(&r2.sha256);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 1;
    let tampered = Instant::now();
    std::fs::write(&path, &bytes).unwrap();
    let rollback = b
        .next("model_rollback", Duration::from_secs(10), &mut seen)
        .await;
    assert!(
        tampered.elapsed() < Duration::from_millis(300 + 1500),
        "{:?}",
        tampered.elapsed()
    );
    assert!(
        rollback.summary.contains("from v2 to v1"),
        "{}",
        rollback.summary
    );
    assert!(rollback.summary.contains("hot"), "{}", rollback.summary);
    assert!(
        rollback.summary.contains("fails authentication"),
        "{}",
        rollback.summary
    );
    assert_eq!(rollback.severity, vigil_domain::Severity::High);
    assert_eq!(b.pids(), pids, "the same sidecar");
    kserve_health::check(&b.socket(), &b.name, 1, Duration::from_secs(2))
        .await
        .unwrap();
    // The tampered file was dropped and fetched again, yet v2 is not
    // served again until a new record set comes.
    wait_until("v2 fetched again", || {
        store.open_verified(&r2.sha256, r2.size, "x").is_ok()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    kserve_health::check(&b.socket(), &b.name, 1, Duration::from_secs(2))
        .await
        .unwrap();

    // Killed three times: back each time, waiting 250, 500, 1000 ms.
    for wait in [250, 500, 1000] {
        let before = b.pids();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(before[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let killed = Instant::now();
        let restart = b
            .next("sidecar_restart", Duration::from_secs(20), &mut seen)
            .await;
        assert!(
            killed.elapsed() >= Duration::from_millis(wait),
            "{:?}",
            killed.elapsed()
        );
        assert!(
            restart.summary.contains("killed by signal 9 (SIGKILL)"),
            "{}",
            restart.summary
        );
        assert!(
            restart
                .summary
                .contains(&format!("{wait} ms after it ended")),
            "{}",
            restart.summary
        );
        assert!(
            restart.summary.contains("serving v1"),
            "{}",
            restart.summary
        );
        assert_ne!(b.pids(), before);
    }
    assert!(seen.iter().all(|f| f.action != "sidecar_oom"), "{seen:#?}");

    // The same records again keep v2 failed; a new set (v2 re-approved
    // with another limit) tries it again.
    tx.send_replace(Desired::Serve(Box::new(ModelDeployment {
        active: r2.clone(),
        fallbacks: vec![r1.clone()],
    })));
    tokio::time::sleep(Duration::from_millis(700)).await;
    kserve_health::check(&b.socket(), &b.name, 1, Duration::from_secs(2))
        .await
        .unwrap();
    let mut r2b = r2.clone();
    r2b.memory_max_bytes = 768 << 20;
    tx.send_replace(Desired::Serve(Box::new(ModelDeployment {
        active: r2b,
        fallbacks: vec![r1.clone()],
    })));
    let load = b
        .next("model_load", Duration::from_secs(20), &mut seen)
        .await;
    assert!(load.summary.contains("from v1 to v2"), "{}", load.summary);
    assert_eq!(b.memory_limit(), (768u64 << 20).to_string());

    // Stopped: SIGTERM, its cgroup removed.
    tx.send_replace(Desired::Stop("the test is over".into()));
    let stop = b
        .next("sidecar_stop", Duration::from_secs(20), &mut seen)
        .await;
    assert!(
        stop.summary.contains("the test is over"),
        "{}",
        stop.summary
    );
    assert!(
        stop.summary.contains("its cgroup removed"),
        "{}",
        stop.summary
    );
    task.await.unwrap();
    assert!(!b.ctx.cgroups.dir(&b.name).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_over_the_memory_limit_is_an_oom_kill_and_the_version_is_refused() {
    let big = linear_fp32(4096, 4096, 3);
    let Some(mut b) = bench(
        "a_model_over_the_memory_limit_is_an_oom_kill_and_the_version_is_refused",
        &[&big],
        Duration::from_millis(300),
    ) else {
        return;
    };
    let mut r = record(&b.name, 1, &big);
    r.memory_max_bytes = 48 << 20;
    let deployment = ModelDeployment {
        active: r,
        fallbacks: vec![],
    };
    let (tx, rx) = watch::channel(Desired::Serve(Box::new(deployment.clone())));
    let task = tokio::spawn(Supervisor::new(b.ctx.clone(), deployment).run(rx));
    let mut seen = Vec::new();
    let oom = b
        .next("sidecar_oom", Duration::from_secs(60), &mut seen)
        .await;
    assert!(
        oom.summary
            .contains("OOM killer at memory.max 50331648 bytes"),
        "{}",
        oom.summary
    );
    assert_eq!(oom.severity, vigil_domain::Severity::High);
    // One OOM kill may be anyone's doing: the load is tried again, and a
    // second in a row fails the version.
    b.next("sidecar_oom", Duration::from_secs(60), &mut seen)
        .await;
    let refused = b
        .next("model_refused", Duration::from_secs(20), &mut seen)
        .await;
    assert!(
        refused
            .summary
            .contains("OOM-killed loading it 2 times in a row"),
        "{}",
        refused.summary
    );
    // Not tried again in a loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(b.pids().is_empty());
    while let Ok(batch) = b.findings.try_recv() {
        assert!(
            batch.iter().all(|f| f.finding.action != "sidecar_oom"),
            "{batch:#?}"
        );
    }
    tx.send_replace(Desired::Stop("done".into()));
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_the_sidecar_refuses_falls_back_to_the_previous_one() {
    let v1 = linear_fp32(8, 4, 1);
    let not_onnx = b"these bytes are no ONNX model".to_vec();
    let Some(mut b) = bench(
        "a_version_the_sidecar_refuses_falls_back_to_the_previous_one",
        &[&v1, &not_onnx],
        Duration::from_millis(300),
    ) else {
        return;
    };
    let (r1, r2) = (record(&b.name, 1, &v1), record(&b.name, 2, &not_onnx));
    let first = ModelDeployment {
        active: r1.clone(),
        fallbacks: vec![],
    };
    let (tx, rx) = watch::channel(Desired::Serve(Box::new(first.clone())));
    let task = tokio::spawn(Supervisor::new(b.ctx.clone(), first).run(rx));
    let mut seen = Vec::new();
    b.next("sidecar_start", Duration::from_secs(60), &mut seen)
        .await;
    tx.send_replace(Desired::Serve(Box::new(ModelDeployment {
        active: r2,
        fallbacks: vec![r1],
    })));
    let refused = b
        .next("model_refused", Duration::from_secs(20), &mut seen)
        .await;
    assert!(
        refused.summary.contains("v2 not served"),
        "{}",
        refused.summary
    );
    let rollback = b
        .next("model_rollback", Duration::from_secs(20), &mut seen)
        .await;
    assert!(
        rollback.summary.contains("rolled back to v1"),
        "{}",
        rollback.summary
    );
    kserve_health::check(&b.socket(), &b.name, 1, Duration::from_secs(2))
        .await
        .unwrap();
    tx.send_replace(Desired::Stop("done".into()));
    task.await.unwrap();
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < until, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatted_port_is_reported_never_blamed_on_the_version_and_served_once_free() {
    let v1 = linear_fp32(8, 4, 1);
    let Some(mut b) = bench(
        "a_squatted_port_is_reported_never_blamed_on_the_version_and_served_once_free",
        &[&v1],
        Duration::from_millis(300),
    ) else {
        return;
    };
    // A local user's listener on the model's port before the sidecar.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let mut r1 = record(&b.name, 1, &v1);
    r1.listen = format!("tcp:127.0.0.1:{port}");
    let deployment = ModelDeployment {
        active: r1,
        fallbacks: vec![],
    };
    let (tx, rx) = watch::channel(Desired::Serve(Box::new(deployment.clone())));
    let task = tokio::spawn(Supervisor::new(b.ctx.clone(), deployment).run(rx));
    let mut seen = Vec::new();
    let failed = b
        .next("sidecar_listen_failed", Duration::from_secs(60), &mut seen)
        .await;
    assert_eq!(failed.severity, vigil_domain::Severity::High);
    let me = std::process::id();
    assert!(
        failed.summary.contains(&format!("tcp:127.0.0.1:{port}"))
            && failed.summary.contains(&format!("pid {me} ("))
            && failed.summary.contains("status 5"),
        "{}",
        failed.summary
    );
    // Four more deaths (past the three that once failed a version): the
    // version is never refused, the finding not repeated.
    tokio::time::sleep(Duration::from_millis(250 + 500 + 1000 + 2000 + 300)).await;
    while let Ok(batch) = b.findings.try_recv() {
        seen.extend(batch.into_iter().map(|f| f.finding));
    }
    let actions: Vec<&str> = seen.iter().map(|f| f.action.as_str()).collect();
    assert!(
        !actions.contains(&"model_refused") && !actions.contains(&"sidecar_listen_failed"),
        "{actions:?}"
    );
    // The squatter leaves: the sidecar comes back on its own.
    drop(squatter);
    let start = b
        .next("sidecar_restart", Duration::from_secs(40), &mut seen)
        .await;
    assert!(start.summary.contains("serving v1"), "{}", start.summary);
    tx.send_replace(Desired::Stop("done".into()));
    task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_outside_the_agents_directories_is_refused_and_a_foreign_one_left_alone() {
    let v1 = linear_fp32(8, 4, 1);
    let Some(mut b) = bench(
        "a_socket_outside_the_agents_directories_is_refused_and_a_foreign_one_left_alone",
        &[&v1],
        Duration::from_millis(300),
    ) else {
        return;
    };
    // A record naming a path elsewhere (here: a victim socket) is refused
    // and nothing there is touched.
    let elsewhere = tempfile::tempdir().unwrap();
    let victim = elsewhere.path().join("victim.sock");
    let _victim = std::os::unix::net::UnixListener::bind(&victim).unwrap();
    let mut outside = record(&b.name, 1, &v1);
    outside.listen = format!("unix:{}", victim.display());
    let deployment = ModelDeployment {
        active: outside,
        fallbacks: vec![],
    };
    let (tx, rx) = watch::channel(Desired::Serve(Box::new(deployment.clone())));
    let task = tokio::spawn(Supervisor::new(b.ctx.clone(), deployment).run(rx));
    let mut seen = Vec::new();
    let refused = b
        .next("model_refused", Duration::from_secs(20), &mut seen)
        .await;
    assert!(
        refused
            .summary
            .contains("not one of the agent's socket directories"),
        "{}",
        refused.summary
    );
    assert!(std::fs::symlink_metadata(&victim).is_ok());
    tx.send_replace(Desired::Stop("done".into()));
    task.await.unwrap();

    // A socket the agent did not make at the default path: left alone,
    // the sidecar not started, said in a high finding; once it is gone
    // the sidecar starts on its own, and its socket goes when it stops.
    let foreign = std::os::unix::net::UnixListener::bind(b.socket_path()).unwrap();
    let deployment = ModelDeployment {
        active: record(&b.name, 1, &v1),
        fallbacks: vec![],
    };
    let (tx, rx) = watch::channel(Desired::Serve(Box::new(deployment.clone())));
    let task = tokio::spawn(Supervisor::new(b.ctx.clone(), deployment).run(rx));
    let failed = b
        .next("sidecar_listen_failed", Duration::from_secs(20), &mut seen)
        .await;
    assert!(
        failed.summary.contains("a socket of uid"),
        "{}",
        failed.summary
    );
    assert!(b.pids().is_empty());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(std::fs::symlink_metadata(b.socket_path()).is_ok());
    drop(foreign);
    std::fs::remove_file(b.socket_path()).unwrap();
    b.next("sidecar_restart", Duration::from_secs(40), &mut seen)
        .await;
    kserve_health::check(&b.socket(), &b.name, 1, Duration::from_secs(2))
        .await
        .unwrap();
    // Its working directory is an empty private one of its own.
    let pid = b.pids()[0];
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, b.ctx.data_dir.join("sidecars").join(&b.name));
    tx.send_replace(Desired::Stop("done".into()));
    task.await.unwrap();
    assert!(std::fs::symlink_metadata(b.socket_path()).is_err());
}
