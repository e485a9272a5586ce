//! Mutual TLS on the control plane's gRPC listener.
//!
//! The control plane terminates TLS itself (tokio-rustls) rather than
//! through tonic's `ServerTlsConfig`, for two reasons: a handshake gets a
//! deadline and runs beside the accept loop (a peer that connects and says
//! nothing holds one slot for three seconds, not the listener), and a peer
//! that is refused is logged and audited with why. Every peer must present
//! a certificate that chains to the fleet's CA; what it may do is decided
//! per RPC by [`crate::service::authorization`].
//!
//! Architecture invariant: with TLS configured, no byte of gRPC reaches a
//! service from a peer without a verified certificate.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use vigil_pki::{CertificateInfo, Identity};

use crate::security_events::{SecurityEvent, SecurityEvents};

/// How long a peer has to send its first bytes and finish its TLS
/// handshake (a real client needs milliseconds).
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(3);
/// Handshakes in progress at once; past it, a new connection is closed.
const HANDSHAKES_IN_FLIGHT: usize = 256;
/// Handshakes in progress from one address; past it, closed at once.
const HANDSHAKES_PER_SOURCE: usize = 16;

/// The PEM files a node serves with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The fleet's CA certificate: every peer must chain to it.
    pub ca: PathBuf,
    /// This node's certificate (it must name a node: `vigilctl ca issue --node`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {what}")]
    Pem { path: PathBuf, what: String },
    #[error("{path}: this certificate names {named}, not a control-plane node (issue one with `vigilctl ca issue --node ID`)")]
    NotANode { path: PathBuf, named: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: path.to_owned(),
        source,
    })
}

fn pem_err(path: &Path, what: impl Into<String>) -> TlsSetupError {
    TlsSetupError::Pem {
        path: path.to_owned(),
        what: what.into(),
    }
}

/// Certificates in a PEM file, in order; none is an error.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no CERTIFICATE in this file"));
    }
    Ok(certs)
}

/// What a node serves with: the rustls configuration and, when it holds
/// the CA key, enrollment.
pub struct TlsServing {
    pub config: Arc<rustls::ServerConfig>,
    pub enrollment: Option<Arc<crate::service::enrollment::Enrollment>>,
}

/// The TLS set-up of a node: with `ca_key` (the fleet CA's key, or an
/// intermediate's) it also enrolls agents, and a peer without a
/// certificate may complete the handshake (to enroll, and nothing else).
pub fn serving(
    files: &TlsFiles,
    ca_key: Option<&Path>,
    enroll_days: u32,
) -> Result<TlsServing, TlsSetupError> {
    let enrollment = match ca_key {
        None => None,
        Some(key) => {
            let ca_pem = String::from_utf8_lossy(&read(&files.ca)?).into_owned();
            let key_pem = String::from_utf8_lossy(&read(key)?).into_owned();
            let ca = vigil_pki::CertificateAuthority::from_pem(&ca_pem, &key_pem)
                .map_err(|e| pem_err(key, format!("not the key of {}: {e}", files.ca.display())))?;
            Some(Arc::new(crate::service::enrollment::Enrollment {
                ca,
                days: enroll_days,
            }))
        }
    };
    Ok(TlsServing {
        config: server_config(files, enrollment.is_some())?,
        enrollment,
    })
}

/// The rustls configuration: TLS 1.2+, ALPN h2, client certificates
/// verified against the CA and required unless `allow_anonymous` (then a
/// peer without one may only enroll: the authorization layer's table).
pub fn server_config(
    files: &TlsFiles,
    allow_anonymous: bool,
) -> Result<Arc<rustls::ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for ca in certificates(&files.ca)? {
        roots
            .add(ca)
            .map_err(|e| pem_err(&files.ca, format!("not a usable CA certificate: {e}")))?;
    }
    let chain = certificates(&files.cert)?;
    let info =
        CertificateInfo::from_der(&chain[0]).map_err(|e| pem_err(&files.cert, e.to_string()))?;
    match info.identity {
        Ok(Identity::Node { .. }) => {}
        Ok(other) => {
            return Err(TlsSetupError::NotANode {
                path: files.cert.clone(),
                named: other.to_string(),
            })
        }
        Err(e) => {
            return Err(TlsSetupError::NotANode {
                path: files.cert.clone(),
                named: format!("no vigil identity ({e})"),
            })
        }
    }
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_err(&files.key, format!("no private key: {e}")))?;
    let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    if allow_anonymous {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier
        .build()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsSetupError::Config(format!("{}: {e}", files.key.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The client side of raft traffic: this node's own certificate (both a
/// server and a client certificate) presented to its peers, whose
/// certificates must chain to the fleet CA.
pub fn peer_client_config(
    files: &TlsFiles,
) -> Result<tonic::transport::ClientTlsConfig, TlsSetupError> {
    // The same checks as serving (a node's certificate, a usable key).
    server_config(files, false)?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read(&files.ca)?))
        .identity(tonic::transport::Identity::from_pem(
            read(&files.cert)?,
            read(&files.key)?,
        )))
}

/// Accepts on `listener` and hands on each connection whose handshake
/// succeeded within the deadline; a refused one is logged and reported.
///
/// The accept loop never waits: a connection past [`HANDSHAKES_IN_FLIGHT`]
/// handshakes, or past [`HANDSHAKES_PER_SOURCE`] from one address, is
/// closed at once, and a handshake (the first bytes included) gets
/// [`HANDSHAKE_DEADLINE`]. So idle connections from one host cannot hold
/// the listener, and many hosts must keep opening connections to do so.
pub fn accept(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    events: SecurityEvents,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let in_flight = Arc::new(HandshakesInFlight::default());
    let shed_log = Arc::new(ShedLog::default());
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: say so, back off, go on.
                    tracing::warn!(error = %e, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // No Nagle: a reply (an ack, a raft answer) is a small write
            // that must not wait for the peer's delayed ACK (40 ms).
            let _ = tcp.set_nodelay(true);
            let Some(turn) = in_flight.enter(peer.ip()) else {
                drop(tcp);
                if let Some(shed) = shed_log.shed() {
                    tracing::warn!(
                        shed,
                        %peer,
                        "closing connections at once: too many TLS handshakes in progress (from this address or in all)"
                    );
                    events.report(SecurityEvent::HandshakeRefused {
                        peer,
                        reason: format!(
                            "{shed} connections closed unanswered in 10 s: too many TLS handshakes in progress"
                        ),
                    });
                }
                continue;
            };
            let (acceptor, tx, events) = (acceptor.clone(), tx.clone(), events.clone());
            tokio::spawn(async move {
                let _turn = turn;
                let handshake = async {
                    let plaintext = looks_like_plaintext(&tcp).await;
                    (plaintext, acceptor.accept(tcp).await)
                };
                match tokio::time::timeout(HANDSHAKE_DEADLINE, handshake).await {
                    Ok((_, Ok(tls))) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok((plaintext, Err(e))) => {
                        let reason = if plaintext {
                            "a plaintext client on the TLS port (use https:// and a certificate from the fleet's CA)".to_string()
                        } else {
                            format!("TLS handshake failed: {e}")
                        };
                        tracing::warn!(%peer, %reason, "connection refused");
                        events.report(SecurityEvent::HandshakeRefused { peer, reason });
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "connection closed: no TLS handshake in time");
                        events.report(SecurityEvent::HandshakeRefused {
                            peer,
                            reason: format!(
                                "no TLS handshake within {} s",
                                HANDSHAKE_DEADLINE.as_secs()
                            ),
                        });
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Handshakes in progress, in all and per source address.
#[derive(Default)]
struct HandshakesInFlight {
    by_source: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// A handshake's place, given back when it ends.
struct HandshakeTurn {
    owner: Arc<HandshakesInFlight>,
    source: std::net::IpAddr,
}

impl HandshakesInFlight {
    fn enter(self: &Arc<Self>, source: std::net::IpAddr) -> Option<HandshakeTurn> {
        let mut by_source = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = by_source.values().sum();
        let mine = by_source.entry(source).or_default();
        if total >= HANDSHAKES_IN_FLIGHT || *mine >= HANDSHAKES_PER_SOURCE {
            if *mine == 0 {
                by_source.remove(&source);
            }
            return None;
        }
        *mine += 1;
        Some(HandshakeTurn {
            owner: self.clone(),
            source,
        })
    }
}

impl Drop for HandshakeTurn {
    fn drop(&mut self) {
        let mut by_source = self
            .owner
            .by_source
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// Connections closed unanswered, said once per 10 s with their count.
#[derive(Default)]
struct ShedLog {
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl ShedLog {
    /// Counts one; the count to report when 10 s have passed since the
    /// last report.
    fn shed(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.1 += 1;
        let due = state
            .0
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
        if due {
            let n = std::mem::take(&mut state.1);
            state.0 = Some(std::time::Instant::now());
            Some(n)
        } else {
            None
        }
    }
}

/// Whether the first bytes are an HTTP/2 preface rather than a TLS
/// handshake record (a client configured for plaintext), to say so.
async fn looks_like_plaintext(tcp: &TcpStream) -> bool {
    let mut first = [0u8; 3];
    matches!(
        tcp.peek(&mut first).await,
        Ok(3) if &first == b"PRI"
    )
}
