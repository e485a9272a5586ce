//! The storage writes in flight and how long the oldest has waited.
//!
//! sled 0.34 does not always fail a write on a full or failing disk: a
//! flush can wait without end for an I/O buffer that will never be
//! written (seen in CI: a log append's flush stuck in `make_stable` after
//! ENOSPC). Raft then neither commits nor stops, so nothing but the age of
//! the oldest write tells that storage is stuck. The log store and the
//! state machine mark each write here; the node's storage guard reads the
//! oldest (`storage_guard.rs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shared by the stores of one node (clones see the same writes).
#[derive(Debug, Clone, Default)]
pub struct WriteWatch {
    inner: Arc<Mutex<InFlightWrites>>,
}

#[derive(Debug, Default)]
struct InFlightWrites {
    next: u64,
    /// Each write's number, what it is, and when it began.
    started: BTreeMap<u64, (&'static str, Instant)>,
}

/// A write in flight; it is over when this is dropped (done or failed).
#[derive(Debug)]
#[must_use = "the write is over as soon as this is dropped"]
pub struct InFlight {
    watch: WriteWatch,
    id: u64,
}

/// The write that has waited longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldestWrite {
    pub what: &'static str,
    pub waited: Duration,
}

impl WriteWatch {
    /// Marks a write (`what`: "log append", "apply", ...) as begun.
    pub fn begin(&self, what: &'static str) -> InFlight {
        let mut w = self.lock();
        let id = w.next;
        w.next += 1;
        w.started.insert(id, (what, Instant::now()));
        InFlight {
            watch: self.clone(),
            id,
        }
    }

    /// The oldest write still in flight, if any.
    pub fn oldest(&self) -> Option<OldestWrite> {
        // Numbers grow with time, so the first is the oldest.
        let w = self.lock();
        let (_, (what, since)) = w.started.first_key_value()?;
        Some(OldestWrite {
            what,
            waited: since.elapsed(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlightWrites> {
        // Nothing panics while holding it; a poisoned map is still right.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.watch.lock().started.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_write_is_the_first_still_in_flight() {
        let watch = WriteWatch::default();
        assert_eq!(watch.oldest(), None);
        let first = watch.begin("log append");
        std::thread::sleep(Duration::from_millis(5));
        let second = watch.clone().begin("apply");
        let oldest = watch.oldest().unwrap();
        assert_eq!(oldest.what, "log append");
        assert!(oldest.waited >= Duration::from_millis(5));
        drop(first);
        assert_eq!(watch.oldest().unwrap().what, "apply");
        drop(second);
        assert_eq!(watch.oldest(), None);
    }
}
