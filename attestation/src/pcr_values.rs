//! PCR values as reported next to a quote, and the digest a quote signs
//! over them (TPM 2.0 Part 3, TPM2_Quote: pcrDigest is the hash, with the
//! signing scheme's hash algorithm, of the selected PCR values
//! concatenated by bank in selection order, PCR index ascending).

use std::collections::BTreeMap;

use ring::digest;

use crate::hash_alg::HashAlg;
use crate::pcr_selection::PcrSelection;

/// The values of (some of) one bank's PCRs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrBank {
    pub hash_alg: HashAlg,
    pub values: BTreeMap<u8, Vec<u8>>,
}

/// A selected PCR has no usable reported value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcrError {
    #[error("no {bank} bank was reported (the selection names it)")]
    BankMissing { bank: HashAlg },
    #[error("{bank} PCR {pcr} is selected but has no reported value")]
    ValueMissing { bank: HashAlg, pcr: u8 },
    #[error("{bank} PCR {pcr} is reported as {len} bytes, a {bank} value is {expected}")]
    ValueSize {
        bank: HashAlg,
        pcr: u8,
        len: usize,
        expected: usize,
    },
}

impl PcrBank {
    pub fn new(hash_alg: HashAlg) -> PcrBank {
        PcrBank {
            hash_alg,
            values: BTreeMap::new(),
        }
    }

    /// This bank's part of a quote's digest: H_bank(the values of this
    /// bank's PCRs that `selection` selects, ascending). Other banks in
    /// `selection` are ignored.
    pub fn digest(&self, selection: &PcrSelection) -> Result<Vec<u8>, PcrError> {
        let only_this = PcrSelection {
            banks: selection
                .banks
                .iter()
                .filter(|b| b.hash_alg == self.hash_alg)
                .copied()
                .collect(),
        };
        pcr_digest(std::slice::from_ref(self), &only_this, self.hash_alg)
    }

    /// The value of one PCR, checked for the bank's digest size.
    pub(crate) fn value(&self, pcr: u8) -> Result<&[u8], PcrError> {
        let value = self.values.get(&pcr).ok_or(PcrError::ValueMissing {
            bank: self.hash_alg,
            pcr,
        })?;
        if value.len() != self.hash_alg.digest_size() {
            return Err(PcrError::ValueSize {
                bank: self.hash_alg,
                pcr,
                len: value.len(),
                expected: self.hash_alg.digest_size(),
            });
        }
        Ok(value)
    }
}

/// Every PCR `selection` selects has a value of its bank's digest size in
/// `banks`.
pub fn check_values(banks: &[PcrBank], selection: &PcrSelection) -> Result<(), PcrError> {
    for sel in selection.non_empty_banks() {
        let bank = find_bank(banks, sel.hash_alg)?;
        for pcr in sel.pcrs() {
            bank.value(pcr)?;
        }
    }
    Ok(())
}

/// H_`hash`(concatenation of the selected PCR values): by bank in
/// selection order, PCR index ascending. What TPM2_Quote signs as
/// pcrDigest, with `hash` the signature's hash algorithm.
pub fn pcr_digest(
    banks: &[PcrBank],
    selection: &PcrSelection,
    hash: HashAlg,
) -> Result<Vec<u8>, PcrError> {
    let mut ctx = digest::Context::new(hash.ring());
    for sel in selection.non_empty_banks() {
        let bank = find_bank(banks, sel.hash_alg)?;
        for pcr in sel.pcrs() {
            ctx.update(bank.value(pcr)?);
        }
    }
    Ok(ctx.finish().as_ref().to_vec())
}

fn find_bank(banks: &[PcrBank], hash_alg: HashAlg) -> Result<&PcrBank, PcrError> {
    banks
        .iter()
        .find(|b| b.hash_alg == hash_alg)
        .ok_or(PcrError::BankMissing { bank: hash_alg })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcr_selection::BankSelection;

    fn bank(alg: HashAlg, pcrs: &[(u8, u8)]) -> PcrBank {
        PcrBank {
            hash_alg: alg,
            values: pcrs
                .iter()
                .map(|(i, fill)| (*i, vec![*fill; alg.digest_size()]))
                .collect(),
        }
    }

    #[test]
    fn digest_concatenates_banks_in_selection_order_pcrs_ascending() {
        let sha1 = bank(HashAlg::Sha1, &[(0, 1), (3, 2)]);
        let sha256 = bank(HashAlg::Sha256, &[(1, 3), (2, 4)]);
        let selection = PcrSelection {
            banks: vec![
                BankSelection::new(HashAlg::Sha256, &[2, 1]).unwrap(),
                BankSelection::new(HashAlg::Sha1, &[3, 0]).unwrap(),
            ],
        };
        let expected =
            HashAlg::Sha256.hash(&[vec![3u8; 32], vec![4; 32], vec![1; 20], vec![2; 20]].concat());
        assert_eq!(
            pcr_digest(&[sha1.clone(), sha256.clone()], &selection, HashAlg::Sha256).unwrap(),
            expected
        );
        assert_eq!(
            sha256.digest(&selection).unwrap(),
            HashAlg::Sha256.hash(&[vec![3u8; 32], vec![4; 32]].concat())
        );
    }

    #[test]
    fn missing_and_short_values_are_named() {
        let mut b = bank(HashAlg::Sha256, &[(0, 1)]);
        let sel = PcrSelection::single(HashAlg::Sha256, &[0, 1]).unwrap();
        assert_eq!(
            pcr_digest(&[b.clone()], &sel, HashAlg::Sha256)
                .unwrap_err()
                .to_string(),
            "sha256 PCR 1 is selected but has no reported value"
        );
        b.values.insert(1, vec![0; 20]);
        assert_eq!(
            check_values(&[b], &sel).unwrap_err().to_string(),
            "sha256 PCR 1 is reported as 20 bytes, a sha256 value is 32"
        );
        assert_eq!(
            check_values(&[], &sel).unwrap_err(),
            PcrError::BankMissing {
                bank: HashAlg::Sha256
            }
        );
    }
}
