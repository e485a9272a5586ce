//! Loopback ports and gRPC channels.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};

use crate::HarnessError;

/// How long [`connect`] retries a refused connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A channel to `endpoint`, retried every 50 ms for up to 20 s (a server
/// that just printed its ready line may still be binding).
pub async fn try_connect(endpoint: &str) -> Result<Channel, HarnessError> {
    let target =
        Endpoint::from_shared(endpoint.to_string()).map_err(|source| HarnessError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        match target.connect().await {
            Ok(channel) => return Ok(channel),
            Err(source) if Instant::now() >= deadline => {
                return Err(HarnessError::Connect {
                    endpoint: endpoint.to_string(),
                    source,
                })
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// [`try_connect`], panicking when it cannot.
pub async fn connect(endpoint: &str) -> Channel {
    try_connect(endpoint)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
