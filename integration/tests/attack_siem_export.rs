//! Network peers against the SIEM export over mutual TLS: the export is
//! the whole fleet's findings, so only the `siem-reader` role (and admin)
//! may subscribe. An agent's certificate (a compromised host), an
//! analyst's, another node's, and a peer with no certificate at all (the
//! node enrolls, so such a handshake completes) are each refused, and
//! nothing of the export reaches them. Unprivileged.

use std::time::Duration;

use vigil_integration::tls_fleet::TlsFleet;
use vigil_integration::{free_port, wait_for, ControlPlane};
use vigil_pki::{Identity, OperatorRole};

fn vigilctl(flags: &[String], args: &[&str]) -> std::process::Output {
    std::process::Command::new(vigil_integration::binary("vigilctl"))
        .args(flags)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_siem_reader_may_subscribe_not_an_agent_analyst_node_or_anonymous_peer() {
    let tmp = tempfile::tempdir().unwrap();
    let fleet = TlsFleet::new(tmp.path(), "fleet");
    let port = free_port();
    let mut flags = fleet.node_flags("cp1");
    flags.extend(fleet.ca_key_flags());
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let _cp = ControlPlane::start_with(&tmp.path().join("cp"), port, &flags);
    let admin_cert = fleet.issue(Identity::operator(OperatorRole::Admin, "alice").unwrap());
    let admin = fleet.vigilctl_flags(port, "admin", &admin_cert);
    // Something to leak: a committed audit event.
    wait_for(
        "a committed revocation",
        Duration::from_secs(20),
        || async {
            vigilctl(
                &admin,
                &["ca", "revoke", "--serial", "cc01", "--reason", "test"],
            )
            .status
            .success()
            .then_some(())
        },
    )
    .await;
    let reader_cert = fleet.issue(Identity::operator(OperatorRole::SiemReader, "splunk").unwrap());
    let reader = fleet.vigilctl_flags(port, "reader", &reader_cert);
    let out = vigilctl(&reader, &["siem", "tail", "--json"]);
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
        let cert = fleet.issue(identity);
        let who = fleet.vigilctl_flags(port, name, &cert);
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
        fleet.ca_file.display().to_string(),
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
