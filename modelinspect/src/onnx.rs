//! ONNX: a protobuf `ModelProto` that is the whole file. Initializers (the
//! weights) sit inline in the graph as `raw_data`, so a model can be
//! gigabytes: the model, its graph and every initializer are walked field
//! by field over the reader, taking the identity and each tensor's name,
//! shape and type, and seeking past the data. Only small messages (opset
//! imports, graph inputs and outputs) are decoded whole, with the types
//! prost generates from the vendored `proto/onnx/onnx.proto`.
//!
//! Every length is checked against the message holding it (and so the
//! file) before anything is read or allocated; what is read in memory is
//! also charged to the byte budget.

use std::collections::BTreeMap;
use std::io::{Read, Seek};

use prost::Message;

use crate::budget::Bounded;
use crate::error::InspectError;
use crate::report::{ModelReport, OnnxDetails, Tensor};

/// The types generated from `proto/onnx/onnx.proto` (package `onnx`).
#[allow(dead_code, clippy::all, clippy::pedantic)]
pub(crate) mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Bytes read from the file at a time; the walker buffers so that tags
/// and varints are not one read each.
const CHUNK: u64 = 16 << 10;

/// Largest message decoded whole (a graph input or output, an opset
/// import); real ones are well under a kilobyte.
const MAX_SMALL_MESSAGE: u64 = 1 << 20;

/// Longest name kept (tensor, graph, producer); longer ones are cut.
const KEEP_NAME: u64 = 4096;

/// Longest metadata value kept whole; longer ones are cut with "…".
const KEEP_VALUE: u64 = 512;

/// Metadata keys that name the model or its architecture.
const NAME_KEYS: &[&str] = &["name", "model_name", "general.name"];
const ARCHITECTURE_KEYS: &[&str] = &[
    "architecture",
    "model_type",
    "general.architecture",
    "modelspec.architecture",
];

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: u64 = 1;

/// Reads the ONNX model `r` holds (the whole file, from where `r` is):
/// the model's identity and opset imports, the graph's name, node count,
/// inputs and outputs, every initializer's name, shape and type, and
/// `metadata_props`. Initializer data is skipped, never read.
pub fn read<R: Read + Seek>(
    r: &mut Bounded<R>,
    report: &mut ModelReport,
) -> Result<(), InspectError> {
    let end = r.len();
    let mut w = Wire::new(r);
    let mut d = OnnxDetails::default();
    let mut ir_version = None;
    let mut metadata = BTreeMap::new();
    let mut graph = Graph::default();
    while let Some(f) = w.field(end, "ModelProto")? {
        match f.number {
            1 => ir_version = Some(w.int(&f, "ir_version")?),
            2 => d.producer_name = w.text(&f, end, "producer_name", KEEP_NAME)?,
            3 => d.producer_version = w.text(&f, end, "producer_version", KEEP_NAME)?,
            4 => d.domain = w.text(&f, end, "domain", KEEP_NAME)?,
            5 => d.model_version = w.int(&f, "model_version")?,
            7 => {
                let gend = w.len_end(&f, end, "graph")?;
                w.graph(gend, &mut graph, 1)?;
            }
            8 => {
                w.count(d.opsets.len(), "opset imports")?;
                let op: pb::OperatorSetIdProto = w.small(&f, end, "opset_import")?;
                d.opsets.insert(
                    op.domain.unwrap_or_default(),
                    op.version.unwrap_or_default(),
                );
            }
            14 => {
                w.count(metadata.len(), "metadata_props")?;
                let lend = w.len_end(&f, end, "metadata_props")?;
                let (k, v) = w.entry(lend, 1)?;
                metadata.insert(k, v);
            }
            _ => w.skip_value(&f, end, "ModelProto")?,
        }
    }
    let ir_version = ir_version
        .ok_or_else(|| InspectError::malformed(0, "ModelProto has no ir_version: not ONNX"))?;
    d.ir_version = ir_version;
    d.graph_name = graph.name;
    d.node_count = graph.nodes;
    d.inputs = graph.inputs;
    d.outputs = graph.outputs;
    d.external_data = graph.external_data;
    let first = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| metadata.get(*k))
            .cloned()
            .unwrap_or_default()
    };
    report.format_version = ir_version.to_string();
    report.name = if d.graph_name.is_empty() {
        first(NAME_KEYS)
    } else {
        d.graph_name.clone()
    };
    report.architecture = first(ARCHITECTURE_KEYS);
    report.metadata = metadata;
    report.tensors = graph.tensors;
    report.onnx = Some(d);
    Ok(())
}

/// What the graph walk collects.
#[derive(Default)]
struct Graph {
    name: String,
    nodes: u64,
    tensors: Vec<Tensor>,
    inputs: Vec<(String, String)>,
    outputs: Vec<(String, String)>,
    external_data: bool,
}

/// A field's key, and where it starts.
struct Field {
    number: u64,
    wire: u8,
    at: u64,
}

/// A buffered protobuf walker over the bounded reader: `r.pos()` is always
/// the file offset of the end of `buf`.
struct Wire<'a, R> {
    r: &'a mut Bounded<R>,
    buf: Vec<u8>,
    at: usize,
}

impl<'a, R: Read + Seek> Wire<'a, R> {
    fn new(r: &'a mut Bounded<R>) -> Self {
        Self {
            r,
            buf: Vec::new(),
            at: 0,
        }
    }

    /// The file offset of the next byte.
    fn pos(&self) -> u64 {
        self.r.pos() - (self.buf.len() - self.at) as u64
    }

    fn buffered(&self) -> u64 {
        (self.buf.len() - self.at) as u64
    }

    fn byte(&mut self, what: &str) -> Result<u8, InspectError> {
        if self.at == self.buf.len() {
            // Read ahead, but never past the end or more than the budget
            // has left (so a nearly spent budget fails only when a byte
            // it does not have is needed).
            let left = self.r.remaining();
            if left == 0 {
                return Err(InspectError::Truncated {
                    offset: self.pos(),
                    what: what.to_string(),
                });
            }
            let budget = self.r.budget();
            let budget_left = budget.max_bytes.saturating_sub(self.r.bytes_read());
            let n = CHUNK.min(left).min(budget_left.max(1));
            self.buf.clear();
            self.at = 0;
            self.buf.resize(n as usize, 0);
            if let Err(e) = self.r.read_exact_or(&mut self.buf, what) {
                self.buf.clear();
                return Err(e);
            }
        }
        let b = self.buf[self.at];
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self, what: &str) -> Result<u64, InspectError> {
        let start = self.pos();
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.byte(what)?;
            if i == 9 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(InspectError::malformed(
            start,
            format!("{what}: varint longer than 64 bits"),
        ))
    }

    /// `n` bytes in memory: checked against the file and the budget (by
    /// `read_vec`) before allocating.
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, InspectError> {
        let have = self.buffered();
        if n <= have {
            let from = self.at;
            self.at += n as usize;
            return Ok(self.buf[from..self.at].to_vec());
        }
        let rest = self.r.read_vec(n - have, what)?;
        let mut v = Vec::with_capacity(n as usize);
        v.extend_from_slice(&self.buf[self.at..]);
        v.extend_from_slice(&rest);
        self.at = self.buf.len();
        Ok(v)
    }

    /// Moves `n` bytes on: a seek (free against the byte budget) past what
    /// is buffered.
    fn skip(&mut self, n: u64, what: &str) -> Result<(), InspectError> {
        let have = self.buffered();
        if n <= have {
            self.at += n as usize;
            return Ok(());
        }
        self.at = self.buf.len();
        self.r.skip(n - have, what)
    }

    /// The next field of a message ending at `end`, `None` at its end.
    fn field(&mut self, end: u64, msg: &str) -> Result<Option<Field>, InspectError> {
        let at = self.pos();
        if at >= end {
            return Ok(None);
        }
        let key = self.varint(&format!("{msg} field key"))?;
        let number = key >> 3;
        if number == 0 || number > (1 << 29) - 1 {
            return Err(InspectError::malformed(
                at,
                format!("{msg}: field number {number} out of range"),
            ));
        }
        Ok(Some(Field {
            number,
            wire: (key & 7) as u8,
            at,
        }))
    }

    fn expect(&self, f: &Field, wire: u8, what: &str) -> Result<(), InspectError> {
        if f.wire != wire {
            return Err(InspectError::malformed(
                f.at,
                format!(
                    "{what} (field {}): wire type {}, expected {}",
                    f.number, f.wire, wire
                ),
            ));
        }
        Ok(())
    }

    /// A varint field as the int64/int32 it encodes.
    fn int(&mut self, f: &Field, what: &str) -> Result<i64, InspectError> {
        self.expect(f, VARINT, what)?;
        Ok(self.varint(what)? as i64)
    }

    /// A length-delimited field's length, checked against the end of the
    /// message holding it; returns where its value ends.
    fn len_end(&mut self, f: &Field, end: u64, what: &str) -> Result<u64, InspectError> {
        self.expect(f, LEN, what)?;
        self.length(end, what)
    }

    fn length(&mut self, end: u64, what: &str) -> Result<u64, InspectError> {
        let offset = self.pos();
        let n = self.varint(&format!("{what} length"))?;
        let at = self.pos();
        let left = end.saturating_sub(at);
        if n > left {
            let what = format!("{what} ({n} bytes claimed, {left} left)");
            return Err(if end == self.r.len() {
                InspectError::Truncated { offset, what }
            } else {
                InspectError::Malformed {
                    offset,
                    what: format!("{what}: runs past the end of the message holding it"),
                }
            });
        }
        Ok(at + n)
    }

    /// A string field, at most `keep` bytes of it (the rest skipped).
    fn text(&mut self, f: &Field, end: u64, what: &str, keep: u64) -> Result<String, InspectError> {
        let vend = self.len_end(f, end, what)?;
        self.text_to(vend, what, keep)
    }

    fn text_to(&mut self, vend: u64, what: &str, keep: u64) -> Result<String, InspectError> {
        let n = vend - self.pos();
        let bytes = self.bytes(n.min(keep), what)?;
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if n > keep {
            self.skip(n - keep, what)?;
            s.push('…');
        }
        Ok(s)
    }

    /// A small message decoded whole with prost.
    fn small<M: Message + Default>(
        &mut self,
        f: &Field,
        end: u64,
        what: &str,
    ) -> Result<M, InspectError> {
        let vend = self.len_end(f, end, what)?;
        let start = self.pos();
        let n = vend - start;
        if n > MAX_SMALL_MESSAGE {
            return Err(InspectError::TooMany {
                what: format!("bytes in one {what} at byte {start}"),
                count: n,
                max: MAX_SMALL_MESSAGE,
            });
        }
        let bytes = self.bytes(n, what)?;
        M::decode(bytes.as_slice())
            .map_err(|e| InspectError::malformed(start, format!("{what}: {e}")))
    }

    /// Fails once a table already holds the most the budget allows.
    fn count(&self, have: usize, what: &str) -> Result<(), InspectError> {
        self.r.budget().check_items(have as u64 + 1, what)
    }

    fn enter(&self, depth: usize, what: &str) -> Result<(), InspectError> {
        let max = self.r.budget().max_depth;
        if depth > max {
            return Err(InspectError::TooDeep {
                what: what.to_string(),
                max,
            });
        }
        Ok(())
    }

    /// Skips a field's value, whatever its wire type.
    fn skip_value(&mut self, f: &Field, end: u64, msg: &str) -> Result<(), InspectError> {
        let what = format!("{msg} field {}", f.number);
        match f.wire {
            VARINT => {
                self.varint(&what)?;
            }
            FIXED64 => self.skip_fixed(8, end, &what)?,
            FIXED32 => self.skip_fixed(4, end, &what)?,
            LEN => {
                let vend = self.length(end, &what)?;
                self.skip(vend - self.pos(), &what)?;
            }
            START_GROUP => self.skip_group(f, end, &what)?,
            w => {
                return Err(InspectError::malformed(
                    f.at,
                    format!("{what}: wire type {w} where a field was expected"),
                ))
            }
        }
        if self.pos() > end {
            return Err(InspectError::malformed(
                f.at,
                format!("{what} runs past the end of its message"),
            ));
        }
        Ok(())
    }

    fn skip_fixed(&mut self, n: u64, end: u64, what: &str) -> Result<(), InspectError> {
        if n > end.saturating_sub(self.pos()) {
            return Err(InspectError::malformed(
                self.pos(),
                format!("{what}: {n} bytes run past the end of its message"),
            ));
        }
        self.skip(n, what)
    }

    /// A (deprecated) group, to its matching end-group key: iterative, its
    /// nesting bounded by the budget.
    fn skip_group(&mut self, f: &Field, end: u64, what: &str) -> Result<(), InspectError> {
        let mut open = vec![f.number];
        while let Some(&number) = open.last() {
            let g = self
                .field(end, what)?
                .ok_or_else(|| InspectError::malformed(f.at, format!("{what}: group not ended")))?;
            match g.wire {
                START_GROUP => {
                    open.push(g.number);
                    self.enter(open.len(), "protobuf groups")?;
                }
                END_GROUP if g.number == number => {
                    open.pop();
                }
                END_GROUP => {
                    return Err(InspectError::malformed(
                        g.at,
                        format!("{what}: group {number} ended as {}", g.number),
                    ))
                }
                _ => self.skip_value(&g, end, what)?,
            }
        }
        Ok(())
    }

    /// `GraphProto` fields up to `end`.
    fn graph(&mut self, end: u64, g: &mut Graph, depth: usize) -> Result<(), InspectError> {
        self.enter(depth, "GraphProto")?;
        while let Some(f) = self.field(end, "GraphProto")? {
            match f.number {
                1 => {
                    let nend = self.len_end(&f, end, "node")?;
                    self.skip(nend - self.pos(), "node")?;
                    g.nodes += 1;
                }
                2 => g.name = self.text(&f, end, "graph name", KEEP_NAME)?,
                5 => {
                    self.count(g.tensors.len(), "initializers")?;
                    let tend = self.len_end(&f, end, "initializer")?;
                    let (t, external) = self.tensor(tend, depth + 1)?;
                    g.external_data |= external;
                    g.tensors.push(t);
                }
                15 => {
                    self.count(g.tensors.len(), "initializers")?;
                    let send = self.len_end(&f, end, "sparse_initializer")?;
                    let (t, external) = self.sparse_tensor(send, depth + 1)?;
                    g.external_data |= external;
                    g.tensors.push(t);
                }
                11 | 12 => {
                    let (list, what) = if f.number == 11 {
                        (&mut g.inputs, "graph input")
                    } else {
                        (&mut g.outputs, "graph output")
                    };
                    self.count(list.len(), what)?;
                    let at = f.at;
                    let v: pb::ValueInfoProto = self.small(&f, end, what)?;
                    let ty =
                        match &v.r#type {
                            Some(t) => type_string(t, depth + 2, self.r.budget().max_depth)
                                .map_err(|e| match e {
                                    TypeError::TooDeep(max) => InspectError::TooDeep {
                                        what: format!("{what} type at byte {at}"),
                                        max,
                                    },
                                })?,
                            None => "?".to_string(),
                        };
                    let mut name = v.name.unwrap_or_default();
                    cut(&mut name, KEEP_NAME);
                    list.push((name, ty));
                }
                _ => self.skip_value(&f, end, "GraphProto")?,
            }
        }
        Ok(())
    }

    /// A `TensorProto`: its shape, type and name; the data is skipped.
    /// Also says whether the data is in another file.
    fn tensor(&mut self, end: u64, depth: usize) -> Result<(Tensor, bool), InspectError> {
        self.enter(depth, "TensorProto")?;
        let mut t = Tensor {
            name: String::new(),
            shape: Vec::new(),
            dtype: String::new(),
        };
        let mut external = false;
        while let Some(f) = self.field(end, "TensorProto")? {
            match f.number {
                1 => self.dims(&f, end, &mut t.shape, "dims")?,
                2 => t.dtype = dtype_name(self.int(&f, "data_type")?),
                8 => t.name = self.text(&f, end, "tensor name", KEEP_NAME)?,
                14 => external = self.int(&f, "data_location")? as u64 == EXTERNAL,
                _ => self.skip_value(&f, end, "TensorProto")?,
            }
        }
        Ok((t, external))
    }

    /// A `SparseTensorProto`: the dense shape, the values' type and name.
    fn sparse_tensor(&mut self, end: u64, depth: usize) -> Result<(Tensor, bool), InspectError> {
        self.enter(depth, "SparseTensorProto")?;
        let mut t = Tensor {
            name: String::new(),
            shape: Vec::new(),
            dtype: String::new(),
        };
        let mut external = false;
        while let Some(f) = self.field(end, "SparseTensorProto")? {
            match f.number {
                1 => {
                    let vend = self.len_end(&f, end, "sparse values")?;
                    let (values, ext) = self.tensor(vend, depth + 1)?;
                    t.name = values.name;
                    t.dtype = values.dtype;
                    external |= ext;
                }
                3 => self.dims(&f, end, &mut t.shape, "sparse dims")?,
                _ => self.skip_value(&f, end, "SparseTensorProto")?,
            }
        }
        Ok((t, external))
    }

    /// `repeated int64` dims, packed or not.
    fn dims(
        &mut self,
        f: &Field,
        end: u64,
        shape: &mut Vec<u64>,
        what: &str,
    ) -> Result<(), InspectError> {
        let one = |w: &mut Self, shape: &mut Vec<u64>| -> Result<(), InspectError> {
            w.count(shape.len(), what)?;
            let at = w.pos();
            let v = w.varint(what)? as i64;
            let d = u64::try_from(v).map_err(|_| {
                InspectError::malformed(at, format!("{what}: negative dimension {v}"))
            })?;
            shape.push(d);
            Ok(())
        };
        match f.wire {
            VARINT => one(self, shape),
            LEN => {
                let pend = self.length(end, what)?;
                while self.pos() < pend {
                    one(self, shape)?;
                }
                if self.pos() > pend {
                    return Err(InspectError::malformed(
                        f.at,
                        format!("{what}: a packed value runs past its field"),
                    ));
                }
                Ok(())
            }
            w => Err(InspectError::malformed(
                f.at,
                format!("{what}: wire type {w}, expected varint or packed"),
            )),
        }
    }

    /// A `StringStringEntryProto` (key 1, value 2), walked in place so a
    /// long value is cut, not read whole.
    fn entry(&mut self, end: u64, depth: usize) -> Result<(String, String), InspectError> {
        self.enter(depth, "StringStringEntryProto")?;
        let (mut k, mut v) = (String::new(), String::new());
        while let Some(f) = self.field(end, "metadata_props entry")? {
            match f.number {
                1 => k = self.text(&f, end, "metadata key", KEEP_NAME)?,
                2 => v = self.text(&f, end, "metadata value", KEEP_VALUE)?,
                _ => self.skip_value(&f, end, "metadata_props entry")?,
            }
        }
        Ok((k, v))
    }
}

/// Cuts `s` to at most `keep` bytes (at a character boundary), marking it.
fn cut(s: &mut String, keep: u64) {
    if s.len() as u64 > keep {
        let mut at = keep as usize;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
        s.push('…');
    }
}

/// `TensorProto.DataType` by the name numpy and most tools use.
pub(crate) fn dtype_name(t: i64) -> String {
    let name = match t {
        0 => "undefined",
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        14 => "complex64",
        15 => "complex128",
        16 => "bfloat16",
        17 => "float8e4m3fn",
        18 => "float8e4m3fnuz",
        19 => "float8e5m2",
        20 => "float8e5m2fnuz",
        21 => "uint4",
        22 => "int4",
        23 => "float4e2m1",
        24 => "float8e8m0",
        25 => "uint2",
        26 => "int2",
        27 => "float6e2m3",
        28 => "float6e3m2",
        n => return format!("type{n}"),
    };
    name.to_string()
}

enum TypeError {
    TooDeep(usize),
}

/// A value's type as "float32[batch,3,224,224]": a symbolic dimension by
/// its name, an unknown one as "?"; no brackets where the rank is unknown.
fn type_string(t: &pb::TypeProto, depth: usize, max: usize) -> Result<String, TypeError> {
    use pb::type_proto::Value;
    if depth > max {
        return Err(TypeError::TooDeep(max));
    }
    let inner = |t: &Option<Box<pb::TypeProto>>| match t {
        Some(t) => type_string(t, depth + 1, max),
        None => Ok("?".to_string()),
    };
    Ok(match &t.value {
        Some(Value::TensorType(tt)) => {
            tensor_string(tt.elem_type.unwrap_or_default(), tt.shape.as_ref())
        }
        Some(Value::SparseTensorType(tt)) => format!(
            "sparse {}",
            tensor_string(tt.elem_type.unwrap_or_default(), tt.shape.as_ref())
        ),
        Some(Value::SequenceType(s)) => format!("seq({})", inner(&s.elem_type)?),
        Some(Value::MapType(m)) => format!(
            "map({},{})",
            dtype_name(i64::from(m.key_type.unwrap_or_default())),
            inner(&m.value_type)?
        ),
        Some(Value::OptionalType(o)) => format!("optional({})", inner(&o.elem_type)?),
        Some(Value::OpaqueType(o)) => format!(
            "opaque({}.{})",
            o.domain.as_deref().unwrap_or_default(),
            o.name.as_deref().unwrap_or_default()
        ),
        None => "?".to_string(),
    })
}

fn tensor_string(elem: i32, shape: Option<&pb::TensorShapeProto>) -> String {
    use pb::tensor_shape_proto::dimension::Value;
    let mut s = dtype_name(i64::from(elem));
    if let Some(shape) = shape {
        let dims: Vec<String> = shape
            .dim
            .iter()
            .map(|d| match &d.value {
                Some(Value::DimValue(v)) => v.to_string(),
                Some(Value::DimParam(p)) if !p.is_empty() => {
                    let mut p = p.clone();
                    cut(&mut p, 64);
                    p
                }
                _ => "?".to_string(),
            })
            .collect();
        s.push('[');
        s.push_str(&dims.join(","));
        s.push(']');
    }
    s
}

#[cfg(test)]
#[path = "onnx_tests.rs"]
pub(crate) mod tests;
