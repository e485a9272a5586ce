//! Evaluation rate of the default pack and of a pack with a CEL condition
//! and exception on every event, on findings shaped like the bench's
//! (`bench/src/policy_bench.rs` measures the same on a million events):
//! `cargo run --release -p vigil-policy --example eval_rate`.

use std::time::Instant;

use vigil_domain::{
    FileObject, Finding, GpuObject, NetDirection, NetObject, ProcessInfo, Severity, SignalKind,
};
use vigil_policy::{HostFacts, PolicySet, PolicySource};

const EVENTS: usize = 300_000;

const CEL_PACK: &str = "lists:\n  ai_api_hosts: [api.openai.com, api.anthropic.com]\n---\nid: every-event\ndescription: d\nseverity: high\nwhen: [model_file, ai_runtime, gpu_device, gpu_use, ai_egress, ai_serving]\ncondition: process.uid >= 1000 && (file.path.endsWith(\".safetensors\") || net.host in lists.ai_api_hosts || gpu.memory_bytes > 0 || net.port == 11434)\nexceptions:\n  - process.name in [\"dpkg\", \"apt\"]\n";

fn events(n: usize) -> Vec<Finding> {
    let exes = [
        "/usr/bin/python3.11",
        "/opt/app/bin/server",
        "/usr/local/bin/ollama",
        "/usr/bin/dpkg",
        "/tmp/logrotate-helper",
        "/usr/bin/Xorg",
    ];
    let signals = [
        SignalKind::ModelFile,
        SignalKind::AiRuntime,
        SignalKind::GpuDevice,
        SignalKind::GpuUse,
        SignalKind::AiEgress,
        SignalKind::AiServing,
    ];
    (0..n)
        .map(|i| {
            let signal = signals[i % 6];
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
                    ..Default::default()
                },
                file: matches!(
                    signal,
                    SignalKind::ModelFile | SignalKind::AiRuntime | SignalKind::GpuDevice
                )
                .then(|| FileObject {
                    path: format!("/srv/models/{}/weights-{}.safetensors", i % 50, i % 7),
                }),
                net: matches!(signal, SignalKind::AiEgress | SignalKind::AiServing).then(|| {
                    NetObject {
                        direction: NetDirection::DnsQuery,
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

fn rate(name: &str, set: &PolicySet, events: &[Finding]) {
    let host = HostFacts::default();
    let started = Instant::now();
    let fired = events
        .iter()
        .filter(|e| set.evaluate(e, None, &host).is_some())
        .count();
    let per_s = events.len() as f64 / started.elapsed().as_secs_f64();
    println!(
        "{name}: {per_s:.0} events/s ({fired} of {} fired)",
        events.len()
    );
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default");
    let default_pack: PolicySource = std::fs::read_dir(&dir)
        .expect("policies/default")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&p).expect("readable"))
        })
        .collect();
    let cel_pack: PolicySource = [("all.yaml".to_string(), CEL_PACK.to_string())].into();
    let events = events(EVENTS);
    let default_set = PolicySet::compile(&default_pack).expect("default pack compiles");
    let cel_set = PolicySet::compile(&cel_pack).expect("CEL pack compiles");
    rate("default pack", &default_set, &events);
    rate("CEL on every event", &cel_set, &events);
}
