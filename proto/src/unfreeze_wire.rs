//! Signed unfreeze orders: wire ↔ domain, on both legs (vigilctl → control
//! plane, control plane → agent). Nothing is checked here but shape: the
//! signature is the control plane's and the agent's to verify.

use vigil_domain::UnfreezeOrder;

use crate::admin::v1 as admin_pb;
use crate::agent::v1 as agent_pb;

impl From<admin_pb::UnfreezeRequest> for UnfreezeOrder {
    fn from(r: admin_pb::UnfreezeRequest) -> Self {
        Self {
            agent: r.agent,
            pid: r.pid,
            start_time: r.start_time,
            expires_at_unix_secs: r.expires_at_unix_secs,
            nonce: r.nonce,
            signer: r.signer,
            signature: r.signature,
        }
    }
}

impl From<UnfreezeOrder> for admin_pb::UnfreezeRequest {
    fn from(o: UnfreezeOrder) -> Self {
        Self {
            agent: o.agent,
            pid: o.pid,
            start_time: o.start_time,
            expires_at_unix_secs: o.expires_at_unix_secs,
            nonce: o.nonce,
            signer: o.signer,
            signature: o.signature,
        }
    }
}

impl From<agent_pb::Unfreeze> for UnfreezeOrder {
    fn from(u: agent_pb::Unfreeze) -> Self {
        Self {
            agent: u.agent,
            pid: u.pid,
            start_time: u.start_time,
            expires_at_unix_secs: u.expires_at_unix_secs,
            nonce: u.nonce,
            signer: u.signer,
            signature: u.signature,
        }
    }
}

impl From<UnfreezeOrder> for agent_pb::Unfreeze {
    fn from(o: UnfreezeOrder) -> Self {
        Self {
            pid: o.pid,
            start_time: o.start_time,
            agent: o.agent,
            expires_at_unix_secs: o.expires_at_unix_secs,
            nonce: o.nonce,
            signer: o.signer,
            signature: o.signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_passes_both_legs_unchanged() {
        let order = UnfreezeOrder {
            agent: "gpu-node-3".into(),
            pid: 4242,
            start_time: 123_456,
            expires_at_unix_secs: 1_800_000_000,
            nonce: "ab".repeat(16),
            signer: "cd".repeat(32),
            signature: "ef".repeat(64),
        };
        let via_admin = UnfreezeOrder::from(admin_pb::UnfreezeRequest::from(order.clone()));
        assert_eq!(via_admin, order);
        let via_agent = UnfreezeOrder::from(agent_pb::Unfreeze::from(via_admin));
        assert_eq!(via_agent, order);
    }
}
