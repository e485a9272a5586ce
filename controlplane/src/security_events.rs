//! Refusals worth an audit entry: a peer refused at the TLS handshake, a
//! caller refused an RPC, an agent claiming another's identity.
//!
//! Reporting never blocks the refusal: events go through a bounded queue
//! to one task that appends them to the audit log, at most
//! [`ITEMISED_PER_MINUTE`] a minute; the rest are counted and summed up in
//! one entry, so a peer hammering the port cannot flood the raft log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::node::ControlPlaneNode;
use crate::raft_types::Command;

/// Audit entries itemised per minute; past it, refusals are counted.
pub const ITEMISED_PER_MINUTE: u32 = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityEvent {
    /// The connection never became TLS with a verified certificate.
    HandshakeRefused { peer: SocketAddr, reason: String },
    /// An authenticated caller asked for something it may not do.
    Denied {
        caller: String,
        peer: Option<SocketAddr>,
        what: String,
        why: String,
    },
}

impl SecurityEvent {
    fn audit_entry(&self) -> (String, &'static str, String, String) {
        match self {
            SecurityEvent::HandshakeRefused { peer, reason } => (
                format!("unauthenticated peer {}", peer.ip()),
                "connection.refused",
                peer.to_string(),
                reason.clone(),
            ),
            SecurityEvent::Denied {
                caller,
                peer,
                what,
                why,
            } => (
                caller.clone(),
                "request.denied",
                what.clone(),
                match peer {
                    Some(p) => format!("{why} (from {p})"),
                    None => why.clone(),
                },
            ),
        }
    }
}

/// Where refusals are reported; cheap to clone.
#[derive(Debug, Clone)]
pub struct SecurityEvents {
    tx: mpsc::Sender<SecurityEvent>,
    /// Events the queue had no room for.
    overflowed: Arc<AtomicU64>,
}

impl SecurityEvents {
    /// Starts the task that audits events on `node`.
    pub fn start(node: Arc<ControlPlaneNode>) -> Self {
        let (tx, rx) = mpsc::channel(256);
        let overflowed = Arc::new(AtomicU64::new(0));
        tokio::spawn(audit_events(node, rx, overflowed.clone()));
        Self { tx, overflowed }
    }

    /// Events that go nowhere (tests, or a node without an audit log).
    pub fn discard() -> Self {
        let (tx, _) = mpsc::channel(1);
        Self {
            tx,
            overflowed: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn report(&self, event: SecurityEvent) {
        if self.tx.try_send(event).is_err() {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn audit_events(
    node: Arc<ControlPlaneNode>,
    mut rx: mpsc::Receiver<SecurityEvent>,
    overflowed: Arc<AtomicU64>,
) {
    let mut window = Instant::now();
    let mut itemised = 0u32;
    let mut counted = 0u64;
    while let Some(event) = rx.recv().await {
        if window.elapsed() >= Duration::from_secs(60) {
            let dropped = overflowed.swap(0, Ordering::Relaxed);
            if counted + dropped > 0 {
                append(
                    &node,
                    (
                        "vigil-controlplane".into(),
                        "refusals.summarised",
                        "refusals".into(),
                        format!(
                            "{} more refusals in the last minute were not itemised",
                            counted + dropped
                        ),
                    ),
                )
                .await;
            }
            window = Instant::now();
            itemised = 0;
            counted = 0;
        }
        if itemised < ITEMISED_PER_MINUTE {
            itemised += 1;
            append(&node, event.audit_entry()).await;
        } else {
            counted += 1;
        }
    }
}

async fn append(
    node: &ControlPlaneNode,
    (actor, action, subject, detail): (String, &str, String, String),
) {
    let at_unix_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let r = node
        .write(Command::AppendAudit {
            at_unix_nanos,
            actor,
            action: action.to_string(),
            subject,
            detail,
        })
        .await;
    if let Err(e) = r {
        tracing::warn!(error = %e, action, "could not audit a refusal");
    }
}
