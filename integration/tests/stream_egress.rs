//! AI API hosts reached without a DNS question on the wire (an address
//! from a hosts file, `curl --resolve`, DNS over HTTPS) are still named:
//! the server name in the TLS ClientHello a process sends on a connection
//! to port 443, and DNS questions sent over TCP to port 53 (issue #27).
//! Ordinary hosts and other protocols on those ports stay silent. Runs as
//! root.

use std::io::Read;
use std::net::TcpListener;
use std::process::Command;

use vigil_integration::alert_filter::pid_of;
use vigil_integration::{privileged, AgentHost};
use vigil_proto::types::v1::{Alert, NetDirection, SignalKind};

/// A question for `sys.argv[1]` in `q` (as signals.rs builds it).
const DNS_QUERY: &str = "import os, socket, struct, sys\nq = struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + b''.join(bytes([len(l)]) + l.encode() for l in sys.argv[1].split('.')) + b'\\x00\\x00\\x01\\x00\\x01'\n";

/// Python's ssl (OpenSSL) opening TLS to 127.0.0.1:443 for `sys.argv[1]`;
/// the listener hangs up after the ClientHello.
const TLS_HELLO: &str = "import socket, ssl, sys\ns = socket.create_connection(('127.0.0.1', 443))\ntry:\n    ssl.create_default_context().wrap_socket(s, server_hostname=sys.argv[1])\nexcept (OSError, ssl.SSLError):\n    pass\n";

/// Listeners on 127.0.0.1:443 and :53 for the whole test binary (its
/// tests run at once).
fn sinks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        sink(443);
        sink(53);
    });
}

/// Accepts connections on 127.0.0.1:`port`, reads what comes, hangs up.
fn sink(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("binding 127.0.0.1:{port}: {e}"));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .ok();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
        }
    });
}

/// Runs `cmd` to its end; its pid.
fn run(cmd: &mut Command) -> u32 {
    let mut child = cmd.spawn().expect("spawn");
    let pid = child.id();
    child.wait().unwrap();
    pid
}

fn python(code: &str, arg: &str) -> Command {
    let mut c = Command::new("python3");
    c.arg("-c").arg(code).arg(arg);
    c
}

fn egress_to(pid: u32, host: &'static str) -> impl Fn(&Alert) -> bool {
    move |a: &Alert| {
        pid_of(a) == pid
            && a.finding.as_ref().unwrap().signal() == SignalKind::AiEgress
            && a.finding
                .as_ref()
                .unwrap()
                .net
                .as_ref()
                .is_some_and(|n| n.host == host)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_names_and_dns_over_tcp_name_ai_api_hosts_without_a_dns_question() {
    if !privileged("tls_server_names_and_dns_over_tcp_name_ai_api_hosts_without_a_dns_question") {
        return;
    }
    sinks();
    let h = AgentHost::start("stream-egress").await;

    // Benign first: TLS to an ordinary host, plain HTTP on 443, a TCP DNS
    // question for an ordinary host.
    let benign = [
        run(&mut python(TLS_HELLO, "deb.debian.org")),
        run(&mut python(
            "import socket, sys\ns = socket.create_connection(('127.0.0.1', 443))\ns.sendall(b'GET / HTTP/1.1\\r\\nHost: api.openai.com\\r\\n\\r\\n')\n",
            "-",
        )),
        run(&mut python(
            &format!("{DNS_QUERY}s = socket.create_connection(('127.0.0.1', 53))\ns.sendall(struct.pack('>H', len(q)) + q)\n"),
            "deb.debian.org",
        )),
        // Datagrams to 443 (QUIC's port) are not TLS streams: each is not
        // a record, even one carrying a ClientHello in clear.
        run(&mut python(
            "import socket, ssl, sys\nctx = ssl.create_default_context(); i, o = ssl.MemoryBIO(), ssl.MemoryBIO()\nt = ctx.wrap_bio(i, o, server_hostname=sys.argv[1])\ntry:\n    t.do_handshake()\nexcept ssl.SSLWantReadError:\n    pass\nh = o.read()\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nu.sendto(h, ('127.0.0.1', 443))\nu.sendmsg([h], [], 0, ('127.0.0.1', 443))\n",
            "api.openai.com",
        )),
    ];

    // Python's ssl: the name in the ClientHello, the peer's address.
    let pid = run(&mut python(TLS_HELLO, "api.openai.com"));
    let a = h
        .alert(
            "ai_egress from the ClientHello",
            egress_to(pid, "api.openai.com"),
        )
        .await;
    let f = a.finding.unwrap();
    let net = f.net.unwrap();
    assert_eq!(net.direction(), NetDirection::Connect);
    assert_eq!((net.address.as_str(), net.port), ("127.0.0.1", 443));
    assert!(f.summary.contains("ClientHello"), "{}", f.summary);

    // curl told the address (as a hosts file would): no DNS question.
    let pid = run(Command::new("curl").args([
        "-s",
        "-m",
        "3",
        "--resolve",
        "api.anthropic.com:443:127.0.0.1",
        "https://api.anthropic.com/v1/messages",
    ]));
    h.alert(
        "ai_egress from curl's ClientHello",
        egress_to(pid, "api.anthropic.com"),
    )
    .await;

    // DNS over TCP: one send with the length prefix, and glibc's way,
    // writev of the length and the message.
    let pid = run(&mut python(
        &format!("{DNS_QUERY}s = socket.create_connection(('127.0.0.1', 53))\ns.sendall(struct.pack('>H', len(q)) + q)\n"),
        "huggingface.co",
    ));
    let a = h
        .alert(
            "ai_egress from a DNS question over TCP",
            egress_to(pid, "huggingface.co"),
        )
        .await;
    let net = a.finding.unwrap().net.unwrap();
    assert_eq!(net.direction(), NetDirection::DnsQuery);
    assert_eq!(net.port, 53);
    let pid = run(&mut python(
        &format!("{DNS_QUERY}s = socket.create_connection(('127.0.0.1', 53))\nos.writev(s.fileno(), [struct.pack('>H', len(q)), q])\n"),
        "api.mistral.ai",
    ));
    h.alert(
        "ai_egress from writev over TCP",
        egress_to(pid, "api.mistral.ai"),
    )
    .await;

    let noise: Vec<String> =
        h.cp.alerts()
            .await
            .iter()
            .filter(|a| benign.contains(&pid_of(a)))
            .map(|a| a.finding.as_ref().unwrap().summary.clone())
            .collect();
    assert!(noise.is_empty(), "benign streams made findings: {noise:?}");
}

/// Ways to send a ClientHello that a check of only the first send's first
/// buffer on the connecting fd would miss (helper-36's review), each to
/// its own AI API host: all are named.
const TLS_EVASIONS: &str = r#"
import os, sys, ssl, socket
mode, host = sys.argv[1], sys.argv[2]
A = ('127.0.0.1', 443)
def hello(minor=None):
    ctx = ssl.create_default_context(); i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
    t = ctx.wrap_bio(i, o, server_hostname=host)
    try: t.do_handshake()
    except ssl.SSLWantReadError: pass
    h = o.read()
    return h if minor is None else h[:2] + bytes([minor]) + h[3:]
def stock(s):
    try: ssl.create_default_context().wrap_socket(s, server_hostname=host)
    except (OSError, ssl.SSLError): pass
if mode == 'send0':
    s = socket.create_connection(A); s.send(b''); stock(s)
elif mode == 'fork':
    s = socket.create_connection(A)
    if os.fork() == 0: stock(s); os._exit(0)
    os.wait()
elif mode == 'dup2':
    s = socket.create_connection(A); os.dup2(s.fileno(), 100); stock(socket.socket(fileno=100))
elif mode == 'split':
    h = hello(); s = socket.create_connection(A); s.send(h[:5]); s.sendall(h[5:])
elif mode == 'writev3':
    h = hello(); s = socket.create_connection(A); os.writev(s.fileno(), [h[:5], h[5:9], h[9:]])
elif mode == 'sendmsg_empty':
    h = hello(); s = socket.create_connection(A); s.sendmsg([b'', h])
elif mode == 'collide':
    s = socket.create_connection(A); os.dup2(os.open('/etc/hostname', os.O_RDONLY), s.fileno() + 64); stock(s)
elif mode == 'fastopen':
    h = hello(); s = socket.socket()
    try: s.sendto(h, socket.MSG_FASTOPEN, A)
    except OSError: pass
elif mode == 'ssl3_record':
    s = socket.create_connection(A); s.sendall(hello(0))
elif mode in ('unfaulted_buf', 'unfaulted_addr'):
    # The hello, or connect's sockaddr, in a file mapping never touched:
    # a probe read on entry fails; the kernel faults it in on the call.
    import ctypes, mmap, struct, tempfile
    libc = ctypes.CDLL(None, use_errno=True)
    h = hello()
    sa = struct.pack('<H', socket.AF_INET) + struct.pack('>H', 443) + socket.inet_aton('127.0.0.1') + bytes(8)
    data = h if mode == 'unfaulted_buf' else sa
    with tempfile.NamedTemporaryFile(dir=sys.argv[3]) as f:
        f.write(data.ljust(4096, bytes(1))); f.flush()
        m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)
        base = next(int(l.split('-')[0], 16) for l in open('/proc/self/maps') if f.name in l)
        if mode == 'unfaulted_buf':
            s = socket.create_connection(A)
            libc.send(s.fileno(), ctypes.c_void_p(base), len(h), 0)
        else:
            s = socket.socket()
            assert libc.connect(s.fileno(), ctypes.c_void_p(base), 16) == 0
            s.sendall(h)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_sent_in_other_ways_still_names_its_host() {
    if !privileged("a_client_hello_sent_in_other_ways_still_names_its_host") {
        return;
    }
    sinks();
    let h = AgentHost::start("stream-evasions").await;
    let cases: [(&str, &'static str); 11] = [
        ("send0", "api.openai.com"),
        ("fork", "api.anthropic.com"),
        ("dup2", "api.mistral.ai"),
        ("split", "api.cohere.ai"),
        ("writev3", "api.groq.com"),
        ("sendmsg_empty", "api.together.xyz"),
        ("collide", "api.fireworks.ai"),
        ("fastopen", "api.deepseek.com"),
        ("ssl3_record", "api.x.ai"),
        ("unfaulted_buf", "api.perplexity.ai"),
        ("unfaulted_addr", "openrouter.ai"),
    ];
    for (mode, host) in cases {
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(TLS_EVASIONS)
            .arg(mode)
            .arg(host)
            .arg(&h.dir);
        run(&mut cmd);
        h.alert_within(
            &format!("ai_egress for the {mode} hello"),
            std::time::Duration::from_secs(10),
            move |a: &Alert| {
                a.finding.as_ref().unwrap().signal() == SignalKind::AiEgress
                    && a.finding
                        .as_ref()
                        .unwrap()
                        .net
                        .as_ref()
                        .is_some_and(|n| n.host == host)
            },
        )
        .await;
    }
}
