//! The far ends of the SIEM clients, as tests and benchmarks start them:
//! the Python OTLP/gRPC receiver (`integration/python/otlp_receiver.py`,
//! on OpenTelemetry's own generated stubs) that `vigilctl siem otlp`
//! pushes to, and the Python example subscriber (`examples/python-siem/`);
//! both run on the packages `make deps` installs into `.vigil/deps/siem`.
//! And a control plane with something in its export, for tests of who may
//! read it over mutual TLS ([`TlsExport`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio::sync::mpsc;
use vigil_pki::{Identity, OperatorRole};
use vigil_proto::siem::v1 as siem_pb;
use vigil_proto::siem::v1::siem_export_client::SiemExportClient;

use crate::tls_fleet::TlsFleet;
use crate::{binary, free_port, wait_for, ControlPlane, Daemon, HarnessError};

/// What the receiver prints once it serves.
const RECEIVER_READY: &str = "otlp_receiver listening on";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `PYTHONPATH` for grpcio, grpcio-tools, protobuf and opentelemetry-proto;
/// panics, saying to run `make deps`, when they are not installed.
pub fn siem_python_path() -> PathBuf {
    let dir = repository().join(".vigil/deps/siem");
    assert!(
        dir.join("grpc_tools").is_dir() && dir.join("opentelemetry/proto").is_dir(),
        "{} lacks grpcio-tools or opentelemetry-proto: run `make deps` (scripts/install-deps.sh)",
        dir.display()
    );
    dir
}

/// The Python SIEM example client.
pub fn python_siem_example() -> PathBuf {
    repository().join("examples/python-siem/siem_follow.py")
}

/// The Python OTLP receiver script.
pub fn otlp_receiver_script() -> PathBuf {
    repository().join("integration/python/otlp_receiver.py")
}

/// A running OTLP receiver: SIGKILLed when dropped.
pub struct OtlpReceiver {
    pub daemon: Daemon,
    pub port: u16,
}

impl OtlpReceiver {
    /// Starts the receiver on 127.0.0.1:`port`, appending what it receives
    /// to `out` (one JSON object a record; `--count-only`: one a request)
    /// and its stderr to `log`, once it listens.
    pub fn try_start(
        port: u16,
        out: &Path,
        log: &Path,
        count_only: bool,
    ) -> Result<OtlpReceiver, HarnessError> {
        let mut cmd = Command::new("python3");
        cmd.arg(otlp_receiver_script())
            .arg("--port")
            .arg(port.to_string())
            .arg("--out")
            .arg(out)
            .env("PYTHONPATH", siem_python_path());
        if count_only {
            cmd.arg("--count-only");
        }
        let daemon = Daemon::spawn(
            cmd,
            "otlp_receiver.py",
            RECEIVER_READY,
            Duration::from_secs(30),
            Some(log),
        )?;
        Ok(OtlpReceiver { daemon, port })
    }

    /// [`OtlpReceiver::try_start`], panicking with its log when it fails.
    pub fn start(port: u16, out: &Path, log: &Path) -> OtlpReceiver {
        Self::try_start(port, out, log, false).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// The complete lines of a JSON-lines file written as it is read (a last
/// line without its newline is left for the next read).
pub fn complete_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Follows the export of the control plane at `endpoint` (plaintext) from
/// `cursor`, with the typed record, forwarding events until the stream
/// breaks (or the receiver is dropped).
pub fn follow_export(endpoint: String, cursor: u64) -> mpsc::UnboundedReceiver<siem_pb::SiemEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut client = SiemExportClient::new(crate::connect(&endpoint).await);
        let mut stream = client
            .subscribe(siem_pb::SubscribeRequest {
                cursor,
                include_record: true,
                ..Default::default()
            })
            .await
            .expect("Subscribe")
            .into_inner();
        while let Ok(Some(ev)) = stream.message().await {
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
    rx
}

/// The cursor a SIEM client saved in `path` (0 while there is none).
pub fn read_cursor(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .map_or(0, |t| t.trim().parse().unwrap())
}

/// Runs the built `vigilctl` with `flags` (endpoint, TLS files) and then
/// `args`.
pub fn vigilctl_as(flags: &[String], args: &[&str]) -> Output {
    Command::new(binary("vigilctl"))
        .args(flags)
        .args(args)
        .output()
        .expect("running vigilctl")
}

/// A control plane serving mutual TLS (node `cp1` of a fleet CA) whose
/// export holds a committed audit event (serial `cc01` revoked: cursor 1),
/// and the vigilctl flags of an admin (`alice`) and of a `siem-reader`
/// (`splunk`).
pub struct TlsExport {
    pub fleet: TlsFleet,
    pub port: u16,
    /// `--endpoint` and TLS flags of the admin.
    pub admin: Vec<String>,
    /// `--endpoint` and TLS flags of the SIEM reader.
    pub reader: Vec<String>,
    pub cp: ControlPlane,
}

impl TlsExport {
    /// The fleet's CA in `dir` and the control plane's data in `dir/cp`;
    /// with `enroll`, the control plane holds the CA's key (and so enrolls
    /// agents, and completes a handshake with a peer that has no
    /// certificate). Returns once the revocation committed (a revocation
    /// is an audit event; once the cluster leads it commits).
    pub async fn start(dir: &Path, enroll: bool) -> TlsExport {
        let fleet = TlsFleet::new(dir, "fleet");
        let port = free_port();
        let extra = if enroll {
            fleet.ca_key_flags()
        } else {
            Vec::new()
        };
        let cp = fleet.start_control_plane(&dir.join("cp"), port, &extra);
        let admin_cert = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
        let admin = fleet.vigilctl_flags(port, "admin", &admin_cert);
        wait_for(
            "a committed revocation",
            Duration::from_secs(20),
            || async {
                vigilctl_as(
                    &admin,
                    &["ca", "revoke", "--serial", "cc01", "--reason", "test"],
                )
                .status
                .success()
                .then_some(())
            },
        )
        .await;
        let reader_cert =
            fleet.issue(Identity::operator(OperatorRole::SiemReader, "splunk").unwrap());
        let reader = fleet.vigilctl_flags(port, "reader", &reader_cert);
        TlsExport {
            fleet,
            port,
            admin,
            reader,
            cp,
        }
    }

    /// The vigilctl flags of a new certificate for `identity`, written as
    /// `<name>.pem` and `<name>.key`.
    pub fn vigilctl_flags_of(&self, name: &str, identity: Identity) -> Vec<String> {
        let cert = self.fleet.issue(identity);
        self.fleet.vigilctl_flags(self.port, name, &cert)
    }
}
