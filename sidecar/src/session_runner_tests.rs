use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::datatype::Datatype;
use crate::onnx_builder::identity;
use crate::session_settings::{build_session, SessionSettings};
use crate::test_runtime::runtime;

/// How long runs stay queued after a wait in these tests: long enough
/// for a loaded CI machine to check it.
const STAY: Duration = Duration::from_millis(1500);

fn runner() -> Arc<SessionRunner> {
    let session = build_session(
        runtime(),
        &SessionSettings::default(),
        &identity(Datatype::Fp32),
    )
    .unwrap();
    Arc::new(SessionRunner::start_with(session, STAY).unwrap())
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Holds the session on a thread named "holder" until `release` is sent;
/// returns once the hold has begun.
fn hold_session(
    runner: &Arc<SessionRunner>,
) -> (mpsc::Sender<()>, std::thread::JoinHandle<String>) {
    let (started, has_started) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let runner = Arc::clone(runner);
    let holder = std::thread::Builder::new()
        .name("holder".into())
        .spawn(move || {
            current_thread()
                .block_on(runner.run(move |_| {
                    started.send(()).unwrap();
                    released.recv().unwrap();
                    thread_name()
                }))
                .unwrap()
        })
        .unwrap();
    has_started.recv().unwrap();
    (release, holder)
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_idle_session_runs_on_the_callers_thread() {
    let runner = runner();
    let here = thread_name();
    let ran_on = current_thread()
        .block_on(runner.run(|_| thread_name()))
        .unwrap();
    assert_eq!(ran_on, here);
    assert!(!runner.is_busy());
}

#[test]
fn runs_that_wait_go_to_the_runner_thread_in_order() {
    let runner = runner();
    let (release, holder) = hold_session(&runner);
    assert!(runner.is_busy());
    let rt = current_thread();
    let order = Arc::new(Mutex::new(Vec::new()));
    let queued: Vec<_> = ["b", "c", "d"]
        .into_iter()
        .map(|tag| {
            let (runner, order) = (Arc::clone(&runner), Arc::clone(&order));
            rt.spawn(async move {
                runner
                    .run(move |_| {
                        order.lock().unwrap().push(tag);
                        thread_name()
                    })
                    .await
            })
        })
        .collect();
    // Each spawned task queues its run at its first poll.
    rt.block_on(async {
        while runner.queued() < 3 {
            tokio::task::yield_now().await;
        }
    });
    assert!(order.lock().unwrap().is_empty(), "nothing runs while held");
    release.send(()).unwrap();
    assert_eq!(holder.join().unwrap(), "holder");
    for task in queued {
        assert_eq!(rt.block_on(task).unwrap().unwrap(), "model-runner");
    }
    assert_eq!(*order.lock().unwrap(), ["b", "c", "d"]);
    // Right after requests had to wait, the next goes to the runner thread
    // though the session is idle; once none had to for the stay, the
    // caller's thread runs it again.
    assert_eq!(
        rt.block_on(runner.run(|_| thread_name())).unwrap(),
        "model-runner"
    );
    std::thread::sleep(STAY + Duration::from_millis(50));
    assert_eq!(
        rt.block_on(runner.run(|_| thread_name())).unwrap(),
        thread_name()
    );
}

#[test]
fn a_queued_run_whose_caller_gave_up_keeps_its_hold_until_its_turn_and_is_not_run() {
    let runner = runner();
    let (release, holder) = hold_session(&runner);
    let hold = Arc::new(());
    let rt = current_thread();
    let theirs = Arc::clone(&hold);
    let ran = Arc::new(Mutex::new(false));
    let ran_theirs = Arc::clone(&ran);
    let task = {
        let runner = Arc::clone(&runner);
        rt.spawn(async move {
            runner
                .run(move |_| {
                    *ran_theirs.lock().unwrap() = true;
                    drop(theirs);
                })
                .await
        })
    };
    rt.block_on(async {
        while runner.queued() < 1 {
            tokio::task::yield_now().await;
        }
    });
    // The caller gives up (a cancelled request): its inputs and permit are
    // still in the queue, so still counted.
    task.abort();
    let _ = rt.block_on(task);
    assert_eq!(Arc::strong_count(&hold), 2);
    release.send(()).unwrap();
    holder.join().unwrap();
    wait_until("its hold was dropped", || Arc::strong_count(&hold) == 1);
    assert!(!*ran.lock().unwrap(), "nobody waits for it: not run");
    wait_until("the session is free", || !runner.is_busy());
}

#[test]
fn a_run_that_panics_is_an_error_and_the_session_serves_on() {
    let runner = runner();
    let rt = current_thread();
    // Inline.
    let err = rt
        .block_on(runner.run(|_| -> u8 { panic!("inline") }))
        .unwrap_err();
    assert_eq!(err, RunError::Panicked);
    assert!(!runner.is_busy());
    // On the runner thread.
    let (release, holder) = hold_session(&runner);
    let task = {
        let runner = Arc::clone(&runner);
        rt.spawn(async move { runner.run(|_| -> u8 { panic!("queued") }).await })
    };
    rt.block_on(async {
        while runner.queued() < 1 {
            tokio::task::yield_now().await;
        }
    });
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(rt.block_on(task).unwrap().unwrap_err(), RunError::Panicked);
    // The runner thread lives on: a queued run after the panic is served.
    let (release, holder) = hold_session(&runner);
    let task = {
        let runner = Arc::clone(&runner);
        rt.spawn(async move { runner.run(|_| thread_name()).await })
    };
    rt.block_on(async {
        while runner.queued() < 1 {
            tokio::task::yield_now().await;
        }
    });
    release.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(rt.block_on(task).unwrap().unwrap(), "model-runner");
}

#[test]
fn the_runner_thread_ends_with_its_model() {
    let runner = runner();
    let shared = Arc::downgrade(&runner.shared);
    drop(Arc::into_inner(runner).expect("the only reference"));
    wait_until("the runner thread let go of the session", || {
        shared.upgrade().is_none()
    });
}

#[test]
fn a_full_queue_refuses_then_makes_room_by_dropping_runs_nobody_waits_for() {
    let runner = runner();
    let (release, holder) = hold_session(&runner);
    let rt = current_thread();
    let waiting: Vec<_> = (0..MAX_QUEUED)
        .map(|_| {
            let runner = Arc::clone(&runner);
            rt.spawn(async move { runner.run(|_| ()).await })
        })
        .collect();
    rt.block_on(async {
        while runner.queued() < MAX_QUEUED {
            tokio::task::yield_now().await;
        }
    });
    // A flood past the cap is refused, not queued.
    let refused = rt.block_on(runner.run(|_| ())).unwrap_err();
    assert_eq!(refused, RunError::QueueFull(MAX_QUEUED));
    assert_eq!(runner.queued(), MAX_QUEUED);
    // Ten callers give up: the next request finds room once their runs
    // are dropped.
    let mut waiting = waiting.into_iter();
    let gave_up: Vec<_> = waiting.by_ref().take(10).collect();
    for task in &gave_up {
        task.abort();
    }
    for task in gave_up {
        let _ = rt.block_on(task);
    }
    let late = {
        let runner = Arc::clone(&runner);
        rt.spawn(async move { runner.run(|_| thread_name()).await })
    };
    rt.block_on(async {
        while runner.queued() != MAX_QUEUED - 9 {
            tokio::task::yield_now().await;
        }
    });
    release.send(()).unwrap();
    holder.join().unwrap();
    for task in waiting {
        rt.block_on(task).unwrap().unwrap();
    }
    assert_eq!(rt.block_on(late).unwrap().unwrap(), "model-runner");
}
