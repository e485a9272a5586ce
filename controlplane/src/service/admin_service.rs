//! `vigil.admin.v1.AdminService`: what operators (vigilctl) ask.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vigil_domain::AgentRecord;
use vigil_proto::admin::v1 as pb;
use vigil_proto::admin::v1::admin_service_server::AdminService;
use vigil_proto::types::v1 as types_pb;

use super::alert_feed::spawn_alert_feed;
use crate::node::ControlPlaneNode;

const DEFAULT_LIMIT: usize = 1_000;
const MAX_LIMIT: usize = 10_000;

pub struct AdminServiceImpl {
    node: Arc<ControlPlaneNode>,
}

impl AdminServiceImpl {
    pub fn new(node: Arc<ControlPlaneNode>) -> Self {
        Self { node }
    }
}

fn agent_summary(a: AgentRecord) -> pb::AgentSummary {
    agent_detail(a).0
}

fn agent_detail(a: AgentRecord) -> (pb::AgentSummary, types_pb::GpuInventory) {
    let id = a.identity;
    let gpu = a.gpu.into();
    let summary = pb::AgentSummary {
        agent_id: id.agent_id,
        hostname: id.hostname,
        agent_version: id.agent_version,
        sensor_mode: types_pb::SensorMode::from(id.sensor_mode).into(),
        kernel_release: id.kernel_release,
        hooks: id.hooks,
        first_seen_unix_nanos: a.first_seen_unix_nanos,
        last_heartbeat_unix_nanos: a.last_heartbeat_unix_nanos,
        last_acked_seq: a.last_acked_seq,
        counters: Some(a.counters.into()),
        spooled: a.spooled,
    };
    (summary, gpu)
}

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    async fn query_alerts(
        &self,
        req: Request<pb::QueryAlertsRequest>,
    ) -> Result<Response<pb::QueryAlertsResponse>, Status> {
        let req = req.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_LIMIT,
            n => (n as usize).min(MAX_LIMIT),
        };
        let alerts = self
            .node
            .state
            .alerts_after(req.after_index, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::QueryAlertsResponse {
            alerts: alerts.into_iter().map(Into::into).collect(),
        }))
    }

    type FollowAlertsStream =
        tokio_stream::wrappers::ReceiverStream<Result<types_pb::Alert, Status>>;

    async fn follow_alerts(
        &self,
        req: Request<pb::QueryAlertsRequest>,
    ) -> Result<Response<Self::FollowAlertsStream>, Status> {
        let after = req.into_inner().after_index;
        Ok(Response::new(spawn_alert_feed(
            self.node.state.clone(),
            after,
            |a| Some(a.into()),
        )))
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let m = self.node.raft.metrics().borrow().clone();
        let members = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| pb::ClusterMember {
                node_id: *id,
                address: n.addr.clone(),
            })
            .collect();
        let agents = self
            .node
            .state
            .agents()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ClusterStatusResponse {
            node_id: self.node.node_id,
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            members,
            agents: agents.into_iter().map(agent_summary).collect(),
            alert_count: self.node.state.last_alert_index(),
        }))
    }

    async fn get_agent(
        &self,
        req: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::GetAgentResponse>, Status> {
        let name = req.into_inner().agent;
        if name.trim().is_empty() {
            return Err(Status::invalid_argument("agent: must not be empty"));
        }
        let record = self
            .node
            .state
            .agent_by_id_or_hostname(&name)
            .map_err(|e| Status::internal(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no agent with id or hostname {name:?}")))?;
        let (agent, gpu) = agent_detail(record);
        Ok(Response::new(pb::GetAgentResponse {
            agent: Some(agent),
            gpu: Some(gpu),
        }))
    }
}
