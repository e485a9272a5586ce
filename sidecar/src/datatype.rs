//! The tensor element types the sidecar serves, by their KServe v2 names
//! (`FP32`, `INT64`, …) and their ONNX Runtime counterparts.

use std::fmt;

use ort::value::TensorElementType;

use crate::bounded_text::cut;

/// A KServe v2 tensor datatype that the sidecar can decode, hand to ONNX
/// Runtime and encode back. `BYTES` (strings) is a KServe type it does not
/// serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
}

/// Every served datatype, for tests and listings.
pub const ALL_DATATYPES: [Datatype; 13] = [
    Datatype::Bool,
    Datatype::Uint8,
    Datatype::Uint16,
    Datatype::Uint32,
    Datatype::Uint64,
    Datatype::Int8,
    Datatype::Int16,
    Datatype::Int32,
    Datatype::Int64,
    Datatype::Fp16,
    Datatype::Bf16,
    Datatype::Fp32,
    Datatype::Fp64,
];

/// Why a datatype name is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatatypeError {
    #[error("datatype BYTES (strings) is not served")]
    Bytes,
    #[error("unknown datatype {0:?} (KServe datatypes: BOOL, UINT8..UINT64, INT8..INT64, FP16, BF16, FP32, FP64, BYTES)")]
    Unknown(String),
}

impl Datatype {
    /// The datatype a KServe request names, e.g. `"FP32"`.
    pub fn from_kserve(name: &str) -> Result<Datatype, DatatypeError> {
        Ok(match name {
            "BOOL" => Datatype::Bool,
            "UINT8" => Datatype::Uint8,
            "UINT16" => Datatype::Uint16,
            "UINT32" => Datatype::Uint32,
            "UINT64" => Datatype::Uint64,
            "INT8" => Datatype::Int8,
            "INT16" => Datatype::Int16,
            "INT32" => Datatype::Int32,
            "INT64" => Datatype::Int64,
            "FP16" => Datatype::Fp16,
            "BF16" => Datatype::Bf16,
            "FP32" => Datatype::Fp32,
            "FP64" => Datatype::Fp64,
            "BYTES" => return Err(DatatypeError::Bytes),
            other => return Err(DatatypeError::Unknown(cut(other, 64))),
        })
    }

    /// The KServe name, e.g. `"FP32"`.
    pub fn kserve_name(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Bf16 => "BF16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
        }
    }

    /// Bytes one element takes in `raw_input_contents` and
    /// `raw_output_contents` (little-endian; a BOOL is one byte).
    pub fn element_bytes(self) -> usize {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 | Datatype::Bf16 => 2,
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
        }
    }

    /// The datatype of an ONNX Runtime element type, or None for one the
    /// sidecar does not serve (strings, complex, 8-bit floats, 4-bit ints).
    pub fn from_ort(ty: TensorElementType) -> Option<Datatype> {
        Some(match ty {
            TensorElementType::Bool => Datatype::Bool,
            TensorElementType::Uint8 => Datatype::Uint8,
            TensorElementType::Uint16 => Datatype::Uint16,
            TensorElementType::Uint32 => Datatype::Uint32,
            TensorElementType::Uint64 => Datatype::Uint64,
            TensorElementType::Int8 => Datatype::Int8,
            TensorElementType::Int16 => Datatype::Int16,
            TensorElementType::Int32 => Datatype::Int32,
            TensorElementType::Int64 => Datatype::Int64,
            TensorElementType::Float16 => Datatype::Fp16,
            TensorElementType::Bfloat16 => Datatype::Bf16,
            TensorElementType::Float32 => Datatype::Fp32,
            TensorElementType::Float64 => Datatype::Fp64,
            _ => return None,
        })
    }

    /// The ONNX Runtime element type.
    pub fn to_ort(self) -> TensorElementType {
        match self {
            Datatype::Bool => TensorElementType::Bool,
            Datatype::Uint8 => TensorElementType::Uint8,
            Datatype::Uint16 => TensorElementType::Uint16,
            Datatype::Uint32 => TensorElementType::Uint32,
            Datatype::Uint64 => TensorElementType::Uint64,
            Datatype::Int8 => TensorElementType::Int8,
            Datatype::Int16 => TensorElementType::Int16,
            Datatype::Int32 => TensorElementType::Int32,
            Datatype::Int64 => TensorElementType::Int64,
            Datatype::Fp16 => TensorElementType::Float16,
            Datatype::Bf16 => TensorElementType::Bfloat16,
            Datatype::Fp32 => TensorElementType::Float32,
            Datatype::Fp64 => TensorElementType::Float64,
        }
    }

    /// The `InferTensorContents` field that carries this datatype typed,
    /// or None for FP16 and BF16, which travel raw only.
    pub fn contents_field(self) -> Option<&'static str> {
        match self {
            Datatype::Bool => Some("bool_contents"),
            Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => Some("int_contents"),
            Datatype::Int64 => Some("int64_contents"),
            Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => Some("uint_contents"),
            Datatype::Uint64 => Some("uint64_contents"),
            Datatype::Fp32 => Some("fp32_contents"),
            Datatype::Fp64 => Some("fp64_contents"),
            Datatype::Fp16 | Datatype::Bf16 => None,
        }
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kserve_name())
    }
}

#[cfg(test)]
#[path = "datatype_tests.rs"]
mod tests;
