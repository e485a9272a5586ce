//! Policy version summaries: wire ↔ domain.

use vigil_domain as domain;

use crate::admin::v1 as pb;

impl From<domain::PolicySummary> for pb::PolicySummary {
    fn from(p: domain::PolicySummary) -> Self {
        Self {
            version: p.version,
            signer: p.signer,
            digest: p.digest,
            pushed_at_unix_nanos: p.pushed_at_unix_nanos,
            note: p.note,
            active: p.active,
            rules: p.rules,
        }
    }
}

impl From<pb::PolicySummary> for domain::PolicySummary {
    fn from(p: pb::PolicySummary) -> Self {
        Self {
            version: p.version,
            signer: p.signer,
            digest: p.digest,
            pushed_at_unix_nanos: p.pushed_at_unix_nanos,
            note: p.note,
            active: p.active,
            rules: p.rules,
        }
    }
}
