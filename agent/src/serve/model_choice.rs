//! Which version of a model a host serves, as a pure state machine: the
//! control plane's deployment for the name (the active record, then the
//! approved fallbacks, newest first), what the local store holds, and
//! the versions that failed here (a file that no longer verifies, a
//! version the sidecar refused, or that failed its health check or killed
//! the sidecar while it loaded).
//!
//! The version served is the first of the deployment's records that has
//! not failed and is in the store; the records not in the store are
//! fetched, the active one first. A failed digest is not tried again
//! until the control plane sends a different record set for the name.

use std::collections::BTreeMap;

use vigil_domain::{ModelDeployment, ModelRecord};

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The record to serve (None: none of the deployment's versions can
    /// be: all failed, or none is stored yet).
    pub serve: Option<ModelRecord>,
    /// Digests to fetch, in order: those that may be served first (the
    /// active one before its fallbacks), then failed ones whose file was
    /// dropped (so they are here when a new record set clears them).
    pub fetch: Vec<String>,
    /// Digests of versions preferred to `serve` (not failed) that are not
    /// stored yet: a supervisor with nothing running may wait for one
    /// being fetched rather than start an older version only to switch.
    pub better_missing: Vec<String>,
}

/// How serving a model stands against its deployment.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    deployment: ModelDeployment,
    /// Failed digests, and why.
    failed: BTreeMap<String, String>,
}

/// Whether two deployments carry the same records (signed fields), in the
/// same order.
pub fn same_records(a: &ModelDeployment, b: &ModelDeployment) -> bool {
    a.records().count() == b.records().count()
        && a.records()
            .zip(b.records())
            .all(|(x, y)| x.same_signed_fields(y))
}

impl ModelChoice {
    pub fn new(deployment: ModelDeployment) -> Self {
        Self {
            deployment,
            failed: BTreeMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.deployment.active.name
    }

    pub fn deployment(&self) -> &ModelDeployment {
        &self.deployment
    }

    /// A record set from the control plane. Returns whether it differs
    /// from the one held; when it does, failures are forgotten (a new
    /// decision to serve these versions deserves a new try).
    pub fn update(&mut self, deployment: ModelDeployment) -> bool {
        let changed = !same_records(&self.deployment, &deployment);
        if changed {
            self.failed.clear();
        }
        self.deployment = deployment;
        changed
    }

    /// `sha256` failed here (why): it is not served again until the
    /// record set changes.
    pub fn fail(&mut self, sha256: &str, why: impl Into<String>) {
        self.failed.insert(sha256.to_string(), why.into());
    }

    /// Why `sha256` failed, if it did.
    pub fn failure(&self, sha256: &str) -> Option<&str> {
        self.failed.get(sha256).map(String::as_str)
    }

    /// The record for `sha256` in the deployment.
    pub fn record(&self, sha256: &str) -> Option<&ModelRecord> {
        self.deployment.records().find(|r| r.sha256 == sha256)
    }

    /// Whether `record` is below `other` in the deployment's order (an
    /// older fallback).
    pub fn is_fallback_of(&self, record: &ModelRecord, other: &ModelRecord) -> bool {
        let at = |r: &ModelRecord| {
            self.deployment
                .records()
                .position(|x| x.sha256 == r.sha256 && x.version == r.version)
        };
        matches!((at(record), at(other)), (Some(a), Some(b)) if a > b)
    }

    /// What to serve and fetch, given which digests the store holds.
    pub fn plan(&self, stored: impl Fn(&str) -> bool) -> Plan {
        let mut serve = None;
        let mut fetch = Vec::new();
        let mut refetch = Vec::new();
        let mut better_missing = Vec::new();
        for record in self.deployment.records() {
            let failed = self.failed.contains_key(&record.sha256);
            let have = stored(&record.sha256);
            if !have {
                let list = if failed { &mut refetch } else { &mut fetch };
                if !list.contains(&record.sha256) {
                    list.push(record.sha256.clone());
                }
                if serve.is_none() && !failed && !better_missing.contains(&record.sha256) {
                    better_missing.push(record.sha256.clone());
                }
            }
            if serve.is_none() && have && !failed {
                serve = Some(record.clone());
            }
        }
        fetch.retain(|d| !refetch.contains(d));
        fetch.extend(refetch);
        Plan {
            serve,
            fetch,
            better_missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn record(version: u64) -> ModelRecord {
        ModelRecord {
            name: "m".into(),
            version,
            sha256: format!("{version:064x}"),
            size: 10,
            format: "onnx".into(),
            ..Default::default()
        }
    }

    fn deployment(active: u64, fallbacks: &[u64]) -> ModelDeployment {
        ModelDeployment {
            active: record(active),
            fallbacks: fallbacks.iter().map(|v| record(*v)).collect(),
        }
    }

    fn digest(v: u64) -> String {
        format!("{v:064x}")
    }

    /// A store as a set of versions.
    fn store(versions: &[u64]) -> impl Fn(&str) -> bool {
        let set: BTreeSet<String> = versions.iter().map(|v| digest(*v)).collect();
        move |d: &str| set.contains(d)
    }

    fn served(plan: &Plan) -> Option<u64> {
        plan.serve.as_ref().map(|r| r.version)
    }

    fn fetched(plan: &Plan) -> Vec<u64> {
        plan.fetch
            .iter()
            .map(|d| u64::from_str_radix(d, 16).unwrap())
            .collect()
    }

    #[test]
    fn the_active_version_is_served_once_stored_and_everything_missing_is_fetched() {
        let c = ModelChoice::new(deployment(3, &[2, 1]));
        let p = c.plan(store(&[]));
        assert_eq!((served(&p), fetched(&p)), (None, vec![3, 2, 1]));
        // A fallback can be served while the active one is still fetched;
        // the versions preferred to it are named.
        let p = c.plan(store(&[1]));
        assert_eq!((served(&p), fetched(&p)), (Some(1), vec![3, 2]));
        assert_eq!(p.better_missing, vec![digest(3), digest(2)]);
        let p = c.plan(store(&[2, 1]));
        assert_eq!((served(&p), fetched(&p)), (Some(2), vec![3]));
        let p = c.plan(store(&[3, 2, 1]));
        assert_eq!((served(&p), fetched(&p)), (Some(3), vec![]));
        assert!(p.better_missing.is_empty());
        // v3 failed and dropped: not preferred any more.
        let mut c = c;
        c.fail(&digest(3), "tampered");
        let p = c.plan(store(&[2, 1]));
        assert_eq!((served(&p), p.better_missing.len()), (Some(2), 0));
    }

    #[test]
    fn a_failed_version_rolls_back_to_the_next_stored_one() {
        let mut c = ModelChoice::new(deployment(3, &[2, 1]));
        c.fail(&digest(3), "chunk 2 fails authentication");
        // Its file was dropped: fetched again, after the others.
        let p = c.plan(store(&[2, 1]));
        assert_eq!((served(&p), fetched(&p)), (Some(2), vec![3]));
        // Refetched: still not served.
        assert_eq!(served(&c.plan(store(&[3, 2, 1]))), Some(2));
        assert_eq!(c.failure(&digest(3)), Some("chunk 2 fails authentication"));
        // The fallback fails to verify too: the next one.
        c.fail(&digest(2), "tampered");
        assert_eq!(served(&c.plan(store(&[3, 1]))), Some(1));
        // All failed: nothing is served.
        c.fail(&digest(1), "refused by the sidecar");
        let p = c.plan(store(&[3, 2, 1]));
        assert_eq!((served(&p), fetched(&p)), (None, vec![]));
    }

    #[test]
    fn the_same_record_set_again_keeps_failures_and_a_new_one_forgets_them() {
        let mut c = ModelChoice::new(deployment(2, &[1]));
        c.fail(&digest(2), "refused");
        // A reconnect resends the same records: v2 stays failed.
        assert!(!c.update(deployment(2, &[1])));
        assert_eq!(served(&c.plan(store(&[2, 1]))), Some(1));
        // A new version approved: a different record set, a fresh start.
        assert!(c.update(deployment(3, &[2, 1])));
        assert_eq!(c.failure(&digest(2)), None);
        assert_eq!(served(&c.plan(store(&[3, 2, 1]))), Some(3));
        // A changed signed field (a new limit) is a different set too.
        let mut limited = deployment(3, &[2, 1]);
        limited.active.memory_max_bytes = 1 << 30;
        c.fail(&digest(3), "x");
        assert!(c.update(limited));
        assert_eq!(c.failure(&digest(3)), None);
    }

    #[test]
    fn an_operator_rollback_serves_the_pinned_version_and_keeps_the_newer_file() {
        let mut c = ModelChoice::new(deployment(2, &[1]));
        assert_eq!(served(&c.plan(store(&[2, 1]))), Some(2));
        // `vigilctl model rollback m 1`: the control plane sends v1 alone.
        assert!(c.update(deployment(1, &[])));
        let p = c.plan(store(&[2, 1]));
        assert_eq!((served(&p), fetched(&p)), (Some(1), vec![]));
        assert!(c.record(&digest(2)).is_none());
    }

    #[test]
    fn two_versions_with_the_same_bytes_share_a_digest() {
        let mut d = deployment(2, &[1]);
        d.fallbacks[0].sha256 = d.active.sha256.clone();
        let mut c = ModelChoice::new(d);
        let p = c.plan(store(&[]));
        assert_eq!(p.fetch, vec![digest(2)]);
        c.fail(&digest(2), "tampered");
        let p = c.plan(store(&[]));
        assert_eq!((served(&p), p.fetch), (None, vec![digest(2)]));
    }

    #[test]
    fn fallbacks_are_known_by_their_place_in_the_deployment() {
        let c = ModelChoice::new(deployment(3, &[2, 1]));
        assert!(c.is_fallback_of(&record(1), &record(3)));
        assert!(c.is_fallback_of(&record(2), &record(3)));
        assert!(!c.is_fallback_of(&record(3), &record(2)));
        assert!(!c.is_fallback_of(&record(9), &record(3)));
    }
}
