//! Which unfreeze orders the agent carries out: signed by a trusted policy
//! key (`--trusted-policy-key`), naming this agent, not expired, and not
//! carried out before. Nonces are remembered until their order expires
//! (orders are valid for at most `UNFREEZE_MAX_VALIDITY_SECS`, so the
//! memory is short); a restart forgets them, and with them every freeze
//! the agent made (it thaws only processes it froze since it started).
//!
//! Freezes happen only under a signed policy bundle, so an agent with
//! frozen processes always has trusted keys: an unsigned order is always
//! refused.

use std::collections::HashMap;

use vigil_domain::UnfreezeOrder;
use vigil_policy::{TrustedKeys, UnfreezeRefusal};

/// Most unexpired nonces remembered; past it, orders are refused until
/// some expire (it takes that many validly signed orders to get there).
const MAX_REMEMBERED_NONCES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRefusal {
    #[error("no trusted policy keys are configured (--trusted-policy-key), so no order verifies")]
    NoTrustedKeys,
    #[error(transparent)]
    Invalid(#[from] UnfreezeRefusal),
    #[error("the order is for agent {0:?}, not this one")]
    OtherAgent(String),
    #[error("the order was carried out before (a replay)")]
    Replayed,
    #[error("{MAX_REMEMBERED_NONCES} unexpired orders are remembered already; try again when some expire")]
    TooMany,
}

pub struct UnfreezeOrders {
    trusted: TrustedKeys,
    /// What an order may call this agent: its id and its hostname.
    names: Vec<String>,
    /// Nonces carried out, each with its order's expiry (unix seconds).
    seen: HashMap<String, i64>,
}

impl UnfreezeOrders {
    pub fn new(trusted: TrustedKeys, agent_id: String, hostname: String) -> Self {
        Self {
            trusted,
            names: vec![agent_id, hostname],
            seen: HashMap::new(),
        }
    }

    /// Whether `order` is to be carried out at `now_unix_secs`; if so its
    /// nonce is spent.
    pub fn admit(&mut self, order: &UnfreezeOrder, now_unix_secs: i64) -> Result<(), OrderRefusal> {
        if self.trusted.is_empty() {
            return Err(OrderRefusal::NoTrustedKeys);
        }
        self.trusted.verify_unfreeze(order, now_unix_secs)?;
        if !self.names.contains(&order.agent) {
            return Err(OrderRefusal::OtherAgent(order.agent.clone()));
        }
        // An expired nonce's order no longer verifies: it can go.
        self.seen.retain(|_, expires| *expires > now_unix_secs);
        if self.seen.contains_key(&order.nonce) {
            return Err(OrderRefusal::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            return Err(OrderRefusal::TooMany);
        }
        self.seen
            .insert(order.nonce.clone(), order.expires_at_unix_secs);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use vigil_policy::SigningKey;

    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn orders(key: &SigningKey) -> UnfreezeOrders {
        UnfreezeOrders::new(
            TrustedKeys::from_hex(&[key.public_hex()]).unwrap(),
            "agent-1".into(),
            "host-1".into(),
        )
    }

    #[test]
    fn only_a_fresh_order_signed_by_a_trusted_key_for_this_agent_is_carried_out_once() {
        let key = SigningKey::generate();
        let mut orders = orders(&key);
        let unsigned = UnfreezeOrder {
            agent: "host-1".into(),
            pid: 42,
            ..Default::default()
        };
        assert_eq!(
            orders.admit(&unsigned, NOW),
            Err(OrderRefusal::Invalid(UnfreezeRefusal::Unsigned))
        );
        let stranger = SigningKey::generate().sign_unfreeze("host-1", 42, NOW + 60);
        assert!(matches!(
            orders.admit(&stranger, NOW),
            Err(OrderRefusal::Invalid(UnfreezeRefusal::UnknownSigner(_)))
        ));
        let expired = key.sign_unfreeze("host-1", 42, NOW - 1);
        assert!(matches!(
            orders.admit(&expired, NOW),
            Err(OrderRefusal::Invalid(UnfreezeRefusal::Expired(_)))
        ));
        let elsewhere = key.sign_unfreeze("host-2", 42, NOW + 60);
        assert_eq!(
            orders.admit(&elsewhere, NOW),
            Err(OrderRefusal::OtherAgent("host-2".into()))
        );
        let good = key.sign_unfreeze("host-1", 42, NOW + 60);
        assert_eq!(orders.admit(&good, NOW), Ok(()));
        assert_eq!(orders.admit(&good, NOW + 1), Err(OrderRefusal::Replayed));
        // By id as well as by hostname; once expired, a replay is refused
        // as expired (and its nonce forgotten).
        let by_id = key.sign_unfreeze("agent-1", 42, NOW + 60);
        assert_eq!(orders.admit(&by_id, NOW), Ok(()));
        assert!(matches!(
            orders.admit(&by_id, NOW + 60),
            Err(OrderRefusal::Invalid(UnfreezeRefusal::Expired(_)))
        ));
        assert_eq!(
            orders.admit(&key.sign_unfreeze("host-1", 42, NOW + 120), NOW + 60),
            Ok(())
        );
        assert_eq!(orders.seen.len(), 1);
    }

    #[test]
    fn without_trusted_keys_nothing_is_carried_out() {
        let key = SigningKey::generate();
        let mut orders = UnfreezeOrders::new(TrustedKeys::default(), "a".into(), "h".into());
        assert_eq!(
            orders.admit(&key.sign_unfreeze("h", 1, NOW + 60), NOW),
            Err(OrderRefusal::NoTrustedKeys)
        );
    }
}
