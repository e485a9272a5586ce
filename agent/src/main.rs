use clap::Parser;
use vigil_agent::config::{AgentConfig, LogFormat};

/// Logs to stderr, filtered by `VIGIL_LOG`: text, or one JSON object a line
/// (`timestamp`, `level`, `target`, `fields`) with `--log-format json` or
/// `VIGIL_LOG_FORMAT=json` (the flag wins), as the control plane's.
fn init_logging(flag: Option<LogFormat>) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIGIL_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    let chosen = flag.map(|f| Ok(f.as_str().to_string()));
    match chosen
        .unwrap_or_else(|| std::env::var("VIGIL_LOG_FORMAT"))
        .as_deref()
    {
        Ok("json") => builder.json().init(),
        Ok("text") | Err(_) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Ok(other) => {
            builder
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            tracing::warn!(
                value = other,
                "VIGIL_LOG_FORMAT: expected text or json; logging text"
            );
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = AgentConfig::parse();
    init_logging(config.log_format);
    match vigil_agent::host_agent::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
