//! The verifier: enrollment (EK certificate chain, EK matching it, an AK
//! bound to the EK by MakeCredential / ActivateCredential) and quotes
//! (nonce, AK signature, PCR digest, event logs), with no state of its own
//! but the nonce book. What a result means for the host (clock, golden
//! PCRs, trust) is decided by the state machine's apply
//! (`AttestationRecord::judge`), so every node judges alike.
//!
//! Architecture invariant: every failure is a `Refusal` with a stable code
//! that becomes an untrusted verdict and an alert; none is only logged.
//! Nothing here trusts a field of a quote before its signature verified.

use std::collections::BTreeMap;
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vigil_attestation::{
    EkCertificate, EventLog, HashAlg, ImaLog, LogLimits, PcrBank, PcrSelection, PreparedKey,
    TpmPublic,
};
use vigil_domain::{QuoteResult, TpmClock};
use vigil_proto::agent::v1 as pb;

use super::nonce_book::NonceBook;

/// A boot event log larger than this is refused unread.
pub const MAX_BOOT_LOG: usize = 1 << 20;
/// An IMA log larger than this is refused unread. A quote with its logs
/// must fit a gRPC message (4 MiB): the agent sends at most 2 MiB of IMA
/// log and 1 MiB of boot log (the logs whole, not only what is new since
/// its last quote).
pub const MAX_IMA_LOG: usize = 2 << 20;
/// The largest EK certificate taken (real ones are 1 to 2 KiB).
pub const MAX_EK_CERTIFICATE: usize = 8 << 10;
/// The largest TPM2B_PUBLIC, TPMS_ATTEST or TPMT_SIGNATURE taken (an
/// RSA-4096 key's public area is under 700 bytes).
pub const MAX_TPM_STRUCTURE: usize = 2 << 10;

/// Refuses a field over `max` bytes before anything parses it.
fn within(field: &str, bytes: &[u8], max: usize) -> Result<(), Refusal> {
    if bytes.len() > max {
        return Err(Refusal::new(
            "malformed",
            format!("{field}: {} bytes, at most {max} are taken", bytes.len()),
        ));
    }
    Ok(())
}

/// The most PCR values one quote may report (24 PCRs in a bank).
const MAX_REPORTED_PCRS: usize = 24;

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Manufacturer root certificates (DER) EK certificates must chain to.
    pub roots: Vec<Vec<u8>>,
    /// Intermediate certificates (DER) a chain may go through.
    pub intermediates: Vec<Vec<u8>>,
    /// The sha256 PCRs to quote.
    pub pcrs: Vec<u8>,
    /// How often each agent is quoted.
    pub interval: Duration,
    /// Hosts without a verified TPM get no approved workloads.
    pub require_attestation: bool,
}

/// Why an enrollment or a quote was refused: a short stable code and what
/// exactly failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: String,
    pub reason: String,
}

impl Refusal {
    /// A refusal; its reason is cut to `vigil_domain::MAX_REASON` bytes
    /// (it may quote what the agent sent).
    pub fn new(code: &str, reason: impl Into<String>) -> Refusal {
        Refusal {
            code: code.to_string(),
            reason: vigil_domain::cut_text(&reason.into(), vigil_domain::MAX_REASON),
        }
    }

    pub fn into_result(self) -> QuoteResult {
        QuoteResult::Failed {
            code: self.code,
            reason: self.reason,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

/// An enrollment waiting for the agent's ActivateCredential answer.
pub struct PendingEnrollment {
    secret: [u8; 32],
    tpm: EnrolledTpm,
}

/// A TPM whose AK is proven to live beside its certified EK.
#[derive(Clone)]
pub struct EnrolledTpm {
    /// The AK, prepared once for all its quotes.
    pub ak: std::sync::Arc<PreparedKey>,
    pub ek_sha256: String,
    pub ak_sha256: String,
    pub ek_certificate_issuer: String,
}

pub struct Verifier {
    config: VerifierConfig,
    selection: PcrSelection,
    nonces: NonceBook,
    rng: SystemRandom,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Verifier {
    pub fn new(config: VerifierConfig) -> Result<Verifier, String> {
        let selection = PcrSelection::single(HashAlg::Sha256, &config.pcrs)
            .ok_or_else(|| format!("PCR selection {:?}: PCRs are 0 to 23", config.pcrs))?;
        // An answer may take up to one interval; a nonce is remembered for
        // ten, so a replay within that is named as one.
        let ttl = config.interval.max(Duration::from_secs(1));
        Ok(Verifier {
            nonces: NonceBook::new(ttl, ttl * 10, 1 << 20),
            selection,
            config,
            rng: SystemRandom::new(),
        })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Checks an agent's TPM identity and makes the credential challenge:
    /// the EK certificate chains to a configured root, certifies this EK,
    /// the EK is an endorsement key and the AK a restricted signing key;
    /// the challenge's secret is readable only by the TPM holding the EK,
    /// and only for a key with the AK's Name.
    pub fn challenge(
        &self,
        enrollment: &pb::TpmEnrollment,
        now_unix_secs: i64,
    ) -> Result<(PendingEnrollment, pb::CredentialChallenge), Refusal> {
        within(
            "tpm_enrollment.ek_certificate",
            &enrollment.ek_certificate,
            MAX_EK_CERTIFICATE,
        )?;
        within(
            "tpm_enrollment.ek_public",
            &enrollment.ek_public,
            MAX_TPM_STRUCTURE,
        )?;
        within(
            "tpm_enrollment.ak_public",
            &enrollment.ak_public,
            MAX_TPM_STRUCTURE,
        )?;
        let ek = TpmPublic::parse(&enrollment.ek_public)
            .map_err(|e| Refusal::new("malformed", format!("tpm_enrollment.ek_public: {e}")))?;
        ek.check_endorsement_key()
            .map_err(|e| Refusal::new("ek-key", format!("tpm_enrollment.ek_public: {e}")))?;
        let ak = TpmPublic::parse(&enrollment.ak_public)
            .map_err(|e| Refusal::new("malformed", format!("tpm_enrollment.ak_public: {e}")))?;
        ak.check_attestation_key().map_err(|e| {
            Refusal::new("attestation-key", format!("tpm_enrollment.ak_public: {e}"))
        })?;
        let cert = EkCertificate::verify(
            &enrollment.ek_certificate,
            &self.config.intermediates,
            &self.config.roots,
            now_unix_secs,
        )
        .map_err(|e| {
            Refusal::new(
                e.reason_code(),
                format!(
                    "EK certificate (sha256 {}): {e}",
                    sha256_hex(&enrollment.ek_certificate)
                ),
            )
        })?;
        if !cert.matches(&ek) {
            return Err(Refusal::new(
                "ek-mismatch",
                "the EK certificate certifies another key than the EK presented",
            ));
        }
        let mut secret = [0u8; 32];
        self.rng
            .fill(&mut secret)
            .map_err(|_| Refusal::new("internal", "the system random generator failed"))?;
        let credential = vigil_attestation::make_credential(&ek, &ak.name(), &secret, &self.rng)
            .map_err(|e| Refusal::new("ek-key", format!("MakeCredential to the EK: {e}")))?;
        let tpm = EnrolledTpm {
            ek_sha256: sha256_hex(&enrollment.ek_public),
            ak_sha256: sha256_hex(&enrollment.ak_public),
            ek_certificate_issuer: cert.issuer().to_string(),
            ak: std::sync::Arc::new(PreparedKey::new(ak)),
        };
        Ok((
            PendingEnrollment { secret, tpm },
            pb::CredentialChallenge {
                id_object: credential.id_object,
                encrypted_secret: credential.encrypted_secret,
            },
        ))
    }

    /// The agent's answer to the challenge: the AK is bound to the EK when
    /// it recovered the secret.
    pub fn activated(
        &self,
        pending: PendingEnrollment,
        answer: &pb::CredentialActivated,
    ) -> Result<EnrolledTpm, Refusal> {
        if bool::from(answer.secret.as_slice().ct_eq(&pending.secret)) {
            Ok(pending.tpm)
        } else {
            Err(Refusal::new(
                "ak-not-bound",
                "the credential's secret came back wrong: the AK is not in the TPM holding the certified EK",
            ))
        }
    }

    /// A quote request with a fresh nonce, issued to `agent_id`.
    pub fn request(
        &self,
        agent_id: &str,
        want_event_logs: bool,
    ) -> Result<pb::AttestRequest, Refusal> {
        let nonce = self
            .nonces
            .issue(agent_id)
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        Ok(pb::AttestRequest {
            nonce: nonce.to_vec(),
            hash_alg: u32::from(HashAlg::Sha256.tpm_id()),
            pcrs: self.config.pcrs.iter().map(|&p| u32::from(p)).collect(),
            want_event_logs,
        })
    }

    /// Judges one quote of `agent_id`'s enrolled TPM.
    pub fn judge(&self, agent_id: &str, tpm: &EnrolledTpm, quote: &pb::Quote) -> QuoteResult {
        match self.verify(agent_id, tpm, quote) {
            Ok(result) => result,
            Err(refusal) => refusal.into_result(),
        }
    }

    fn verify(
        &self,
        agent_id: &str,
        tpm: &EnrolledTpm,
        quote: &pb::Quote,
    ) -> Result<QuoteResult, Refusal> {
        self.nonces
            .redeem(agent_id, &quote.nonce)
            .map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        within("quote.attest", &quote.attest, MAX_TPM_STRUCTURE)?;
        within("quote.signature", &quote.signature, MAX_TPM_STRUCTURE)?;
        let banks = reported_banks(&quote.pcrs)?;
        let verified = vigil_attestation::verify_quote_prepared(
            &tpm.ak,
            &quote.attest,
            &quote.signature,
            &quote.nonce,
            &banks,
            &self.selection,
        )
        .map_err(|e| Refusal::new(e.reason_code(), e.to_string()))?;
        let sha256 = banks
            .iter()
            .find(|b| b.hash_alg == HashAlg::Sha256)
            .ok_or_else(|| Refusal::new("pcr-missing", "no sha256 PCR values reported"))?;
        if !quote.boot_event_log.is_empty() {
            check_boot_log(&quote.boot_event_log, sha256)?;
        }
        if !quote.ima_log.is_empty() {
            check_ima_log(&quote.ima_log, sha256)?;
        }
        Ok(QuoteResult::Verified {
            clock: TpmClock {
                clock: verified.clock,
                reset_count: verified.reset_count,
                restart_count: verified.restart_count,
            },
            pcrs: sha256
                .values
                .iter()
                .filter(|(i, _)| self.config.pcrs.contains(i))
                .map(|(i, v)| (u32::from(*i), hex::encode(v)))
                .collect(),
        })
    }
}

/// The reported PCR values as banks; a bank or PCR named twice, an index
/// past 23 or too many values is malformed.
fn reported_banks(wire: &[pb::PcrBankValues]) -> Result<Vec<PcrBank>, Refusal> {
    let mut banks: Vec<PcrBank> = Vec::new();
    let mut count = 0usize;
    for (i, bank) in wire.iter().enumerate() {
        let alg = u16::try_from(bank.hash_alg)
            .ok()
            .and_then(HashAlg::from_tpm_id)
            .ok_or_else(|| {
                Refusal::new(
                    "malformed",
                    format!(
                        "quote.pcrs[{i}].hash_alg: unknown TPM_ALG_ID {:#x}",
                        bank.hash_alg
                    ),
                )
            })?;
        if banks.iter().any(|b| b.hash_alg == alg) {
            return Err(Refusal::new(
                "malformed",
                format!("quote.pcrs[{i}]: the {alg} bank is reported twice"),
            ));
        }
        let mut values = BTreeMap::new();
        for (j, v) in bank.values.iter().enumerate() {
            count += 1;
            if count > MAX_REPORTED_PCRS * 4 {
                return Err(Refusal::new("malformed", "quote.pcrs: too many PCR values"));
            }
            let index = u8::try_from(v.index)
                .ok()
                .filter(|i| *i < 24)
                .ok_or_else(|| {
                    Refusal::new(
                        "malformed",
                        format!(
                            "quote.pcrs[{i}].values[{j}].index: {} is not a PCR (0 to 23)",
                            v.index
                        ),
                    )
                })?;
            if values.insert(index, v.digest.clone()).is_some() {
                return Err(Refusal::new(
                    "malformed",
                    format!("quote.pcrs[{i}].values[{j}]: PCR {index} is reported twice"),
                ));
            }
        }
        banks.push(PcrBank {
            hash_alg: alg,
            values,
        });
    }
    Ok(banks)
}

/// The boot event log must replay to the quoted values of the PCRs it
/// measures.
fn check_boot_log(log: &[u8], quoted: &PcrBank) -> Result<(), Refusal> {
    let limits = LogLimits {
        max_bytes: MAX_BOOT_LOG,
        max_events: 20_000,
        max_event_data: 64 << 10,
    };
    let parsed = EventLog::parse(log, limits)
        .map_err(|e| Refusal::new("event-log", format!("boot event log: {e}")))?;
    let replayed = parsed
        .replay(HashAlg::Sha256)
        .map_err(|e| Refusal::new("event-log", format!("boot event log: {e}")))?;
    compare_replay("boot event log", &replayed, quoted)
}

/// The IMA log must replay to the quoted PCR 10 (when quoted).
fn check_ima_log(log: &[u8], quoted: &PcrBank) -> Result<(), Refusal> {
    let limits = LogLimits {
        max_bytes: MAX_IMA_LOG,
        max_events: 200_000,
        max_event_data: 64 << 10,
    };
    let parsed =
        ImaLog::parse(log, limits).map_err(|e| Refusal::new("ima-log", format!("IMA log: {e}")))?;
    let replayed = parsed.replay_sha256();
    compare_replay("IMA log", &replayed, quoted).map_err(|r| Refusal::new("ima-log", r.reason))
}

fn compare_replay(
    what: &str,
    replayed: &BTreeMap<u8, Vec<u8>>,
    quoted: &PcrBank,
) -> Result<(), Refusal> {
    for (index, value) in replayed {
        if let Some(q) = quoted.values.get(index) {
            if q != value {
                return Err(Refusal::new(
                    "event-log",
                    format!(
                        "the {what} replays PCR {index} to {}, the quote proves {}",
                        hex::encode(value),
                        hex::encode(q)
                    ),
                ));
            }
        }
    }
    Ok(())
}
