//! `vigilctl agent unfreeze|token`: act on one agent, or let a new one
//! enroll.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::terminal_text::escape_controls as esc;

/// How long a signed unfreeze order stays valid by default, in seconds.
const DEFAULT_VALID_SECS: u32 = 300;

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Thaws a process a freeze rule froze. The order is signed with an
    /// admin key the agent trusts (--trusted-policy-key), names the
    /// process by pid and start time (the freeze finding says both), is
    /// valid for a few minutes and carried out once.
    #[command(
        after_help = "Example (the freeze finding said \"froze pid 4242 (start time 912345; ...\"):\n  vigilctl agent unfreeze gpu-node-3 4242 --start-time 912345 --key admin.key"
    )]
    Unfreeze {
        /// Agent id (an agent carries out only orders naming its id: a
        /// hostname may be shared by several agents).
        agent: String,
        /// The frozen process's pid on that host.
        pid: u32,
        /// The frozen process's start time, as the freeze finding says it
        /// (clock ticks since boot): the agent thaws only that process, not
        /// another one given the same pid since.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        start_time: u64,
        /// The admin's secret key (`vigilctl policy keygen`).
        #[arg(long)]
        key: PathBuf,
        /// Seconds the signed order stays valid (at most 900; the agent's
        /// clock decides).
        #[arg(long, default_value_t = DEFAULT_VALID_SECS,
              value_parser = clap::value_parser!(u32).range(1..=vigil_policy::UNFREEZE_MAX_VALIDITY_SECS))]
        valid_secs: u32,
    },
    /// Quotes the agent's TPM now and prints the verdict (the node the
    /// agent is connected to must be the one asked).
    #[command(after_help = "Example:\n  vigilctl agent attest gpu-node-3")]
    Attest {
        /// Agent id or hostname.
        agent: String,
        #[command(flatten)]
        output: crate::output::OutputArgs,
    },
    /// Forgets the host's enrolled TPM and its golden PCR values (after a
    /// TPM replacement or an intended firmware update): its next
    /// enrollment and quote set them again. Audited.
    #[command(
        name = "reset-attestation",
        after_help = "Example:\n  vigilctl agent reset-attestation gpu-node-3"
    )]
    ResetAttestation {
        /// Agent id or hostname.
        agent: String,
    },
    /// Makes a one-time join token for enrolling an agent
    /// (`vigil-agent enroll --token-file FILE ...`); printed once, kept only as a digest.
    #[command(
        after_help = "Examples:\n  vigilctl agent token --ttl-secs 3600\n  vigilctl agent token --ttl-secs 600 --agent-id gpu-node-7"
    )]
    Token {
        /// Seconds until the token expires (at most a week).
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Only this agent id may enroll with it.
        #[arg(long)]
        agent_id: Option<String>,
    },
}

pub async fn run(client: &mut AdminClient, command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Attest { agent, output } => {
            let answer = client
                .attest_agent(pb::AttestAgentRequest {
                    agent: agent.clone(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            let record =
                vigil_domain::AttestationRecord::try_from(answer.attestation.unwrap_or_default())
                    .context("the control plane sent a malformed attestation")?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            crate::output::print_one(
                output.format(crate::output::OutputFormat::Json),
                crate::agents::attestation_json(&record),
                || {
                    format!(
                        "{}:{}",
                        esc(&agent),
                        crate::agents::attestation_text(&record, now)
                            .trim_start_matches("  attestation")
                    )
                },
            )?;
        }
        AgentCommand::ResetAttestation { agent } => {
            client
                .reset_attestation(pb::ResetAttestationRequest {
                    agent: agent.clone(),
                })
                .await
                .map_err(refused)?;
            println!(
                "{}: attestation reset; its next enrollment and quote set its TPM and golden PCRs",
                esc(&agent)
            );
        }
        AgentCommand::Token { ttl_secs, agent_id } => {
            let made = client
                .create_join_token(pb::CreateJoinTokenRequest {
                    ttl_secs,
                    agent_id: agent_id.unwrap_or_default(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            println!("{}", made.token);
            eprintln!(
                "expires at {} (unix seconds); enroll with: vigil-agent enroll --token-file FILE (holding the token; - reads stdin) --control-plane https://HOST:PORT --tls-ca ca.pem --out-dir /etc/vigil/tls",
                made.expires_at_unix_secs
            );
        }
        AgentCommand::Unfreeze {
            agent,
            pid,
            start_time,
            key,
            valid_secs,
        } => {
            let secret = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let key = vigil_policy::SigningKey::from_hex(&secret)
                .with_context(|| format!("{}", key.display()))?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("the system clock is before 1970")?
                .as_secs();
            let expires = i64::try_from(now)
                .context("the system clock is out of range")?
                .saturating_add(i64::from(valid_secs));
            let order = key.sign_unfreeze(&agent, pid, start_time, expires);
            client
                .unfreeze(pb::UnfreezeRequest::from(order))
                .await
                .map_err(refused)?;
            println!("asked {} to unfreeze pid {pid}", esc(&agent));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: AgentCommand,
    }

    #[test]
    fn unfreeze_needs_a_key_and_a_short_validity() {
        assert!(Cli::try_parse_from(["agent", "unfreeze", "h", "42"]).is_err());
        let cli = Cli::try_parse_from([
            "agent",
            "unfreeze",
            "h",
            "42",
            "--key",
            "k",
            "--start-time",
            "7",
        ])
        .unwrap();
        let AgentCommand::Unfreeze { valid_secs, .. } = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(valid_secs, DEFAULT_VALID_SECS);
        for bad in ["0", "901"] {
            assert!(Cli::try_parse_from([
                "agent",
                "unfreeze",
                "h",
                "42",
                "--key",
                "k",
                "--start-time",
                "7",
                "--valid-secs",
                bad
            ])
            .is_err());
        }
    }

    #[test]
    fn unfreeze_needs_the_frozen_process_start_time() {
        assert!(Cli::try_parse_from(["agent", "unfreeze", "h", "42", "--key", "k"]).is_err());
        assert!(Cli::try_parse_from([
            "agent",
            "unfreeze",
            "h",
            "42",
            "--key",
            "k",
            "--start-time",
            "0"
        ])
        .is_err());
        let cli = Cli::try_parse_from([
            "agent",
            "unfreeze",
            "h",
            "42",
            "--key",
            "k",
            "--start-time",
            "912345",
        ])
        .unwrap();
        let AgentCommand::Unfreeze { start_time, .. } = cli.command else {
            panic!("parsed as another command");
        };
        assert_eq!(start_time, 912_345);
    }
}
