//! Tensor elements between the wire and ONNX Runtime: little-endian raw
//! bytes (`raw_input_contents`, `raw_output_contents`) and KServe's typed
//! `InferTensorContents`, to and from typed vectors ONNX Runtime takes.
//! Lengths are the caller's to check first (`inference_request.rs`):
//! nothing here allocates more than the bytes or values it is given.

use half::{bf16, f16};
use ort::value::{DynValue, Tensor};
use vigil_proto::kserve::InferTensorContents;

use crate::datatype::Datatype;

/// One tensor's elements, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp16(Vec<f16>),
    Bf16(Vec<bf16>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
}

/// Why typed contents do not make a tensor of their datatype.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentsError {
    #[error("{field}[{index}] = {value} is out of range for {datatype}")]
    OutOfRange {
        field: &'static str,
        index: usize,
        value: i64,
        datatype: Datatype,
    },
    #[error("{0} has no typed contents field; send it in raw_input_contents")]
    RawOnly(Datatype),
}

/// An element as it travels raw: little-endian, a BOOL as one byte.
trait WireElement: Copy {
    const BYTES: usize;
    fn read_le(bytes: &[u8]) -> Vec<Self>;
    fn write_le(values: &[Self], out: &mut Vec<u8>);
}

macro_rules! wire_number {
    ($($t:ty),*) => {$(
        impl WireElement for $t {
            const BYTES: usize = size_of::<$t>();
            fn read_le(bytes: &[u8]) -> Vec<$t> {
                let (chunks, _) = bytes.as_chunks::<{ size_of::<$t>() }>();
                chunks.iter().map(|c| <$t>::from_le_bytes(*c)).collect()
            }
            fn write_le(values: &[$t], out: &mut Vec<u8>) {
                out.reserve(values.len() * Self::BYTES);
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    )*};
}
wire_number!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);

impl WireElement for bool {
    const BYTES: usize = 1;
    fn read_le(bytes: &[u8]) -> Vec<bool> {
        bytes.iter().map(|b| *b != 0).collect()
    }
    fn write_le(values: &[bool], out: &mut Vec<u8>) {
        out.extend(values.iter().map(|b| u8::from(*b)));
    }
}

macro_rules! wire_half {
    ($($t:ty),*) => {$(
        impl WireElement for $t {
            const BYTES: usize = 2;
            fn read_le(bytes: &[u8]) -> Vec<$t> {
                let (chunks, _) = bytes.as_chunks::<2>();
                chunks.iter().map(|c| <$t>::from_bits(u16::from_le_bytes(*c))).collect()
            }
            fn write_le(values: &[$t], out: &mut Vec<u8>) {
                out.reserve(values.len() * 2);
                for v in values {
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
            }
        }
    )*};
}
wire_half!(f16, bf16);

/// Applies `$body` to the typed vector inside a `TensorData`, whatever its
/// type (`$v` names it there).
macro_rules! each_type {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Bf16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
        }
    };
}

impl TensorData {
    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::Uint8(_) => Datatype::Uint8,
            TensorData::Uint16(_) => Datatype::Uint16,
            TensorData::Uint32(_) => Datatype::Uint32,
            TensorData::Uint64(_) => Datatype::Uint64,
            TensorData::Int8(_) => Datatype::Int8,
            TensorData::Int16(_) => Datatype::Int16,
            TensorData::Int32(_) => Datatype::Int32,
            TensorData::Int64(_) => Datatype::Int64,
            TensorData::Fp16(_) => Datatype::Fp16,
            TensorData::Bf16(_) => Datatype::Bf16,
            TensorData::Fp32(_) => Datatype::Fp32,
            TensorData::Fp64(_) => Datatype::Fp64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_type!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements `bytes` holds, little-endian. A trailing partial
    /// element is ignored: the caller has checked that `bytes` is a whole
    /// number of elements.
    pub fn from_le_bytes(datatype: Datatype, bytes: &[u8]) -> TensorData {
        match datatype {
            Datatype::Bool => TensorData::Bool(bool::read_le(bytes)),
            Datatype::Uint8 => TensorData::Uint8(u8::read_le(bytes)),
            Datatype::Uint16 => TensorData::Uint16(u16::read_le(bytes)),
            Datatype::Uint32 => TensorData::Uint32(u32::read_le(bytes)),
            Datatype::Uint64 => TensorData::Uint64(u64::read_le(bytes)),
            Datatype::Int8 => TensorData::Int8(i8::read_le(bytes)),
            Datatype::Int16 => TensorData::Int16(i16::read_le(bytes)),
            Datatype::Int32 => TensorData::Int32(i32::read_le(bytes)),
            Datatype::Int64 => TensorData::Int64(i64::read_le(bytes)),
            Datatype::Fp16 => TensorData::Fp16(f16::read_le(bytes)),
            Datatype::Bf16 => TensorData::Bf16(bf16::read_le(bytes)),
            Datatype::Fp32 => TensorData::Fp32(f32::read_le(bytes)),
            Datatype::Fp64 => TensorData::Fp64(f64::read_le(bytes)),
        }
    }

    /// The elements as raw little-endian bytes.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        each_type!(self, v => WireElement::write_le(v, &mut out));
        out
    }

    /// How many values `contents` holds for `datatype` (in the one field
    /// that carries it), or None for a datatype that travels raw only.
    pub fn contents_len(datatype: Datatype, contents: &InferTensorContents) -> Option<usize> {
        Some(match datatype {
            Datatype::Bool => contents.bool_contents.len(),
            Datatype::Int8 | Datatype::Int16 | Datatype::Int32 => contents.int_contents.len(),
            Datatype::Int64 => contents.int64_contents.len(),
            Datatype::Uint8 | Datatype::Uint16 | Datatype::Uint32 => contents.uint_contents.len(),
            Datatype::Uint64 => contents.uint64_contents.len(),
            Datatype::Fp32 => contents.fp32_contents.len(),
            Datatype::Fp64 => contents.fp64_contents.len(),
            Datatype::Fp16 | Datatype::Bf16 => return None,
        })
    }

    /// The elements of `datatype` that typed `contents` holds: narrower
    /// integers travel widened (INT8 in `int_contents`), and a value out
    /// of the datatype's range is an error naming its index.
    pub fn from_contents(
        datatype: Datatype,
        contents: &InferTensorContents,
    ) -> Result<TensorData, ContentsError> {
        Ok(match datatype {
            Datatype::Bool => TensorData::Bool(contents.bool_contents.clone()),
            Datatype::Int8 => {
                TensorData::Int8(narrow(&contents.int_contents, "int_contents", datatype)?)
            }
            Datatype::Int16 => {
                TensorData::Int16(narrow(&contents.int_contents, "int_contents", datatype)?)
            }
            Datatype::Int32 => TensorData::Int32(contents.int_contents.clone()),
            Datatype::Int64 => TensorData::Int64(contents.int64_contents.clone()),
            Datatype::Uint8 => {
                TensorData::Uint8(narrow(&contents.uint_contents, "uint_contents", datatype)?)
            }
            Datatype::Uint16 => {
                TensorData::Uint16(narrow(&contents.uint_contents, "uint_contents", datatype)?)
            }
            Datatype::Uint32 => TensorData::Uint32(contents.uint_contents.clone()),
            Datatype::Uint64 => TensorData::Uint64(contents.uint64_contents.clone()),
            Datatype::Fp32 => TensorData::Fp32(contents.fp32_contents.clone()),
            Datatype::Fp64 => TensorData::Fp64(contents.fp64_contents.clone()),
            Datatype::Fp16 | Datatype::Bf16 => return Err(ContentsError::RawOnly(datatype)),
        })
    }

    /// An ONNX Runtime tensor of these elements with `shape`, whose
    /// element count the caller has checked is `self.len()`.
    pub fn into_ort_value(self, shape: Vec<i64>) -> ort::Result<DynValue> {
        each_type!(self, v => Ok(Tensor::from_array((shape, v))?.into_dyn()))
    }
}

/// Why a tensor could not be read from, or written to, shared memory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShmTensorError<E> {
    #[error("{0} elements do not fit in memory")]
    Allocation(usize),
    #[error(transparent)]
    Io(E),
    #[error("{0}")]
    Runtime(String),
}

/// Reads `count` elements of `datatype` with `read`, which fills the
/// bytes it is given (little-endian raw layout): straight into the typed
/// buffer ONNX Runtime will own, one copy.
pub fn read_le_with<E>(
    datatype: Datatype,
    count: usize,
    read: impl FnOnce(&mut [u8]) -> Result<(), E>,
) -> Result<TensorData, ShmTensorError<E>> {
    fn typed<T: bytemuck::Pod, E>(
        count: usize,
        read: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Vec<T>, ShmTensorError<E>> {
        let mut values: Vec<T> = bytemuck::allocation::try_zeroed_vec(count)
            .map_err(|()| ShmTensorError::Allocation(count))?;
        read(bytemuck::cast_slice_mut(&mut values)).map_err(ShmTensorError::Io)?;
        if cfg!(target_endian = "big") {
            // The wire is little-endian; swap each element in place.
            for v in &mut values {
                bytemuck::bytes_of_mut(v).reverse();
            }
        }
        Ok(values)
    }
    Ok(match datatype {
        Datatype::Bool => {
            let bytes: Vec<u8> = typed(count, read)?;
            TensorData::Bool(bytes.iter().map(|b| *b != 0).collect())
        }
        Datatype::Uint8 => TensorData::Uint8(typed(count, read)?),
        Datatype::Uint16 => TensorData::Uint16(typed(count, read)?),
        Datatype::Uint32 => TensorData::Uint32(typed(count, read)?),
        Datatype::Uint64 => TensorData::Uint64(typed(count, read)?),
        Datatype::Int8 => TensorData::Int8(typed(count, read)?),
        Datatype::Int16 => TensorData::Int16(typed(count, read)?),
        Datatype::Int32 => TensorData::Int32(typed(count, read)?),
        Datatype::Int64 => TensorData::Int64(typed(count, read)?),
        Datatype::Fp16 => TensorData::Fp16(typed(count, read)?),
        Datatype::Bf16 => TensorData::Bf16(typed(count, read)?),
        Datatype::Fp32 => TensorData::Fp32(typed(count, read)?),
        Datatype::Fp64 => TensorData::Fp64(typed(count, read)?),
    })
}

/// Hands an output tensor's elements as raw little-endian bytes to
/// `write` without copying them first (on a little-endian host; BOOL and
/// big-endian hosts go through a converted copy). Returns how many bytes
/// were written.
pub fn write_le_with<E>(
    value: &DynValue,
    datatype: Datatype,
    write: impl FnOnce(&[u8]) -> Result<(), E>,
) -> Result<usize, ShmTensorError<E>> {
    fn typed<T, E>(
        value: &DynValue,
        write: impl FnOnce(&[u8]) -> Result<(), E>,
    ) -> Result<usize, ShmTensorError<E>>
    where
        T: ort::value::PrimitiveTensorElementType + bytemuck::Pod + WireElement,
    {
        let (_, elements) = value
            .try_extract_tensor::<T>()
            .map_err(|e| ShmTensorError::Runtime(e.to_string()))?;
        if cfg!(target_endian = "little") {
            let bytes: &[u8] = bytemuck::cast_slice(elements);
            write(bytes).map_err(ShmTensorError::Io)?;
            Ok(bytes.len())
        } else {
            let mut out = Vec::with_capacity(elements.len() * T::BYTES);
            T::write_le(elements, &mut out);
            write(&out).map_err(ShmTensorError::Io)?;
            Ok(out.len())
        }
    }
    match datatype {
        Datatype::Bool => {
            let (_, elements) = value
                .try_extract_tensor::<bool>()
                .map_err(|e| ShmTensorError::Runtime(e.to_string()))?;
            let bytes: Vec<u8> = elements.iter().map(|b| u8::from(*b)).collect();
            write(&bytes).map_err(ShmTensorError::Io)?;
            Ok(bytes.len())
        }
        Datatype::Uint8 => typed::<u8, E>(value, write),
        Datatype::Uint16 => typed::<u16, E>(value, write),
        Datatype::Uint32 => typed::<u32, E>(value, write),
        Datatype::Uint64 => typed::<u64, E>(value, write),
        Datatype::Int8 => typed::<i8, E>(value, write),
        Datatype::Int16 => typed::<i16, E>(value, write),
        Datatype::Int32 => typed::<i32, E>(value, write),
        Datatype::Int64 => typed::<i64, E>(value, write),
        Datatype::Fp16 => typed::<f16, E>(value, write),
        Datatype::Bf16 => typed::<bf16, E>(value, write),
        Datatype::Fp32 => typed::<f32, E>(value, write),
        Datatype::Fp64 => typed::<f64, E>(value, write),
    }
}

/// `values` converted one by one to the narrower `T`, or the first that
/// does not fit.
fn narrow<W, T>(
    values: &[W],
    field: &'static str,
    datatype: Datatype,
) -> Result<Vec<T>, ContentsError>
where
    W: Copy + Into<i64>,
    T: TryFrom<W>,
{
    values
        .iter()
        .enumerate()
        .map(|(index, v)| {
            T::try_from(*v).map_err(|_| ContentsError::OutOfRange {
                field,
                index,
                value: (*v).into(),
                datatype,
            })
        })
        .collect()
}

/// The raw little-endian bytes of an output tensor of `datatype`.
pub fn ort_value_le_bytes(value: &DynValue, datatype: Datatype) -> ort::Result<Vec<u8>> {
    fn bytes<T: ort::value::PrimitiveTensorElementType + WireElement>(
        value: &DynValue,
    ) -> ort::Result<Vec<u8>> {
        let (_, elements) = value.try_extract_tensor::<T>()?;
        let mut out = Vec::with_capacity(elements.len() * T::BYTES);
        T::write_le(elements, &mut out);
        Ok(out)
    }
    match datatype {
        Datatype::Bool => bytes::<bool>(value),
        Datatype::Uint8 => bytes::<u8>(value),
        Datatype::Uint16 => bytes::<u16>(value),
        Datatype::Uint32 => bytes::<u32>(value),
        Datatype::Uint64 => bytes::<u64>(value),
        Datatype::Int8 => bytes::<i8>(value),
        Datatype::Int16 => bytes::<i16>(value),
        Datatype::Int32 => bytes::<i32>(value),
        Datatype::Int64 => bytes::<i64>(value),
        Datatype::Fp16 => bytes::<f16>(value),
        Datatype::Bf16 => bytes::<bf16>(value),
        Datatype::Fp32 => bytes::<f32>(value),
        Datatype::Fp64 => bytes::<f64>(value),
    }
}

#[cfg(test)]
#[path = "tensor_data_tests.rs"]
mod tests;
