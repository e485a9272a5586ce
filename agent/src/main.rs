use clap::Parser;
use vigil_agent::attest::tpm_cli;
use vigil_agent::attest::TpmSelection;
use vigil_agent::config::{AgentCommand, AgentConfig, TpmCommand};

/// tss-esapi logs each TPM connection at info and each failed command at
/// error; the agent's own messages say what failed, and where.
const DEFAULT_LOG_FILTER: &str = "info,tss_esapi=off";

fn main() -> std::process::ExitCode {
    // tpm2-tss prints its own WARNING/ERROR lines on stderr for every
    // failed TPM command (a changed PCR at unseal, a missing NV index):
    // the agent says what failed itself. TSS2_LOG, when set, wins. Set
    // before any thread starts.
    if std::env::var_os("TSS2_LOG").is_none() {
        std::env::set_var("TSS2_LOG", "all+none");
    }
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(agent_main()),
        Err(e) => {
            eprintln!("vigil-agent: starting the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn agent_main() -> std::process::ExitCode {
    let config = AgentConfig::parse();
    vigil_observability::init_logging(config.log_format, DEFAULT_LOG_FILTER);
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
        Some(AgentCommand::Tpm { command }) => {
            // TPM calls block: off the runtime's threads.
            let (selection, command) = (config.tpm.clone(), command.clone());
            tokio::task::spawn_blocking(move || tpm_command(&selection, &command))
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the tpm command panicked: {e}")))
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

/// `vigil-agent tpm seal|unseal|quote`.
fn tpm_command(selection: &TpmSelection, command: &TpmCommand) -> anyhow::Result<()> {
    let tpm = tpm_cli::command_tpm(selection)?;
    match command {
        TpmCommand::Seal {
            pcrs,
            input,
            output,
        } => tpm_cli::seal_file(&tpm, pcrs, input, output),
        TpmCommand::Unseal { input, output } => tpm_cli::unseal_file(&tpm, input, output),
        TpmCommand::Quote {
            nonce,
            pcrs,
            bank,
            out_dir,
        } => tpm_cli::quote_to_dir(&tpm, nonce, *bank, pcrs, out_dir),
    }
}
