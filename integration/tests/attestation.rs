//! TPM attestation end to end: the real agent (its TPM a software TPM the
//! test starts) and the real verifier. It enrolls, is quoted every
//! interval and is trusted; a PCR extended on the host makes it untrusted
//! within two intervals, with an alert, and its session loses the approved
//! workloads; vigilctl shows each state.

use std::time::Duration;

use vigil_integration::raw_agent::{hello, RawAgentStream};
use vigil_integration::swtpm::{require_swtpm, Swtpm, SwtpmCa};
use vigil_integration::{free_port, wait_for, Agent, ControlPlane};
use vigil_proto::agent::v1 as pb;

fn trust_of(cp: &ControlPlane, host: &str) -> serde_json::Value {
    let out = cp.vigilctl(&["agents", "show", host, "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["attestation"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_tpm_is_trusted_until_a_pcr_changes_and_then_loses_its_approvals() {
    require_swtpm("attestation");
    let ca = SwtpmCa::new();
    let tpm = Swtpm::manufacture(&ca);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("tpm-ca.pem");
    ca.write_bundle(&bundle);
    let cp = ControlPlane::start_with(
        &dir.path().join("cp"),
        free_port(),
        &[
            "--tpm-ca",
            bundle.to_str().unwrap(),
            "--attest-interval-secs",
            "1",
            "--allow-unsigned",
        ],
    );
    cp.wait_leader().await;
    let tcti = tpm.tcti();
    let agent = Agent::start_with(
        &dir.path().join("agent"),
        &cp.endpoint(),
        "tpm-host",
        &["--sensor-mode", "procfs", "--tpm", &tcti],
    )
    .await;

    // Enrolled and trusted, then quoted every interval.
    let summary = cp
        .wait_agent_summary(
            "the agent trusted",
            Duration::from_secs(30),
            "tpm-host",
            |a| a.attestation.as_ref().is_some_and(|t| t.trust == "trusted"),
        )
        .await;
    let first = summary.attestation.unwrap().last_quote_at_unix_nanos;
    cp.wait_agent_summary("a later quote", Duration::from_secs(10), "tpm-host", |a| {
        a.attestation
            .as_ref()
            .is_some_and(|t| t.trust == "trusted" && t.last_quote_at_unix_nanos > first)
    })
    .await;
    let hostname = summary.hostname.clone();
    let t = trust_of(&cp, &hostname);
    assert_eq!(t["trust"], "trusted", "{t}");
    assert_eq!(
        t["golden_pcrs"].as_object().map(|m| m.len()),
        Some(8),
        "{t}"
    );
    let text = cp.vigilctl(&["agents", "show", &hostname]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("attestation: trusted"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    // An approval for the whole fleet reaches a trusted host's session.
    let out = cp.vigilctl(&[
        "workload",
        "approve",
        "--exe-sha256",
        &"ab".repeat(32),
        "--note",
        "serving",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second session of the same host id, spoken by the test, sees the
    // approvals the control plane sends it (the agent's own session is
    // replaced, and comes back by itself).
    let mut probe = RawAgentStream::open(&cp, 4, vec![hello("tpm-host", &hostname)]).await;
    let sent = workloads_sent(&mut probe).await;
    assert_eq!(sent, 1, "a trusted host gets the approval");
    drop(probe);

    // A PCR changes on the host: untrusted within two intervals, an alert.
    tpm.extend_pcr(7, &"5a".repeat(32));
    let changed = std::time::Instant::now();
    cp.wait_agent_summary(
        "untrusted after a PCR change",
        Duration::from_secs(10),
        "tpm-host",
        |a| {
            a.attestation
                .as_ref()
                .is_some_and(|t| t.trust == "untrusted")
        },
    )
    .await;
    assert!(
        changed.elapsed() < Duration::from_secs(4),
        "{:?}",
        changed.elapsed()
    );
    let t = trust_of(&cp, &hostname);
    assert_eq!(t["code"], "pcr-policy", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("PCR 7"), "{t}");
    cp.wait_alerts_with("the attestation alert", Duration::from_secs(10), |a| {
        a.finding
            .as_ref()
            .is_some_and(|f| f.rule_id == "vigil.attestation.pcr-policy")
    })
    .await;
    // The audit log records the verdicts.
    let audit = cp.vigilctl(&["audit", "list"]);
    let audit = String::from_utf8_lossy(&audit.stdout);
    assert!(
        audit.contains("attest.enroll") && audit.contains("attest.verdict"),
        "{audit}"
    );

    // An untrusted host's sessions get an empty approved set.
    let mut probe = RawAgentStream::open(&cp, 4, vec![hello("tpm-host", &hostname)]).await;
    assert_eq!(
        workloads_sent(&mut probe).await,
        0,
        "an untrusted host gets none"
    );
    drop(probe);

    // The operator accepts the change (an intended update): the next
    // quote sets the new golden values and the host is trusted again.
    let out = cp.vigilctl(&["agent", "reset-attestation", "tpm-host"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "trusted again after a reset",
        Duration::from_secs(30),
        || async {
            let t = trust_of(&cp, &hostname);
            (t["trust"] == "trusted").then_some(())
        },
    )
    .await;
    drop(agent);
}

/// The number of approved workloads in the first Workloads message.
async fn workloads_sent(probe: &mut RawAgentStream) -> usize {
    loop {
        match probe.next_message().await.body {
            Some(pb::control_message::Body::Workloads(w)) => return w.workloads.len(),
            Some(_) => {}
            None => panic!("an empty control message"),
        }
    }
}
