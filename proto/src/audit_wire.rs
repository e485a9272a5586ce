//! Audit log entries: wire ↔ domain.

use vigil_domain as domain;

use crate::admin::v1 as pb;
use crate::WireError;

impl From<domain::AuditEntry> for pb::AuditEntry {
    fn from(e: domain::AuditEntry) -> Self {
        Self {
            index: e.index,
            at_unix_nanos: e.at_unix_nanos,
            actor: e.actor,
            action: e.action,
            subject: e.subject,
            detail: e.detail,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

impl TryFrom<pb::AuditEntry> for domain::AuditEntry {
    type Error = WireError;

    fn try_from(e: pb::AuditEntry) -> Result<Self, WireError> {
        if e.index == 0 {
            return Err(WireError::new("index", "must be at least 1"));
        }
        Ok(Self {
            index: e.index,
            at_unix_nanos: e.at_unix_nanos,
            actor: e.actor,
            action: e.action,
            subject: e.subject,
            detail: e.detail,
            prev_hash: e.prev_hash,
            hash: e.hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> domain::AuditEntry {
        domain::AuditEntry {
            index: 1,
            at_unix_nanos: 2,
            actor: "admin".into(),
            action: "workload.revoke".into(),
            subject: "workload w-1".into(),
            detail: String::new(),
            prev_hash: "0".repeat(64),
            hash: "a".repeat(64),
        }
    }

    #[test]
    fn an_entry_round_trips_and_index_zero_is_refused() {
        let wire = pb::AuditEntry::from(entry());
        assert_eq!(domain::AuditEntry::try_from(wire.clone()).unwrap(), entry());
        assert_eq!(
            domain::AuditEntry::try_from(pb::AuditEntry { index: 0, ..wire })
                .unwrap_err()
                .to_string(),
            "index: must be at least 1"
        );
    }
}
