//! A sidecar's health as a client sees it: KServe v2 `ServerLive` and
//! `ModelReady(name, version)` over gRPC, on the sidecar's unix socket or
//! TCP port.

use std::path::PathBuf;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};
use vigil_domain::ModelListen;
use vigil_proto::kserve::grpc_inference_service_client::GrpcInferenceServiceClient;
use vigil_proto::kserve::{ModelReadyRequest, ServerLiveRequest};

/// Where a sidecar serves, as a client dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SidecarAddress {
    Unix(PathBuf),
    /// `host:port`, a wildcard host dialled on loopback.
    Tcp(String),
}

impl SidecarAddress {
    pub fn of(listen: &ModelListen) -> SidecarAddress {
        match listen {
            ModelListen::Unix { path } => SidecarAddress::Unix(PathBuf::from(path)),
            ModelListen::Tcp { host, port } => {
                let host = match host.as_str() {
                    "0.0.0.0" | "" => "127.0.0.1",
                    "[::]" => "[::1]",
                    h => h,
                };
                SidecarAddress::Tcp(format!("{host}:{port}"))
            }
        }
    }

    /// A channel to it (connected on first use).
    fn channel(&self, timeout: Duration) -> Result<Channel, String> {
        match self {
            SidecarAddress::Tcp(addr) => Ok(Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| format!("{addr}: {e}"))?
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect_lazy()),
            SidecarAddress::Unix(path) => {
                let path = path.clone();
                // The URI is not used: the connector dials the socket.
                Ok(Endpoint::from_static("http://localhost")
                    .connect_timeout(timeout)
                    .timeout(timeout)
                    .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = tokio::net::UnixStream::connect(&path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    })))
            }
        }
    }
}

impl std::fmt::Display for SidecarAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SidecarAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            SidecarAddress::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// ServerLive, then ModelReady for `name` at `version`: Ok when both say
/// yes within `timeout`, else why not.
pub async fn check(
    address: &SidecarAddress,
    name: &str,
    version: u64,
    timeout: Duration,
) -> Result<(), String> {
    let channel = address.channel(timeout)?;
    let mut client = GrpcInferenceServiceClient::new(channel);
    let asked = async {
        let live = client
            .server_live(ServerLiveRequest {})
            .await
            .map_err(|s| format!("ServerLive on {address}: {}", status_text(&s)))?
            .into_inner();
        if !live.live {
            return Err(format!("ServerLive on {address}: not live"));
        }
        let ready = client
            .model_ready(ModelReadyRequest {
                name: name.to_string(),
                version: version.to_string(),
            })
            .await
            .map_err(|s| {
                format!(
                    "ModelReady({name}, {version}) on {address}: {}",
                    status_text(&s)
                )
            })?
            .into_inner();
        if !ready.ready {
            return Err(format!(
                "ModelReady({name}, {version}) on {address}: not ready"
            ));
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, asked).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "{address}: no answer to ServerLive/ModelReady within {} ms",
            timeout.as_millis()
        )),
    }
}

fn status_text(s: &tonic::Status) -> String {
    let message = vigil_domain::cut_text(s.message(), 300);
    if message.is_empty() {
        format!("{:?}", s.code())
    } else {
        format!("{:?}: {message}", s.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_hosts_are_dialled_on_loopback() {
        let tcp = |h: &str| ModelListen::Tcp {
            host: h.into(),
            port: 8001,
        };
        assert_eq!(
            SidecarAddress::of(&tcp("0.0.0.0")),
            SidecarAddress::Tcp("127.0.0.1:8001".into())
        );
        assert_eq!(
            SidecarAddress::of(&tcp("[::]")),
            SidecarAddress::Tcp("[::1]:8001".into())
        );
        assert_eq!(
            SidecarAddress::of(&tcp("10.0.0.2")),
            SidecarAddress::Tcp("10.0.0.2:8001".into())
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_a_clear_failure() {
        let dir = tempfile::tempdir().unwrap();
        let address = SidecarAddress::Unix(dir.path().join("none.sock"));
        let e = check(&address, "m", 1, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(e.contains("ServerLive on unix:"), "{e}");
    }
}
