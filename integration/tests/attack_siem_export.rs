//! Network peers against the SIEM export over mutual TLS: the export is
//! the whole fleet's findings, so only the `siem-reader` role (and admin)
//! may subscribe. An agent's certificate (a compromised host), an
//! analyst's, another node's, and a peer with no certificate at all (the
//! node enrolls, so such a handshake completes) are each refused, and
//! nothing of the export reaches them. Unprivileged.

use vigil_integration::siem_clients::{vigilctl_as as vigilctl, TlsExport};
use vigil_pki::{Identity, OperatorRole};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_siem_reader_may_subscribe_not_an_agent_analyst_node_or_anonymous_peer() {
    let tmp = tempfile::tempdir().unwrap();
    // Something to leak: a committed audit event.
    let export = TlsExport::start(tmp.path(), true).await;
    let port = export.port;
    let out = vigilctl(&export.reader, &["siem", "tail", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "the reader sees the event");

    for (name, identity) in [
        ("agent", Identity::agent("gpu-node-7").unwrap()),
        (
            "analyst",
            Identity::operator(OperatorRole::Analyst, "carol").unwrap(),
        ),
        ("node", Identity::node("cp9").unwrap()),
    ] {
        let who = export.vigilctl_flags_of(name, identity);
        let out = vigilctl(&who, &["siem", "tail", "--json"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name} read the export");
        assert!(err.contains("siem-reader"), "{name}: {err}");
    }
    // No client certificate at all: only enrollment is open to it.
    let anonymous = vec![
        "--endpoint".to_string(),
        format!("https://127.0.0.1:{port}"),
        "--tls-ca".to_string(),
        export.fleet.ca_file.display().to_string(),
    ];
    let out = vigilctl(&anonymous, &["siem", "tail", "--json"]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "a peer without a certificate read the export"
    );
}
