//! `vigilctl agents list|show`: the agents this cluster knows.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use vigil_domain::{AgentRecord, ClusterStatus, GpuInventory};
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::output::{print_list, print_one, OutputArgs, OutputFormat};
use crate::render::{now_unix_nanos, seconds_ago};
use crate::terminal_text::{escape_controls as esc, escape_joined};

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// One line per agent.
    #[command(after_help = "Example:\n  vigilctl agents list -o jsonl")]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// One agent (by agent id or hostname): sensors, counters, GPUs and
    /// the processes using them.
    #[command(after_help = "Example:\n  vigilctl agents show gpu-node-3 --json")]
    Show {
        /// Agent id or hostname.
        agent: String,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(client: &mut AdminClient, command: AgentsCommand) -> anyhow::Result<()> {
    match command {
        AgentsCommand::List { output } => {
            let status = cluster_status(client).await?;
            print_list(
                output.format(OutputFormat::Json),
                &status.agents,
                agent_json,
                |agents| agents_text(agents, now_unix_nanos()),
            )
        }
        AgentsCommand::Show { agent, output } => {
            let resp = client
                .get_agent(pb::GetAgentRequest { agent })
                .await
                .map_err(refused)?
                .into_inner();
            let record =
                AgentRecord::try_from(resp).context("the control plane sent a malformed agent")?;
            print_one(
                output.format(OutputFormat::Json),
                agent_detail_json(&record),
                || agent_text(&record, now_unix_nanos()),
            )
        }
    }
}

/// The cluster status, which lists every agent.
pub async fn cluster_status(client: &mut AdminClient) -> anyhow::Result<ClusterStatus> {
    let wire = client
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    ClusterStatus::try_from(wire).context("the control plane sent a malformed cluster status")
}

/// An agent's JSON shape everywhere vigilctl prints one (no GPU inventory).
pub fn agent_json(a: &AgentRecord) -> serde_json::Value {
    let (id, c) = (&a.identity, a.counters);
    json!({
        "agent_id": id.agent_id, "hostname": id.hostname, "agent_version": id.agent_version,
        "sensor_mode": id.sensor_mode.as_str(), "kernel_release": id.kernel_release, "hooks": id.hooks,
        "first_seen_unix_nanos": a.first_seen_unix_nanos,
        "last_heartbeat_unix_nanos": a.last_heartbeat_unix_nanos,
        "last_acked_seq": a.last_acked_seq, "spooled": a.spooled,
        "spool_dropped": a.spool_dropped, "spool_full": a.spool_full,
        "counters": {
            "emitted": c.emitted, "received": c.received, "filtered": c.filtered,
            "dropped": c.dropped, "evicted": c.evicted,
        },
        "policy_version": a.policy_version, "policy_error": a.policy_error,
        "attestation": attestation_json(&a.attestation),
    })
}

/// A host's attestation, as JSON: `trust` is "unattested", "trusted" or
/// "untrusted" (then with `code` and `reason`).
pub fn attestation_json(t: &vigil_domain::AttestationRecord) -> serde_json::Value {
    let (code, reason) = match &t.trust {
        vigil_domain::TrustState::Untrusted { code, reason } => (code.as_str(), reason.as_str()),
        _ => ("", ""),
    };
    json!({
        "trust": t.trust.as_str(), "code": code, "reason": reason,
        "trust_changed_at_unix_nanos": t.trust_changed_at_unix_nanos,
        "ek_sha256": t.ek_sha256, "ek_certificate_issuer": t.ek_certificate_issuer,
        "ak_sha256": t.ak_sha256, "enrolled_at_unix_nanos": t.enrolled_at_unix_nanos,
        "last_quote_at_unix_nanos": t.last_quote_at_unix_nanos,
        "last_verified_at_unix_nanos": t.last_verified_at_unix_nanos,
        "clock": t.clock.map(|c| json!({
            "clock": c.clock, "reset_count": c.reset_count, "restart_count": c.restart_count,
        })),
        "golden_pcrs": t.golden_pcrs,
    })
}

/// A host's attestation in one line.
pub fn attestation_text(t: &vigil_domain::AttestationRecord, now: i64) -> String {
    let mut line = format!("  attestation: {}", esc(&t.trust.to_string()));
    if !t.ek_sha256.is_empty() {
        line.push_str(&format!(
            " | EK sha256 {}… ({})",
            esc(t.ek_sha256.get(..16).unwrap_or(&t.ek_sha256)),
            esc(&t.ek_certificate_issuer)
        ));
    }
    if t.last_quote_at_unix_nanos > 0 {
        line.push_str(&format!(
            " | last quote {}s ago",
            seconds_ago(now, t.last_quote_at_unix_nanos)
        ));
    }
    if let Some(c) = t.clock {
        line.push_str(&format!(
            " | resets {} restarts {}",
            c.reset_count, c.restart_count
        ));
    }
    line.push('\n');
    line
}

/// `agents show`: the agent's shape with its GPU inventory under `gpu`.
fn agent_detail_json(a: &AgentRecord) -> serde_json::Value {
    let mut v = agent_json(a);
    v["gpu"] = serde_json::to_value(&a.gpu).unwrap_or_default();
    v
}

pub fn agents_text(agents: &[AgentRecord], now: i64) -> String {
    let mut out = String::new();
    for a in agents {
        let id = &a.identity;
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\tlast heartbeat {}s ago\n",
            esc(&id.hostname),
            esc(&id.agent_id),
            id.sensor_mode.as_str(),
            esc(&id.agent_version),
            a.attestation.trust.as_str(),
            seconds_ago(now, a.last_heartbeat_unix_nanos)
        ));
    }
    out
}

/// The agent's line in `vigilctl status`, and its hooks.
pub fn agent_status_lines(a: &AgentRecord, now: i64) -> String {
    let (id, c) = (&a.identity, a.counters);
    format!(
        "  {} ({}) mode={} version={} kernel={} last heartbeat {}s ago | acked seq {} | spooled {}{} | events emitted {} received {} filtered {} dropped {} evicted {}\n    hooks: {}\n",
        esc(&id.hostname),
        esc(&id.agent_id),
        id.sensor_mode.as_str(),
        esc(&id.agent_version),
        esc(&id.kernel_release),
        seconds_ago(now, a.last_heartbeat_unix_nanos),
        a.last_acked_seq,
        a.spooled,
        spool_pressure(a),
        c.emitted,
        c.received,
        c.filtered,
        c.dropped,
        c.evicted,
        escape_joined(&id.hooks, ", ")
    )
}

/// What follows "spooled N": the findings the agent dropped for a full
/// spool, and whether it is full now (`SPOOL FULL`, loud: findings are
/// being lost on that host).
fn spool_pressure(a: &AgentRecord) -> String {
    format!(
        " (dropped {}){}",
        a.spool_dropped,
        if a.spool_full { " SPOOL FULL" } else { "" }
    )
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn agent_text(a: &AgentRecord, now: i64) -> String {
    let (id, c) = (&a.identity, a.counters);
    let mut out = format!(
        "agent {} on {}\n  version {} | kernel {} | sensors {} ({} hooks) | last heartbeat {}s ago\n  acked seq {} | spooled {}{} | events emitted {} received {} filtered {} dropped {} evicted {}\n",
        esc(&id.agent_id),
        esc(&id.hostname),
        esc(&id.agent_version),
        esc(&id.kernel_release),
        id.sensor_mode.as_str(),
        id.hooks.len(),
        seconds_ago(now, a.last_heartbeat_unix_nanos),
        a.last_acked_seq,
        a.spooled,
        spool_pressure(a),
        c.emitted,
        c.received,
        c.filtered,
        c.dropped,
        c.evicted
    );
    out.push_str(&match (a.policy_version, a.policy_error.is_empty()) {
        (0, true) => "  policy: built-in rules\n".to_string(),
        (v, true) => format!("  policy: version {v}\n"),
        (v, false) => format!(
            "  policy: version {v}; the last bundle was REFUSED: {}\n",
            esc(&a.policy_error)
        ),
    });
    out.push_str(&attestation_text(&a.attestation, now));
    out.push_str(&gpu_text(&a.gpu));
    out
}

fn gpu_text(gpu: &GpuInventory) -> String {
    let mut out = String::new();
    if gpu.gpus.is_empty() {
        out.push_str("GPUs: none\n");
    } else {
        out.push_str(&format!(
            "GPUs: {} (driver {}, CUDA {})\n",
            gpu.gpus.len(),
            esc(&gpu.driver_version),
            esc(&gpu.cuda_driver_version)
        ));
    }
    for g in &gpu.gpus {
        let mig = if g.mig_enabled {
            let slices: Vec<String> = g
                .mig_devices
                .iter()
                .map(|m| format!("{} ({})", esc(&m.uuid), gib(m.memory_total_bytes)))
                .collect();
            format!("MIG on: {}", slices.join(", "))
        } else {
            "MIG off".to_string()
        };
        out.push_str(&format!(
            "  GPU {}  {}  {}  serial {}  pci {}  memory {} of {}  {mig}\n",
            g.index,
            esc(&g.name),
            esc(&g.uuid),
            esc(&g.serial),
            esc(&g.pci_bus_id),
            gib(g.memory_used_bytes),
            gib(g.memory_total_bytes)
        ));
    }
    if !gpu.processes.is_empty() {
        out.push_str("GPU processes:\n");
    }
    for p in &gpu.processes {
        let ns = if p.process.ns_pid != 0 {
            format!(" (pid {} in its namespace)", p.process.ns_pid)
        } else {
            String::new()
        };
        let memory = p
            .gpu
            .used_memory_bytes
            .map(|b| format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64))
            .unwrap_or_else(|| "memory n/a".into());
        let sm = p
            .gpu
            .sm_util_percent
            .map(|s| format!(", {s}% SM"))
            .unwrap_or_default();
        let program = if p.process.exe.is_empty() {
            &p.process.comm
        } else {
            &p.process.exe
        };
        let cgroup = if p.process.cgroup_path.is_empty() {
            p.process.cgroup_id.to_string()
        } else {
            esc(&p.process.cgroup_path).into_owned()
        };
        out.push_str(&format!(
            "  pid {}{ns} {} on GPU {} {}: {} {memory}{sm} | cgroup {cgroup} | {}\n",
            p.process.pid,
            esc(program),
            p.gpu.index,
            esc(&p.gpu.uuid),
            p.gpu.context.as_str(),
            if p.approved {
                "approved"
            } else {
                "NOT APPROVED"
            }
        ));
    }
    if !gpu.status.is_empty() {
        out.push_str("GPU status:\n");
    }
    for line in &gpu.status {
        out.push_str(&format!("  {}\n", esc(line)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::{AgentIdentity, GpuContext, GpuObject, GpuProcess, ProcessInfo, SensorMode};

    fn record() -> AgentRecord {
        AgentRecord {
            identity: AgentIdentity {
                agent_id: "m1".into(),
                hostname: "h1".into(),
                sensor_mode: SensorMode::ProcfsDegraded,
                hooks: vec!["procfs-poll/200ms".into()],
                ..Default::default()
            },
            last_heartbeat_unix_nanos: 1_000_000_000,
            policy_version: 2,
            ..Default::default()
        }
    }

    #[test]
    fn the_json_shape_names_sensor_modes_as_the_text_does() {
        let v = agent_json(&record());
        assert_eq!(v["sensor_mode"], "procfs-degraded");
        assert_eq!(v["counters"]["received"], 0);
        assert!(v.get("gpu").is_none());
        let detail = agent_detail_json(&record());
        assert_eq!(detail["gpu"]["gpus"], json!([]));
        assert_eq!(detail["agent_id"], "m1");
    }

    #[test]
    fn list_and_show_texts() {
        let list = agents_text(&[record()], 3_500_000_000);
        assert_eq!(
            list,
            "h1\tm1\tprocfs-degraded\t\tunattested\tlast heartbeat 2.5s ago\n"
        );
        let show = agent_text(&record(), 3_500_000_000);
        assert!(show.starts_with("agent m1 on h1\n"), "{show}");
        assert!(show.contains("policy: version 2\n"), "{show}");
        assert!(show.contains("GPUs: none\n"), "{show}");
        assert!(show.contains("  attestation: unattested\n"), "{show}");
        let mut untrusted = record();
        untrusted.attestation.trust = vigil_domain::TrustState::Untrusted {
            code: "pcr-policy".into(),
            reason: "PCR 7 \x1b[2J changed".into(),
        };
        untrusted.attestation.ek_sha256 = "ab".repeat(32);
        let show = agent_text(&untrusted, 3_500_000_000);
        assert!(
            show.contains("attestation: untrusted (pcr-policy): PCR 7 \\x1b[2J changed | EK sha256 abababababababab…"),
            "{show}"
        );
        assert_eq!(agent_json(&untrusted)["attestation"]["code"], "pcr-policy");
    }

    #[test]
    fn show_reports_evictions_and_a_full_spool() {
        let mut a = record();
        a.counters.evicted = 7;
        a.counters.dropped = 3;
        a.spooled = 40;
        a.spool_dropped = 12;
        a.spool_full = true;
        let v = agent_detail_json(&a);
        assert_eq!(v["counters"]["evicted"], 7);
        assert_eq!(v["spool_dropped"], 12);
        assert_eq!(v["spool_full"], true);
        let show = agent_text(&a, 0);
        assert!(
            show.contains("spooled 40 (dropped 12) SPOOL FULL | events emitted 0 received 0 filtered 0 dropped 3 evicted 7\n"),
            "{show}"
        );
        let status = agent_status_lines(&a, 0);
        assert!(
            status.contains("spooled 40 (dropped 12) SPOOL FULL |"),
            "{status}"
        );
        assert!(status.contains("dropped 3 evicted 7\n"), "{status}");
        a.spool_full = false;
        assert!(agent_text(&a, 0).contains("spooled 40 (dropped 12) | "));
        assert_eq!(agent_json(&a)["spool_full"], false);
    }

    #[test]
    fn gpu_processes_with_hostile_names_cannot_reach_the_terminal() {
        let mut a = record();
        a.identity.hostname = "h\x1b]0;pwned\x07".into();
        a.gpu.processes.push(GpuProcess {
            process: ProcessInfo {
                pid: 9,
                comm: "x\r\x1b[2K".into(),
                cgroup_path: "/c\x1b".into(),
                ..Default::default()
            },
            gpu: GpuObject {
                uuid: "GPU-1".into(),
                name: String::new(),
                index: 0,
                used_memory_bytes: None,
                sm_util_percent: None,
                context: GpuContext::Compute,
            },
            approved: false,
        });
        a.gpu.status.push("lost\x1b[31m".into());
        let text = agent_text(&a, 0)
            + &agents_text(std::slice::from_ref(&a), 0)
            + &agent_status_lines(&a, 0);
        let text = text.replace(['\n', '\t'], "");
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(text.contains("pid 9 x\\r\\x1b[2K on GPU 0"), "{text}");
    }
}
