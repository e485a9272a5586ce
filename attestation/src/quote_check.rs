//! Whether a quote proves the PCR values an agent reports: the one check a
//! control plane makes per attestation.

use subtle::ConstantTimeEq;

use crate::attest::Attest;
use crate::hash_alg::HashAlg;
use crate::pcr_selection::PcrSelection;
use crate::pcr_values::{check_values, pcr_digest, PcrBank, PcrError};
use crate::prepared_key::PreparedKey;
use crate::signature::{verify, SignatureError, TpmtSignature};
use crate::tpm_public::{AkError, TpmPublic};
use crate::wire::ParseError;

/// A quote that verified: what it says about the TPM's clock and which
/// PCRs it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedQuote {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
    pub firmware_version: u64,
    pub selection: PcrSelection,
    /// The hash algorithm of the signature and of `pcr_digest`.
    pub hash_alg: HashAlg,
    pub pcr_digest: Vec<u8>,
}

/// Why a quote was refused. Each kind has a stable `reason_code()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The key given as the AK is not a restricted signing key: anything
    /// it signs proves nothing about the TPM.
    #[error("attestation key: {0}")]
    AttestationKey(AkError),
    #[error("malformed quote: {0}")]
    Malformed(ParseError),
    #[error("quote signature: {0}")]
    Signature(SignatureError),
    #[error("not a quote: {0}")]
    NotAQuote(ParseError),
    #[error("nonce mismatch: the quote's extraData ({got} bytes) is not the {expected}-byte nonce asked for")]
    NonceMismatch { expected: usize, got: usize },
    #[error("PCR selection: requested {requested}, the quote covers {quoted}")]
    PcrSelection {
        requested: PcrSelection,
        quoted: PcrSelection,
    },
    #[error("reported PCR values: {0}")]
    PcrMissing(PcrError),
    #[error(
        "PCR digest: the reported {selection} values hash to {computed}, the quote signs {quoted}"
    )]
    PcrDigest {
        selection: PcrSelection,
        computed: Hex,
        quoted: Hex,
    },
}

/// Bytes shown as hex in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

impl std::fmt::Display for Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl QuoteError {
    /// A short, stable machine code for metrics, audit records and APIs.
    pub fn reason_code(&self) -> &'static str {
        match self {
            QuoteError::AttestationKey(_) => "attestation-key",
            QuoteError::Malformed(_) => "malformed",
            QuoteError::Signature(_) => "signature",
            QuoteError::NotAQuote(_) => "not-a-quote",
            QuoteError::NonceMismatch { .. } => "nonce-mismatch",
            QuoteError::PcrSelection { .. } => "pcr-selection",
            QuoteError::PcrMissing(_) => "pcr-missing",
            QuoteError::PcrDigest { .. } => "pcr-digest",
        }
    }
}

/// Verifies a quote (a marshalled TPMS_ATTEST and its TPMT_SIGNATURE)
/// from the TPM holding `ak` against the nonce sent and the PCR values the
/// agent reports, in this order: the key is an AK; both structures parse;
/// the signature over `attest_bytes` verifies (before any field is
/// trusted); magic and type are a TPM-made quote's; extraData is
/// `expected_nonce` (compared in constant time); the quoted selection is
/// `requested`; every selected PCR has a reported value of its bank's
/// digest size; the values hash to the quoted pcrDigest.
pub fn verify_quote(
    ak: &TpmPublic,
    attest_bytes: &[u8],
    signature_bytes: &[u8],
    expected_nonce: &[u8],
    pcrs: &[PcrBank],
    requested: &PcrSelection,
) -> Result<VerifiedQuote, QuoteError> {
    check_quote(
        ak,
        |m, s| verify(ak, m, s),
        attest_bytes,
        signature_bytes,
        expected_nonce,
        pcrs,
        requested,
    )
}

/// As [`verify_quote`], with a key prepared for many quotes (what a
/// verifier keeps per enrolled AK: the fast path).
pub fn verify_quote_prepared(
    ak: &PreparedKey,
    attest_bytes: &[u8],
    signature_bytes: &[u8],
    expected_nonce: &[u8],
    pcrs: &[PcrBank],
    requested: &PcrSelection,
) -> Result<VerifiedQuote, QuoteError> {
    check_quote(
        ak.public(),
        |m, s| ak.verify(m, s),
        attest_bytes,
        signature_bytes,
        expected_nonce,
        pcrs,
        requested,
    )
}

fn check_quote(
    ak: &TpmPublic,
    verify_signature: impl Fn(&[u8], &TpmtSignature) -> Result<(), SignatureError>,
    attest_bytes: &[u8],
    signature_bytes: &[u8],
    expected_nonce: &[u8],
    pcrs: &[PcrBank],
    requested: &PcrSelection,
) -> Result<VerifiedQuote, QuoteError> {
    ak.check_attestation_key()
        .map_err(QuoteError::AttestationKey)?;
    let attest = Attest::parse_any(attest_bytes).map_err(QuoteError::Malformed)?;
    let signature = TpmtSignature::parse(signature_bytes).map_err(QuoteError::Malformed)?;
    verify_signature(attest_bytes, &signature).map_err(QuoteError::Signature)?;

    let quote = attest.check_quote().map_err(|(offset, field, problem)| {
        QuoteError::NotAQuote(
            crate::wire::Reader::new(attest_bytes, "TPMS_ATTEST")
                .invalid_at(offset, field, problem),
        )
    })?;
    if !bool::from(attest.extra_data.as_slice().ct_eq(expected_nonce)) {
        return Err(QuoteError::NonceMismatch {
            expected: expected_nonce.len(),
            got: attest.extra_data.len(),
        });
    }
    if !quote.pcr_select.same_pcrs(requested) {
        return Err(QuoteError::PcrSelection {
            requested: requested.clone(),
            quoted: quote.pcr_select.clone(),
        });
    }
    check_values(pcrs, &quote.pcr_select).map_err(QuoteError::PcrMissing)?;
    let hash_alg = signature.hash_alg();
    let computed = pcr_digest(pcrs, &quote.pcr_select, hash_alg).map_err(QuoteError::PcrMissing)?;
    if !bool::from(computed.as_slice().ct_eq(&quote.pcr_digest)) {
        return Err(QuoteError::PcrDigest {
            selection: quote.pcr_select.clone(),
            computed: Hex(computed),
            quoted: Hex(quote.pcr_digest.clone()),
        });
    }
    Ok(VerifiedQuote {
        clock: attest.clock_info.clock,
        reset_count: attest.clock_info.reset_count,
        restart_count: attest.clock_info.restart_count,
        safe: attest.clock_info.safe,
        firmware_version: attest.firmware_version,
        selection: quote.pcr_select.clone(),
        hash_alg,
        pcr_digest: computed,
    })
}
