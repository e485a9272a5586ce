//! vigilctl: the operator's command line for a vigil control plane.

use anyhow::Context;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tonic::transport::Channel;
use vigil_domain::Alert;
use vigil_proto::admin::v1 as pb;
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

mod policy_files;
mod render;

#[derive(Parser)]
#[command(name = "vigilctl", version, about = "Operate a vigil control plane")]
struct Cli {
    /// Control plane gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "VIGIL_ENDPOINT",
        default_value = "http://127.0.0.1:7700"
    )]
    endpoint: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List alerts, oldest first; with --follow, keep printing new ones.
    Alerts {
        /// Only alerts after this index.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many (without --follow).
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        /// Keep the stream open and print alerts as they arrive.
        #[arg(long, short)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Cluster leader and members, and the agents seen with their last heartbeat.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Policy as code: check, test, sign.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Approved workloads.
    Workload {
        #[command(subcommand)]
        command: WorkloadCommand,
    },
    /// Act on one agent.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// The agents this cluster knows.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parses, type-checks and compiles a policy directory; errors as file:line:col.
    Check { dir: PathBuf },
    /// Replays recorded events (JSON lines from `vigil-agent --record-events`)
    /// against a policy directory and prints which rule each one fires.
    Test {
        dir: PathBuf,
        #[arg(long)]
        events: PathBuf,
    },
    /// Writes a new ed25519 signing key (hex secret) to FILE and prints its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks a policy directory and signs it into a versioned bundle.
    Sign {
        dir: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        version: u64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Pushes a signed bundle: the control plane verifies it, commits it
    /// through raft, and every agent receives it.
    Push {
        bundle: PathBuf,
        #[arg(long, default_value = "push")]
        note: String,
    },
    /// Every version pushed, the active one marked.
    List {
        #[arg(long)]
        json: bool,
    },
    /// What changed between two versions, file by file.
    Diff { from: u64, to: u64 },
    /// Makes an earlier version's rules active again, as a new version
    /// signed with KEY (versions only grow; the note records the rollback).
    Rollback {
        version: u64,
        #[arg(long)]
        key: PathBuf,
    },
}

#[derive(Subcommand)]
enum WorkloadCommand {
    /// Approves a workload: processes running this executable (narrowed by
    /// path, user or cgroup when given) make no findings on any agent.
    Approve {
        /// The executable (its sha256 is what is approved).
        #[arg(long, conflicts_with = "exe_sha256")]
        exe: Option<PathBuf>,
        /// The executable's hex sha256, when the file is not at hand.
        #[arg(long)]
        exe_sha256: Option<String>,
        /// Only when the process runs this exact path.
        #[arg(long)]
        path: Option<String>,
        /// Only for this uid.
        #[arg(long)]
        uid: Option<u32>,
        /// Only inside this cgroup v2 path or below.
        #[arg(long)]
        cgroup: Option<String>,
        /// A model file it may load (hashed here; repeatable). With none,
        /// any model.
        #[arg(long)]
        model: Vec<PathBuf>,
        /// A model's hex sha256 it may load (repeatable).
        #[arg(long)]
        model_sha256: Vec<String>,
        /// A GPU (UUID) it may use (repeatable). With none, any GPU.
        #[arg(long)]
        gpu: Vec<String>,
        /// The admin key that signs the record (required when the control
        /// plane has trusted keys).
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Withdraws an approval by id.
    Revoke { id: String },
    /// Every approved workload.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Audit entries, oldest first.
    List {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long)]
        json: bool,
    },
    /// Recomputes the hash chain from the first entry.
    Verify,
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Thaws a process a freeze rule froze.
    Unfreeze {
        /// Agent id or hostname.
        agent: String,
        pid: u32,
    },
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// One line per agent.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One agent (by agent id or hostname): sensors, counters, GPUs and
    /// the processes using them.
    Show {
        /// Agent id or hostname.
        agent: String,
        #[arg(long)]
        json: bool,
    },
}

async fn connect(endpoint: &str) -> anyhow::Result<AdminServiceClient<Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())
        .with_context(|| format!("bad endpoint {endpoint:?}"))?
        .connect_timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("cannot reach the control plane at {endpoint}"))?;
    Ok(AdminServiceClient::new(channel))
}

fn print_alert(wire: vigil_proto::types::v1::Alert, json: bool) -> anyhow::Result<()> {
    let alert = Alert::try_from(wire).context("the control plane sent a malformed alert")?;
    if json {
        println!("{}", serde_json::to_string(&alert)?);
    } else {
        println!("{}", render::alert_line(&alert));
    }
    Ok(())
}

/// `vigilctl policy` commands that need no control plane.
fn run_local_policy(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { dir } => {
            let (files, set) = policy_files::check_dir(&dir)?;
            println!(
                "{}: ok ({} files, {} rules, {} lists)",
                dir.display(),
                files.len(),
                set.rule_ids().len(),
                set.lists().len()
            );
        }
        PolicyCommand::Test { dir, events } => {
            let (_, set) = policy_files::check_dir(&dir)?;
            let text = std::fs::read_to_string(&events)
                .with_context(|| format!("reading {}", events.display()))?;
            let host = vigil_policy::HostFacts::default();
            let mut fired: std::collections::BTreeMap<String, u64> = Default::default();
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let finding: vigil_domain::Finding =
                    serde_json::from_str(line).with_context(|| {
                        format!("{}:{}: not a recorded event", events.display(), i + 1)
                    })?;
                let verdict = match set.evaluate(&finding, None, &host) {
                    Some(d) => {
                        *fired.entry(d.rule_id.clone()).or_default() += 1;
                        format!(
                            "{} {} {}{}",
                            d.rule_id,
                            d.severity,
                            d.action.as_str(),
                            if d.dry_run { " (dry run)" } else { "" }
                        )
                    }
                    None => {
                        *fired.entry("(allowed: no rule)".into()).or_default() += 1;
                        "allowed: no rule fires".to_string()
                    }
                };
                println!(
                    "{}:{}: {} pid {} {} {} -> {verdict}",
                    events.display(),
                    i + 1,
                    finding.signal,
                    finding.process.pid,
                    finding.process.name(),
                    finding.object()
                );
            }
            for (rule, n) in fired {
                println!("{n:>8}  {rule}");
            }
        }
        PolicyCommand::Keygen { out } => {
            let key = vigil_policy::SigningKey::generate();
            write_private(&out, &key.secret_hex())?;
            println!("{}", key.public_hex());
        }
        PolicyCommand::Sign {
            dir,
            key,
            version,
            out,
        } => {
            let (files, _) = policy_files::check_dir(&dir)?;
            let secret = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let key = vigil_policy::SigningKey::from_hex(&secret)
                .with_context(|| format!("{}", key.display()))?;
            let bundle = key.sign(version, files);
            std::fs::write(&out, bundle.to_json())
                .with_context(|| format!("writing {}", out.display()))?;
            println!(
                "{}: version {} signed by {} ({} files, digest {})",
                out.display(),
                bundle.version,
                bundle.signer,
                bundle.files.len(),
                bundle.digest()
            );
        }
        PolicyCommand::Push { .. }
        | PolicyCommand::List { .. }
        | PolicyCommand::Diff { .. }
        | PolicyCommand::Rollback { .. } => {
            anyhow::bail!("this policy command needs the control plane")
        }
    }
    Ok(())
}

/// Writes a secret readable by its owner only.
fn write_private(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    writeln!(f, "{secret}")?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Policy {
            command:
                command @ (PolicyCommand::Check { .. }
                | PolicyCommand::Test { .. }
                | PolicyCommand::Keygen { .. }
                | PolicyCommand::Sign { .. }),
        } => run_local_policy(command),
        remote => run_remote(&cli.endpoint, remote).await,
    }
}

fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

async fn fetch_bundle(
    client: &mut AdminServiceClient<Channel>,
    version: u64,
) -> anyhow::Result<vigil_policy::Bundle> {
    let bytes = client
        .get_policy(pb::GetPolicyRequest { version })
        .await
        .map_err(status_error)?
        .into_inner()
        .bundle;
    vigil_policy::Bundle::from_json(&bytes).with_context(|| format!("version {version} as stored"))
}

/// `vigilctl policy` commands that ask the control plane.
async fn run_remote_policy(
    client: &mut AdminServiceClient<Channel>,
    command: PolicyCommand,
) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Push { bundle, note } => {
            let bytes =
                std::fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
            let version = client
                .push_policy(pb::PushPolicyRequest {
                    bundle: bytes,
                    note,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .version;
            println!("policy version {version} is active");
        }
        PolicyCommand::List { json } => {
            let list = client
                .list_policies(pb::ListPoliciesRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .policies;
            if json {
                let v: Vec<serde_json::Value> = list
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "version": p.version, "signer": p.signer, "digest": p.digest,
                            "pushed_at_unix_nanos": p.pushed_at_unix_nanos, "note": p.note,
                            "active": p.active, "rules": p.rules,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for p in list {
                    println!(
                        "{} v{:<5} {}  {} rules  digest {}  signer {}…  {}",
                        if p.active { "*" } else { " " },
                        p.version,
                        render::timestamp(p.pushed_at_unix_nanos),
                        p.rules,
                        p.digest,
                        p.signer.get(..16).unwrap_or(&p.signer),
                        p.note
                    );
                }
            }
        }
        PolicyCommand::Diff { from, to } => {
            let a = fetch_bundle(client, from).await?;
            let b = fetch_bundle(client, to).await?;
            print!("{}", render::policy_diff(from, &a.files, to, &b.files));
        }
        PolicyCommand::Rollback { version, key } => {
            let old = fetch_bundle(client, version).await?;
            let newest = client
                .list_policies(pb::ListPoliciesRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .policies
                .iter()
                .map(|p| p.version)
                .max()
                .unwrap_or(0);
            let secret = std::fs::read_to_string(&key)
                .with_context(|| format!("reading {}", key.display()))?;
            let key = vigil_policy::SigningKey::from_hex(&secret)?;
            let bundle = key.sign(newest + 1, old.files);
            let v = client
                .push_policy(pb::PushPolicyRequest {
                    bundle: bundle.to_json(),
                    note: format!("rollback to {version}"),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .version;
            println!("policy version {v} is active: the rules of version {version}");
        }
        local => run_local_policy(local)?,
    }
    Ok(())
}

/// Hex sha256 of a file, streamed (model files are large).
fn sha256_file(path: &std::path::Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Who is approving, for the record: user@host.
fn operator() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user}@{}", host.trim())
}

async fn run_workload(
    client: &mut AdminServiceClient<Channel>,
    command: WorkloadCommand,
) -> anyhow::Result<()> {
    match command {
        WorkloadCommand::Approve {
            exe,
            exe_sha256,
            path,
            uid,
            cgroup,
            model,
            model_sha256,
            gpu,
            key,
            note,
        } => {
            let digest = match (exe, exe_sha256) {
                (Some(file), None) => sha256_file(&file)?,
                (None, Some(d)) => d,
                _ => anyhow::bail!("give --exe FILE or --exe-sha256 HEX"),
            };
            let mut models = model_sha256;
            for m in &model {
                models.push(sha256_file(m)?);
            }
            let mut record = vigil_domain::WorkloadApproval {
                id: String::new(),
                exe_sha256: digest.clone(),
                path,
                uid,
                cgroup_prefix: cgroup,
                models,
                gpus: gpu,
                approved_by: operator(),
                note,
                approved_at_unix_nanos: 0,
                signer: String::new(),
                signature: String::new(),
            };
            if let Some(key) = key {
                let secret = std::fs::read_to_string(&key)
                    .with_context(|| format!("reading {}", key.display()))?;
                vigil_policy::SigningKey::from_hex(&secret)?.sign_workload(&mut record);
            }
            let id = client
                .approve_workload(pb::ApproveWorkloadRequest {
                    workload: Some(record.into()),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .id;
            println!("approved workload {id} (exe sha256 {digest})");
        }
        WorkloadCommand::Revoke { id } => {
            client
                .revoke_workload(pb::RevokeWorkloadRequest { id: id.clone() })
                .await
                .map_err(status_error)?;
            println!("revoked workload {id}");
        }
        WorkloadCommand::List { json } => {
            let list = client
                .list_workloads(pb::ListWorkloadsRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .workloads;
            for w in list {
                let w = vigil_domain::WorkloadApproval::try_from(w)
                    .context("the control plane sent a malformed workload")?;
                if json {
                    println!("{}", serde_json::to_string(&w)?);
                } else {
                    let any = |v: &[String]| {
                        if v.is_empty() {
                            "any".to_string()
                        } else {
                            v.join(",")
                        }
                    };
                    println!(
                        "{}  sha256 {}  path {}  uid {}  cgroup {}  models {}  gpus {}  by {} at {}  signed {}  {}",
                        w.id,
                        w.exe_sha256,
                        w.path.as_deref().unwrap_or("any"),
                        w.uid.map(|u| u.to_string()).unwrap_or_else(|| "any".into()),
                        w.cgroup_prefix.as_deref().unwrap_or("any"),
                        any(&w.models),
                        any(&w.gpus),
                        w.approved_by,
                        render::timestamp(w.approved_at_unix_nanos),
                        if w.signer.is_empty() { "no" } else { w.signer.get(..16).unwrap_or(&w.signer) },
                        w.note
                    );
                }
            }
        }
    }
    Ok(())
}

/// Commands that ask the control plane.
async fn run_remote(endpoint: &str, command: Command) -> anyhow::Result<()> {
    let mut client = connect(endpoint).await?;
    match command {
        Command::Policy { command } => run_remote_policy(&mut client, command).await?,
        Command::Workload { command } => run_workload(&mut client, command).await?,
        Command::Audit {
            command: AuditCommand::List { after, json },
        } => {
            let entries = client
                .list_audit(pb::ListAuditRequest {
                    after_index: after,
                    limit: 10_000,
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .entries;
            for e in entries {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "index": e.index, "at_unix_nanos": e.at_unix_nanos, "actor": e.actor,
                            "action": e.action, "subject": e.subject, "detail": e.detail,
                            "prev_hash": e.prev_hash, "hash": e.hash,
                        })
                    );
                } else {
                    println!(
                        "#{:<5} {} {:<18} {} by {}: {}",
                        e.index,
                        render::timestamp(e.at_unix_nanos),
                        e.action,
                        e.subject,
                        e.actor.get(..16).unwrap_or(&e.actor),
                        e.detail
                    );
                }
            }
        }
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            let r = client
                .verify_audit(pb::VerifyAuditRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if r.error.is_empty() {
                println!("audit chain intact: {} entries", r.entries);
            } else {
                anyhow::bail!("audit chain BROKEN: {}", r.error);
            }
        }
        Command::Agent {
            command: AgentCommand::Unfreeze { agent, pid },
        } => {
            client
                .unfreeze(pb::UnfreezeRequest {
                    agent: agent.clone(),
                    pid,
                })
                .await
                .map_err(status_error)?;
            println!("asked {agent} to unfreeze pid {pid}");
        }
        Command::Alerts {
            after,
            limit,
            follow,
            json,
        } => {
            if follow {
                let req = pb::QueryAlertsRequest {
                    after_index: after,
                    limit: 0,
                };
                let mut stream = client.follow_alerts(req).await?.into_inner();
                while let Some(alert) = stream.message().await? {
                    print_alert(alert, json)?;
                }
            } else {
                // Page through: one response stays far below gRPC's 4 MiB limit.
                const PAGE: u32 = 500;
                let (mut after, mut left) = (after, limit);
                while left > 0 {
                    let resp = client
                        .query_alerts(pb::QueryAlertsRequest {
                            after_index: after,
                            limit: left.min(PAGE),
                        })
                        .await?
                        .into_inner();
                    let n = resp.alerts.len() as u32;
                    for alert in resp.alerts {
                        after = alert.index;
                        print_alert(alert, json)?;
                    }
                    if n < left.min(PAGE) {
                        break;
                    }
                    left -= n;
                }
            }
        }
        Command::Status { json } => {
            let status = client
                .cluster_status(pb::ClusterStatusRequest {})
                .await?
                .into_inner();
            if json {
                println!("{}", render::status_json(&status));
            } else {
                print!("{}", render::status_text(&status, render::now_unix_nanos()));
            }
        }
        Command::Agents {
            command: AgentsCommand::List { json },
        } => {
            let status = client
                .cluster_status(pb::ClusterStatusRequest {})
                .await?
                .into_inner();
            if json {
                println!("{}", render::agents_json(&status.agents));
            } else {
                print!(
                    "{}",
                    render::agents_text(&status.agents, render::now_unix_nanos())
                );
            }
        }
        Command::Agents {
            command: AgentsCommand::Show { agent, json },
        } => {
            let resp = client
                .get_agent(pb::GetAgentRequest { agent })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            let summary = resp.agent.context("the control plane sent no agent")?;
            let gpu = vigil_domain::GpuInventory::try_from(resp.gpu.unwrap_or_default())
                .context("the control plane sent a malformed GPU inventory")?;
            if json {
                println!("{}", render::agent_json(&summary, &gpu));
            } else {
                print!(
                    "{}",
                    render::agent_text(&summary, &gpu, render::now_unix_nanos())
                );
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigilctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
