//! The agent's side of mutual TLS: it presents its own certificate and
//! pins the fleet's CA, so a process that takes the control plane's port
//! (while it is down, or on a host in between) can neither read findings
//! nor send the agent anything it would obey.

use anyhow::{bail, Context};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::{certified_agent_id, AgentConfig};

/// The TLS client configuration from `config`: none for an http://
/// endpoint with no TLS files; all three files with https://; anything
/// else is a configuration error said at start, not a silent downgrade.
pub fn client_tls(config: &AgentConfig) -> anyhow::Result<Option<ClientTlsConfig>> {
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
    let read = |p: &std::path::PathBuf| {
        std::fs::read(p).with_context(|| format!("reading {}", p.display()))
    };
    let host = config
        .control_plane
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    Ok(Some(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?))
            .identity(Identity::from_pem(read(cert)?, read(key)?))
            .domain_name(host),
    ))
}
