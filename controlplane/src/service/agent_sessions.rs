//! The agents connected to this node, to reach one (an operator's
//! unfreeze) while its stream is open.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::mpsc;
use tonic::Status;
use vigil_proto::agent::v1 as pb;

pub type Outbound = mpsc::Sender<Result<pb::ControlMessage, Status>>;

#[derive(Default)]
pub struct AgentSessions {
    open: Mutex<HashMap<String, Outbound>>,
}

impl AgentSessions {
    /// The newest session of an agent replaces an older one.
    pub fn register(&self, agent_id: &str, tx: Outbound) {
        self.lock().insert(agent_id.to_string(), tx);
    }

    /// Forgets `tx` if it is still the agent's session.
    pub fn remove(&self, agent_id: &str, tx: &Outbound) {
        let mut open = self.lock();
        if open.get(agent_id).is_some_and(|t| t.same_channel(tx)) {
            open.remove(agent_id);
        }
    }

    /// How many agents have a stream open on this node.
    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// Ends every open stream with UNAVAILABLE and `why` (the node is
    /// stopping: agents reconnect, to this node or another).
    pub fn close_all(&self, why: &str) {
        for (_, tx) in self.lock().drain() {
            let _ = tx.try_send(Err(Status::unavailable(why.to_string())));
        }
    }

    pub fn get(&self, agent_id: &str) -> Option<Outbound> {
        self.lock().get(agent_id).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Outbound>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}
