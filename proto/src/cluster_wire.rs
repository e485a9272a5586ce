//! Cluster status: wire ↔ domain.

use vigil_domain as domain;

use crate::admin::v1 as pb;
use crate::WireError;

impl From<domain::ClusterMember> for pb::ClusterMember {
    fn from(m: domain::ClusterMember) -> Self {
        Self {
            node_id: m.node_id,
            address: m.address,
            voter: m.voter,
        }
    }
}

impl From<pb::ClusterMember> for domain::ClusterMember {
    fn from(m: pb::ClusterMember) -> Self {
        Self {
            node_id: m.node_id,
            address: m.address,
            voter: m.voter,
        }
    }
}

impl From<domain::ClusterStatus> for pb::ClusterStatusResponse {
    fn from(s: domain::ClusterStatus) -> Self {
        Self {
            node_id: s.node_id,
            leader_id: s.leader_id.unwrap_or(0),
            term: s.term,
            last_applied_index: s.last_applied_index,
            members: s.members.into_iter().map(Into::into).collect(),
            agents: s.agents.into_iter().map(Into::into).collect(),
            alert_count: s.alert_count,
        }
    }
}

impl TryFrom<pb::ClusterStatusResponse> for domain::ClusterStatus {
    type Error = WireError;

    fn try_from(s: pb::ClusterStatusResponse) -> Result<Self, WireError> {
        let agents = s
            .agents
            .into_iter()
            .enumerate()
            .map(|(i, a)| {
                domain::AgentRecord::try_from(a).map_err(|e| e.within(format!("agents[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            node_id: s.node_id,
            // The wire says 0 for "no leader known": raft node ids start at 1.
            leader_id: (s.leader_id != 0).then_some(s.leader_id),
            term: s.term,
            last_applied_index: s.last_applied_index,
            members: s.members.into_iter().map(Into::into).collect(),
            agents,
            alert_count: s.alert_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_and_names_a_bad_agent() {
        let status = domain::ClusterStatus {
            node_id: 1,
            leader_id: None,
            term: 2,
            last_applied_index: 3,
            members: vec![domain::ClusterMember {
                node_id: 1,
                address: "127.0.0.1:7700".into(),
                voter: true,
            }],
            agents: vec![domain::AgentRecord {
                identity: domain::AgentIdentity {
                    agent_id: "m1".into(),
                    ..Default::default()
                },
                ..Default::default()
            }],
            alert_count: 4,
        };
        let wire = pb::ClusterStatusResponse::from(status.clone());
        assert_eq!(wire.leader_id, 0);
        assert_eq!(
            domain::ClusterStatus::try_from(wire.clone()).unwrap(),
            status
        );
        let mut bad = wire;
        bad.agents[0].sensor_mode = 0;
        assert_eq!(
            domain::ClusterStatus::try_from(bad)
                .unwrap_err()
                .to_string(),
            "agents[0].sensor_mode: must be set"
        );
    }
}
