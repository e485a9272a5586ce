//! Policy figures: rule evaluation of the default pack over a replay of a
//! million recorded events, against the built-in rules on the same events;
//! and propagation from `PushPolicy` to 50 agents verifying and compiling
//! the bundle, over 100 pushes.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigil_domain::{
    FileObject, Finding, GpuObject, NetDirection, NetObject, ProcessInfo, Severity, SignalKind,
};
use vigil_policy::{Bundle, HostFacts, PolicySet, PolicySource, SigningKey, TrustedKeys};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::agent::v1 as pb;

use crate::report::{Figure, Report};

const EVENTS: usize = 1_000_000;
const AGENTS: usize = 50;
const PUSHES: u64 = 100;

pub fn default_pack(root: &Path) -> anyhow::Result<PolicySource> {
    let dir = root.join("policies/default");
    let mut files = PolicySource::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) == Some("yaml") {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            files.insert(name, std::fs::read_to_string(&p)?);
        }
    }
    Ok(files)
}

/// Events shaped like the agent's recordings: every signal, varied
/// processes, paths, hosts and GPUs.
fn recorded_events(n: usize) -> Vec<Finding> {
    let exes = [
        "/usr/bin/python3.11",
        "/opt/app/bin/server",
        "/usr/local/bin/ollama",
        "/usr/bin/dpkg",
        "/tmp/logrotate-helper",
        "/usr/bin/Xorg",
    ];
    (0..n)
        .map(|i| {
            let signal = match i % 6 {
                0 => SignalKind::ModelFile,
                1 => SignalKind::AiRuntime,
                2 => SignalKind::GpuDevice,
                3 => SignalKind::GpuUse,
                4 => SignalKind::AiEgress,
                _ => SignalKind::AiServing,
            };
            let exe = exes[(i / 6) % exes.len()];
            Finding {
                seq: i as u64 + 1,
                rule_id: "vigil.builtin".into(),
                severity: Severity::High,
                signal,
                observed_at_unix_nanos: i as i64,
                process: ProcessInfo {
                    pid: 1000 + (i % 30_000) as u32,
                    ppid: 1,
                    uid: 1000,
                    exe: exe.into(),
                    argv: vec![exe.into(), "--model".into(), format!("/m/{i}.gguf")],
                    comm: exe
                        .rsplit('/')
                        .next()
                        .unwrap_or(exe)
                        .chars()
                        .take(15)
                        .collect(),
                    cgroup_id: 1,
                    mnt_ns: 4026531832,
                    exe_sha256: format!("{:064x}", i % 97),
                    ns_pid: 0,
                    cgroup_path: "/user.slice".into(),
                    ancestors: Vec::new(),
                },
                file: matches!(
                    signal,
                    SignalKind::ModelFile | SignalKind::AiRuntime | SignalKind::GpuDevice
                )
                .then(|| {
                    FileObject::at(format!(
                        "/srv/models/{}/weights-{}.safetensors",
                        i % 50,
                        i % 7
                    ))
                }),
                net: matches!(signal, SignalKind::AiEgress | SignalKind::AiServing).then(|| {
                    NetObject {
                        direction: if signal == SignalKind::AiServing {
                            NetDirection::Listen
                        } else {
                            NetDirection::DnsQuery
                        },
                        address: "127.0.0.53".into(),
                        port: if signal == SignalKind::AiServing {
                            11434
                        } else {
                            53
                        },
                        host: "api.openai.com".into(),
                    }
                }),
                gpu: (signal == SignalKind::GpuUse).then(|| GpuObject {
                    uuid: format!("GPU-{}", i % 8),
                    name: "NVIDIA H100".into(),
                    index: (i % 8) as u32,
                    used_memory_bytes: Some(1 << 30),
                    sm_util_percent: Some(40),
                    ..Default::default()
                }),
                action: String::new(),
                summary: String::new(),
            }
        })
        .collect()
}

pub fn rule_evaluation(root: &Path, report: &mut Report) -> anyhow::Result<()> {
    let set = PolicySet::compile(&default_pack(root)?)
        .map_err(|d| anyhow::anyhow!("the default pack does not compile: {d:?}"))?;
    let events = recorded_events(EVENTS);
    let host = HostFacts {
        hostname: "bench".into(),
        agent_id: "bench".into(),
    };
    let started = Instant::now();
    let mut fired = 0u64;
    for e in &events {
        if set.evaluate(e, None, &host).is_some() {
            fired += 1;
        }
    }
    let policy_rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    // A pack where every event goes through a CEL condition and an exception.
    let conditional: PolicySource = [(
        "all.yaml".to_string(),
        "lists:\n  ai_api_hosts: [api.openai.com, api.anthropic.com]\n---\nid: every-event\ndescription: d\nseverity: high\nwhen: [model_file, ai_runtime, gpu_device, gpu_use, ai_egress, ai_serving]\ncondition: process.uid >= 1000 && (file.path.endsWith(\".safetensors\") || net.host in lists.ai_api_hosts || gpu.memory_bytes > 0 || net.port == 11434)\nexceptions:\n  - process.name in [\"dpkg\", \"apt\"]\n".to_string(),
    )]
    .into();
    let all_cel = PolicySet::compile(&conditional)
        .map_err(|d| anyhow::anyhow!("the conditional pack does not compile: {d:?}"))?;
    let started = Instant::now();
    let mut fired_cel = 0u64;
    for e in &events {
        if all_cel.evaluate(e, None, &host).is_some() {
            fired_cel += 1;
        }
    }
    let cel_rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    eprintln!("conditional pack: {fired_cel} of {EVENTS} fired");
    // The built-in rules on the same events' observations, side by side:
    // the floor a policy engine is measured against.
    // (The agent builds each observation from the event it decodes; here
    // they are built before the clock starts, so only the rules are timed.)
    let builtin = vigil_detection::BuiltinRules::default();
    let observations: Vec<vigil_detection::Observation> = events
        .iter()
        .map(|e| vigil_detection::Observation::FileOpened {
            path: e.file.as_ref().map(|f| f.path.clone()).unwrap_or_default(),
            head: None,
        })
        .collect();
    let started = Instant::now();
    let mut kept = 0u64;
    for (e, obs) in events.iter().zip(&observations) {
        if builtin.evaluate(&e.process, obs, 0).is_some() {
            kept += 1;
        }
    }
    let builtin_rate = EVENTS as f64 / started.elapsed().as_secs_f64();
    eprintln!("policy: {fired} of {EVENTS} events fired a rule; built-in: {kept}");
    let cmd = "make bench";
    report.push(
        Figure::ratio(
            "default policy pack, 1,000,000 recorded events, one core / 500,000 events/s goal",
            policy_rate,
            500_000.0,
            "events/s",
            cmd,
        )
        .goal(1.0),
    );
    // Not the acceptance figure (that is the default pack), but what a pack
    // costs when every rule has a condition: the CEL interpreter's floor.
    report.push(Figure::ratio(
        "a CEL condition and exception on every event, 1,000,000 events, one core / 500,000 events/s",
        cel_rate,
        500_000.0,
        "events/s",
        cmd,
    ));
    report.push(Figure::ratio(
        "default policy pack / built-in rules on the same events (evaluations per second)",
        policy_rate,
        builtin_rate,
        "events/s",
        cmd,
    ));
    Ok(())
}

/// Push latency to 50 agents, against the same pushes to one agent in the
/// same run (what raft commit and one session cost by themselves).
pub async fn propagation(
    endpoint: &str,
    root: &Path,
    key: &SigningKey,
    report: &mut Report,
) -> anyhow::Result<()> {
    let one = push_latency(endpoint, root, key, 1, "sim-one").await?;
    let fleet = push_latency(endpoint, root, key, AGENTS, "sim").await?;
    let ms = |h: &hdrhistogram::Histogram<u64>, q| h.value_at_quantile(q) as f64 / 1000.0;
    let cmd = "make bench";
    for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
        report.push(
            Figure::ratio(
                &format!(
                    "policy push → 50 agents verified and compiled it, {label} over 100 pushes / 1 s goal"
                ),
                ms(&fleet, q),
                1000.0,
                "ms",
                cmd,
            )
            .goal_max(1.0),
        );
        report.push(Figure::ratio(
            &format!("policy push, {label}: 50 agents / 1 agent (same run)"),
            ms(&fleet, q),
            ms(&one, q),
            "ms",
            cmd,
        ));
    }
    Ok(())
}

/// `agents` simulated agents (real gRPC sessions) verify and compile each
/// pushed bundle like the agent does; latency is from the push call to that.
async fn push_latency(
    endpoint: &str,
    root: &Path,
    key: &SigningKey,
    agents: usize,
    id_prefix: &str,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let files = default_pack(root)?;
    let trusted = TrustedKeys::from_hex(&[key.public_hex()])?;
    let (applied_tx, mut applied) = mpsc::unbounded_channel::<(u64, Instant)>();
    let mut sessions = Vec::new();
    for a in 0..agents {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_string())?
            .connect()
            .await?;
        let mut client = pb::agent_service_client::AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(8);
        tx.send(pb::AgentMessage {
            body: Some(pb::agent_message::Body::Hello(pb::Hello {
                agent_id: format!("{id_prefix}-{a}"),
                hostname: format!("{id_prefix}-{a}"),
                agent_version: "bench".into(),
                sensor_mode: vigil_proto::types::v1::SensorMode::Ebpf as i32,
                kernel_release: String::new(),
                hooks: vec![],
            })),
        })
        .await?;
        let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
        let trusted = trusted.clone();
        let applied_tx = applied_tx.clone();
        sessions.push(tokio::spawn(async move {
            let _keep = tx;
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(pb::control_message::Body::Policy(p)) = msg.body {
                    let ok = Bundle::from_json(&p.bundle)
                        .ok()
                        .filter(|b| trusted.verify(b).is_ok())
                        .map(|b| PolicySet::compile(&b.files).is_ok())
                        .unwrap_or(false);
                    if ok {
                        let _ = applied_tx.send((p.version, Instant::now()));
                    }
                }
            }
        }));
    }
    let mut admin =
        admin_pb::admin_service_client::AdminServiceClient::connect(endpoint.to_string()).await?;
    let first = admin
        .list_policies(admin_pb::ListPoliciesRequest {})
        .await?
        .into_inner()
        .policies
        .iter()
        .map(|p| p.version)
        .max()
        .unwrap_or(0)
        + 1;
    // Drain anything the sessions got at start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while applied.try_recv().is_ok() {}
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    for v in first..first + PUSHES {
        let bundle = key.sign(v, files.clone()).to_json();
        let pushed = Instant::now();
        admin
            .push_policy(admin_pb::PushPolicyRequest {
                bundle,
                note: "bench".into(),
            })
            .await?;
        let mut got = 0;
        let deadline = pushed + Duration::from_secs(10);
        while got < agents {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(Some((version, at))) = tokio::time::timeout(left, applied.recv()).await else {
                anyhow::bail!("version {v}: only {got} of {agents} agents applied it within 10 s");
            };
            if version == v {
                got += 1;
                hist.record(at.duration_since(pushed).as_micros() as u64)?;
            }
        }
    }
    for s in sessions {
        s.abort();
    }
    Ok(hist)
}
