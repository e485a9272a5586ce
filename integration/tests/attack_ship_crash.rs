//! Issue #19, durability: the agent killed with SIGKILL at random points,
//! 20 times, restarted each time on the same data dir. Every finding it
//! logged as spooled (it logs one only once the spool is flushed) reaches
//! the control plane, and none is reported twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vigil_integration::{log_number, privileged, python_opens, wait_for, Agent, ControlPlane};

const ROUNDS: usize = 20;
/// Model files one round opens at most (one python3 process each).
const OPENS_PER_ROUND: usize = 6;

/// A delay in [20, 520) ms, different each round and each run (no rand
/// crate needed for this).
fn random_delay(round: usize) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let mixed = (nanos ^ (round as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    Duration::from_millis(20 + (mixed >> 33) % 500)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_no_spooled_finding_and_repeats_none() {
    if !privileged("sigkill_at_random_points_loses_no_spooled_finding_and_repeats_none") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let data = tmp.path().join("agent");
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    // Every model file opened: pid → path.
    let mut opened: BTreeMap<u32, String> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut agent = Agent::start(&data, &cp.endpoint(), "crash-agent").await;
        let stop = Arc::new(AtomicBool::new(false));
        let opener = {
            let stop = stop.clone();
            let models = models.clone();
            std::thread::spawn(move || {
                let mut opened = Vec::new();
                for i in 0..OPENS_PER_ROUND {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let model = models.join(format!("round{round}-{i}.gguf"));
                    std::fs::write(&model, b"GGUF").unwrap();
                    opened.push((python_opens(&model), model.display().to_string()));
                }
                opened
            })
        };
        tokio::time::sleep(random_delay(round)).await;
        agent.daemon.kill();
        stop.store(true, Ordering::Relaxed);
        opened.extend(opener.join().unwrap());
        drop(agent);
    }
    // A last agent ships what the others spooled.
    let agent = Agent::start(&data, &cp.endpoint(), "crash-agent").await;
    // Findings on our model files logged as spooled, by pid.
    let log = agent.log_text();
    let spooled: BTreeSet<u32> = log
        .lines()
        .filter(|l| l.contains(" finding ") && l.contains("seq="))
        .filter_map(|l| u32::try_from(log_number(l, " pid=")?).ok())
        .filter(|pid| opened.contains_key(pid))
        .collect();
    eprintln!(
        "{} model files opened over {ROUNDS} rounds, findings on {} logged as spooled",
        opened.len(),
        spooled.len()
    );
    assert!(!spooled.is_empty(), "no finding was spooled:\n{log}");
    let alerts = wait_for(
        "every spooled finding at the control plane",
        Duration::from_secs(30),
        || async {
            let alerts = cp.try_alerts().await.ok()?;
            let pids: BTreeSet<u32> = alerts
                .iter()
                .filter_map(|a| Some(a.finding.as_ref()?.process.as_ref()?.pid))
                .collect();
            spooled.is_subset(&pids).then_some(alerts)
        },
    )
    .await;
    // None twice: one alert per (pid, path) of our files.
    let mut seen: BTreeMap<(u32, String), u32> = BTreeMap::new();
    for alert in &alerts {
        let Some(f) = alert.finding.as_ref() else {
            continue;
        };
        let (Some(p), Some(file)) = (f.process.as_ref(), f.file.as_ref()) else {
            continue;
        };
        if opened.get(&p.pid) == Some(&file.path) {
            *seen.entry((p.pid, file.path.clone())).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "reported more than once: {twice:?}");
    // What was shipped was shipped from the spool: nothing arrived that
    // the agents did not log as spooled... except findings spooled right
    // before a kill, whose log line the kill cut off.
    assert!(
        seen.len() >= spooled.len(),
        "{} alerts for {} spooled",
        seen.len(),
        spooled.len()
    );
}
