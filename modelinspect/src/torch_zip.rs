//! PyTorch's zip format (`torch.save` since 1.6): `<prefix>/data.pkl`, the
//! object as a pickle whose tensors name their storages by persistent id,
//! `<prefix>/data/<key>` for the storages (never read), `<prefix>/version`
//! and `<prefix>/byteorder`.
//!
//! Every `.pkl` entry is scanned, not only the `data.pkl` `torch.load`
//! reads: an extra pickle in a model archive is a finding in itself. Each
//! is decompressed into memory under the byte budget (a zip bomb fails
//! with `OverBytes` as soon as its declared or decompressed size passes
//! it), then walked by the pickle scanner. The entry count is checked
//! against `max_items` from the end-of-central-directory record before
//! the zip reader reads the directory.

use std::io::{self, Cursor, Read, Seek};
use std::time::Instant;

use zip::result::ZipError;
use zip::ZipArchive;

use crate::budget::{Bounded, Budget};
use crate::error::InspectError;
use crate::pickle;
use crate::report::{ModelReport, PickleScan};

/// The longest `version` entry read.
const MAX_VERSION: u64 = 64;

/// An `io::Error` back into what it carries: the budget's own errors come
/// through the zip reader as `io::Error::other(InspectError)`.
fn from_io(e: io::Error) -> InspectError {
    if e.get_ref().is_some_and(|i| i.is::<InspectError>()) {
        if let Some(inner) = e.into_inner() {
            return match inner.downcast::<InspectError>() {
                Ok(b) => *b,
                Err(other) => InspectError::Io(io::Error::other(other)),
            };
        }
        return InspectError::Io(io::Error::other("zip read failed"));
    }
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return InspectError::Truncated {
            offset: 0,
            what: format!("zip archive: {e}"),
        };
    }
    InspectError::Io(e)
}

fn from_zip(e: ZipError) -> InspectError {
    match e {
        ZipError::Io(e) => from_io(e),
        other => InspectError::malformed(0, format!("zip archive: {other}")),
    }
}

fn le(buf: &[u8], at: usize, n: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(n)?)?;
    Some(
        b.iter()
            .rev()
            .fold(0u64, |v, byte| (v << 8) | u64::from(*byte)),
    )
}

/// The entry count the end-of-central-directory record declares (its zip64
/// record's where it defers to that); `None` where there is none to read
/// (the zip reader then says what is wrong).
fn declared_entries<R: Read + Seek>(r: &mut Bounded<R>) -> Result<Option<u64>, InspectError> {
    const EOCD: &[u8] = b"PK\x05\x06";
    let len = r.len();
    // The record is the last 22 bytes unless the archive has a comment
    // (torch's have none); else it is in the last 64 KiB.
    let mut found = None;
    for tail in [len.min(22), len.min(22 + 0xffff)] {
        r.seek_to(len - tail)?;
        let buf = r.read_vec(tail, "zip end of central directory")?;
        if let Some(p) = (0..buf.len().saturating_sub(21))
            .rev()
            .find(|&i| buf.get(i..).is_some_and(|b| b.starts_with(EOCD)))
        {
            found = Some((buf, p, len - tail + p as u64));
            break;
        }
        if tail == len {
            break;
        }
    }
    let Some((buf, p, eocd_at)) = found else {
        return Ok(None);
    };
    let (Some(entries), Some(cd_size), Some(cd_offset)) =
        (le(&buf, p + 8, 2), le(&buf, p + 12, 4), le(&buf, p + 16, 4))
    else {
        return Ok(None);
    };
    if entries != 0xffff && cd_size != 0xffff_ffff && cd_offset != 0xffff_ffff {
        return Ok(Some(entries));
    }
    // The zip64 locator, the 20 bytes before the record, gives the zip64
    // record.
    let Some(loc) = eocd_at.checked_sub(20) else {
        return Ok(None);
    };
    r.seek_to(loc)?;
    let locator = r.read_vec(20, "zip64 end of central directory locator")?;
    if !locator.starts_with(b"PK\x06\x07") {
        return Ok(None);
    }
    let Some(at) = le(&locator, 8, 8) else {
        return Ok(None);
    };
    if at.checked_add(56).is_none_or(|end| end > len) {
        return Ok(None);
    }
    r.seek_to(at)?;
    let rec = r.read_vec(56, "zip64 end of central directory")?;
    if !rec.starts_with(b"PK\x06\x06") {
        return Ok(None);
    }
    Ok(le(&rec, 32, 8))
}

/// An entry's bytes, decompressed: the size its directory entry declares
/// (what torch's reader extracts), at most `limit`. Its CRC is not
/// checked: torch's reader (miniz built without CRC checks) loads an entry
/// whose CRC is wrong, so a wrong one must not stop the scan.
fn entry_bytes<R: Read + Seek>(
    archive: &mut ZipArchive<&mut Bounded<R>>,
    index: usize,
    limit: u64,
    max: u64,
) -> Result<Vec<u8>, InspectError> {
    let mut f = archive.by_index(index).map_err(from_zip)?;
    let size = f.size();
    if size > limit {
        return Err(InspectError::OverBytes { max });
    }
    // Grown as bytes arrive, so a declared size the data does not back
    // allocates nothing up front. The zip reader checks the CRC only on a
    // read past the end, which this never makes.
    let mut buf = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
    let mut chunk = [0u8; 1 << 16];
    while (buf.len() as u64) < size {
        let want = usize::try_from(size - buf.len() as u64)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        let n = f.read(&mut chunk[..want]).map_err(from_io)?;
        if n == 0 {
            return Err(InspectError::Truncated {
                offset: 0,
                what: format!("zip entry {}: {} of its {size} bytes", f.name(), buf.len()),
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

pub fn read<R: Read + Seek>(
    r: &mut Bounded<R>,
    report: &mut ModelReport,
) -> Result<(), InspectError> {
    let started = Instant::now();
    let budget = r.budget();
    let declared = declared_entries(r)?;
    if let Some(n) = declared.filter(|n| *n > budget.max_items) {
        return Err(InspectError::TooMany {
            what: "zip entries".into(),
            count: n,
            max: budget.max_items,
        });
    }
    r.seek_to(0)?;
    let mut archive = ZipArchive::new(&mut *r).map_err(from_zip)?;
    let count = archive.len() as u64;
    if count > budget.max_items {
        return Err(InspectError::TooMany {
            what: "zip entries".into(),
            count,
            max: budget.max_items,
        });
    }
    let mut scan = PickleScan::default();
    if let Some(d) = declared.filter(|d| *d > count) {
        // The zip reader keeps one entry per name: another one of the
        // same name goes unscanned, and it may be the one torch reads.
        scan.unscanned = Some(format!(
            "the zip archive lists {d} entries under {count} names (duplicate entry names)"
        ));
    }
    let names: Vec<String> = (0..archive.len())
        .map(|i| archive.name_for_index(i).unwrap_or("").to_string())
        .collect();
    // torch reads `<prefix>/data.pkl`, the prefix the first entry's.
    let prefix = names
        .first()
        .and_then(|n| n.split_once('/'))
        .map(|(p, _)| p.to_string())
        .unwrap_or_default();
    let data_pkl = names
        .iter()
        .position(|n| *n == format!("{prefix}/data.pkl"))
        .or_else(|| {
            names
                .iter()
                .position(|n| n == "data.pkl" || n.ends_with("/data.pkl"))
        });
    let pickles: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].to_ascii_lowercase().ends_with(".pkl"))
        .collect();
    if pickles.is_empty() {
        return Err(InspectError::UnknownFormat(
            "a zip archive without a pickle (no data.pkl)".into(),
        ));
    }

    let mut tensors = Vec::new();
    let mut decompressed = 0u64;
    let mut outcome = Ok(());
    for i in pickles {
        let limit = budget.max_bytes.saturating_sub(decompressed);
        let bytes = match entry_bytes(&mut archive, i, limit, budget.max_bytes) {
            Ok(b) => b,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        };
        decompressed = decompressed.saturating_add(bytes.len() as u64);
        let left = budget.max_time.saturating_sub(started.elapsed());
        if left.is_zero() {
            outcome = Err(InspectError::OutOfTime(budget.max_time));
            break;
        }
        let inner_budget = Budget {
            max_time: left,
            ..budget
        };
        let mut inner = Bounded::new(Cursor::new(bytes), inner_budget)?;
        let out = (Some(i) == data_pkl).then_some(&mut tensors);
        if let Err(e) = pickle::scan_stream(&mut inner, &names[i], &mut scan, out) {
            outcome = Err(e);
            break;
        }
    }
    pickle::settle(outcome, &mut scan, report)?;

    // The archive's format version, else the pickle protocol.
    let version = names
        .iter()
        .position(|n| *n == format!("{prefix}/version"))
        .or_else(|| {
            names
                .iter()
                .position(|n| *n == format!("{prefix}/.data/version"))
        });
    let mut format_version = String::new();
    if let Some(i) = version {
        if let Ok(b) = entry_bytes(&mut archive, i, MAX_VERSION, budget.max_bytes) {
            let text = String::from_utf8_lossy(&b).trim().to_string();
            if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic()) {
                format_version = text;
            }
        }
    }
    if format_version.is_empty() {
        format_version = scan.protocol.to_string();
    }
    report.format_version = format_version;
    report.tensors = tensors;
    report.pickle = Some(scan);
    Ok(())
}

#[cfg(test)]
#[path = "torch_zip_tests.rs"]
pub(crate) mod tests;
