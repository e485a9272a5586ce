//! TPM attestation against the real verifier, with software TPMs and an
//! agent spoken for by the test (tpm2-tools does its TPM work): quotes made
//! by `tpm2_quote` verify (interop), and each way of cheating is refused
//! with its own reason, an untrusted verdict and an alert.

use std::time::Duration;

use vigil_integration::attesting_client::{tools_activate, tools_enrollment, tools_quote};
use vigil_integration::raw_agent::{hello, RawAgentStream};
use vigil_integration::swtpm::{require_swtpm, Swtpm, SwtpmCa};
use vigil_integration::{free_port, ControlPlane};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::agent::v1 as pb;

/// Seconds between quotes in these tests.
const INTERVAL: &str = "2";

struct Lab {
    _dir: tempfile::TempDir,
    cp: ControlPlane,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "control plane log:\n{}",
                std::fs::read_to_string(&self.cp.log).unwrap_or_default()
            );
        }
    }
}

/// A control plane that trusts `ca`'s EK certificates (the CA files exist
/// once a TPM was manufactured with it).
async fn lab(ca: &SwtpmCa) -> Lab {
    let dir = tempfile::tempdir().unwrap();
    eprintln!("control plane in {}", dir.path().display());
    let bundle = dir.path().join("tpm-ca.pem");
    ca.write_bundle(&bundle);
    let cp = ControlPlane::start_with(
        &dir.path().join("cp"),
        free_port(),
        &[
            "--tpm-ca",
            bundle.to_str().unwrap(),
            "--attest-interval-secs",
            INTERVAL,
        ],
    );
    cp.wait_leader().await;
    Lab { _dir: dir, cp }
}

/// An agent session whose TPM work is done by tpm2-tools.
struct Scripted {
    stream: RawAgentStream,
}

impl Scripted {
    /// Hello and the TPM's enrollment; the session's first messages.
    async fn open(cp: &ControlPlane, agent_id: &str, enrollment: pb::TpmEnrollment) -> Scripted {
        let first = vec![
            hello(agent_id, &format!("host-{agent_id}")),
            pb::AgentMessage {
                body: Some(pb::agent_message::Body::TpmEnrollment(enrollment)),
            },
        ];
        Scripted {
            stream: RawAgentStream::open(cp, 16, first).await,
        }
    }

    /// The next attestation message from the control plane (policy,
    /// workload and model updates are passed over); None when the stream
    /// ends.
    async fn next(&mut self) -> Option<pb::control_message::Body> {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), self.stream.inbound.message())
                .await
                .expect("a message within 15 s")
                .ok()??;
            match msg.body? {
                pb::control_message::Body::Policy(_)
                | pb::control_message::Body::Workloads(_)
                | pb::control_message::Body::Models(_) => {}
                other => return Some(other),
            }
        }
    }

    async fn challenge(&mut self) -> pb::CredentialChallenge {
        match self.next().await {
            Some(pb::control_message::Body::CredentialChallenge(c)) => c,
            other => panic!("expected a credential challenge, got {other:?}"),
        }
    }

    async fn request(&mut self) -> pb::AttestRequest {
        match self.next().await {
            Some(pb::control_message::Body::AttestRequest(r)) => r,
            other => panic!("expected an attest request, got {other:?}"),
        }
    }

    async fn send(&self, body: pb::agent_message::Body) {
        self.stream
            .send(pb::AgentMessage { body: Some(body) })
            .await;
    }

    /// Answers the challenge with the TPM (panics when it refuses).
    async fn activate(&mut self, tpm: &Swtpm) {
        let challenge = self.challenge().await;
        let secret =
            tools_activate(tpm, &challenge).expect("the TPM activates its own AK's credential");
        self.send(pb::agent_message::Body::CredentialActivated(
            pb::CredentialActivated { secret },
        ))
        .await;
    }

    async fn quote(&self, quote: pb::Quote) {
        self.send(pb::agent_message::Body::Quote(quote)).await;
    }
}

async fn attestation(cp: &ControlPlane, agent_id: &str) -> admin_pb::Attestation {
    cp.agent_summary(agent_id)
        .await
        .unwrap()
        .and_then(|a| a.attestation)
        .unwrap_or_default()
}

/// Waits for the verdict on a quote sent after `before` (the last quote's
/// time) and returns it.
async fn verdict_after(cp: &ControlPlane, agent_id: &str, before: i64) -> admin_pb::Attestation {
    cp.wait_agent_summary(
        "a new quote verdict",
        Duration::from_secs(15),
        agent_id,
        |a| {
            a.attestation
                .as_ref()
                .is_some_and(|t| t.last_quote_at_unix_nanos > before)
        },
    )
    .await
    .attestation
    .unwrap()
}

/// Waits for an untrusted verdict with `code`, and its alert.
async fn refused_with(
    cp: &ControlPlane,
    agent_id: &str,
    before: i64,
    code: &str,
) -> admin_pb::Attestation {
    let v = verdict_after(cp, agent_id, before).await;
    assert_eq!(
        (v.trust.as_str(), v.code.as_str()),
        ("untrusted", code),
        "verdict: {v:?}"
    );
    let rule = format!("vigil.attestation.{code}");
    cp.wait_alerts_with(&format!("an alert {rule}"), Duration::from_secs(10), |a| {
        a.agent_id == agent_id
            && a.finding.as_ref().is_some_and(|f| {
                f.rule_id == rule
                    && f.signal == vigil_proto::types::v1::SignalKind::Attestation as i32
            })
    })
    .await;
    v
}

/// Enrolls `tpm` as `agent_id` and answers the first request honestly:
/// the host is trusted.
async fn enrolled(cp: &ControlPlane, tpm: &Swtpm, agent_id: &str) -> Scripted {
    let mut s = Scripted::open(cp, agent_id, tools_enrollment(tpm)).await;
    s.activate(tpm).await;
    let request = s.request().await;
    let before = attestation(cp, agent_id).await.last_quote_at_unix_nanos;
    s.quote(tools_quote(tpm, &request)).await;
    let v = verdict_after(cp, agent_id, before).await;
    assert_eq!(v.trust, "trusted", "{v:?}");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_by_tpm2_tools_verify_and_every_cheat_is_refused_with_its_reason() {
    require_swtpm("attestation_attacks");
    let ca = SwtpmCa::new();
    let mut tpm = Swtpm::manufacture(&ca);
    let other_tpm = Swtpm::manufacture(&ca);
    let lab = lab(&ca).await;
    let cp = &lab.cp;

    // Interop and the happy path: tpm2_quote's quote verifies, and the
    // host's first verified PCRs become its golden values.
    let mut a = enrolled(cp, &tpm, "a").await;
    let v = attestation(cp, "a").await;
    assert_eq!(v.golden_pcrs.len(), 8, "sha256 PCRs 0-7 by default: {v:?}");
    assert!(
        !v.ek_sha256.is_empty() && v.ek_certificate_issuer.contains("swtpm"),
        "{v:?}"
    );
    // vigilctl shows it.
    let shown = cp.vigilctl(&["agents", "show", "a"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("attestation: trusted"), "{text}");

    // A replayed quote: the last good one, sent again.
    let request = a.request().await;
    let good = tools_quote(&tpm, &request);
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(good.clone()).await;
    assert_eq!(verdict_after(cp, "a", before).await.trust, "trusted");
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(good.clone()).await;
    refused_with(cp, "a", before, "nonce-replayed").await;
    // Replayed again and again: one verdict, one alert, not one each.
    for _ in 0..20 {
        a.quote(good.clone()).await;
    }
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(good).await;
    verdict_after(cp, "a", before).await;
    let replays = cp
        .alerts()
        .await
        .iter()
        .filter(|al| {
            al.finding
                .as_ref()
                .is_some_and(|f| f.rule_id == "vigil.attestation.nonce-replayed")
        })
        .count();
    assert_eq!(replays, 1, "a repeated failure is one alert");

    // A flipped bit in the quote, then in the signature.
    let request = a.request().await;
    let mut q = tools_quote(&tpm, &request);
    let last = q.attest.len() - 1;
    q.attest[last] ^= 1;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(q).await;
    refused_with(cp, "a", before, "signature").await;
    // (Trusted again first, so each refusal is a change with its alert.)
    let request = a.request().await;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(tools_quote(&tpm, &request)).await;
    assert_eq!(verdict_after(cp, "a", before).await.trust, "trusted");
    let request = a.request().await;
    let mut q = tools_quote(&tpm, &request);
    let mid = q.signature.len() / 2;
    q.signature[mid] ^= 0x80;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(q).await;
    refused_with(cp, "a", before, "signature").await;

    // PCR values that do not hash to the quoted digest.
    let request = a.request().await;
    let mut q = tools_quote(&tpm, &request);
    q.pcrs[0].values[3].digest[0] ^= 1;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(q).await;
    refused_with(cp, "a", before, "pcr-digest").await;

    // A nonce issued to another agent: b's request, answered by a.
    let mut b = enrolled(cp, &other_tpm, "b").await;
    let for_b = b.request().await;
    let _for_a = a.request().await;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(tools_quote(&tpm, &for_b)).await;
    refused_with(cp, "a", before, "nonce-other-agent").await;

    // A PCR extended after enrollment: an honest quote of a changed host.
    tpm.extend_pcr(
        7,
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    );
    let request = a.request().await;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(tools_quote(&tpm, &request)).await;
    let v = refused_with(cp, "a", before, "pcr-policy").await;
    assert!(v.reason.contains("PCR 7"), "{v:?}");

    // A TPM reset (swtpm restarted: the host rebooted): the agent comes
    // back, enrolls a new AK, and its first quote reports the reboot; PCR
    // 7 is back to its golden value after the reset.
    drop(a);
    tpm.restart();
    let mut a = Scripted::open(cp, "a", tools_enrollment(&tpm)).await;
    a.activate(&tpm).await;
    let request = a.request().await;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(tools_quote(&tpm, &request)).await;
    let v = refused_with(cp, "a", before, "reboot").await;
    assert!(v.reason.contains("rebooted"), "{v:?}");
    let request = a.request().await;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    a.quote(tools_quote(&tpm, &request)).await;
    assert_eq!(verdict_after(cp, "a", before).await.trust, "trusted");

    // The host stops answering: untrusted within two intervals.
    let _ignored = a.request().await;
    let before = attestation(cp, "a").await.last_quote_at_unix_nanos;
    refused_with(cp, "a", before, "stale").await;
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_or_an_ak_from_another_tpm_is_refused_at_enrollment() {
    require_swtpm("attestation_attacks");
    let ca = SwtpmCa::new();
    let tpm = Swtpm::manufacture(&ca);
    let other_tpm = Swtpm::manufacture(&ca);
    let rogue_ca = SwtpmCa::new();
    let rogue_tpm = Swtpm::manufacture(&rogue_ca);
    let lab = lab(&ca).await;
    let cp = &lab.cp;

    // An EK certificate from a CA the control plane does not trust.
    let mut s = Scripted::open(cp, "rogue", tools_enrollment(&rogue_tpm)).await;
    let v = refused_with(cp, "rogue", 0, "untrusted-ca").await;
    assert!(v.reason.contains("EK certificate"), "{v:?}");
    drop(s.stream.tx.clone());

    // An AK not bound to the EK: tpm's certified EK, other_tpm's AK. The
    // challenge is readable only by tpm, which does not hold that AK; the
    // answer is a guess.
    let mut enrollment = tools_enrollment(&tpm);
    enrollment.ak_public = tools_enrollment(&other_tpm).ak_public;
    s = Scripted::open(cp, "mixed", enrollment).await;
    let challenge = s.challenge().await;
    assert!(
        tools_activate(&other_tpm, &challenge).is_err(),
        "the other TPM cannot read a credential made for tpm's EK"
    );
    assert!(
        tools_activate(&tpm, &challenge).is_err(),
        "tpm cannot activate a credential for an AK it does not hold"
    );
    s.send(pb::agent_message::Body::CredentialActivated(
        pb::CredentialActivated {
            secret: vec![0u8; 32],
        },
    ))
    .await;
    refused_with(cp, "mixed", 0, "ak-not-bound").await;

    // The host then swaps in another TPM under the same agent id: its EK
    // differs from the one it enrolled.
    let _a = enrolled(cp, &tpm, "swap").await;
    let mut s = Scripted::open(cp, "swap", tools_enrollment(&other_tpm)).await;
    s.activate(&other_tpm).await;
    let before = attestation(cp, "swap").await.last_quote_at_unix_nanos;
    refused_with(cp, "swap", before, "ek-changed").await;

    // One TPM cannot vouch for a second host.
    let mut s = Scripted::open(cp, "twin", tools_enrollment(&tpm)).await;
    s.activate(&tpm).await;
    refused_with(cp, "twin", 0, "ek-in-use").await;

    // A huge certificate is refused unread; the reason stays short.
    let mut enrollment = tools_enrollment(&other_tpm);
    enrollment.ek_certificate = vec![0x30; 100_000];
    let _s = Scripted::open(cp, "huge", enrollment).await;
    let v = refused_with(cp, "huge", 0, "malformed").await;
    assert!(
        v.reason.len() <= 512 && v.reason.contains("100000 bytes"),
        "{v:?}"
    );

    // Two agents claiming one hostname: an operator's attestation command
    // by that hostname is refused, naming both, not sent to either.
    let _c1 = RawAgentStream::open(cp, 4, vec![hello("c1", "shared-name")]).await;
    let _c2 = RawAgentStream::open(cp, 4, vec![hello("c2", "shared-name")]).await;
    cp.wait_agent_summary("c2 registered", Duration::from_secs(10), "c2", |_| true)
        .await;
    let out = cp.vigilctl(&["agent", "reset-attestation", "shared-name"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("c1") && err.contains("c2"),
        "{err}"
    );
}

/// A boot event log that tests build, measured into the TPM the way
/// firmware would (each event's sha256 extended into its PCR).
fn measured_boot_log(tpm: &Swtpm) -> Vec<u8> {
    use vigil_attestation::{event_type, EventLogBuilder, HashAlg};
    let events: [(u32, u32, &[u8]); 4] = [
        (0, event_type::EV_S_CRTM_VERSION, b"vigil test firmware 1.0"),
        (
            4,
            event_type::EV_EFI_BOOT_SERVICES_APPLICATION,
            b"\\EFI\\BOOT\\BOOTX64.EFI",
        ),
        (
            7,
            event_type::EV_EFI_VARIABLE_DRIVER_CONFIG,
            b"SecureBoot=1",
        ),
        (7, event_type::EV_SEPARATOR, &[0, 0, 0, 0]),
    ];
    let mut log = EventLogBuilder::new(&[HashAlg::Sha256]);
    for (pcr, kind, data) in events {
        log.event(pcr, kind, data);
        tpm.extend_pcr(pcr as u8, &hex::encode(HashAlg::Sha256.hash(data)));
    }
    log.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_event_logs_must_replay_to_the_quote_and_bad_input_is_refused_by_name() {
    require_swtpm("attestation_attacks");
    let ca = SwtpmCa::new();
    let tpm = Swtpm::manufacture(&ca);
    let lab = lab(&ca).await;
    let cp = &lab.cp;
    let log = measured_boot_log(&tpm);

    // A log that replays to the quoted PCRs: trusted.
    let mut s = Scripted::open(cp, "h", tools_enrollment(&tpm)).await;
    s.activate(&tpm).await;
    let request = s.request().await;
    assert!(request.want_event_logs);
    let mut q = tools_quote(&tpm, &request);
    q.boot_event_log = log.clone();
    s.quote(q).await;
    let v = verdict_after(cp, "h", 0).await;
    assert_eq!(v.trust, "trusted", "{v:?}");

    // The same quote with a log whose PCR 4 event was changed (a boot
    // loader other than the one measured): refused, naming the PCR.
    let request = s.request().await;
    let mut q = tools_quote(&tpm, &request);
    let mut forged = log.clone();
    let at = forged
        .windows(6)
        .position(|w| w == b"\\EFI\\B")
        .expect("the boot loader's event data");
    forged[at + 6] ^= 0x20;
    // The event data changed, its digest too: rebuild that digest so the
    // log parses and only the replay can tell.
    let mut rebuilt =
        vigil_attestation::EventLogBuilder::new(&[vigil_attestation::HashAlg::Sha256]);
    for e in vigil_attestation::EventLog::parse(
        &forged,
        vigil_attestation::LogLimits {
            max_bytes: 1 << 20,
            max_events: 100,
            max_event_data: 1 << 16,
        },
    )
    .unwrap()
    .events
    {
        if e.event_type != vigil_attestation::event_type::EV_NO_ACTION {
            rebuilt.event(e.pcr_index, e.event_type, &e.data);
        }
    }
    q.boot_event_log = rebuilt.build();
    let before = attestation(cp, "h").await.last_quote_at_unix_nanos;
    s.quote(q).await;
    let v = refused_with(cp, "h", before, "event-log").await;
    assert!(v.reason.contains("PCR 4"), "{v:?}");

    // An oversized log is refused unread, saying the limit.
    let request = s.request().await;
    let mut q = tools_quote(&tpm, &request);
    q.boot_event_log = vec![0u8; (1 << 20) + 1];
    let before = attestation(cp, "h").await.last_quote_at_unix_nanos;
    s.quote(q).await;
    let v = verdict_after(cp, "h", before).await;
    assert_eq!(v.code, "event-log", "{v:?}");
    assert!(v.reason.contains("1048576"), "{v:?}");

    // Garbage in place of the quote, then a truncated signature: malformed,
    // with the structure and the byte named; the control plane goes on.
    let request = s.request().await;
    let mut q = tools_quote(&tpm, &request);
    q.attest = b"\xff\x54\x43\x47garbage".to_vec();
    let before = attestation(cp, "h").await.last_quote_at_unix_nanos;
    s.quote(q).await;
    let v = verdict_after(cp, "h", before).await;
    assert!(v.code == "malformed" || v.code == "signature", "{v:?}");
    let request = s.request().await;
    let mut q = tools_quote(&tpm, &request);
    q.signature.truncate(9);
    let before = attestation(cp, "h").await.last_quote_at_unix_nanos;
    s.quote(q).await;
    let v = verdict_after(cp, "h", before).await;
    assert_eq!(v.code, "malformed", "{v:?}");
    assert!(v.reason.contains("TPMT_SIGNATURE"), "{v:?}");

    // And on demand (`vigilctl agent attest`), an honest quote with the
    // honest log is trusted again: the command asks for a quote now and
    // prints its verdict.
    let endpoint = cp.endpoint();
    let asked = tokio::task::spawn_blocking(move || {
        std::process::Command::new(vigil_integration::binary("vigilctl"))
            .args([
                "--endpoint",
                &endpoint,
                "agent",
                "attest",
                "host-h",
                "-o",
                "json",
            ])
            .output()
            .unwrap()
    });
    let request = s.request().await;
    let mut q = tools_quote(&tpm, &request);
    q.boot_event_log = log;
    s.quote(q).await;
    let out = asked.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["trust"], "trusted", "{v}");
    assert_eq!(
        v["golden_pcrs"].as_object().map(|m| m.len()),
        Some(8),
        "{v}"
    );
}
