use clap::Parser;
use vigil_agent::config::AgentConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = AgentConfig::parse();
    vigil_observability::init_logging(config.log_format, "info");
    match vigil_agent::host_agent::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
