//! A live feed of committed alerts after a cursor: the backlog first, then
//! each new alert as it is applied. Shared by `FollowAlerts` and the SIEM
//! export.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use vigil_domain::Alert;

use super::Caller;
use crate::store::StateReader;

const PAGE: usize = 512;

/// Streams every alert with index > `after`, in order and without gaps
/// (but for alerts retention removed before they were read: a cursor
/// older than the oldest alert kept starts at that one), mapped (and
/// filtered) by `map`. Ends when the client goes away, or
/// with PERMISSION_DENIED once the certificate it was opened with (its
/// serial in `caller`) is revoked.
pub fn spawn_alert_feed<T, F>(
    state: StateReader,
    caller: &Caller,
    after: u64,
    mut map: F,
) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: FnMut(Alert) -> Option<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    let serial = match caller {
        Caller::Authenticated { serial, .. } => Some(serial.clone()),
        Caller::Unauthenticated | Caller::Anonymous => None,
    };
    tokio::spawn(async move {
        let mut cursor = after;
        let mut changed = state.watch_alerts();
        let mut revocations = state.watch_revocations();
        loop {
            changed.borrow_and_update();
            if let Some(serial) = &serial {
                if state.certificate_revoked(serial).unwrap_or(true) {
                    let _ = tx
                        .send(Err(Status::permission_denied(format!(
                            "certificate {serial} is revoked"
                        ))))
                        .await;
                    return;
                }
            }
            let page = match state.alerts_after(cursor, PAGE) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, cursor, "reading alerts for a feed");
                    let _ = tx
                        .send(Err(Status::internal(format!(
                            "reading alerts after {cursor}: {e}"
                        ))))
                        .await;
                    return;
                }
            };
            if page.is_empty() {
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    r = revocations.changed(), if serial.is_some() => if r.is_err() { return },
                    _ = tx.closed() => return,
                }
                continue;
            }
            for alert in page {
                cursor = alert.index;
                if let Some(item) = map(alert) {
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
