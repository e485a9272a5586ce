//! How long rendering one event as OCSF JSON takes, measured by hand (a
//! release build; nothing is asserted about time):
//!
//! ```text
//! VIGIL_OCSF_SPEED=1 cargo test --release -p vigil-controlplane ocsf_speed -- --nocapture
//! ```

use std::hint::black_box;
use std::time::Instant;

use vigil_domain::{
    Alert, EventKind, EventRecord, ModelIdentity, ModelRisk, NetDirection, NetObject, SiemEvent,
    SignalKind,
};

const EVENTS: u64 = 20_000;
const ROUNDS: usize = 7;

/// Findings like the SIEM benchmark's (a python process opening a model
/// file, its real command line and summary), with some that carry a model
/// identity, an egress connection or an enforcement.
fn realistic(i: u64) -> SiemEvent {
    let mut f = crate::realistic_finding::realistic_model_finding(i + 1);
    match i % 10 {
        0 | 5 => {
            f.file.as_mut().unwrap().model = Some(Box::new(ModelIdentity {
                format: "safetensors".into(),
                architecture: "llama".into(),
                name: "Meta-Llama-3-8B-Instruct".into(),
                size_label: "8B".into(),
                quantization: "BF16".into(),
                parameters: 8_030_261_248,
                tensor_count: 291,
                sha256: "cd".repeat(32),
                structure_fingerprint: "ef".repeat(32),
                risk: ModelRisk::Safe,
                ..Default::default()
            }))
        }
        3 => {
            f.signal = SignalKind::AiEgress;
            f.file = None;
            f.net = Some(NetObject {
                direction: NetDirection::Connect,
                address: "104.18.33.45".into(),
                port: 443,
                host: "api.openai.com".into(),
            });
            f.summary = "python3 (pid 77) connected to api.openai.com (104.18.33.45:443)".into();
        }
        7 => {
            f.action = "kill".into();
            f.summary = format!(
                "action kill for rule {} on pid 77: killed 1 process (0.4 ms after the event)",
                f.rule_id
            );
        }
        _ => {}
    }
    let alert = Alert {
        index: i + 1,
        agent_id: format!("agent-{:04}", i % 64),
        hostname: format!("gpu-node-{:04}.prod.example", i % 64),
        received_at_unix_nanos: 1_765_000_000_001_000_000 + i as i64,
        finding: f,
    };
    SiemEvent {
        cursor: i + 1,
        kind: EventKind::of_alert(&alert),
        record: EventRecord::Alert(alert),
    }
}

/// The median over `ROUNDS` of ns per event of `render` over `events`.
fn ns_per_event(events: &[SiemEvent], mut render: impl FnMut(&SiemEvent) -> usize) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut bytes = 0;
            for e in events {
                bytes += render(black_box(e));
            }
            black_box(bytes);
            start.elapsed().as_nanos() as f64 / events.len() as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

#[test]
fn ocsf_speed() {
    if std::env::var_os("VIGIL_OCSF_SPEED").is_none() {
        return;
    }
    let events: Vec<SiemEvent> = (0..EVENTS).map(realistic).collect();
    let bytes: usize = events.iter().map(|e| super::ocsf_json(e).len()).sum();
    let new = ns_per_event(&events, |e| super::ocsf_json(e).len());
    let mut buf = Vec::with_capacity(4096);
    let reused = ns_per_event(&events, |e| {
        buf.clear();
        super::write_ocsf(e, &mut buf);
        buf.len()
    });
    println!(
        "OCSF rendering of {EVENTS} realistic findings ({} bytes each on average), median of {ROUNDS} rounds:\n  \
         ocsf_json:                  {new:.0} ns/event\n  \
         write_ocsf, a reused buffer: {reused:.0} ns/event",
        bytes / events.len(),
    );
}
