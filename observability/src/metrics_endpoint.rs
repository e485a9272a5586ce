//! The HTTP/1 endpoint a daemon's metrics are served on. `axum::serve`
//! sets no timer, so a peer that sends half a request head would hold its
//! connection (and a file descriptor) for ever: here hyper runs each
//! connection with a header-read deadline, a bounded lifetime and a small
//! head buffer, and the accept loop caps how many connections live at once
//! (past the cap a new connection is closed at once, so a flood of idle
//! connections costs the daemon nothing beyond the cap).

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What one peer may take of the endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLimits {
    /// A request head must arrive whole within this.
    pub header_read_timeout: Duration,
    /// A connection is closed after this, whatever it is doing.
    pub connection_lifetime: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// Bytes of request head buffered (hyper answers 431 past it).
    pub max_head_bytes: usize,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(5),
            connection_lifetime: Duration::from_secs(30),
            max_connections: 32,
            max_head_bytes: 16 * 1024,
        }
    }
}

/// Serves `router` on `listener` until the task is dropped. Accept errors
/// (out of file descriptors, say) are logged and waited out, never fatal.
pub async fn serve_metrics_router(
    listener: TcpListener,
    router: axum::Router,
    limits: EndpointLimits,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            // Over the cap: closed at once.
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                // hyper's floor is 8 KiB.
                .max_buf_size(limits.max_head_bytes.max(8192))
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection at the deadline closes it.
            let _ = tokio::time::timeout(limits.connection_lifetime, connection).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn start(limits: EndpointLimits) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = axum::Router::new().route("/metrics", get(|| async { "up 1\n" }));
        tokio::spawn(serve_metrics_router(listener, router, limits));
        port
    }

    /// Reads until the server closes (or `within` passes): what it sent.
    async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut out))
            .await
            .ok()
            .map(|r| {
                let _ = r;
                out
            })
    }

    async fn get_metrics(port: u16) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let reply = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .expect("a reply");
        String::from_utf8(reply).unwrap()
    }

    fn tight() -> EndpointLimits {
        EndpointLimits {
            header_read_timeout: Duration::from_millis(300),
            connection_lifetime: Duration::from_secs(2),
            max_connections: 2,
            max_head_bytes: 8192,
        }
    }

    #[tokio::test]
    async fn a_request_head_that_never_ends_is_cut_off_at_the_deadline() {
        let port = start(tight()).await;
        let mut slow = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let closed = read_until_closed(&mut slow, Duration::from_secs(10)).await;
        assert!(
            closed.is_some(),
            "the server held a half-sent head for 10 s"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(get_metrics(port).await.contains("up 1"));
    }

    #[tokio::test]
    async fn connections_past_the_cap_are_closed_and_the_endpoint_recovers() {
        let port = start(tight()).await;
        // Two idle connections take the cap...
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ...so a third is closed at once, with nothing said.
        let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let reply = read_until_closed(&mut third, Duration::from_secs(2))
            .await
            .expect("closed at once");
        assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
        // The idle ones hit the header deadline; then the endpoint answers.
        for s in &mut idle {
            assert!(read_until_closed(s, Duration::from_secs(5)).await.is_some());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(get_metrics(port).await.contains("up 1"));
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let port = start(tight()).await;
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut head = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 64 * 1024));
        head.extend_from_slice(b"\r\n\r\n");
        let _ = s.write_all(&head).await;
        let reply = read_until_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_default();
        assert!(
            reply.is_empty() || reply.starts_with(b"HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        assert!(get_metrics(port).await.contains("up 1"));
    }
}
