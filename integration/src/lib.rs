//! Harness for vigil's end-to-end tests: starts the real release or debug
//! binaries (control plane, agent, vigilctl) as processes and talks to them
//! over real gRPC.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

pub mod raw_codec;

/// Whether this process may load eBPF programs. When it may not, prints why
/// the calling test skips; with `VIGIL_REQUIRE_PRIVILEGED=1` (as in CI) a
/// skip is a failure instead.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let reason = format!("{test}: skipped, needs root to load eBPF programs");
    if std::env::var("VIGIL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{reason}, and VIGIL_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("SKIP {reason}");
    false
}

/// Directory holding the built binaries: `$VIGIL_BIN_DIR`, else the
/// workspace's `target/<profile>` for this test build's profile.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("VIGIL_BIN_DIR") {
        return PathBuf::from(dir);
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`, as `make test` does)",
        path.display()
    );
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub name: String,
}

impl Daemon {
    /// Starts `cmd` and waits until it prints a line containing `ready`.
    pub fn start(mut cmd: Command, name: &str, ready: &str, log: &Path) -> Daemon {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        cmd.stdout(Stdio::piped()).stderr(log_file);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = ready.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.contains(&ready) {
                    let _ = tx.send(());
                }
            }
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{name} did not become ready in 30 s; its log:\n{log}");
        }
        Daemon {
            child,
            name: name.to_string(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().expect("wait for child")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct ControlPlane {
    pub daemon: Daemon,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

impl ControlPlane {
    pub fn start(data_dir: &Path, port: u16) -> ControlPlane {
        Self::start_with(data_dir, port, &[])
    }

    /// Starts a control plane with extra command-line flags.
    pub fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> ControlPlane {
        let log = data_dir.with_extension("log");
        let mut cmd = Command::new(binary("vigil-controlplane"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        ControlPlane {
            daemon: Daemon::start(cmd, "vigil-controlplane", "vigil-controlplane ready", &log),
            port,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.endpoint()).await
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// Waits until raft has a leader, i.e. writes commit.
    pub async fn wait_leader(&self) {
        let admin = self.admin().await;
        wait_for("a raft leader", Duration::from_secs(20), || {
            let mut admin = admin.clone();
            async move {
                let s = admin
                    .cluster_status(admin_pb::ClusterStatusRequest {})
                    .await
                    .ok()?;
                (s.into_inner().leader_id != 0).then_some(())
            }
        })
        .await;
    }

    pub async fn alerts(&self) -> Vec<vigil_proto::types::v1::Alert> {
        let mut admin = self.admin().await;
        admin
            .query_alerts(admin_pb::QueryAlertsRequest {
                after_index: 0,
                limit: 10_000,
            })
            .await
            .expect("QueryAlerts")
            .into_inner()
            .alerts
    }
}

pub async fn connect(endpoint: &str) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .expect("endpoint")
            .connect()
            .await
        {
            Ok(c) => return c,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot connect to {endpoint}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Held by each running agent: within one test binary, agents run one at a
/// time. Two agents on one host see each other's content reads of model
/// files as findings (a real host runs one), and each would hash the other's
/// large debug binary, so concurrent agents would measure each other.
static ONE_AGENT_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Agent {
    pub daemon: Daemon,
    pub log: PathBuf,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Agent {
    pub async fn start(data_dir: &Path, control_plane: &str, agent_id: &str) -> Agent {
        Self::start_with(data_dir, control_plane, agent_id, &[]).await
    }

    /// Starts an agent with extra command-line flags. Without a
    /// `--sensor-mode` among them, the agent must load eBPF or fail: a test
    /// never silently runs on the degraded fallback.
    pub async fn start_with(
        data_dir: &Path,
        control_plane: &str,
        agent_id: &str,
        extra: &[&str],
    ) -> Agent {
        Self::start_with_env(data_dir, control_plane, agent_id, extra, &[]).await
    }

    /// Starts an agent with extra flags and environment variables.
    pub async fn start_with_env(
        data_dir: &Path,
        control_plane: &str,
        agent_id: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Agent {
        let turn = ONE_AGENT_AT_A_TIME.lock().await;
        let mode: &[&str] = if extra.contains(&"--sensor-mode") {
            &[]
        } else {
            &["--sensor-mode", "ebpf"]
        };
        let log = data_dir.with_extension("log");
        let mut cmd = Command::new(binary("vigil-agent"));
        cmd.arg("--control-plane")
            .arg(control_plane)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--agent-id")
            .arg(agent_id)
            .arg("--heartbeat-secs")
            .arg("1")
            .arg("--max-backoff-secs")
            .arg("1")
            .args(mode)
            .args(extra)
            .envs(env.iter().copied());
        Agent {
            daemon: Daemon::start(cmd, "vigil-agent", "vigil-agent ready", &log),
            log,
            _turn: turn,
        }
    }
}

/// Runs python3 to open `path` for reading and returns its pid once it has exited.
pub fn python_opens(path: &Path) -> u32 {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg("import sys; open(sys.argv[1], 'rb').close()")
        .arg(path)
        .spawn()
        .expect("python3 is installed");
    let pid = child.id();
    let status = child.wait().expect("python3 ran");
    assert!(
        status.success(),
        "python3 failed to open {}",
        path.display()
    );
    pid
}

/// Hex sha256 of a file, as the agent reports executables.
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    hex::encode(Sha256::digest(&bytes))
}

/// The fake libnvidia-ml of `agent/fake-nvml`, compiled once per test
/// binary into the target directory. The agent loads it with
/// `--nvml-library`; its answers come from the file named by
/// `VIGIL_FAKE_NVML_CONFIG`.
pub fn fake_nvml_library() -> PathBuf {
    static LIB: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LIB.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/fake-nvml/fake_nvml.c");
        let dir = bin_dir().join("fake-nvml");
        std::fs::create_dir_all(&dir).unwrap();
        let lib = dir.join("libnvidia-ml.so.1");
        // Built under a private name, then renamed: test binaries running at
        // once never load a half-written library.
        let building = dir.join(format!(".building-{}", std::process::id()));
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&building)
            .arg(&src)
            .status()
            .expect("a C compiler (cc) builds the fake NVML library");
        assert!(status.success(), "compiling {}", src.display());
        std::fs::rename(&building, &lib).unwrap();
        lib
    })
    .clone()
}
