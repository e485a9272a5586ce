use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use vigil_sidecar::config::SidecarConfig;

/// ONNX Runtime logs every graph transformation at info; the sidecar says
/// what it loaded itself.
const DEFAULT_LOG_FILTER: &str = "info,ort=warn";

fn main() -> ExitCode {
    let config = SidecarConfig::parse();
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
