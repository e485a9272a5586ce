//! Files in tpm2-tools' (5.x) own formats, so that vigil's inputs and
//! outputs can be checked with `tpm2_checkquote` and fed to
//! `tpm2_activatecredential`.
//!
//! `tpm2_quote -o FILE` ("serialized", the default `-F`) dumps C structs
//! in host byte order (little-endian on every platform vigil runs on):
//! a TPML_PCR_SELECTION as the TSS lays it out (u32 count, then 16
//! TPMS_PCR_SELECTION of {u16 hash, u8 sizeofSelect, u8 pcrSelect\[4\],
//! one byte of padding}), a u32 count, then that many TPML_DIGEST (u32
//! count, then 8 TPM2B_DIGEST of {u16 size, u8 buffer\[64\]}). The values
//! follow the selection: by bank in order, PCR index ascending, eight per
//! TPML_DIGEST as TPM2_PCR_Read returns them.
//!
//! `tpm2_makecredential -o FILE` writes the magic 0xBADCC0DE and version 1
//! (big-endian u32s), then the TPM2B_ID_OBJECT and the
//! TPM2B_ENCRYPTED_SECRET as marshalled.

use crate::hash_alg::HashAlg;
use crate::pcr_selection::{BankSelection, PcrSelection, MAX_BANKS};
use crate::pcr_values::{PcrBank, PcrError};
use crate::wire::{ParseError, Reader};

const TSS_PCR_SELECT_MAX: usize = 4;
const TSS_PCR_SELECTION_SIZE: usize = 2 + 1 + TSS_PCR_SELECT_MAX + 1;
const TSS_PCR_SELECTIONS_SIZE: usize = 4 + MAX_BANKS * TSS_PCR_SELECTION_SIZE;
const DIGESTS_PER_LIST: usize = 8;
const TPMU_HA_SIZE: usize = 64;
const TPML_DIGEST_SIZE: usize = 4 + DIGESTS_PER_LIST * (2 + TPMU_HA_SIZE);

/// The magic and version before a `tpm2_makecredential` output.
pub const CREDENTIAL_FILE_MAGIC: u32 = 0xBADC_C0DE;
pub const CREDENTIAL_FILE_VERSION: u32 = 1;

/// Reads a `tpm2_quote -o` PCR file: the selection it was made for and
/// one [`PcrBank`] per selected bank, in selection order.
pub fn parse_pcrs_file_with_selection(
    bytes: &[u8],
) -> Result<(PcrSelection, Vec<PcrBank>), ParseError> {
    let mut r = Reader::new(bytes, "tpm2-tools PCR file");
    let count_at = r.offset();
    let count = r.u32_le("pcrSelections.count")? as usize;
    if count > MAX_BANKS {
        return Err(r.invalid_at(
            count_at,
            "pcrSelections.count",
            format!("{count} banks, at most {MAX_BANKS}"),
        ));
    }
    let mut selection = PcrSelection::default();
    for i in 0..MAX_BANKS {
        let at = r.offset();
        let id = r.u16_le("pcrSelections.hash")?;
        let size = r.u8("pcrSelections.sizeofSelect")?;
        let select = r.take(TSS_PCR_SELECT_MAX, "pcrSelections.pcrSelect")?;
        r.take(1, "pcrSelections.padding")?;
        if i >= count {
            continue;
        }
        let hash_alg = HashAlg::from_tpm_id(id).ok_or_else(|| {
            r.invalid_at(
                at,
                "pcrSelections.hash",
                format!("{id:#06x} is not a supported PCR bank"),
            )
        })?;
        if usize::from(size) > TSS_PCR_SELECT_MAX {
            return Err(r.invalid_at(
                at + 2,
                "pcrSelections.sizeofSelect",
                format!("{size}, at most 4"),
            ));
        }
        let mut mask = [0u8; 4];
        for (slot, byte) in mask.iter_mut().zip(select).take(usize::from(size)) {
            *slot = *byte;
        }
        selection.banks.push(BankSelection {
            hash_alg,
            mask: u32::from_le_bytes(mask),
        });
    }
    let lists_at = r.offset();
    let lists = r.u32_le("pcrs.count")? as usize;
    let needed = selection.len().div_ceil(DIGESTS_PER_LIST);
    if lists != needed {
        return Err(r.invalid_at(
            lists_at,
            "pcrs.count",
            format!(
                "{lists} digest lists, the selection's {} PCRs need {needed}",
                selection.len()
            ),
        ));
    }
    let mut values: Vec<&[u8]> = Vec::with_capacity(selection.len());
    for _ in 0..lists {
        let at = r.offset();
        let n = r.u32_le("pcrs.pcr_values.count")? as usize;
        if n > DIGESTS_PER_LIST {
            return Err(r.invalid_at(
                at,
                "pcrs.pcr_values.count",
                format!("{n} digests, at most 8"),
            ));
        }
        for j in 0..DIGESTS_PER_LIST {
            let size_at = r.offset();
            let size = usize::from(r.u16_le("pcrs.pcr_values.digests.size")?);
            let buffer = r.take(TPMU_HA_SIZE, "pcrs.pcr_values.digests.buffer")?;
            if j < n {
                let digest = buffer.get(..size).ok_or_else(|| {
                    r.invalid_at(
                        size_at,
                        "pcrs.pcr_values.digests.size",
                        format!("{size}, at most 64"),
                    )
                })?;
                values.push(digest);
            }
        }
    }
    r.finish()?;
    if values.len() != selection.len() {
        return Err(r.invalid_at(
            lists_at,
            "pcrs",
            format!(
                "{} values for the selection's {} PCRs",
                values.len(),
                selection.len()
            ),
        ));
    }
    let mut values = values.into_iter();
    let mut banks = Vec::with_capacity(selection.banks.len());
    for sel in &selection.banks {
        let mut bank = PcrBank::new(sel.hash_alg);
        for pcr in sel.pcrs() {
            if let Some(v) = values.next() {
                bank.values.insert(pcr, v.to_vec());
            }
        }
        banks.push(bank);
    }
    Ok((selection, banks))
}

/// Reads a `tpm2_quote -o` PCR file into one [`PcrBank`] per selected
/// bank, in selection order.
pub fn parse_pcrs_file(bytes: &[u8]) -> Result<Vec<PcrBank>, ParseError> {
    parse_pcrs_file_with_selection(bytes).map(|(_, banks)| banks)
}

/// Writes the PCR file `tpm2_checkquote -f` reads for `selection`, with
/// the values of `banks`. Every selected PCR needs a value of its bank's
/// size.
pub fn write_pcrs_file(banks: &[PcrBank], selection: &PcrSelection) -> Result<Vec<u8>, PcrError> {
    crate::pcr_values::check_values(banks, selection)?;
    let mut out = Vec::with_capacity(TSS_PCR_SELECTIONS_SIZE + 4 + 3 * TPML_DIGEST_SIZE);
    out.extend_from_slice(&(selection.banks.len().min(MAX_BANKS) as u32).to_le_bytes());
    for i in 0..MAX_BANKS {
        match selection.banks.get(i) {
            Some(sel) => {
                out.extend_from_slice(&sel.hash_alg.tpm_id().to_le_bytes());
                out.push(if sel.mask >> 24 == 0 { 3 } else { 4 });
                out.extend_from_slice(&sel.mask.to_le_bytes());
                out.push(0);
            }
            None => out.extend_from_slice(&[0; TSS_PCR_SELECTION_SIZE]),
        }
    }
    let mut values: Vec<&[u8]> = Vec::with_capacity(selection.len());
    for sel in &selection.banks {
        if let Some(bank) = banks.iter().find(|b| b.hash_alg == sel.hash_alg) {
            for pcr in sel.pcrs() {
                values.push(bank.value(pcr)?);
            }
        }
    }
    let chunks: Vec<&[&[u8]]> = values.chunks(DIGESTS_PER_LIST).collect();
    out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
    for chunk in chunks {
        out.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        for j in 0..DIGESTS_PER_LIST {
            let value = chunk.get(j).copied().unwrap_or(&[]);
            let mut buffer = [0u8; TPMU_HA_SIZE];
            let n = value.len().min(TPMU_HA_SIZE);
            if let (Some(dst), Some(src)) = (buffer.get_mut(..n), value.get(..n)) {
                dst.copy_from_slice(src);
            }
            out.extend_from_slice(&(n as u16).to_le_bytes());
            out.extend_from_slice(&buffer);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "tpm2_tools_files_tests.rs"]
mod tests;
