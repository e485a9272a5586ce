//! Unfreeze orders signed by an admin key, like bundles and approved
//! workloads: a frozen process is thawed only on an order a trusted key
//! signed, for one agent and pid, that has not expired. Each order carries
//! a random nonce; whoever carries it out remembers the nonces it saw
//! until they expire, so a replayed order is refused (this crate does no
//! I/O and keeps no state: `verify_unfreeze` checks everything else).

use ed25519_dalek::{Signature, Signer, Verifier};
use rand_core::RngCore;
use vigil_domain::UnfreezeOrder;

use crate::{SigningKey, TrustedKeys};

/// The domain tag of what is signed.
pub const UNFREEZE_FORMAT: &str = "vigil.unfreeze.v1";

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
/// pid, the expiry and the nonce (length-prefixed).
pub fn unfreeze_canonical_bytes(o: &UnfreezeOrder) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + o.agent.len() + o.nonce.len());
    out.extend_from_slice(UNFREEZE_FORMAT.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&(o.agent.len() as u64).to_be_bytes());
    out.extend_from_slice(o.agent.as_bytes());
    out.extend_from_slice(&o.pid.to_be_bytes());
    out.extend_from_slice(&o.expires_at_unix_secs.to_be_bytes());
    out.extend_from_slice(&(o.nonce.len() as u64).to_be_bytes());
    out.extend_from_slice(o.nonce.as_bytes());
    out
}

impl SigningKey {
    /// An order to thaw `pid` on `agent` (its id or hostname), valid until
    /// `expires_at_unix_secs`, with a fresh random nonce.
    pub fn sign_unfreeze(&self, agent: &str, pid: u32, expires_at_unix_secs: i64) -> UnfreezeOrder {
        let mut nonce = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let mut order = UnfreezeOrder {
            agent: agent.to_string(),
            pid,
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_signed_order_verifies_and_any_change_or_stranger_is_refused() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let order = key.sign_unfreeze("gpu-node-3", 4242, NOW + 300);
        assert_eq!(order.nonce.len(), 32);
        assert_eq!(trusted.verify_unfreeze(&order, NOW), Ok(()));
        // Two orders for the same process differ by their nonce.
        assert_ne!(
            key.sign_unfreeze("gpu-node-3", 4242, NOW + 300).nonce,
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
        let stranger = SigningKey::generate().sign_unfreeze("gpu-node-3", 4242, NOW + 300);
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
        let order = key.sign_unfreeze("h", 7, NOW - 5);
        assert_eq!(
            trusted.verify_unfreeze(&order, NOW),
            Err(UnfreezeRefusal::Expired(5))
        );
        let order = key.sign_unfreeze("h", 7, NOW);
        assert_eq!(
            trusted.verify_unfreeze(&order, NOW),
            Err(UnfreezeRefusal::Expired(0))
        );
        let order = key.sign_unfreeze("h", 7, NOW + UNFREEZE_MAX_VALIDITY_SECS + 1);
        assert!(matches!(
            trusted.verify_unfreeze(&order, NOW),
            Err(UnfreezeRefusal::TooLong(_))
        ));
        let order = key.sign_unfreeze("h", 7, i64::MIN);
        assert!(matches!(
            trusted.verify_unfreeze(&order, i64::MAX),
            Err(UnfreezeRefusal::Expired(_))
        ));
    }
}
