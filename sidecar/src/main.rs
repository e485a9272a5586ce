use std::process::ExitCode;
use std::time::Duration;

use vigil_sidecar::config::SidecarConfig;

/// ONNX Runtime logs every graph transformation at info; the sidecar says
/// what it loaded itself.
const DEFAULT_LOG_FILTER: &str = "info,ort=warn";

fn main() -> ExitCode {
    // Before any model is in memory: its plaintext must never land in a
    // core dump, nor be read through /proc by another process of this user.
    if let Err(e) = no_core_dumps() {
        eprintln!("vigil-sidecar: turning core dumps off: {e}");
        return ExitCode::FAILURE;
    }
    // A client's shared-memory output far into its file must not end the
    // sidecar where the operator set RLIMIT_FSIZE: the write fails with
    // EFBIG instead, an INVALID_ARGUMENT reply.
    if let Err(e) = vigil_sidecar::shared_memory::ignore_file_size_signal() {
        eprintln!("vigil-sidecar: ignoring SIGXFSZ: {e}");
        return ExitCode::FAILURE;
    }
    let config = SidecarConfig::parse_or_exit();
    vigil_observability::init_logging(config.log_format, DEFAULT_LOG_FILTER);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!(
                "vigil-sidecar: {:#}",
                anyhow::Error::new(e).context("starting the async runtime")
            );
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(vigil_sidecar::server::run(config));
    // Inference threads still running are not waited for past this.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let status = e.exit_status();
            eprintln!("vigil-sidecar: {:#}", anyhow::Error::new(e));
            ExitCode::from(status)
        }
    }
}

/// `PR_SET_DUMPABLE` 0 (no core dump, /proc/PID/mem and ptrace for root
/// only) and `RLIMIT_CORE` 0, soft and hard.
fn no_core_dumps() -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(false)?;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
}
