//! What went wrong with the TPM, and at which step.

use tss_esapi::constants::{Tss2ResponseCode, Tss2ResponseCodeKind};

use super::pcr_list::{PcrBank, PcrListError};
use super::tpm_wire::WireError;

#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    // The tss-esapi error is said in the message (with its response
    // code), not chained as a source: its own chain repeats it thrice.
    #[error("opening the TPM at {target}: {}", describe(.tss))]
    Open {
        target: String,
        tss: tss_esapi::Error,
    },
    /// The device file cannot be opened (missing, no permission).
    #[error("opening the TPM at {target}: {io}")]
    Device { target: String, io: std::io::Error },
    /// A TPM command (or tpm2-tss around it) failed.
    #[error("{step}: {}", describe(.tss))]
    Command {
        step: &'static str,
        tss: tss_esapi::Error,
    },
    /// TPM_RC_POLICY_FAIL on unseal: the PCR policy no longer holds.
    #[error("PCR values differ from those the secret was sealed to ({step}: {})", describe(.tss))]
    PcrsChanged {
        step: &'static str,
        tss: tss_esapi::Error,
    },
    #[error(
        "TPM2_PCR_Read: the TPM has no {bank} PCR bank with PCRs {pcrs} (it returned none of them)"
    )]
    NoPcrBank { bank: PcrBank, pcrs: String },
    #[error("the quoted PCRs kept changing: the quote's pcrDigest and the PCRs read right after it differed {attempts} times")]
    PcrsKeptChanging { attempts: u32 },
    /// Input the TPM cannot take (a nonce too long, a secret too large...).
    #[error("{what}: {problem}")]
    Invalid { what: &'static str, problem: String },
    /// An answer from the TPM that is not what the command promises.
    #[error("{what}: {problem}")]
    Unexpected { what: &'static str, problem: String },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Pcrs(#[from] PcrListError),
}

impl TpmError {
    /// Whether the TPM refused a policy (TPM_RC_POLICY_FAIL).
    pub fn is_policy_fail(tss: &tss_esapi::Error) -> bool {
        matches!(tss, tss_esapi::Error::Tss2Error(rc) if rc.kind() == Some(Tss2ResponseCodeKind::PolicyFail))
    }
}

/// A tss-esapi error and, for a TPM's or tpm2-tss's, its response code:
/// "a policy check failed (associated with session number 1; rc 0x99d)".
fn describe(tss: &tss_esapi::Error) -> String {
    let code = match tss {
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatZero(rc)) => rc.to_string(),
        tss_esapi::Error::Tss2Error(Tss2ResponseCode::FormatOne(rc)) => rc.to_string(),
        _ => return tss.to_string(),
    };
    // "Response code value: 0x99d"
    let code = code.rsplit(' ').next().unwrap_or_default();
    format!("{tss} (rc {code})")
}

/// Maps a tss-esapi error to the step that failed: `.map_err(at("TPM2_Quote"))`.
pub(crate) fn at(step: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |tss| TpmError::Command { step, tss }
}
