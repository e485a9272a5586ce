//! Asks a new listener, on any port, which model-serving API it speaks
//! (`vigil_detection::ServingApi`): `GET /v1/models` (an OpenAI list
//! object, or 401/403 with an OpenAI error: vLLM, llama.cpp's server,
//! text-generation-inference, LocalAI, LM Studio), then `GET /api/tags`
//! (Ollama), then `GET /v2` (KServe v2 metadata: Triton, KServe,
//! MLServer), each on a connection of its own, all within one timeout. A
//! plain web server, or one that answers every path with 200, is none.
//!
//! `httparse` reads the response head and chunk sizes; what the probe adds
//! is the framing (Content-Length, chunked, or until close) and the bounds:
//! a whole-probe timeout, at most `MAX_HEAD` bytes of head and `MAX_BODY`
//! bytes of body, so a slow or endless peer costs one timeout, never memory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use vigil_detection::ServingApi;

/// Most bytes of status line and headers read before giving up.
const MAX_HEAD: usize = 16 * 1024;
/// Most bytes of (de-chunked) body: a model list is a few KiB.
const MAX_BODY: usize = 64 * 1024;
/// Most bytes of chunked body on the wire (sizes and line ends included).
const MAX_CHUNKED_WIRE: usize = 2 * MAX_BODY;
const MAX_HEADERS: usize = 64;

/// Why a listener is not taken for an OpenAI-style server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("could not connect or send: {0}")]
    Io(String),
    #[error("no complete answer within the timeout")]
    Timeout,
    #[error("the answer is not HTTP/1.x: {0}")]
    NotHttp(String),
    #[error("the response head exceeds {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("the response body exceeds {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("the connection closed before the response was complete")]
    Truncated,
    #[error("status {0}, not 200")]
    Status(u16),
    #[error("the body is not an OpenAI list object")]
    NotOpenAiList,
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
    /// Bytes of status line and headers, the blank line included.
    len: usize,
}

/// Where to reach a listener bound to `local` from this host.
fn reachable(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// The model-serving API the listener at `local` speaks, if any. Any
/// failure (refused, timeout, not HTTP, too large) is `None`.
pub async fn serving_api(local: SocketAddr, timeout: Duration) -> Option<ServingApi> {
    identify(local, timeout).await.ok()
}

/// Asks each API's route in turn, within `timeout` in all; the error says
/// why the first one (OpenAI's) was not answered.
pub async fn identify(local: SocketAddr, timeout: Duration) -> Result<ServingApi, ProbeError> {
    let addr = reachable(local);
    tokio::time::timeout(timeout, async {
        let openai = ask_openai(addr).await;
        if matches!(openai, Ok(_) | Err(ProbeError::Io(_))) {
            // Answered, or nothing to ask.
            return openai;
        }
        for (path, api) in [
            ("/api/tags", ServingApi::Ollama),
            ("/v2", ServingApi::KServeV2),
        ] {
            if let Ok((status, body)) = get(addr, path).await {
                if api.answers(status, &body) {
                    return Ok(api);
                }
            }
        }
        openai
    })
    .await
    .unwrap_or(Err(ProbeError::Timeout))
}

/// The OpenAI routes alone, saying why a listener does not serve them.
pub async fn probe(local: SocketAddr, timeout: Duration) -> Result<ServingApi, ProbeError> {
    tokio::time::timeout(timeout, ask_openai(reachable(local)))
        .await
        .unwrap_or(Err(ProbeError::Timeout))
}

async fn ask_openai(addr: SocketAddr) -> Result<ServingApi, ProbeError> {
    let (status, body) = get(addr, "/v1/models").await?;
    for api in [ServingApi::OpenAi, ServingApi::OpenAiKeyRequired] {
        if api.answers(status, &body) {
            return Ok(api);
        }
    }
    Err(match status {
        200 => ProbeError::NotOpenAiList,
        other => ProbeError::Status(other),
    })
}

/// `GET path` on a connection of its own: the status and the whole body.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), ProbeError> {
    let io = |e: std::io::Error| ProbeError::Io(e.to_string());
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: vigil-agent\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    read_response(&mut stream).await
}

/// Reads one response from `stream`: its status and body.
async fn read_response<R: AsyncRead + Unpin>(stream: &mut R) -> Result<(u16, Vec<u8>), ProbeError> {
    let mut buf = Vec::with_capacity(8 * 1024);
    let head = loop {
        if let Some(head) = parse_head(&buf)? {
            break head;
        }
        if buf.len() >= MAX_HEAD {
            return Err(ProbeError::HeadTooLarge);
        }
        if read_more(stream, &mut buf, MAX_HEAD).await? == 0 {
            return Err(ProbeError::Truncated);
        }
    };
    let mut wire = buf.split_off(head.len);
    let limit = wire_limit(head.framing)?;
    loop {
        if let Some(body) = body(head.framing, &wire, false)? {
            return Ok((head.status, body));
        }
        // One byte past the limit tells "too large" from "exactly full".
        if read_more(stream, &mut wire, limit + 1).await? == 0 {
            let body = body(head.framing, &wire, true)?.ok_or(ProbeError::Truncated)?;
            return Ok((head.status, body));
        }
    }
}

/// Most body bytes on the wire for `framing`.
fn wire_limit(framing: Framing) -> Result<usize, ProbeError> {
    match framing {
        Framing::Length(n) if n > MAX_BODY => Err(ProbeError::BodyTooLarge),
        Framing::Length(n) => Ok(n),
        Framing::UntilClose => Ok(MAX_BODY),
        Framing::Chunked => Ok(MAX_CHUNKED_WIRE),
    }
}

/// Appends what the peer sends next to `buf`, never past `limit` bytes in
/// all; 0 at end of stream. A full buffer is `BodyTooLarge`.
async fn read_more<R: AsyncRead + Unpin>(
    stream: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Result<usize, ProbeError> {
    let room = limit.saturating_sub(buf.len());
    if room == 0 {
        return Err(ProbeError::BodyTooLarge);
    }
    let mut chunk = [0u8; 8192];
    let want = room.min(chunk.len());
    let n = stream
        .read(&mut chunk[..want])
        .await
        .map_err(|e| ProbeError::Io(e.to_string()))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The response head, once `buf` holds all of it.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ProbeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ProbeError::NotHttp(e.to_string())),
    };
    let status = response
        .code
        .ok_or_else(|| ProbeError::NotHttp("no status code".to_string()))?;
    let header = |name: &'static str| header_values(response.headers, name);
    // Transfer-Encoding wins over Content-Length (RFC 9112, 6.3).
    let chunked = header("transfer-encoding")
        .last()
        .is_some_and(|te| te.rsplit(',').next().map(str::trim) == Some("chunked"));
    let framing = if chunked {
        Framing::Chunked
    } else {
        let mut lengths = header("content-length");
        match (lengths.next(), lengths.next()) {
            (None, _) => Framing::UntilClose,
            (Some(n), None) => Framing::Length(
                n.parse()
                    .map_err(|_| ProbeError::NotHttp(format!("Content-Length {n:?}")))?,
            ),
            (Some(_), Some(_)) => {
                return Err(ProbeError::NotHttp("several Content-Length".to_string()))
            }
        }
    };
    Ok(Some(Head {
        status,
        framing,
        len,
    }))
}

/// The values of the headers called `name`, trimmed and lower-cased.
fn header_values<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'a str,
) -> impl Iterator<Item = String> + 'a {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
}

/// The body once `wire` holds all of it (`eof`: nothing more will come).
fn body(framing: Framing, wire: &[u8], eof: bool) -> Result<Option<Vec<u8>>, ProbeError> {
    match framing {
        Framing::Length(n) if n > MAX_BODY => Err(ProbeError::BodyTooLarge),
        Framing::Length(n) => Ok((wire.len() >= n).then(|| wire[..n].to_vec())),
        Framing::UntilClose if wire.len() > MAX_BODY => Err(ProbeError::BodyTooLarge),
        Framing::UntilClose => Ok(eof.then(|| wire.to_vec())),
        Framing::Chunked => dechunk(wire),
    }
}

/// The body of a chunked message, once `wire` holds the last chunk.
fn dechunk(wire: &[u8]) -> Result<Option<Vec<u8>>, ProbeError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&wire[at..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ProbeError::NotHttp("bad chunk size".to_string())),
        };
        at += size_len;
        if size == 0 {
            // Trailers are not needed: the body is complete.
            return Ok(Some(body));
        }
        let size = usize::try_from(size).map_err(|_| ProbeError::BodyTooLarge)?;
        if body.len().saturating_add(size) > MAX_BODY {
            return Err(ProbeError::BodyTooLarge);
        }
        let Some(end) = at.checked_add(size).filter(|end| end + 2 <= wire.len()) else {
            return Ok(None);
        };
        if &wire[end..end + 2] != b"\r\n" {
            return Err(ProbeError::NotHttp("chunk without CRLF".to_string()));
        }
        body.extend_from_slice(&wire[at..end]);
        at = end + 2;
    }
}

/// `HTTP/1.x 200` and a body with the OpenAI list shape (`"object"` and
/// `"data"`), for a whole response already read.
pub fn looks_like_openai_models(response: &[u8]) -> bool {
    let Ok(Some(head)) = parse_head(response) else {
        return false;
    };
    head.status == 200
        && body(head.framing, &response[head.len..], true)
            .ok()
            .flatten()
            .is_some_and(|b| ServingApi::OpenAi.answers(200, &b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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
        assert_eq!(
            serving_api(addr, Duration::from_secs(2)).await,
            Some(ServingApi::OpenAi)
        );
        let closed = SocketAddr::from(([127, 0, 0, 1], 1));
        assert_eq!(serving_api(closed, Duration::from_secs(2)).await, None);
    }

    const MODELS: &str = r#"{"object":"list","data":[{"id":"meta-llama/Llama-3-8B","object":"model","owned_by":"vllm"}]}"#;

    /// A request's head, read up to its blank line (`None`: the peer went).
    async fn request_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        Some(request)
    }

    /// A listener that reads the request, then writes `parts` one after the
    /// other, `pause` apart, and closes (or holds the connection for `hold`).
    async fn server(parts: Vec<Vec<u8>>, pause: Duration, hold: Duration) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let Some(request) = request_head(&mut s).await else {
                return;
            };
            assert!(request.starts_with(b"GET /v1/models HTTP/1.1\r\n"));
            for part in parts {
                if s.write_all(&part).await.is_err() {
                    return;
                }
                tokio::time::sleep(pause).await;
            }
            tokio::time::sleep(hold).await;
        });
        addr
    }

    async fn answer(parts: Vec<Vec<u8>>) -> Result<ServingApi, ProbeError> {
        let addr = server(parts, Duration::ZERO, Duration::ZERO).await;
        probe(addr, Duration::from_secs(5)).await
    }

    fn bytes(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[tokio::test]
    async fn openai_servers_answer_with_length_chunked_or_until_close() {
        let length = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{MODELS}",
            MODELS.len()
        );
        assert_eq!(answer(vec![bytes(&length)]).await, Ok(ServingApi::OpenAi));
        // The head and body split across writes, as a real server may send them.
        let (head, body) = length.split_at(20);
        let addr = server(
            vec![bytes(head), bytes(body)],
            Duration::from_millis(30),
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            probe(addr, Duration::from_secs(5)).await,
            Ok(ServingApi::OpenAi)
        );

        let (a, b) = MODELS.split_at(10);
        let chunked = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:X}; ext=1\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        assert_eq!(answer(vec![bytes(&chunked)]).await, Ok(ServingApi::OpenAi));
        // One byte a write: every partial state of the chunked parser.
        let addr = server(
            chunked.bytes().map(|b| vec![b]).collect(),
            Duration::from_millis(1),
            Duration::ZERO,
        )
        .await;
        assert_eq!(
            probe(addr, Duration::from_secs(10)).await,
            Ok(ServingApi::OpenAi)
        );

        let until_close = format!("HTTP/1.0 200 OK\r\nServer: llama.cpp\r\n\r\n{MODELS}");
        assert_eq!(
            answer(vec![bytes(&until_close)]).await,
            Ok(ServingApi::OpenAi)
        );
    }

    #[tokio::test]
    async fn plain_http_servers_are_not_openai() {
        let page = "<html><body>\"object\" and \"data\"</body></html>";
        let html = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
            page.len()
        );
        assert_eq!(
            answer(vec![bytes(&html)]).await,
            Err(ProbeError::NotOpenAiList)
        );
        let json = r#"{"status":"ok"}"#;
        let other_json = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{json}",
            json.len()
        );
        assert_eq!(
            answer(vec![bytes(&other_json)]).await,
            Err(ProbeError::NotOpenAiList)
        );
        let not_found = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{MODELS}",
            MODELS.len()
        );
        assert_eq!(
            answer(vec![bytes(&not_found)]).await,
            Err(ProbeError::Status(404))
        );
    }

    #[tokio::test]
    async fn garbage_and_cut_answers_are_not_openai() {
        assert!(matches!(
            answer(vec![bytes("SSH-2.0-OpenSSH_9.2\r\n")]).await,
            Err(ProbeError::NotHttp(_))
        ));
        assert!(matches!(
            answer(vec![vec![0xff, 0x00, 0x13, 0x37, b'\r', b'\n']]).await,
            Err(ProbeError::NotHttp(_))
        ));
        assert!(matches!(
            answer(vec![bytes(
                "HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n"
            )])
            .await,
            Err(ProbeError::NotHttp(_))
        ));
        assert!(matches!(
            answer(vec![bytes(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            )])
            .await,
            Err(ProbeError::NotHttp(_))
        ));
        // Closed mid-head, and mid-body.
        assert_eq!(
            answer(vec![bytes("HTTP/1.1 200 OK\r\nContent-")]).await,
            Err(ProbeError::Truncated)
        );
        assert_eq!(
            answer(vec![bytes(
                "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"object\""
            )])
            .await,
            Err(ProbeError::Truncated)
        );
        // Nothing at all.
        assert_eq!(answer(vec![]).await, Err(ProbeError::Truncated));
    }

    #[tokio::test]
    async fn a_slowloris_costs_one_timeout_and_no_more() {
        // A header line every 100 ms, never the blank line that ends the head.
        let mut parts = vec![bytes("HTTP/1.1 200 OK\r\n")];
        parts.extend((0..200).map(|i| bytes(&format!("X-Slow-{i}: y\r\n"))));
        let addr = server(parts, Duration::from_millis(100), Duration::from_secs(30)).await;
        let started = Instant::now();
        assert_eq!(
            probe(addr, Duration::from_millis(500)).await,
            Err(ProbeError::Timeout)
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        // A server that accepts and says nothing.
        let addr = server(vec![], Duration::ZERO, Duration::from_secs(30)).await;
        let started = Instant::now();
        assert_eq!(serving_api(addr, Duration::from_millis(300)).await, None);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn oversized_answers_are_refused_without_reading_them_whole() {
        // Declared too large: refused from the head alone.
        let declared = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        assert_eq!(
            answer(vec![bytes(&declared)]).await,
            Err(ProbeError::BodyTooLarge)
        );
        // Undeclared: a megabyte until close, starting like a model list.
        let mut endless = bytes("HTTP/1.1 200 OK\r\n\r\n{\"object\":\"list\",\"data\":[");
        endless.extend(std::iter::repeat_n(b' ', 1024 * 1024));
        assert_eq!(answer(vec![endless]).await, Err(ProbeError::BodyTooLarge));
        // Chunked: many chunks that add up past the bound.
        let mut chunked = bytes("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        let chunk = format!("1000\r\n{}\r\n", " ".repeat(0x1000));
        for _ in 0..40 {
            chunked.extend_from_slice(chunk.as_bytes());
        }
        assert_eq!(answer(vec![chunked]).await, Err(ProbeError::BodyTooLarge));
        // A head that never ends within the bound.
        let mut head = bytes("HTTP/1.1 200 OK\r\n");
        head.extend(bytes(&format!("X-Big: {}\r\n", "a".repeat(MAX_HEAD))));
        assert_eq!(answer(vec![head]).await, Err(ProbeError::HeadTooLarge));
        // Too many headers is not HTTP the probe reads.
        let mut many = bytes("HTTP/1.1 200 OK\r\n");
        for i in 0..=MAX_HEADERS {
            many.extend(bytes(&format!("X-{i}: v\r\n")));
        }
        many.extend(bytes("\r\n"));
        assert!(matches!(
            answer(vec![many]).await,
            Err(ProbeError::NotHttp(_))
        ));
    }

    #[test]
    fn a_body_of_exactly_the_bound_is_read() {
        let pad = MAX_BODY - MODELS.len();
        let body = format!("{MODELS}{}", " ".repeat(pad));
        assert_eq!(body.len(), MAX_BODY);
        let until_close = format!("HTTP/1.0 200 OK\r\n\r\n{body}");
        assert!(looks_like_openai_models(until_close.as_bytes()));
        let length = format!("HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY}\r\n\r\n{body}");
        assert!(looks_like_openai_models(length.as_bytes()));
        let over = format!("HTTP/1.0 200 OK\r\n\r\n{body} ");
        assert!(!looks_like_openai_models(over.as_bytes()));
    }

    /// A server that answers each connection by its request's path:
    /// `routes` (path, status, body), else 404.
    async fn router(routes: Vec<(&'static str, u16, &'static str)>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let routes = routes.clone();
                tokio::spawn(async move {
                    let Some(request) = request_head(&mut s).await else {
                        return;
                    };
                    let line = String::from_utf8_lossy(&request);
                    let path = line.split(' ').nth(1).unwrap_or("");
                    let (status, body) = routes
                        .iter()
                        .find(|(p, _, _)| *p == path || *p == "*")
                        .map_or((404, "not found"), |(_, st, b)| (*st, *b));
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn each_serving_api_is_recognised_on_any_port() {
        let t = Duration::from_secs(5);
        let key =
            r#"{"error":{"message":"Invalid API Key","type":"authentication_error","code":401}}"#;
        let addr = router(vec![("/v1/models", 401, key)]).await;
        assert_eq!(identify(addr, t).await, Ok(ServingApi::OpenAiKeyRequired));
        let tags = r#"{"models":[{"name":"llama3:8b","model":"llama3:8b"}]}"#;
        let addr = router(vec![("/api/tags", 200, tags)]).await;
        assert_eq!(identify(addr, t).await, Ok(ServingApi::Ollama));
        let meta = r#"{"name":"triton","version":"2.41.0","extensions":["classification"]}"#;
        let addr = router(vec![("/v2", 200, meta)]).await;
        assert_eq!(identify(addr, t).await, Ok(ServingApi::KServeV2));
        let addr = router(vec![("/v1/models", 200, MODELS)]).await;
        assert_eq!(identify(addr, t).await, Ok(ServingApi::OpenAi));
    }

    #[tokio::test]
    async fn benign_servers_are_no_serving_api() {
        let t = Duration::from_secs(5);
        // A page for every path (a single-page app, a captive portal).
        let addr = router(vec![("*", 200, "<html>OK</html>")]).await;
        assert_eq!(identify(addr, t).await, Err(ProbeError::NotOpenAiList));
        // JSON for every path, and the `{"error": "..."}` of any web API.
        let addr = router(vec![("*", 200, r#"{"status":"ok"}"#)]).await;
        assert_eq!(identify(addr, t).await, Err(ProbeError::NotOpenAiList));
        let addr = router(vec![("*", 401, r#"{"error":"Unauthorized"}"#)]).await;
        assert_eq!(identify(addr, t).await, Err(ProbeError::Status(401)));
        // Nothing but 404s.
        let addr = router(vec![]).await;
        assert_eq!(identify(addr, t).await, Err(ProbeError::Status(404)));
    }
}
