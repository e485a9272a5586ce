//! The firmware's measurement log (TCG PC Client Platform Firmware
//! Profile, §10: crypto-agile format), read and replayed into the PCR
//! values a quote proves.
//!
//! Little-endian throughout. The first event is in the SHA-1 format
//! (TCG_PCClientPCREvent: pcrIndex u32, eventType u32, digest\[20\],
//! eventDataSize u32, event) with EV_NO_ACTION and a TCG_EfiSpecIDEvent
//! ("Spec ID Event03") listing each algorithm's id and digest size; every
//! following event is a TCG_PCR_EVENT2 (pcrIndex u32, eventType u32,
//! TPML_DIGEST_VALUES {count u32, {hashAlg u16, digest}...}, eventSize
//! u32, event).

use std::collections::BTreeMap;

use crate::hash_alg::HashAlg;
use crate::wire::{ParseError, ParseErrorKind, Reader};

/// Event types (PC Client PFP, §10.4.1).
pub mod event_type {
    pub const EV_PREBOOT_CERT: u32 = 0x0;
    pub const EV_POST_CODE: u32 = 0x1;
    pub const EV_NO_ACTION: u32 = 0x3;
    pub const EV_SEPARATOR: u32 = 0x4;
    pub const EV_ACTION: u32 = 0x5;
    pub const EV_EVENT_TAG: u32 = 0x6;
    pub const EV_S_CRTM_CONTENTS: u32 = 0x7;
    pub const EV_S_CRTM_VERSION: u32 = 0x8;
    pub const EV_CPU_MICROCODE: u32 = 0x9;
    pub const EV_PLATFORM_CONFIG_FLAGS: u32 = 0xa;
    pub const EV_TABLE_OF_DEVICES: u32 = 0xb;
    pub const EV_COMPACT_HASH: u32 = 0xc;
    pub const EV_IPL: u32 = 0xd;
    pub const EV_IPL_PARTITION_DATA: u32 = 0xe;
    pub const EV_NONHOST_CODE: u32 = 0xf;
    pub const EV_NONHOST_CONFIG: u32 = 0x10;
    pub const EV_NONHOST_INFO: u32 = 0x11;
    pub const EV_OMIT_BOOT_DEVICE_EVENTS: u32 = 0x12;
    pub const EV_EFI_VARIABLE_DRIVER_CONFIG: u32 = 0x8000_0001;
    pub const EV_EFI_VARIABLE_BOOT: u32 = 0x8000_0002;
    pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
    pub const EV_EFI_BOOT_SERVICES_DRIVER: u32 = 0x8000_0004;
    pub const EV_EFI_RUNTIME_SERVICES_DRIVER: u32 = 0x8000_0005;
    pub const EV_EFI_GPT_EVENT: u32 = 0x8000_0006;
    pub const EV_EFI_ACTION: u32 = 0x8000_0007;
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;
    pub const EV_EFI_HANDOFF_TABLES: u32 = 0x8000_0009;
    pub const EV_EFI_PLATFORM_FIRMWARE_BLOB2: u32 = 0x8000_000a;
    pub const EV_EFI_HANDOFF_TABLES2: u32 = 0x8000_000b;
    pub const EV_EFI_VARIABLE_BOOT2: u32 = 0x8000_000c;
    pub const EV_EFI_VARIABLE_AUTHORITY: u32 = 0x8000_00e0;
}

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY_SIGNATURE: &[u8; 16] = b"StartupLocality\0";
/// PCRs 0 to 31 (PC Client TPMs have 24).
const MAX_PCR: u32 = 31;

/// How much of a log is read at most: a log over a limit is refused
/// before it is parsed (or as soon as the count is passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Size of the whole log in bytes.
    pub max_bytes: usize,
    /// Number of events (entries).
    pub max_events: usize,
    /// Size of one event's data in bytes.
    pub max_event_data: usize,
}

impl Default for LogLimits {
    /// 16 MiB, 200,000 events, 1 MiB of data per event: far above what
    /// firmware (tens of KiB) or a busy IMA policy (a few MiB) writes.
    fn default() -> Self {
        LogLimits {
            max_bytes: 16 << 20,
            max_events: 200_000,
            max_event_data: 1 << 20,
        }
    }
}

/// One algorithm's digest of an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventDigest {
    /// The TPM_ALG_ID (a log may carry a bank this crate does not
    /// compute, SM3_256 for one).
    pub alg_id: u16,
    pub digest: Vec<u8>,
}

/// One TCG_PCR_EVENT2.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogEvent {
    pub pcr_index: u32,
    pub event_type: u32,
    pub digests: Vec<EventDigest>,
    pub data: Vec<u8>,
}

impl LogEvent {
    /// This event's digest for `alg`.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.alg_id == alg.tpm_id())
            .map(|d| d.digest.as_slice())
    }
}

/// A parsed crypto-agile event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    pub platform_class: u32,
    /// (major, minor, errata) of the PFP specification the firmware follows.
    pub spec_version: (u8, u8, u8),
    pub uintn_size: u8,
    /// (TPM_ALG_ID, digest size) of each bank the log records.
    pub algorithms: Vec<(u16, u16)>,
    pub vendor_info: Vec<u8>,
    /// The locality TPM2_Startup ran at, from an EV_NO_ACTION
    /// "StartupLocality" event (the last byte of PCR 0's initial value).
    pub startup_locality: Option<u8>,
    /// Every event after the Spec ID event, EV_NO_ACTION ones included.
    pub events: Vec<LogEvent>,
}

/// A log cannot be replayed for a bank.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    #[error("the log has no {0} bank (it records {1})")]
    NoBank(HashAlg, String),
    #[error("event {index} (PCR {pcr}) has no {alg} digest")]
    MissingDigest {
        index: usize,
        pcr: u32,
        alg: HashAlg,
    },
}

fn over_limit(
    structure: &'static str,
    what: &'static str,
    size: usize,
    limit: usize,
) -> ParseError {
    ParseError {
        structure: structure.into(),
        offset: 0,
        kind: ParseErrorKind::OverLimit { what, size, limit },
    }
}

impl EventLog {
    /// Parses a crypto-agile log (`/sys/kernel/security/tpm0/binary_bios_measurements`).
    pub fn parse(bytes: &[u8], limits: LogLimits) -> Result<EventLog, ParseError> {
        if bytes.len() > limits.max_bytes {
            return Err(over_limit(
                "TCG event log",
                "log size in bytes",
                bytes.len(),
                limits.max_bytes,
            ));
        }
        let mut r = Reader::new(bytes, "TCG event log");
        let mut log = read_spec_id_event(&mut r, limits)?;
        let mut index = 0usize;
        while r.remaining() > 0 {
            if index >= limits.max_events {
                return Err(r.error_at(
                    r.offset(),
                    ParseErrorKind::OverLimit {
                        what: "number of events",
                        size: index + 1,
                        limit: limits.max_events,
                    },
                ));
            }
            let event = read_event2(&mut r, &log.algorithms, limits)
                .map_err(|e| e.within(format!("TCG event log, event {index}")))?;
            if event.event_type == event_type::EV_NO_ACTION && event.pcr_index == 0 {
                if let Some(rest) = event
                    .data
                    .strip_prefix(STARTUP_LOCALITY_SIGNATURE.as_slice())
                {
                    log.startup_locality = rest.first().copied();
                }
            }
            log.events.push(event);
            index += 1;
        }
        Ok(log)
    }

    /// The PCR values the log's measurements produce in the `alg` bank:
    /// each PCR starts at zeros (PCR 0's last byte is the startup
    /// locality, where the log records one) and is extended with every
    /// event's `alg` digest in order; EV_NO_ACTION events are not
    /// extended. PCRs no event extends are absent.
    pub fn replay(&self, alg: HashAlg) -> Result<BTreeMap<u8, Vec<u8>>, EventLogError> {
        if !self.algorithms.iter().any(|(id, _)| *id == alg.tpm_id()) {
            let names: Vec<String> = self
                .algorithms
                .iter()
                .map(|(id, _)| HashAlg::describe_id(*id))
                .collect();
            return Err(EventLogError::NoBank(alg, names.join(", ")));
        }
        let mut pcrs: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        for (index, event) in self.events.iter().enumerate() {
            if event.event_type == event_type::EV_NO_ACTION {
                continue;
            }
            let digest = event.digest(alg).ok_or(EventLogError::MissingDigest {
                index,
                pcr: event.pcr_index,
                alg,
            })?;
            // parse refuses indexes over 31.
            let pcr = u8::try_from(event.pcr_index).unwrap_or(u8::MAX);
            let value = pcrs.entry(pcr).or_insert_with(|| {
                let mut initial = vec![0u8; alg.digest_size()];
                if pcr == 0 {
                    if let (Some(locality), Some(last)) =
                        (self.startup_locality, initial.last_mut())
                    {
                        *last = locality;
                    }
                }
                initial
            });
            *value = alg.extend(value, digest);
        }
        Ok(pcrs)
    }
}

fn read_spec_id_event(r: &mut Reader<'_>, limits: LogLimits) -> Result<EventLog, ParseError> {
    r.u32_le("specIdEvent.pcrIndex")?;
    let type_at = r.offset();
    let ty = r.u32_le("specIdEvent.eventType")?;
    if ty != event_type::EV_NO_ACTION {
        return Err(r.invalid_at(
            type_at,
            "specIdEvent.eventType",
            format!("{ty:#x}: the first event of a crypto-agile log is EV_NO_ACTION (a SHA-1-only log is not supported)"),
        ));
    }
    r.take(20, "specIdEvent.digest")?;
    let size_at = r.offset();
    let size = r.u32_le("specIdEvent.eventDataSize")? as usize;
    if size > limits.max_event_data {
        return Err(r.error_at(
            size_at,
            ParseErrorKind::OverLimit {
                what: "event data size",
                size,
                limit: limits.max_event_data,
            },
        ));
    }
    let data_at = r.offset();
    let data = r.take(size, "specIdEvent.event")?;
    let mut s = Reader::new(data, "TCG_EfiSpecIDEvent");
    let err = |e: ParseError| ParseError {
        offset: e.offset + data_at,
        ..e
    };
    let signature = s.take(16, "signature").map_err(err)?;
    if signature != SPEC_ID_SIGNATURE {
        return Err(err(s.invalid_at(
            0,
            "signature",
            format!(
                "{:?} is not \"Spec ID Event03\" (not a crypto-agile log)",
                String::from_utf8_lossy(signature).trim_end_matches('\0')
            ),
        )));
    }
    let platform_class = s.u32_le("platformClass").map_err(err)?;
    let minor = s.u8("specVersionMinor").map_err(err)?;
    let major = s.u8("specVersionMajor").map_err(err)?;
    let errata = s.u8("specErrata").map_err(err)?;
    let uintn_size = s.u8("uintnSize").map_err(err)?;
    let count_at = s.offset();
    let count = s.u32_le("numberOfAlgorithms").map_err(err)? as usize;
    if count == 0 || count.saturating_mul(4) > s.remaining() {
        return Err(err(s.invalid_at(
            count_at,
            "numberOfAlgorithms",
            format!("{count} algorithms in {} bytes", s.remaining()),
        )));
    }
    let mut algorithms = Vec::with_capacity(count);
    for _ in 0..count {
        let at = s.offset();
        let id = s.u16_le("digestSizes.algorithmId").map_err(err)?;
        let size = s.u16_le("digestSizes.digestSize").map_err(err)?;
        if size == 0 || size > 64 {
            return Err(err(s.invalid_at(
                at,
                "digestSizes.digestSize",
                format!("{size} bytes for algorithm {id:#06x}"),
            )));
        }
        if let Some(known) = HashAlg::from_tpm_id(id) {
            if usize::from(size) != known.digest_size() {
                return Err(err(s.invalid_at(
                    at,
                    "digestSizes.digestSize",
                    format!(
                        "{size} bytes for {known}, which has {}",
                        known.digest_size()
                    ),
                )));
            }
        }
        if algorithms.iter().any(|(a, _)| *a == id) {
            return Err(err(s.invalid_at(
                at,
                "digestSizes.algorithmId",
                format!("{id:#06x} listed twice"),
            )));
        }
        algorithms.push((id, size));
    }
    let vendor_size = usize::from(s.u8("vendorInfoSize").map_err(err)?);
    let vendor_info = s.take(vendor_size, "vendorInfo").map_err(err)?.to_vec();
    s.finish().map_err(err)?;
    Ok(EventLog {
        platform_class,
        spec_version: (major, minor, errata),
        uintn_size,
        algorithms,
        vendor_info,
        startup_locality: None,
        events: Vec::new(),
    })
}

fn read_event2(
    r: &mut Reader<'_>,
    algorithms: &[(u16, u16)],
    limits: LogLimits,
) -> Result<LogEvent, ParseError> {
    let pcr_at = r.offset();
    let pcr_index = r.u32_le("pcrIndex")?;
    if pcr_index > MAX_PCR {
        return Err(r.invalid_at(
            pcr_at,
            "pcrIndex",
            format!("{pcr_index} is not a PCR (0 to {MAX_PCR})"),
        ));
    }
    let event_type = r.u32_le("eventType")?;
    let count_at = r.offset();
    let count = r.u32_le("digests.count")? as usize;
    if count > algorithms.len() {
        return Err(r.invalid_at(
            count_at,
            "digests.count",
            format!(
                "{count} digests, the log records {} algorithms",
                algorithms.len()
            ),
        ));
    }
    let mut digests = Vec::with_capacity(count);
    for _ in 0..count {
        let at = r.offset();
        let alg_id = r.u16_le("digests.hashAlg")?;
        let size = algorithms
            .iter()
            .find(|(id, _)| *id == alg_id)
            .map(|(_, size)| usize::from(*size))
            .ok_or_else(|| {
                r.invalid_at(
                    at,
                    "digests.hashAlg",
                    format!("{alg_id:#06x} is not in the Spec ID event's list"),
                )
            })?;
        if digests.iter().any(|d: &EventDigest| d.alg_id == alg_id) {
            return Err(r.invalid_at(
                at,
                "digests.hashAlg",
                format!("{alg_id:#06x} twice in one event"),
            ));
        }
        let digest = r.take(size, "digests.digest")?.to_vec();
        digests.push(EventDigest { alg_id, digest });
    }
    let size_at = r.offset();
    let size = r.u32_le("eventSize")? as usize;
    if size > limits.max_event_data {
        return Err(r.error_at(
            size_at,
            ParseErrorKind::OverLimit {
                what: "event data size",
                size,
                limit: limits.max_event_data,
            },
        ));
    }
    let data = r.take(size, "event")?.to_vec();
    Ok(LogEvent {
        pcr_index,
        event_type,
        digests,
        data,
    })
}

/// Writes valid crypto-agile logs, for tests (here and in the crates that
/// check logs against quotes).
#[derive(Debug, Clone)]
pub struct EventLogBuilder {
    algs: Vec<HashAlg>,
    out: Vec<u8>,
}

impl EventLogBuilder {
    /// A log recording the `algs` banks, starting with its Spec ID event.
    pub fn new(algs: &[HashAlg]) -> EventLogBuilder {
        let mut spec = Vec::with_capacity(32 + 4 * algs.len());
        spec.extend_from_slice(SPEC_ID_SIGNATURE);
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass: client
        spec.extend_from_slice(&[0, 2, 0, 8]); // PFP 2.0 errata 0, UINTN 8 bytes
        spec.extend_from_slice(&(algs.len() as u32).to_le_bytes());
        for alg in algs {
            spec.extend_from_slice(&alg.tpm_id().to_le_bytes());
            spec.extend_from_slice(&(alg.digest_size() as u16).to_le_bytes());
        }
        spec.push(0); // vendorInfoSize
        let mut out = Vec::with_capacity(1024);
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&event_type::EV_NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);
        EventLogBuilder {
            algs: algs.to_vec(),
            out,
        }
    }

    /// An EV_NO_ACTION StartupLocality event in PCR 0 (TPM2_Startup ran at
    /// `locality`, 3 or 4 with an H-CRTM).
    pub fn startup_locality(&mut self, locality: u8) -> &mut Self {
        let mut data = STARTUP_LOCALITY_SIGNATURE.to_vec();
        data.push(locality);
        let zeros: Vec<(HashAlg, Vec<u8>)> = self
            .algs
            .iter()
            .map(|a| (*a, vec![0; a.digest_size()]))
            .collect();
        self.event_with_digests(0, event_type::EV_NO_ACTION, &zeros, &data)
    }

    /// An event whose digests are the hashes of `data` (as firmware
    /// measures EV_SEPARATOR, EV_EFI_ACTION and similar events).
    pub fn event(&mut self, pcr: u32, event_type: u32, data: &[u8]) -> &mut Self {
        let digests: Vec<(HashAlg, Vec<u8>)> =
            self.algs.iter().map(|a| (*a, a.hash(data))).collect();
        self.event_with_digests(pcr, event_type, &digests, data)
    }

    /// An event with the digests given (a measured image's hash, say,
    /// with its device path as data).
    pub fn event_with_digests(
        &mut self,
        pcr: u32,
        event_type: u32,
        digests: &[(HashAlg, Vec<u8>)],
        data: &[u8],
    ) -> &mut Self {
        self.out.extend_from_slice(&pcr.to_le_bytes());
        self.out.extend_from_slice(&event_type.to_le_bytes());
        self.out
            .extend_from_slice(&(digests.len() as u32).to_le_bytes());
        for (alg, digest) in digests {
            self.out.extend_from_slice(&alg.tpm_id().to_le_bytes());
            self.out.extend_from_slice(digest);
        }
        self.out
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(data);
        self
    }

    /// The log so far.
    pub fn build(&self) -> Vec<u8> {
        self.out.clone()
    }
}

#[cfg(test)]
#[path = "event_log_tests.rs"]
mod tests;
