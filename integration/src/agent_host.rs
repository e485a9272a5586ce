//! One host under watch: a single-node control plane, an agent shipping
//! to it, and a work directory for the files a test plants; all in a
//! temporary directory removed (after the daemons are killed) on drop.

use std::path::PathBuf;
use std::time::Duration;

use vigil_proto::types::v1::Alert;

use crate::{wait_for, Agent, ControlPlane};

pub struct AgentHost {
    pub dir: PathBuf,
    pub cp: ControlPlane,
    pub agent: Agent,
    // Declared last: dropped after the daemons that write into it.
    _tmp: tempfile::TempDir,
}

impl AgentHost {
    /// Starts a control plane, waits for it to lead, and starts an agent
    /// named `agent_id` on it.
    pub async fn start(agent_id: &str) -> AgentHost {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("work");
        std::fs::create_dir_all(&dir).unwrap();
        // A lab: approvals in these tests are unsigned.
        let cp = ControlPlane::start_with(
            &tmp.path().join("cp"),
            crate::free_port(),
            &["--allow-unsigned"],
        );
        cp.wait_leader().await;
        let agent = Agent::start(&tmp.path().join("agent"), &cp.endpoint(), agent_id).await;
        AgentHost {
            dir,
            cp,
            agent,
            _tmp: tmp,
        }
    }

    /// The first alert matching `pred` within `timeout`; panics naming
    /// `what` on none.
    pub async fn alert_within(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Alert) -> bool,
    ) -> Alert {
        wait_for(what, timeout, || async {
            self.cp.alerts().await.into_iter().find(|a| pred(a))
        })
        .await
    }

    /// The first alert matching `pred` within 15 s.
    pub async fn alert(&self, what: &str, pred: impl Fn(&Alert) -> bool) -> Alert {
        self.alert_within(what, Duration::from_secs(15), pred).await
    }

    /// Waits up to 15 s for the agent's log to contain `needle`.
    pub async fn wait_log(&self, what: &str, needle: &str) {
        self.agent
            .wait_for_log(what, Duration::from_secs(15), needle)
            .await
    }
}
