//! Reading PCR values: TPM2_PCR_Read returns at most 8 digests a call
//! (and says which), so it is asked again for the rest; a bank the TPM
//! does not have returns none, which ends the reading with an error
//! rather than a loop.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest as _, Sha256};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{PcrSelectionList, PcrSlot};
use tss_esapi::Context;

use super::pcr_list::{PcrBank, PcrList, MAX_PCR};
use super::tpm_error::{at, TpmError};

/// One PCR's value: its index and digest.
pub type PcrValue = (u32, Vec<u8>);

pub(crate) fn hashing_algorithm(bank: PcrBank) -> HashingAlgorithm {
    match bank {
        PcrBank::Sha1 => HashingAlgorithm::Sha1,
        PcrBank::Sha256 => HashingAlgorithm::Sha256,
        PcrBank::Sha384 => HashingAlgorithm::Sha384,
        PcrBank::Sha512 => HashingAlgorithm::Sha512,
    }
}

/// The selection of `indices` in `bank`.
pub(crate) fn selection(
    bank: PcrBank,
    indices: impl IntoIterator<Item = u32>,
) -> Result<PcrSelectionList, TpmError> {
    let mut slots = Vec::new();
    for i in indices {
        if i > MAX_PCR {
            return Err(super::pcr_list::PcrListError::OutOfRange(i).into());
        }
        slots.push(PcrSlot::try_from(1u32 << i).map_err(at("a PCR selection"))?);
    }
    PcrSelectionList::builder()
        .with_selection(hashing_algorithm(bank), &slots)
        .build()
        .map_err(at("a PCR selection"))
}

/// The values of `pcrs` in `bank`, ascending by index.
pub(crate) fn read(
    ctx: &mut Context,
    bank: PcrBank,
    pcrs: &PcrList,
) -> Result<Vec<PcrValue>, TpmError> {
    let algorithm = hashing_algorithm(bank);
    let mut wanted: BTreeSet<u32> = pcrs.indices().iter().copied().collect();
    let mut values = BTreeMap::new();
    // Each round reads at least one PCR, or fails.
    while !wanted.is_empty() {
        let asked = selection(bank, wanted.iter().copied())?;
        let (_, read, digests) = ctx
            .execute_without_session(|ctx| ctx.pcr_read(asked))
            .map_err(at("TPM2_PCR_Read"))?;
        let mut indices: Vec<u32> = Vec::new();
        for s in read.get_selections() {
            if s.hashing_algorithm() != algorithm {
                return Err(TpmError::Unexpected {
                    what: "TPM2_PCR_Read",
                    problem: format!(
                        "returned the {:?} bank, asked for {bank}",
                        s.hashing_algorithm()
                    ),
                });
            }
            let mut selected: Vec<u32> = s
                .selected()
                .into_iter()
                .map(|slot| u32::from(slot).trailing_zeros())
                .collect();
            selected.sort_unstable();
            indices.extend(selected);
        }
        if indices.is_empty() {
            return Err(TpmError::NoPcrBank {
                bank,
                pcrs: pcrs.to_string(),
            });
        }
        let digests = digests.value();
        if digests.len() != indices.len() {
            return Err(TpmError::Unexpected {
                what: "TPM2_PCR_Read",
                problem: format!(
                    "{} digests for {} selected PCRs",
                    digests.len(),
                    indices.len()
                ),
            });
        }
        for (index, digest) in indices.into_iter().zip(digests) {
            if !wanted.remove(&index) {
                return Err(TpmError::Unexpected {
                    what: "TPM2_PCR_Read",
                    problem: format!("returned PCR {index}, which was not asked for (or twice)"),
                });
            }
            if digest.value().len() != bank.digest_len() {
                return Err(TpmError::Unexpected {
                    what: "TPM2_PCR_Read",
                    problem: format!(
                        "PCR {index}: a {}-byte digest in the {bank} bank",
                        digest.value().len()
                    ),
                });
            }
            values.insert(index, digest.value().to_vec());
        }
    }
    Ok(values.into_iter().collect())
}

/// sha256 over the values in index order: TPM2_Quote's pcrDigest (for an
/// AK whose scheme hashes with sha256) and PolicyPCR's pcrDigest.
pub fn pcr_digest(values: &[PcrValue]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for (_, digest) in values {
        hash.update(digest);
    }
    hash.finalize().into()
}
