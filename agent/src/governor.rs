//! Between detection and the spool: the active policy bundle decides which
//! findings stand (rule id, severity) and what is done about them; the
//! enforcer does it; every action's outcome is a finding of its own.
//!
//! Architecture invariant: only a bundle whose signature verifies against a
//! trusted key and that compiles becomes active; anything else is refused
//! with its reason and the previous bundle stays in force. The last good
//! bundle is kept in the agent's database, so a restart enforces it too.

use std::io::Write;

use vigil_domain::Finding;
use vigil_policy::{Action, Bundle, Decision, HostFacts, PolicySet, TrustedKeys};

use crate::enforcer::{Enforcer, Outcome};
use crate::procfs::Procfs;

const POLICY_TREE: &str = "agent.v1.policy";
const ACTIVE_KEY: &[u8] = b"active";

pub struct ActivePolicy {
    pub version: u64,
    pub digest: String,
    pub set: PolicySet,
}

/// What becomes of a finding.
pub enum Verdict {
    /// The policy allows it: not reported.
    Allowed,
    /// Report it; then carry out the action, if it is more than an alert.
    Report {
        finding: Box<Finding>,
        action: Option<(Action, bool)>,
    },
}

pub struct Governor {
    trusted: TrustedKeys,
    active: Option<ActivePolicy>,
    enforcer: Enforcer,
    host: HostFacts,
    procfs: Procfs,
    recorder: Option<std::io::BufWriter<std::fs::File>>,
    store: Option<sled::Tree>,
    allowed: u64,
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
        let mut g = Self {
            trusted,
            active: None,
            enforcer: Enforcer::new(procfs.clone()),
            host,
            procfs,
            recorder: recorder.map(std::io::BufWriter::new),
            store,
            allowed: 0,
        };
        // The last good bundle, as accepted before a restart.
        let stored = g
            .store
            .as_ref()
            .and_then(|t| t.get(ACTIVE_KEY).ok().flatten());
        if let Some(bytes) = stored {
            match g.accept(&bytes) {
                Ok(v) => tracing::info!(version = v, "policy bundle restored"),
                Err(e) => tracing::error!(error = %e, "the stored policy bundle no longer loads"),
            }
        }
        g
    }

    pub fn active(&self) -> Option<&ActivePolicy> {
        self.active.as_ref()
    }

    /// Findings the policy allowed (not reported).
    pub fn allowed(&self) -> u64 {
        self.allowed
    }

    /// Verifies, compiles and activates a bundle (JSON bytes). On any
    /// error the active bundle is unchanged and the error says why.
    pub fn accept(&mut self, bytes: &[u8]) -> Result<u64, String> {
        if self.trusted.is_empty() {
            return Err("no trusted policy keys are configured (--trusted-policy-key)".into());
        }
        let bundle = Bundle::from_json(bytes).map_err(|e| e.to_string())?;
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
        if let Some(t) = &self.store {
            t.insert(ACTIVE_KEY, bytes).map_err(|e| e.to_string())?;
            t.flush().map_err(|e| e.to_string())?;
        }
        let version = bundle.version;
        self.active = Some(ActivePolicy {
            version,
            digest: bundle.digest(),
            set,
        });
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
        let parent = self.procfs.process(finding.process.ppid);
        match active.set.evaluate(&finding, parent.as_ref(), &self.host) {
            None => {
                self.allowed += 1;
                Verdict::Allowed
            }
            Some(Decision {
                rule_id,
                severity,
                action,
                dry_run,
            }) => {
                finding.rule_id = rule_id;
                finding.severity = severity;
                let action = (action != Action::Alert).then_some((action, dry_run));
                Verdict::Report {
                    finding: Box::new(finding),
                    action,
                }
            }
        }
    }

    /// Carries out an action; the finding that says what happened.
    pub fn enforce(
        &mut self,
        finding: &Finding,
        action: Action,
        dry_run: bool,
        event_boot_ns: u64,
    ) -> Finding {
        let outcome = self.enforcer.enforce(action, dry_run, finding.process.pid);
        let after_ms = crate::clock::boot_now_ns().saturating_sub(event_boot_ns) as f64 / 1e6;
        match &outcome {
            Outcome::Failed(e) => {
                tracing::error!(pid = finding.process.pid, action = action.as_str(), error = %e, "enforcement failed")
            }
            other => {
                tracing::warn!(pid = finding.process.pid, action = action.as_str(), outcome = %other.describe(), after_ms, "enforced")
            }
        }
        action_finding(finding, action, &outcome, after_ms)
    }

    /// A process exited: whatever was set up to enforce on it goes.
    pub fn forget(&mut self, pid: u32) {
        self.enforcer.forget(pid);
    }

    /// Thaws a frozen process (an operator's request).
    pub fn unfreeze(&mut self, pid: u32) -> Outcome {
        self.enforcer.unfreeze(pid)
    }
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
        summary: format!(
            "action {} for rule {} on pid {}: {} ({after_ms:.1} ms after the event)",
            action.as_str(),
            f.rule_id,
            f.process.pid,
            outcome.describe()
        ),
    }
}
