//! The SOC dashboard from outside: a control plane serving it, users made
//! through the admin API, and a raw HTTP/1.1 client (one request per
//! connection, the path sent exactly as given: no normalisation, so tests
//! can send what a browser would not).

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_proto::admin::v1 as admin_pb;

use crate::{free_port, ControlPlane};

/// A control plane with its dashboard on a loopback port.
pub struct DashboardPlane {
    pub cp: ControlPlane,
    pub port: u16,
}

impl DashboardPlane {
    /// Starts a control plane (leading) with `--dashboard-listen` and `extra` flags.
    pub async fn start(data_dir: &Path, extra: &[&str]) -> DashboardPlane {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut flags = vec!["--dashboard-listen", &listen];
        flags.extend_from_slice(extra);
        let cp = ControlPlane::start_with(data_dir, free_port(), &flags);
        cp.wait_leader().await;
        DashboardPlane { cp, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Adds (or changes) a user through the admin API.
    pub async fn add_user(&self, name: &str, role: &str, password: &str) {
        self.cp
            .admin()
            .await
            .put_user(admin_pb::PutUserRequest {
                name: name.into(),
                role: role.into(),
                password: Some(password.into()),
                disabled: None,
                create_only: false,
            })
            .await
            .unwrap_or_else(|e| panic!("adding user {name}: {e}"));
    }

    /// One request; panics only when the connection cannot be made.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpAnswer {
        raw_request(self.port, method, path, headers, body).await
    }

    /// Logs in: (the `vigil_session=...` cookie pair, the CSRF token).
    pub async fn login(&self, name: &str, password: &str) -> (String, String) {
        let body = serde_json_body(name, password);
        let a = self
            .request(
                "POST",
                "/api/login",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await;
        assert_eq!(a.status, 200, "login as {name}: {}", a.body);
        let cookie = a
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap_or_default()
            .to_string();
        let csrf = a
            .body
            .split("\"csrf\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default()
            .to_string();
        (cookie, csrf)
    }
}

/// `{"name":..,"password":..}` (names and passwords in tests are plain).
pub fn serde_json_body(name: &str, password: &str) -> String {
    format!("{{\"name\":\"{name}\",\"password\":\"{password}\"}}")
}

#[derive(Debug)]
pub struct HttpAnswer {
    /// 0 when the server closed without an answer.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to 127.0.0.1:`port` and reads the answer's head and
/// up to 1 MiB of body (for 5 s at most: a live feed never ends).
pub async fn raw_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    raw_exchange(port, method, path, headers, body).await.0
}

/// [`raw_request`], keeping the connection (a live feed stays open while
/// it is held).
pub async fn raw_exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (HttpAnswer, TcpStream) {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting to the dashboard");
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    // The server may answer (413) and close before taking the whole body.
    let _ = stream.write_all(&out).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > (1 << 20) {
                    break;
                }
                // An event stream: the head and a first event are enough.
                if is_event_stream(&buf) {
                    break;
                }
            }
        }
    }
    (parse(&buf), stream)
}

fn is_event_stream(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    text.contains("\r\n\r\n")
        && text
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream")
}

fn parse(buf: &[u8]) -> HttpAnswer {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_string(),
    }
}
