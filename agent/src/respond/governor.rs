//! Between detection and the spool: the active policy bundle decides which
//! findings stand (rule id, severity) and what is done about them; the
//! enforcer does it; every action's outcome is a finding of its own.
//!
//! Architecture invariant: only a bundle whose signature verifies against a
//! trusted key and that compiles becomes active; anything else is refused
//! with its reason and the previous bundle stays in force. The last good
//! bundle is kept in the agent's database, so a restart enforces it too.
//!
//! Architecture invariant: versions only go up. A bundle older than the
//! newest this agent ever accepted is refused (a replayed old bundle is
//! validly signed, so the signature alone cannot stop a downgrade), and a
//! version rolled back automatically is never accepted again. Both facts
//! live in the agent's database, so a restart does not forget them. An
//! operator's rollback is a new, higher version carrying old rules.

use std::io::Write;

use vigil_domain::Finding;
use vigil_policy::{Action, Bundle, Decision, HostFacts, PolicySet, TrustedKeys};

use crate::detect::reported_signals::is_uid_flood_aggregate;
use crate::procfs::Procfs;
use crate::respond::enforcer::{
    ActionPlan, Enforcement, Enforcer, Outcome, PendingEnforcement, Settlement,
};
use crate::respond::host_resolver::HostResolver;

const POLICY_TREE: &str = "agent.v1.policy";
const ACTIVE_KEY: &[u8] = b"active";
/// The highest version ever accepted (8 bytes, big endian).
const HIGHEST_KEY: &[u8] = b"highest-accepted";
/// `rolled-back/` + version (8 bytes, big endian): rolled back automatically.
const ROLLED_BACK_PREFIX: &[u8] = b"rolled-back/";

pub struct ActivePolicy {
    pub version: u64,
    pub set: PolicySet,
}

/// What becomes of a finding.
pub enum Verdict {
    /// The policy allows it: not reported.
    Allowed,
    /// Report it; then carry out the action, if it is more than an alert.
    Report {
        finding: Box<Finding>,
        action: Option<ActionPlan>,
    },
}

/// What carrying out an action came to.
pub enum Acted {
    /// The finding that says what happened.
    Now(Finding),
    /// The action is taken and waits for something (a freeze to be
    /// reported done, host names to resolve): await `PendingAction::wait`
    /// off the respond loop, then `Governor::settle` it.
    Waiting(PendingAction),
}

/// An action whose waiting part is under way.
pub struct PendingAction {
    finding: Finding,
    action: Action,
    event_boot_ns: u64,
    work: PendingEnforcement,
}

impl PendingAction {
    /// Waits for the waiting part to end (no borrow of the governor).
    pub async fn wait(self) -> SettledAction {
        let settlement = self.work.await;
        SettledAction {
            finding: self.finding,
            action: self.action,
            event_boot_ns: self.event_boot_ns,
            settlement,
        }
    }
}

/// A pending action whose waiting part ended, for `Governor::settle`.
pub struct SettledAction {
    finding: Finding,
    action: Action,
    event_boot_ns: u64,
    settlement: Settlement,
}

impl SettledAction {
    /// When the process did what the action answers (CLOCK_BOOTTIME).
    pub fn event_boot_ns(&self) -> u64 {
        self.event_boot_ns
    }
}

/// When a new bundle is rolled back on its own: more than `per_minute`
/// findings within one minute during its first `watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoRollback {
    pub per_minute: u64,
    pub watch: std::time::Duration,
}

/// A newly activated bundle on probation, and what to go back to.
struct Probation {
    previous: Vec<u8>,
    previous_version: u64,
    since: std::time::Instant,
    minute_start: std::time::Instant,
    in_minute: u64,
}

pub struct Governor {
    trusted: TrustedKeys,
    active: Option<ActivePolicy>,
    active_bytes: Option<Vec<u8>>,
    auto_rollback: Option<AutoRollback>,
    probation: Option<Probation>,
    /// Versions rolled back automatically: not accepted again (persisted).
    rolled_back: std::collections::BTreeSet<u64>,
    /// The newest version ever accepted: older ones are refused (persisted).
    highest_accepted: u64,
    enforcer: Enforcer,
    host: HostFacts,
    procfs: Procfs,
    recorder: Option<std::io::BufWriter<std::fs::File>>,
    store: Option<sled::Tree>,
}

impl Governor {
    pub fn new(
        trusted: TrustedKeys,
        host: HostFacts,
        procfs: Procfs,
        recorder: Option<std::fs::File>,
        db: Option<&sled::Db>,
    ) -> Self {
        let store = db.and_then(|db| db.open_tree(POLICY_TREE).ok());
        let rolled_back = store
            .as_ref()
            .map(|t| {
                t.scan_prefix(ROLLED_BACK_PREFIX)
                    .keys()
                    .filter_map(|k| version_of(&k.ok()?[ROLLED_BACK_PREFIX.len()..]))
                    .collect()
            })
            .unwrap_or_default();
        let highest_accepted = store
            .as_ref()
            .and_then(|t| t.get(HIGHEST_KEY).ok().flatten())
            .and_then(|v| version_of(&v))
            .unwrap_or(0);
        let mut g = Self {
            trusted,
            active: None,
            active_bytes: None,
            auto_rollback: None,
            probation: None,
            rolled_back,
            highest_accepted,
            enforcer: Enforcer::new(procfs.clone()),
            host,
            procfs,
            recorder: recorder.map(std::io::BufWriter::new),
            store,
        };
        // The last good bundle, as accepted before a restart.
        let stored = g
            .store
            .as_ref()
            .and_then(|t| t.get(ACTIVE_KEY).ok().flatten());
        if let Some(bytes) = stored {
            // What was active may be older than the newest ever accepted
            // (after an automatic rollback): it is restored all the same.
            match g.activate(&bytes, Origin::Restored) {
                Ok(v) => tracing::info!(version = v, "policy bundle restored"),
                Err(e) => tracing::error!(error = %e, "the stored policy bundle no longer loads"),
            }
        }
        g
    }

    /// Roll new bundles back on a burst of findings (None: never).
    pub fn set_auto_rollback(&mut self, rule: Option<AutoRollback>) {
        self.auto_rollback = rule;
    }

    pub fn active(&self) -> Option<&ActivePolicy> {
        self.active.as_ref()
    }

    /// Verifies, compiles and activates a new bundle (JSON bytes). On any
    /// error the active bundle is unchanged and the error says why.
    pub fn accept(&mut self, bytes: &[u8]) -> Result<u64, String> {
        self.activate(bytes, Origin::New)
    }

    fn activate(&mut self, bytes: &[u8], origin: Origin) -> Result<u64, String> {
        if self.trusted.is_empty() {
            return Err("no trusted policy keys are configured (--trusted-policy-key)".into());
        }
        let bundle = Bundle::from_json(bytes).map_err(|e| e.to_string())?;
        if self.rolled_back.contains(&bundle.version) {
            return Err(format!(
                "policy bundle version {} refused: it was rolled back automatically on this host",
                bundle.version
            ));
        }
        if origin == Origin::New && bundle.version < self.highest_accepted {
            return Err(format!(
                "policy bundle version {} refused: it is older than version {}, which this host already accepted (no downgrades)",
                bundle.version, self.highest_accepted
            ));
        }
        self.trusted
            .verify(&bundle)
            .map_err(|e| format!("policy bundle version {} refused: {e}", bundle.version))?;
        let set = PolicySet::compile(&bundle.files).map_err(|diags| {
            let lines: Vec<String> = diags.iter().map(ToString::to_string).collect();
            format!(
                "policy bundle version {} refused: it does not compile: {}",
                bundle.version,
                lines.join("; ")
            )
        })?;
        let version = bundle.version;
        let highest = self.highest_accepted.max(version);
        if let Some(t) = &self.store {
            t.insert(ACTIVE_KEY, bytes).map_err(|e| e.to_string())?;
            t.insert(HIGHEST_KEY, &highest.to_be_bytes())
                .map_err(|e| e.to_string())?;
            t.flush().map_err(|e| e.to_string())?;
        }
        self.highest_accepted = highest;
        let previous = self.active_bytes.replace(bytes.to_vec());
        let previous_version = self.active.as_ref().map(|a| a.version).unwrap_or(0);
        self.active = Some(ActivePolicy { version, set });
        // A bundle replacing another is on probation, if configured.
        self.probation = match (previous, self.auto_rollback) {
            (Some(previous), Some(_)) => {
                let now = std::time::Instant::now();
                Some(Probation {
                    previous,
                    previous_version,
                    since: now,
                    minute_start: now,
                    in_minute: 0,
                })
            }
            _ => None,
        };
        Ok(version)
    }

    /// Records the finding (when recording), then decides it.
    pub fn decide(&mut self, mut finding: Finding) -> Verdict {
        if let Some(w) = self.recorder.as_mut() {
            if let Ok(line) = serde_json::to_string(&finding) {
                let _ = writeln!(w, "{line}").and_then(|_| w.flush());
            }
        }
        let Some(active) = &self.active else {
            return Verdict::Report {
                finding: Box::new(finding),
                action: None,
            };
        };
        let parent = active
            .set
            .reads_parent(finding.signal)
            .then(|| self.procfs.process(finding.process.ppid))
            .flatten();
        match active.set.evaluate(&finding, parent.as_ref(), &self.host) {
            None => Verdict::Allowed,
            Some(Decision {
                rule_id,
                severity,
                action,
                dry_run,
                hosts,
            }) => {
                finding.rule_id = rule_id;
                finding.severity = severity;
                // A uid flood's aggregate stands for many processes, the
                // one it names maybe a decoy long gone: an alert only.
                let acts = action != Action::Alert && !is_uid_flood_aggregate(&finding);
                let action = acts.then_some(ActionPlan {
                    action,
                    dry_run,
                    hosts,
                });
                Verdict::Report {
                    finding: Box::new(finding),
                    action,
                }
            }
        }
    }

    /// The approved-workload records a trusted key signed (all of them
    /// when no policy key is configured: then the control plane vouches).
    pub fn verified_workloads(
        &self,
        records: Vec<vigil_domain::WorkloadApproval>,
    ) -> Vec<vigil_domain::WorkloadApproval> {
        if self.trusted.is_empty() {
            return records;
        }
        records
            .into_iter()
            .filter(|w| match self.trusted.verify_workload(w) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(id = %w.id, error = %e, "ignoring an approved workload that does not verify");
                    false
                }
            })
            .collect()
    }

    /// Counts a reported finding against a new bundle's probation; past
    /// the limit, goes back to the previous bundle and returns the finding
    /// that says so.
    pub fn watch_rate(&mut self, agent: &vigil_domain::ProcessInfo) -> Option<Finding> {
        let rule = self.auto_rollback?;
        let p = self.probation.as_mut()?;
        let now = std::time::Instant::now();
        if now.duration_since(p.since) > rule.watch {
            self.probation = None;
            return None;
        }
        if now.duration_since(p.minute_start) >= std::time::Duration::from_secs(60) {
            p.minute_start = now;
            p.in_minute = 0;
        }
        p.in_minute += 1;
        if p.in_minute <= rule.per_minute {
            return None;
        }
        let p = self.probation.take()?;
        let bad = self.active.as_ref().map(|a| a.version).unwrap_or(0);
        self.rolled_back.insert(bad);
        if let Some(t) = &self.store {
            let key = [ROLLED_BACK_PREFIX, &bad.to_be_bytes()].concat();
            if let Err(e) = t.insert(key, &[]).and_then(|_| t.flush()) {
                tracing::error!(version = bad, error = %e, "recording the rolled-back version failed");
            }
        }
        // The previous bundle is older than the one rolled back: going
        // back to it is no downgrade an attacker chose.
        let restored = self.activate(&p.previous, Origin::Restored);
        // Going back is not itself on probation.
        self.probation = None;
        let summary = match restored {
            Ok(v) => format!(
                "policy version {bad} rolled back automatically to version {v}: more than {} findings within a minute of its activation",
                rule.per_minute
            ),
            Err(e) => format!(
                "policy version {bad} made more than {} findings within a minute; going back to version {} failed: {e}",
                rule.per_minute, p.previous_version
            ),
        };
        tracing::error!(%summary, "policy auto-rollback");
        Some(Finding {
            seq: 0,
            rule_id: "vigil.policy.auto-rollback".into(),
            severity: vigil_domain::Severity::High,
            signal: vigil_domain::SignalKind::Policy,
            observed_at_unix_nanos: crate::clock::unix_now_nanos(),
            process: agent.clone(),
            file: None,
            net: None,
            gpu: None,
            action: String::new(),
            summary,
        })
    }

    /// Carries out an action: the finding that says what happened, or the
    /// action's waiting part.
    pub fn enforce(&mut self, finding: &Finding, plan: &ActionPlan, event_boot_ns: u64) -> Acted {
        // A kill for a model file also reaches the file's other holders.
        let held = (finding.signal == vigil_domain::SignalKind::ModelFile)
            .then(|| finding.file.as_ref().map(|f| f.path.as_str()))
            .flatten();
        match self
            .enforcer
            .enforce_holding(plan, finding.process.pid, event_boot_ns, held)
        {
            Enforcement::Now(outcome) => Acted::Now(outcome_finding(
                finding,
                plan.action,
                &outcome,
                event_boot_ns,
            )),
            Enforcement::Pending(work) => Acted::Waiting(PendingAction {
                finding: finding.clone(),
                action: plan.action,
                event_boot_ns,
                work,
            }),
        }
    }

    /// The finding that says what became of an action (logged).
    pub fn outcome(
        &self,
        finding: &Finding,
        action: Action,
        outcome: &Outcome,
        event_boot_ns: u64,
    ) -> Finding {
        outcome_finding(finding, action, outcome, event_boot_ns)
    }

    /// The finding that says what a pending action came to.
    pub fn settle(&mut self, settled: SettledAction) -> Finding {
        let outcome = self.enforcer.settle(settled.settlement);
        outcome_finding(
            &settled.finding,
            settled.action,
            &outcome,
            settled.event_boot_ns,
        )
    }

    /// What resolves the host names of `block_egress` lists.
    pub fn set_host_resolver(&mut self, resolver: std::sync::Arc<dyn HostResolver>) {
        self.enforcer.set_host_resolver(resolver);
    }

    /// What actions must never touch.
    pub fn set_target_guard(&mut self, guard: crate::respond::target_guard::TargetGuard) {
        self.enforcer.set_target_guard(guard);
    }

    /// A process exited: whatever was set up to enforce on it goes.
    pub fn forget(&mut self, pid: u32) {
        self.enforcer.forget(pid);
    }

    /// Thaws a frozen process (an operator's request), if it is the one
    /// that started at `start_time`.
    pub fn unfreeze(&mut self, pid: u32, start_time: u64) -> Outcome {
        self.enforcer.unfreeze(pid, start_time)
    }
}

/// Where a bundle comes from: a new one must not be older than the newest
/// accepted; one this agent accepted before (its stored active bundle, or
/// the bundle an automatic rollback goes back to) may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    New,
    Restored,
}

fn version_of(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Logs an action's outcome; the finding that reports it.
fn outcome_finding(
    finding: &Finding,
    action: Action,
    outcome: &Outcome,
    event_boot_ns: u64,
) -> Finding {
    let after_ms = crate::clock::boot_now_ns().saturating_sub(event_boot_ns) as f64 / 1e6;
    let pid = finding.process.pid;
    match outcome {
        Outcome::Failed(e) => {
            tracing::error!(pid, action = action.as_str(), error = %e, "enforcement failed")
        }
        Outcome::Refused(why) => {
            tracing::error!(pid, action = action.as_str(), reason = %why, "enforcement refused")
        }
        other => {
            tracing::warn!(pid, action = action.as_str(), outcome = %other.describe(), after_ms, "enforced")
        }
    }
    action_finding(finding, action, outcome, after_ms)
}

/// The finding for an enforcement: same signal, rule and process; its
/// object says which action, its summary what happened.
fn action_finding(f: &Finding, action: Action, outcome: &Outcome, after_ms: f64) -> Finding {
    Finding {
        seq: 0,
        rule_id: f.rule_id.clone(),
        severity: f.severity,
        signal: f.signal,
        observed_at_unix_nanos: crate::clock::unix_now_nanos(),
        process: f.process.clone(),
        file: f.file.clone(),
        net: f.net.clone(),
        gpu: f.gpu.clone(),
        action: action.as_str().to_string(),
        summary: format!(
            "action {} for rule {} on pid {}: {} ({after_ms:.1} ms after the event)",
            action.as_str(),
            f.rule_id,
            f.process.pid,
            outcome.describe()
        ),
    }
}

#[cfg(test)]
mod tests {
    use vigil_policy::{PolicySource, SigningKey};

    use super::*;

    const RULES: &str = "id: r\ndescription: d\nseverity: high\nwhen: [model_file]\n";

    fn bundle(key: &SigningKey, version: u64) -> Vec<u8> {
        let files: PolicySource = [("rules.yaml".to_string(), RULES.to_string())].into();
        key.sign(version, files).to_json()
    }

    fn governor(key: &SigningKey, db: &sled::Db) -> Governor {
        Governor::new(
            TrustedKeys::from_hex(&[key.public_hex()]).unwrap(),
            HostFacts {
                hostname: "h".into(),
                agent_id: "a".into(),
            },
            Procfs::default(),
            None,
            Some(db),
        )
    }

    #[test]
    fn an_older_version_is_refused_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        {
            let db = sled::open(dir.path()).unwrap();
            let mut g = governor(&key, &db);
            assert_eq!(g.accept(&bundle(&key, 2)), Ok(2));
            let err = g.accept(&bundle(&key, 1)).unwrap_err();
            assert!(
                err.contains("version 1 refused") && err.contains("older than version 2"),
                "{err}"
            );
            assert_eq!(g.active().map(|a| a.version), Some(2));
            // The same version again, or a newer one, is fine.
            assert_eq!(g.accept(&bundle(&key, 2)), Ok(2));
        }
        let db = crate::sled_reopen::reopen_sled(dir.path());
        let mut g = governor(&key, &db);
        assert_eq!(g.active().map(|a| a.version), Some(2));
        let err = g.accept(&bundle(&key, 1)).unwrap_err();
        assert!(err.contains("older than version 2"), "{err}");
        assert_eq!(g.accept(&bundle(&key, 3)), Ok(3));
    }

    #[test]
    fn a_version_rolled_back_automatically_stays_refused_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let agent = vigil_domain::ProcessInfo::default();
        {
            let db = sled::open(dir.path()).unwrap();
            let mut g = governor(&key, &db);
            g.set_auto_rollback(Some(AutoRollback {
                per_minute: 1,
                watch: std::time::Duration::from_secs(60),
            }));
            assert_eq!(g.accept(&bundle(&key, 1)), Ok(1));
            assert_eq!(g.accept(&bundle(&key, 2)), Ok(2));
            assert!(g.watch_rate(&agent).is_none());
            let rolled = g.watch_rate(&agent).expect("rolled back");
            assert!(
                rolled
                    .summary
                    .contains("rolled back automatically to version 1"),
                "{}",
                rolled.summary
            );
            assert_eq!(g.active().map(|a| a.version), Some(1));
        }
        let db = crate::sled_reopen::reopen_sled(dir.path());
        let mut g = governor(&key, &db);
        // Version 1 (older than 2) is what was active: it is restored.
        assert_eq!(g.active().map(|a| a.version), Some(1));
        let err = g.accept(&bundle(&key, 2)).unwrap_err();
        assert!(err.contains("rolled back automatically"), "{err}");
        assert_eq!(g.accept(&bundle(&key, 3)), Ok(3));
    }
}
