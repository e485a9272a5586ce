//! The respond stage's own task: puts each finding through the policy
//! (which may allow it, or re-rate it and act on the process), and does
//! what the control plane asks (new bundles, approved workloads, thaws).
//!
//! What an action waits for (a freeze reported done, a host list's names
//! resolving) is awaited in a set of tasks the stage owns, never on its
//! loop: one slow resolver or stuck freeze delays only its own outcome
//! finding, which goes out on the same channel when it is known.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use vigil_domain::{PolicyStatus, ProcessInfo, UnfreezeOrder, WorkloadApproval};
use vigil_policy::{HostFacts, TrustedKeys};

use super::action_budget::{ActionBudget, Allowance};
use super::action_queue::{ActionQueue, Turn};
use super::enforcer::Outcome;
use super::governor::{Acted, AutoRollback, Governor, PendingAction, SettledAction, Verdict};
use super::host_resolver::HostResolver;
use super::target_guard::TargetGuard;
use super::unfreeze_orders::UnfreezeOrders;
use crate::config::{hostname, AgentConfig};
use crate::detect::{Detections, TimedFinding};
use crate::metrics::AgentMetrics;
use crate::procfs::Procfs;

/// What the control plane asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRequest {
    /// A signed policy bundle to verify and activate.
    Policy { version: u64, bundle: Vec<u8> },
    /// Thaw a process a freeze rule froze: an operator's signed order,
    /// carried out only if it verifies (see `UnfreezeOrders`).
    Unfreeze(UnfreezeOrder),
    /// Every approved workload (replacing the previous set).
    Workloads(Vec<WorkloadApproval>),
}

/// The respond stage's channels.
pub struct RespondLinks {
    pub detections: mpsc::Receiver<Detections>,
    pub requests: mpsc::Receiver<ControlRequest>,
    /// Approved workloads whose signature verified, for the detect stage.
    pub workloads: mpsc::Sender<Vec<WorkloadApproval>>,
    /// The findings that stand, in order, one batch per input batch; an
    /// action's outcome known later, and an unfreeze order's, in a batch
    /// of its own.
    pub standing: mpsc::Sender<Vec<TimedFinding>>,
}

/// Most actions waiting at once (freezes being confirmed, host lists
/// resolving). Past it, the loop waits for the oldest to end (each is
/// bounded: a freeze by 1 s, a name by `RESOLVE_TIMEOUT`).
const MAX_PENDING_ACTIONS: usize = 64;

pub struct RespondStage {
    governor: Governor,
    /// Which operator orders to thaw a process are carried out.
    unfreeze_orders: UnfreezeOrders,
    procfs: Procfs,
    /// Actions per rule and uid per window.
    budget: ActionBudget,
    /// Actions over their budget, waiting for the window to refill.
    queue: ActionQueue,
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
        let unfreeze_orders =
            UnfreezeOrders::new(trusted.clone(), host_facts.agent_id.clone(), Some(db));
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
            unfreeze_orders,
            procfs,
            budget: ActionBudget::new(
                config.max_actions_per_rule_per_minute,
                std::time::Duration::from_secs_f64(config.action_budget_window_secs.max(0.001)),
            ),
            queue: ActionQueue::default(),
            agent_process,
            policy_status: watch::channel(active.map(PolicyStatus::active)).0,
            metrics,
        })
    }

    /// What resolves the host names of `block_egress` lists (the system's
    /// resolver unless set).
    pub fn set_host_resolver(&mut self, resolver: Arc<dyn HostResolver>) {
        self.governor.set_host_resolver(resolver);
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
        let mut pending: JoinSet<SettledAction> = JoinSet::new();
        loop {
            let retry_at = self
                .queue
                .next_retry(&self.budget, std::time::Instant::now())
                .map(tokio::time::Instant::from_std);
            let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
            tokio::select! {
                batch = detections.recv() => {
                    let Some(batch) = batch else { break };
                    let (out, waiting) = self.respond(batch);
                    send(&standing, out).await?;
                    // After the findings they report on.
                    self.await_actions(waiting, &mut pending, &standing).await?;
                }
                () = tokio::time::sleep_until(retry_at.unwrap_or(far)), if retry_at.is_some() => {
                    let (out, waiting) = self.retry_queued();
                    send(&standing, out).await?;
                    self.await_actions(waiting, &mut pending, &standing).await?;
                }
                Some(done) = pending.join_next(), if !pending.is_empty() => {
                    self.settled(done, &standing).await?;
                }
                Some(request) = requests.recv() => {
                    self.on_request(request, &workloads, &standing).await?;
                }
            }
        }
        // The agent is stopping: what still waits is not waited for (the
        // actions themselves are taken).
        if !pending.is_empty() {
            tracing::warn!(
                waiting = pending.len(),
                "stopping with actions whose outcome is not known yet"
            );
        }
        Ok(())
    }

    /// Awaits `waiting` off the loop, at most `MAX_PENDING_ACTIONS` at once.
    async fn await_actions(
        &mut self,
        waiting: Vec<PendingAction>,
        pending: &mut JoinSet<SettledAction>,
        standing: &mpsc::Sender<Vec<TimedFinding>>,
    ) -> anyhow::Result<()> {
        for action in waiting {
            while pending.len() >= MAX_PENDING_ACTIONS {
                let Some(done) = pending.join_next().await else {
                    break;
                };
                self.settled(done, standing).await?;
            }
            pending.spawn(action.wait());
        }
        Ok(())
    }

    /// Takes the queued actions whose budget refilled, on the processes
    /// they were queued for if these still live: the findings that say
    /// what was done, and the actions still waiting.
    fn retry_queued(&mut self) -> (Vec<TimedFinding>, Vec<PendingAction>) {
        let now = std::time::Instant::now();
        let mut out = Vec::new();
        let mut waiting = Vec::new();
        for turn in self.queue.due(&self.procfs, &mut self.budget, now) {
            let (queued, finding) = match turn {
                Turn::Act(queued) => {
                    let waited = now.duration_since(queued.queued_at).as_secs_f64();
                    match self
                        .governor
                        .enforce(&queued.finding, &queued.plan, queued.event_boot_ns)
                    {
                        Acted::Now(mut finding) => {
                            finding
                                .summary
                                .push_str(&format!(" [queued {waited:.1} s: action budget]"));
                            (queued, finding)
                        }
                        Acted::Waiting(action) => {
                            waiting.push(action);
                            continue;
                        }
                    }
                }
                Turn::Gone(queued) => {
                    let pid = queued.finding.process.pid;
                    let outcome = Outcome::Failed(format!(
                        "{} pid {pid}: the process ended while the action was queued (action budget)",
                        queued.plan.action.as_str()
                    ));
                    let finding = self.governor.outcome(
                        &queued.finding,
                        queued.plan.action,
                        &outcome,
                        queued.event_boot_ns,
                    );
                    (queued, finding)
                }
            };
            out.push(TimedFinding {
                finding,
                event_boot_ns: queued.event_boot_ns,
            });
        }
        (out, waiting)
    }

    /// Reports what a pending action came to.
    async fn settled(
        &mut self,
        done: Result<SettledAction, tokio::task::JoinError>,
        standing: &mpsc::Sender<Vec<TimedFinding>>,
    ) -> anyhow::Result<()> {
        let settled = match done {
            Ok(settled) => settled,
            Err(e) => {
                tracing::error!(error = %e, "an action's waiting task failed");
                return Ok(());
            }
        };
        let event_boot_ns = settled.event_boot_ns();
        let finding = self.governor.settle(settled);
        send(
            standing,
            vec![TimedFinding {
                finding,
                event_boot_ns,
            }],
        )
        .await
    }

    /// The findings of `batch` that stand, each followed by its action's
    /// outcome, and the actions still waiting (their outcomes come when
    /// they end); what was enforced on a process goes when it exits.
    fn respond(&mut self, batch: Detections) -> (Vec<TimedFinding>, Vec<PendingAction>) {
        let mut out = Vec::with_capacity(batch.findings.len());
        let mut waiting = Vec::new();
        let mut exits = batch.exits.into_iter().peekable();
        for (i, found) in batch.findings.into_iter().enumerate() {
            while let Some((pid, _)) = exits.next_if(|(_, before)| *before <= i) {
                self.governor.forget(pid);
            }
            self.decide(found, &mut out, &mut waiting);
        }
        for (pid, _) in exits {
            self.governor.forget(pid);
        }
        (out, waiting)
    }

    fn decide(
        &mut self,
        found: TimedFinding,
        out: &mut Vec<TimedFinding>,
        waiting: &mut Vec<PendingAction>,
    ) {
        let event_boot_ns = found.event_boot_ns;
        let Verdict::Report {
            mut finding,
            action,
        } = self.governor.decide(found.finding)
        else {
            return;
        };
        // Act first: a kill should not wait for the disk. A dry run takes
        // nothing from the rule's budget.
        let acted = action.and_then(|plan| {
            let now = std::time::Instant::now();
            let uid = finding.process.uid;
            let allowance = if plan.dry_run {
                Allowance::Act
            } else {
                self.budget.take(&finding.rule_id, uid, now)
            };
            if allowance == Allowance::Act {
                return match self.governor.enforce(&finding, &plan, event_boot_ns) {
                    Acted::Now(outcome) => Some(outcome),
                    Acted::Waiting(action) => {
                        waiting.push(action);
                        None
                    }
                };
            }
            let limit = (allowance == Allowance::LimitReached)
                .then(|| self.action_limit_finding(&finding, &plan));
            let queued = self.queue.push(
                &self.procfs,
                (*finding).clone(),
                plan.clone(),
                event_boot_ns,
                uid,
                now,
            );
            let resumes = self
                .budget
                .resumes_in(&finding.rule_id, uid, now)
                .unwrap_or_default();
            let note = match queued {
                Ok(()) => format!(
                    " [queued: action budget; {} when the budget of uid {uid} refills in {:.1} s]",
                    plan.action.as_str(),
                    resumes.as_secs_f64()
                ),
                Err(why) => format!(
                    " [action budget spent; {} not queued: {why}]",
                    plan.action.as_str()
                ),
            };
            finding.summary.push_str(&note);
            limit
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

    /// The one finding that says a rule hit its action limit for a uid:
    /// until its window is over, its actions on that uid's processes are
    /// queued.
    fn action_limit_finding(
        &self,
        finding: &vigil_domain::Finding,
        plan: &super::ActionPlan,
    ) -> vigil_domain::Finding {
        let uid = finding.process.uid;
        let resumes = self
            .budget
            .resumes_in(&finding.rule_id, uid, std::time::Instant::now())
            .unwrap_or_default();
        let summary = format!(
            "rule {} reached its limit of {} actions {} (uid {uid}): {} on pid {} and every further match of uid {uid} is queued (up to {} actions) until the window refills in {:.1} s",
            finding.rule_id,
            self.budget.per_window(),
            self.budget.window_text(),
            plan.action.as_str(),
            finding.process.pid,
            super::action_queue::MAX_QUEUED_ACTIONS,
            resumes.as_secs_f64()
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
        standing: &mpsc::Sender<Vec<TimedFinding>>,
    ) -> anyhow::Result<()> {
        match request {
            ControlRequest::Policy { version, bundle } => {
                let current = self.governor.active().map(|a| a.version).unwrap_or(0);
                if version == current {
                    return Ok(());
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
            ControlRequest::Unfreeze(order) => {
                let finding = self.unfreeze(&order);
                send(
                    standing,
                    vec![TimedFinding {
                        finding,
                        event_boot_ns: crate::clock::boot_now_ns(),
                    }],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Carries out an operator's order to thaw a process, if it verifies;
    /// the finding that says what became of it.
    fn unfreeze(&mut self, order: &UnfreezeOrder) -> vigil_domain::Finding {
        let pid = order.pid;
        let outcome = match self
            .unfreeze_orders
            .admit(order, crate::clock::unix_now_nanos() / 1_000_000_000)
        {
            Ok(()) => self.governor.unfreeze(pid, order.start_time),
            Err(why) => Outcome::Refused(format!("unfreeze pid {pid}: {why}")),
        };
        // The signer is as the order says (unverified when refused).
        let signer: String = order.signer.chars().take(64).collect();
        match &outcome {
            Outcome::Refused(why) => {
                tracing::error!(pid, signer = %signer, reason = %why, "unfreeze refused")
            }
            other => {
                tracing::warn!(pid, signer = %signer, outcome = %other.describe(), "unfreeze ordered by an operator")
            }
        }
        let severity = match outcome {
            Outcome::Done(_) | Outcome::DryRun(_) => vigil_domain::Severity::Medium,
            Outcome::Failed(_) | Outcome::Refused(_) => vigil_domain::Severity::High,
        };
        vigil_domain::Finding {
            seq: 0,
            rule_id: UNFREEZE_RULE.into(),
            severity,
            signal: vigil_domain::SignalKind::Policy,
            observed_at_unix_nanos: crate::clock::unix_now_nanos(),
            process: self.procfs.process(pid).unwrap_or(ProcessInfo {
                pid,
                ..Default::default()
            }),
            file: None,
            net: None,
            gpu: None,
            action: String::new(),
            summary: format!(
                "unfreeze of pid {pid} ordered by key {signer}: {}",
                outcome.describe()
            ),
        }
    }
}

/// The rule id of the findings that say what became of an unfreeze order.
pub const UNFREEZE_RULE: &str = "vigil.respond.unfreeze";

async fn send(
    standing: &mpsc::Sender<Vec<TimedFinding>>,
    out: Vec<TimedFinding>,
) -> anyhow::Result<()> {
    if !out.is_empty() && standing.send(out).await.is_err() {
        anyhow::bail!("the ship stage stopped");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;
    use tokio::sync::Notify;
    use vigil_domain::{Finding, Severity, SignalKind};
    use vigil_policy::{PolicySource, SigningKey};

    use super::*;
    use crate::respond::host_resolver::Resolution;

    const RULES: &str = r#"lists:
  stalled: ["stall.test", "127.0.0.9"]
---
id: test.block-stalled
description: its host list's name never resolves until released
severity: high
when: [model_file]
condition: process.name == "egress-stall"
action: block_egress
hosts: stalled
---
id: test.rest
description: reported, nothing done
severity: medium
when: [model_file]
"#;

    /// A resolver that does not answer until the test releases it.
    struct StalledResolver(Arc<Notify>);

    impl HostResolver for StalledResolver {
        fn resolve(&self, _host: String) -> Resolution {
            let release = Arc::clone(&self.0);
            Box::pin(async move {
                release.notified().await;
                Ok(vec!["127.0.0.10".parse().expect("an address")])
            })
        }
    }

    fn model_file(pid: u32, name: &str) -> TimedFinding {
        TimedFinding {
            finding: Finding {
                seq: 0,
                rule_id: "vigil.model-file".into(),
                severity: Severity::Medium,
                signal: SignalKind::ModelFile,
                observed_at_unix_nanos: crate::clock::unix_now_nanos(),
                process: ProcessInfo {
                    pid,
                    comm: name.into(),
                    ..Default::default()
                },
                file: None,
                net: None,
                gpu: None,
                action: String::new(),
                summary: "a model file".into(),
            },
            event_boot_ns: crate::clock::boot_now_ns(),
        }
    }

    async fn next(standing: &mut mpsc::Receiver<Vec<TimedFinding>>, what: &str) -> Vec<Finding> {
        tokio::time::timeout(Duration::from_secs(20), standing.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} within 20 s: the respond stage stalled"))
            .expect("the respond stage stopped")
            .into_iter()
            .map(|t| t.finding)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_host_list_that_never_resolves_delays_only_its_own_outcome() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: block_egress needs root (a cgroup and an eBPF program)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let files: PolicySource = [("rules.yaml".to_string(), RULES.to_string())].into();
        let bundle = tmp.path().join("bundle.json");
        std::fs::write(&bundle, key.sign(1, files).to_json()).unwrap();
        let config = AgentConfig::try_parse_from([
            "vigil-agent",
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
        ])
        .unwrap();
        let db = sled::open(tmp.path().join("db")).unwrap();
        let mut stage = RespondStage::open(&config, &db, AgentMetrics::default()).unwrap();
        assert_eq!(stage.governor.active().map(|a| a.version), Some(1));
        let release = Arc::new(Notify::new());
        stage.set_host_resolver(Arc::new(StalledResolver(Arc::clone(&release))));
        let (detections_tx, detections) = mpsc::channel(8);
        let (_requests_tx, requests) = mpsc::channel(8);
        let (workloads, _workloads_rx) = mpsc::channel(8);
        let (standing, mut standing_rx) = mpsc::channel(64);
        let running = tokio::spawn(stage.run(RespondLinks {
            detections,
            requests,
            workloads,
            standing,
        }));

        let mut offender = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let pid = offender.id();
        detections_tx
            .send(Detections {
                findings: vec![model_file(pid, "egress-stall")],
                exits: Vec::new(),
            })
            .await
            .unwrap();
        let first = next(&mut standing_rx, "finding for the offender").await;
        assert_eq!(first.len(), 1, "{first:#?}");
        assert_eq!(first[0].rule_id, "test.block-stalled");
        assert_eq!(first[0].action, "");

        // While its host list resolves, another finding is decided.
        detections_tx
            .send(Detections {
                findings: vec![model_file(std::process::id(), "bystander")],
                exits: Vec::new(),
            })
            .await
            .unwrap();
        let second = next(&mut standing_rx, "finding for the bystander").await;
        assert_eq!(second.len(), 1, "{second:#?}");
        assert_eq!(second[0].rule_id, "test.rest");

        // Resolved: the outcome follows, with the name's address too.
        release.notify_one();
        let outcome = next(&mut standing_rx, "block_egress outcome").await;
        assert_eq!(outcome.len(), 1, "{outcome:#?}");
        assert_eq!(outcome[0].action, "block_egress");
        assert!(
            outcome[0]
                .summary
                .contains(&format!("blocked egress of pid {pid} "))
                && outcome[0].summary.contains("to 2 addresses of 2 hosts"),
            "{}",
            outcome[0].summary
        );

        let _ = offender.kill();
        let _ = offender.wait();
        detections_tx
            .send(Detections {
                findings: Vec::new(),
                exits: vec![(pid, 0)],
            })
            .await
            .unwrap();
        drop(detections_tx);
        running.await.unwrap().unwrap();
    }
    const FREEZE_RULES: &str = r#"id: test.freeze-stalled
description: its process has a thread that does not freeze
severity: high
when: [model_file]
condition: process.name == "freeze-stall"
action: freeze
---
id: test.rest
description: reported, nothing done
severity: medium
when: [model_file]
"#;

    /// A thread of this python program waits on a FUSE mount (argv[1])
    /// that never answers: a killable wait, which a cgroup freeze does not
    /// end, so the freeze is not reported done.
    const STUCK_ON_FUSE: &str = "import os, sys, threading, time\nthreading.Thread(target=lambda: os.listdir(sys.argv[1]), daemon=True).start()\ntime.sleep(120)\n";

    /// A FUSE mount at `dir` whose server never answers (not even its
    /// INIT): every access waits until the returned descriptor closes.
    fn unanswered_fuse_mount(dir: &std::path::Path) -> std::fs::File {
        use std::os::fd::AsRawFd;
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("/dev/fuse");
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            device.as_raw_fd()
        );
        nix::mount::mount(
            Some("vigil-test-stall"),
            dir,
            Some("fuse"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("mounting the FUSE file system");
        device
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_freeze_that_is_not_reported_done_delays_only_its_own_outcome() {
        if !rustix::process::geteuid().is_root() || !std::path::Path::new("/dev/fuse").exists() {
            eprintln!("skipped: freeze needs root (a cgroup), the stall a FUSE mount");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let key = SigningKey::generate();
        let files: PolicySource = [("rules.yaml".to_string(), FREEZE_RULES.to_string())].into();
        let bundle = tmp.path().join("bundle.json");
        std::fs::write(&bundle, key.sign(1, files).to_json()).unwrap();
        let config = AgentConfig::try_parse_from([
            "vigil-agent",
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
        ])
        .unwrap();
        let db = sled::open(tmp.path().join("db")).unwrap();
        let stage = RespondStage::open(&config, &db, AgentMetrics::default()).unwrap();
        let (detections_tx, detections) = mpsc::channel(8);
        let (_requests_tx, requests) = mpsc::channel(8);
        let (workloads, _workloads_rx) = mpsc::channel(8);
        let (standing, mut standing_rx) = mpsc::channel(64);
        let running = tokio::spawn(stage.run(RespondLinks {
            detections,
            requests,
            workloads,
            standing,
        }));

        let mount = tmp.path().join("stall");
        std::fs::create_dir(&mount).unwrap();
        let device = unanswered_fuse_mount(&mount);
        let mut offender = std::process::Command::new("python3")
            .args(["-c", STUCK_ON_FUSE])
            .arg(&mount)
            .spawn()
            .unwrap();
        let pid = offender.id();
        // Wait for a thread of it to be stuck (state D: a killable wait),
        // and to stay so for 200 ms: a page fault or a disk read at start
        // is a D state too, and a freeze then would find nothing to wait
        // for (on a loaded machine that made this test flaky).
        let in_d = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|t| {
                    std::fs::read_to_string(t.path().join("stat"))
                        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('D')))
                })
        };
        let mut in_a_row = 0;
        let stuck = (0..2000).any(|_| {
            in_a_row = if in_d() { in_a_row + 1 } else { 0 };
            std::thread::sleep(Duration::from_millis(10));
            in_a_row >= 20
        });
        assert!(stuck, "no thread of pid {pid} waits on the FUSE mount");

        detections_tx
            .send(Detections {
                findings: vec![model_file(pid, "freeze-stall")],
                exits: Vec::new(),
            })
            .await
            .unwrap();
        let first = next(&mut standing_rx, "finding for the offender").await;
        assert_eq!(
            first.len(),
            1,
            "the freeze was reported done at once: {first:#?}"
        );
        assert_eq!(first[0].rule_id, "test.freeze-stalled");

        // While the freeze waits, another finding is decided, and comes
        // first.
        detections_tx
            .send(Detections {
                findings: vec![model_file(std::process::id(), "bystander")],
                exits: Vec::new(),
            })
            .await
            .unwrap();
        let second = next(&mut standing_rx, "finding for the bystander").await;
        assert_eq!(second.len(), 1, "{second:#?}");
        assert_eq!(second[0].rule_id, "test.rest");

        // The freeze's outcome follows: not reported done in time.
        let outcome = next(&mut standing_rx, "freeze outcome").await;
        assert_eq!(outcome.len(), 1, "{outcome:#?}");
        assert_eq!(outcome[0].action, "freeze");
        assert!(
            outcome[0].summary.contains("did not report frozen"),
            "{}",
            outcome[0].summary
        );

        // Closing the device ends the stuck wait; the offender goes.
        let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        drop(device);
        let _ = offender.kill();
        let _ = offender.wait();
        detections_tx
            .send(Detections {
                findings: Vec::new(),
                exits: vec![(pid, 0)],
            })
            .await
            .unwrap();
        drop(detections_tx);
        running.await.unwrap().unwrap();
    }
}
