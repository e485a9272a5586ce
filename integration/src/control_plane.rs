//! A real `vigil-controlplane` process and the admin queries tests and
//! benchmarks ask it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tonic::transport::Channel;
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;
use vigil_proto::types::v1::Alert;

use crate::{
    binary, free_port, try_binary, try_connect, try_wait_for, wait_for, Daemon, HarnessError,
    READY_TIMEOUT,
};

/// Alerts asked for per QueryAlerts call: the control plane's largest page.
const ALERT_PAGE: u32 = 10_000;

/// Waits up to 20 s until the control plane `admin` talks to (over any
/// channel: plaintext or mutual TLS) has a raft leader, i.e. writes commit.
pub async fn try_wait_leader_of(admin: &AdminServiceClient<Channel>) -> Result<(), HarnessError> {
    try_wait_for("a raft leader", Duration::from_secs(20), || {
        let mut admin = admin.clone();
        async move {
            let s = admin
                .cluster_status(admin_pb::ClusterStatusRequest {})
                .await
                .ok()?;
            (s.into_inner().leader_id != 0).then_some(())
        }
    })
    .await
}

/// [`try_wait_leader_of`], panicking after 20 s.
pub async fn wait_leader_of(admin: &AdminServiceClient<Channel>) {
    try_wait_leader_of(admin)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

pub struct ControlPlane {
    pub daemon: Daemon,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Its stderr: `<data_dir>.log`.
    pub log: PathBuf,
}

impl ControlPlane {
    pub fn start(data_dir: &Path, port: u16) -> ControlPlane {
        Self::start_with(data_dir, port, &[])
    }

    /// Starts a control plane with extra command-line flags; panics with its
    /// log when it does not come up.
    pub fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> ControlPlane {
        Self::try_start(data_dir, port, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A single-node control plane on a free port with its data in
    /// `data_dir`, once it leads.
    pub async fn start_leading(data_dir: &Path) -> ControlPlane {
        let cp = ControlPlane::start(data_dir, free_port());
        cp.wait_leader().await;
        cp
    }

    /// Starts `vigil-controlplane` listening on 127.0.0.1:`port` with its
    /// data in `data_dir` and extra command-line flags, and waits for its
    /// ready line.
    pub fn try_start(
        data_dir: &Path,
        port: u16,
        extra: &[&str],
    ) -> Result<ControlPlane, HarnessError> {
        let log = data_dir.with_extension("log");
        let mut cmd = Command::new(try_binary("vigil-controlplane")?);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        let daemon = Daemon::spawn(
            cmd,
            "vigil-controlplane",
            "vigil-controlplane ready",
            READY_TIMEOUT,
            Some(&log),
        )?;
        Ok(ControlPlane {
            daemon,
            port,
            data_dir: data_dir.to_path_buf(),
            log,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn channel(&self) -> Channel {
        crate::connect(&self.endpoint()).await
    }

    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    async fn try_admin(&self) -> Result<AdminServiceClient<Channel>, HarnessError> {
        Ok(AdminServiceClient::new(
            try_connect(&self.endpoint()).await?,
        ))
    }

    /// Waits until raft has a leader, i.e. writes commit; panics after 20 s.
    pub async fn wait_leader(&self) {
        self.try_wait_leader()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Waits up to 20 s until raft has a leader, i.e. writes commit.
    pub async fn try_wait_leader(&self) -> Result<(), HarnessError> {
        try_wait_leader_of(&self.try_admin().await?).await
    }

    /// Every alert the control plane holds, oldest first; panics when the
    /// query fails.
    pub async fn alerts(&self) -> Vec<Alert> {
        self.try_alerts().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every alert the control plane holds, oldest first, a page at a time.
    pub async fn try_alerts(&self) -> Result<Vec<Alert>, HarnessError> {
        let mut admin = self.try_admin().await?;
        let mut alerts: Vec<Alert> = Vec::new();
        loop {
            let page = admin
                .query_alerts(admin_pb::QueryAlertsRequest {
                    after_index: alerts.last().map_or(0, |a| a.index),
                    limit: ALERT_PAGE,
                })
                .await
                .map_err(|source| HarnessError::Rpc {
                    rpc: "QueryAlerts",
                    source,
                })?
                .into_inner()
                .alerts;
            let last_page = page.len() < ALERT_PAGE as usize;
            alerts.extend(page);
            if last_page {
                return Ok(alerts);
            }
        }
    }

    /// Polls until one alert matches `pred` (a failed query counts as no
    /// match: the control plane may be restarting), for up to `timeout`;
    /// every alert then held. Panics naming `what` on a timeout.
    pub async fn wait_alerts_with(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Alert) -> bool,
    ) -> Vec<Alert> {
        wait_for(what, timeout, || async {
            let alerts = self.try_alerts().await.ok()?;
            alerts.iter().any(&pred).then_some(alerts)
        })
        .await
    }

    /// What the control plane knows of agent `agent_id` (its sensor mode,
    /// hooks, counters...), or None while it has not registered.
    pub async fn agent_summary(
        &self,
        agent_id: &str,
    ) -> Result<Option<admin_pb::AgentSummary>, HarnessError> {
        let status = self
            .try_admin()
            .await?
            .cluster_status(admin_pb::ClusterStatusRequest {})
            .await
            .map_err(|source| HarnessError::Rpc {
                rpc: "ClusterStatus",
                source,
            })?
            .into_inner();
        Ok(status.agents.into_iter().find(|a| a.agent_id == agent_id))
    }

    /// Polls until the control plane's record of agent `agent_id`
    /// matches `pred` (a failed query or an agent not yet registered counts
    /// as no match), for up to `timeout`; that record. Panics naming `what`
    /// on a timeout.
    pub async fn wait_agent_summary(
        &self,
        what: &str,
        timeout: Duration,
        agent_id: &str,
        pred: impl Fn(&admin_pb::AgentSummary) -> bool,
    ) -> admin_pb::AgentSummary {
        wait_for(what, timeout, || async {
            self.agent_summary(agent_id)
                .await
                .ok()
                .flatten()
                .filter(|a| pred(a))
        })
        .await
    }

    /// Runs the built `vigilctl` against this control plane with `args`.
    pub fn vigilctl(&self, args: &[&str]) -> Output {
        Command::new(binary("vigilctl"))
            .arg("--endpoint")
            .arg(self.endpoint())
            .args(args)
            .output()
            .expect("running vigilctl")
    }
}
