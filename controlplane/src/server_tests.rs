use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus as WireStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::{HealthReporter, HealthService};

use super::*;
use crate::storage_guard::StorageProblem;

/// What health answers for the agent service now.
fn status(reporter: &HealthReporter) -> i32 {
    let service = HealthService::from_health_reporter(reporter.clone());
    let checker = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    checker
        .block_on(service.check(tonic::Request::new(HealthCheckRequest {
            service: SERVICES[0].into(),
        })))
        .unwrap()
        .into_inner()
        .status
}

fn wait_for(reporter: &HealthReporter, wanted: WireStatus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(reporter) != wanted as i32 {
        assert!(
            Instant::now() < deadline,
            "health never became {wanted:?} (it says {})",
            status(reporter)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn health_turns_not_serving_while_every_runtime_worker_is_stuck() {
    // The node's runtime, as main.rs builds it but with two workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (reporter, _service) = tonic_health::server::health_reporter();
    let mut metrics = openraft::RaftMetrics::new_initial(1);
    metrics.current_leader = Some(1);
    let (_metrics_tx, metrics_rx) = tokio::sync::watch::channel(metrics);
    let stuck = Arc::new(AtomicBool::new(false));
    let probe = {
        let stuck = Arc::clone(&stuck);
        Box::new(move || {
            Some(
                stuck
                    .load(Ordering::Acquire)
                    .then_some(StorageProblem::Stalled {
                        what: "a test write",
                        waited_secs: 10,
                    }),
            )
        })
    };
    {
        let _in_runtime = runtime.enter();
        spawn_health_watch(metrics_rx, probe, reporter.clone()).unwrap();
    }
    wait_for(&reporter, WireStatus::Serving);

    // Both workers blocked in a call that does not return (as sled's flush
    // on a full disk), then the storage problem appears.
    let mut releases = Vec::new();
    let (started_tx, started) = mpsc::channel();
    for _ in 0..2 {
        let (release, released) = mpsc::channel::<()>();
        let started_tx = started_tx.clone();
        runtime.spawn(async move {
            started_tx.send(()).unwrap();
            let _ = released.recv();
        });
        releases.push(release);
    }
    for _ in 0..2 {
        started.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    stuck.store(true, Ordering::Release);
    wait_for(&reporter, WireStatus::NotServing);

    for release in releases {
        release.send(()).unwrap();
    }
}
