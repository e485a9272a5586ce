//! `vigilctl cluster members|leader|add|remove|transfer-leader`: the
//! control plane's raft group. Changes run on the leader: a node that is
//! not says where it is, and vigilctl asks there.

use clap::Subcommand;
use serde_json::json;
use vigil_domain::ClusterStatus;

use crate::agents::cluster_status;
use crate::control_plane::{
    connect, connect_to, leader_hint, refused, AdminClient, ControlPlaneArgs,
};
use crate::output::{print_list, print_one, OutputArgs, OutputFormat};
use crate::terminal_text::escape_controls as esc;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every member of the raft group, the leader marked with `*`.
    #[command(after_help = "Example:\n  vigilctl cluster members -o json")]
    Members {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The leader (as the answering node knows it) and the term.
    #[command(after_help = "Example:\n  vigilctl cluster leader")]
    Leader {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Adds a node (a learner until it has caught up, then a voter). The
    /// node itself can also ask, started with `--join`.
    #[command(after_help = "Example:\n  vigilctl cluster add --node-id 4 --address 10.0.0.8:7700")]
    Add {
        /// The node's raft id (what its certificate names).
        #[arg(long)]
        node_id: u64,
        /// host:port where the other nodes reach it.
        #[arg(long)]
        address: String,
    },
    /// Removes a node from the raft group.
    #[command(after_help = "Example:\n  vigilctl cluster remove 4")]
    Remove {
        /// The raft id of the node to remove.
        node_id: u64,
    },
    /// Makes a voter the leader (one whose log has caught up).
    #[command(after_help = "Example:\n  vigilctl cluster transfer-leader 2")]
    TransferLeader {
        /// The raft id of the voter to lead.
        node_id: u64,
    },
}

pub async fn run(target: &ControlPlaneArgs, command: ClusterCommand) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let change = match command {
        ClusterCommand::Add { node_id, address } => Change::Add { node_id, address },
        ClusterCommand::Remove { node_id } => Change::Remove { node_id },
        ClusterCommand::TransferLeader { node_id } => Change::TransferLeader { node_id },
        read => return show(&mut client, read).await,
    };
    let said = match change.send(&mut client).await {
        Err(status) => match leader_hint(&status) {
            // Not the leader: ask the one it names, once.
            Some(leader) => change.send(&mut connect_to(target, &leader).await?).await,
            None => Err(status),
        },
        done => done,
    }
    .map_err(refused)?;
    print!("{said}");
    Ok(())
}

/// A change to the raft group.
enum Change {
    Add {
        node_id: u64,
        address: String,
    },
    Remove {
        /// The raft id of the node to remove.
        node_id: u64,
    },
    TransferLeader {
        /// The raft id of the voter to lead.
        node_id: u64,
    },
}

impl Change {
    /// Sends it; what to print.
    async fn send(&self, client: &mut AdminClient) -> Result<String, tonic::Status> {
        use vigil_proto::admin::v1 as pb;
        Ok(match self {
            Change::Add { node_id, address } => {
                let voters = client
                    .add_node(pb::AddNodeRequest {
                        node_id: *node_id,
                        address: address.clone(),
                    })
                    .await?
                    .into_inner()
                    .voters;
                format!("node {node_id} added; voters {voters:?}\n")
            }
            Change::Remove { node_id } => {
                let voters = client
                    .remove_node(pb::RemoveNodeRequest { node_id: *node_id })
                    .await?
                    .into_inner()
                    .voters;
                format!("node {node_id} removed; voters {voters:?}\n")
            }
            Change::TransferLeader { node_id } => {
                let r = client
                    .transfer_leader(pb::TransferLeaderRequest { node_id: *node_id })
                    .await?
                    .into_inner();
                format!("node {} leads (term {})\n", r.leader_id, r.term)
            }
        })
    }
}

async fn show(client: &mut AdminClient, command: ClusterCommand) -> anyhow::Result<()> {
    let status = cluster_status(client).await?;
    match command {
        ClusterCommand::Members { output } => print_list(
            output.format(OutputFormat::Json),
            &status.members,
            |m| json!({"node_id": m.node_id, "address": m.address, "voter": m.voter, "leader": Some(m.node_id) == status.leader_id}),
            |_| members_text(&status),
        ),
        ClusterCommand::Leader { output } => print_one(
            output.format(OutputFormat::Json),
            leader_json(&status),
            || leader_text(&status),
        ),
        ClusterCommand::Add { .. }
        | ClusterCommand::Remove { .. }
        | ClusterCommand::TransferLeader { .. } => Ok(()),
    }
}

fn members_text(s: &ClusterStatus) -> String {
    s.members
        .iter()
        .map(|m| {
            let mark = if Some(m.node_id) == s.leader_id {
                "*"
            } else {
                " "
            };
            let role = if m.voter { "" } else { "  (learner)" };
            format!("{mark} {:<6} {}{role}\n", m.node_id, esc(&m.address))
        })
        .collect()
}

fn leader_address(s: &ClusterStatus) -> Option<&str> {
    let leader = s.leader_id?;
    s.members
        .iter()
        .find(|m| m.node_id == leader)
        .map(|m| m.address.as_str())
}

fn leader_json(s: &ClusterStatus) -> serde_json::Value {
    json!({
        "leader_id": s.leader_id,
        "address": leader_address(s),
        "term": s.term,
        "answered_by": s.node_id,
    })
}

fn leader_text(s: &ClusterStatus) -> String {
    match s.leader_id {
        None => format!(
            "no leader known (term {}, asked node {})\n",
            s.term, s.node_id
        ),
        Some(id) => format!(
            "leader {id} at {} (term {}, asked node {})\n",
            esc(leader_address(s).unwrap_or("an unknown address")),
            s.term,
            s.node_id
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::ClusterMember;

    fn three_nodes(leader: Option<u64>) -> ClusterStatus {
        ClusterStatus {
            node_id: 2,
            leader_id: leader,
            term: 5,
            members: (1..=3)
                .map(|n| ClusterMember {
                    node_id: n,
                    address: format!("10.0.0.{n}:7700"),
                    voter: true,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn members_mark_the_leader() {
        let text = members_text(&three_nodes(Some(3)));
        assert_eq!(
            text,
            "  1      10.0.0.1:7700\n  2      10.0.0.2:7700\n* 3      10.0.0.3:7700\n"
        );
    }

    #[test]
    fn leader_text_and_json() {
        let s = three_nodes(Some(3));
        assert_eq!(
            leader_text(&s),
            "leader 3 at 10.0.0.3:7700 (term 5, asked node 2)\n"
        );
        assert_eq!(leader_json(&s)["address"], "10.0.0.3:7700");
        let none = three_nodes(None);
        assert_eq!(
            leader_text(&none),
            "no leader known (term 5, asked node 2)\n"
        );
        assert!(leader_json(&none)["leader_id"].is_null());
    }
}
