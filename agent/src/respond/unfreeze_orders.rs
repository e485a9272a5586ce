//! Which unfreeze orders the agent carries out: signed by a trusted policy
//! key (`--trusted-policy-key`), naming this agent by its id (a hostname
//! is shared by every agent that has it, and is display only), not
//! expired, and not carried out before. Nonces are remembered until their
//! order expires (orders are valid for at most
//! `UNFREEZE_MAX_VALIDITY_SECS`, so the memory is short), in the agent's
//! database: a restart does not forget them, so an order carried out
//! before a restart cannot thaw a process frozen again after it.
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
    #[error("the order is for agent {0:?}, not this one (an order names the agent id)")]
    OtherAgent(String),
    #[error("the order was carried out before (a replay)")]
    Replayed,
    #[error("{MAX_REMEMBERED_NONCES} unexpired orders are remembered already; try again when some expire")]
    TooMany,
    #[error("its nonce could not be recorded as spent: {0}")]
    NotRecorded(String),
}

/// The tree of spent nonces: nonce → its order's expiry (unix seconds,
/// 8 bytes big endian).
const NONCE_TREE: &str = "agent.v1.unfreeze-nonces";

pub struct UnfreezeOrders {
    trusted: TrustedKeys,
    /// What an order must call this agent: its id.
    agent_id: String,
    /// Nonces carried out, each with its order's expiry (unix seconds).
    seen: HashMap<String, i64>,
    /// Where `seen` is kept across restarts (None: memory only).
    store: Option<sled::Tree>,
}

impl UnfreezeOrders {
    /// The orders for `agent_id`; spent nonces are kept in `db` (and those
    /// already there are remembered).
    pub fn new(trusted: TrustedKeys, agent_id: String, db: Option<&sled::Db>) -> Self {
        let store = db.and_then(|db| match db.open_tree(NONCE_TREE) {
            Ok(tree) => Some(tree),
            Err(e) => {
                tracing::error!(error = %e, "spent unfreeze nonces cannot be kept across restarts");
                None
            }
        });
        let seen = store
            .iter()
            .flat_map(|t| t.iter().flatten())
            .filter_map(|(k, v)| {
                let nonce = String::from_utf8(k.to_vec()).ok()?;
                let expires = i64::from_be_bytes(v.as_ref().try_into().ok()?);
                Some((nonce, expires))
            })
            .collect();
        Self {
            trusted,
            agent_id,
            seen,
            store,
        }
    }

    /// Whether `order` is to be carried out at `now_unix_secs`; if so its
    /// nonce is spent.
    pub fn admit(&mut self, order: &UnfreezeOrder, now_unix_secs: i64) -> Result<(), OrderRefusal> {
        if self.trusted.is_empty() {
            return Err(OrderRefusal::NoTrustedKeys);
        }
        self.trusted.verify_unfreeze(order, now_unix_secs)?;
        if order.agent != self.agent_id {
            return Err(OrderRefusal::OtherAgent(order.agent.clone()));
        }
        // An expired nonce's order no longer verifies: it can go.
        let store = self.store.as_ref();
        self.seen.retain(|nonce, expires| {
            let keep = *expires > now_unix_secs;
            if !keep {
                if let Some(t) = store {
                    let _ = t.remove(nonce.as_bytes());
                }
            }
            keep
        });
        if self.seen.contains_key(&order.nonce) {
            return Err(OrderRefusal::Replayed);
        }
        if self.seen.len() >= MAX_REMEMBERED_NONCES {
            return Err(OrderRefusal::TooMany);
        }
        // On disk before it is carried out: a crash right after the thaw
        // must not make the order good again.
        if let Some(t) = &self.store {
            t.insert(
                order.nonce.as_bytes(),
                &order.expires_at_unix_secs.to_be_bytes(),
            )
            .and_then(|_| t.flush())
            .map_err(|e| OrderRefusal::NotRecorded(e.to_string()))?;
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
    const START: u64 = 31_337;

    fn orders(key: &SigningKey) -> UnfreezeOrders {
        UnfreezeOrders::new(
            TrustedKeys::from_hex(&[key.public_hex()]).unwrap(),
            "host-1".into(),
            None,
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
        let stranger = SigningKey::generate().sign_unfreeze("host-1", 42, START, NOW + 60);
        assert!(matches!(
            orders.admit(&stranger, NOW),
            Err(OrderRefusal::Invalid(UnfreezeRefusal::UnknownSigner(_)))
        ));
        let expired = key.sign_unfreeze("host-1", 42, START, NOW - 1);
        assert!(matches!(
            orders.admit(&expired, NOW),
            Err(OrderRefusal::Invalid(UnfreezeRefusal::Expired(_)))
        ));
        let elsewhere = key.sign_unfreeze("host-2", 42, START, NOW + 60);
        assert_eq!(
            orders.admit(&elsewhere, NOW),
            Err(OrderRefusal::OtherAgent("host-2".into()))
        );
        let good = key.sign_unfreeze("host-1", 42, START, NOW + 60);
        assert_eq!(orders.admit(&good, NOW), Ok(()));
        assert_eq!(orders.admit(&good, NOW + 1), Err(OrderRefusal::Replayed));
        // Once expired, a replay is refused as expired (and its nonce
        // forgotten).
        let by_id = key.sign_unfreeze("host-1", 42, START, NOW + 60);
        assert_eq!(orders.admit(&by_id, NOW), Ok(()));
        assert!(matches!(
            orders.admit(&by_id, NOW + 60),
            Err(OrderRefusal::Invalid(UnfreezeRefusal::Expired(_)))
        ));
        assert_eq!(
            orders.admit(&key.sign_unfreeze("host-1", 42, START, NOW + 120), NOW + 60),
            Ok(())
        );
        assert_eq!(orders.seen.len(), 1);
    }

    #[test]
    fn without_trusted_keys_nothing_is_carried_out() {
        let key = SigningKey::generate();
        let mut orders = UnfreezeOrders::new(TrustedKeys::default(), "h".into(), None);
        assert_eq!(
            orders.admit(&key.sign_unfreeze("h", 1, START, NOW + 60), NOW),
            Err(OrderRefusal::NoTrustedKeys)
        );
    }

    #[test]
    fn an_order_naming_the_hostname_is_refused() {
        let key = SigningKey::generate();
        let mut orders = UnfreezeOrders::new(
            TrustedKeys::from_hex(&[key.public_hex()]).unwrap(),
            "agent-7".into(),
            None,
        );
        let by_hostname = key.sign_unfreeze("gpu-node-3", 42, START, NOW + 60);
        assert_eq!(
            orders.admit(&by_hostname, NOW),
            Err(OrderRefusal::OtherAgent("gpu-node-3".into()))
        );
        assert_eq!(
            orders.admit(&key.sign_unfreeze("agent-7", 42, START, NOW + 60), NOW),
            Ok(())
        );
    }

    #[test]
    fn spent_nonces_outlive_a_restart_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let order = key.sign_unfreeze("agent-7", 42, START, NOW + 60);
        let short = key.sign_unfreeze("agent-7", 42, START, NOW + 10);
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            let mut orders = UnfreezeOrders::new(trusted.clone(), "agent-7".into(), Some(&db));
            assert_eq!(orders.admit(&order, NOW), Ok(()));
            assert_eq!(orders.admit(&short, NOW), Ok(()));
        }
        let db = crate::sled_reopen::reopen_sled(&dir.path().join("db"));
        let mut orders = UnfreezeOrders::new(trusted, "agent-7".into(), Some(&db));
        assert_eq!(orders.admit(&order, NOW + 1), Err(OrderRefusal::Replayed));
        // An expired one is refused as expired; its nonce goes (from disk
        // too) at the next order carried out.
        assert!(matches!(
            orders.admit(&short, NOW + 20),
            Err(OrderRefusal::Invalid(UnfreezeRefusal::Expired(_)))
        ));
        let fresh = key.sign_unfreeze("agent-7", 42, START, NOW + 80);
        assert_eq!(orders.admit(&fresh, NOW + 20), Ok(()));
        assert!(!orders.seen.contains_key(&short.nonce));
        assert_eq!(orders.seen.len(), 2);
        assert_eq!(db.open_tree(NONCE_TREE).unwrap().len(), 2);
    }
}
