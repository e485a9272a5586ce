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
}

impl AgentTls {
    /// None for an http:// endpoint with no TLS files; all three files
    /// with https://; anything else is a configuration error said at
    /// start, not a silent downgrade.
    pub fn from_config(config: &AgentConfig) -> anyhow::Result<Option<AgentTls>> {
        let endpoints = config.control_planes();
        let https = endpoints.iter().all(|e| e.starts_with("https://"));
        if !https && endpoints.iter().any(|e| e.starts_with("https://")) {
            bail!(
                "--control-plane {:?} mixes https:// and other endpoints",
                config.control_plane
            );
        }
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
        };
        for endpoint in &endpoints {
            tls.client_config(endpoint)?;
        }
        Ok(Some(tls))
    }

    /// The client configuration for `endpoint` (whose host the control
    /// plane's certificate must name) from the files as they are now (a
    /// renewal a crash interrupted is completed first).
    pub fn client_config(&self, endpoint: &str) -> anyhow::Result<ClientTlsConfig> {
        let (key, cert) = crate::ship::identity_files::read_pair(&self.key, &self.cert)?;
        let ca =
            std::fs::read(&self.ca).with_context(|| format!("reading {}", self.ca.display()))?;
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key))
            .domain_name(vigil_proto::endpoint::host_of(endpoint)))
    }
}
