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
    assert!(serves_openai_routes(addr, Duration::from_secs(2)).await);
    let closed = SocketAddr::from(([127, 0, 0, 1], 1));
    assert!(!serves_openai_routes(closed, Duration::from_secs(2)).await);
}

const MODELS: &str = r#"{"object":"list","data":[{"id":"meta-llama/Llama-3-8B","object":"model","owned_by":"vllm"}]}"#;

/// A listener that reads the request, then writes `parts` one after the
/// other, `pause` apart, and closes (or holds the connection for `hold`).
async fn server(parts: Vec<Vec<u8>>, pause: Duration, hold: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
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

async fn answer(parts: Vec<Vec<u8>>) -> Result<(), ProbeError> {
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
    assert_eq!(answer(vec![bytes(&length)]).await, Ok(()));
    // The head and body split across writes, as a real server may send them.
    let (head, body) = length.split_at(20);
    let addr = server(
        vec![bytes(head), bytes(body)],
        Duration::from_millis(30),
        Duration::ZERO,
    )
    .await;
    assert_eq!(probe(addr, Duration::from_secs(5)).await, Ok(()));

    let (a, b) = MODELS.split_at(10);
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:X}; ext=1\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    assert_eq!(answer(vec![bytes(&chunked)]).await, Ok(()));
    // One byte a write: every partial state of the chunked parser.
    let addr = server(
        chunked.bytes().map(|b| vec![b]).collect(),
        Duration::from_millis(1),
        Duration::ZERO,
    )
    .await;
    assert_eq!(probe(addr, Duration::from_secs(10)).await, Ok(()));

    let until_close = format!("HTTP/1.0 200 OK\r\nServer: llama.cpp\r\n\r\n{MODELS}");
    assert_eq!(answer(vec![bytes(&until_close)]).await, Ok(()));
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
    assert!(!serves_openai_routes(addr, Duration::from_millis(300)).await);
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
