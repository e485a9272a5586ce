//! Hash chaining of audit entries: each entry's hash covers the previous
//! entry's hash and its own fields, so verifying the chain from the first
//! entry finds any entry that was changed, removed or reordered.

use sha2::{Digest, Sha256};
use vigil_domain::AuditEntry;

/// The hash of the chain before its first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash an entry must carry: over its fields (not `hash`), length-prefixed.
pub fn entry_hash(e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    let index = e.index.to_be_bytes();
    let at = e.at_unix_nanos.to_be_bytes();
    let fields: [&[u8]; 7] = [
        e.prev_hash.as_bytes(),
        &index,
        &at,
        e.actor.as_bytes(),
        e.action.as_bytes(),
        e.subject.as_bytes(),
        e.detail.as_bytes(),
    ];
    for f in fields {
        h.update((f.len() as u64).to_be_bytes());
        h.update(f);
    }
    hex::encode(h.finalize())
}

/// Checks a chain from its first entry; the error names the first entry
/// that does not hold.
pub fn verify(entries: &[AuditEntry]) -> Result<(), String> {
    ChainCheck::default().feed(entries)
}

/// A chain checked piece by piece, from its first entry, in order: what
/// [`verify`] does, without holding the whole chain at once.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    prev: String,
    checked: u64,
}

impl Default for ChainCheck {
    fn default() -> Self {
        Self {
            prev: GENESIS.to_string(),
            checked: 0,
        }
    }
}

impl ChainCheck {
    /// Entries that held so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Checks the next entries (the ones after those fed before).
    pub fn feed(&mut self, entries: &[AuditEntry]) -> Result<(), String> {
        for e in entries {
            let expected_index = self.checked + 1;
            if e.index != expected_index {
                return Err(format!(
                    "entry {expected_index} is missing (found index {} in its place)",
                    e.index
                ));
            }
            if e.prev_hash != self.prev {
                return Err(format!(
                    "entry {}: does not follow entry {} (prev_hash differs)",
                    e.index,
                    e.index - 1
                ));
            }
            if entry_hash(e) != e.hash {
                return Err(format!(
                    "entry {}: its content does not match its hash",
                    e.index
                ));
            }
            self.prev = e.hash.clone();
            self.checked = e.index;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|i| {
                let mut e = AuditEntry {
                    index: i,
                    at_unix_nanos: i as i64,
                    actor: "alice".into(),
                    action: "policy.push".into(),
                    subject: format!("version {i}"),
                    detail: String::new(),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                e.hash = entry_hash(&e);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    #[test]
    fn a_changed_removed_or_reordered_entry_is_found() {
        let c = chain(4);
        verify(&c).unwrap();
        let mut changed = c.clone();
        changed[1].subject = "version 9".into();
        assert_eq!(
            verify(&changed).unwrap_err(),
            "entry 2: its content does not match its hash"
        );
        let mut removed = c.clone();
        removed.remove(1);
        assert_eq!(
            verify(&removed).unwrap_err(),
            "entry 2 is missing (found index 3 in its place)"
        );
        let mut rehashed = c.clone();
        rehashed[2].detail = "x".into();
        rehashed[2].hash = entry_hash(&rehashed[2]);
        assert_eq!(
            verify(&rehashed).unwrap_err(),
            "entry 4: does not follow entry 3 (prev_hash differs)"
        );
    }
}
