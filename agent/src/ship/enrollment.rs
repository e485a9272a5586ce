//! `vigil-agent enroll`: trade a one-time join token for a certificate.
//! The key is made here and never leaves the host; the control plane is
//! verified against the CA the operator gave (--tls-ca), so a token is
//! never sent to an impostor.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use anyhow::{bail, Context};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;

use crate::config::AgentConfig;
use crate::ship::identity_files::replace_file;

/// Enrolls and writes `agent.pem`, `agent.key` and `ca.pem` to `out_dir`.
pub async fn enroll(config: &AgentConfig, token: &str, out_dir: &Path) -> anyhow::Result<()> {
    if !config.control_plane.starts_with("https://") {
        bail!(
            "enrollment needs an https:// --control-plane (the token must not travel in the clear)"
        );
    }
    let Some(ca_path) = &config.tls_ca else {
        bail!("enrollment needs --tls-ca: the fleet's CA certificate, to know the control plane is the real one");
    };
    let ca_pem = std::fs::read_to_string(ca_path)
        .with_context(|| format!("reading {}", ca_path.display()))?;
    let agent_id = config.resolved_agent_id();
    let (csr_pem, key_pem) = vigil_pki::certificate_request()?;
    let host = crate::ship::control_plane_tls::host_of(&config.control_plane);
    let channel = Endpoint::from_shared(config.control_plane.clone())?
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca_pem))
                .domain_name(host),
        )?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", config.control_plane))?;
    let answer = AgentServiceClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.trim().to_string(),
            agent_id: agent_id.clone(),
            csr_pem,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let info = vigil_pki::CertificateInfo::from_pem(&answer.certificate_pem)
        .context("the control plane sent a certificate that cannot be read")?;
    match &info.identity {
        Ok(vigil_pki::Identity::Agent { id }) if *id == agent_id => {}
        other => {
            bail!("the control plane sent a certificate for {other:?}, not agent {agent_id:?}")
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)
        .with_context(|| format!("creating {}", out_dir.display()))?;
    replace_file(&out_dir.join("agent.key"), &key_pem, 0o600)?;
    replace_file(&out_dir.join("agent.pem"), &answer.certificate_pem, 0o644)?;
    replace_file(&out_dir.join("ca.pem"), &ca_pem, 0o644)?;
    // Last, so that whatever waits for it (the packaged vigil-agent.path)
    // finds the certificate, key and CA already in place.
    let env = enrollment_env(&config.control_plane, out_dir)?;
    replace_file(&out_dir.join(ENROLLMENT_ENV), &env, 0o600)?;
    println!(
        "enrolled as agent {agent_id}: run with --control-plane {} --tls-ca {} --tls-cert {} --tls-key {} (or the settings in {})",
        config.control_plane,
        out_dir.join("ca.pem").display(),
        out_dir.join("agent.pem").display(),
        out_dir.join("agent.key").display(),
        out_dir.join(ENROLLMENT_ENV).display()
    );
    Ok(())
}

/// The file `enroll` writes last into its out dir: the control plane and
/// the TLS files as environment settings, in the syntax of a systemd
/// `EnvironmentFile` (the packaged unit reads it).
pub const ENROLLMENT_ENV: &str = "enrollment.env";

/// `VAR="value"` lines for the control plane and the TLS files; a value
/// with a line break or a control character is refused rather than
/// written into a file a service manager parses.
fn enrollment_env(control_plane: &str, out_dir: &Path) -> anyhow::Result<String> {
    let mut env =
        String::from("# Written by `vigil-agent enroll`; /etc/vigil/agent.env overrides it.\n");
    let dir = out_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", out_dir.display()))?;
    for (name, value) in [
        ("VIGIL_CONTROL_PLANE", control_plane.to_string()),
        ("VIGIL_TLS_CA", dir.join("ca.pem").display().to_string()),
        (
            "VIGIL_TLS_CERT",
            dir.join("agent.pem").display().to_string(),
        ),
        ("VIGIL_TLS_KEY", dir.join("agent.key").display().to_string()),
    ] {
        if value.chars().any(char::is_control) {
            bail!("{name} {value:?} holds a control character; refusing to write it to {ENROLLMENT_ENV}");
        }
        let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
        env.push_str(&format!("{name}=\"{quoted}\"\n"));
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enrollment_env_quotes_values_and_refuses_line_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let env = enrollment_env("https://cp1:7700", dir.path()).unwrap();
        let root = dir.path().canonicalize().unwrap();
        assert!(env.contains("VIGIL_CONTROL_PLANE=\"https://cp1:7700\"\n"));
        assert!(env.contains(&format!(
            "VIGIL_TLS_KEY=\"{}\"\n",
            root.join("agent.key").display()
        )));
        let odd = enrollment_env("https://cp1:7700/\"x\\", dir.path()).unwrap();
        assert!(odd.contains("VIGIL_CONTROL_PLANE=\"https://cp1:7700/\\\"x\\\\\"\n"));
        let err = enrollment_env("https://cp1:7700\nVIGIL_TLS_KEY=/tmp/k", dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("control character"), "{err}");
    }
}
