//! What the control plane knows of a host's TPM: the endorsement key it
//! enrolled, the attestation key bound to it, the last quote's clock, the
//! PCR values the host must keep, and the verdict.
//!
//! Architecture invariant: trust changes only through a verified quote or
//! its absence (`TrustState` is set by the state machine's apply of a
//! quote result, never by an enrollment alone), so re-enrolling cannot wash
//! an untrusted host clean.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest failure code kept.
pub const MAX_CODE: usize = 32;
/// The longest failure reason kept (a reason may quote what a host sent).
pub const MAX_REASON: usize = 512;

/// A host's standing with the verifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum TrustState {
    /// No TPM has been verified for this host (none presented, or not
    /// quoted yet).
    #[default]
    Unattested,
    /// Its last quote verified and its PCRs match its policy.
    Trusted,
    /// Its last quote failed, or it stopped answering. `code` is short and
    /// stable ("signature", "nonce-replayed", "pcr-policy", "stale"...),
    /// `reason` says what exactly.
    Untrusted { code: String, reason: String },
}

impl TrustState {
    pub fn as_str(&self) -> &'static str {
        match self {
            TrustState::Unattested => "unattested",
            TrustState::Trusted => "trusted",
            TrustState::Untrusted { .. } => "untrusted",
        }
    }

    pub fn is_untrusted(&self) -> bool {
        matches!(self, TrustState::Untrusted { .. })
    }
}

impl fmt::Display for TrustState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustState::Untrusted { code, reason } => write!(f, "untrusted ({code}): {reason}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The TPM's clock as its last verified quote said it (TPMS_CLOCK_INFO).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TpmClock {
    /// Milliseconds the TPM has been powered (since its last clear).
    pub clock: u64,
    /// TPM resets (reboots) so far.
    pub reset_count: u32,
    /// TPM restarts (resumes from hibernation) since the last reset.
    pub restart_count: u32,
}

/// A host's attestation state, kept in its agent record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationRecord {
    #[serde(default)]
    pub trust: TrustState,
    /// When `trust` last changed (unix nanos; 0: never).
    #[serde(default)]
    pub trust_changed_at_unix_nanos: i64,
    /// sha256 (hex) of the enrolled EK's TPM2B_PUBLIC: the TPM this host
    /// is bound to. Empty until the first enrollment; another EK later is
    /// refused until an operator resets the host's attestation.
    #[serde(default)]
    pub ek_sha256: String,
    /// The EK certificate's subject and issuer, for operators.
    #[serde(default)]
    pub ek_certificate_issuer: String,
    /// sha256 (hex) of the attestation key's TPM2B_PUBLIC (a new one at
    /// every agent start).
    #[serde(default)]
    pub ak_sha256: String,
    #[serde(default)]
    pub enrolled_at_unix_nanos: i64,
    /// When the last quote (verified or not) was judged.
    #[serde(default)]
    pub last_quote_at_unix_nanos: i64,
    /// When the last quote that verified was judged.
    #[serde(default)]
    pub last_verified_at_unix_nanos: i64,
    /// The clock of the last verified quote.
    #[serde(default)]
    pub clock: Option<TpmClock>,
    /// The sha256-bank PCR values this host must keep (index → hex), taken
    /// from its first verified quote; empty until then and after an
    /// operator's reset.
    #[serde(default, with = "pcr_pairs")]
    pub golden_pcrs: BTreeMap<u32, String>,
}

/// What the verifier found in one quote (or in its absence), before the
/// state machine compares it with the host's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuoteResult {
    /// Nonce, signature, PCR digest (and event logs, when sent) verified.
    Verified {
        clock: TpmClock,
        /// The quoted sha256 PCR values (index → hex).
        #[serde(with = "pcr_pairs")]
        pcrs: BTreeMap<u32, String>,
    },
    /// The quote (or the enrollment, or the answer) failed.
    Failed { code: String, reason: String },
}

/// How a verified quote's clock compares with the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockChange {
    /// Same reset and restart, clock not behind.
    Advanced,
    /// resetCount went up: the TPM was reset (the host rebooted).
    Rebooted,
    /// restartCount went up within the same reset (a resume).
    Resumed,
}

/// Why a quote's clock cannot follow the last verified one (a replayed or
/// forged quote, or a TPM whose state was rolled back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    #[error("resetCount went backwards: {now} after {before}")]
    ResetBackwards { before: u32, now: u32 },
    #[error("restartCount went backwards within reset {reset}: {now} after {before}")]
    RestartBackwards { reset: u32, before: u32, now: u32 },
    #[error("the TPM clock went backwards within reset {reset}: {now} ms after {before} ms")]
    ClockBackwards { reset: u32, before: u64, now: u64 },
}

impl TpmClock {
    /// Compares this (newer) clock with `before`.
    pub fn follows(&self, before: &TpmClock) -> Result<ClockChange, ClockError> {
        use std::cmp::Ordering;
        match self.reset_count.cmp(&before.reset_count) {
            Ordering::Less => Err(ClockError::ResetBackwards {
                before: before.reset_count,
                now: self.reset_count,
            }),
            Ordering::Greater => Ok(ClockChange::Rebooted),
            Ordering::Equal => match self.restart_count.cmp(&before.restart_count) {
                Ordering::Less => Err(ClockError::RestartBackwards {
                    reset: self.reset_count,
                    before: before.restart_count,
                    now: self.restart_count,
                }),
                Ordering::Greater => Ok(ClockChange::Resumed),
                // The TPM's clock is advanced by the TPM only; a resume may
                // lose the last unsaved milliseconds, a plain quote never.
                Ordering::Equal if self.clock < before.clock => Err(ClockError::ClockBackwards {
                    reset: self.reset_count,
                    before: before.clock,
                    now: self.clock,
                }),
                Ordering::Equal => Ok(ClockChange::Advanced),
            },
        }
    }
}

impl AttestationRecord {
    /// Folds one quote result (judged at `at_unix_nanos`) into the record:
    /// a verified quote must follow the last one's clock (a reset is
    /// reported as a reboot, and the host is untrusted until its next
    /// quote) and keep the golden PCR values (its first verified quote
    /// sets them); a failed one makes the host untrusted. Returns whether
    /// the trust state changed.
    pub fn judge(&mut self, at_unix_nanos: i64, result: QuoteResult) -> bool {
        self.last_quote_at_unix_nanos = at_unix_nanos;
        let trust = match result {
            QuoteResult::Failed { code, reason } => TrustState::Untrusted {
                code: crate::cut_text(&code, MAX_CODE),
                reason: crate::cut_text(&reason, MAX_REASON),
            },
            QuoteResult::Verified { clock, pcrs } => {
                let change = match &self.clock {
                    None => Ok(ClockChange::Advanced),
                    Some(before) => clock.follows(before),
                };
                match change {
                    Err(e) => TrustState::Untrusted {
                        code: "clock".into(),
                        reason: e.to_string(),
                    },
                    Ok(change) => {
                        let before = self.clock.replace(clock);
                        self.last_verified_at_unix_nanos = at_unix_nanos;
                        if self.golden_pcrs.is_empty() {
                            self.golden_pcrs = pcrs.clone();
                        }
                        match (change, first_pcr_difference(&self.golden_pcrs, &pcrs)) {
                            (_, Some((index, want, got))) => TrustState::Untrusted {
                                code: "pcr-policy".into(),
                                reason: format!(
                                    "PCR {index} (sha256) is {got}, the host's policy says {want}"
                                ),
                            },
                            (ClockChange::Rebooted, None) => TrustState::Untrusted {
                                code: "reboot".into(),
                                reason: format!(
                                    "the TPM was reset (resetCount {} after {}): the host rebooted since its last quote",
                                    clock.reset_count,
                                    before.map_or(0, |b| b.reset_count)
                                ),
                            },
                            (ClockChange::Advanced | ClockChange::Resumed, None) => {
                                TrustState::Trusted
                            }
                        }
                    }
                }
            }
        };
        // A change is another state or another code: a reason that only
        // words the same failure differently (a replay a second later) is
        // no new verdict, audit entry or alert; the record keeps the
        // latest wording.
        let changed = match (&trust, &self.trust) {
            (TrustState::Untrusted { code: a, .. }, TrustState::Untrusted { code: b, .. }) => {
                a != b
            }
            (a, b) => a != b,
        };
        if changed {
            self.trust_changed_at_unix_nanos = at_unix_nanos;
        }
        self.trust = trust;
        changed
    }
}

/// PCR maps stored as `[[index, "hex"], ...]`: JSON object keys are
/// strings, and serde cannot turn them back into integers inside a
/// flattened struct (the agent record) or a tagged enum.
mod pcr_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, String>, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(u32, &String)> = m.iter().map(|(k, v)| (*k, v)).collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, String>, D::Error> {
        Ok(Vec::<(u32, String)>::deserialize(d)?.into_iter().collect())
    }
}

/// The first PCR whose quoted value differs from the host's golden value,
/// as (index, golden, quoted); a golden PCR missing from the quote counts
/// as differing ("absent").
pub fn first_pcr_difference(
    golden: &BTreeMap<u32, String>,
    quoted: &BTreeMap<u32, String>,
) -> Option<(u32, String, String)> {
    golden.iter().find_map(|(index, want)| {
        let got = quoted.get(index).map(String::as_str).unwrap_or("absent");
        (!got.eq_ignore_ascii_case(want)).then(|| (*index, want.clone(), got.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(clock: u64, reset_count: u32, restart_count: u32) -> TpmClock {
        TpmClock {
            clock,
            reset_count,
            restart_count,
        }
    }

    #[test]
    fn a_clock_moves_forward_reboots_and_resumes_but_never_back() {
        let c = clock(1000, 3, 1);
        assert_eq!(clock(1500, 3, 1).follows(&c), Ok(ClockChange::Advanced));
        assert_eq!(clock(1000, 3, 1).follows(&c), Ok(ClockChange::Advanced));
        assert_eq!(clock(10, 4, 0).follows(&c), Ok(ClockChange::Rebooted));
        assert_eq!(clock(900, 3, 2).follows(&c), Ok(ClockChange::Resumed));
        assert!(matches!(
            clock(999, 3, 1).follows(&c),
            Err(ClockError::ClockBackwards { .. })
        ));
        assert!(matches!(
            clock(5000, 2, 9).follows(&c),
            Err(ClockError::ResetBackwards { .. })
        ));
        assert!(matches!(
            clock(5000, 3, 0).follows(&c),
            Err(ClockError::RestartBackwards { .. })
        ));
    }

    fn verified(clock: TpmClock, pcr7: &str) -> QuoteResult {
        QuoteResult::Verified {
            clock,
            pcrs: [(0, "00".into()), (7, pcr7.into())].into(),
        }
    }

    #[test]
    fn the_first_quote_sets_the_golden_values_and_later_ones_must_keep_them() {
        let mut rec = AttestationRecord::default();
        assert!(rec.judge(1, verified(clock(10, 1, 0), "aa")));
        assert_eq!(rec.trust, TrustState::Trusted);
        assert_eq!(rec.golden_pcrs.get(&7).map(String::as_str), Some("aa"));
        assert!(!rec.judge(2, verified(clock(20, 1, 0), "aa")), "no change");
        assert!(rec.judge(3, verified(clock(30, 1, 0), "bb")));
        assert!(
            matches!(&rec.trust, TrustState::Untrusted { code, reason } if code == "pcr-policy" && reason.contains("PCR 7"))
        );
        assert_eq!(
            rec.golden_pcrs.get(&7).map(String::as_str),
            Some("aa"),
            "a bad quote never moves the baseline"
        );
        assert_eq!(rec.last_verified_at_unix_nanos, 3);
    }

    #[test]
    fn a_reset_is_a_reboot_then_trust_returns_and_a_clock_rollback_is_refused() {
        let mut rec = AttestationRecord::default();
        rec.judge(1, verified(clock(10, 1, 0), "aa"));
        assert!(rec.judge(2, verified(clock(5, 2, 0), "aa")));
        assert!(matches!(&rec.trust, TrustState::Untrusted { code, .. } if code == "reboot"));
        assert!(rec.judge(3, verified(clock(9, 2, 0), "aa")));
        assert_eq!(rec.trust, TrustState::Trusted);
        // A replayed older quote (its clock behind) is refused and does
        // not move the stored clock back.
        assert!(rec.judge(4, verified(clock(100, 1, 0), "aa")));
        assert!(matches!(&rec.trust, TrustState::Untrusted { code, .. } if code == "clock"));
        assert_eq!(rec.clock, Some(clock(9, 2, 0)));
    }

    #[test]
    fn a_failure_says_why_and_a_new_reason_is_a_change() {
        let mut rec = AttestationRecord::default();
        let failed = |code: &str| QuoteResult::Failed {
            code: code.into(),
            reason: "r".into(),
        };
        assert!(rec.judge(1, failed("signature")));
        assert!(!rec.judge(2, failed("signature")));
        let reworded = QuoteResult::Failed {
            code: "signature".into(),
            reason: "x".repeat(10_000),
        };
        assert!(
            !rec.judge(2, reworded),
            "the same code reworded is no change"
        );
        let long = QuoteResult::Failed {
            code: "c".repeat(100),
            reason: "x".repeat(10_000),
        };
        assert!(rec.judge(2, long));
        match &rec.trust {
            TrustState::Untrusted { code, reason } => {
                assert!(
                    code.len() <= MAX_CODE && reason.len() <= MAX_REASON + 8,
                    "{} {}",
                    code.len(),
                    reason.len()
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(rec.judge(3, failed("stale")));
        assert_eq!(rec.trust_changed_at_unix_nanos, 3);
    }

    #[test]
    fn records_and_results_round_trip_through_json_inside_an_agent_record() {
        let mut agent = crate::AgentRecord::default();
        agent.attestation.golden_pcrs = [(0, "aa".into()), (7, "bb".into())].into();
        let text = serde_json::to_string(&agent).unwrap();
        let back: crate::AgentRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, agent);
        let r = verified(clock(1, 2, 3), "cc");
        let back: QuoteResult = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_first_differing_pcr_is_named_and_a_missing_one_differs() {
        let golden: BTreeMap<u32, String> = [(0, "aa".into()), (7, "bb".into())].into();
        let same: BTreeMap<u32, String> =
            [(0, "AA".into()), (7, "bb".into()), (9, "cc".into())].into();
        assert_eq!(first_pcr_difference(&golden, &same), None);
        let changed: BTreeMap<u32, String> = [(0, "aa".into()), (7, "00".into())].into();
        assert_eq!(
            first_pcr_difference(&golden, &changed),
            Some((7, "bb".into(), "00".into()))
        );
        let missing: BTreeMap<u32, String> = [(0, "aa".into())].into();
        assert_eq!(
            first_pcr_difference(&golden, &missing),
            Some((7, "bb".into(), "absent".into()))
        );
    }
}
