//! The models the control plane says this host serves (`ApprovedModels`),
//! as the agent takes them: every record converted at the wire's edge and
//! verified against the agent's own trusted keys; a record that is not
//! approved, is not signed by a trusted key, or is not scoped to this host
//! is dropped (and logged), whatever the control plane sent. The latest
//! set is published on a watch channel for whoever serves models.

use tokio::sync::watch;
use vigil_domain::{ModelDeployment, ModelRecord, ModelState};
use vigil_policy::TrustedKeys;
use vigil_proto::agent::v1 as pb;

/// The models this host serves, as last received and verified: per name
/// the active record, then the fallbacks newest first. None until a
/// session delivered a set; kept while the control plane is unreachable
/// (an empty set means serve nothing: the host is untrusted, or nothing
/// is approved for it).
pub type ModelDeployments = watch::Receiver<Option<Vec<ModelDeployment>>>;

/// The sending side, held by the shipper.
pub type ModelDeploymentsTx = watch::Sender<Option<Vec<ModelDeployment>>>;

/// Who the agent is, to check each record's host scope.
#[derive(Debug, Clone)]
pub struct ThisHost {
    pub agent_id: String,
    pub hostname: String,
}

/// The deployments of `wire` this agent accepts. A deployment whose
/// active record is dropped falls back to its newest accepted fallback;
/// one with none left is dropped.
pub fn verified_models(
    wire: pb::ApprovedModels,
    trusted: &TrustedKeys,
    host: &ThisHost,
) -> Vec<ModelDeployment> {
    if trusted.is_empty() && !wire.models.is_empty() {
        tracing::error!(
            models = wire.models.len(),
            "ignoring every approved model: this agent trusts no admin key (--trusted-policy-key), so no model record can be verified"
        );
        return Vec::new();
    }
    let accepted = |r: &ModelRecord, at: &str| -> bool {
        let why = if r.state != ModelState::Approved {
            format!("it is {}, not approved", r.state)
        } else if !r.covers_agent(&host.agent_id) {
            format!(
                "it is scoped to other agents ({}), not to agent {} on {}",
                r.hosts.join(","),
                host.agent_id,
                host.hostname
            )
        } else if let Err(e) = trusted.verify_model(r) {
            e.to_string()
        } else {
            return true;
        };
        tracing::error!(at, name = %r.name, version = r.version, sha256 = %r.sha256, %why, "ignoring an approved model record");
        false
    };
    let mut out = Vec::with_capacity(wire.models.len());
    for (i, d) in wire.models.into_iter().enumerate() {
        let at = format!("models[{i}]");
        let d = match ModelDeployment::try_from(d) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e.within(&at), "ignoring a malformed model deployment");
                continue;
            }
        };
        let mut records = d.records().filter(|r| accepted(r, &at)).cloned();
        let Some(active) = records.next() else {
            continue;
        };
        let mut fallbacks: Vec<ModelRecord> = records.collect();
        // Newest first, below the active one, one record per version.
        fallbacks.retain(|f| f.version < active.version);
        fallbacks.sort_by_key(|f| std::cmp::Reverse(f.version));
        fallbacks.dedup_by_key(|f| f.version);
        out.push(ModelDeployment { active, fallbacks });
    }
    out
}

/// Publishes a verified set and logs what it holds.
pub fn publish(tx: &ModelDeploymentsTx, deployments: Vec<ModelDeployment>) {
    let summary: Vec<String> = deployments
        .iter()
        .map(|d| {
            let fallbacks: Vec<String> =
                d.fallbacks.iter().map(|f| f.version.to_string()).collect();
            format!(
                "{} v{} (fallbacks [{}])",
                d.active.name,
                d.active.version,
                fallbacks.join(",")
            )
        })
        .collect();
    tracing::info!(models = deployments.len(), serving = %summary.join("; "), "approved models from the control plane");
    tx.send_replace(Some(deployments));
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_policy::SigningKey;

    fn signed(key: &SigningKey, version: u64, hosts: &[&str]) -> ModelRecord {
        let mut r = ModelRecord {
            name: "m".into(),
            version,
            sha256: format!("{version:064x}"),
            size: 3,
            format: "onnx".into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            state: ModelState::Approved,
            ..Default::default()
        };
        key.sign_model(&mut r);
        r
    }

    fn wire(active: ModelRecord, fallbacks: Vec<ModelRecord>) -> pb::ApprovedModels {
        pb::ApprovedModels {
            models: vec![pb::ModelDeployment {
                active: Some(active.into()),
                fallbacks: fallbacks.into_iter().map(Into::into).collect(),
            }],
        }
    }

    fn host() -> ThisHost {
        ThisHost {
            agent_id: "a1".into(),
            hostname: "h1".into(),
        }
    }

    fn versions(d: &[ModelDeployment]) -> Vec<(u64, Vec<u64>)> {
        d.iter()
            .map(|d| {
                (
                    d.active.version,
                    d.fallbacks.iter().map(|f| f.version).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn only_records_a_trusted_key_signed_for_this_host_are_taken() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let good = wire(signed(&key, 2, &[]), vec![signed(&key, 1, &["a1"])]);
        assert_eq!(
            versions(&verified_models(good, &trusted, &host())),
            vec![(2, vec![1])]
        );
        // The active record forged (unknown key): the fallback serves.
        let rogue = SigningKey::generate();
        let forged = wire(signed(&rogue, 3, &[]), vec![signed(&key, 1, &[])]);
        assert_eq!(
            versions(&verified_models(forged, &trusted, &host())),
            vec![(1, vec![])]
        );
        // Widened after signing: refused.
        let mut widened = signed(&key, 2, &["other"]);
        widened.hosts = vec![];
        assert!(verified_models(wire(widened, vec![]), &trusted, &host()).is_empty());
        // Signed for another agent; and for this host's hostname, which
        // is not an agent's identity: scopes name agent ids alone.
        assert!(verified_models(
            wire(signed(&key, 2, &["elsewhere"]), vec![]),
            &trusted,
            &host()
        )
        .is_empty());
        assert!(
            verified_models(wire(signed(&key, 2, &["h1"]), vec![]), &trusted, &host()).is_empty()
        );
        // Not approved.
        let mut revoked = signed(&key, 2, &[]);
        revoked.state = ModelState::Revoked;
        assert!(verified_models(wire(revoked, vec![]), &trusted, &host()).is_empty());
        // No trusted key: nothing.
        let good = wire(signed(&key, 2, &[]), vec![]);
        assert!(verified_models(good, &TrustedKeys::default(), &host()).is_empty());
        // Malformed: dropped, the others kept.
        let mut two = wire(signed(&key, 2, &[]), vec![]);
        two.models.push(pb::ModelDeployment {
            active: None,
            fallbacks: vec![],
        });
        assert_eq!(verified_models(two, &trusted, &host()).len(), 1);
    }

    #[test]
    fn fallbacks_are_below_the_active_version_newest_first() {
        let key = SigningKey::generate();
        let trusted = TrustedKeys::from_hex(&[key.public_hex()]).unwrap();
        let shuffled = wire(
            signed(&key, 3, &[]),
            vec![
                signed(&key, 1, &[]),
                signed(&key, 4, &[]),
                signed(&key, 2, &[]),
                signed(&key, 2, &[]),
            ],
        );
        assert_eq!(
            versions(&verified_models(shuffled, &trusted, &host())),
            vec![(3, vec![2, 1])]
        );
        let (tx, rx) = watch::channel(None);
        publish(&tx, vec![]);
        assert_eq!(*rx.borrow(), Some(vec![]));
    }
}
