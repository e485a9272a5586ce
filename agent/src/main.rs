use clap::Parser;
use vigil_agent::config::{AgentCommand, AgentConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = AgentConfig::parse();
    vigil_observability::init_logging(config.log_format, "info");
    let done = match &config.command {
        Some(AgentCommand::Enroll {
            token,
            token_file,
            out_dir,
        }) => {
            match vigil_agent::ship::enrollment::read_token(token.as_deref(), token_file.as_deref())
            {
                Ok(token) => vigil_agent::ship::enrollment::enroll(&config, &token, out_dir).await,
                Err(e) => Err(e),
            }
        }
        None => vigil_agent::host_agent::run(config).await,
    };
    match done {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
