//! TPMS_ATTEST (TPM 2.0 Part 2, §10.12.12): what a TPM signs, as
//! TPM2_Quote returns it and `tpm2_quote -m` writes it.

use crate::pcr_selection::PcrSelection;
use crate::tpm_alg as alg;
use crate::wire::{ParseError, Reader};

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since it was made (or last
    /// cleared); advances while powered, saved to NV now and then.
    pub clock: u64,
    /// TPM Resets (reboots) since the TPM was made or cleared.
    pub reset_count: u32,
    /// TPM Restarts and Resumes (hibernate, suspend) since the last reset.
    pub restart_count: u32,
    /// The clock has not gone back since it was last reported (no
    /// disorderly shutdown lost its NV copy).
    pub safe: bool,
}

/// TPMS_QUOTE_INFO.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QuoteInfo {
    pub pcr_select: PcrSelection,
    pub pcr_digest: Vec<u8>,
}

/// TPMU_ATTEST: a quote's, read; any other kind kept as bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Attested {
    Quote(QuoteInfo),
    /// Certify, creation, audit, time, NV...: not read by this crate.
    Other {
        attest_type: u16,
        body: Vec<u8>,
    },
}

/// A parsed TPMS_ATTEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attest {
    pub magic: u32,
    pub attest_type: u16,
    /// TPM2B_NAME: the qualified name of the signing key.
    pub qualified_signer: Vec<u8>,
    /// TPM2B_DATA: the caller's qualifying data (vigil's nonce).
    pub extra_data: Vec<u8>,
    pub clock_info: ClockInfo,
    pub firmware_version: u64,
    pub attested: Attested,
}

impl Attest {
    /// Parses a TPMS_ATTEST of a quote: the magic must be
    /// TPM_GENERATED_VALUE and the type TPM_ST_ATTEST_QUOTE; nothing may
    /// follow it.
    pub fn parse(bytes: &[u8]) -> Result<Attest, ParseError> {
        let attest = Attest::parse_any(bytes)?;
        let r = Reader::new(bytes, "TPMS_ATTEST");
        attest
            .check_quote()
            .map_err(|(offset, field, problem)| r.invalid_at(offset, field, problem))?;
        Ok(attest)
    }

    /// Parses any TPMS_ATTEST without judging its magic or type (the
    /// signature over it is checked before they are trusted).
    pub fn parse_any(bytes: &[u8]) -> Result<Attest, ParseError> {
        let mut r = Reader::new(bytes, "TPMS_ATTEST");
        let magic = r.u32_be("magic")?;
        let attest_type = r.u16_be("type")?;
        let qualified_signer = r.tpm2b("qualifiedSigner", alg::MAX_NAME)?.to_vec();
        let extra_data = r.tpm2b("extraData", alg::MAX_DATA)?.to_vec();
        let clock = r.u64_be("clockInfo.clock")?;
        let reset_count = r.u32_be("clockInfo.resetCount")?;
        let restart_count = r.u32_be("clockInfo.restartCount")?;
        let safe_at = r.offset();
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            other => {
                return Err(r.invalid_at(
                    safe_at,
                    "clockInfo.safe",
                    format!("{other} is not YES (1) or NO (0)"),
                ))
            }
        };
        let firmware_version = r.u64_be("firmwareVersion")?;
        let attested = if attest_type == alg::TPM_ST_ATTEST_QUOTE {
            let pcr_select = PcrSelection::read(&mut r)?;
            let pcr_digest = r.tpm2b("quote.pcrDigest", alg::MAX_DIGEST)?.to_vec();
            r.finish()?;
            Attested::Quote(QuoteInfo {
                pcr_select,
                pcr_digest,
            })
        } else {
            let body = r.take(r.remaining(), "attested")?.to_vec();
            Attested::Other { attest_type, body }
        };
        Ok(Attest {
            magic,
            attest_type,
            qualified_signer,
            extra_data,
            clock_info: ClockInfo {
                clock,
                reset_count,
                restart_count,
                safe,
            },
            firmware_version,
            attested,
        })
    }

    /// The quote this attests, if it is one.
    pub fn quote(&self) -> Option<&QuoteInfo> {
        match &self.attested {
            Attested::Quote(q) => Some(q),
            Attested::Other { .. } => None,
        }
    }

    /// Magic and type of a quote, or (offset, field, what is wrong).
    pub(crate) fn check_quote(&self) -> Result<&QuoteInfo, (usize, &'static str, String)> {
        if self.magic != alg::TPM_GENERATED_VALUE {
            return Err((
                0,
                "magic",
                format!(
                    "{:#010x} is not TPM_GENERATED_VALUE {:#010x}: the TPM did not make this structure",
                    self.magic,
                    alg::TPM_GENERATED_VALUE
                ),
            ));
        }
        match &self.attested {
            Attested::Quote(q) => Ok(q),
            Attested::Other { attest_type, .. } => Err((
                4,
                "type",
                format!(
                    "{attest_type:#06x} is not TPM_ST_ATTEST_QUOTE {:#06x}",
                    alg::TPM_ST_ATTEST_QUOTE
                ),
            )),
        }
    }

    /// The marshalled TPMS_ATTEST (tests build quotes with it).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(&self.magic.to_be_bytes());
        out.extend_from_slice(&self.attest_type.to_be_bytes());
        crate::wire::put_tpm2b(&mut out, &self.qualified_signer);
        crate::wire::put_tpm2b(&mut out, &self.extra_data);
        out.extend_from_slice(&self.clock_info.clock.to_be_bytes());
        out.extend_from_slice(&self.clock_info.reset_count.to_be_bytes());
        out.extend_from_slice(&self.clock_info.restart_count.to_be_bytes());
        out.push(u8::from(self.clock_info.safe));
        out.extend_from_slice(&self.firmware_version.to_be_bytes());
        match &self.attested {
            Attested::Quote(q) => {
                q.pcr_select.write(&mut out);
                crate::wire::put_tpm2b(&mut out, &q.pcr_digest);
            }
            Attested::Other { body, .. } => out.extend_from_slice(body),
        }
        out
    }
}
