//! One budget of input bytes in flight, shared by every ModelInfer
//! request (inputs sent in the request and inputs read from shared
//! memory alike).
//!
//! A request's inputs become buffers in the sidecar's memory (the copy
//! ONNX Runtime runs on) before the request waits for its model's
//! session, and many requests can wait at once. Without a shared bound a
//! client could make the sidecar hold `--max-request-bytes` for each
//! waiting request; with shared memory, tiny gRPC messages would be
//! enough. So a request reserves the bytes its inputs take (each input's
//! shape times its datatype's size: exactly the buffer it becomes once
//! checked) before any of them is read or copied, and gives them back
//! when it ends. A request that finds the budget held waits, in turn
//! (first come, first served), at most [`INPUT_BUDGET_WAIT`], without
//! holding a thread; one that needs more than the whole budget is refused
//! at once. Both refusals are `RESOURCE_EXHAUSTED`.
//!
//! Not counted: the gRPC message itself, which tonic has decoded before
//! the request is served (bounded by `--max-request-bytes` per message
//! and [`crate::server::MAX_CONCURRENT_STREAMS`] per connection).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::infer_error::InferError;

/// How long a request waits for room in the budget before it is refused.
pub const INPUT_BUDGET_WAIT: Duration = Duration::from_secs(30);

/// The budget counts in units of this many bytes (a semaphore permit
/// each; a reservation is rounded up).
const UNIT: u64 = 1024;

/// Most bytes a budget may have (the semaphore takes at most `u32::MAX`
/// permits at once).
pub const MAX_BUDGET_BYTES: u64 = (u32::MAX as u64) * UNIT;

/// The input bytes all requests may hold at once.
#[derive(Debug)]
pub struct InputBudget {
    semaphore: Arc<Semaphore>,
    units: u32,
    wait: Duration,
    counters: Arc<Counters>,
}

/// What the budget has held (for logs and tests).
#[derive(Debug, Default)]
struct Counters {
    /// Bytes reserved now.
    held: AtomicU64,
    /// The most bytes reserved at once so far.
    peak: AtomicU64,
}

/// A request's reservation; given back when dropped.
#[derive(Debug)]
pub struct InputPermit {
    bytes: u64,
    counters: Arc<Counters>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl InputPermit {
    /// The bytes reserved (rounded up to the budget's unit).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for InputPermit {
    fn drop(&mut self) {
        // Before the semaphore's permits return (the field drops after
        // this), so `held` never counts more than the semaphore lets in.
        self.counters.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl InputBudget {
    /// A budget of `bytes` (rounded down to whole KiB, at least one, at
    /// most [`MAX_BUDGET_BYTES`]); a request waits at most `wait` for
    /// room.
    pub fn new(bytes: u64, wait: Duration) -> InputBudget {
        let units = u32::try_from((bytes / UNIT).max(1)).unwrap_or(u32::MAX);
        InputBudget {
            semaphore: Arc::new(Semaphore::new(units as usize)),
            units,
            wait,
            counters: Arc::default(),
        }
    }

    /// The whole budget, in bytes.
    pub fn bytes(&self) -> u64 {
        u64::from(self.units) * UNIT
    }

    /// Bytes not reserved now.
    pub fn available_bytes(&self) -> u64 {
        self.semaphore.available_permits() as u64 * UNIT
    }

    /// Bytes reserved now.
    pub fn held_bytes(&self) -> u64 {
        self.counters.held.load(Ordering::Acquire)
    }

    /// The most bytes reserved at once since the budget was made.
    pub fn peak_bytes(&self) -> u64 {
        self.counters.peak.load(Ordering::Acquire)
    }

    /// Reserves `bytes` for a request's inputs, waiting at most the
    /// budget's wait for others to give theirs back; refused at once when
    /// `bytes` is over the whole budget.
    pub async fn reserve(&self, bytes: u64) -> Result<InputPermit, InferError> {
        let units = bytes.div_ceil(UNIT);
        if units > u64::from(self.units) {
            return Err(InferError::Busy(format!(
                "the request's inputs take {bytes} bytes, more than the {} bytes all requests' \
                 inputs may hold at once (--max-input-bytes-in-flight); send smaller batches",
                self.bytes()
            )));
        }
        let permit = if units == 0 {
            None
        } else {
            // Never more than `self.units`, a u32.
            let units = units as u32;
            let acquired =
                tokio::time::timeout(self.wait, self.semaphore.clone().acquire_many_owned(units))
                    .await;
            match acquired {
                Ok(Ok(permit)) => Some(permit),
                Ok(Err(_closed)) => {
                    return Err(InferError::Busy("the sidecar is stopping".to_string()))
                }
                Err(_elapsed) => {
                    return Err(InferError::Busy(format!(
                        "the request's inputs take {bytes} bytes and other requests' inputs held \
                         the sidecar's {} bytes in flight (--max-input-bytes-in-flight) for {:?}; \
                         retry later",
                        self.bytes(),
                        self.wait
                    )))
                }
            }
        };
        let reserved = units * UNIT;
        let held = self.counters.held.fetch_add(reserved, Ordering::AcqRel) + reserved;
        self.counters.peak.fetch_max(held, Ordering::AcqRel);
        Ok(InputPermit {
            bytes: reserved,
            counters: self.counters.clone(),
            _permit: permit,
        })
    }
}

#[cfg(test)]
#[path = "input_budget_tests.rs"]
mod tests;
