use super::*;

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

// ---- real ClientHellos from rustls ----------------------------------------

fn rustls_config(tls12_only: bool) -> ClientConfig {
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()));
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    builder
        .expect("protocol versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}

/// The bytes rustls writes first on a connection to `server`: its
/// ClientHello, record layer included.
fn rustls_hello(config: ClientConfig, server: &str) -> Vec<u8> {
    let server = ServerName::try_from(server)
        .expect("server name")
        .to_owned();
    let mut conn = ClientConnection::new(Arc::new(config), server).expect("client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write to a Vec");
    }
    assert!(out.len() > 100, "rustls wrote a ClientHello");
    out
}

fn name(s: &str) -> ClientHelloSni {
    ClientHelloSni::Name(s.to_string())
}

/// Where the bytes of `needle` end in `hay` (the SNI host name's last
/// byte, for a hello that carries it once).
fn end_of(hay: &[u8], needle: &[u8]) -> usize {
    let at = hay
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("name in the hello");
    assert!(
        hay[at + 1..].windows(needle.len()).all(|w| w != needle),
        "name appears once"
    );
    at + needle.len()
}

/// The handshake bytes of a capture of handshake records, each with its
/// index in the capture.
fn deframe(mut records: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let (mut bytes, mut at, mut from) = (Vec::new(), Vec::new(), 0);
    while records.len() >= 5 {
        assert_eq!(records[0], 22, "handshake records only");
        let len = usize::from(u16::from_be_bytes([records[3], records[4]]));
        let body = &records[5..(5 + len).min(records.len())];
        bytes.extend_from_slice(body);
        at.extend((0..body.len()).map(|i| from + 5 + i));
        from += 5 + body.len();
        records = &records[5 + body.len()..];
    }
    (bytes, at)
}

/// Where the SNI host name `server` ends in a capture of handshake
/// records, and whether a record header falls inside it.
fn name_end(hello: &[u8], server: &str) -> (usize, bool) {
    let (handshake, at) = deframe(hello);
    let end = end_of(&handshake, server.as_bytes());
    let (first, last) = (at[end - server.len()], at[end - 1]);
    (last + 1, last - first + 1 != server.len())
}

/// Every cut of `hello` before the name's last byte is `Truncated` (the
/// empty one `NotTls`); every cut at or after it is the name. Never a
/// wrong name, never a panic.
fn assert_prefixes(hello: &[u8], server: &str) {
    let (complete, _) = name_end(hello, server);
    for cut in 0..=hello.len() {
        let got = client_hello_server_name(&hello[..cut]);
        let want = match cut {
            0 => ClientHelloSni::NotTls,
            _ if cut < complete => ClientHelloSni::Truncated,
            _ => name(server),
        };
        assert_eq!(got, want, "cut at {cut} of {}", hello.len());
    }
}

#[test]
fn rustls_hello_names_its_server() {
    let hello = rustls_hello(rustls_config(false), "api.openai.com");
    assert_eq!(client_hello_server_name(&hello), name("api.openai.com"));
    // A capture that runs on into later bytes reads the same.
    let mut more = hello.clone();
    more.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x10]);
    more.extend_from_slice(&[0xAA; 4000]);
    assert_eq!(client_hello_server_name(&more), name("api.openai.com"));
}

#[test]
fn rustls_tls12_only_hello_names_its_server() {
    let hello = rustls_hello(rustls_config(true), "huggingface.co");
    // A TLS 1.2-only hello offers no supported_versions extension and
    // says 1.2 in its legacy_version.
    assert_eq!(&hello[9..11], &[0x03, 0x03]);
    assert_eq!(client_hello_server_name(&hello), name("huggingface.co"));
}

#[test]
fn rustls_hellos_without_a_host_name_have_no_sni() {
    // rustls sends no server_name for an IP address (RFC 6066 forbids it).
    let hello = rustls_hello(rustls_config(false), "10.0.0.1");
    assert_eq!(client_hello_server_name(&hello), ClientHelloSni::NoSni);
    let mut config = rustls_config(false);
    config.enable_sni = false;
    let hello = rustls_hello(config, "api.openai.com");
    assert_eq!(client_hello_server_name(&hello), ClientHelloSni::NoSni);
}

#[test]
fn every_prefix_of_a_real_hello_is_truncated_until_the_name_is_complete() {
    for tls12_only in [false, true] {
        let hello = rustls_hello(rustls_config(tls12_only), "api.openai.com");
        assert_prefixes(&hello, "api.openai.com");
    }
}

#[test]
fn hellos_fragmented_over_records_are_followed() {
    // rustls fragments its own handshake when told to: real records of
    // 32 and 64 bytes (a dozen records for one hello).
    let mut names_split = 0;
    // rustls orders some extensions at random, so many sizes are tried
    // for a boundary to fall inside the name.
    for size in [32, 40, 48, 64, 200].into_iter().chain(32..=128) {
        let mut config = rustls_config(false);
        config.max_fragment_size = Some(size);
        let hello = rustls_hello(config, "api.openai.com");
        assert!(record_count(&hello) > 1, "{size}-byte records");
        assert_eq!(client_hello_server_name(&hello), name("api.openai.com"));
        assert_prefixes(&hello, "api.openai.com");
        names_split += usize::from(name_end(&hello, "api.openai.com").1);
    }
    // In some of them a record boundary falls inside the name itself.
    assert!(names_split > 0);
    // One record re-framed as two, split at every handshake byte: inside
    // the handshake header, the random, the extensions, the name itself.
    let hello = rustls_hello(rustls_config(false), "api.openai.com");
    let handshake = &hello[5..];
    for split in 1..handshake.len() {
        let two = reframe(handshake, &[split]);
        assert_eq!(
            client_hello_server_name(&two),
            name("api.openai.com"),
            "split at {split}"
        );
    }
    let two = reframe(handshake, &[handshake.len() / 2]);
    assert_prefixes(&two, "api.openai.com");
}

#[test]
fn a_fragmented_hello_interrupted_by_another_record_is_not_tls() {
    let hello = rustls_hello(rustls_config(false), "api.openai.com");
    let mut two = reframe(&hello[5..], &[40]);
    // The second record claims to be application data.
    let second = 5 + 40;
    two[second] = 23;
    assert_eq!(client_hello_server_name(&two), ClientHelloSni::NotTls);
    // An empty handshake record in between is forbidden.
    let mut empty = hello[..5 + 40].to_vec();
    empty[3..5].copy_from_slice(&40u16.to_be_bytes());
    empty.extend_from_slice(&[22, 3, 3, 0, 0]);
    empty.extend_from_slice(&reframe(&hello[5 + 40..], &[]));
    assert_eq!(client_hello_server_name(&empty), ClientHelloSni::NotTls);
    // Sanity: without the empty record the same bytes read.
    let mut fine = hello[..5 + 40].to_vec();
    fine[3..5].copy_from_slice(&40u16.to_be_bytes());
    fine.extend_from_slice(&reframe(&hello[5 + 40..], &[]));
    assert_eq!(client_hello_server_name(&fine), name("api.openai.com"));
}

// ---- hand-built ClientHellos ----------------------------------------------

/// A TLS 1.3-style ClientHello carrying `extensions` (type, data), in one
/// record.
fn hello_with(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x5A; 32]); // random
    body.push(32);
    body.extend_from_slice(&[0x11; 32]); // session id
    body.extend_from_slice(&[0, 6, 0x1A, 0x1A, 0x13, 0x01, 0x13, 0x02]); // GREASE, AES-GCM
    body.extend_from_slice(&[1, 0]); // null compression
    let mut exts = Vec::new();
    for (kind, data) in extensions {
        exts.extend_from_slice(&kind.to_be_bytes());
        exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
        exts.extend_from_slice(data);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    reframe(&handshake, &[])
}

/// server_name extension data with one entry per (type, name).
fn sni_data(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    data
}

fn sni_hello(host: &[u8]) -> Vec<u8> {
    hello_with(&[(0, sni_data(&[(0, host)]))])
}

/// Handshake bytes framed as TLS 1.0 handshake records, cut at `splits`.
fn reframe(handshake: &[u8], splits: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = 0;
    for &to in splits.iter().chain([handshake.len()].iter()) {
        let chunk = &handshake[from..to];
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
        from = to;
    }
    out
}

fn record_count(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while bytes.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
        bytes = &bytes[(5 + len).min(bytes.len())..];
        n += 1;
    }
    n
}

#[test]
fn grease_unknown_extensions_and_any_order_are_skipped() {
    // Chrome-like: GREASE first, a post-quantum-sized key share (1.2 KB)
    // before the name, GREASE again, name last.
    let key_share = vec![0x42; 1216];
    let hello = hello_with(&[
        (0x0A0A, vec![]),
        (0x002B, vec![4, 0x3A, 0x3A, 0x03, 0x04]),
        (0x0033, key_share.clone()),
        (0xFAFA, vec![0]),
        (0, sni_data(&[(0, b"chat.openai.com")])),
    ]);
    assert!(hello.len() > 1300);
    assert_eq!(client_hello_server_name(&hello), name("chat.openai.com"));
    assert_prefixes(&hello, "chat.openai.com");
    // The same hello fragmented into 512-byte records.
    let handshake = &hello[5..];
    let splits: Vec<usize> = (512..handshake.len()).step_by(512).collect();
    let fragmented = reframe(handshake, &splits);
    assert_eq!(record_count(&fragmented), splits.len() + 1);
    assert_prefixes(&fragmented, "chat.openai.com");
    // An unknown name type before the host name is skipped.
    let hello = hello_with(&[(0, sni_data(&[(7, b"opaque"), (0, b"api.anthropic.com")]))]);
    assert_eq!(client_hello_server_name(&hello), name("api.anthropic.com"));
}

#[test]
fn names_are_lowercased_and_lose_a_trailing_dot() {
    assert_eq!(
        client_hello_server_name(&sni_hello(b"API.OpenAI.COM.")),
        name("api.openai.com")
    );
    assert_eq!(
        client_hello_server_name(&sni_hello(b"_srv.my-host.example")),
        name("_srv.my-host.example")
    );
    let longest = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    assert_eq!(longest.len(), 253);
    assert_eq!(
        client_hello_server_name(&sni_hello(longest.as_bytes())),
        name(&longest)
    );
    let dotted = format!("{longest}.");
    assert_eq!(
        client_hello_server_name(&sni_hello(dotted.as_bytes())),
        name(&longest)
    );
}

#[test]
fn ip_literals_and_malformed_names_are_no_sni() {
    for bad in [
        &b"10.0.0.1"[..],
        b"10.0.0.1.",
        b"192.168.1",
        b"::1",
        b"[2001:db8::1]",
        b"",
        b".",
        b"a..b",
        b".example.com",
        b"exa mple.com",
        b"caf\xc3\xa9.example",
        b"api.openai.com\0evil",
        b"example.com/path",
    ] {
        assert_eq!(
            client_hello_server_name(&sni_hello(bad)),
            ClientHelloSni::NoSni,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long_label = format!("{}.com", "a".repeat(64));
    assert_eq!(
        client_hello_server_name(&sni_hello(long_label.as_bytes())),
        ClientHelloSni::NoSni
    );
    let too_long = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(62),
    ]
    .join(".");
    assert_eq!(too_long.len(), 254);
    assert_eq!(
        client_hello_server_name(&sni_hello(too_long.as_bytes())),
        ClientHelloSni::NoSni
    );
    // Only name types other than host_name, an empty extension, or none.
    let hello = hello_with(&[(0, sni_data(&[(7, b"api.openai.com")]))]);
    assert_eq!(client_hello_server_name(&hello), ClientHelloSni::NoSni);
    assert_eq!(
        client_hello_server_name(&hello_with(&[(0, vec![])])),
        ClientHelloSni::NoSni
    );
    assert_eq!(
        client_hello_server_name(&hello_with(&[(0x0A0A, vec![])])),
        ClientHelloSni::NoSni
    );
    assert_eq!(
        client_hello_server_name(&hello_with(&[])),
        ClientHelloSni::NoSni
    );
}

#[test]
fn lengths_that_overflow_their_enclosure_are_not_a_name() {
    let good = sni_hello(b"api.openai.com");
    assert_eq!(client_hello_server_name(&good), name("api.openai.com"));
    let name_len_at = end_of(&good, b"api.openai.com") - 14 - 2;
    assert_eq!(&good[name_len_at..name_len_at + 2], &[0, 14]);
    // The host name's length points past the list and the extension (the
    // bytes after it are in the capture: a parser that trusted the length
    // would read them as part of the name).
    let mut past = good.clone();
    past[name_len_at + 1] = 15;
    past.push(b'x');
    assert_eq!(client_hello_server_name(&past), ClientHelloSni::NotTls);
    // The list's length points past the extension.
    let mut list = good.clone();
    list[name_len_at - 2] = 0xFF;
    assert_eq!(client_hello_server_name(&list), ClientHelloSni::NotTls);
    // The extension's length points past the extensions block.
    let mut ext = good.clone();
    ext[name_len_at - 4] = 0xFF;
    assert_eq!(client_hello_server_name(&ext), ClientHelloSni::NotTls);
    // The extensions block's length points past the ClientHello.
    let mut block = good.clone();
    block[name_len_at - 8] = 0xFF;
    assert_eq!(client_hello_server_name(&block), ClientHelloSni::NotTls);
    // Odd cipher suite length, a 33-byte session id, no compression.
    let mut odd = good.clone();
    odd[5 + 4 + 2 + 32 + 1 + 32 + 1] = 5;
    assert_eq!(client_hello_server_name(&odd), ClientHelloSni::NotTls);
    let mut sid = good.clone();
    sid[5 + 4 + 2 + 32] = 33;
    assert_eq!(client_hello_server_name(&sid), ClientHelloSni::NotTls);
    let mut compression = good;
    compression[5 + 4 + 2 + 32 + 1 + 32 + 2 + 6] = 0;
    assert_eq!(
        client_hello_server_name(&compression),
        ClientHelloSni::NotTls
    );
}

#[test]
fn any_minor_record_version_and_a_hello_without_its_record_header_are_read() {
    let hello = rustls_hello(rustls_config(false), "api.openai.com");
    // Servers check the record version's major byte only.
    for minor in [0x00, 0x05, 0xff] {
        let mut other = hello.clone();
        other[2] = minor;
        assert_eq!(client_hello_server_name(&other), name("api.openai.com"));
    }
    // The record header sent alone, then the handshake message: the
    // second send is what the kernel captures.
    assert_eq!(
        client_hello_server_name(&hello[5..]),
        name("api.openai.com")
    );
    for cut in 1..hello.len() - 5 {
        let got = client_hello_server_name(&hello[5..5 + cut]);
        assert!(
            matches!(got, ClientHelloSni::Truncated | ClientHelloSni::NotTls)
                || got == name("api.openai.com"),
            "{got:?}"
        );
    }
}

#[test]
fn other_protocols_and_other_tls_messages_are_not_tls() {
    for other in [
        &b"GET / HTTP/1.1\r\nHost: api.openai.com\r\n\r\n"[..],
        b"POST /v1/chat/completions HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"G",
        // SSLv2-compatible ClientHello.
        &[0x80, 0x2E, 0x01, 0x03, 0x01, 0x00, 0x15],
        // Application data, alert.
        &[0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5],
        &[0x15, 0x03, 0x03, 0x00, 0x02, 2, 40],
        // A record version of another major.
        &[0x16, 0x02, 0x01, 0x00, 0x05],
        &[0x16, 0x04],
    ] {
        assert_eq!(
            client_hello_server_name(other),
            ClientHelloSni::NotTls,
            "{:?}",
            String::from_utf8_lossy(other)
        );
    }
    assert_eq!(client_hello_server_name(&[]), ClientHelloSni::NotTls);
    // A ServerHello (handshake type 2) is not a ClientHello.
    let mut server_hello = sni_hello(b"api.openai.com");
    server_hello[5] = 2;
    assert_eq!(
        client_hello_server_name(&server_hello),
        ClientHelloSni::NotTls
    );
    // A record too large for TLS.
    let mut huge = sni_hello(b"api.openai.com");
    huge[3..5].copy_from_slice(&0x4001u16.to_be_bytes());
    assert_eq!(client_hello_server_name(&huge), ClientHelloSni::NotTls);
}

// ---- robustness -------------------------------------------------------------

/// splitmix64: a deterministic stream for seeded cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A name, if any, is a plausible host name: it cannot have come from
/// anywhere but validated bytes.
fn assert_sane(got: &ClientHelloSni) {
    if let ClientHelloSni::Name(n) = got {
        assert!(!n.is_empty() && n.len() <= 253, "{n:?}");
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)),
            "{n:?}"
        );
        assert!(
            !n.ends_with('.') && !n.starts_with('.') && !n.contains(".."),
            "{n:?}"
        );
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x5EED);
    for case in 0..4000 {
        let len = rng.below(3000);
        let mut bytes = rng.bytes(len);
        // Half the cases start like a handshake record and a ClientHello,
        // so the parser gets past the first byte.
        if case % 2 == 0 && bytes.len() >= 6 {
            bytes[..3].copy_from_slice(&[22, 3, 1 + rng.below(4) as u8]);
            bytes[5] = 1;
        }
        assert_sane(&client_hello_server_name(&bytes));
    }
}

#[test]
fn mutated_real_hellos_never_panic_or_invent_names() {
    let mut rng = Rng(0xC0FFEE);
    let mut config = rustls_config(false);
    config.max_fragment_size = Some(100);
    let hellos = [
        rustls_hello(rustls_config(false), "api.openai.com"),
        rustls_hello(rustls_config(true), "api.openai.com"),
        rustls_hello(config, "api.openai.com"),
    ];
    let mut names = 0;
    for case in 0..6000 {
        let mut bytes = hellos[case % hellos.len()].clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => bytes[at] = rng.next() as u8,
                1 => bytes[at] ^= 1 << rng.below(8),
                2 => bytes[at] = [0, 0xFF, 0x7F, 0x80][rng.below(4)],
                _ => bytes.truncate(at),
            }
            if bytes.is_empty() {
                break;
            }
        }
        let got = client_hello_server_name(&bytes);
        assert_sane(&got);
        names += usize::from(matches!(got, ClientHelloSni::Name(_)));
    }
    // The mutations leave many hellos readable: the cases exercise the
    // whole parser, not only its first checks.
    assert!(names > 500, "{names} names");
}

// ---- a different TLS stack: openssl s_client ------------------------------

/// The first bytes `openssl s_client` sends to a local listener, read
/// until they hold an answer (or 16 KiB, or the client stops).
fn openssl_hello(args: &[&str]) -> Vec<u8> {
    use std::io::Read;
    use std::net::TcpListener;
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the openssl CLI runs (this test needs it: a second, real TLS stack)");
    let (mut stream, _) = listener.accept().expect("s_client connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let mut hello = Vec::new();
    let mut chunk = [0u8; 4096];
    while hello.len() < 16 * 1024
        && matches!(
            client_hello_server_name(&hello),
            ClientHelloSni::Truncated | ClientHelloSni::NotTls
        )
    {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => hello.extend_from_slice(&chunk[..n]),
        }
    }
    drop(stream);
    // s_client exits once the server hangs up; kill it in case it does not.
    let _ = child.kill();
    let _ = child.wait();
    hello
}

#[test]
fn openssl_s_client_hellos_name_their_server() {
    let tls13 = openssl_hello(&["-servername", "x.example"]);
    assert_eq!(
        client_hello_server_name(&tls13),
        name("x.example"),
        "{tls13:02x?}"
    );
    assert_prefixes(&tls13, "x.example");

    let tls12 = openssl_hello(&["-servername", "X.Example", "-tls1_2"]);
    assert_eq!(client_hello_server_name(&tls12), name("x.example"));

    // OpenSSL splits its own hello into records of 512 bytes (its least)
    // when told to; long ALPN protocol names make the hello span two.
    // OpenSSL writes server_name early, so the boundary falls after the
    // name here; the rustls cases put boundaries before and inside it.
    let alpn = ["a".repeat(200), "b".repeat(200), "c".repeat(200)].join(",");
    let fragmented = openssl_hello(&[
        "-servername",
        "x.example",
        "-max_send_frag",
        "512",
        "-alpn",
        &alpn,
    ]);
    assert!(record_count(&fragmented) > 1, "{fragmented:02x?}");
    assert_eq!(client_hello_server_name(&fragmented), name("x.example"));
    assert_prefixes(&fragmented, "x.example");
    eprintln!(
        "openssl hellos: {} bytes, {} bytes (TLS 1.2), {} bytes in {} records",
        tls13.len(),
        tls12.len(),
        fragmented.len(),
        record_count(&fragmented)
    );
}
