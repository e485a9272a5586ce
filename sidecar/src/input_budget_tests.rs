use std::time::Duration;

use tonic::Code;

use super::*;

#[tokio::test]
async fn reservations_are_counted_and_given_back() {
    let budget = InputBudget::new(10 << 10, Duration::from_secs(60));
    assert_eq!(budget.bytes(), 10 << 10);
    let a = budget.reserve(1).await.unwrap();
    assert_eq!(a.bytes(), 1024, "rounded up to a KiB");
    let b = budget.reserve(4 << 10).await.unwrap();
    assert_eq!(budget.held_bytes(), 5 << 10);
    assert_eq!(budget.available_bytes(), 5 << 10);
    drop(a);
    drop(b);
    assert_eq!(budget.held_bytes(), 0);
    assert_eq!(budget.available_bytes(), 10 << 10);
    assert_eq!(budget.peak_bytes(), 5 << 10);
    // No input bytes: nothing to wait for.
    let none = budget.reserve(0).await.unwrap();
    assert_eq!(none.bytes(), 0);
}

#[tokio::test]
async fn more_than_the_whole_budget_is_refused_at_once() {
    let budget = InputBudget::new(1 << 20, Duration::from_secs(3600));
    let err = budget.reserve((1 << 20) + 1).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.to_string().contains("more than the 1048576 bytes")
            && err.to_string().contains("--max-input-bytes-in-flight"),
        "{err}"
    );
    let err = budget.reserve(u64::MAX).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(budget.reserve(1 << 20).await.is_ok());
}

#[tokio::test]
async fn a_wait_for_room_is_bounded_and_then_refused() {
    let budget = InputBudget::new(1 << 20, Duration::from_millis(20));
    let held = budget.reserve(1 << 19).await.unwrap();
    let _also = budget.reserve(1 << 19).await.unwrap();
    let err = budget.reserve(1).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.to_string().contains("retry later"), "{err}");
    assert_eq!(budget.held_bytes(), 1 << 20);
    drop(held);
    assert!(budget.reserve(1 << 19).await.is_ok());
}

#[tokio::test]
async fn a_waiting_request_gets_room_when_another_ends() {
    let budget = Arc::new(InputBudget::new(1 << 20, Duration::from_secs(60)));
    let first = budget.reserve(1 << 20).await.unwrap();
    let waiter = {
        let budget = budget.clone();
        tokio::spawn(async move { budget.reserve(1 << 20).await.map(|p| p.bytes()) })
    };
    tokio::task::yield_now().await;
    assert_eq!(budget.held_bytes(), 1 << 20);
    drop(first);
    assert_eq!(waiter.await.unwrap().unwrap(), 1 << 20);
    assert_eq!(budget.peak_bytes(), 1 << 20);
}

#[test]
fn a_budget_is_at_least_one_unit_and_at_most_the_semaphore_s() {
    assert_eq!(InputBudget::new(0, Duration::ZERO).bytes(), 1024);
    assert_eq!(
        InputBudget::new(u64::MAX, Duration::ZERO).bytes(),
        MAX_BUDGET_BYTES
    );
}
