//! The respond stage's own task: puts each finding through the policy
//! (which may allow it, or re-rate it and act on the process), and does
//! what the control plane asks (new bundles, approved workloads, thaws).

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use vigil_domain::{PolicyStatus, ProcessInfo, WorkloadApproval};
use vigil_policy::{HostFacts, TrustedKeys};

use super::action_budget::{ActionBudget, Allowance};
use super::governor::{AutoRollback, Governor, Verdict};
use super::target_guard::TargetGuard;
use crate::config::{hostname, AgentConfig};
use crate::detect::{Detections, TimedFinding};
use crate::metrics::AgentMetrics;
use crate::procfs::Procfs;

/// What the control plane asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// A signed policy bundle to verify and activate.
    Policy { version: u64, bundle: Vec<u8> },
    /// Thaw a process a freeze rule froze.
    Unfreeze { pid: u32 },
    /// Every approved workload (replacing the previous set).
    Workloads(Vec<WorkloadApproval>),
}

/// The respond stage's channels.
pub struct RespondLinks {
    pub detections: mpsc::Receiver<Detections>,
    pub requests: mpsc::Receiver<ControlRequest>,
    /// Approved workloads whose signature verified, for the detect stage.
    pub workloads: mpsc::Sender<Vec<WorkloadApproval>>,
    /// The findings that stand, in order, one batch per input batch.
    pub standing: mpsc::Sender<Vec<TimedFinding>>,
}

pub struct RespondStage {
    governor: Governor,
    /// Actions per rule per minute.
    budget: ActionBudget,
    /// The agent itself, as the process behind its own findings.
    agent_process: ProcessInfo,
    policy_status: watch::Sender<Option<PolicyStatus>>,
    metrics: AgentMetrics,
}

impl RespondStage {
    /// The governor with the trusted keys, the last good bundle (from
    /// `db`) and the bundle `--policy-bundle` names.
    pub fn open(
        config: &AgentConfig,
        db: &sled::Db,
        metrics: AgentMetrics,
    ) -> anyhow::Result<Self> {
        let trusted =
            TrustedKeys::from_hex(&config.trusted_policy_keys).context("--trusted-policy-key")?;
        let recorder = match &config.record_events {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            ),
            None => None,
        };
        let host_facts = HostFacts {
            hostname: hostname(),
            agent_id: config.resolved_agent_id(),
        };
        let procfs = Procfs::default();
        let mut governor = Governor::new(trusted, host_facts, procfs.clone(), recorder, Some(db));
        governor.set_target_guard(TargetGuard::for_this_agent(
            config.protect_pids.clone(),
            config.protect_exes.clone(),
        ));
        if let Some(path) = &config.policy_bundle {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            match governor.accept(&bytes) {
                Ok(v) => {
                    tracing::info!(version = v, path = %path.display(), "policy bundle active")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "policy bundle refused; keeping the previous policy")
                }
            }
        }
        if config.policy_auto_rollback_per_minute > 0 {
            governor.set_auto_rollback(Some(AutoRollback {
                per_minute: config.policy_auto_rollback_per_minute,
                watch: std::time::Duration::from_secs(config.policy_auto_rollback_watch_secs),
            }));
        }
        let me = std::process::id();
        let agent_process = procfs.process(me).unwrap_or(ProcessInfo {
            pid: me,
            comm: "vigil-agent".into(),
            ..Default::default()
        });
        let active = governor.active().map(|a| a.version);
        metrics.set_policy_version(active.unwrap_or(0));
        Ok(Self {
            governor,
            budget: ActionBudget::new(config.max_actions_per_rule_per_minute),
            agent_process,
            policy_status: watch::channel(active.map(PolicyStatus::active)).0,
            metrics,
        })
    }

    /// What the agent did with its policy bundles (None before any).
    pub fn policy_status(&self) -> watch::Receiver<Option<PolicyStatus>> {
        self.policy_status.subscribe()
    }

    /// Runs until the detect stage stops (or the ship stage is gone).
    pub async fn run(mut self, links: RespondLinks) -> anyhow::Result<()> {
        let RespondLinks {
            mut detections,
            mut requests,
            workloads,
            standing,
        } = links;
        loop {
            tokio::select! {
                batch = detections.recv() => {
                    let Some(batch) = batch else { break };
                    let out = self.respond(batch);
                    if !out.is_empty() && standing.send(out).await.is_err() {
                        anyhow::bail!("the ship stage stopped");
                    }
                }
                Some(request) = requests.recv() => self.on_request(request, &workloads).await,
            }
        }
        Ok(())
    }

    /// The findings of `batch` that stand, each followed by its action's
    /// outcome; what was enforced on a process goes when it exits.
    fn respond(&mut self, batch: Detections) -> Vec<TimedFinding> {
        let mut out = Vec::with_capacity(batch.findings.len());
        let mut exits = batch.exits.into_iter().peekable();
        for (i, found) in batch.findings.into_iter().enumerate() {
            while let Some((pid, _)) = exits.next_if(|(_, before)| *before <= i) {
                self.governor.forget(pid);
            }
            self.decide(found, &mut out);
        }
        for (pid, _) in exits {
            self.governor.forget(pid);
        }
        out
    }

    fn decide(&mut self, found: TimedFinding, out: &mut Vec<TimedFinding>) {
        let event_boot_ns = found.event_boot_ns;
        let Verdict::Report { finding, action } = self.governor.decide(found.finding) else {
            return;
        };
        // Act first: a kill should not wait for the disk. A dry run takes
        // nothing from the rule's budget.
        let acted = action.and_then(|plan| {
            let allowance = if plan.dry_run {
                Allowance::Act
            } else {
                self.budget
                    .take(&finding.rule_id, std::time::Instant::now())
            };
            match allowance {
                Allowance::Act => Some(self.governor.enforce(&finding, &plan, event_boot_ns)),
                Allowance::LimitReached => Some(self.action_limit_finding(&finding, &plan)),
                Allowance::AlertOnly => None,
            }
        });
        out.push(TimedFinding {
            finding: *finding,
            event_boot_ns,
        });
        if let Some(finding) = acted {
            out.push(TimedFinding {
                finding,
                event_boot_ns,
            });
        }
        if let Some(finding) = self.governor.watch_rate(&self.agent_process) {
            out.push(TimedFinding {
                finding,
                event_boot_ns,
            });
            let active = self.governor.active().map(|a| a.version).unwrap_or(0);
            let refused = self
                .policy_status
                .borrow()
                .as_ref()
                .map(|s| s.active_version)
                .unwrap_or(0);
            self.metrics.set_policy_version(active);
            self.policy_status.send_replace(Some(PolicyStatus::refused(
                active,
                refused,
                format!("version {refused} was rolled back automatically (too many findings after it became active)"),
            )));
        }
    }

    /// The one finding that says a rule hit its action limit: until its
    /// minute is over, its findings are reported and nothing is done.
    fn action_limit_finding(
        &self,
        finding: &vigil_domain::Finding,
        plan: &super::ActionPlan,
    ) -> vigil_domain::Finding {
        let resumes = self
            .budget
            .resumes_in(&finding.rule_id, std::time::Instant::now())
            .unwrap_or_default();
        let summary = format!(
            "rule {} reached its limit of {} actions a minute: {} on pid {} and every further match is alert-only for the next {} s",
            finding.rule_id,
            self.budget.per_minute(),
            plan.action.as_str(),
            finding.process.pid,
            resumes.as_secs()
        );
        tracing::error!(rule = %finding.rule_id, %summary, "action limit reached");
        vigil_domain::Finding {
            seq: 0,
            rule_id: "vigil.respond.action-limit".into(),
            severity: vigil_domain::Severity::High,
            signal: vigil_domain::SignalKind::Policy,
            observed_at_unix_nanos: crate::clock::unix_now_nanos(),
            process: finding.process.clone(),
            file: None,
            net: None,
            gpu: None,
            action: String::new(),
            summary,
        }
    }

    async fn on_request(
        &mut self,
        request: ControlRequest,
        workloads: &mpsc::Sender<Vec<WorkloadApproval>>,
    ) {
        match request {
            ControlRequest::Policy { version, bundle } => {
                let current = self.governor.active().map(|a| a.version).unwrap_or(0);
                if version == current {
                    return;
                }
                let status = match self.governor.accept(&bundle) {
                    Ok(v) => {
                        tracing::info!(
                            version = v,
                            "policy bundle active (from the control plane)"
                        );
                        self.metrics.set_policy_version(v);
                        PolicyStatus::active(v)
                    }
                    Err(e) => {
                        tracing::error!(version, error = %e, "policy bundle refused; keeping the previous policy");
                        PolicyStatus::refused(current, version, e)
                    }
                };
                self.policy_status.send_replace(Some(status));
            }
            ControlRequest::Workloads(records) => {
                let records = self.governor.verified_workloads(records);
                // The detect stage gone means the agent is stopping.
                let _ = workloads.send(records).await;
            }
            ControlRequest::Unfreeze { pid } => {
                let outcome = self.governor.unfreeze(pid);
                tracing::warn!(pid, outcome = %outcome.describe(), "unfreeze requested by an operator");
            }
        }
    }
}
