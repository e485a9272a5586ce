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
//!
//! Where the zip reader and torch's (miniz) could see different archives,
//! the archive is dangerous (unscanned): several plausible end records
//! (each reader may take another), or entries whose names or local header
//! offsets in the raw central directory differ from the zip reader's (a
//! Unicode path extra field renames an entry for the one, not the other).

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

/// What the archive's last end-of-central-directory record (the one
/// torch's reader, miniz, takes) declares, and how many plausible such
/// records the archive's tail holds.
#[derive(Debug, Default)]
struct EndRecords {
    /// (entries, central directory offset, its size), from the last
    /// record (its zip64 record's where it defers to that).
    last: Option<(u64, u64, u64)>,
    /// Records whose central directory would lie before them: more than
    /// one, and zip readers may disagree on which is the archive.
    plausible: usize,
}

/// The end-of-central-directory records in the last 64 KiB (where a
/// record with the longest comment still lies).
fn end_records<R: Read + Seek>(r: &mut Bounded<R>) -> Result<EndRecords, InspectError> {
    const EOCD: &[u8] = b"PK\x05\x06";
    let len = r.len();
    // The common case, torch's: one record, the last 22 bytes, no
    // comment. Every zip reader takes that one (each searches from the
    // end and it is valid), so no other need be looked for.
    if len >= 22 {
        r.seek_to(len - 22)?;
        let buf = r.read_vec(22, "zip end of central directory")?;
        if let (true, Some(0), Some(entries), Some(cd_size), Some(cd_offset)) = (
            buf.starts_with(EOCD),
            le(&buf, 20, 2),
            le(&buf, 8, 2),
            le(&buf, 12, 4),
            le(&buf, 16, 4),
        ) {
            let zip64 = entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff;
            if zip64 {
                return Ok(EndRecords {
                    last: zip64_record(r, len - 22)?,
                    plausible: 1,
                });
            }
            if cd_offset + cd_size <= len - 22 {
                return Ok(EndRecords {
                    last: Some((entries, cd_offset, cd_size)),
                    plausible: 1,
                });
            }
        }
    }
    let tail = len.min(22 + 0xffff);
    let base = len - tail;
    r.seek_to(base)?;
    let buf = r.read_vec(tail, "zip end of central directory")?;
    let mut out = EndRecords::default();
    let candidates = (0..buf.len().saturating_sub(21))
        .rev()
        .filter(|&i| buf[i..].starts_with(EOCD));
    for p in candidates {
        let (Some(entries), Some(cd_size), Some(cd_offset)) =
            (le(&buf, p + 8, 2), le(&buf, p + 12, 4), le(&buf, p + 16, 4))
        else {
            continue;
        };
        let at = base + p as u64;
        let zip64 = entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff;
        if zip64 || cd_offset.saturating_add(cd_size) <= at {
            out.plausible += 1;
        }
        if out.last.is_some() {
            continue;
        }
        if !zip64 {
            out.last = Some((entries, cd_offset, cd_size));
            continue;
        }
        out.last = zip64_record(r, at)?;
    }
    Ok(out)
}

/// The zip64 record the locator before the record at `eocd_at` points to:
/// (entries, central directory offset, its size).
fn zip64_record<R: Read + Seek>(
    r: &mut Bounded<R>,
    eocd_at: u64,
) -> Result<Option<(u64, u64, u64)>, InspectError> {
    let len = r.len();
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
    Ok(match (le(&rec, 32, 8), le(&rec, 40, 8), le(&rec, 48, 8)) {
        (Some(entries), Some(size), Some(offset)) => Some((entries, offset, size)),
        _ => None,
    })
}

/// An entry as the central directory's header holds it.
struct RawEntry {
    name: Vec<u8>,
    /// Where its local header is.
    header_at: Option<u64>,
}

/// The entry names as the central directory's headers hold them (raw
/// bytes, before any extra field renames them: what torch's reader
/// compares against `<prefix>/data.pkl`); `None` where the directory does
/// not read as one (the zip reader then says what is wrong).
fn raw_names<R: Read + Seek>(
    r: &mut Bounded<R>,
    (entries, offset, size): (u64, u64, u64),
) -> Result<Option<Vec<RawEntry>>, InspectError> {
    if offset.checked_add(size).is_none_or(|end| end > r.len()) {
        return Ok(None);
    }
    r.seek_to(offset)?;
    let dir = r.read_vec(size, "zip central directory")?;
    // The zip reader reads the directory again, and is charged for it.
    r.uncount(size);
    let mut names = Vec::new();
    let mut at = 0usize;
    while (names.len() as u64) < entries {
        if !dir.get(at..).is_some_and(|d| d.starts_with(b"PK\x01\x02")) {
            return Ok(None);
        }
        let (Some(n), Some(m), Some(k)) = (
            le(&dir, at + 28, 2),
            le(&dir, at + 30, 2),
            le(&dir, at + 32, 2),
        ) else {
            return Ok(None);
        };
        let name_at = at + 46;
        let (Some(name), Some(header_at)) =
            (dir.get(name_at..name_at + n as usize), le(&dir, at + 42, 4))
        else {
            return Ok(None);
        };
        names.push(RawEntry {
            name: name.to_vec(),
            // Past 4 GiB the offset is in a zip64 extra field: not compared.
            header_at: (header_at != 0xffff_ffff).then_some(header_at),
        });
        at = name_at + (n + m + k) as usize;
    }
    Ok(Some(names))
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
    let ends = end_records(r)?;
    let declared = ends.last.map(|(entries, _, _)| entries);
    if let Some(n) = declared.filter(|n| *n > budget.max_items) {
        return Err(InspectError::TooMany {
            what: "zip entries".into(),
            count: n,
            max: budget.max_items,
        });
    }
    // Names as torch's reader sees them: the directory's raw bytes. The
    // zip reader renames an entry by its Unicode path extra field (0x7075),
    // which torch's ignores: an entry the one calls `data.pkl` the other
    // may call anything.
    let raw = match ends.last {
        Some(end) => raw_names(r, end)?,
        None => None,
    };
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
    if ends.plausible > 1 {
        // One reader takes the last record, another the first it can
        // validate: each may see a different archive.
        scan.unscanned.get_or_insert_with(|| {
            format!(
                "the zip archive has {} end-of-central-directory records: zip readers may disagree on its entries",
                ends.plausible
            )
        });
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
    let raw_pickle = raw.as_ref().is_some_and(|raw| {
        raw.iter()
            .any(|e| e.name.to_ascii_lowercase().ends_with(b".pkl"))
    });
    let pickles: Vec<usize> = (0..names.len())
        .filter(|&i| names[i].to_ascii_lowercase().ends_with(".pkl"))
        .collect();
    if pickles.is_empty() && !raw_pickle {
        return Err(InspectError::UnknownFormat(
            "a zip archive without a pickle (no data.pkl)".into(),
        ));
    }
    if let Some(raw) = &raw {
        // Where the zip reader found each entry's local header.
        let header_at: Vec<Option<u64>> = (0..archive.len())
            .map(|i| archive.by_index_raw(i).ok().map(|f| f.header_start()))
            .collect();
        let differs = raw.len() == names.len()
            && raw
                .iter()
                .zip(&names)
                .zip(&header_at)
                .any(|((raw, name), at)| {
                    (raw.name.is_ascii() && raw.name.as_slice() != name.as_bytes())
                        || raw.header_at.is_some_and(|r| Some(r) != *at)
                });
        if differs || raw.len() != names.len() && scan.unscanned.is_none() {
            scan.unscanned = Some(
                "the zip archive's entries differ between its central directory and what the \
                 zip reader made of them (a Unicode path extra field renames an entry, or \
                 another directory was read): torch may load an entry other than the one \
                 scanned"
                    .into(),
            );
        }
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
