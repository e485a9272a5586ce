//! `vigilctl agent unfreeze`: act on one agent.

use clap::Subcommand;
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::terminal_text::escape_controls as esc;

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Thaws a process a freeze rule froze.
    #[command(after_help = "Example:\n  vigilctl agent unfreeze gpu-node-3 4242")]
    Unfreeze {
        /// Agent id or hostname.
        agent: String,
        /// The frozen process's pid on that host.
        pid: u32,
    },
}

pub async fn run(client: &mut AdminClient, command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Unfreeze { agent, pid } => {
            client
                .unfreeze(pb::UnfreezeRequest {
                    agent: agent.clone(),
                    pid,
                })
                .await
                .map_err(refused)?;
            println!("asked {} to unfreeze pid {pid}", esc(&agent));
        }
    }
    Ok(())
}
