//! The agent's side of mutual TLS: it presents its own certificate and
//! pins the fleet's CA, so a process that takes the control plane's port
//! (while it is down, or on a host in between) can neither read findings
//! nor send the agent anything it would obey.

use std::path::PathBuf;

use anyhow::{bail, Context};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::{certified_agent_id, AgentConfig};

/// The agent's TLS files, checked at start and read again for every
/// session, so a renewed certificate is used from the next connection on.
#[derive(Debug, Clone)]
pub struct AgentTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The name the control plane's certificate must carry.
    host: String,
}

impl AgentTls {
    /// None for an http:// endpoint with no TLS files; all three files
    /// with https://; anything else is a configuration error said at
    /// start, not a silent downgrade.
    pub fn from_config(config: &AgentConfig) -> anyhow::Result<Option<AgentTls>> {
        let https = config.control_plane.starts_with("https://");
        let (ca, cert, key) = match (&config.tls_ca, &config.tls_cert, &config.tls_key) {
            (None, None, None) if !https => return Ok(None),
            (Some(ca), Some(cert), Some(key)) if https => (ca, cert, key),
            (Some(_), Some(_), Some(_)) => bail!(
                "--tls-ca/--tls-cert/--tls-key need an https:// --control-plane, not {:?}",
                config.control_plane
            ),
            _ => bail!(
                "mutual TLS needs an https:// --control-plane and all of --tls-ca, --tls-cert and --tls-key"
            ),
        };
        let certified = certified_agent_id(cert)?;
        if let Some(id) = config.agent_id.as_deref().filter(|s| !s.trim().is_empty()) {
            if id.trim() != certified {
                bail!(
                    "--agent-id {id:?} is not the agent id {certified:?} that {} names",
                    cert.display()
                );
            }
        }
        let tls = AgentTls {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            host: host_of(&config.control_plane),
        };
        tls.client_config()?;
        Ok(Some(tls))
    }

    /// The client configuration from the files as they are now (a
    /// renewal a crash interrupted is completed first).
    pub fn client_config(&self) -> anyhow::Result<ClientTlsConfig> {
        crate::ship::identity_files::finish_interrupted_pair(&self.key, &self.cert)?;
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?))
            .domain_name(self.host.clone()))
    }
}

/// The host part of an https:// endpoint (brackets of an IPv6 literal
/// removed): the name the server's certificate must carry.
pub fn host_of(endpoint: &str) -> String {
    endpoint
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string()
}
