//! vigilctl: the operator's command line for a vigil control plane.

use anyhow::Context;
use clap::{Parser, Subcommand};
use tonic::transport::Channel;
use vigil_domain::Alert;
use vigil_proto::admin::v1 as pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

mod render;

#[derive(Parser)]
#[command(name = "vigilctl", version, about = "Operate a vigil control plane")]
struct Cli {
    /// Control plane gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "VIGIL_ENDPOINT",
        default_value = "http://127.0.0.1:7700"
    )]
    endpoint: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List alerts, oldest first; with --follow, keep printing new ones.
    Alerts {
        /// Only alerts after this index.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many (without --follow).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Keep the stream open and print alerts as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Cluster leader and members, and the agents seen with their last heartbeat.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The agents this cluster knows.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// One line per agent.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One agent (by agent id or hostname): sensors, counters, GPUs and
    /// the processes using them.
    Show {
        /// Agent id or hostname.
        agent: String,
        #[arg(long)]
        json: bool,
    },
}

async fn connect(endpoint: &str) -> anyhow::Result<AdminServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("cannot reach the control plane at {endpoint}"))?;
    Ok(AdminServiceClient::new(channel))
}

fn print_alert(wire: vigil_proto::types::v1::Alert, json: bool) -> anyhow::Result<()> {
    let alert = Alert::try_from(wire).context("the control plane sent a malformed alert")?;
    if json {
        println!("{}", serde_json::to_string(&alert)?);
    } else {
        println!("{}", render::alert_line(&alert));
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut client = connect(&cli.endpoint).await?;
    match cli.command {
        Command::Alerts {
            after,
            limit,
            follow,
            json,
        } => {
            if follow {
                let req = pb::QueryAlertsRequest {
                    after_index: after,
                    limit: 0,
                };
                let mut stream = client.follow_alerts(req).await?.into_inner();
                while let Some(alert) = stream.message().await? {
                    print_alert(alert, json)?;
                }
            } else {
                // Page through: one response stays far below gRPC's 4 MiB limit.
                const PAGE: u32 = 500;
                let (mut after, mut left) = (after, limit);
                while left > 0 {
                    let resp = client
                        .query_alerts(pb::QueryAlertsRequest {
                            after_index: after,
                            limit: left.min(PAGE),
                        })
                        .await?
                        .into_inner();
                    let n = resp.alerts.len() as u32;
                    for alert in resp.alerts {
                        after = alert.index;
                        print_alert(alert, json)?;
                    }
                    if n < left.min(PAGE) {
                        break;
                    }
                    left -= n;
                }
            }
        }
        Command::Status { json } => {
            let status = client
                .cluster_status(pb::ClusterStatusRequest {})
                .await?
                .into_inner();
            if json {
                println!("{}", render::status_json(&status));
            } else {
                print!("{}", render::status_text(&status, render::now_unix_nanos()));
            }
        }
        Command::Agents {
            command: AgentsCommand::List { json },
        } => {
            let status = client
                .cluster_status(pb::ClusterStatusRequest {})
                .await?
                .into_inner();
            if json {
                println!("{}", render::agents_json(&status.agents));
            } else {
                print!(
                    "{}",
                    render::agents_text(&status.agents, render::now_unix_nanos())
                );
            }
        }
        Command::Agents {
            command: AgentsCommand::Show { agent, json },
        } => {
            let resp = client
                .get_agent(pb::GetAgentRequest { agent })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            let summary = resp.agent.context("the control plane sent no agent")?;
            let gpu = vigil_domain::GpuInventory::try_from(resp.gpu.unwrap_or_default())
                .context("the control plane sent a malformed GPU inventory")?;
            if json {
                println!("{}", render::agent_json(&summary, &gpu));
            } else {
                print!(
                    "{}",
                    render::agent_text(&summary, &gpu, render::now_unix_nanos())
                );
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigilctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
