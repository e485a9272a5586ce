//! GET /api/hosts/{agent_id}: one host as the host page shows it. Its
//! record (sensors and their counters, GPUs and their processes, policy,
//! attestation), and, each from a bounded read said in the answer:
//!
//! - the processes with AI signals among the host's findings in the
//!   newest [`HOST_SCAN`] alerts, grouped by (pid, executable): their
//!   signals, evidence (the findings) and parent chain. Agents report a
//!   process's ancestors (nearest first, at most 8) as their process table
//!   knew them; a finding without them (an older agent's) has the parent
//!   pid only, so an ancestor is named where this host's findings or GPU
//!   inventory saw that pid, else only its pid is known;
//! - the attestation history: the `attest.*` audit entries about this
//!   agent among the newest [`HOST_AUDIT_SCAN`];
//! - the approved workloads that apply to the host (those naming it by
//!   agent id or hostname, and the fleet-wide ones);
//! - the sidecar: the models the catalog has it serve (active version and
//!   fallbacks) and what its supervision last reported of each (the
//!   host's `sidecar` findings).
//!
//! Everything an agent wrote is untrusted text: the page shows it as text.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use vigil_domain::{
    AgentRecord, Alert, Ancestor, AuditEntry, ModelCatalog, SignalKind, WorkloadApproval,
};

use super::api::{alert_json, blocking, host_state, newest, now_nanos};
use super::auth::Authed;
use super::data::DataError;
use super::server::Dashboard;

/// Alerts the host page looks at (the newest, of every host).
pub const HOST_SCAN: usize = 10_000;
/// Audit entries looked at for the attestation history (the newest).
pub const HOST_AUDIT_SCAN: u64 = 10_000;
/// Processes shown, most recently seen first.
pub const MAX_PROCESSES: usize = 50;
/// Findings shown as one process's evidence (its newest).
pub const MAX_EVIDENCE: usize = 8;
/// Ancestors followed from one process.
pub const MAX_CHAIN: usize = 8;
/// Attestation history entries shown (the newest).
pub const MAX_ATTESTATION: usize = 50;
/// Approved workloads shown.
pub const MAX_WORKLOADS: usize = 200;
/// Sidecar events shown (the newest).
pub const MAX_SIDECAR_EVENTS: usize = 20;
/// The host's recent findings listed.
pub const MAX_FINDINGS: usize = 100;

/// Whether a signal is evidence of AI (not what the agent's policy, the
/// verifier or the sidecar's supervision did).
pub fn is_ai_signal(s: SignalKind) -> bool {
    !matches!(
        s,
        SignalKind::Policy | SignalKind::Attestation | SignalKind::Sidecar
    )
}

/// Host pages read at once on a node; past it 429. The permit is held by
/// the blocking read itself, so a request the timeout drops still counts
/// until its scan ends.
pub const HOST_READS_AT_ONCE: usize = 4;

/// GET /api/hosts/{agent_id} (any role).
pub async fn host(
    State(d): State<Arc<Dashboard>>,
    _who: Authed,
    Path(agent_id): Path<String>,
) -> Response {
    let Ok(permit) = d.host_reads.clone().try_acquire_owned() else {
        return super::auth::refuse(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "other host pages are being read; try again",
        );
    };
    match blocking(move || {
        let _permit = permit;
        host_detail(&d, &agent_id, now_nanos())
    })
    .await
    {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

/// The host page's answer for `agent_id`.
pub fn host_detail(d: &Dashboard, agent_id: &str, now: i64) -> Result<Value, DataError> {
    let Some(a) = d
        .data
        .agents()?
        .into_iter()
        .find(|a| a.identity.agent_id == agent_id)
    else {
        return Err(DataError::NotFound("no such host".into()));
    };
    let recent = newest(d, HOST_SCAN)?;
    let scanned = recent.len();
    let mine: Vec<&Alert> = recent.iter().filter(|f| f.agent_id == agent_id).collect();

    let mut v = host_state(&a, now);
    v["counters"] = serde_json::to_value(a.counters).unwrap_or_default();
    v["spooled"] = json!(a.spooled);
    v["spool_dropped"] = json!(a.spool_dropped);
    v["spool_full"] = json!(a.spool_full);
    v["hooks"] = json!(a.identity.hooks);
    v["gpu"] = serde_json::to_value(&a.gpu).unwrap_or_default();
    v["attestation"] = serde_json::to_value(&a.attestation).unwrap_or_default();
    v["findings"] = json!(mine
        .iter()
        .take(MAX_FINDINGS)
        .map(|f| alert_json(f))
        .collect::<Vec<_>>());
    v["processes"] = processes(&a, &mine);
    let (history, audit_scanned) = attestation_history(d, &a)?;
    v["attestation_history"] = history;
    v["workloads"] = workloads(&a, d.data.workloads()?);
    v["sidecar"] = sidecar(&a, &d.data.model_catalog()?, &mine);
    v["scanned"] = json!({
        "alerts": scanned,
        "at_most": HOST_SCAN,
        "host_alerts": mine.len(),
        "audit_entries": audit_scanned,
        "audit_at_most": HOST_AUDIT_SCAN,
    });
    Ok(v)
}

/// One finding as a process's evidence.
fn evidence(f: &Alert) -> Value {
    let x = &f.finding;
    json!({
        "index": f.index,
        "received_at_unix_nanos": f.received_at_unix_nanos,
        "observed_at_unix_nanos": x.observed_at_unix_nanos,
        "signal": x.signal.as_str(),
        "rule_id": x.rule_id,
        "severity": x.severity.as_str(),
        "object": x.object(),
        "model": x.file.as_ref().and_then(|f| f.model.as_ref()).map(|m| json!({
            "format": m.format, "name": m.name, "sha256": m.sha256,
        })),
        "action": x.action,
        "summary": x.summary,
    })
}

/// The processes with AI signals in `mine` (newest first), each with its
/// signals, evidence and parent chain.
fn processes(a: &AgentRecord, mine: &[&Alert]) -> Value {
    // What is known of each pid on this host: the newest finding's process
    // (`mine` is newest first), then the GPU inventory's.
    let mut known: HashMap<u32, (&str, &str, u32)> = HashMap::new();
    for f in mine {
        let p = &f.finding.process;
        known
            .entry(p.pid)
            .or_insert((p.exe.as_str(), p.comm.as_str(), p.ppid));
    }
    for g in &a.gpu.processes {
        let p = &g.process;
        known
            .entry(p.pid)
            .or_insert((p.exe.as_str(), p.comm.as_str(), p.ppid));
    }

    let mut order: Vec<(u32, &str)> = Vec::new();
    let mut groups: HashMap<(u32, &str), Vec<&Alert>> = HashMap::new();
    for f in mine.iter().filter(|f| is_ai_signal(f.finding.signal)) {
        let key = (f.finding.process.pid, f.finding.process.exe.as_str());
        let g = groups.entry(key).or_default();
        if g.is_empty() {
            order.push(key);
        }
        g.push(f);
    }
    let total = order.len();
    let items: Vec<Value> = order
        .iter()
        .take(MAX_PROCESSES)
        .map(|key| {
            let fs = &groups[key];
            let p = &fs[0].finding.process;
            let mut signals: Vec<&str> = fs.iter().map(|f| f.finding.signal.as_str()).collect();
            signals.sort_unstable();
            signals.dedup();
            let mut rules: Vec<&str> = fs.iter().map(|f| f.finding.rule_id.as_str()).collect();
            rules.sort_unstable();
            rules.dedup();
            let gpu = a
                .gpu
                .processes
                .iter()
                .filter(|g| g.process.pid == p.pid && g.process.exe == p.exe)
                .map(|g| json!({ "gpu": g.gpu.name, "index": g.gpu.index, "approved": g.approved }))
                .collect::<Vec<_>>();
            json!({
                "pid": p.pid,
                "ppid": p.ppid,
                "ns_pid": p.ns_pid,
                "uid": p.uid,
                "exe": p.exe,
                "comm": p.comm,
                "argv": p.argv,
                "exe_sha256": p.exe_sha256,
                "cgroup_path": p.cgroup_path,
                "signals": signals,
                "rules": rules,
                "findings": fs.len(),
                "first_seen_unix_nanos": fs.last().map(|f| f.received_at_unix_nanos),
                "last_seen_unix_nanos": fs[0].received_at_unix_nanos,
                "evidence": fs.iter().take(MAX_EVIDENCE).map(|f| evidence(f)).collect::<Vec<_>>(),
                "gpu_use": gpu,
                "parent_chain": if p.ancestors.is_empty() {
                    chain(p.ppid, &known)
                } else {
                    reported_chain(&p.ancestors)
                },
                "parent_chain_from": if p.ancestors.is_empty() { "findings" } else { "agent" },
            })
        })
        .collect();
    json!({
        "items": items,
        "total": total,
        "at_most": MAX_PROCESSES,
        "parent_chain_note": "agents report each process's ancestors as their process table knew them; for a finding from an agent that reports the parent pid only, an ancestor is named where this host's recent findings or GPU inventory saw its pid (a pid may since have been reused)",
    })
}

/// The ancestors the agent reported, nearest first (at most [`MAX_CHAIN`]).
fn reported_chain(ancestors: &[Ancestor]) -> Vec<Value> {
    ancestors
        .iter()
        .take(MAX_CHAIN)
        .map(|a| json!({ "pid": a.pid, "exe": a.exe, "comm": a.comm, "known": true }))
        .collect()
}

/// The ancestors from `ppid` up, as far as they are known (at most
/// [`MAX_CHAIN`]); an unknown one ends the chain with its pid only.
fn chain(mut ppid: u32, known: &HashMap<u32, (&str, &str, u32)>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut seen = Vec::new();
    while ppid != 0 && out.len() < MAX_CHAIN && !seen.contains(&ppid) {
        seen.push(ppid);
        match known.get(&ppid) {
            Some(&(exe, comm, up)) => {
                out.push(json!({ "pid": ppid, "exe": exe, "comm": comm, "known": true }));
                ppid = up;
            }
            None => {
                out.push(json!({ "pid": ppid, "known": false }));
                break;
            }
        }
    }
    out
}

/// The `attest.*` audit entries about `a` among the newest
/// [`HOST_AUDIT_SCAN`], newest first; and how many entries were read.
fn attestation_history(d: &Dashboard, a: &AgentRecord) -> Result<(Value, u64), DataError> {
    let last = d.data.audit_entries()?;
    let from = last.saturating_sub(HOST_AUDIT_SCAN);
    let subject = format!("agent {} on ", a.identity.agent_id);
    let mut read = 0u64;
    let mut hits: Vec<AuditEntry> = Vec::new();
    let mut after = from;
    while after < last {
        let page = d.data.audit_after(after, 1000)?;
        let Some(end) = page.last().map(|e| e.index) else {
            break;
        };
        read += page.len() as u64;
        hits.extend(
            page.into_iter()
                .filter(|e| e.action.starts_with("attest.") && e.subject.starts_with(&subject)),
        );
        after = end;
    }
    let total = hits.len();
    let items: Vec<Value> = hits
        .iter()
        .rev()
        .take(MAX_ATTESTATION)
        .map(|e| {
            json!({
                "index": e.index,
                "at_unix_nanos": e.at_unix_nanos,
                "actor": e.actor,
                "action": e.action,
                "detail": e.detail,
            })
        })
        .collect();
    Ok((
        json!({ "items": items, "total": total, "at_most": MAX_ATTESTATION }),
        read,
    ))
}

/// The approved workloads that apply to `a`.
fn workloads(a: &AgentRecord, all: Vec<WorkloadApproval>) -> Value {
    let fleet = all.len();
    let mut apply: Vec<WorkloadApproval> = all
        .into_iter()
        .filter(|w| w.covers_host(&a.identity.agent_id, &a.identity.hostname))
        .collect();
    apply.sort_by(|x, y| x.id.cmp(&y.id));
    let total = apply.len();
    let items: Vec<Value> = apply
        .iter()
        .take(MAX_WORKLOADS)
        .map(|w| {
            json!({
                "id": w.id,
                "exe_sha256": w.exe_sha256,
                "path": w.path,
                "uid": w.uid,
                "cgroup_prefix": w.cgroup_prefix,
                "models": w.models,
                "gpus": w.gpus,
                "scope": if w.hosts.is_empty() { "every host" } else { "this host" },
                "approved_by": w.approved_by,
                "note": w.note,
                "approved_at_unix_nanos": w.approved_at_unix_nanos,
            })
        })
        .collect();
    json!({ "items": items, "total": total, "at_most": MAX_WORKLOADS, "fleet_total": fleet })
}

/// The model name of a sidecar finding ("name vN" as the agent writes it).
fn sidecar_model(f: &Alert) -> Option<(String, Option<u64>)> {
    let name = &f.finding.file.as_ref()?.model.as_ref()?.name;
    Some(match name.rsplit_once(" v") {
        Some((n, v)) if v.parse::<u64>().is_ok() => (n.to_string(), v.parse().ok()),
        _ => (name.clone(), None),
    })
}

/// The models `a` serves by the catalog, with what the sidecar's
/// supervision last reported of each, and its newest events.
fn sidecar(a: &AgentRecord, catalog: &ModelCatalog, mine: &[&Alert]) -> Value {
    let events: Vec<&Alert> = mine
        .iter()
        .copied()
        .filter(|f| f.finding.signal == SignalKind::Sidecar)
        .collect();
    // The newest event per model name (`mine` is newest first).
    let mut last: BTreeMap<String, (&Alert, Option<u64>)> = BTreeMap::new();
    for f in &events {
        if let Some((name, version)) = sidecar_model(f) {
            last.entry(name).or_insert((f, version));
        }
    }
    let models: Vec<Value> = catalog
        .deployments_for(&a.identity.agent_id)
        .iter()
        .map(|dep| {
            let r = &dep.active;
            let seen = last.get(&r.name);
            json!({
                "name": r.name,
                "version": r.version,
                "sha256": r.sha256,
                "listen": r.listen,
                "fallbacks": dep.fallbacks.iter().map(|f| f.version).collect::<Vec<_>>(),
                "last_event": seen.map(|(f, _)| f.finding.action.clone()),
                "last_event_version": seen.and_then(|(_, v)| *v),
                "last_event_at_unix_nanos": seen.map(|(f, _)| f.received_at_unix_nanos),
                "last_event_summary": seen.map(|(f, _)| f.finding.summary.clone()),
            })
        })
        .collect();
    json!({
        "models": models,
        "events": events.iter().take(MAX_SIDECAR_EVENTS).map(|f| evidence(f)).collect::<Vec<_>>(),
        "events_total": events.len(),
        "events_at_most": MAX_SIDECAR_EVENTS,
    })
}
