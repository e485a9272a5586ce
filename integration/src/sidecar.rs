//! The inference sidecar (`vigil-sidecar`) as tests and benchmarks start
//! it: standalone with `--model`s, or supervised over a SOCK_SEQPACKET
//! control socket whose other end the test holds as the agent would; its
//! gRPC over TCP or a unix socket; the ONNX Runtime library and the
//! Python packages (`tritonclient`, `onnxruntime`) that `make deps`
//! installs into `.vigil/deps/`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::socket::{
    recv, sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};
use vigil_proto::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use vigil_proto::kserve::ServerReadyRequest;

use crate::{binary, free_port};

/// How long [`Sidecar::wait_ready`] waits for ServerReady.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Spawns that hand a control socket to a child are one at a time, so no
/// other sidecar started by this process inherits it.
static SPAWNING: Mutex<()> = Mutex::new(());

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The ONNX Runtime library of the onnxruntime wheel; panics, saying to
/// run `make deps`, when it is not installed.
pub fn ort_library() -> PathBuf {
    let path = repository().join(".vigil/deps/python/onnxruntime/capi/libonnxruntime.so.1.32.0");
    assert!(
        path.is_file(),
        "{} is missing: run `make deps` (scripts/install-deps.sh installs the onnxruntime wheel)",
        path.display()
    );
    path
}

/// `PYTHONPATH` for the Triton client and onnxruntime in Python; panics,
/// saying to run `make deps`, when either is not installed.
pub fn python_path() -> String {
    let ort = repository().join(".vigil/deps/python");
    let triton = repository().join(".vigil/deps/triton");
    assert!(
        ort.join("onnxruntime").is_dir(),
        "{} has no onnxruntime: run `make deps`",
        ort.display()
    );
    assert!(
        triton.join("tritonclient").is_dir(),
        "{} has no tritonclient: run `make deps` (scripts/install-deps.sh installs tritonclient[grpc])",
        triton.display()
    );
    format!("{}:{}", ort.display(), triton.display())
}

/// The Python Triton client script of `integration/fixtures`.
pub fn triton_client_script() -> PathBuf {
    repository().join("integration/fixtures/sidecar_triton_client.py")
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A sealed memfd holding `bytes` (no more writes, growth or shrinking),
/// as the agent hands a model over.
pub fn sealed_memfd(bytes: &[u8]) -> OwnedFd {
    let fd = memfd_create("model", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .expect("memfd_create");
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, bytes).expect("writing the memfd");
    fcntl(
        &file,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .expect("sealing the memfd");
    file.into()
}

/// Where a sidecar listens.
#[derive(Debug, Clone)]
pub enum SidecarListen {
    Tcp(u16),
    Unix(PathBuf),
}

impl SidecarListen {
    /// A free loopback port.
    pub fn tcp() -> SidecarListen {
        SidecarListen::Tcp(free_port())
    }

    /// The `--listen` value.
    pub fn flag(&self) -> String {
        match self {
            SidecarListen::Tcp(port) => format!("tcp:127.0.0.1:{port}"),
            SidecarListen::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    /// The address as gRPC clients (grpcio, tritonclient) write it.
    pub fn grpc_target(&self) -> String {
        match self {
            SidecarListen::Tcp(port) => format!("127.0.0.1:{port}"),
            SidecarListen::Unix(path) => format!("unix://{}", path.display()),
        }
    }
}

/// The agent's end of a sidecar's control socket.
#[derive(Debug)]
pub struct ControlEnd(OwnedFd);

impl ControlEnd {
    /// Sends `message` (with `fd`, if any) and returns the reply.
    pub fn request(&self, message: &[u8], fd: Option<BorrowedFd<'_>>) -> String {
        let raw: Vec<RawFd> = fd.iter().map(|f| f.as_raw_fd()).collect();
        let cmsgs: Vec<ControlMessage> = if raw.is_empty() {
            vec![]
        } else {
            vec![ControlMessage::ScmRights(&raw)]
        };
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &[std::io::IoSlice::new(message)],
            &cmsgs,
            MsgFlags::empty(),
            None,
        )
        .expect("sending on the control socket");
        let mut buf = vec![0u8; 64 * 1024];
        let n = recv(self.0.as_raw_fd(), &mut buf, MsgFlags::empty()).expect("control reply");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Loads `bytes` as `name` version `version`, approved with
    /// `sha256_hex` (the bytes' own digest for an honest load).
    pub fn load_approved(
        &self,
        name: &str,
        version: u64,
        bytes: &[u8],
        sha256_hex: &str,
    ) -> String {
        let fd = sealed_memfd(bytes);
        let message = format!(
            r#"{{"op":"load","name":"{name}","version":{version},"sha256":"{sha256_hex}","size":{}}}"#,
            bytes.len()
        );
        self.request(message.as_bytes(), Some(fd.as_fd()))
    }

    /// Loads `bytes` as `name` version `version`, approved as they are.
    pub fn load(&self, name: &str, version: u64, bytes: &[u8]) -> String {
        self.load_approved(name, version, bytes, &sha256_hex(bytes))
    }
}

/// A running `vigil-sidecar`, killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Sidecar {
    pub child: Child,
    pub listen: SidecarListen,
    pub log: PathBuf,
    pub control: Option<ControlEnd>,
}

impl Sidecar {
    /// Starts `vigil-sidecar --ort-lib <wheel's> --listen <listen> <args>`,
    /// its stderr into `dir/sidecar.log`; with `control`, a control socket
    /// is passed as `--control-fd`. Does not wait for readiness.
    pub fn start(dir: &Path, listen: SidecarListen, args: &[String], control: bool) -> Sidecar {
        Self::start_with_library(dir, listen, args, control, &ort_library())
    }

    /// [`Sidecar::start`] with another `--ort-lib`.
    pub fn start_with_library(
        dir: &Path,
        listen: SidecarListen,
        args: &[String],
        control: bool,
        library: &Path,
    ) -> Sidecar {
        Self::spawn(dir, listen, args, control, library, None)
    }

    /// [`Sidecar::start`] with `/` as the working directory, as the agent
    /// starts it.
    pub fn start_in_root(
        dir: &Path,
        listen: SidecarListen,
        args: &[String],
        control: bool,
    ) -> Sidecar {
        Self::spawn(
            dir,
            listen,
            args,
            control,
            &ort_library(),
            Some(Path::new("/")),
        )
    }

    fn spawn(
        dir: &Path,
        listen: SidecarListen,
        args: &[String],
        control: bool,
        library: &Path,
        cwd: Option<&Path>,
    ) -> Sidecar {
        let log = dir.join("sidecar.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("the sidecar's log file");
        let mut cmd = Command::new(binary("vigil-sidecar"));
        cmd.arg("--ort-lib")
            .arg(library)
            .arg("--listen")
            .arg(listen.flag())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let _one_at_a_time = SPAWNING.lock().unwrap_or_else(|e| e.into_inner());
        let (child, control) = if control {
            // The sidecar's end without close-on-exec, so the child
            // inherits it at the same number; the agent's end with it.
            let (agent, sidecar) = socketpair(
                AddressFamily::Unix,
                SockType::SeqPacket,
                None,
                SockFlag::empty(),
            )
            .expect("socketpair");
            fcntl(&agent, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("cloexec");
            cmd.arg("--control-fd").arg(sidecar.as_raw_fd().to_string());
            let child = cmd.spawn().expect("starting vigil-sidecar");
            drop(sidecar);
            (child, Some(ControlEnd(agent)))
        } else {
            (cmd.spawn().expect("starting vigil-sidecar"), None)
        };
        Sidecar {
            child,
            listen,
            log,
            control,
        }
    }

    /// The control socket's agent end; panics without one.
    pub fn control(&self) -> &ControlEnd {
        self.control
            .as_ref()
            .expect("started with a control socket")
    }

    /// What the sidecar logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A gRPC channel to the sidecar (TCP or its unix socket).
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.listen {
            SidecarListen::Tcp(port) => {
                Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
                    .connect()
                    .await
            }
            SidecarListen::Unix(path) => {
                let path = path.clone();
                Endpoint::from_static("http://sidecar.invalid")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                        }
                    }))
                    .await
            }
        }
    }

    /// A KServe client; panics when the sidecar cannot be reached.
    pub async fn client(&self) -> GrpcInferenceServiceClient<Channel> {
        let channel = self
            .channel()
            .await
            .unwrap_or_else(|e| panic!("connecting to the sidecar: {e}\n{}", self.log_text()));
        GrpcInferenceServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// Waits until ServerReady says true; panics with the log if the
    /// sidecar exits or is not ready within 30 s.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "vigil-sidecar exited ({status}) before it was ready:\n{}",
                    self.log_text()
                );
            }
            if let Ok(channel) = self.channel().await {
                let mut client = GrpcInferenceServiceClient::new(channel);
                if let Ok(r) = client.server_ready(ServerReadyRequest {}).await {
                    if r.into_inner().ready {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "vigil-sidecar not ready within {READY_TIMEOUT:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to `timeout` for the sidecar to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `vigil-sidecar` with `args` (the wheel's library unless `args`
/// names another) to its end and returns its exit status and stderr; for
/// start-up refusals.
pub fn run_sidecar_to_exit(args: &[String], timeout: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(binary("vigil-sidecar"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting vigil-sidecar");
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("its output");
            return (
                out.status,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            );
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("its output");
            panic!(
                "vigil-sidecar {args:?} still running after {timeout:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
