//! The agent runs approved models through supervised sidecars (issue #24),
//! end to end with the real binaries: a control plane holding signed model
//! records, vigilctl registering and approving them, an agent (root: eBPF
//! sensors, cgroups) that fetches the files into its encrypted store and
//! runs `vigil-sidecar` in `<cgroup2>/vigil/sidecars/<name>`.
//!
//! - Versions 1 and 2 approved: version 2 is served, and the unchanged
//!   Triton client (`tritonclient.grpc`) gets what onnxruntime in Python
//!   computes; the sidecar raises no shadow-AI alert; no plaintext of the
//!   model is left on disk.
//! - One byte of the stored version 2 overwritten: rolled back to version
//!   1 within a health interval (hot: a client inferring all along sees no
//!   error), with a `model_rollback` alert and its audit entry.
//! - The sidecar killed with SIGKILL five times: back each time, after
//!   250, 500, 1000, 2000 and 4000 ms.
//! - Every version revoked: the sidecar stops and its cgroup goes.
//! - A model over its memory limit: an OOM kill reported (`sidecar_oom`),
//!   the agent still running.
//! - Records signed by a key the agent does not trust are never loaded.
//! - A local user listening on the model's TCP port first: a
//!   `sidecar_listen_failed` alert naming them, no rollback or refusal,
//!   and the sidecar serving on its own once they leave.
//! - A local user cannot read the store's plaintext or key, cannot reach
//!   the control socket, and links planted at the socket or store paths
//!   are neither followed nor deleted.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use tonic::transport::{Channel, Endpoint, Uri};
use vigil_integration::sidecar::{python_path, triton_client_script, Sidecar, SidecarListen};
use vigil_integration::unprivileged::python_as_nobody;
use vigil_integration::{cgroup2_mount, privileged, try_wait_for, wait_for, Agent, ControlPlane};
use vigil_policy::SigningKey;
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use vigil_proto::kserve::model_infer_request::InferInputTensor;
use vigil_proto::kserve::{ModelInferRequest, ModelReadyRequest};
use vigil_proto::types::v1::Alert;
use vigil_sidecar::onnx_builder::linear_fp32;

/// The agents' health interval here (the default is 2 s).
const HEALTH_MS: u64 = 500;

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
fn succeeds(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A control plane trusting `keys`, and the admin key file of the first.
struct Fleet {
    cp: ControlPlane,
    key_file: PathBuf,
}

fn start_fleet(tmp: &Path, keys: &[&SigningKey]) -> Fleet {
    let mut flags: Vec<String> = vec!["--max-model-mib".into(), "96".into()];
    for k in keys {
        flags.push("--trusted-policy-key".into());
        flags.push(k.public_hex());
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cp = ControlPlane::start_with(&tmp.join("cp"), vigil_integration::free_port(), &flags);
    let key_file = tmp.join("admin.key");
    std::fs::write(&key_file, keys[0].secret_hex()).unwrap();
    Fleet { cp, key_file }
}

impl Fleet {
    /// `vigilctl model register NAME VERSION FILE --key K [extra]`, then
    /// approve.
    fn register_and_approve(
        &self,
        key_file: &Path,
        name: &str,
        version: u64,
        file: &Path,
        extra: &[&str],
    ) {
        let v = version.to_string();
        let mut args = vec![
            "model",
            "register",
            name,
            &v,
            file.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        succeeds(self.cp.vigilctl(&args));
        succeeds(
            self.cp
                .vigilctl(&["model", "approve", name, &v, "--reason", "tested"]),
        );
    }

    async fn audit(&self) -> Vec<admin_pb::AuditEntry> {
        self.cp
            .admin()
            .await
            .list_audit(admin_pb::ListAuditRequest {
                after_index: 0,
                limit: 10_000,
            })
            .await
            .unwrap()
            .into_inner()
            .entries
    }
}

/// The agent, trusting `key`, with a short health interval.
async fn start_agent(
    tmp: &Path,
    fleet: &Fleet,
    key: &SigningKey,
    extra: &[&str],
) -> (Agent, PathBuf) {
    let data = tmp.join("agent");
    std::fs::create_dir_all(&data).unwrap();
    let health = HEALTH_MS.to_string();
    let public = key.public_hex();
    let mut flags = vec![
        "--trusted-policy-key",
        public.as_str(),
        "--sidecar-health-interval-ms",
        &health,
        "--tpm",
        "off",
    ];
    flags.extend_from_slice(extra);
    let agent = Agent::start_with(&data, &fleet.cp.endpoint(), "serve-host", &flags).await;
    (agent, data)
}

/// [`wait_for`], panicking with the end of the agent's log.
async fn waiting<T, F, Fut>(agent: &Agent, what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match try_wait_for(what, timeout, f).await {
        Ok(v) => v,
        Err(e) => {
            let log = agent.log_text();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("serve") || l.contains("sidecar") || l.contains("model"))
                .collect();
            let from = tail.len().saturating_sub(80);
            panic!("{e}\nthe agent's log:\n{}", tail[from..].join("\n"))
        }
    }
}

/// Waits for an alert matching `pred`; every alert then held. Panics
/// with the end of the agent's log.
async fn alert_with(
    agent: &Agent,
    cp: &ControlPlane,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Alert) -> bool,
) -> Vec<Alert> {
    waiting(agent, what, timeout, || async {
        let alerts = cp.try_alerts().await.ok()?;
        alerts.iter().any(&pred).then_some(alerts)
    })
    .await
}

fn actions(alerts: &[Alert], action: &str) -> Vec<Alert> {
    alerts
        .iter()
        .filter(|a| a.finding.as_ref().is_some_and(|f| f.action == action))
        .cloned()
        .collect()
}

fn summary(a: &Alert) -> &str {
    a.finding.as_ref().map_or("", |f| f.summary.as_str())
}

fn has(action: &'static str, needle: &'static str) -> impl Fn(&Alert) -> bool {
    move |a: &Alert| {
        a.finding
            .as_ref()
            .is_some_and(|f| f.action == action && f.summary.contains(needle))
    }
}

/// The pids in the sidecar's cgroup.
fn sidecar_pids(name: &str) -> Vec<u32> {
    std::fs::read_to_string(
        cgroup2_mount()
            .join("vigil/sidecars")
            .join(name)
            .join("cgroup.procs"),
    )
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

/// A KServe client on the sidecar's unix socket.
async fn kserve(socket: &Path) -> Option<GrpcInferenceServiceClient<Channel>> {
    let path = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(5))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .ok()?;
    Some(GrpcInferenceServiceClient::new(channel))
}

async fn model_ready(socket: &Path, name: &str, version: u64) -> bool {
    let Some(mut client) = kserve(socket).await else {
        return false;
    };
    client
        .model_ready(ModelReadyRequest {
            name: name.into(),
            version: version.to_string(),
        })
        .await
        .is_ok_and(|r| r.into_inner().ready)
}

fn infer_request(name: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: name.into(),
        inputs: vec![InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 8],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(
            (0..8)
                .flat_map(|i| (i as f32).to_le_bytes())
                .collect::<Vec<u8>>(),
        )],
        ..Default::default()
    }
}

/// The Triton client fixture against the sidecar: outputs equal to
/// onnxruntime's in Python.
fn triton_client(socket: &Path, name: &str, model: &Path, version: u64) {
    let out = Command::new("python3")
        .arg(triton_client_script())
        .arg(format!("unix://{}", socket.display()))
        .arg(name)
        .arg(model)
        .arg(version.to_string())
        .env("PYTHONPATH", python_path())
        .output()
        .unwrap();
    let stdout = succeeds(out);
    assert!(stdout.contains("\"ok\": true"), "{stdout}");
}

/// Every file under `dir` (not following links).
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if meta.is_dir() {
            files_under(&e.path(), out);
        } else if meta.is_file() {
            out.push(e.path());
        }
    }
}

/// Files under `dirs` holding `needle`.
fn holding(dirs: &[&Path], needle: &[u8]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files);
    }
    files
        .into_iter()
        .filter(|f| std::fs::read(f).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

/// The detections (not the agent's own actions) whose process is one of
/// `pids`.
fn shadow_ai_alerts_of(alerts: &[Alert], pids: &[u32]) -> Vec<String> {
    alerts
        .iter()
        .filter_map(|a| a.finding.as_ref())
        .filter(|f| {
            f.action.is_empty() && f.process.as_ref().is_some_and(|p| pids.contains(&p.pid))
        })
        .map(|f| format!("{}: {}", f.rule_id, f.summary))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approved_versions_are_served_a_tampered_one_rolls_back_hot_and_crashes_restart_with_backoff(
) {
    if !privileged("approved_versions_are_served_a_tampered_one_rolls_back_hot_and_crashes_restart_with_backoff") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let fleet = start_fleet(tmp.path(), &[&key]);
    fleet.cp.wait_leader().await;
    let (agent, data) = start_agent(tmp.path(), &fleet, &key, &[]).await;
    let v1 = tmp.path().join("m-v1.onnx");
    let v2 = tmp.path().join("m-v2.onnx");
    let v2_bytes = linear_fp32(8, 4, 2);
    std::fs::write(&v1, linear_fp32(8, 4, 1)).unwrap();
    std::fs::write(&v2, &v2_bytes).unwrap();
    fleet.register_and_approve(&fleet.key_file, "m", 1, &v1, &[]);
    fleet.register_and_approve(&fleet.key_file, "m", 2, &v2, &[]);

    // Version 2 served, as the Triton client sees it.
    let socket = data.join("models/m.sock");
    waiting(
        &agent,
        "version 2 ready on the sidecar",
        Duration::from_secs(60),
        || async { model_ready(&socket, "m", 2).await.then_some(()) },
    )
    .await;
    triton_client(&socket, "m", &v2, 2);
    let pids = sidecar_pids("m");
    assert_eq!(pids.len(), 1, "one sidecar process: {pids:?}");

    // The store holds both versions, encrypted; no plaintext anywhere the
    // agent writes, nor in its scratch space; the key file is 0600.
    let needle = &v2_bytes[v2_bytes.len() / 2..v2_bytes.len() / 2 + 48];
    let shm = Path::new("/dev/shm");
    assert!(
        holding(&[&data, shm], needle).is_empty(),
        "plaintext of the model on disk: {:?}",
        holding(&[&data, shm], needle)
    );
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(data.join("model-store.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    let store = data.join("models.v1");
    let v2_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&v2_bytes));
    let v2_file = store.join(format!("{v2_digest}.vgm"));
    assert!(v2_file.is_file());

    // Inference all along the rest: no request may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let inferring = {
        let socket = socket.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut client = kserve(&socket).await.expect("a client");
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match client.model_infer(infer_request("m")).await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        failed.push(e.to_string());
                        // A new connection after a failure.
                        if let Some(c) = kserve(&socket).await {
                            client = c;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };

    // One byte of the stored version 2 overwritten.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tampered_at = Instant::now();
    {
        use std::io::{Seek, SeekFrom, Write};
        let stored = std::fs::read(&v2_file).unwrap();
        let at = stored.len() / 2;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&v2_file)
            .unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&[stored[at] ^ 0xff]).unwrap();
    }
    waiting(
        &agent,
        "version 1 ready again",
        Duration::from_secs(10),
        || async { model_ready(&socket, "m", 1).await.then_some(()) },
    )
    .await;
    let took = tampered_at.elapsed();
    assert!(
        took < Duration::from_millis(HEALTH_MS) + Duration::from_millis(1500),
        "rolled back {took:?} after the tamper (health interval {HEALTH_MS} ms)"
    );
    let alerts = alert_with(
        &agent,
        &fleet.cp,
        "a model_rollback alert",
        Duration::from_secs(20),
        has("model_rollback", "from v2 to v1"),
    )
    .await;
    let rollback = &actions(&alerts, "model_rollback")[0];
    assert!(summary(rollback).contains("hot"), "{}", summary(rollback));
    assert!(
        summary(rollback).contains("fails authentication")
            || summary(rollback).contains("tampered"),
        "{}",
        summary(rollback)
    );
    let audit = fleet.audit().await;
    assert!(
        audit.iter().any(|e| e.action == "enforce.model_rollback"),
        "audit: {:?}",
        audit.iter().map(|e| &e.action).collect::<Vec<_>>()
    );
    assert_eq!(sidecar_pids("m"), pids, "rolled back in the same sidecar");
    triton_client(&socket, "m", &v1, 1);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = inferring.await.unwrap();
    assert!(
        ok > 10 && failed.is_empty(),
        "{ok} answered, failed: {failed:?}"
    );

    // SIGKILL five times: back each time, with growing waits.
    for round in 1..=5u32 {
        let before = sidecar_pids("m");
        assert_eq!(before.len(), 1, "round {round}: {before:?}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(before[0] as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        waiting(
            &agent,
            &format!("the sidecar back after kill {round}"),
            Duration::from_secs(30),
            || async {
                let now = sidecar_pids("m");
                let restarts = actions(&fleet.cp.try_alerts().await.ok()?, "sidecar_restart").len();
                (now.len() == 1
                    && now != before
                    && restarts == round as usize
                    && model_ready(&socket, "m", 1).await)
                    .then_some(())
            },
        )
        .await;
    }
    let alerts = alert_with(
        &agent,
        &fleet.cp,
        "five restarts",
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    let restarts: Vec<String> = actions(&alerts, "sidecar_restart")
        .iter()
        .map(|a| summary(a).to_string())
        .collect();
    assert_eq!(restarts.len(), 5, "{restarts:#?}");
    for (r, wait) in restarts.iter().zip([250, 500, 1000, 2000, 4000]) {
        assert!(r.contains("killed by signal 9"), "{r}");
        assert!(r.contains(&format!("{wait} ms after it ended")), "{r}");
    }
    assert!(actions(&alerts, "sidecar_oom").is_empty());

    // The sidecar is an approved workload: no shadow-AI alert names any of
    // its processes; the same binary started by someone else, outside the
    // agent's sidecar cgroups, is shadow AI (its ONNX Runtime is found).
    let standalone = tmp.path().join("standalone");
    std::fs::create_dir_all(&standalone).unwrap();
    let mut rogue = Sidecar::start(&standalone, SidecarListen::tcp(), &[], false);
    rogue.wait_ready().await;
    let rogue_pid = rogue.child.id();
    let alerts = alert_with(
        &agent,
        &fleet.cp,
        "the standalone sidecar found",
        Duration::from_secs(30),
        |a| !shadow_ai_alerts_of(std::slice::from_ref(a), &[rogue_pid]).is_empty(),
    )
    .await;
    drop(rogue);
    let supervised: Vec<u32> = alerts
        .iter()
        .filter_map(|a| a.finding.as_ref())
        .filter(|f| f.action.starts_with("sidecar_") || f.action.starts_with("model_"))
        .filter_map(|f| f.process.as_ref().map(|p| p.pid))
        .filter(|pid| *pid != agent.daemon.id())
        .collect();
    assert!(supervised.len() >= 6, "{supervised:?}");
    let shadow = shadow_ai_alerts_of(&alerts, &supervised);
    assert!(shadow.is_empty(), "{shadow:#?}");

    // Every version revoked: the control plane sends an empty set; the
    // sidecar stops and its cgroup goes.
    succeeds(
        fleet
            .cp
            .vigilctl(&["model", "revoke", "m", "2", "--reason", "test"]),
    );
    succeeds(
        fleet
            .cp
            .vigilctl(&["model", "revoke", "m", "1", "--reason", "test"]),
    );
    alert_with(
        &agent,
        &fleet.cp,
        "the sidecar stopped",
        Duration::from_secs(20),
        has("sidecar_stop", "stopped"),
    )
    .await;
    let cgroup = cgroup2_mount().join("vigil/sidecars/m");
    wait_for(
        "the sidecar's cgroup removed",
        Duration::from_secs(10),
        || async { (!cgroup.exists()).then_some(()) },
    )
    .await;
    assert!(sidecar_pids("m").is_empty());
    // Stopped cleanly: its scratch directory for fetches goes too.
    let mut agent = agent;
    assert!(agent.daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_model_over_its_memory_limit_is_an_oom_kill_reported_and_the_agent_survives() {
    if !privileged("a_model_over_its_memory_limit_is_an_oom_kill_reported_and_the_agent_survives") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let fleet = start_fleet(tmp.path(), &[&key]);
    fleet.cp.wait_leader().await;
    let (mut agent, _data) = start_agent(tmp.path(), &fleet, &key, &[]).await;
    // 64 MiB of weights under a 48 MiB limit.
    let big = tmp.path().join("big.onnx");
    std::fs::write(&big, linear_fp32(4096, 4096, 3)).unwrap();
    fleet.register_and_approve(&fleet.key_file, "big", 1, &big, &["--memory-max", "48MiB"]);
    let alerts = alert_with(
        &agent,
        &fleet.cp,
        "an OOM kill reported",
        Duration::from_secs(90),
        has("sidecar_oom", "OOM killer"),
    )
    .await;
    let oom = &actions(&alerts, "sidecar_oom")[0];
    assert!(
        summary(oom).contains("memory.max 50331648"),
        "{}",
        summary(oom)
    );
    // The version that cannot fit is not tried in a loop: refused.
    alert_with(
        &agent,
        &fleet.cp,
        "the version refused",
        Duration::from_secs(30),
        has("model_refused", "big"),
    )
    .await;
    assert!(
        agent.daemon.child.try_wait().unwrap().is_none(),
        "the agent died"
    );
    // And it still ships: its heartbeats keep coming.
    let before = fleet
        .cp
        .wait_agent_summary(
            "the agent known",
            Duration::from_secs(10),
            "serve-host",
            |_| true,
        )
        .await
        .last_heartbeat_unix_nanos;
    fleet
        .cp
        .wait_agent_summary(
            "a later heartbeat",
            Duration::from_secs(10),
            "serve-host",
            |s| s.last_heartbeat_unix_nanos > before,
        )
        .await;
    assert!(agent.daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn records_signed_by_a_key_the_agent_does_not_trust_are_never_loaded() {
    if !privileged("records_signed_by_a_key_the_agent_does_not_trust_are_never_loaded") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let trusted = SigningKey::generate();
    let other = SigningKey::generate();
    // The control plane takes both keys; the agent trusts one.
    let fleet = start_fleet(tmp.path(), &[&trusted, &other]);
    fleet.cp.wait_leader().await;
    let (agent, data) = start_agent(tmp.path(), &fleet, &trusted, &[]).await;
    let other_key = tmp.path().join("other.key");
    std::fs::write(&other_key, other.secret_hex()).unwrap();
    let rogue = tmp.path().join("rogue.onnx");
    std::fs::write(&rogue, linear_fp32(8, 4, 9)).unwrap();
    fleet.register_and_approve(&other_key, "rogue", 1, &rogue, &[]);
    agent
        .wait_for_log(
            "the record refused",
            Duration::from_secs(20),
            "ignoring an approved model record",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(sidecar_pids("rogue").is_empty());
    assert!(!data.join("models/rogue.sock").exists());
    let alerts = fleet.cp.alerts().await;
    assert!(actions(&alerts, "sidecar_start").is_empty());
    // A record the agent trusts is served, here on TCP: on Ollama's port
    // when it is free, a listener the agent's rules call AI serving
    // outright, yet not for its own sidecar.
    let port = if std::net::TcpListener::bind("127.0.0.1:11434").is_ok() {
        11434
    } else {
        vigil_integration::free_port()
    };
    let listen = format!("tcp:127.0.0.1:{port}");
    let good = tmp.path().join("good.onnx");
    std::fs::write(&good, linear_fp32(8, 4, 10)).unwrap();
    fleet.register_and_approve(&fleet.key_file, "good", 1, &good, &["--listen", &listen]);
    waiting(
        &agent,
        "the trusted model served",
        Duration::from_secs(60),
        || async {
            let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .ok()?
                .connect()
                .await
                .ok()?;
            GrpcInferenceServiceClient::new(channel)
                .model_ready(ModelReadyRequest {
                    name: "good".into(),
                    version: "1".into(),
                })
                .await
                .ok()?
                .into_inner()
                .ready
                .then_some(())
        },
    )
    .await;
    assert!(sidecar_pids("rogue").is_empty());
    let pids = sidecar_pids("good");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shadow = shadow_ai_alerts_of(&fleet.cp.alerts().await, &pids);
    assert!(shadow.is_empty(), "{shadow:#?}");

    // The agent stopping (SIGTERM) stops its sidecars, removes their
    // cgroups and its scratch directory for fetches.
    // Its name is random (no local user can make it first), after a
    // prefix of the data directory's hash.
    let prefix = format!(
        "vigil-model-fetch-{}-",
        hex::encode(
            &<sha2::Sha256 as sha2::Digest>::digest(data.as_os_str().as_encoded_bytes())[..8]
        )
    );
    let scratches: Vec<PathBuf> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    assert_eq!(scratches.len(), 1, "{scratches:?}");
    let scratch = &scratches[0];
    assert!(scratch.is_dir(), "{}", scratch.display());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(scratch).unwrap().permissions())
            & 0o777,
        0o700
    );
    let mut agent = agent;
    let status = agent.daemon.terminate();
    assert!(status.success(), "{status}");
    assert!(sidecar_pids("good").is_empty());
    assert!(!cgroup2_mount().join("vigil/sidecars/good").exists());
    assert!(!scratch.exists());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sidecar {pid} still runs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_local_user_cannot_read_the_store_reach_the_control_socket_or_plant_links() {
    if !privileged("a_local_user_cannot_read_the_store_reach_the_control_socket_or_plant_links") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Anyone may enter the test's directories, so the only barriers are
    // the agent's own.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let key = SigningKey::generate();
    let fleet = start_fleet(tmp.path(), &[&key]);
    fleet.cp.wait_leader().await;
    let data = tmp.path().join("agent");
    std::fs::create_dir_all(data.join("models")).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let model = tmp.path().join("m.onnx");
    let bytes = linear_fp32(8, 4, 5);
    std::fs::write(&model, &bytes).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    // Links planted where the agent will write: its socket and its store
    // file for the model, both aimed at a file they must not touch.
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    std::os::unix::fs::symlink(&victim, data.join("models/m.sock")).unwrap();
    std::fs::create_dir_all(data.join("models.v1")).unwrap();
    std::os::unix::fs::symlink(&victim, data.join(format!("models.v1/{digest}.vgm"))).unwrap();

    let (agent, _) = start_agent(tmp.path(), &fleet, &key, &[]).await;
    fleet.register_and_approve(&fleet.key_file, "m", 1, &model, &[]);
    let socket = data.join("models/m.sock");
    // The link at the socket path is not the agent's: left alone (not
    // followed, not deleted), the sidecar not started, a high alert.
    alert_with(
        &agent,
        &fleet.cp,
        "the planted link refused",
        Duration::from_secs(60),
        has("sidecar_listen_failed", "symbolic link"),
    )
    .await;
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(sidecar_pids("m").is_empty());
    // Gone: the sidecar starts on its own.
    std::fs::remove_file(&socket).unwrap();
    waiting(
        &agent,
        "the model served",
        Duration::from_secs(60),
        || async { model_ready(&socket, "m", 1).await.then_some(()) },
    )
    .await;
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let store_file = data.join(format!("models.v1/{digest}.vgm"));
    assert!(std::fs::symlink_metadata(&store_file).unwrap().is_file());
    assert!(std::fs::symlink_metadata(&socket)
        .unwrap()
        .file_type()
        .is_socket());

    // As nobody: the store, its key, the sidecar's descriptors.
    let pid = sidecar_pids("m")[0];
    let probe = r#"
import os, sys
denied = []
for path in sys.argv[1:]:
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, 'rb').read(1)
        print('READ', path)
    except OSError as e:
        denied.append(path)
print('DENIED', len(denied))
"#;
    let targets = [
        data.join("models.v1").display().to_string(),
        store_file.display().to_string(),
        data.join("model-store.key").display().to_string(),
        format!("/proc/{pid}/fd/3"),
        format!("/proc/{pid}/fd"),
        format!("/proc/{pid}/mem"),
    ];
    let out = python_as_nobody(probe).args(&targets).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("READ"),
        "nobody read what is the agent's: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("DENIED {}", targets.len())),
        "{stdout}"
    );
    // The control socket has no name anywhere to connect to: the sidecar's
    // fd 3 is an unnamed socketpair end.
    let link = std::fs::read_link(format!("/proc/{pid}/fd/3")).unwrap();
    assert!(link.to_string_lossy().starts_with("socket:["), "{link:?}");
    let unix = std::fs::read_to_string("/proc/net/unix").unwrap();
    let inode = link
        .to_string_lossy()
        .trim_start_matches("socket:[")
        .trim_end_matches(']')
        .to_string();
    let line = unix
        .lines()
        .find(|l| l.split_whitespace().nth(6) == Some(inode.as_str()))
        .unwrap_or_default();
    assert_eq!(
        line.split_whitespace().nth(7),
        None,
        "a named control socket: {line}"
    );
    // Stopped cleanly: its scratch directory for fetches goes too.
    let mut agent = agent;
    assert!(agent.daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_squatted_port_is_an_alert_never_a_rollback_and_the_sidecar_comes_back_once_free() {
    if !privileged(
        "a_squatted_port_is_an_alert_never_a_rollback_and_the_sidecar_comes_back_once_free",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let fleet = start_fleet(tmp.path(), &[&key]);
    fleet.cp.wait_leader().await;
    // Someone else listens on the model's port first.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let (agent, _data) = start_agent(tmp.path(), &fleet, &key, &[]).await;
    let model = tmp.path().join("m.onnx");
    std::fs::write(&model, linear_fp32(8, 4, 11)).unwrap();
    let listen = format!("tcp:127.0.0.1:{port}");
    fleet.register_and_approve(&fleet.key_file, "sq", 1, &model, &["--listen", &listen]);
    let alerts = alert_with(
        &agent,
        &fleet.cp,
        "the listen failure reported",
        Duration::from_secs(60),
        has("sidecar_listen_failed", "cannot listen"),
    )
    .await;
    let failed = &actions(&alerts, "sidecar_listen_failed")[0];
    assert!(
        summary(failed).contains(&listen)
            && summary(failed).contains(&format!("pid {} (", std::process::id())),
        "{}",
        summary(failed)
    );
    // Past the three deaths that once failed the version.
    tokio::time::sleep(Duration::from_millis(250 + 500 + 1000 + 2000 + 500)).await;
    let alerts = fleet.cp.alerts().await;
    for action in ["model_refused", "model_rollback"] {
        assert!(
            actions(&alerts, action).is_empty(),
            "{action}: {:?}",
            actions(&alerts, action)
                .iter()
                .map(summary)
                .collect::<Vec<_>>()
        );
    }
    drop(squatter);
    waiting(
        &agent,
        "served once the port is free",
        Duration::from_secs(40),
        || async {
            let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                .ok()?
                .connect()
                .await
                .ok()?;
            GrpcInferenceServiceClient::new(channel)
                .model_ready(ModelReadyRequest {
                    name: "sq".into(),
                    version: "1".into(),
                })
                .await
                .ok()?
                .into_inner()
                .ready
                .then_some(())
        },
    )
    .await;
    let mut agent = agent;
    assert!(agent.daemon.terminate().success());
}
