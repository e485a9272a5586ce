//! Asks a new listener whether it serves an OpenAI-style API: `GET
//! /v1/models` answered with 200 and an OpenAI list object. A plain web
//! server on 8080 is not AI serving; vLLM, llama.cpp's server or
//! text-generation-inference on the same port are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_RESPONSE: usize = 64 * 1024;

/// Where to reach a listener bound to `local` from this host.
fn reachable(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// Whether the listener at `local` answers OpenAI-style routes. Any failure
/// (refused, timeout, not HTTP) is "no".
pub async fn serves_openai_routes(local: SocketAddr, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, ask(reachable(local)))
        .await
        .unwrap_or(false)
}

async fn ask(addr: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!("GET /v1/models HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: vigil-agent\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    while response.len() < MAX_RESPONSE {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
        }
    }
    looks_like_openai_models(&response)
}

/// `HTTP/1.x 200` and a body with the OpenAI list shape (`"object"` and `"data"`).
pub fn looks_like_openai_models(response: &[u8]) -> bool {
    let text = String::from_utf8_lossy(response);
    let Some(status) = text.lines().next() else {
        return false;
    };
    let ok = status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    ok && body.contains("\"data\"") && body.contains("\"object\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_an_openai_model_list_and_nothing_else() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"object\":\"list\",\"data\":[{\"id\":\"m\"}]}";
        assert!(looks_like_openai_models(ok));
        assert!(!looks_like_openai_models(
            b"HTTP/1.1 404 Not Found\r\n\r\n{\"object\":\"list\",\"data\":[]}"
        ));
        assert!(!looks_like_openai_models(
            b"HTTP/1.0 200 OK\r\n\r\n<html>directory listing</html>"
        ));
        assert!(!looks_like_openai_models(b""));
        assert!(!looks_like_openai_models(b"SSH-2.0-OpenSSH_9.2\r\n"));
    }

    #[tokio::test]
    async fn probes_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = "{\"object\":\"list\",\"data\":[]}";
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).await.unwrap();
        });
        assert!(serves_openai_routes(addr, Duration::from_secs(2)).await);
        let closed = SocketAddr::from(([127, 0, 0, 1], 1));
        assert!(!serves_openai_routes(closed, Duration::from_secs(2)).await);
    }
}
