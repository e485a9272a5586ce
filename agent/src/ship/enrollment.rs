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
use crate::ship::identity_files::{replace_file, replace_pair};

/// The join token from `--token` or `--token-file` (`-`: standard input).
pub fn read_token(token: Option<&str>, file: Option<&Path>) -> anyhow::Result<String> {
    let text = match (token, file) {
        (Some(t), _) => t.to_string(),
        (None, Some(p)) if p == Path::new("-") => {
            std::io::read_to_string(std::io::stdin()).context("reading the token from stdin")?
        }
        (None, Some(p)) => {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(p).with_context(|| format!("{}", p.display()))?;
            if meta.mode() & 0o077 != 0 || meta.uid() != rustix::process::geteuid().as_raw() {
                bail!(
                    "{}: mode {:o}, owner uid {}: a token file must be this user's and 0600 (others could enroll with it first); or pass the token on stdin (--token-file -)",
                    p.display(),
                    meta.mode() & 0o7777,
                    meta.uid()
                );
            }
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
        }
        (None, None) => bail!("give --token-file FILE (or - for stdin) or --token"),
    };
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("the token must be one word (what `vigilctl agent token` printed)");
    }
    Ok(token.to_string())
}

/// Refuses an out dir that is a symlink, not a directory, not this user's,
/// or writable by others, or one below a directory that others could
/// swap it in (not root's or this user's, or writable by others without
/// the sticky bit): anyone who could write there could replace the key,
/// the CA or `enrollment.env`, which says which control plane the root
/// agent obeys.
fn check_out_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let euid = rustix::process::geteuid().as_raw();
    let meta = std::fs::symlink_metadata(dir).with_context(|| format!("{}", dir.display()))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        bail!("{}: not a directory (a symlink is refused)", dir.display());
    }
    if meta.uid() != euid {
        bail!(
            "{}: owned by uid {}, not by this user; the key must go in a directory only this user controls",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{}: mode {:o} lets others write to it; make it 0700 or 0750 (chmod go-w)",
            dir.display(),
            meta.mode() & 0o7777
        );
    }
    let resolved = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    for ancestor in resolved.ancestors().skip(1) {
        let meta =
            std::fs::metadata(ancestor).with_context(|| format!("{}", ancestor.display()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        if (meta.uid() != 0 && meta.uid() != euid) || (meta.mode() & 0o022 != 0 && !sticky) {
            bail!(
                "{}: lies in {}, which others could use to swap it (owner uid {}, mode {:o}); choose a directory under root's own (the default /etc/vigil/tls)",
                dir.display(),
                ancestor.display(),
                meta.uid(),
                meta.mode() & 0o7777
            );
        }
    }
    Ok(())
}

/// Enrolls and writes `agent.pem`, `agent.key` and `ca.pem` to `out_dir`.
pub async fn enroll(config: &AgentConfig, token: &str, out_dir: &Path) -> anyhow::Result<()> {
    let endpoints = config.control_planes();
    if endpoints.is_empty() || !endpoints.iter().all(|e| e.starts_with("https://")) {
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
    // Before the token is spent: a directory that would be refused must
    // not cost the token.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out_dir)
        .with_context(|| format!("creating {}", out_dir.display()))?;
    check_out_dir(out_dir)?;
    let (csr_pem, key_pem) = vigil_pki::certificate_request()?;
    // The first node that can be reached (a refusal there is final: the
    // token is not offered to another).
    let mut reached = None;
    let mut unreachable = Vec::new();
    for endpoint in &endpoints {
        let connected = Endpoint::from_shared(endpoint.clone())?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&ca_pem))
                    .domain_name(vigil_proto::endpoint::host_of(endpoint)),
            )?
            .connect()
            .await;
        match connected {
            Ok(channel) => {
                reached = Some(channel);
                break;
            }
            Err(e) => unreachable.push(format!("{endpoint}: {e}")),
        }
    }
    let Some(channel) = reached else {
        bail!(
            "no control plane could be reached: {}",
            unreachable.join("; ")
        );
    };
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
    replace_pair(
        &out_dir.join("agent.key"),
        &key_pem,
        &out_dir.join("agent.pem"),
        &answer.certificate_pem,
    )?;
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
    fn an_out_dir_others_can_write_or_a_symlink_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o700)).unwrap();
        check_out_dir(&tls).unwrap();
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = check_out_dir(&tls).unwrap_err().to_string();
        assert!(e.contains("lets others write"), "{e}");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&tls, &link).unwrap();
        let e = check_out_dir(&link).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        // Below a directory others may write to (no sticky bit).
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let inner = open.join("tls");
        std::fs::create_dir(&inner).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = check_out_dir(&inner).unwrap_err().to_string();
        assert!(e.contains("others could use to swap it"), "{e}");
        // With the sticky bit (like /tmp) nobody can rename another's entry.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_out_dir(&inner).unwrap();
    }

    #[test]
    fn a_token_comes_from_a_file_trimmed_and_one_word() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "vjt1.abc.def\n").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        let e = read_token(None, Some(&f)).unwrap_err().to_string();
        assert!(e.contains("must be this user's and 0600"), "{e}");
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        assert_eq!(read_token(None, Some(&f)).unwrap(), "vjt1.abc.def");
        std::fs::write(&f, "two words").unwrap();
        assert!(read_token(None, Some(&f)).is_err());
        assert_eq!(read_token(Some(" t "), None).unwrap(), "t");
    }

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
