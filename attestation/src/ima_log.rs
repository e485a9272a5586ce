//! The kernel's IMA measurement list
//! (`/sys/kernel/security/ima/binary_runtime_measurements`), read and
//! replayed into the value of the PCR it extends (10).
//!
//! Host byte order (little-endian on every platform vigil runs on): per
//! entry, pcr u32, template digest\[20\] (SHA-1), template name length u32
//! and name, template data length u32 and data. The legacy "ima" template
//! (no data length) is not supported.

use std::collections::BTreeMap;

use crate::event_log::LogLimits;
use crate::hash_alg::HashAlg;
use crate::wire::{ParseError, ParseErrorKind, Reader};

/// PCRs 0 to 31.
const MAX_PCR: u32 = 31;
/// Longest template name accepted ("ima-ng", "ima-sig", "ima-modsig"...).
const MAX_TEMPLATE_NAME: usize = 255;

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImaEntry {
    pub pcr: u32,
    /// SHA-1 of the template data; all zeros records a violation (a file
    /// measured while open for writing, or the reverse).
    pub template_digest: [u8; 20],
    pub template_name: String,
    pub template_data: Vec<u8>,
}

impl ImaEntry {
    pub fn is_violation(&self) -> bool {
        self.template_digest == [0; 20]
    }
}

/// A parsed measurement list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImaLog {
    pub entries: Vec<ImaEntry>,
}

impl ImaLog {
    pub fn parse(bytes: &[u8], limits: LogLimits) -> Result<ImaLog, ParseError> {
        if bytes.len() > limits.max_bytes {
            return Err(ParseError {
                structure: "IMA log".into(),
                offset: 0,
                kind: ParseErrorKind::OverLimit {
                    what: "log size in bytes",
                    size: bytes.len(),
                    limit: limits.max_bytes,
                },
            });
        }
        let mut r = Reader::new(bytes, "IMA log");
        let mut entries = Vec::new();
        while r.remaining() > 0 {
            let index = entries.len();
            if index >= limits.max_events {
                return Err(r.error_at(
                    r.offset(),
                    ParseErrorKind::OverLimit {
                        what: "number of entries",
                        size: index + 1,
                        limit: limits.max_events,
                    },
                ));
            }
            let entry = read_entry(&mut r, limits)
                .map_err(|e| e.within(format!("IMA log, entry {index}")))?;
            entries.push(entry);
        }
        Ok(ImaLog { entries })
    }

    /// The PCR values the list produces in the `alg` bank, each PCR from
    /// zeros: SHA-1 extends the recorded template digest; the other banks
    /// the template data's hash with their algorithm (what kernels 5.x
    /// and later extend); a violation extends all ones in every bank.
    pub fn replay(&self, alg: HashAlg) -> BTreeMap<u8, Vec<u8>> {
        let mut pcrs: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let ones = vec![0xff; alg.digest_size()];
        for entry in &self.entries {
            let digest = if entry.is_violation() {
                ones.clone()
            } else if alg == HashAlg::Sha1 {
                entry.template_digest.to_vec()
            } else {
                alg.hash(&entry.template_data)
            };
            // parse refuses PCRs over 31.
            let pcr = u8::try_from(entry.pcr).unwrap_or(u8::MAX);
            let value = pcrs
                .entry(pcr)
                .or_insert_with(|| vec![0; alg.digest_size()]);
            *value = alg.extend(value, &digest);
        }
        pcrs
    }

    /// [`ImaLog::replay`] of the sha256 bank.
    pub fn replay_sha256(&self) -> BTreeMap<u8, Vec<u8>> {
        self.replay(HashAlg::Sha256)
    }
}

fn read_entry(r: &mut Reader<'_>, limits: LogLimits) -> Result<ImaEntry, ParseError> {
    let pcr_at = r.offset();
    let pcr = r.u32_le("pcr")?;
    if pcr > MAX_PCR {
        return Err(r.invalid_at(
            pcr_at,
            "pcr",
            format!("{pcr} is not a PCR (0 to {MAX_PCR})"),
        ));
    }
    let mut template_digest = [0u8; 20];
    template_digest.copy_from_slice(r.take(20, "template digest")?);
    let name_at = r.offset();
    let name_len = r.u32_le("template name length")? as usize;
    if name_len == 0 || name_len > MAX_TEMPLATE_NAME {
        return Err(r.invalid_at(
            name_at,
            "template name length",
            format!("{name_len} bytes (1 to {MAX_TEMPLATE_NAME})"),
        ));
    }
    let name = r.take(name_len, "template name")?;
    let template_name = std::str::from_utf8(name)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| r.invalid_at(name_at + 4, "template name", "not printable ASCII"))?
        .to_string();
    if template_name == "ima" {
        return Err(r.invalid_at(
            name_at + 4,
            "template name",
            "the legacy \"ima\" template (no data length) is not supported; use ima-ng",
        ));
    }
    let data_at = r.offset();
    let data_len = r.u32_le("template data length")? as usize;
    if data_len > limits.max_event_data {
        return Err(r.error_at(
            data_at,
            ParseErrorKind::OverLimit {
                what: "template data size",
                size: data_len,
                limit: limits.max_event_data,
            },
        ));
    }
    let template_data = r.take(data_len, "template data")?.to_vec();
    Ok(ImaEntry {
        pcr,
        template_digest,
        template_name,
        template_data,
    })
}

/// Writes measurement lists, for tests.
#[derive(Debug, Clone, Default)]
pub struct ImaLogBuilder {
    out: Vec<u8>,
}

impl ImaLogBuilder {
    pub fn new() -> ImaLogBuilder {
        ImaLogBuilder::default()
    }

    /// An entry with its SHA-1 template digest computed.
    pub fn entry(&mut self, pcr: u32, template_name: &str, template_data: &[u8]) -> &mut Self {
        let digest = HashAlg::Sha1.hash(template_data);
        self.raw(pcr, &digest, template_name, template_data)
    }

    /// An ima-ng entry for a file: its digest (`alg` names the algorithm as
    /// IMA does: "sha256") and path.
    pub fn ima_ng(&mut self, pcr: u32, alg: &str, file_digest: &[u8], path: &str) -> &mut Self {
        let data = ima_ng_template_data(alg, file_digest, path);
        self.entry(pcr, "ima-ng", &data)
    }

    /// A violation: the template digest is all zeros.
    pub fn violation(&mut self, pcr: u32, path: &str) -> &mut Self {
        let data = ima_ng_template_data("sha256", &[0; 32], path);
        self.raw(pcr, &[0; 20], "ima-ng", &data)
    }

    /// An entry exactly as given.
    pub fn raw(
        &mut self,
        pcr: u32,
        template_digest: &[u8],
        template_name: &str,
        template_data: &[u8],
    ) -> &mut Self {
        self.out.extend_from_slice(&pcr.to_le_bytes());
        let mut digest = [0u8; 20];
        for (slot, b) in digest.iter_mut().zip(template_digest) {
            *slot = *b;
        }
        self.out.extend_from_slice(&digest);
        self.out
            .extend_from_slice(&(template_name.len() as u32).to_le_bytes());
        self.out.extend_from_slice(template_name.as_bytes());
        self.out
            .extend_from_slice(&(template_data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(template_data);
        self
    }

    pub fn build(&self) -> Vec<u8> {
        self.out.clone()
    }
}

/// The ima-ng template data: the d-ng field ("alg:\0" and the digest) and
/// the n-ng field (the path, NUL-terminated), each after its u32 length.
pub fn ima_ng_template_data(alg: &str, file_digest: &[u8], path: &str) -> Vec<u8> {
    let mut d_ng = Vec::with_capacity(alg.len() + 2 + file_digest.len());
    d_ng.extend_from_slice(alg.as_bytes());
    d_ng.extend_from_slice(b":\0");
    d_ng.extend_from_slice(file_digest);
    let mut n_ng = path.as_bytes().to_vec();
    n_ng.push(0);
    let mut out = Vec::with_capacity(8 + d_ng.len() + n_ng.len());
    for field in [d_ng, n_ng] {
        out.extend_from_slice(&(field.len() as u32).to_le_bytes());
        out.extend_from_slice(&field);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = ImaLogBuilder::new();
        b.ima_ng(
            10,
            "sha256",
            &HashAlg::Sha256.hash(b"boot_aggregate"),
            "boot_aggregate",
        )
        .ima_ng(10, "sha256", &[0xab; 32], "/usr/bin/python3.11")
        .violation(10, "/tmp/model.gguf")
        .ima_ng(10, "sha256", &[0xcd; 32], "/usr/lib/libcuda.so.1");
        b.build()
    }

    #[test]
    fn replays_pcr_10_as_the_kernel_extends_it() {
        let log = ImaLog::parse(&sample(), LogLimits::default()).unwrap();
        assert_eq!(log.entries.len(), 4);
        assert!(log.entries[2].is_violation());
        assert_eq!(log.entries[1].template_name, "ima-ng");
        let h = HashAlg::Sha256;
        let mut pcr = vec![0u8; 32];
        for (i, e) in log.entries.iter().enumerate() {
            let d = if i == 2 {
                vec![0xff; 32]
            } else {
                h.hash(&e.template_data)
            };
            pcr = h.extend(&pcr, &d);
        }
        let replayed = log.replay_sha256();
        assert_eq!(replayed.len(), 1);
        assert_eq!(replayed[&10], pcr);
        let mut sha1 = vec![0u8; 20];
        for e in &log.entries {
            let d = if e.is_violation() {
                vec![0xff; 20]
            } else {
                e.template_digest.to_vec()
            };
            sha1 = HashAlg::Sha1.extend(&sha1, &d);
        }
        assert_eq!(log.replay(HashAlg::Sha1)[&10], sha1);
    }

    #[test]
    fn template_data_is_laid_out_as_ima_ng() {
        let data = ima_ng_template_data("sha256", &[1; 32], "/a");
        assert_eq!(data.len(), 4 + 8 + 32 + 4 + 3);
        assert_eq!(
            &data[..12],
            &[40, 0, 0, 0, b's', b'h', b'a', b'2', b'5', b'6', b':', 0]
        );
        assert_eq!(&data[44..], &[3, 0, 0, 0, b'/', b'a', 0]);
    }

    #[test]
    fn limits_and_refusals() {
        let bytes = sample();
        let e = ImaLog::parse(
            &bytes,
            LogLimits {
                max_bytes: 10,
                ..LogLimits::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "IMA log at byte 0: log size in bytes of {} is over the limit of 10",
                bytes.len()
            )
        );
        let e = ImaLog::parse(
            &bytes,
            LogLimits {
                max_events: 2,
                ..LogLimits::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("number of entries of 3 is over the limit of 2"),
            "{e}"
        );
        let e = ImaLog::parse(
            &bytes,
            LogLimits {
                max_event_data: 20,
                ..LogLimits::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("IMA log, entry 0 at byte 34: template data size of"),
            "{e}"
        );
        let e = ImaLog::parse(&bytes[..bytes.len() - 1], LogLimits::default()).unwrap_err();
        assert!(e.to_string().starts_with("IMA log, entry 3 at byte"), "{e}");
        assert!(
            e.to_string().contains("truncated: template data needs"),
            "{e}"
        );
        let mut legacy = ImaLogBuilder::new();
        legacy.entry(10, "ima", &[0; 8]);
        let e = ImaLog::parse(&legacy.build(), LogLimits::default()).unwrap_err();
        assert!(e.to_string().contains("legacy \"ima\" template"), "{e}");
        let mut high = ImaLogBuilder::new();
        high.entry(99, "ima-ng", &[]);
        let e = ImaLog::parse(&high.build(), LogLimits::default()).unwrap_err();
        assert!(e.to_string().contains("pcr: 99 is not a PCR"), "{e}");
    }
}
