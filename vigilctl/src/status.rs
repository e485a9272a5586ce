//! `vigilctl status`: the cluster and every agent at a glance.

use clap::Args;
use serde_json::json;
use vigil_domain::ClusterStatus;

use crate::agents::{agent_json, agent_status_lines, cluster_status};
use crate::control_plane::AdminClient;
use crate::output::{print_one, OutputArgs, OutputFormat};
use crate::render::now_unix_nanos;
use crate::terminal_text::escape_controls as esc;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  vigilctl status\n  vigilctl status -o json")]
pub struct StatusArgs {
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(client: &mut AdminClient, args: StatusArgs) -> anyhow::Result<()> {
    let status = cluster_status(client).await?;
    print_one(
        args.output.format(OutputFormat::Json),
        status_json(&status),
        || status_text(&status, now_unix_nanos()),
    )
}

pub fn status_text(s: &ClusterStatus, now: i64) -> String {
    let leader = s
        .leader_id
        .map_or_else(|| "none".to_string(), |id| id.to_string());
    let mut out = format!(
        "cluster: node {} | leader {} | term {} | applied index {}\n",
        s.node_id, leader, s.term, s.last_applied_index
    );
    for m in &s.members {
        out.push_str(&format!("  member {} at {}\n", m.node_id, esc(&m.address)));
    }
    out.push_str(&format!(
        "alerts: {}\nagents: {}\n",
        s.alert_count,
        s.agents.len()
    ));
    for a in &s.agents {
        out.push_str(&agent_status_lines(a, now));
    }
    out
}

pub fn status_json(s: &ClusterStatus) -> serde_json::Value {
    let agents: Vec<_> = s.agents.iter().map(agent_json).collect();
    json!({
        "node_id": s.node_id,
        "leader_id": s.leader_id,
        "term": s.term,
        "last_applied_index": s.last_applied_index,
        "members": s.members,
        "alert_count": s.alert_count,
        "agents": agents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::{AgentIdentity, AgentRecord, ClusterMember, SensorMode};

    #[test]
    fn status_names_the_leader_and_each_agents_heartbeat_age() {
        let s = ClusterStatus {
            node_id: 1,
            leader_id: Some(1),
            term: 2,
            last_applied_index: 9,
            members: vec![ClusterMember {
                node_id: 1,
                address: "127.0.0.1:7700".into(),
                voter: true,
            }],
            agents: vec![AgentRecord {
                identity: AgentIdentity {
                    agent_id: "m1".into(),
                    hostname: "h1".into(),
                    sensor_mode: SensorMode::Ebpf,
                    ..Default::default()
                },
                last_heartbeat_unix_nanos: 1_000_000_000,
                ..Default::default()
            }],
            alert_count: 3,
        };
        let text = status_text(&s, 3_500_000_000);
        assert!(text.contains("leader 1"), "{text}");
        assert!(text.contains("h1 (m1) mode=ebpf"), "{text}");
        assert!(text.contains("last heartbeat 2.5s ago"), "{text}");
        let v = status_json(&s);
        assert_eq!(v["leader_id"], 1);
        assert_eq!(v["agents"][0]["sensor_mode"], "ebpf");
        assert_eq!(v["members"][0]["address"], "127.0.0.1:7700");
        let no_leader = status_json(&ClusterStatus {
            leader_id: None,
            ..s
        });
        assert!(no_leader["leader_id"].is_null());
    }
}
