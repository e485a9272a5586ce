//! Unfreeze orders signed by an admin key, like bundles and approved
//! workloads: a frozen process is thawed only on an order a trusted key
//! signed, for one agent, pid and process start time, that has not
//! expired. The start time binds the order to one process: a pid the
//! kernel handed out again, and the agent froze again, is another process.
//!
//! The signed bytes are format v2 (`vigil.unfreeze.v2`). A v1 order (no
//! start time) does not verify as v2, and is refused: accepting it would
//! leave its pid free to name whatever process holds it when it arrives. Each order carries
//! a random nonce; whoever carries it out remembers the nonces it saw
//! until they expire, so a replayed order is refused (this crate does no
//! I/O and keeps no state: `verify_unfreeze` checks everything else).

use ed25519_dalek::{Signature, Signer, Verifier};
use rand_core::RngCore;
use vigil_domain::UnfreezeOrder;

use crate::{SigningKey, TrustedKeys};

/// The domain tag of what is signed.
pub const UNFREEZE_FORMAT: &str = "vigil.unfreeze.v2";

/// The longest an order may be valid, in seconds: it bounds how long a
/// verifier must remember nonces, and how long a leaked order is any use.
pub const UNFREEZE_MAX_VALIDITY_SECS: i64 = 15 * 60;

/// Why an unfreeze order is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnfreezeRefusal {
    #[error("the order is not signed (vigilctl agent unfreeze --key signs it)")]
    Unsigned,
    #[error("the order has no nonce")]
    NoNonce,
    #[error("the order names no process start time (vigilctl agent unfreeze --start-time, from the freeze finding)")]
    NoStartTime,
    #[error("signed by {0}, which is not a trusted policy key")]
    UnknownSigner(String),
    #[error("the signature does not verify: the order was changed after it was signed")]
    BadSignature,
    #[error("the order expired {0} s ago")]
    Expired(i64),
    #[error("the order is valid for {0} s, more than the {UNFREEZE_MAX_VALIDITY_SECS} s allowed")]
    TooLong(i64),
}

/// What is signed: a domain tag, then the agent (length-prefixed), the
/// pid, the process start time, the expiry and the nonce
/// (length-prefixed).
pub fn unfreeze_canonical_bytes(o: &UnfreezeOrder) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + o.agent.len() + o.nonce.len());
    out.extend_from_slice(UNFREEZE_FORMAT.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&(o.agent.len() as u64).to_be_bytes());
    out.extend_from_slice(o.agent.as_bytes());
    out.extend_from_slice(&o.pid.to_be_bytes());
    out.extend_from_slice(&o.start_time.to_be_bytes());
    out.extend_from_slice(&o.expires_at_unix_secs.to_be_bytes());
    out.extend_from_slice(&(o.nonce.len() as u64).to_be_bytes());
    out.extend_from_slice(o.nonce.as_bytes());
    out
}

impl SigningKey {
    /// An order to thaw `pid` on `agent` (its id or hostname), the process
    /// that started at `start_time` (clock ticks since boot), valid until
    /// `expires_at_unix_secs`, with a fresh random nonce.
    pub fn sign_unfreeze(
        &self,
        agent: &str,
        pid: u32,
        start_time: u64,
        expires_at_unix_secs: i64,
    ) -> UnfreezeOrder {
        let mut nonce = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let mut order = UnfreezeOrder {
            agent: agent.to_string(),
            pid,
            start_time,
            expires_at_unix_secs,
            nonce: hex::encode(nonce),
            signer: self.public_hex(),
            signature: String::new(),
        };
        order.signature = hex::encode(
            self.inner()
                .sign(&unfreeze_canonical_bytes(&order))
                .to_bytes(),
        );
        order
    }
}

impl TrustedKeys {
    /// Checks an order's signer, signature and expiry at `now_unix_secs`;
    /// not its nonce (the verifier remembers those) nor whom it names.
    pub fn verify_unfreeze(
        &self,
        o: &UnfreezeOrder,
        now_unix_secs: i64,
    ) -> Result<(), UnfreezeRefusal> {
        if o.signer.is_empty() || o.signature.is_empty() {
            return Err(UnfreezeRefusal::Unsigned);
        }
        if o.nonce.is_empty() {
            return Err(UnfreezeRefusal::NoNonce);
        }
        let signer = self
            .find(&o.signer)
            .ok_or_else(|| UnfreezeRefusal::UnknownSigner(o.signer.clone()))?;
        let sig: [u8; 64] = hex::decode(&o.signature)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(UnfreezeRefusal::BadSignature)?;
        signer
            .verify(&unfreeze_canonical_bytes(o), &Signature::from_bytes(&sig))
            .map_err(|_| UnfreezeRefusal::BadSignature)?;
        let left = o.expires_at_unix_secs.saturating_sub(now_unix_secs);
        if left <= 0 {
            return Err(UnfreezeRefusal::Expired(left.saturating_neg()));
        }
        if left > UNFREEZE_MAX_VALIDITY_SECS {
            return Err(UnfreezeRefusal::TooLong(left));
        }
        if o.start_time == 0 {
            return Err(UnfreezeRefusal::NoStartTime);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const START: u64 = 987_654;

    #[test]
    fn a_signed_order_verifies_and_any_change_or_stranger_is_refused() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let order = key.sign_unfreeze("gpu-node-3", 4242, START, NOW + 300);
        assert_eq!(order.nonce.len(), 32);
        assert_eq!(trusted.verify_unfreeze(&order, NOW), Ok(()));
        // Two orders for the same process differ by their nonce.
        assert_ne!(
            key.sign_unfreeze("gpu-node-3", 4242, START, NOW + 300)
                .nonce,
            order.nonce
        );
        for changed in [
            UnfreezeOrder {
                pid: 4243,
                ..order.clone()
            },
            UnfreezeOrder {
                agent: "gpu-node-4".into(),
                ..order.clone()
            },
            UnfreezeOrder {
                start_time: START + 1,
                ..order.clone()
            },
            UnfreezeOrder {
                expires_at_unix_secs: NOW + 600,
                ..order.clone()
            },
            UnfreezeOrder {
                nonce: "00".repeat(16),
                ..order.clone()
            },
        ] {
            assert_eq!(
                trusted.verify_unfreeze(&changed, NOW),
                Err(UnfreezeRefusal::BadSignature)
            );
        }
        let stranger = SigningKey::generate().sign_unfreeze("gpu-node-3", 4242, START, NOW + 300);
        assert!(matches!(
            trusted.verify_unfreeze(&stranger, NOW),
            Err(UnfreezeRefusal::UnknownSigner(_))
        ));
        let unsigned = UnfreezeOrder {
            agent: "gpu-node-3".into(),
            pid: 4242,
            ..Default::default()
        };
        assert_eq!(
            trusted.verify_unfreeze(&unsigned, NOW),
            Err(UnfreezeRefusal::Unsigned)
        );
        // No trusted key at all: nothing verifies.
        assert!(matches!(
            TrustedKeys::default().verify_unfreeze(&order, NOW),
            Err(UnfreezeRefusal::UnknownSigner(_))
        ));
    }

    #[test]
    fn an_expired_or_too_long_order_is_refused() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let order = key.sign_unfreeze("h", 7, START, NOW - 5);
        assert_eq!(
            trusted.verify_unfreeze(&order, NOW),
            Err(UnfreezeRefusal::Expired(5))
        );
        let order = key.sign_unfreeze("h", 7, START, NOW);
        assert_eq!(
            trusted.verify_unfreeze(&order, NOW),
            Err(UnfreezeRefusal::Expired(0))
        );
        let order = key.sign_unfreeze("h", 7, START, NOW + UNFREEZE_MAX_VALIDITY_SECS + 1);
        assert!(matches!(
            trusted.verify_unfreeze(&order, NOW),
            Err(UnfreezeRefusal::TooLong(_))
        ));
        let order = key.sign_unfreeze("h", 7, START, i64::MIN);
        assert!(matches!(
            trusted.verify_unfreeze(&order, i64::MAX),
            Err(UnfreezeRefusal::Expired(_))
        ));
    }

    /// An order signed over the v1 bytes (agent, pid, expiry, nonce; no
    /// start time), as a vigilctl before v2 made it.
    fn signed_v1(key: &SigningKey, agent: &str, pid: u32, expires: i64) -> UnfreezeOrder {
        let mut order = UnfreezeOrder {
            agent: agent.into(),
            pid,
            start_time: 0,
            expires_at_unix_secs: expires,
            nonce: "ab".repeat(16),
            signer: key.public_hex(),
            signature: String::new(),
        };
        let mut v1 = Vec::new();
        v1.extend_from_slice(b"vigil.unfreeze.v1\n");
        v1.extend_from_slice(&(agent.len() as u64).to_be_bytes());
        v1.extend_from_slice(agent.as_bytes());
        v1.extend_from_slice(&pid.to_be_bytes());
        v1.extend_from_slice(&expires.to_be_bytes());
        v1.extend_from_slice(&(order.nonce.len() as u64).to_be_bytes());
        v1.extend_from_slice(order.nonce.as_bytes());
        order.signature = hex::encode(key.inner().sign(&v1).to_bytes());
        order
    }

    #[test]
    fn a_v1_order_without_a_start_time_is_refused_whatever_start_time_it_is_given() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let v1 = signed_v1(&key, "agent-7", 42, NOW + 60);
        assert_eq!(
            trusted.verify_unfreeze(&v1, NOW),
            Err(UnfreezeRefusal::BadSignature)
        );
        let given = UnfreezeOrder {
            start_time: 555,
            ..v1
        };
        assert_eq!(
            trusted.verify_unfreeze(&given, NOW),
            Err(UnfreezeRefusal::BadSignature)
        );
    }

    #[test]
    fn a_signed_order_without_a_start_time_is_refused() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let order = key.sign_unfreeze("agent-7", 42, 0, NOW + 60);
        assert_eq!(
            trusted.verify_unfreeze(&order, NOW),
            Err(UnfreezeRefusal::NoStartTime)
        );
        let order = key.sign_unfreeze("agent-7", 42, 1, NOW + 60);
        assert_eq!(trusted.verify_unfreeze(&order, NOW), Ok(()));
    }

    #[test]
    fn the_signed_bytes_carry_the_start_time_after_the_pid() {
        let order = UnfreezeOrder {
            agent: "a".into(),
            pid: 1,
            start_time: 0x0102_0304_0506_0708,
            expires_at_unix_secs: 2,
            nonce: "n".into(),
            ..Default::default()
        };
        let bytes = unfreeze_canonical_bytes(&order);
        let mut want = b"vigil.unfreeze.v2\n".to_vec();
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(b"a");
        want.extend_from_slice(&1u32.to_be_bytes());
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        want.extend_from_slice(&2i64.to_be_bytes());
        want.extend_from_slice(&1u64.to_be_bytes());
        want.extend_from_slice(b"n");
        assert_eq!(bytes, want);
    }
}
