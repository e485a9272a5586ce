//! Attestation figures, side by side in one run:
//! - quote verifications per second on one core (a real RSA-2048 AK quote
//!   from swtpm, all checks of `verify_quote`) against `openssl speed
//!   rsa2048`'s verify/s, and against `tpm2_checkquote` on the same quote;
//! - the time from a PCR change on a host to "untrusted" at the control
//!   plane, p50 and p99, with the quote interval it ran at.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vigil_attestation::{HashAlg, PcrSelection, PreparedKey, TpmPublic};
use vigil_integration::attesting_client::{tools_activate, tools_enrollment, tools_quote};
use vigil_integration::raw_agent::{hello, RawAgentStream};
use vigil_integration::swtpm::{Swtpm, SwtpmCa};
use vigil_integration::{free_port, ControlPlane};
use vigil_proto::agent::v1 as pb;

use crate::report::{Figure, Report};

const CMD: &str = "VIGIL_BENCH_ONLY=attestation make bench";
const FOR: Duration = Duration::from_secs(3);

async fn last_quote_at(cp: &ControlPlane, agent_id: &str) -> anyhow::Result<i64> {
    Ok(cp
        .agent_summary(agent_id)
        .await?
        .and_then(|a| a.attestation)
        .map_or(0, |a| a.last_quote_at_unix_nanos))
}

/// verify/s of `openssl speed rsa2048` on one core.
fn openssl_rsa2048_verify_per_sec() -> anyhow::Result<f64> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", "3", "rsa2048"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("rsa 2048 bits"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no rsa 2048 line in openssl speed's output: {text}"))
}

pub fn attestation(
    rt: &tokio::runtime::Runtime,
    work: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let ca = SwtpmCa::new();
    let tpm = Swtpm::manufacture(&ca);
    let enrollment = tools_enrollment(&tpm);
    let nonce: Vec<u8> = (0u8..32).collect();
    let request = pb::AttestRequest {
        nonce: nonce.clone(),
        hash_alg: u32::from(HashAlg::Sha256.tpm_id()),
        pcrs: (0..8).collect(),
        want_event_logs: false,
    };
    let quote = tools_quote(&tpm, &request);
    // As the verifier keeps it for an enrolled AK.
    let ak = PreparedKey::new(TpmPublic::parse(&enrollment.ak_public)?);
    let selection = PcrSelection::single(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7])
        .ok_or_else(|| anyhow::anyhow!("selection"))?;
    let banks = vigil_attestation::tpm2_tools_files::parse_pcrs_file(&std::fs::read(
        tpm.dir().join("quote.pcrs"),
    )?)?;

    // vigil, one thread: every check of a quote.
    let verify = || {
        vigil_attestation::verify_quote_prepared(
            &ak,
            &quote.attest,
            &quote.signature,
            &nonce,
            &banks,
            &selection,
        )
    };
    verify().map_err(|e| anyhow::anyhow!("the benchmark's quote does not verify: {e}"))?;
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < FOR {
        for _ in 0..100 {
            std::hint::black_box(verify().is_ok());
        }
        n += 100;
    }
    let vigil_rate = n as f64 / start.elapsed().as_secs_f64();
    let openssl_rate = openssl_rsa2048_verify_per_sec()?;
    let what = "quote verifications/s on one core (RSA-2048 AK, sha256 PCRs 0-7: signature, nonce, selection, PCR digest) / openssl speed rsa2048 verify/s (same run)";
    println!("{what}: {vigil_rate:.0} / {openssl_rate:.0}");
    report.push(Figure::ratio(what, vigil_rate, openssl_rate, "verifications/s", CMD).goal(0.85));

    // tpm2_checkquote on the same quote (one process per check, as
    // Keylime's verifier ran it).
    // (`ak.pub` in the TPM's directory is the AK's TPM2B_PUBLIC.)
    let checkquote = |_: ()| -> anyhow::Result<()> {
        let out = Command::new("tpm2_checkquote")
            .args([
                "-u",
                "ak.pub",
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-f",
                "quote.pcrs",
                "-g",
                "sha256",
                "-q",
            ])
            .arg(hex::encode(&nonce))
            .current_dir(tpm.dir())
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "tpm2_checkquote refused the quote: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    let start = Instant::now();
    let mut m = 0u64;
    while start.elapsed() < FOR {
        checkquote(())?;
        m += 1;
    }
    let tools_rate = m as f64 / start.elapsed().as_secs_f64();
    let what = "quote verifications/s on one core: vigil / tpm2_checkquote 5.4 on the same quote, one process per check (same run)";
    println!("{what}: {vigil_rate:.0} / {tools_rate:.1}");
    report.push(Figure::ratio(
        what,
        vigil_rate,
        tools_rate,
        "verifications/s",
        CMD,
    ));

    rt.block_on(pcr_change_to_untrusted(&ca, tpm, work, report))
}

/// PCR 7 extended on the host, then the time until the control plane
/// says untrusted; the host is then reset by the operator and quoted
/// again. The agent side answers each request at once (tpm2-tools).
async fn pcr_change_to_untrusted(
    ca: &SwtpmCa,
    tpm: Swtpm,
    work: &Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    const INTERVAL_SECS: u64 = 1;
    const ROUNDS: usize = 20;
    let bundle = work.join("tpm-ca.pem");
    ca.write_bundle(&bundle);
    let cp = ControlPlane::try_start(
        &work.join("cp-attest"),
        free_port(),
        &[
            "--tpm-ca",
            bundle.to_str().unwrap_or_default(),
            "--attest-interval-secs",
            &INTERVAL_SECS.to_string(),
        ],
    )?;
    cp.try_wait_leader().await?;
    let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
    // From the changed quote leaving the host to the untrusted verdict.
    let mut verdicts = hdrhistogram::Histogram::<u64>::new(3)?;
    for round in 0..ROUNDS {
        let agent_id = "bench-host";
        let mut stream = RawAgentStream::open(
            &cp,
            16,
            vec![
                hello(agent_id, "bench-host"),
                pb::AgentMessage {
                    body: Some(pb::agent_message::Body::TpmEnrollment(tools_enrollment(
                        &tpm,
                    ))),
                },
            ],
        )
        .await;
        // Answer every challenge and request until the host is trusted,
        // then change a PCR and keep answering until it is untrusted.
        let mut changed_at: Option<Instant> = None;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(15), stream.inbound.message())
                .await
                .map_err(|_| anyhow::anyhow!("no message from the control plane in 15 s"))??
                .ok_or_else(|| anyhow::anyhow!("the stream ended"))?;
            let body = match msg.body {
                Some(pb::control_message::Body::CredentialChallenge(c)) => {
                    let secret = tools_activate(&tpm, &c).map_err(|e| anyhow::anyhow!(e))?;
                    Some(pb::agent_message::Body::CredentialActivated(
                        pb::CredentialActivated { secret },
                    ))
                }
                Some(pb::control_message::Body::AttestRequest(r)) => {
                    Some(pb::agent_message::Body::Quote(tools_quote(&tpm, &r)))
                }
                _ => None,
            };
            let Some(body) = body else { continue };
            let quoted = matches!(body, pb::agent_message::Body::Quote(_));
            let before = last_quote_at(&cp, agent_id).await?;
            let sent_at = Instant::now();
            stream.send(pb::AgentMessage { body: Some(body) }).await;
            if !quoted {
                continue;
            }
            // The verdict on this quote.
            let deadline = Instant::now() + Duration::from_secs(5);
            let trust = loop {
                let a = cp
                    .agent_summary(agent_id)
                    .await?
                    .and_then(|a| a.attestation)
                    .unwrap_or_default();
                if a.last_quote_at_unix_nanos != before || Instant::now() > deadline {
                    break a.trust;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            };
            match (trust.as_str(), changed_at) {
                ("trusted", None) => {
                    tpm.extend_pcr(7, &format!("{:064x}", round + 1));
                    changed_at = Some(Instant::now());
                }
                ("untrusted", Some(at)) => {
                    verdicts.record(sent_at.elapsed().as_micros() as u64)?;
                    hist.record(at.elapsed().as_micros() as u64)?;
                    break;
                }
                _ => {}
            }
        }
        drop(stream);
        let out = cp.vigilctl(&["agent", "reset-attestation", agent_id]);
        anyhow::ensure!(
            out.status.success(),
            "reset-attestation: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let p50 = hist.value_at_quantile(0.5) as f64 / 1000.0;
    let p99 = hist.value_at_quantile(0.99) as f64 / 1000.0;
    let interval_ms = (INTERVAL_SECS * 1000) as f64;
    for (q, v) in [("p50", p50), ("p99", p99)] {
        let what = format!("PCR change on a host to untrusted at the control plane, {q} ({ROUNDS} changes, quote interval {INTERVAL_SECS} s) / the quote interval");
        println!("{what}: {v:.1} ms / {interval_ms:.0} ms");
        report.push(Figure::ratio(&what, v, interval_ms, "ms", CMD).goal_max(2.0));
    }
    for (q, v) in [("p50", 0.5), ("p99", 0.99)] {
        let ms = verdicts.value_at_quantile(v) as f64 / 1000.0;
        let what = format!("a changed host's quote sent to its untrusted verdict at the control plane (verify, raft commit, apply), {q} ({ROUNDS} changes) / the quote interval");
        println!("{what}: {ms:.2} ms / {interval_ms:.0} ms");
        report.push(Figure::ratio(&what, ms, interval_ms, "ms", CMD));
    }
    Ok(())
}
