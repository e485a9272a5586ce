//! vigilctl: the operator's command line for a vigil control plane.
//!
//! This file parses the command line and dispatches; each noun lives in its
//! own module, with its arguments, its requests and its output.
#![forbid(unsafe_code)]

use clap::{CommandFactory, Parser, Subcommand};

mod agent;
mod agents;
mod alert_triage;
mod alerts;
mod audit;
mod ca;
mod cluster;
mod completions;
mod control_plane;
mod exit_code;
mod inventory;
mod model;
mod model_governance;
mod output;
mod policy;
mod policy_files;
mod render;
mod siem;
mod siem_otlp;
mod status;
mod terminal_text;
mod user;
mod workload;

use exit_code::ExitCode;

#[derive(Parser)]
#[command(
    name = "vigilctl",
    version,
    about = "Operate a vigil control plane",
    after_help = exit_code::EXIT_CODES_HELP
)]
struct Cli {
    #[command(flatten)]
    control_plane: control_plane::ControlPlaneArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List alerts, oldest first; with --follow, keep printing new ones.
    Alerts(alerts::AlertsArgs),
    /// Cluster leader and members, and the agents seen with their last heartbeat.
    Status(status::StatusArgs),
    /// The control plane's raft group: members and leader.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Policy as code: check, test, sign, push, list, diff, rollback.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Approved workloads.
    Workload {
        #[command(subcommand)]
        command: workload::WorkloadCommand,
    },
    /// The dashboard's users (admin): add, list, remove, change role,
    /// password or whether they may log in.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Act on one agent.
    Agent {
        #[command(subcommand)]
        command: agent::AgentCommand,
    },
    /// The agents this cluster knows.
    Agents {
        #[command(subcommand)]
        command: agents::AgentsCommand,
    },
    /// The fleet's AI inventory: runtimes, model files and endpoints seen,
    /// approved or not; export as CSV or a CycloneDX ML-BOM.
    Inventory {
        #[command(subcommand)]
        command: inventory::InventoryCommand,
    },
    /// The fleet's certificate authority: create it, issue certificates, read one.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Model files: inspect one on this machine (whether it runs code on
    /// load), or register, approve, revoke, roll back and list the models
    /// the fleet serves.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// The SIEM export: every committed event (findings, enforcements,
    /// policy and approval changes, attestation, audit) in one order, as
    /// OCSF, resumable from a cursor.
    Siem {
        #[command(subcommand)]
        command: siem::SiemCommand,
    },
    /// Prints a shell completion script.
    Completions(completions::CompletionsArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let endpoint = &cli.control_plane;
    let connect = || control_plane::connect(endpoint);
    match cli.command {
        Command::Completions(args) => {
            completions::run(args, Cli::command());
            Ok(())
        }
        Command::Model { command } => model::run(endpoint, command).await,
        Command::Ca { command } => ca::run(endpoint, command).await,
        Command::Policy { command } => policy::run(endpoint, command).await,
        Command::Siem { command } => siem::run(endpoint, command).await,
        Command::Alerts(args) => alerts::run(endpoint, args).await,
        Command::Status(args) => status::run(&mut connect().await?, args).await,
        Command::Cluster { command } => cluster::run(endpoint, command).await,
        Command::Audit { command } => audit::run(&mut connect().await?, command).await,
        Command::Workload { command } => workload::run(&mut connect().await?, command).await,
        Command::User { command } => user::run(&mut connect().await?, command).await,
        Command::Agent { command } => agent::run(&mut connect().await?, command).await,
        Command::Inventory { command } => inventory::run(&mut connect().await?, command).await,
        Command::Agents { command } => agents::run(&mut connect().await?, command).await,
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::Success.into(),
        Err(e) => {
            // Errors quote the control plane, which quotes hosts and files.
            eprintln!(
                "vigilctl: {}",
                terminal_text::escape_lines(&format!("{e:#}"))
            );
            ExitCode::of(&e).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every flag and argument says what it is for, and every command that
    /// does something shows an example.
    #[test]
    fn every_flag_has_help_and_every_command_an_example() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    problems.push(format!("{path} {id}: no help"));
                }
            }
            let subs: Vec<_> = cmd
                .get_subcommands()
                .filter(|s| s.get_name() != "help")
                .collect();
            if subs.is_empty() && cmd.get_after_help().is_none() {
                problems.push(format!("{path}: no example in after_help"));
            }
            for sub in subs {
                walk(sub, &format!("{path} {}", sub.get_name()), problems);
            }
        }
        let mut problems = Vec::new();
        walk(&Cli::command(), "vigilctl", &mut problems);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn alerts_lists_or_triages_one_alert_but_not_both() {
        let parse = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert!(matches!(
            parse(&["vigilctl", "alerts", "--follow", "--severity", "high"]),
            Ok(Cli {
                command: Command::Alerts(_),
                ..
            })
        ));
        for ok in [
            &["vigilctl", "alerts", "ack", "3"][..],
            &["vigilctl", "alerts", "assign", "3", "bob"],
            &["vigilctl", "alerts", "comment", "3", "<script>"],
            &["vigilctl", "alerts", "resolve", "3"],
            &["vigilctl", "alerts", "reopen", "3"],
        ] {
            assert!(parse(ok).is_ok(), "{ok:?}");
        }
        assert!(parse(&["vigilctl", "alerts", "--follow", "ack", "3"]).is_err());
        assert!(parse(&["vigilctl", "alerts", "ack", "three"]).is_err());
        assert!(parse(&["vigilctl", "alerts", "assign", "3"]).is_err());
    }

    #[test]
    fn the_top_level_help_documents_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(
            help.contains("3  the control plane could not be reached"),
            "{help}"
        );
    }
}
