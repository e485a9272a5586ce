//! Which PCRs of which bank: `--pcrs 0-7` or `0,1,2,7` on the command
//! line, an `AttestRequest`'s `hash_alg` and `pcrs` on the wire.

use std::fmt;
use std::str::FromStr;

/// The highest PCR index: a PC Client TPM has 24 PCRs.
pub const MAX_PCR: u32 = 23;

/// A PCR bank, by its hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PcrBank {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcrListError {
    #[error("PCR bank {0:?}: expected sha1, sha256, sha384 or sha512")]
    UnknownBankName(String),
    #[error("PCR bank TPM_ALG_ID 0x{0:04x}: expected 0x0004 (sha1), 0x000b (sha256), 0x000c (sha384) or 0x000d (sha512)")]
    UnknownBankId(u32),
    #[error("PCR list {given:?}: {problem}")]
    Syntax { given: String, problem: String },
    #[error("PCR {0} is out of range (0-{MAX_PCR})")]
    OutOfRange(u32),
    #[error("no PCR selected")]
    Empty,
}

impl PcrBank {
    /// The bank of a `TPM_ALG_ID`.
    pub fn from_alg_id(id: u32) -> Result<PcrBank, PcrListError> {
        match id {
            0x0004 => Ok(PcrBank::Sha1),
            0x000b => Ok(PcrBank::Sha256),
            0x000c => Ok(PcrBank::Sha384),
            0x000d => Ok(PcrBank::Sha512),
            other => Err(PcrListError::UnknownBankId(other)),
        }
    }

    /// Its `TPM_ALG_ID`.
    pub fn alg_id(self) -> u16 {
        match self {
            PcrBank::Sha1 => 0x0004,
            PcrBank::Sha256 => 0x000b,
            PcrBank::Sha384 => 0x000c,
            PcrBank::Sha512 => 0x000d,
        }
    }

    /// The length of its digests in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            PcrBank::Sha1 => 20,
            PcrBank::Sha256 => 32,
            PcrBank::Sha384 => 48,
            PcrBank::Sha512 => 64,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PcrBank::Sha1 => "sha1",
            PcrBank::Sha256 => "sha256",
            PcrBank::Sha384 => "sha384",
            PcrBank::Sha512 => "sha512",
        }
    }
}

impl FromStr for PcrBank {
    type Err = PcrListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sha1" => Ok(PcrBank::Sha1),
            "sha256" => Ok(PcrBank::Sha256),
            "sha384" => Ok(PcrBank::Sha384),
            "sha512" => Ok(PcrBank::Sha512),
            _ => Err(PcrListError::UnknownBankName(s.to_string())),
        }
    }
}

impl fmt::Display for PcrBank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// PCR indices, ascending, each once, at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrList(Vec<u32>);

impl PcrList {
    /// The indices given in any order (an `AttestRequest`'s), checked.
    pub fn from_indices(indices: &[u32]) -> Result<PcrList, PcrListError> {
        let mut list = indices.to_vec();
        if let Some(&bad) = list.iter().find(|&&i| i > MAX_PCR) {
            return Err(PcrListError::OutOfRange(bad));
        }
        list.sort_unstable();
        list.dedup();
        if list.is_empty() {
            return Err(PcrListError::Empty);
        }
        Ok(PcrList(list))
    }

    pub fn indices(&self) -> &[u32] {
        &self.0
    }
}

impl FromStr for PcrList {
    type Err = PcrListError;

    /// `0-7`, `0,1,2,7`, `0-3,7`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = |problem: String| PcrListError::Syntax {
            given: s.to_string(),
            problem,
        };
        let index = |t: &str| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| syntax(format!("{:?} is not a PCR index", t.trim())))
        };
        let mut indices = Vec::new();
        for item in s.split(',') {
            if item.trim().is_empty() {
                return Err(syntax("an empty item".into()));
            }
            match item.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (index(first)?, index(last)?);
                    if first > last {
                        return Err(syntax(format!("range {first}-{last} runs backwards")));
                    }
                    if last > MAX_PCR {
                        return Err(PcrListError::OutOfRange(last));
                    }
                    indices.extend(first..=last);
                }
                None => indices.push(index(item)?),
            }
        }
        PcrList::from_indices(&indices)
    }
}

impl fmt::Display for PcrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
#[path = "pcr_list_tests.rs"]
mod tests;
