//! TPM2_Quote: the AK signs the digest of the selected PCRs with the
//! verifier's nonce as qualifyingData. The PCR values travel beside the
//! quote for the verifier to replay logs against; they are read right
//! after it and checked here to be the ones quoted (the quote's
//! pcrDigest), quoting again when a PCR was extended in between.

use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{AttestInfo, Data, SignatureScheme};
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

use super::attestation_key::{self, AttestationKey};
use super::endorsement::load_ek;
use super::pcr_list::{PcrBank, PcrList};
use super::pcr_values::{self, pcr_digest, PcrValue};
use super::tpm_device::flush;
use super::tpm_error::{at, TpmError};

/// Quotes made before giving up when the PCRs keep changing.
pub const QUOTE_ATTEMPTS: u32 = 3;
/// The longest qualifyingData (the size of the largest digest).
pub const MAX_NONCE_LEN: usize = 64;

/// A quote as the TPM made it, and the values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteAnswer {
    /// TPMS_ATTEST, as signed.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE by the AK over `attest`.
    pub signature: Vec<u8>,
    /// The quoted PCRs' values, ascending by index.
    pub pcr_values: Vec<PcrValue>,
}

pub(crate) fn quote(
    ctx: &mut Context,
    key: &AttestationKey,
    nonce: &[u8],
    bank: PcrBank,
    pcrs: &PcrList,
) -> Result<QuoteAnswer, TpmError> {
    if nonce.len() > MAX_NONCE_LEN {
        return Err(TpmError::Invalid {
            what: "the quote's nonce",
            problem: format!("{} bytes; at most {MAX_NONCE_LEN}", nonce.len()),
        });
    }
    let qualifying = Data::try_from(nonce.to_vec()).map_err(at("the quote's nonce"))?;
    let ek = load_ek(ctx)?;
    let ak = attestation_key::load(ctx, ek.handle, key);
    // The quote needs only the AK: the EK's slot is freed at once.
    ek.release(ctx);
    let ak = ak?;
    let answer = quote_loaded(ctx, ak, &qualifying, bank, pcrs);
    flush(ctx, ak, "AK");
    answer
}

fn quote_loaded(
    ctx: &mut Context,
    ak: tss_esapi::handles::KeyHandle,
    qualifying: &Data,
    bank: PcrBank,
    pcrs: &PcrList,
) -> Result<QuoteAnswer, TpmError> {
    for _ in 0..QUOTE_ATTEMPTS {
        let selection = pcr_values::selection(bank, pcrs.indices().iter().copied())?;
        let (attest, signature) = ctx
            .execute_with_session(Some(AuthSession::Password), |ctx| {
                ctx.quote(ak, qualifying.clone(), SignatureScheme::Null, selection)
            })
            .map_err(at("TPM2_Quote with the AK"))?;
        let AttestInfo::Quote { info } = attest.attested() else {
            return Err(TpmError::Unexpected {
                what: "TPM2_Quote",
                problem: "its TPMS_ATTEST is not a quote".into(),
            });
        };
        if attest.extra_data().value() != qualifying.value() {
            return Err(TpmError::Unexpected {
                what: "TPM2_Quote",
                problem: "its extraData is not the nonce".into(),
            });
        }
        let quoted = info.pcr_digest().value().to_vec();
        let values = pcr_values::read(ctx, bank, pcrs)?;
        if quoted != pcr_digest(&values) {
            tracing::debug!("a quoted PCR changed before it was read; quoting again");
            continue;
        }
        return Ok(QuoteAnswer {
            attest: attest
                .marshall()
                .map_err(at("marshalling the quote's TPMS_ATTEST"))?,
            signature: signature
                .marshall()
                .map_err(at("marshalling the quote's TPMT_SIGNATURE"))?,
            pcr_values: values,
        });
    }
    Err(TpmError::PcrsKeptChanging {
        attempts: QUOTE_ATTEMPTS,
    })
}
