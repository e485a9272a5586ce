//! The agents connected to this node, to reach one (an operator's
//! unfreeze) while its stream is open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tonic::Status;
use vigil_proto::agent::v1 as pb;

pub type Outbound = mpsc::Sender<Result<pb::ControlMessage, Status>>;

#[derive(Default)]
pub struct AgentSessions {
    open: Mutex<HashMap<String, Outbound>>,
    /// Per open session: wakes its verifier for a quote now (an operator's
    /// `vigilctl agent attest`).
    attest_now: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl AgentSessions {
    /// The newest session of an agent replaces an older one.
    pub fn register(&self, agent_id: &str, tx: Outbound) {
        self.lock().insert(agent_id.to_string(), tx);
    }

    /// The session's quote-now trigger (registered with the session).
    pub fn register_attest_now(&self, agent_id: &str, notify: Arc<tokio::sync::Notify>) {
        self.attest_now
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(agent_id.to_string(), notify);
    }

    /// Asks the agent's session on this node for a quote now; false when
    /// the agent has no session here.
    pub fn attest_now(&self, agent_id: &str) -> bool {
        if !self.lock().contains_key(agent_id) {
            return false;
        }
        match self
            .attest_now
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(agent_id)
        {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// Forgets `tx` if it is still the agent's session.
    pub fn remove(&self, agent_id: &str, tx: &Outbound) {
        let mut open = self.lock();
        if open.get(agent_id).is_some_and(|t| t.same_channel(tx)) {
            open.remove(agent_id);
            self.attest_now
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(agent_id);
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
