//! `vigilctl cluster members|leader`: the control plane's raft group.

use clap::Subcommand;
use serde_json::json;
use vigil_domain::ClusterStatus;

use crate::agents::cluster_status;
use crate::control_plane::AdminClient;
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
}

pub async fn run(client: &mut AdminClient, command: ClusterCommand) -> anyhow::Result<()> {
    let status = cluster_status(client).await?;
    match command {
        ClusterCommand::Members { output } => print_list(
            output.format(OutputFormat::Json),
            &status.members,
            |m| json!({"node_id": m.node_id, "address": m.address, "leader": Some(m.node_id) == status.leader_id}),
            |_| members_text(&status),
        ),
        ClusterCommand::Leader { output } => print_one(
            output.format(OutputFormat::Json),
            leader_json(&status),
            || leader_text(&status),
        ),
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
            format!("{mark} {:<6} {}\n", m.node_id, esc(&m.address))
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
