//! `vigil.siem.v1.SiemExport`: alerts as OCSF, resumable from a cursor.

use tonic::{Request, Response, Status};
use vigil_proto::siem::v1 as pb;
use vigil_proto::siem::v1::siem_export_server::SiemExport;

use super::alert_feed::spawn_alert_feed;
use crate::ocsf::detection_finding;
use crate::store::StateReader;

pub struct SiemExportImpl {
    state: StateReader,
}

impl SiemExportImpl {
    pub fn new(state: StateReader) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl SiemExport for SiemExportImpl {
    type SubscribeStream = tokio_stream::wrappers::ReceiverStream<Result<pb::SiemEvent, Status>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = super::Caller::of(&req);
        let req = req.into_inner();
        let min = match req.min_severity {
            0 => None,
            raw => Some(
                vigil_proto::severity_from_wire("min_severity", raw)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        tracing::info!(cursor = req.cursor, ?min, "SIEM subscriber attached");
        let feed = spawn_alert_feed(self.state.clone(), &caller, req.cursor, move |alert| {
            if min.is_some_and(|m| alert.finding.severity < m) {
                return None;
            }
            Some(pb::SiemEvent {
                cursor: alert.index,
                ocsf_json: detection_finding(&alert).to_string(),
                alert: Some(alert.into()),
                ..Default::default()
            })
        });
        Ok(Response::new(feed))
    }
}
