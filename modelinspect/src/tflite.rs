//! TFLite: a FlatBuffer with the file identifier "TFL3" (bytes 4..8),
//! read by hand (TensorFlow's `schema.fbs`): the `Model` table's version,
//! operator codes, subgraphs (each subgraph's tensor count), description,
//! buffers and metadata; and the constant tensors of the main subgraph
//! (those whose buffer holds data), for the parameter count and the
//! structure fingerprint.
//!
//! Only the bytes needed are read, by seeking: the weights in the buffers
//! never are. Every offset is checked against the file's length before it
//! is followed, and every vector's length against the bytes after it, so
//! a hostile file gets an error, not a wild read or a huge allocation.
//! FlatBuffer offsets only point forward and the walk has a fixed depth,
//! so a file cannot make it loop.
//!
//! FlatBuffer layout (little-endian): a table starts with an i32 offset
//! back to its vtable (table − offset); the vtable is a u16 vtable size,
//! a u16 table size, then a u16 per field (the field's offset in the
//! table, 0 where absent). Strings, vectors and sub-tables are u32 offsets
//! forward from where the offset is stored; a vector or string is a u32
//! length, then its elements.

use std::io::{Read, Seek};

use crate::budget::Bounded;
use crate::error::InspectError;
use crate::report::{ModelReport, Tensor, TfliteDetails};

/// Longest name or description kept; longer ones are cut with "…".
const KEEP_TEXT: u64 = 4096;

/// Metadata buffers up to this size are shown as text where they are.
const SHOW_METADATA: u64 = 256;

/// `Model` fields.
const MODEL_VERSION: u16 = 0;
const MODEL_OPERATOR_CODES: u16 = 1;
const MODEL_SUBGRAPHS: u16 = 2;
const MODEL_DESCRIPTION: u16 = 3;
const MODEL_BUFFERS: u16 = 4;
const MODEL_METADATA: u16 = 6;
/// `SubGraph.tensors`.
const SUBGRAPH_TENSORS: u16 = 0;
/// `Tensor` fields.
const TENSOR_SHAPE: u16 = 0;
const TENSOR_TYPE: u16 = 1;
const TENSOR_BUFFER: u16 = 2;
const TENSOR_NAME: u16 = 3;
/// `Buffer` fields: inline data, or (models over 2 GB) an offset and size
/// in the file.
const BUFFER_DATA: u16 = 0;
const BUFFER_SIZE: u16 = 2;
/// `Metadata` fields.
const METADATA_NAME: u16 = 0;
const METADATA_BUFFER: u16 = 1;
/// `ModelMetadata` (TFLite Support's `metadata_schema.fbs`, identifier
/// "M001"), held in the buffer of the metadata entry "TFLITE_METADATA".
const MODEL_METADATA_FIELDS: &[(u16, &str)] = &[
    (0, "name"),
    (1, "description"),
    (2, "version"),
    (4, "author"),
    (5, "license"),
];

/// Reads the TFLite model `r` holds: the `Model` table's counts, schema
/// version, description and metadata, and the main subgraph's constant
/// tensors (name, shape, type). Buffer contents are never read, except
/// metadata buffers (a runtime version, a model card).
pub fn read<R: Read + Seek>(
    r: &mut Bounded<R>,
    report: &mut ModelReport,
) -> Result<(), InspectError> {
    let mut fb = Fb { r };
    let mut ident = [0u8; 4];
    fb.read_at(4, &mut ident, "file identifier")?;
    if &ident != b"TFL3" {
        return Err(InspectError::malformed(
            4,
            format!("file identifier {ident:02x?}, not \"TFL3\""),
        ));
    }
    let model = fb.root(0, "Model")?;
    let mut d = TfliteDetails {
        schema_version: fb.u32_field(&model, MODEL_VERSION, "Model.version")?,
        ..TfliteDetails::default()
    };
    if let Some(v) = fb.vector(&model, MODEL_OPERATOR_CODES, 4, "Model.operator_codes")? {
        d.operator_codes = v.len;
    }
    let buffers = fb.vector(&model, MODEL_BUFFERS, 4, "Model.buffers")?;
    d.buffers = buffers.as_ref().map_or(0, |v| v.len);
    d.description = fb
        .string(&model, MODEL_DESCRIPTION, "Model.description")?
        .unwrap_or_default();
    if let Some(subgraphs) = fb.vector(&model, MODEL_SUBGRAPHS, 4, "Model.subgraphs")? {
        fb.bounded(subgraphs.len, "subgraphs")?;
        d.subgraphs = subgraphs.len;
        for i in 0..subgraphs.len {
            let what = format!("subgraph {i}");
            let sg = fb.table_in(&subgraphs, i, &what)?;
            let Some(tensors) = fb.vector(&sg, SUBGRAPH_TENSORS, 4, &format!("{what} tensors"))?
            else {
                continue;
            };
            d.tensors = d.tensors.saturating_add(tensors.len);
            if i == 0 {
                fb.bounded(tensors.len, "tensors in subgraph 0")?;
                for j in 0..tensors.len {
                    if let Some(t) = fb.constant_tensor(&tensors, j, buffers.as_ref())? {
                        report.tensors.push(t);
                    }
                }
            }
        }
    }
    fb.metadata(&model, buffers.as_ref(), report)?;
    report.format_version = d.schema_version.to_string();
    if let Some(name) = report.metadata.get("name") {
        report.name = name.clone();
    }
    report.tflite = Some(d);
    Ok(())
}

/// A table: where it is, and its vtable.
struct Table {
    pos: u64,
    vtable: u64,
    vtable_len: u64,
}

/// A vector: where its elements start, and how many.
struct Vector {
    start: u64,
    len: u64,
}

struct Fb<'a, R> {
    r: &'a mut Bounded<R>,
}

impl<R: Read + Seek> Fb<'_, R> {
    fn len(&self) -> u64 {
        self.r.len()
    }

    /// `buf.len()` bytes at `pos`, which must lie within the file.
    fn read_at(&mut self, pos: u64, buf: &mut [u8], what: &str) -> Result<(), InspectError> {
        let end = pos.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len()) {
            return Err(InspectError::Truncated {
                offset: pos,
                what: format!(
                    "{what} ({} bytes at byte {pos}, the file has {})",
                    buf.len(),
                    self.len()
                ),
            });
        }
        if self.r.pos() != pos {
            self.r.seek_to(pos)?;
        }
        self.r.read_exact_or(buf, what)
    }

    fn u8_at(&mut self, pos: u64, what: &str) -> Result<u8, InspectError> {
        let mut b = [0; 1];
        self.read_at(pos, &mut b, what)?;
        Ok(b[0])
    }

    fn u16_at(&mut self, pos: u64, what: &str) -> Result<u16, InspectError> {
        let mut b = [0; 2];
        self.read_at(pos, &mut b, what)?;
        Ok(u16::from_le_bytes(b))
    }

    fn u32_at(&mut self, pos: u64, what: &str) -> Result<u32, InspectError> {
        let mut b = [0; 4];
        self.read_at(pos, &mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64_at(&mut self, pos: u64, what: &str) -> Result<u64, InspectError> {
        let mut b = [0; 8];
        self.read_at(pos, &mut b, what)?;
        Ok(u64::from_le_bytes(b))
    }

    /// The u32 offset stored at `pos`, followed: where it points, within
    /// the file.
    fn follow(&mut self, pos: u64, what: &str) -> Result<u64, InspectError> {
        let to = pos + u64::from(self.u32_at(pos, what)?);
        if to >= self.len() {
            return Err(InspectError::malformed(
                pos,
                format!(
                    "{what}: offset to byte {to}, past the end of the file ({} bytes)",
                    self.len()
                ),
            ));
        }
        Ok(to)
    }

    /// The table at `pos`.
    fn table(&mut self, pos: u64, what: &str) -> Result<Table, InspectError> {
        let back = self.u32_at(pos, what)? as i32;
        let vtable = i64::try_from(pos).unwrap_or(i64::MAX) - i64::from(back);
        let vtable = u64::try_from(vtable).map_err(|_| {
            InspectError::malformed(
                pos,
                format!("{what}: vtable offset {back} points before the file"),
            )
        })?;
        let vtable_len = u64::from(self.u16_at(vtable, &format!("{what} vtable"))?);
        if vtable_len < 4 || vtable_len % 2 != 0 {
            return Err(InspectError::malformed(
                vtable,
                format!("{what}: vtable of {vtable_len} bytes"),
            ));
        }
        if vtable + vtable_len > self.len() {
            return Err(InspectError::Truncated {
                offset: vtable,
                what: format!("{what} vtable ({vtable_len} bytes)"),
            });
        }
        Ok(Table {
            pos,
            vtable,
            vtable_len,
        })
    }

    /// The root table, from the u32 offset at `base`.
    fn root(&mut self, base: u64, what: &str) -> Result<Table, InspectError> {
        let pos = self.follow(base, &format!("{what} root offset"))?;
        self.table(pos, what)
    }

    /// Where field `field` of `t` is, `None` where it is absent.
    fn field(&mut self, t: &Table, field: u16, what: &str) -> Result<Option<u64>, InspectError> {
        let slot = 4 + 2 * u64::from(field);
        if slot + 2 > t.vtable_len {
            return Ok(None);
        }
        let off = self.u16_at(t.vtable + slot, what)?;
        Ok((off != 0).then(|| t.pos + u64::from(off)))
    }

    fn u32_field(&mut self, t: &Table, field: u16, what: &str) -> Result<u32, InspectError> {
        match self.field(t, field, what)? {
            Some(p) => self.u32_at(p, what),
            None => Ok(0),
        }
    }

    fn u64_field(&mut self, t: &Table, field: u16, what: &str) -> Result<u64, InspectError> {
        match self.field(t, field, what)? {
            Some(p) => self.u64_at(p, what),
            None => Ok(0),
        }
    }

    /// A vector field of `elem`-byte elements, its length checked against
    /// the bytes after it.
    fn vector(
        &mut self,
        t: &Table,
        field: u16,
        elem: u64,
        what: &str,
    ) -> Result<Option<Vector>, InspectError> {
        let Some(p) = self.field(t, field, what)? else {
            return Ok(None);
        };
        let at = self.follow(p, what)?;
        self.vector_at(at, elem, what).map(Some)
    }

    fn vector_at(&mut self, at: u64, elem: u64, what: &str) -> Result<Vector, InspectError> {
        let len = u64::from(self.u32_at(at, &format!("{what} length"))?);
        let start = at + 4;
        let room = self.len().saturating_sub(start);
        if len.saturating_mul(elem) > room {
            return Err(InspectError::malformed(
                at,
                format!("{what}: {len} elements of {elem} bytes claimed, {room} bytes left"),
            ));
        }
        Ok(Vector { start, len })
    }

    /// The table element `i` of a vector of tables.
    fn table_in(&mut self, v: &Vector, i: u64, what: &str) -> Result<Table, InspectError> {
        let pos = self.follow(v.start + 4 * i, what)?;
        self.table(pos, what)
    }

    /// A string field, cut at `KEEP_TEXT` bytes.
    fn string(
        &mut self,
        t: &Table,
        field: u16,
        what: &str,
    ) -> Result<Option<String>, InspectError> {
        let Some(v) = self.vector(t, field, 1, what)? else {
            return Ok(None);
        };
        self.text(&v, KEEP_TEXT, what).map(Some)
    }

    fn text(&mut self, v: &Vector, keep: u64, what: &str) -> Result<String, InspectError> {
        let mut bytes = vec![0; v.len.min(keep) as usize];
        self.read_at(v.start, &mut bytes, what)?;
        let mut s = String::from_utf8_lossy(&bytes).into_owned();
        if v.len > keep {
            s.push('…');
        }
        Ok(s)
    }

    fn bounded(&self, count: u64, what: &str) -> Result<(), InspectError> {
        self.r.budget().check_items(count, what)
    }

    /// Buffer `index`'s table, checked against the buffer count.
    fn buffer(
        &mut self,
        buffers: Option<&Vector>,
        index: u64,
        of: &Table,
        what: &str,
    ) -> Result<Table, InspectError> {
        let count = buffers.map_or(0, |b| b.len);
        match buffers {
            Some(b) if index < count => self.table_in(b, index, &format!("buffer {index}")),
            _ => Err(InspectError::malformed(
                of.pos,
                format!("{what}: buffer index {index}, but the model has {count} buffers"),
            )),
        }
    }

    /// Tensor `j` of subgraph 0, where its buffer holds data (a weight,
    /// not an activation).
    fn constant_tensor(
        &mut self,
        tensors: &Vector,
        j: u64,
        buffers: Option<&Vector>,
    ) -> Result<Option<Tensor>, InspectError> {
        let what = format!("tensor {j}");
        let t = self.table_in(tensors, j, &what)?;
        let buffer = u64::from(self.u32_field(&t, TENSOR_BUFFER, &what)?);
        if buffer == 0 {
            return Ok(None);
        }
        let b = self.buffer(buffers, buffer, &t, &what)?;
        let bytes = match self.vector(&b, BUFFER_DATA, 1, &format!("buffer {buffer} data"))? {
            Some(v) if v.len > 0 => v.len,
            _ => self.u64_field(&b, BUFFER_SIZE, &format!("buffer {buffer} size"))?,
        };
        if bytes == 0 {
            return Ok(None);
        }
        let mut shape = Vec::new();
        if let Some(v) = self.vector(&t, TENSOR_SHAPE, 4, &format!("{what} shape"))? {
            self.bounded(v.len, "dimensions of one tensor")?;
            for k in 0..v.len {
                let at = v.start + 4 * k;
                let dim = self.u32_at(at, &format!("{what} shape"))? as i32;
                let dim = u64::try_from(dim).map_err(|_| {
                    InspectError::malformed(at, format!("{what}: negative dimension {dim}"))
                })?;
                shape.push(dim);
            }
        }
        let dtype = match self.field(&t, TENSOR_TYPE, &what)? {
            Some(p) => self.u8_at(p, &format!("{what} type"))? as i8,
            None => 0,
        };
        let name = self
            .string(&t, TENSOR_NAME, &format!("{what} name"))?
            .unwrap_or_default();
        Ok(Some(Tensor {
            name,
            shape,
            dtype: dtype_name(dtype),
        }))
    }

    /// `Model.metadata`: each entry's name, with its buffer as text where
    /// short and printable; "TFLITE_METADATA" (TFLite Support's model
    /// card) as its name, description, version, author and license.
    fn metadata(
        &mut self,
        model: &Table,
        buffers: Option<&Vector>,
        report: &mut ModelReport,
    ) -> Result<(), InspectError> {
        let Some(entries) = self.vector(model, MODEL_METADATA, 4, "Model.metadata")? else {
            return Ok(());
        };
        self.bounded(entries.len, "metadata entries")?;
        for i in 0..entries.len {
            let what = format!("metadata {i}");
            let m = self.table_in(&entries, i, &what)?;
            let Some(name) = self.string(&m, METADATA_NAME, &format!("{what} name"))? else {
                continue;
            };
            let index = u64::from(self.u32_field(&m, METADATA_BUFFER, &what)?);
            let b = self.buffer(buffers, index, &m, &what)?;
            let data = self.vector(&b, BUFFER_DATA, 1, &format!("{what} data"))?;
            let Some(data) = data.filter(|d| d.len > 0) else {
                let size = self.u64_field(&b, BUFFER_SIZE, &format!("{what} size"))?;
                report.metadata.insert(name, format!("({size} bytes)"));
                continue;
            };
            if name == "TFLITE_METADATA" && self.model_card(&data, report)? {
                continue;
            }
            let value = if data.len <= SHOW_METADATA {
                let s = self.text(&data, SHOW_METADATA, &what)?;
                let s = s.trim_end_matches('\0');
                if s.chars().all(|c| !c.is_control()) {
                    s.to_string()
                } else {
                    format!("({} bytes)", data.len)
                }
            } else {
                format!("({} bytes)", data.len)
            };
            report.metadata.insert(name, value);
        }
        Ok(())
    }

    /// The "M001" FlatBuffer in `data`, where it is one: its strings into
    /// the metadata. Says whether it was.
    fn model_card(
        &mut self,
        data: &Vector,
        report: &mut ModelReport,
    ) -> Result<bool, InspectError> {
        if data.len < 8 {
            return Ok(false);
        }
        let mut ident = [0u8; 4];
        self.read_at(data.start + 4, &mut ident, "TFLITE_METADATA identifier")?;
        if &ident != b"M001" {
            return Ok(false);
        }
        let card = self.root(data.start, "TFLITE_METADATA")?;
        for &(field, key) in MODEL_METADATA_FIELDS {
            if let Some(s) = self.string(&card, field, &format!("TFLITE_METADATA {key}"))? {
                report.metadata.insert(key.to_string(), s);
            }
        }
        Ok(true)
    }
}

/// `TensorType` by the name numpy and most tools use.
fn dtype_name(t: i8) -> String {
    let name = match t {
        0 => "float32",
        1 => "float16",
        2 => "int32",
        3 => "uint8",
        4 => "int64",
        5 => "string",
        6 => "bool",
        7 => "int16",
        8 => "complex64",
        9 => "int8",
        10 => "float64",
        11 => "complex128",
        12 => "uint64",
        13 => "resource",
        14 => "variant",
        15 => "uint32",
        16 => "uint16",
        17 => "int4",
        18 => "bfloat16",
        19 => "int2",
        20 => "uint4",
        21 => "float8e4m3fn",
        22 => "float8e5m2",
        n => return format!("type{n}"),
    };
    name.to_string()
}

#[cfg(test)]
#[path = "tflite_tests.rs"]
pub(crate) mod tests;
