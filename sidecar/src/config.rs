//! The command line. It is a contract: the agent's supervisor starts the
//! sidecar with these flags (see `sidecar/README.md`).

use std::os::fd::RawFd;
use std::path::PathBuf;

use clap::Parser;
use vigil_observability::LogFormat;

use crate::listen_address::ListenAddress;
use crate::model_identity::ModelSource;
use crate::session_settings::{ExecutionProviderChoice, OptLevel, SessionSettings};

/// Default `--max-request-bytes`: 64 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: u64 = 64 << 20;

/// Default `--max-input-bytes-in-flight`: this many times
/// `--max-request-bytes` (256 MiB with the defaults).
pub const DEFAULT_INPUT_BUDGET_FACTOR: u64 = 4;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "vigil-sidecar",
    version,
    about = "Serves approved ONNX models through ONNX Runtime over the KServe v2 gRPC protocol",
    long_about = "Serves approved ONNX models through ONNX Runtime over the KServe v2 gRPC \
                  protocol (inference.GRPCInferenceService), so Triton clients work unchanged. \
                  A model is loaded only when its bytes hash to the sha256 it was approved with. \
                  Readiness is ServerReady over gRPC; logs go to stderr.",
    after_help = "Examples:\n  \
        vigil-sidecar --ort-lib /opt/ort/libonnxruntime.so.1.32.0 --listen tcp:127.0.0.1:8001 \\\n    \
          --model resnet:1:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08:/models/resnet.onnx\n  \
        vigil-sidecar --ort-lib /opt/ort/libonnxruntime.so.1.32.0 --listen unix:/run/vigil/sidecar.sock \\\n    \
          --control-fd 3\n\n\
        Exit status: 0 stopped (SIGTERM, or the agent closed the control socket); 1 failure while \
        serving; 2 bad arguments or control fd; 3 ONNX Runtime library missing or unusable; \
        4 a --model could not be read or was refused; 5 cannot listen."
)]
pub struct SidecarConfig {
    /// The ONNX Runtime shared library (libonnxruntime.so.1.x, 1.24 or
    /// newer), e.g. from the onnxruntime wheel's `capi/` directory.
    #[arg(long, value_name = "PATH")]
    pub ort_lib: PathBuf,

    /// Where gRPC listens: `tcp:HOST:PORT` or `unix:PATH` (created 0660 in
    /// a directory only this user may write).
    #[arg(long, value_name = "tcp:HOST:PORT|unix:PATH")]
    pub listen: ListenAddress,

    /// A model served from the start: its bytes are read from PATH and must
    /// hash to SHA256 (64 hex digits). Repeatable.
    #[arg(long = "model", value_name = "NAME:VERSION:SHA256:PATH")]
    pub models: Vec<ModelSource>,

    /// An inherited AF_UNIX SOCK_SEQPACKET socket on which the agent loads,
    /// unloads and lists models (JSON messages; see the README). Its end
    /// closing stops the sidecar (exit 0), and so does the parent's death
    /// (PR_SET_PDEATHSIG SIGKILL).
    #[arg(long, value_name = "N")]
    pub control_fd: Option<RawFd>,

    /// Threads within an operator; 0: ONNX Runtime's default (one per
    /// physical core).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub intra_threads: usize,

    /// Threads across independent operators (turns on parallel execution);
    /// 0: sequential execution.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub inter_threads: usize,

    /// Graph optimisation level.
    #[arg(long, value_enum, default_value_t = OptLevel::All)]
    pub opt_level: OptLevel,

    /// Execution provider; cuda falls back to CPU with a warning where this
    /// ONNX Runtime build or the host has no CUDA.
    #[arg(long, value_enum, default_value_t = ExecutionProviderChoice::Cpu)]
    pub execution_provider: ExecutionProviderChoice,

    /// Largest gRPC request accepted, in bytes (1 KiB to 2 GiB); a larger
    /// one is refused with RESOURCE_EXHAUSTED before it is buffered.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES,
          value_parser = clap::value_parser!(u64).range(1024..=(2u64 << 30)))]
    pub max_request_bytes: u64,

    /// Largest total of output tensors one response carries, in bytes
    /// (1 KiB to 2 GiB); a request whose outputs are larger is refused
    /// with RESOURCE_EXHAUSTED before they are copied (outputs placed in
    /// shared memory do not count).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES,
          value_parser = clap::value_parser!(u64).range(1024..=(2u64 << 30)))]
    pub max_response_bytes: u64,

    /// Input bytes all inference requests together may hold at once
    /// (inputs sent in requests and inputs read from shared memory),
    /// 1 MiB to 1 TiB and at least --max-request-bytes; default 4 times
    /// --max-request-bytes. A request reserves its inputs' bytes before
    /// they are copied or read, waits up to 30 s when others hold the
    /// budget, and is refused with RESOURCE_EXHAUSTED after that, or at
    /// once when it alone needs more.
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range((1u64 << 20)..=(1u64 << 40)))]
    pub max_input_bytes_in_flight: Option<u64>,

    /// Lets TCP clients use system shared memory, acting as this uid: a
    /// region's file must then be owned by UID, and all TCP clients share
    /// its registrations. TCP has no peer credentials, so without this
    /// flag shared memory is refused on TCP; on a unix socket the peer's
    /// own uid (SO_PEERCRED) is used. Root (0) is refused: every TCP
    /// peer would read and write root's files in /dev/shm.
    #[arg(long, value_name = "UID", value_parser = parse_tcp_shared_memory_uid)]
    pub tcp_shared_memory_uid: Option<u32>,

    /// Log format on stderr (`VIGIL_LOG` filters, e.g. `debug`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl SidecarConfig {
    /// The budget of input bytes in flight: `--max-input-bytes-in-flight`,
    /// or 4 times `--max-request-bytes`; refused when below
    /// `--max-request-bytes` (a request the gRPC limit lets in could
    /// never run).
    pub fn input_budget_bytes(&self) -> Result<u64, String> {
        match self.max_input_bytes_in_flight {
            None => Ok(self
                .max_request_bytes
                .saturating_mul(DEFAULT_INPUT_BUDGET_FACTOR)),
            Some(bytes) if bytes < self.max_request_bytes => Err(format!(
                "--max-input-bytes-in-flight {bytes} is below --max-request-bytes {}: a request \
                 the gRPC limit lets in could never run; give at least {}",
                self.max_request_bytes, self.max_request_bytes
            )),
            Some(bytes) => Ok(bytes),
        }
    }

    /// `self`, or a usage error (exit status 2) where flags conflict.
    pub fn checked(self) -> Result<SidecarConfig, clap::Error> {
        match self.input_budget_bytes() {
            Ok(_) => Ok(self),
            Err(e) => Err(<SidecarConfig as clap::CommandFactory>::command()
                .error(clap::error::ErrorKind::ArgumentConflict, e)),
        }
    }

    /// Parses and checks the command line; exits 2 (clap's usage error)
    /// on bad or conflicting arguments.
    pub fn parse_or_exit() -> SidecarConfig {
        SidecarConfig::parse()
            .checked()
            .unwrap_or_else(|e| e.exit())
    }

    /// The session options every model gets.
    pub fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            intra_threads: self.intra_threads,
            inter_threads: self.inter_threads,
            opt_level: self.opt_level,
            execution_provider: self.execution_provider,
        }
    }
}

/// `--tcp-shared-memory-uid`: any uid but root's. TCP peers, remote ones
/// included, act as this uid over /dev/shm; as root they would read and
/// write other root daemons' shared memory.
fn parse_tcp_shared_memory_uid(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(0) => Err(
            "uid 0 (root) is refused: every TCP peer would read and write root's \
                      files in /dev/shm; name an unprivileged uid that owns the clients' \
                      shared memory"
                .to_string(),
        ),
        Ok(uid) => Ok(uid),
        Err(e) => Err(format!("not a uid: {e}")),
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
