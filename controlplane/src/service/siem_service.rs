//! `vigil.siem.v1.SiemExport`: every kind of committed event (findings,
//! enforcements, policy and approval changes, attestation, audit) in the
//! journal's one order, as OCSF, resumable from a cursor, filtered here.
//! Served by any node from its own state machine.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};
use vigil_domain::SiemFilter;
use vigil_proto::siem::v1 as pb;
use vigil_proto::siem::v1::siem_export_server::SiemExport;

use super::event_feed::{out_of_range, spawn_event_feed, FeedRange};
use crate::ocsf::ocsf_json;
use crate::store::{EventsError, StateReader};

/// The most SIEM subscriptions one node serves at once. Each holds a task,
/// a page of events and a channel of rendered ones while its reader is
/// slow: without a bound, one siem-reader certificate opening streams
/// without end (or a fleet of SIEMs misconfigured to reconnect without
/// closing) grows the node's memory without end. Past it a subscription is
/// refused with RESOURCE_EXHAUSTED, which clients retry.
pub const MAX_SUBSCRIPTIONS: usize = 128;

/// The most of them one certificate holds at once: a SIEM that reconnects
/// without closing, or a stolen reader key, cannot take every place.
/// (Without TLS, in a lab, callers are not told apart.)
pub const MAX_SUBSCRIPTIONS_PER_CERTIFICATE: usize = 16;

pub struct SiemExportImpl {
    state: StateReader,
    live: Arc<Semaphore>,
    per_certificate: Arc<PerCertificate>,
}

/// Live subscriptions by certificate serial.
struct PerCertificate {
    limit: usize,
    held: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One certificate's place, given back when dropped (its feed ends).
struct CertificatePlace {
    of: Arc<PerCertificate>,
    serial: String,
}

impl PerCertificate {
    fn take(self: &Arc<Self>, serial: &str) -> Option<CertificatePlace> {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let n = held.entry(serial.to_string()).or_insert(0);
        if *n >= self.limit {
            return None;
        }
        *n += 1;
        Some(CertificatePlace {
            of: self.clone(),
            serial: serial.to_string(),
        })
    }
}

impl Drop for CertificatePlace {
    fn drop(&mut self) {
        let mut held = self.of.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&self.serial) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.serial);
            }
        }
    }
}

impl SiemExportImpl {
    pub fn new(state: StateReader) -> Self {
        Self::with_limit(state, MAX_SUBSCRIPTIONS)
    }

    /// At most `limit` subscriptions at once.
    pub fn with_limit(state: StateReader, limit: usize) -> Self {
        Self::with_limits(state, limit, MAX_SUBSCRIPTIONS_PER_CERTIFICATE)
    }

    /// At most `limit` subscriptions at once, `per_certificate` of them
    /// one certificate's.
    pub fn with_limits(state: StateReader, limit: usize, per_certificate: usize) -> Self {
        Self {
            state,
            live: Arc::new(Semaphore::new(limit)),
            per_certificate: Arc::new(PerCertificate {
                limit: per_certificate,
                held: Default::default(),
            }),
        }
    }

    /// Moves the `hosts` values that name an enrolled agent to
    /// `agent_ids`, matched on the agent id alone: a host name is what an
    /// agent reports, and one reporting another agent's id as its host
    /// name must not pass for it. (A name no agent has as its id still
    /// matches an agent id or a host name.)
    fn by_agent_id(&self, filter: &mut SiemFilter) -> Result<(), Status> {
        let mut hosts = Vec::with_capacity(filter.hosts.len());
        for h in std::mem::take(&mut filter.hosts) {
            let enrolled = self.state.agent(&h).map_err(|e| {
                tracing::error!(error = %e, "reading an agent for a SIEM filter");
                Status::internal(format!("reading agent {h:?}: {e}"))
            })?;
            if enrolled.is_some() {
                filter.agent_ids.push(h);
            } else {
                hosts.push(h);
            }
        }
        filter.hosts = hosts;
        Ok(())
    }
}

/// Where a subscription starts, from its cursor and the journal's bounds:
/// (the cursor to read after, whether it is beyond the newest event).
fn start(cursor: u64, oldest: u64, head: u64) -> Result<(u64, bool), EventsError> {
    if cursor == 0 {
        return Ok((oldest.saturating_sub(1), false));
    }
    if cursor.saturating_add(1) < oldest {
        return Err(EventsError::OutOfRange {
            after: cursor,
            oldest,
        });
    }
    Ok((cursor, cursor > head))
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
        let mut filter =
            SiemFilter::try_from(&req).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.by_agent_id(&mut filter)?;
        let head = self.state.last_event_cursor();
        let oldest = self.state.first_event_cursor().map_err(|e| {
            tracing::error!(error = %e, "reading the oldest event kept");
            Status::internal(format!("reading the oldest event kept: {e}"))
        })?;
        let (after, ahead) = start(req.cursor, oldest, head).map_err(|e| out_of_range(&e))?;
        tracing::info!(
            cursor = req.cursor,
            head,
            ahead,
            ?filter,
            "SIEM subscriber attached"
        );
        // Held by the feed (its mapping closure) until it ends.
        let live = self.live.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(
                limit = MAX_SUBSCRIPTIONS,
                "SIEM subscription refused: too many at once"
            );
            Status::resource_exhausted(
                "this node serves as many SIEM subscriptions as it may; try again later or another node",
            )
        })?;
        let place = match &caller {
            super::Caller::Authenticated { serial, .. } => {
                Some(self.per_certificate.take(serial).ok_or_else(|| {
                    Status::resource_exhausted(format!(
                        "certificate {serial} holds {} SIEM subscriptions already; close one first",
                        self.per_certificate.limit
                    ))
                })?)
            }
            super::Caller::Unauthenticated | super::Caller::Anonymous => None,
        };
        let include_record = req.include_record;
        let range = FeedRange {
            after,
            stop_at: req.stop_at_head.then_some(head),
        };
        let feed = spawn_event_feed(self.state.clone(), &caller, range, filter, move |event| {
            let _held = (&live, &place);
            let ocsf = ocsf_json(&event);
            vigil_proto::siem_event_to_wire(event, ocsf, include_record)
        });
        let mut response = Response::new(feed);
        let headers = response.metadata_mut();
        headers.insert(
            "vigil-cursor-state",
            MetadataValue::from_static(if ahead { "ahead" } else { "ok" }),
        );
        headers.insert("vigil-head-cursor", MetadataValue::from(head));
        Ok(response)
    }
}

#[cfg(test)]
#[path = "siem_service_tests.rs"]
mod tests;
