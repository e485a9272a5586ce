//! A live feed of committed alerts after a cursor: the backlog first, then
//! each new alert as it is applied. Shared by `FollowAlerts` and the SIEM
//! export.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use vigil_domain::Alert;

use crate::store::StateReader;

const PAGE: usize = 512;

/// Streams every alert with index > `after`, in order and without gaps,
/// mapped (and filtered) by `map`. Ends when the client goes away.
pub fn spawn_alert_feed<T, F>(
    state: StateReader,
    after: u64,
    mut map: F,
) -> ReceiverStream<Result<T, Status>>
where
    T: Send + 'static,
    F: FnMut(Alert) -> Option<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut cursor = after;
        let mut changed = state.watch_alerts();
        loop {
            changed.borrow_and_update();
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
