//! safetensors (Hugging Face): a u64 little-endian header length, a JSON
//! header naming every tensor's dtype, shape and byte range, then the raw
//! bytes, which are never read.

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use serde::Deserialize;

use crate::budget::Bounded;
use crate::error::InspectError;
use crate::report::{ModelReport, Tensor};

/// The format's own cap on the header (`safetensors` refuses larger).
const MAX_HEADER: u64 = 100_000_000;

#[derive(Deserialize)]
#[serde(untagged)]
enum Entry {
    Tensor {
        dtype: String,
        shape: Vec<u64>,
        data_offsets: [u64; 2],
    },
    Metadata(BTreeMap<String, String>),
}

/// Element sizes in bits, for checking byte ranges against shapes.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "F4" | "F6_E2M3" | "F6_E3M2" => return None,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Metadata keys that name the model or its architecture (Stability's
/// `modelspec`, and what converters commonly write).
const NAME_KEYS: &[&str] = &["modelspec.title", "name", "general.name"];
const ARCHITECTURE_KEYS: &[&str] = &[
    "modelspec.architecture",
    "architecture",
    "model_type",
    "general.architecture",
];

pub fn read<R: Read + Seek>(
    r: &mut Bounded<R>,
    report: &mut ModelReport,
) -> Result<(), InspectError> {
    let n = r.u64_le("header length")?;
    if n > MAX_HEADER {
        return Err(InspectError::malformed(
            0,
            format!("header length {n} is over the format's limit of {MAX_HEADER} bytes"),
        ));
    }
    if n > r.remaining() {
        return Err(InspectError::Truncated {
            offset: 8,
            what: format!("header ({n} bytes claimed, {} in the file)", r.remaining()),
        });
    }
    let data_len = r.remaining() - n;
    let header = r.read_vec(n, "header")?;
    let entries: BTreeMap<String, Entry> = serde_json::from_slice(&header).map_err(|e| {
        InspectError::malformed(
            8 + byte_of(&header, e.line(), e.column()),
            format!("header JSON: {e}"),
        )
    })?;
    r.budget().check_items(entries.len() as u64, "tensors")?;
    for (name, entry) in entries {
        match entry {
            Entry::Metadata(m) if name == "__metadata__" => report.metadata = m,
            Entry::Metadata(_) => {
                return Err(InspectError::malformed(
                    8,
                    format!("header entry {name:?} is neither a tensor nor __metadata__"),
                ))
            }
            Entry::Tensor {
                dtype,
                shape,
                data_offsets: [begin, end],
            } => {
                if begin > end || end > data_len {
                    return Err(InspectError::malformed(
                        8,
                        format!(
                            "tensor {name}: bytes {begin}..{end} are not within the {data_len} data bytes"
                        ),
                    ));
                }
                let t = Tensor { name, shape, dtype };
                if let Some(bits) = dtype_bits(&t.dtype) {
                    let want = (t.elements() as u128 * bits as u128).div_ceil(8);
                    if want != (end - begin) as u128 {
                        return Err(InspectError::malformed(
                            8,
                            format!(
                                "tensor {}: {} bytes for shape {:?} of {} ({want} expected)",
                                t.name,
                                end - begin,
                                t.shape,
                                t.dtype
                            ),
                        ));
                    }
                }
                report.tensors.push(t);
            }
        }
    }
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| report.metadata.get(*k))
            .cloned()
            .unwrap_or_default()
    };
    report.name = first(NAME_KEYS);
    report.architecture = first(ARCHITECTURE_KEYS);
    report.format_version = report.metadata.get("format").cloned().unwrap_or_default();
    Ok(())
}

/// The byte offset of serde_json's (1-based) line and column in `text`.
fn byte_of(text: &[u8], line: usize, column: usize) -> u64 {
    let mut at = 0;
    for _ in 1..line {
        match text[at..].iter().position(|&b| b == b'\n') {
            Some(i) => at += i + 1,
            None => break,
        }
    }
    (at + column.saturating_sub(1)).min(text.len()) as u64
}

#[cfg(test)]
#[path = "safetensors_tests.rs"]
pub(crate) mod tests;
