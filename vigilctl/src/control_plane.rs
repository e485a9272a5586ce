//! The connection to the control plane's AdminService, and what its
//! refusals mean as exit codes.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vigil_proto::admin::v1::admin_service_client::AdminServiceClient;

use crate::exit_code::ExitCode;

pub type AdminClient = AdminServiceClient<Channel>;

/// Where the control plane is and, for mutual TLS, who this operator is.
#[derive(Debug, Clone, clap::Args)]
pub struct ControlPlaneArgs {
    /// Control plane gRPC endpoint: https://HOST:PORT with the --tls-* files, http:// for a lab without TLS; a cluster's nodes comma-separated (the first that answers is used).
    #[arg(
        long,
        global = true,
        visible_alias = "control-plane",
        env = "VIGIL_ENDPOINT",
        default_value = "http://127.0.0.1:7700"
    )]
    pub endpoint: String,
    /// The fleet's CA certificate (PEM): the control plane must present a certificate it issued.
    #[arg(long, global = true, env = "VIGIL_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// This operator's certificate (PEM; `vigilctl ca issue --operator NAME --role ROLE`).
    #[arg(long, global = true, env = "VIGIL_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// This operator's private key (PEM).
    #[arg(long, global = true, env = "VIGIL_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

impl ControlPlaneArgs {
    /// The endpoints, in the order they are tried.
    fn endpoints(&self) -> Vec<String> {
        vigil_proto::endpoint::split_endpoints(&self.endpoint)
    }

    /// The TLS client configuration for `endpoint`: all three files, or
    /// none with http://.
    fn tls(&self, endpoint: &str) -> anyhow::Result<Option<ClientTlsConfig>> {
        let https = endpoint.starts_with("https://");
        let (ca, cert, key) = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) if !https => return Ok(None),
            (Some(ca), Some(cert), Some(key)) if https => (ca, cert, key),
            (Some(_), Some(_), Some(_)) => {
                return Err(ExitCode::Usage.error(format!(
                    "the --tls-* files are for an https:// endpoint, not {endpoint:?}"
                )))
            }
            _ => {
                return Err(ExitCode::Usage.error(
                    "mutual TLS needs an https:// endpoint and all of --tls-ca, --tls-cert and --tls-key (or VIGIL_TLS_CA, VIGIL_TLS_CERT, VIGIL_TLS_KEY)",
                ))
            }
        };
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let host = vigil_proto::endpoint::host_of(endpoint);
        Ok(Some(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(ca)?))
                .identity(Identity::from_pem(read(cert)?, read(key)?))
                .domain_name(host),
        ))
    }
}

/// Connects now, to the first endpoint that can be reached, so an
/// unreachable control plane is one clear error (naming every endpoint
/// tried).
pub async fn connect(target: &ControlPlaneArgs) -> anyhow::Result<AdminClient> {
    Ok(AdminServiceClient::new(connect_channel(target).await?))
}

/// The channel [`connect`] opens, for a service other than the admin one
/// (the SIEM export).
pub async fn connect_channel(target: &ControlPlaneArgs) -> anyhow::Result<Channel> {
    let endpoints = target.endpoints();
    if endpoints.is_empty() {
        return Err(ExitCode::Usage.error("--endpoint names no endpoint"));
    }
    let mut unreachable = Vec::new();
    for endpoint in &endpoints {
        let mut ep = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| ExitCode::Usage.error(format!("bad endpoint {endpoint:?}: {e}")))?
            .connect_timeout(Duration::from_secs(3));
        if let Some(tls) = target.tls(endpoint)? {
            ep = ep
                .tls_config(tls)
                .map_err(|e| ExitCode::Usage.error(format!("the TLS files: {e}")))?;
        }
        match ep.connect().await {
            Ok(channel) => return Ok(channel),
            Err(e) => {
                let mut why = format!("{e}");
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    why.push_str(&format!(": {s}"));
                    source = s.source();
                }
                unreachable.push(format!("{endpoint}: {why}"));
            }
        }
    }
    Err(ExitCode::Unreachable.error(format!(
        "cannot reach the control plane at {}",
        unreachable.join("; ")
    )))
}

/// Where a refusal says the leader is (`vigil-leader`: host:port), for a
/// request only the leader takes.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    (status.code() == tonic::Code::Unavailable)
        .then(|| {
            status
                .metadata()
                .get("vigil-leader")?
                .to_str()
                .ok()
                .map(str::to_string)
        })
        .flatten()
        .filter(|l| !l.is_empty())
}

/// Connects to the node at `addr` (host:port, as the cluster names it),
/// with the scheme and TLS files of `target`.
pub async fn connect_to(target: &ControlPlaneArgs, addr: &str) -> anyhow::Result<AdminClient> {
    let first = target.endpoints().into_iter().next().unwrap_or_default();
    let scheme = if first.starts_with("https://") {
        "https"
    } else {
        "http"
    };
    let mut at = target.clone();
    at.endpoint = format!("{scheme}://{addr}");
    connect(&at).await
}

/// A refused request as an error with its exit code; the message is the
/// control plane's own ("no agent with id or hostname \"x\"").
pub fn refused(status: tonic::Status) -> anyhow::Error {
    // A connection the control plane closed before answering: most often
    // a plaintext client on a mutual-TLS port (hyper says "transport
    // error" or "h2 protocol error", depending on when the close lands).
    let closed = matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Cancelled
    ) || [
        "transport error",
        "h2 protocol error",
        "connection reset",
        "connection closed",
    ]
    .iter()
    .any(|m| status.message().contains(m));
    if closed {
        return ExitCode::Unreachable.error(format!(
            "the control plane closed the connection ({}); if it requires mutual TLS, use an https:// endpoint with --tls-ca, --tls-cert and --tls-key",
            status.message()
        ));
    }
    let code = match status.code() {
        tonic::Code::NotFound => ExitCode::NotFound,
        tonic::Code::PermissionDenied => ExitCode::VerificationFailed,
        _ => ExitCode::Failure,
    };
    code.error(status.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_exit_codes_and_keep_the_message() {
        let e = refused(tonic::Status::not_found(
            "no agent with id or hostname \"x\"",
        ));
        assert_eq!(ExitCode::of(&e), ExitCode::NotFound);
        assert_eq!(e.to_string(), "no agent with id or hostname \"x\"");
        let e = refused(tonic::Status::permission_denied(
            "bundle refused: bad signature",
        ));
        assert_eq!(ExitCode::of(&e), ExitCode::VerificationFailed);
        assert_eq!(
            ExitCode::of(&refused(tonic::Status::internal("sled"))),
            ExitCode::Failure
        );
    }

    fn at(endpoint: &str) -> ControlPlaneArgs {
        ControlPlaneArgs {
            endpoint: endpoint.into(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_bad_url_is_usage() {
        let e = connect(&at("http://127.0.0.1:1")).await.unwrap_err();
        assert_eq!(ExitCode::of(&e), ExitCode::Unreachable);
        let e = connect(&at("not a url")).await.unwrap_err();
        assert_eq!(ExitCode::of(&e), ExitCode::Usage);
        // Every endpoint of a list is tried and named.
        let e = connect(&at("http://127.0.0.1:1,http://127.0.0.1:2"))
            .await
            .unwrap_err();
        assert_eq!(ExitCode::of(&e), ExitCode::Unreachable);
        assert!(
            e.to_string().contains("127.0.0.1:1") && e.to_string().contains("127.0.0.1:2"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn tls_needs_https_and_all_three_files() {
        let e = connect(&at("https://127.0.0.1:1")).await.unwrap_err();
        assert_eq!(ExitCode::of(&e), ExitCode::Usage);
        let mut half = at("https://127.0.0.1:1");
        half.tls_ca = Some("/nonexistent".into());
        assert_eq!(
            ExitCode::of(&connect(&half).await.unwrap_err()),
            ExitCode::Usage
        );
    }
}
