//! Renews the agent's certificate before it expires: a new key made here,
//! its request signed by the control plane (`AgentService.Renew`, over a
//! connection with the current certificate), both files replaced. The
//! control plane retires the old certificate when it renews, which ends
//! the stream opened with it; the shipper reads the files for every
//! session, so it reconnects with the new certificate.

use std::time::Duration;

use anyhow::{bail, Context};
use tonic::transport::Endpoint;
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;

use crate::ship::control_plane_tls::AgentTls;
use crate::ship::identity_files::{
    finish_interrupted_pair, replace_pair, sync_dir, write_new_file,
};

/// When and how often to renew.
#[derive(Debug, Clone, Copy)]
pub struct RenewalPolicy {
    /// Renew when the certificate has at most this long left (None: a
    /// third of its lifetime).
    pub within: Option<Duration>,
    /// How often the expiry is looked at.
    pub check_every: Duration,
}

/// Runs until the agent stops; failures are logged and retried at the
/// next check, never fatal.
pub async fn run(tls: AgentTls, endpoints: Vec<String>, policy: RenewalPolicy) {
    /// After a failure, the next try comes this soon at the latest: once
    /// the control plane has renewed, the old certificate opens no stream,
    /// so a lost reply must be asked for again quickly.
    const RETRY_WITHIN: Duration = Duration::from_secs(30);
    loop {
        let mut wait = policy.check_every;
        match due(&tls, policy) {
            Ok(false) => {}
            Ok(true) => match renew_through_any(&tls, &endpoints).await {
                Ok(until) => {
                    tracing::info!(cert = %tls.cert.display(), valid_until_unix = until, "certificate renewed")
                }
                Err(e) => {
                    wait = wait.min(RETRY_WITHIN);
                    tracing::warn!(error = %format!("{e:#}"), retry_in_secs = wait.as_secs(), "renewing the certificate failed; will retry")
                }
            },
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "reading the certificate's expiry"),
        }
        tokio::time::sleep(wait).await;
    }
}

/// `.KEY.renewal` beside the key: the key a renewal under way asks for.
fn pending_key_path(key: &std::path::Path) -> std::path::PathBuf {
    let name = key
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agent.key".into());
    key.parent()
        .unwrap_or(std::path::Path::new("."))
        .join(format!(".{name}.renewal"))
}

/// The key of the renewal under way (made and synced now when there is
/// none, or when the one left is already the certificate's own key).
fn pending_renewal_key(
    key: &std::path::Path,
    current: &vigil_pki::CertificateInfo,
) -> anyhow::Result<String> {
    let path = pending_key_path(key);
    if let Ok(pem) = std::fs::read_to_string(&path) {
        match vigil_pki::public_key_info_of(&pem) {
            Ok(public) if public != current.public_key_der => return Ok(pem),
            // Already in place (a crash after the pair was replaced), or
            // unreadable: a new one.
            _ => {}
        }
    }
    let (_, key_pem) = vigil_pki::certificate_request()?;
    write_new_file(&path, &key_pem, 0o600)?;
    sync_dir(&path)?;
    Ok(key_pem)
}

fn due(tls: &AgentTls, policy: RenewalPolicy) -> anyhow::Result<bool> {
    // A renewal under way (its key made, its reply perhaps lost) is
    // finished first, due or not.
    if pending_key_path(&tls.key).exists() {
        return Ok(true);
    }
    let pem = std::fs::read_to_string(&tls.cert)
        .with_context(|| format!("reading {}", tls.cert.display()))?;
    let info = vigil_pki::CertificateInfo::from_pem(&pem)?;
    let lifetime = (info.not_after_unix - info.not_before_unix).max(0);
    let within = policy.within.map_or(lifetime / 3, |d| d.as_secs() as i64);
    let now = crate::clock::unix_now_nanos() / 1_000_000_000;
    Ok(info.expires_within(now, within))
}

/// Renews through the first node that answers.
async fn renew_through_any(tls: &AgentTls, endpoints: &[String]) -> anyhow::Result<i64> {
    let mut last = anyhow::anyhow!("no control-plane endpoint configured");
    for endpoint in endpoints {
        match renew(tls, endpoint).await {
            Ok(until) => return Ok(until),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Renews; the new certificate's expiry (unix seconds).
async fn renew(tls: &AgentTls, endpoint: &str) -> anyhow::Result<i64> {
    finish_interrupted_pair(&tls.key, &tls.cert)?;
    let current = vigil_pki::CertificateInfo::from_pem(&std::fs::read_to_string(&tls.cert)?)?;
    // The new key is on disk before the control plane hears of it: once it
    // has renewed, the old certificate only serves to ask again, and a
    // reply lost to a crash or a reset connection is asked for again with
    // this same key (the control plane then returns what it issued).
    let key_pem = pending_renewal_key(&tls.key, &current)?;
    let csr_pem = vigil_pki::certificate_request_for(&key_pem)?;
    let channel = Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .tls_config(tls.client_config(endpoint)?)?
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    let answer = AgentServiceClient::new(channel)
        .renew(pb::RenewRequest { csr_pem })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let renewed = vigil_pki::CertificateInfo::from_pem(&answer.certificate_pem)
        .context("the control plane sent a certificate that cannot be read")?;
    if renewed.identity.as_ref().ok() != current.identity.as_ref().ok() || renewed.identity.is_err()
    {
        bail!(
            "the control plane sent a certificate for {:?}, not {:?}",
            renewed.identity,
            current.identity
        );
    }
    if vigil_pki::public_key_info_of(&key_pem)? != renewed.public_key_der {
        bail!("the control plane sent a certificate for another key than the one requested");
    }
    // The control plane has retired the old certificate: from here the
    // new pair must land, even across a crash (finished at the next
    // session or renewal).
    replace_pair(&tls.key, &key_pem, &tls.cert, &answer.certificate_pem)?;
    let _ = std::fs::remove_file(pending_key_path(&tls.key));
    Ok(renewed.not_after_unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A renewal whose reply was lost asks again with the key it made
    /// first (kept on disk, 0600); once that key is the certificate's own,
    /// the next renewal makes a new one.
    #[test]
    fn a_renewal_asked_again_uses_the_key_it_made_first() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("agent.key");
        let ca =
            vigil_pki::CertificateAuthority::init("t", time::OffsetDateTime::now_utc(), 1).unwrap();
        let issued = ca
            .issue(&vigil_pki::LeafRequest::new(
                vigil_pki::Identity::agent("h").unwrap(),
                time::OffsetDateTime::now_utc(),
                1,
            ))
            .unwrap();
        let current = vigil_pki::CertificateInfo::from_pem(&issued.cert_pem).unwrap();
        let first = pending_renewal_key(&key, &current).unwrap();
        let pending = dir.path().join(".agent.key.renewal");
        let mode = std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(pending_renewal_key(&key, &current).unwrap(), first);
        // The pending key became the certificate's (a crash after the pair
        // was replaced, before the file was removed): a new one.
        std::fs::write(&pending, &issued.key_pem).unwrap();
        let next = pending_renewal_key(&key, &current).unwrap();
        assert_ne!(next, issued.key_pem);
    }
}
