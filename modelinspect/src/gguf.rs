//! GGUF (llama.cpp, ollama): the header, every metadata key, and the
//! tensor table. The weights after it are never read.
//!
//! Layout (little-endian): "GGUF", u32 version, tensor count, key count
//! (u64; u32 in version 1), the keys (string, u32 type, value), then per
//! tensor: name, u32 dims, dims (u64; u32 in version 1), u32 ggml type,
//! u64 offset.

use std::io::{Read, Seek};

use crate::budget::Bounded;
use crate::error::InspectError;
use crate::report::{ModelReport, Tensor};

/// Longest metadata string kept whole in the report (a chat template can
/// be kilobytes); longer ones are cut with "…".
const KEEP_STRING: usize = 512;

/// Metadata value types.
const UINT8: u32 = 0;
const INT8: u32 = 1;
const UINT16: u32 = 2;
const INT16: u32 = 3;
const UINT32: u32 = 4;
const INT32: u32 = 5;
const FLOAT32: u32 = 6;
const BOOL: u32 = 7;
const STRING: u32 = 8;
const ARRAY: u32 = 9;
const UINT64: u32 = 10;
const INT64: u32 = 11;
const FLOAT64: u32 = 12;

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Uint(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// Element type name and count: arrays (vocabularies) are summarised.
    Array(&'static str, u64),
}

impl Value {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Uint(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn display(&self) -> String {
        match self {
            Value::Uint(v) => v.to_string(),
            Value::Int(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            Value::Str(s) => s.clone(),
            Value::Array(ty, n) => format!("[{n} × {ty}]"),
        }
    }
}

fn type_name(ty: u32) -> &'static str {
    match ty {
        UINT8 => "uint8",
        INT8 => "int8",
        UINT16 => "uint16",
        INT16 => "int16",
        UINT32 => "uint32",
        INT32 => "int32",
        FLOAT32 => "float32",
        BOOL => "bool",
        STRING => "string",
        ARRAY => "array",
        UINT64 => "uint64",
        INT64 => "int64",
        FLOAT64 => "float64",
        _ => "unknown",
    }
}

struct Reader<'a, R> {
    r: &'a mut Bounded<R>,
    /// Version 1 wrote counts and lengths as u32.
    v1: bool,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn count(&mut self, what: &str) -> Result<u64, InspectError> {
        if self.v1 {
            Ok(self.r.u32_le(what)?.into())
        } else {
            self.r.u64_le(what)
        }
    }

    fn string(&mut self, what: &str) -> Result<String, InspectError> {
        let at = self.r.pos();
        let n = self.count(what)?;
        let bytes = self.r.read_vec(n, what)?;
        String::from_utf8(bytes)
            .map_err(|_| InspectError::malformed(at, format!("{what}: not UTF-8")))
    }

    /// A string kept up to `KEEP_STRING` bytes, the rest skipped.
    fn string_cut(&mut self, what: &str) -> Result<String, InspectError> {
        let n = self.count(what)?;
        let keep = n.min(KEEP_STRING as u64);
        let bytes = self.r.read_vec(keep, what)?;
        self.r.skip(n - keep, what)?;
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if keep < n {
            s.push('…');
        }
        Ok(s)
    }

    fn scalar_size(ty: u32) -> Option<u64> {
        Some(match ty {
            UINT8 | INT8 | BOOL => 1,
            UINT16 | INT16 => 2,
            UINT32 | INT32 | FLOAT32 => 4,
            UINT64 | INT64 | FLOAT64 => 8,
            _ => return None,
        })
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<Value, InspectError> {
        let at = self.r.pos();
        Ok(match ty {
            UINT8 => Value::Uint(self.r.u8(key)?.into()),
            INT8 => Value::Int((self.r.u8(key)? as i8).into()),
            UINT16 => Value::Uint(self.r.u16_le(key)?.into()),
            INT16 => Value::Int((self.r.u16_le(key)? as i16).into()),
            UINT32 => Value::Uint(self.r.u32_le(key)?.into()),
            INT32 => Value::Int((self.r.u32_le(key)? as i32).into()),
            FLOAT32 => Value::Float(f32::from_bits(self.r.u32_le(key)?).into()),
            BOOL => Value::Bool(self.r.u8(key)? != 0),
            STRING => Value::Str(self.string_cut(key)?),
            UINT64 => Value::Uint(self.r.u64_le(key)?),
            INT64 => Value::Int(self.r.u64_le(key)? as i64),
            FLOAT64 => Value::Float(f64::from_bits(self.r.u64_le(key)?)),
            ARRAY => {
                let max = self.r.budget().max_depth;
                if depth >= max {
                    return Err(InspectError::TooDeep {
                        what: format!("array in {key}"),
                        max,
                    });
                }
                let elem = self.r.u32_le(key)?;
                let n = self.count(key)?;
                self.skip_array(elem, n, key, depth + 1)?;
                Value::Array(type_name(elem), n)
            }
            other => {
                return Err(InspectError::malformed(
                    at,
                    format!("{key}: value type {other} is not a GGUF type"),
                ))
            }
        })
    }

    /// Steps over an array's elements: fixed-size ones in one skip (their
    /// total checked against the file first), strings and nested arrays
    /// one by one.
    fn skip_array(
        &mut self,
        elem: u32,
        n: u64,
        key: &str,
        depth: usize,
    ) -> Result<(), InspectError> {
        if let Some(size) = Self::scalar_size(elem) {
            let bytes = n.checked_mul(size).ok_or_else(|| {
                InspectError::malformed(self.r.pos(), format!("{key}: {n} elements overflow"))
            })?;
            return self.r.skip(bytes, key);
        }
        // Each element takes at least 8 bytes (a length): more elements
        // than that allows cannot be in the file.
        if n > self.r.remaining() / if self.v1 { 4 } else { 8 } {
            return Err(InspectError::Truncated {
                offset: self.r.pos(),
                what: format!("{key}: {n} elements claimed"),
            });
        }
        for _ in 0..n {
            match elem {
                STRING => {
                    let len = self.count(key)?;
                    self.r.skip(len, key)?;
                }
                ARRAY => {
                    self.value(ARRAY, key, depth)?;
                }
                other => {
                    return Err(InspectError::malformed(
                        self.r.pos(),
                        format!("{key}: array element type {other} is not a GGUF type"),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// llama.cpp's `ggml_type`: a tensor's element type.
fn ggml_type(t: u32) -> String {
    let name = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        _ => return format!("type{t}"),
    };
    name.to_string()
}

/// llama.cpp's `llama_ftype` (`general.file_type`): the file's quantization.
fn file_type(t: u64) -> String {
    let name = match t {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return format!("file_type {t}"),
    };
    name.to_string()
}

pub fn read<R: Read + Seek>(
    r: &mut Bounded<R>,
    report: &mut ModelReport,
) -> Result<(), InspectError> {
    let mut magic = [0; 4];
    r.read_exact_or(&mut magic, "magic")?;
    if &magic != b"GGUF" {
        return Err(InspectError::malformed(0, "magic is not GGUF"));
    }
    let version = r.u32_le("version")?;
    if !(1..=3).contains(&version) {
        return Err(InspectError::malformed(
            4,
            format!("version {version} (1 to 3 exist)"),
        ));
    }
    let budget = r.budget();
    let mut g = Reader {
        r,
        v1: version == 1,
    };
    let tensors = g.count("tensor count")?;
    let keys = g.count("metadata key count")?;
    budget.check_items(tensors, "tensors")?;
    budget.check_items(keys, "metadata keys")?;
    report.format_version = version.to_string();
    let mut values = Vec::with_capacity(keys.min(1024) as usize);
    for _ in 0..keys {
        let key = g.string("metadata key")?;
        let ty = g.r.u32_le(&key)?;
        let value = g.value(ty, &key, 0)?;
        values.push((key, value));
    }
    // Each tensor entry takes at least 24 bytes: a count past that is a lie.
    if tensors > g.r.remaining() / 24 {
        return Err(InspectError::Truncated {
            offset: g.r.pos(),
            what: format!("tensor table ({tensors} tensors claimed)"),
        });
    }
    report.tensors.reserve(tensors as usize);
    let mut offsets = Vec::with_capacity(tensors as usize);
    for _ in 0..tensors {
        let name = g.string("tensor name")?;
        let at = g.r.pos();
        let dims = g.r.u32_le("tensor dimensions")?;
        if dims > 8 {
            return Err(InspectError::malformed(
                at,
                format!("tensor {name}: {dims} dimensions (GGML has at most 4)"),
            ));
        }
        let mut shape = Vec::with_capacity(dims as usize);
        for _ in 0..dims {
            shape.push(g.count("tensor dimension")?);
        }
        let ty = g.r.u32_le("tensor type")?;
        let offset = g.r.u64_le("tensor offset")?;
        offsets.push((offset, shape.contains(&0)));
        // GGML lists the fastest-varying dimension first; report shapes
        // as PyTorch and safetensors do.
        shape.reverse();
        report.tensors.push(Tensor {
            name,
            shape,
            dtype: ggml_type(ty),
        });
    }
    report.tensor_count = tensors;

    // The data section starts at the next multiple of general.alignment:
    // a file that ends before it, or before a tensor's first byte, was cut.
    let alignment = values
        .iter()
        .find(|(k, _)| k == "general.alignment")
        .and_then(|(_, v)| v.as_u64())
        .filter(|a| a.is_power_of_two())
        .unwrap_or(32);
    let data_start = g.r.pos().div_ceil(alignment).saturating_mul(alignment);
    if data_start > g.r.len() {
        return Err(InspectError::Truncated {
            offset: g.r.len(),
            what: format!("tensor data (starts at byte {data_start})"),
        });
    }
    let data_len = g.r.len() - data_start;
    for (t, (offset, empty)) in report.tensors.iter().zip(offsets) {
        if !empty && offset >= data_len {
            return Err(InspectError::Truncated {
                offset: g.r.len(),
                what: format!(
                    "tensor {} data (at byte {} of the data section, which holds {data_len})",
                    t.name, offset
                ),
            });
        }
    }

    let get = |k: &str| values.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let text = |k: &str| get(k).and_then(Value::as_str).unwrap_or("").to_string();
    report.architecture = text("general.architecture");
    report.name = text("general.name");
    report.size_label = text("general.size_label");
    if let Some(ft) = get("general.file_type").and_then(Value::as_u64) {
        report.quantization = file_type(ft);
    }
    let arch = report.architecture.clone();
    report.context_length = get(&format!("{arch}.context_length")).and_then(Value::as_u64);
    report.metadata = values.into_iter().map(|(k, v)| (k, v.display())).collect();
    Ok(())
}

#[cfg(test)]
#[path = "gguf_tests.rs"]
pub(crate) mod tests;
