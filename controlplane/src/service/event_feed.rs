//! A live feed of the SIEM export's events after a cursor: the backlog
//! first, then each new event as it is applied, filtered on the journal
//! (only the events that pass are read and decoded).
//!
//! A client that never reads costs one task, one bounded channel of
//! [`BUFFERED`] events and one page: the feed waits on the channel, reads
//! nothing more, and HTTP/2 flow control holds what the transport took.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use vigil_domain::{SiemEvent, SiemFilter};

use super::Caller;
use crate::store::{EventsError, StateReader};

/// Events that pass the filter read at a time.
const PAGE: usize = 128;
/// Journal records looked at, at most, for one page (a filter that passes
/// little still reads a bounded amount each time).
const SCAN: usize = 4096;
/// Events sent but not yet taken by the transport.
const BUFFERED: usize = 32;

/// Where a feed starts and when it ends.
#[derive(Debug, Clone)]
pub struct FeedRange {
    /// Events with a cursor above this one.
    pub after: u64,
    /// End (OK) once every event up to this cursor was sent or filtered
    /// out; `None` waits for new events for ever.
    pub stop_at: Option<u64>,
}

/// The status a retention gap is refused with: OUT_OF_RANGE, the message
/// naming the oldest cursor kept, and `vigil-oldest-cursor` saying it for
/// programs.
pub fn out_of_range(e: &EventsError) -> Status {
    let mut status = Status::out_of_range(e.to_string());
    if let EventsError::OutOfRange { oldest, .. } = e {
        if let Ok(v) = oldest.to_string().parse() {
            status.metadata_mut().insert("vigil-oldest-cursor", v);
        }
    }
    status
}

fn read_failed(e: &EventsError, cursor: u64) -> Status {
    match e {
        EventsError::OutOfRange { .. } => out_of_range(e),
        EventsError::Read(r) => {
            tracing::error!(error = %r, cursor, "reading events for a SIEM feed");
            Status::internal(format!("reading events after {cursor}: {r}"))
        }
    }
}

/// Streams every event after `range.after` that passes `filter`, in cursor
/// order and without gaps but for what the filter leaves out, mapped by
/// `map`. Ends when the client goes away, at `range.stop_at`, with
/// OUT_OF_RANGE when retention removes events the feed has not read yet,
/// or with PERMISSION_DENIED once the certificate it was opened with (its
/// serial in `caller`) is revoked.
pub fn spawn_event_feed<T, F>(
    state: StateReader,
    caller: &Caller,
    range: FeedRange,
    filter: SiemFilter,
    mut map: F,
) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: FnMut(SiemEvent) -> T + Send + 'static,
{
    let (tx, rx) = mpsc::channel(BUFFERED);
    let serial = match caller {
        Caller::Authenticated { serial, .. } => Some(serial.clone()),
        Caller::Unauthenticated | Caller::Anonymous => None,
    };
    tokio::spawn(async move {
        let mut cursor = range.after;
        let mut changed = state.watch_events();
        let mut revocations = state.watch_revocations();
        let revoked = |serial: &Option<String>| {
            serial
                .as_ref()
                .filter(|s| state.certificate_revoked(s).unwrap_or(true))
                .map(|s| Status::permission_denied(format!("certificate {s} is revoked")))
        };
        loop {
            if range.stop_at.is_some_and(|stop| cursor >= stop) {
                return;
            }
            // A client gone while pages sent it nothing: no more scanning
            // for no one (and its subscription's place comes back).
            if tx.is_closed() {
                return;
            }
            changed.borrow_and_update();
            if let Some(denied) = revoked(&serial) {
                let _ = tx.send(Err(denied)).await;
                return;
            }
            let page = match state.events_after(cursor, PAGE, SCAN, &filter) {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(read_failed(&e, cursor))).await;
                    return;
                }
            };
            let moved = page.scanned_to > cursor;
            for event in page.events {
                let item = map(event);
                // A client that does not read keeps this send waiting; a
                // revocation meanwhile still ends the feed.
                let send = tx.send(Ok(item));
                tokio::pin!(send);
                loop {
                    tokio::select! {
                        r = &mut send => {
                            if r.is_err() {
                                return;
                            }
                            break;
                        }
                        r = revocations.changed(), if serial.is_some() => {
                            if r.is_err() {
                                return;
                            }
                            if revoked(&serial).is_some() {
                                return;
                            }
                        }
                    }
                }
            }
            cursor = page.scanned_to;
            if moved {
                // A filter that passes little sends nothing for page after
                // page, and a read has no await: let the runtime's other
                // tasks (raft, agents' streams) run before the next page.
                tokio::task::yield_now().await;
                continue;
            }
            if range.stop_at.is_some_and(|stop| cursor >= stop) {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                r = revocations.changed(), if serial.is_some() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    ReceiverStream::new(rx)
}
