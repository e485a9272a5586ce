//! Waiting for something to become true, with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::HarnessError;

/// How often [`wait_for`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `f` every 20 ms until it returns Some or `timeout` passes.
pub async fn try_wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut f: F,
) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::TimedOut {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// [`try_wait_for`], panicking when it times out.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_wait_for(what, timeout, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
