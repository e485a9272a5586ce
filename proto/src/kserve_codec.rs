//! The codec of the KServe v2 services: prost's, except that a request
//! that does not decode is the caller's error, `INVALID_ARGUMENT` naming
//! the message and the field, where `tonic-prost` answers `INTERNAL`
//! (which tells a client the server failed). Encoding is prost's own.
//!
//! A `ModelInferRequest` is bounded before prost decodes it: a few wire
//! bytes can decode into hundreds of bytes on the heap (an empty `inputs`
//! entry is 2 bytes on the wire, ~300 in memory), so its wire format is
//! walked first, without allocating, and a request with more entries than
//! [`InferRequestLimits`] allows is `INVALID_ARGUMENT` before anything is
//! allocated for it.

use std::any::TypeId;
use std::marker::PhantomData;

use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

use crate::kserve::ModelInferRequest;

/// `tonic_prost::ProstCodec` with malformed input as `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct KserveCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for KserveCodec<T, U> {
    fn default() -> Self {
        KserveCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for KserveCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = KserveDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        KserveDecoder { _pd: PhantomData }
    }
}

/// Decodes `U` with prost; a decode error is `INVALID_ARGUMENT`; a
/// `ModelInferRequest` is checked against [`InferRequestLimits`] first.
#[derive(Debug, Clone)]
pub struct KserveDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default + 'static> Decoder for KserveDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let malformed =
            |e: prost::DecodeError| Status::invalid_argument(format!("malformed request: {e}"));
        if TypeId::of::<U>() != TypeId::of::<ModelInferRequest>() {
            return U::decode(buf).map(Some).map_err(malformed);
        }
        if buf.chunk().len() == buf.remaining() {
            InferRequestLimits::DEFAULT
                .check(buf.chunk())
                .map_err(Status::invalid_argument)?;
            U::decode(buf).map(Some).map_err(malformed)
        } else {
            // Not contiguous (tonic's buffer is, so this is not expected):
            // one copy of the message, then the same check.
            let bytes = buf.copy_to_bytes(buf.remaining());
            InferRequestLimits::DEFAULT
                .check(&bytes)
                .map_err(Status::invalid_argument)?;
            U::decode(bytes).map(Some).map_err(malformed)
        }
    }
}

/// The most entries a `ModelInferRequest` may have of each field that
/// decodes into heap objects (tags as in `proto/kserve/grpc_service.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferRequestLimits {
    /// `inputs` (5).
    pub inputs: usize,
    /// `outputs` (6).
    pub outputs: usize,
    /// `raw_input_contents` (7).
    pub raw_input_contents: usize,
    /// Entries of any one `parameters` map: the request's (4), an input's
    /// (4), an output's (2).
    pub parameters: usize,
    /// `shape` (3) dimensions of one input.
    pub shape_dims: usize,
    /// `contents.bytes_contents` (5 → 8) entries, all inputs together.
    pub bytes_contents: usize,
    /// Elements of the typed `contents` (5 → 1..=7), all inputs together.
    pub typed_contents: usize,
}

/// Fields of `ModelInferRequest`.
const REQUEST_PARAMETERS: u32 = 4;
const REQUEST_INPUTS: u32 = 5;
const REQUEST_OUTPUTS: u32 = 6;
const REQUEST_RAW_INPUT_CONTENTS: u32 = 7;
/// Fields of `ModelInferRequest.InferInputTensor`.
const INPUT_SHAPE: u32 = 3;
const INPUT_PARAMETERS: u32 = 4;
const INPUT_CONTENTS: u32 = 5;
/// Fields of `ModelInferRequest.InferRequestedOutputTensor`.
const OUTPUT_PARAMETERS: u32 = 2;
/// Fields of `InferTensorContents`: 1..=5 varints (bool, int32, int64,
/// uint32, uint64), 6 fp32, 7 fp64, 8 bytes.
const CONTENTS_FP32: u32 = 6;
const CONTENTS_FP64: u32 = 7;
const CONTENTS_BYTES: u32 = 8;

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

impl InferRequestLimits {
    /// The sidecar's limits: far above what a model's signature takes,
    /// far below what costs memory.
    pub const DEFAULT: InferRequestLimits = InferRequestLimits {
        inputs: 256,
        outputs: 256,
        raw_input_contents: 1024,
        parameters: 64,
        shape_dims: 64,
        bytes_contents: 65_536,
        typed_contents: 16 * 1024 * 1024,
    };

    /// Walks an encoded `ModelInferRequest`; `Err` names the first limit
    /// passed, or what is malformed. Allocates nothing unless refusing.
    pub fn check(&self, message: &[u8]) -> Result<(), String> {
        let mut totals = Totals::default();
        let (mut inputs, mut outputs, mut raw, mut parameters) = (0usize, 0usize, 0usize, 0usize);
        let mut fields = Fields::new(message);
        while let Some(field) = fields.next_field()? {
            match field {
                Field::Len(REQUEST_PARAMETERS, _) => {
                    parameters += 1;
                    self.at_most(parameters, self.parameters, "request has", "parameters")?;
                }
                Field::Len(REQUEST_INPUTS, input) => {
                    inputs += 1;
                    self.at_most(inputs, self.inputs, "request has", "inputs")?;
                    self.check_input(input, &mut totals)?;
                }
                Field::Len(REQUEST_OUTPUTS, output) => {
                    outputs += 1;
                    self.at_most(outputs, self.outputs, "request has", "outputs")?;
                    self.check_output(output)?;
                }
                Field::Len(REQUEST_RAW_INPUT_CONTENTS, _) => {
                    raw += 1;
                    self.at_most(
                        raw,
                        self.raw_input_contents,
                        "request has",
                        "raw_input_contents entries",
                    )?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn at_most(&self, count: usize, limit: usize, whose: &str, what: &str) -> Result<(), String> {
        if count > limit {
            Err(format!(
                "{whose} more than {limit} {what}: at most {limit} are accepted"
            ))
        } else {
            Ok(())
        }
    }

    fn check_input(&self, input: &[u8], totals: &mut Totals) -> Result<(), String> {
        let (mut parameters, mut dims) = (0usize, 0usize);
        let mut fields = Fields::new(input);
        while let Some(field) = fields.next_field()? {
            match field {
                Field::Len(INPUT_PARAMETERS, _) => {
                    parameters += 1;
                    self.at_most(parameters, self.parameters, "an input has", "parameters")?;
                }
                Field::Len(INPUT_SHAPE, packed) => {
                    dims += varints_in(packed);
                    self.at_most(dims, self.shape_dims, "an input's shape has", "dimensions")?;
                }
                Field::Scalar(INPUT_SHAPE) => {
                    dims += 1;
                    self.at_most(dims, self.shape_dims, "an input's shape has", "dimensions")?;
                }
                Field::Len(INPUT_CONTENTS, contents) => self.check_contents(contents, totals)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn check_output(&self, output: &[u8]) -> Result<(), String> {
        let mut parameters = 0usize;
        let mut fields = Fields::new(output);
        while let Some(field) = fields.next_field()? {
            if let Field::Len(OUTPUT_PARAMETERS, _) = field {
                parameters += 1;
                self.at_most(parameters, self.parameters, "an output has", "parameters")?;
            }
        }
        Ok(())
    }

    fn check_contents(&self, contents: &[u8], totals: &mut Totals) -> Result<(), String> {
        let mut fields = Fields::new(contents);
        while let Some(field) = fields.next_field()? {
            match field {
                Field::Len(CONTENTS_BYTES, _) => {
                    totals.bytes_contents += 1;
                    self.at_most(
                        totals.bytes_contents,
                        self.bytes_contents,
                        "request has",
                        "bytes_contents entries",
                    )?;
                }
                // Packed: 4 or 8 bytes an element, or varints.
                Field::Len(CONTENTS_FP32, packed) => totals.typed += packed.len() / 4,
                Field::Len(CONTENTS_FP64, packed) => totals.typed += packed.len() / 8,
                Field::Len(1..=5, packed) => totals.typed += varints_in(packed),
                Field::Scalar(1..=CONTENTS_FP64) => totals.typed += 1,
                _ => continue,
            }
            self.at_most(
                totals.typed,
                self.typed_contents,
                "request has",
                "typed contents elements",
            )?;
        }
        Ok(())
    }
}

/// Counts across all inputs.
#[derive(Debug, Default)]
struct Totals {
    bytes_contents: usize,
    typed: usize,
}

/// The number of varints in a packed field: the bytes that end one.
fn varints_in(packed: &[u8]) -> usize {
    packed.iter().filter(|b| **b & 0x80 == 0).count()
}

/// One field of a message: a length-delimited one with its payload, or
/// any other with only its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field<'a> {
    Len(u32, &'a [u8]),
    Scalar(u32),
}

/// The fields of one message's wire bytes, in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Fields<'a> {
        Fields { rest: bytes }
    }

    fn next_field(&mut self) -> Result<Option<Field<'a>>, String> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = u32::try_from(key >> 3)
            .ok()
            .filter(|n| (1..=0x1FFF_FFFF).contains(n))
            .ok_or_else(|| format!("{MALFORMED}invalid field number {}", key >> 3))?;
        let field = match (key & 7) as u8 {
            VARINT => {
                self.varint()?;
                Field::Scalar(number)
            }
            FIXED64 => {
                self.take(8)?;
                Field::Scalar(number)
            }
            FIXED32 => {
                self.take(4)?;
                Field::Scalar(number)
            }
            LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| truncated())?;
                Field::Len(number, self.take(len)?)
            }
            other => {
                return Err(format!(
                "{MALFORMED}field {number} has wire type {other}, which this protocol does not use"
            ))
            }
        };
        Ok(Some(field))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err(truncated());
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let Some((&byte, rest)) = self.rest.split_first() else {
                return Err(truncated());
            };
            self.rest = rest;
            if i == 9 && byte > 1 {
                return Err(format!("{MALFORMED}a varint over 64 bits"));
            }
            value |= u64::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(format!("{MALFORMED}a varint over 64 bits"))
    }
}

/// How a request that does not decode is answered, prost's words (the
/// walker refuses what prost would, before prost allocates for it).
const MALFORMED: &str = "malformed request: failed to decode Protobuf message: ";

fn truncated() -> String {
    format!("{MALFORMED}truncated (a field runs past the end of its message)")
}

#[cfg(test)]
#[path = "kserve_codec_tests.rs"]
mod tests;
