//! TPML_PCR_SELECTION (TPM 2.0 Part 2, §10.9.7): which PCRs of which banks
//! a quote covers.

use std::fmt;

use crate::hash_alg::HashAlg;
use crate::wire::{ParseError, Reader};

/// HASH_COUNT: at most one selection per bank a TPM can have.
pub const MAX_BANKS: usize = 16;
/// PCRs 0..32: sizeofSelect up to 4 bytes (tpm2-tools' TPM2_PCR_SELECT_MAX;
/// PC Client TPMs have 24).
pub const MAX_PCRS: u8 = 32;

/// The selected PCRs of one bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BankSelection {
    pub hash_alg: HashAlg,
    /// Bit `i` selects PCR `i`.
    pub mask: u32,
}

impl BankSelection {
    /// PCRs of `hash_alg`; `None` if one is 32 or more.
    pub fn new(hash_alg: HashAlg, pcrs: &[u8]) -> Option<BankSelection> {
        let mut mask = 0u32;
        for &pcr in pcrs {
            mask |= 1u32
                .checked_shl(u32::from(pcr))
                .filter(|_| pcr < MAX_PCRS)?;
        }
        Some(BankSelection { hash_alg, mask })
    }

    pub fn contains(&self, pcr: u8) -> bool {
        pcr < MAX_PCRS && self.mask & (1 << pcr) != 0
    }

    /// The selected PCRs, ascending (the TPM's order).
    pub fn pcrs(&self) -> impl Iterator<Item = u8> + '_ {
        (0..MAX_PCRS).filter(move |pcr| self.contains(*pcr))
    }

    pub fn is_empty(&self) -> bool {
        self.mask == 0
    }

    /// sizeofSelect as a TPM writes it: at least 3 (PCR_SELECT_MIN).
    fn size_of_select(&self) -> u8 {
        if self.mask >> 24 == 0 {
            3
        } else {
            4
        }
    }
}

/// A TPML_PCR_SELECTION: banks in the order the TPM digests them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PcrSelection {
    pub banks: Vec<BankSelection>,
}

impl PcrSelection {
    /// One bank's PCRs (`sha256:0,1,2,...`); `None` if one is 32 or more.
    pub fn single(hash_alg: HashAlg, pcrs: &[u8]) -> Option<PcrSelection> {
        Some(PcrSelection {
            banks: vec![BankSelection::new(hash_alg, pcrs)?],
        })
    }

    /// Parses a marshalled TPML_PCR_SELECTION that must fill `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<PcrSelection, ParseError> {
        let mut r = Reader::new(bytes, "TPML_PCR_SELECTION");
        let out = PcrSelection::read(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    /// Reads a TPML_PCR_SELECTION inside a larger structure.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<PcrSelection, ParseError> {
        let count_at = r.offset();
        let count = r.u32_be("pcrSelect.count")?;
        if count as usize > MAX_BANKS {
            return Err(r.invalid_at(
                count_at,
                "pcrSelect.count",
                format!("{count} banks, at most {MAX_BANKS}"),
            ));
        }
        let mut banks = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let hash_at = r.offset();
            let id = r.u16_be("pcrSelect.pcrSelections.hash")?;
            let hash_alg = HashAlg::from_tpm_id(id).ok_or_else(|| {
                r.invalid_at(
                    hash_at,
                    "pcrSelect.pcrSelections.hash",
                    format!("{id:#06x} is not a supported PCR bank"),
                )
            })?;
            if banks.iter().any(|b: &BankSelection| b.hash_alg == hash_alg) {
                return Err(r.invalid_at(
                    hash_at,
                    "pcrSelect.pcrSelections.hash",
                    format!("the {hash_alg} bank is selected twice"),
                ));
            }
            let size_at = r.offset();
            let size = r.u8("pcrSelect.pcrSelections.sizeofSelect")?;
            if size > 4 {
                return Err(r.invalid_at(
                    size_at,
                    "pcrSelect.pcrSelections.sizeofSelect",
                    format!("{size} bytes, at most 4 (PCRs 0 to 31) are supported"),
                ));
            }
            let select = r.take(usize::from(size), "pcrSelect.pcrSelections.pcrSelect")?;
            let mut mask = [0u8; 4];
            for (slot, byte) in mask.iter_mut().zip(select) {
                *slot = *byte;
            }
            banks.push(BankSelection {
                hash_alg,
                mask: u32::from_le_bytes(mask),
            });
        }
        Ok(PcrSelection { banks })
    }

    /// The marshalled TPML_PCR_SELECTION.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.banks.len() * 7);
        self.write(&mut out);
        out
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.banks.len() as u32).to_be_bytes());
        for bank in &self.banks {
            out.extend_from_slice(&bank.hash_alg.tpm_id().to_be_bytes());
            let size = bank.size_of_select();
            out.push(size);
            out.extend_from_slice(
                bank.mask
                    .to_le_bytes()
                    .get(..usize::from(size))
                    .unwrap_or(&[]),
            );
        }
    }

    /// The banks that select at least one PCR.
    pub fn non_empty_banks(&self) -> impl Iterator<Item = &BankSelection> {
        self.banks.iter().filter(|b| !b.is_empty())
    }

    /// The same PCRs of the same banks in the same order, ignoring banks
    /// with nothing selected (a TPM lists a requested bank it does not
    /// have with no PCRs).
    pub fn same_pcrs(&self, other: &PcrSelection) -> bool {
        self.non_empty_banks().eq(other.non_empty_banks())
    }

    /// The number of selected PCRs across banks.
    pub fn len(&self) -> usize {
        self.banks
            .iter()
            .map(|b| b.mask.count_ones() as usize)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `sha256:0,1,2+sha1:7`, as tpm2-tools writes a selection.
impl fmt::Display for PcrSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.banks.is_empty() {
            return f.write_str("(nothing)");
        }
        for (i, bank) in self.banks.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{}:", bank.hash_alg)?;
            if bank.is_empty() {
                f.write_str("none")?;
            }
            for (j, pcr) in bank.pcrs().enumerate() {
                if j > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{pcr}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_tpm_encoding() {
        let sel = PcrSelection::single(HashAlg::Sha256, &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
        let bytes = sel.to_bytes();
        assert_eq!(bytes, [0, 0, 0, 1, 0x00, 0x0b, 3, 0xff, 0, 0]);
        assert_eq!(PcrSelection::parse(&bytes).unwrap(), sel);
        assert_eq!(sel.to_string(), "sha256:0,1,2,3,4,5,6,7");
    }

    #[test]
    fn high_pcrs_take_a_fourth_byte() {
        let sel = PcrSelection::single(HashAlg::Sha1, &[23, 31]).unwrap();
        let bytes = sel.to_bytes();
        assert_eq!(bytes, [0, 0, 0, 1, 0x00, 0x04, 4, 0, 0, 0x80, 0x80]);
        assert_eq!(PcrSelection::parse(&bytes).unwrap(), sel);
        assert!(BankSelection::new(HashAlg::Sha1, &[32]).is_none());
    }

    #[test]
    fn refusals_say_what_and_where() {
        let e = PcrSelection::parse(&[0, 0, 0, 1, 0x00, 0x12, 3, 0, 0, 0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "TPML_PCR_SELECTION at byte 4: pcrSelect.pcrSelections.hash: 0x0012 is not a supported PCR bank"
        );
        let e = PcrSelection::parse(&[0, 0, 0, 17]).unwrap_err();
        assert!(e.to_string().contains("17 banks, at most 16"), "{e}");
        let e = PcrSelection::parse(&[0, 0, 0, 1, 0, 0x0b, 9]).unwrap_err();
        assert!(e.to_string().contains("at byte 6"), "{e}");
        let twice = [0, 0, 0, 2, 0, 0x0b, 3, 1, 0, 0, 0, 0x0b, 3, 1, 0, 0];
        assert!(PcrSelection::parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("selected twice"));
    }

    #[test]
    fn same_pcrs_ignores_empty_banks() {
        let a = PcrSelection::single(HashAlg::Sha256, &[0, 7]).unwrap();
        let mut b = a.clone();
        b.banks.insert(
            0,
            BankSelection {
                hash_alg: HashAlg::Sha1,
                mask: 0,
            },
        );
        assert!(a.same_pcrs(&b));
        assert_ne!(a, b);
        assert_eq!(b.to_string(), "sha1:none+sha256:0,7");
        let c = PcrSelection::single(HashAlg::Sha256, &[0]).unwrap();
        assert!(!a.same_pcrs(&c));
    }
}
