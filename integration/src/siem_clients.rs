//! The far ends of the SIEM clients, as tests and benchmarks start them:
//! the Python OTLP/gRPC receiver (`integration/python/otlp_receiver.py`,
//! on OpenTelemetry's own generated stubs) that `vigilctl siem otlp`
//! pushes to, and the Python example subscriber (`examples/python-siem/`);
//! both run on the packages `make deps` installs into `.vigil/deps/siem`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Daemon, HarnessError};

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
