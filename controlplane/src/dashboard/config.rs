//! The dashboard's limits, timeouts and transport.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Limits and timeouts; `Default` is what a node serves with.
#[derive(Debug, Clone)]
pub struct DashboardSettings {
    /// A session unused this long is gone.
    pub idle_timeout: Duration,
    /// A session is gone this long after login, used or not.
    pub absolute_timeout: Duration,
    /// Failed logins for one user name from one client address (an IPv6
    /// address by its /64) in a minute; past it a login for that name
    /// from that address is answered 429 whatever the password.
    pub failed_logins_per_minute: usize,
    /// Failed logins from one client address, whatever the names, in a
    /// minute (one address trying a password on many names).
    pub failed_logins_per_address_per_minute: usize,
    /// Failed logins for one name from all addresses together, in a
    /// minute: larger than one address may spend, so one address cannot
    /// lock a name out for everyone, yet bounded against many addresses.
    pub failed_logins_per_name_per_minute: usize,
    /// Sessions held at once (the oldest goes past it).
    pub max_sessions: usize,
    /// Sessions of one user held at once (that user's oldest goes past
    /// it): one user cannot push everyone else's out.
    pub max_sessions_per_user: usize,
    /// The largest request body read.
    pub max_body_bytes: usize,
    /// Connections served at once; past it a new one is closed.
    pub max_connections: usize,
    /// Connections from one client address (an IPv6 address by its /64)
    /// served at once; past it a new one from there is closed: one client
    /// cannot take every connection.
    pub max_connections_per_address: usize,
    /// A request head (and a TLS handshake) must arrive within this.
    pub header_timeout: Duration,
    /// An API request (not the live feed) is answered within this, or 503.
    pub request_timeout: Duration,
    /// A connection is closed after this, whatever it does.
    pub connection_lifetime: Duration,
    /// Answer only requests whose `Host` names a loopback address or
    /// `localhost` (421 otherwise): set for a plaintext listener on
    /// loopback, where a DNS-rebinding page would otherwise be
    /// same-origin with the dashboard.
    pub loopback_hosts_only: bool,
    /// Live feeds open at once, in all and per session.
    pub max_live_total: usize,
    pub max_live_per_session: usize,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            failed_logins_per_minute: 5,
            failed_logins_per_address_per_minute: 20,
            failed_logins_per_name_per_minute: 50,
            max_sessions: 10_000,
            max_sessions_per_user: 8,
            max_body_bytes: 16 * 1024,
            max_connections: 256,
            max_connections_per_address: 32,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            connection_lifetime: Duration::from_secs(12 * 3600),
            loopback_hosts_only: false,
            max_live_total: 64,
            max_live_per_session: 4,
        }
    }
}

/// HTTPS with the node's certificate, or plaintext.
#[derive(Clone)]
pub enum DashboardTransport {
    Tls(Arc<rustls::ServerConfig>),
    Plain,
}

impl DashboardTransport {
    pub fn is_tls(&self) -> bool {
        matches!(self, DashboardTransport::Tls(_))
    }
}

/// HTTPS with `cert` (a PEM chain) and `key`: TLS 1.2+, HTTP/1.1, no
/// client certificate asked (browsers log in with a password).
pub fn tls_transport(cert: &Path, key: &Path) -> anyhow::Result<DashboardTransport> {
    let pem =
        std::fs::read(cert).map_err(|e| anyhow::anyhow!("reading {}: {e}", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not PEM certificates: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no CERTIFICATE in this file", cert.display());
    }
    let key_pem =
        std::fs::read(key).map_err(|e| anyhow::anyhow!("reading {}: {e}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow::anyhow!("{}: no private key: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("dashboard TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| anyhow::anyhow!("dashboard TLS, {}: {e}", key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(DashboardTransport::Tls(Arc::new(config)))
}
