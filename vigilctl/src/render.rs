//! How vigilctl shows things to a person.

use serde_json::json;
use vigil_domain::Alert;
use vigil_proto::admin::v1 as pb;

pub fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `2026-11-25T17:32:29.123Z` from ns since the epoch (UTC).
pub fn timestamp(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let millis = unix_nanos.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

pub fn alert_line(a: &Alert) -> String {
    let f = &a.finding;
    let object = f.object();
    format!(
        "#{:<5} {} {:<8} {:<12} {} pid={} exe={} object={} cmd=[{}]",
        a.index,
        timestamp(f.observed_at_unix_nanos),
        f.severity.as_str(),
        a.hostname,
        f.signal.as_str(),
        f.process.pid,
        f.process.exe,
        object,
        f.process.cmdline()
    )
}

fn mode(raw: i32) -> &'static str {
    match vigil_proto::sensor_mode_from_wire("sensor_mode", raw) {
        Ok(m) => m.as_str(),
        Err(_) => "unknown",
    }
}

pub fn status_text(s: &pb::ClusterStatusResponse, now: i64) -> String {
    let leader = match s.leader_id {
        0 => "none".to_string(),
        id => id.to_string(),
    };
    let mut out = format!(
        "cluster: node {} | leader {} | term {} | applied index {}\n",
        s.node_id, leader, s.term, s.last_applied_index
    );
    for m in &s.members {
        out.push_str(&format!("  member {} at {}\n", m.node_id, m.address));
    }
    out.push_str(&format!(
        "alerts: {}\nagents: {}\n",
        s.alert_count,
        s.agents.len()
    ));
    for a in &s.agents {
        let ago = (now - a.last_heartbeat_unix_nanos).max(0) as f64 / 1e9;
        let c = a.counters.unwrap_or_default();
        out.push_str(&format!(
            "  {} ({}) mode={} version={} kernel={} last heartbeat {ago:.1}s ago | acked seq {} | spooled {} | events emitted {} received {} filtered {} dropped {}\n",
            a.hostname,
            a.agent_id,
            mode(a.sensor_mode),
            a.agent_version,
            a.kernel_release,
            a.last_acked_seq,
            a.spooled,
            c.emitted,
            c.received,
            c.filtered,
            c.dropped
        ));
        out.push_str(&format!("    hooks: {}\n", a.hooks.join(", ")));
    }
    out
}

fn agent_value(a: &pb::AgentSummary) -> serde_json::Value {
    let c = a.counters.unwrap_or_default();
    json!({
        "agent_id": a.agent_id, "hostname": a.hostname, "agent_version": a.agent_version,
        "sensor_mode": mode(a.sensor_mode), "kernel_release": a.kernel_release, "hooks": a.hooks,
        "first_seen_unix_nanos": a.first_seen_unix_nanos,
        "last_heartbeat_unix_nanos": a.last_heartbeat_unix_nanos,
        "last_acked_seq": a.last_acked_seq, "spooled": a.spooled,
        "counters": { "emitted": c.emitted, "received": c.received, "filtered": c.filtered, "dropped": c.dropped },
        "policy_version": a.policy_version, "policy_error": a.policy_error,
    })
}

pub fn agents_json(agents: &[pb::AgentSummary]) -> String {
    serde_json::Value::Array(agents.iter().map(agent_value).collect()).to_string()
}

pub fn agents_text(agents: &[pb::AgentSummary], now: i64) -> String {
    let mut out = String::new();
    for a in agents {
        let ago = (now - a.last_heartbeat_unix_nanos).max(0) as f64 / 1e9;
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\tlast heartbeat {ago:.1}s ago\n",
            a.hostname,
            a.agent_id,
            mode(a.sensor_mode),
            a.agent_version
        ));
    }
    out
}

pub fn agent_json(a: &pb::AgentSummary, gpu: &vigil_domain::GpuInventory) -> String {
    let mut v = agent_value(a);
    v["gpu"] = serde_json::to_value(gpu).unwrap_or_default();
    v.to_string()
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

pub fn agent_text(a: &pb::AgentSummary, gpu: &vigil_domain::GpuInventory, now: i64) -> String {
    let ago = (now - a.last_heartbeat_unix_nanos).max(0) as f64 / 1e9;
    let c = a.counters.unwrap_or_default();
    let mut out = format!(
        "agent {} on {}\n  version {} | kernel {} | sensors {} ({} hooks) | last heartbeat {ago:.1}s ago\n  acked seq {} | spooled {} | events emitted {} received {} filtered {} dropped {}\n",
        a.agent_id,
        a.hostname,
        a.agent_version,
        a.kernel_release,
        mode(a.sensor_mode),
        a.hooks.len(),
        a.last_acked_seq,
        a.spooled,
        c.emitted,
        c.received,
        c.filtered,
        c.dropped
    );
    out.push_str(&match (a.policy_version, a.policy_error.is_empty()) {
        (0, true) => "  policy: built-in rules\n".to_string(),
        (v, true) => format!("  policy: version {v}\n"),
        (v, false) => format!(
            "  policy: version {v}; the last bundle was REFUSED: {}\n",
            a.policy_error
        ),
    });
    if gpu.gpus.is_empty() {
        out.push_str("GPUs: none\n");
    } else {
        out.push_str(&format!(
            "GPUs: {} (driver {}, CUDA {})\n",
            gpu.gpus.len(),
            gpu.driver_version,
            gpu.cuda_driver_version
        ));
    }
    for g in &gpu.gpus {
        let mig = if g.mig_enabled {
            let slices: Vec<String> = g
                .mig_devices
                .iter()
                .map(|m| format!("{} ({})", m.uuid, gib(m.memory_total_bytes)))
                .collect();
            format!("MIG on: {}", slices.join(", "))
        } else {
            "MIG off".to_string()
        };
        out.push_str(&format!(
            "  GPU {}  {}  {}  serial {}  pci {}  memory {} of {}  {mig}\n",
            g.index,
            g.name,
            g.uuid,
            g.serial,
            g.pci_bus_id,
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
        out.push_str(&format!(
            "  pid {}{ns} {} on GPU {} {}: {} {memory}{sm} | cgroup {} | {}\n",
            p.process.pid,
            if p.process.exe.is_empty() {
                &p.process.comm
            } else {
                &p.process.exe
            },
            p.gpu.index,
            p.gpu.uuid,
            p.gpu.context.as_str(),
            if p.process.cgroup_path.is_empty() {
                p.process.cgroup_id.to_string()
            } else {
                p.process.cgroup_path.clone()
            },
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
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// A unified diff of two versions' files.
pub fn policy_diff(
    from: u64,
    a: &std::collections::BTreeMap<String, String>,
    to: u64,
    b: &std::collections::BTreeMap<String, String>,
) -> String {
    let mut out = String::new();
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for name in names {
        let (old, new) = (
            a.get(name).map(String::as_str).unwrap_or(""),
            b.get(name).map(String::as_str).unwrap_or(""),
        );
        if old == new {
            continue;
        }
        out.push_str(
            &similar::TextDiff::from_lines(old, new)
                .unified_diff()
                .header(&format!("v{from}/{name}"), &format!("v{to}/{name}"))
                .to_string(),
        );
    }
    if out.is_empty() {
        out.push_str(&format!("v{from} and v{to} have the same rules\n"));
    }
    out
}

pub fn status_json(s: &pb::ClusterStatusResponse) -> String {
    let agents: Vec<_> = s.agents.iter().map(agent_value).collect();
    json!({
        "node_id": s.node_id,
        "leader_id": if s.leader_id == 0 { serde_json::Value::Null } else { json!(s.leader_id) },
        "term": s.term,
        "last_applied_index": s.last_applied_index,
        "members": s.members.iter().map(|m| json!({"node_id": m.node_id, "address": m.address})).collect::<Vec<_>>(),
        "alert_count": s.alert_count,
        "agents": agents,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso8601() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp(1_795_000_000_123_000_000),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(
            timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn status_names_the_leader_and_each_agents_heartbeat_age() {
        let s = pb::ClusterStatusResponse {
            node_id: 1,
            leader_id: 1,
            term: 2,
            last_applied_index: 9,
            members: vec![pb::ClusterMember {
                node_id: 1,
                address: "127.0.0.1:7700".into(),
            }],
            agents: vec![pb::AgentSummary {
                agent_id: "m1".into(),
                hostname: "h1".into(),
                sensor_mode: 1,
                last_heartbeat_unix_nanos: 1_000_000_000,
                ..Default::default()
            }],
            alert_count: 3,
        };
        let text = status_text(&s, 3_500_000_000);
        assert!(text.contains("leader 1"), "{text}");
        assert!(text.contains("h1 (m1) mode=ebpf"), "{text}");
        assert!(text.contains("last heartbeat 2.5s ago"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&status_json(&s)).unwrap();
        assert_eq!(v["leader_id"], 1);
        assert_eq!(v["agents"][0]["sensor_mode"], "ebpf");
    }
}
