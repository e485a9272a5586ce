use std::io::Cursor;
use std::time::Duration;

use crate::{inspect, inspect_as, Bounded, Budget, Format, InspectError, ModelReport};

/// A table field for [`Builder::table`].
#[derive(Clone, Copy)]
pub(crate) enum F {
    Absent,
    U8(u8),
    U32(u32),
    U64(u64),
    /// An offset to something written later ([`Builder::point`]).
    Off,
}

/// Writes FlatBuffers front to back: a table or vector is written with
/// placeholder offsets, what they point to after it, and the offsets
/// patched (FlatBuffer offsets point forward).
pub(crate) struct Builder {
    pub(crate) buf: Vec<u8>,
}

impl Builder {
    /// A root offset to patch (at 0) and the file identifier.
    pub(crate) fn new(ident: &[u8; 4]) -> Self {
        let mut buf = vec![0; 4];
        buf.extend_from_slice(ident);
        Self { buf }
    }

    fn align(&mut self, n: usize) {
        while !self.buf.len().is_multiple_of(n) {
            self.buf.push(0);
        }
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Stores at `slot` the offset to `target`.
    pub(crate) fn point(&mut self, slot: usize, target: usize) {
        let off = u32::try_from(target - slot).unwrap();
        self.buf[slot..slot + 4].copy_from_slice(&off.to_le_bytes());
    }

    /// A vtable, then the table: returns the table's position and each
    /// field's (0 where absent).
    pub(crate) fn table(&mut self, fields: &[F]) -> (usize, Vec<usize>) {
        let size = |f: &F| match f {
            F::Absent => 0,
            F::U8(_) => 1,
            F::U32(_) | F::Off => 4,
            F::U64(_) => 8,
        };
        let mut offs = Vec::new();
        let mut at = 4usize;
        for f in fields {
            let n = size(f);
            if n == 0 {
                offs.push(0);
                continue;
            }
            while !at.is_multiple_of(n) {
                at += 1;
            }
            offs.push(at);
            at += n;
        }
        self.align(2);
        let vtable = self.buf.len();
        self.u16(4 + 2 * fields.len() as u16);
        self.u16(at as u16);
        for &o in &offs {
            self.u16(o as u16);
        }
        self.align(8);
        let table = self.buf.len();
        self.u32((table - vtable) as u32);
        self.buf.resize(table + at, 0);
        let mut slots = Vec::new();
        for (f, &o) in fields.iter().zip(&offs) {
            let p = table + o;
            match *f {
                F::Absent => {}
                F::U8(v) => self.buf[p] = v,
                F::U32(v) => self.buf[p..p + 4].copy_from_slice(&v.to_le_bytes()),
                F::U64(v) => self.buf[p..p + 8].copy_from_slice(&v.to_le_bytes()),
                F::Off => {}
            }
            slots.push(if o == 0 { 0 } else { p });
        }
        (table, slots)
    }

    pub(crate) fn string(&mut self, s: &str) -> usize {
        let at = self.bytes(s.as_bytes());
        self.buf.push(0);
        at
    }

    pub(crate) fn bytes(&mut self, v: &[u8]) -> usize {
        self.align(4);
        let at = self.buf.len();
        self.u32(v.len() as u32);
        self.buf.extend_from_slice(v);
        at
    }

    pub(crate) fn ints(&mut self, v: &[i32]) -> usize {
        self.align(4);
        let at = self.buf.len();
        self.u32(v.len() as u32);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
        at
    }

    /// A vector of `n` offsets to patch: its position and the slots.
    pub(crate) fn offsets(&mut self, n: usize) -> (usize, Vec<usize>) {
        self.align(4);
        let at = self.buf.len();
        self.u32(n as u32);
        let slots = (0..n).map(|i| at + 4 + 4 * i).collect();
        self.buf.resize(at + 4 + 4 * n, 0);
        (at, slots)
    }

    /// A table field pointing at a new string.
    fn string_at(&mut self, slot: usize, s: &str) {
        let at = self.string(s);
        self.point(slot, at);
    }
}

/// One tensor: name, shape, type, buffer.
type T<'a> = (&'a str, &'a [i32], u8, u32);

/// Where the sample's parts are, for tests that break them.
pub(crate) struct Marks {
    pub(crate) model: usize,
    pub(crate) subgraphs: usize,
    pub(crate) tensor_slots: Vec<usize>,
    pub(crate) tensor_tables: Vec<usize>,
    pub(crate) shapes: Vec<usize>,
}

/// TFLite Support's model card ("M001"): name, description, version,
/// author, license.
fn model_card() -> Vec<u8> {
    let mut b = Builder::new(b"M001");
    let (card, f) = b.table(&[F::Off, F::Off, F::Off, F::Absent, F::Off, F::Off]);
    b.point(0, card);
    b.string_at(f[0], "MobileNetV1 image classifier");
    b.string_at(f[1], "Identify the most prominent object in the image");
    b.string_at(f[2], "v1");
    b.string_at(f[4], "TensorFlow");
    b.string_at(f[5], "Apache License. Version 2.0");
    b.buf
}

/// A model with two subgraphs: the main one (`tensors`) and one of two
/// activations; two operator codes; eight buffers (0, 1 and 4 empty, 7
/// outside the FlatBuffer); metadata with a runtime version (buffer 5) and
/// a model card (buffer 6).
pub(crate) fn sample_parts(tensors: &[T]) -> (Vec<u8>, Marks) {
    build(tensors, 16 * 27)
}

/// The sample with `weights` bytes in buffer 2.
fn build(tensors: &[T], weights: usize) -> (Vec<u8>, Marks) {
    let mut b = Builder::new(b"TFL3");
    let (model, mf) = b.table(&[F::U32(3), F::Off, F::Off, F::Off, F::Off, F::Absent, F::Off]);
    b.point(0, model);

    let (codes, slots) = b.offsets(2);
    b.point(mf[1], codes);
    for (slot, code) in slots.into_iter().zip([3u8, 19]) {
        let (t, _) = b.table(&[F::U8(code), F::Absent, F::U32(1), F::U32(u32::from(code))]);
        b.point(slot, t);
    }

    let (subgraphs, sg_slots) = b.offsets(2);
    b.point(mf[2], subgraphs);
    let mut marks = Marks {
        model,
        subgraphs,
        tensor_slots: Vec::new(),
        tensor_tables: Vec::new(),
        shapes: Vec::new(),
    };
    let main: Vec<T> = tensors.to_vec();
    let other: Vec<T> = vec![("cond/x", &[1], 0, 0), ("cond/y", &[1], 0, 0)];
    for (i, (slot, ts)) in sg_slots.into_iter().zip([main, other]).enumerate() {
        let (sg, sf) = b.table(&[F::Off, F::Absent, F::Absent, F::Absent, F::Off]);
        b.point(slot, sg);
        let (tv, t_slots) = b.offsets(ts.len());
        b.point(sf[0], tv);
        for (t_slot, (name, shape, ty, buffer)) in t_slots.into_iter().zip(ts) {
            let (t, tf) = b.table(&[F::Off, F::U8(ty), F::U32(buffer), F::Off]);
            b.point(t_slot, t);
            let s = b.ints(shape);
            b.point(tf[0], s);
            b.string_at(tf[3], name);
            if i == 0 {
                marks.tensor_slots.push(t_slot);
                marks.tensor_tables.push(t);
                marks.shapes.push(s);
            }
        }
        b.string_at(sf[4], if i == 0 { "main" } else { "cond" });
    }

    b.string_at(mf[3], "MLIR Converted.");

    let data: [&[u8]; 7] = [
        &[],
        &[],
        &vec![7; weights],
        &[1; 16 * 4],
        &[],
        b"1.14.0\0\0\0\0\0\0\0\0\0\0",
        &model_card(),
    ];
    let (buffers, slots) = b.offsets(data.len() + 1);
    b.point(mf[4], buffers);
    for (i, (slot, d)) in slots.iter().zip(data).enumerate() {
        if i == 0 {
            let (t, _) = b.table(&[]);
            b.point(*slot, t);
        } else {
            let (t, f) = b.table(&[F::Off]);
            b.point(*slot, t);
            let at = b.bytes(d);
            b.point(f[0], at);
        }
    }
    // Buffer 7: data outside the FlatBuffer (models over 2 GB), by offset
    // and size.
    let (t, _) = b.table(&[F::Absent, F::U64(1 << 31), F::U64(32)]);
    b.point(slots[7], t);

    let (meta, slots) = b.offsets(2);
    b.point(mf[6], meta);
    for (slot, (name, buffer)) in slots
        .into_iter()
        .zip([("min_runtime_version", 5), ("TFLITE_METADATA", 6)])
    {
        let (t, f) = b.table(&[F::Off, F::U32(buffer)]);
        b.point(slot, t);
        b.string_at(f[0], name);
    }
    (b.buf, marks)
}

const TENSORS: &[T] = &[
    ("input", &[1, 224, 224, 3], 0, 1),
    ("conv/weights", &[16, 3, 3, 3], 9, 2),
    ("conv/bias", &[16], 2, 3),
    ("output", &[1, 16], 0, 4),
    ("fc/weights", &[4, 4], 1, 7),
];

/// The sample's bytes (a fuzz seed).
pub(crate) fn sample_tflite() -> Vec<u8> {
    sample_parts(TENSORS).0
}

fn read(bytes: &[u8], budget: Budget) -> Result<ModelReport, InspectError> {
    let mut r = Bounded::new(Cursor::new(bytes), budget)?;
    inspect_as(&mut r, Format::Tflite)
}

fn error_of(bytes: &[u8]) -> InspectError {
    match read(bytes, Budget::default()) {
        Ok(r) => panic!("accepted: {r:?}"),
        Err(e) => e,
    }
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn the_model_table_its_subgraphs_constant_tensors_and_model_card_are_read() {
    let bytes = sample_tflite();
    let report = inspect(Cursor::new(bytes), Budget::default(), Some("m.tflite")).unwrap();
    assert_eq!(report.format, Format::Tflite);
    assert_eq!(report.format_version, "3");
    let d = report.tflite.as_ref().unwrap();
    assert_eq!(d.schema_version, 3);
    assert_eq!(d.subgraphs, 2);
    assert_eq!(d.tensors, 7);
    assert_eq!(d.operator_codes, 2);
    assert_eq!(d.buffers, 8);
    assert_eq!(d.description, "MLIR Converted.");
    // Only the tensors whose buffers hold data: the weights, not the
    // activations.
    let tensors: Vec<_> = report
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice(), t.dtype.as_str()))
        .collect();
    assert_eq!(
        tensors,
        [
            ("conv/weights", &[16u64, 3, 3, 3][..], "int8"),
            ("conv/bias", &[16][..], "int32"),
            ("fc/weights", &[4, 4][..], "float16"),
        ]
    );
    assert_eq!(report.tensor_count, 3);
    assert_eq!(report.parameters, 432 + 16 + 16);
    assert_eq!(report.quantization, "int8");
    assert_eq!(report.structure_fingerprint.len(), 64);
    assert_eq!(report.name, "MobileNetV1 image classifier");
    assert_eq!(report.metadata["min_runtime_version"], "1.14.0");
    assert_eq!(report.metadata["author"], "TensorFlow");
    assert_eq!(report.metadata["version"], "v1");
    assert_eq!(report.metadata["license"], "Apache License. Version 2.0");
    assert!(report.metadata["description"].starts_with("Identify"));
    assert!(!report.metadata.contains_key("TFLITE_METADATA"));
}

#[test]
fn eight_megabytes_of_weights_are_not_read_under_a_64_kilobyte_budget() {
    let (bytes, _) = build(TENSORS, 8 << 20);
    let budget = Budget {
        max_bytes: 64 << 10,
        ..Budget::default()
    };
    let report = read(&bytes, budget).unwrap();
    assert_eq!(report.tensors[0].shape, [16, 3, 3, 3]);
    assert!(report.bytes_read < 2048, "{}", report.bytes_read);
}

#[test]
fn the_fingerprint_follows_the_weights_not_their_types() {
    let base = read(&sample_tflite(), Budget::default()).unwrap();
    let mut retyped = TENSORS.to_vec();
    retyped[1].2 = 0;
    let retyped = read(&sample_parts(&retyped).0, Budget::default()).unwrap();
    assert_eq!(base.structure_fingerprint, retyped.structure_fingerprint);
    assert_eq!(retyped.tensors[0].dtype, "float32");
    let mut reshaped = TENSORS.to_vec();
    reshaped[2].1 = &[32];
    let reshaped = read(&sample_parts(&reshaped).0, Budget::default()).unwrap();
    assert_ne!(base.structure_fingerprint, reshaped.structure_fingerprint);
}

#[test]
fn every_truncation_is_an_error_or_the_same_report() {
    let bytes = sample_tflite();
    let full = read(&bytes, Budget::default()).unwrap();
    let mut refused = 0;
    for n in 0..bytes.len() {
        let result = std::panic::catch_unwind(|| read(&bytes[..n], Budget::default()))
            .unwrap_or_else(|_| panic!("panicked on the first {n} bytes"));
        match result {
            Err(e) => {
                assert!(!e.to_string().is_empty());
                refused += 1;
            }
            // Only the final string's terminator and padding are unread.
            Ok(mut r) => {
                assert!(n + 8 > bytes.len(), "first {n} bytes accepted");
                r.bytes_read = full.bytes_read;
                assert_eq!(r, full);
            }
        }
    }
    assert!(refused + 8 >= bytes.len());
}

#[test]
fn offsets_past_the_end_and_vtables_outside_the_file_are_refused() {
    let (bytes, marks) = sample_parts(TENSORS);
    // Root offset past the end.
    let mut b = bytes.clone();
    put_u32(&mut b, 0, 0xffff_fff0);
    let e = error_of(&b);
    assert!(
        matches!(&e, InspectError::Malformed { offset: 0, what } if what.contains("root offset") && what.contains("past the end")),
        "{e}"
    );
    // The model's vtable before the start of the file, and past its end.
    for (back, before) in [(i32::MAX, true), (-0x7fff_0000, false)] {
        let mut b = bytes.clone();
        put_u32(&mut b, marks.model, back as u32);
        let e = error_of(&b);
        if before {
            assert!(
                matches!(&e, InspectError::Malformed { what, .. } if what.contains("before the file")),
                "{e}"
            );
        } else {
            assert!(
                matches!(&e, InspectError::Truncated { what, .. } if what.contains("Model vtable")),
                "{e}"
            );
        }
    }
    // A vector claiming 2^32 - 1 subgraphs.
    let mut b = bytes.clone();
    put_u32(&mut b, marks.subgraphs, u32::MAX);
    let e = error_of(&b);
    assert!(
        matches!(&e, InspectError::Malformed { what, .. } if what.contains("Model.subgraphs") && what.contains("4294967295 elements")),
        "{e}"
    );
    // A tensor's offset of 0 (the table is its own slot, its vtable the
    // table itself: a loop, if it were followed).
    let mut b = bytes.clone();
    put_u32(&mut b, marks.tensor_slots[1], 0);
    let e = error_of(&b);
    assert!(matches!(e, InspectError::Malformed { .. }), "{e}");
    // A vtable that is the table itself, 4 bytes back.
    let mut b = bytes.clone();
    put_u32(&mut b, marks.tensor_tables[1], 0);
    assert!(read(&b, Budget::default()).is_err());
    // A shape vector running past the end.
    let mut b = bytes.clone();
    put_u32(&mut b, marks.shapes[1], 0x4000_0000);
    let e = error_of(&b);
    assert!(
        matches!(&e, InspectError::Malformed { what, .. } if what.contains("tensor 1 shape")),
        "{e}"
    );
    // Not "TFL3".
    let mut b = bytes;
    b[4..8].copy_from_slice(b"TFL2");
    let e = error_of(&b);
    assert!(
        matches!(e, InspectError::Malformed { offset: 4, .. }),
        "{e}"
    );
}

#[test]
fn bad_tensors_are_named() {
    let mut t = TENSORS.to_vec();
    t[1].3 = 99;
    let e = error_of(&sample_parts(&t).0);
    assert!(
        matches!(&e, InspectError::Malformed { what, .. } if what.contains("tensor 1: buffer index 99, but the model has 8 buffers")),
        "{e}"
    );
    let mut t = TENSORS.to_vec();
    t[2].1 = &[4, -1];
    let e = error_of(&sample_parts(&t).0);
    assert!(
        matches!(&e, InspectError::Malformed { what, .. } if what.contains("tensor 2: negative dimension -1")),
        "{e}"
    );
    let mut t = TENSORS.to_vec();
    t[2].2 = 77;
    let report = read(&sample_parts(&t).0, Budget::default()).unwrap();
    assert_eq!(report.tensors[1].dtype, "type77");
}

#[test]
fn tables_past_the_item_budget_are_refused() {
    let budget = Budget {
        max_items: 3,
        ..Budget::default()
    };
    match read(&sample_tflite(), budget) {
        Err(InspectError::TooMany {
            what,
            count: 5,
            max: 3,
        }) => {
            assert_eq!(what, "tensors in subgraph 0");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let bytes = sample_tflite();
    let budget = Budget {
        max_bytes: 1 << 20,
        max_time: Duration::from_secs(1),
        max_items: 1 << 12,
        max_depth: 32,
    };
    for i in 0..bytes.len() {
        for v in [0x00, 0x01, 0x7f, 0x80, 0xff, 0xfc] {
            let mut b = bytes.clone();
            b[i] = v;
            let r = std::panic::catch_unwind(|| read(&b, budget).map(|_| ()));
            assert!(r.is_ok(), "panicked with byte {i} set to {v:#x}");
        }
    }
}

/// The Python that writes a model with the `flatbuffers` package and the
/// `tflite` package's generated schema code (as TensorFlow's converter
/// lays one out: back to front, default values left out), and reads the
/// hand-built sample back with them, as JSON.
const WRITE_WITH_FLATBUFFERS: &str = r#"
import json, sys
import tflite
from tflite_builder import ModelBuilder

m = ModelBuilder()
b = m.b

def opcode(code):
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, code)
    tflite.OperatorCodeAddBuiltinCode(b, code)
    tflite.OperatorCodeAddVersion(b, 1)
    return tflite.OperatorCodeEnd(b)

buffers = [m.buffer(None), m.buffer(None), m.buffer(bytes(10 * 8)), m.buffer(bytes(40)), m.buffer(b"2.3.0\0\0\0")]
buffers = m.offsets(tflite.ModelStartBuffersVector, buffers)
tensors = [
    m.tensor("serving_default_x:0", [1, 8], 0, 1),
    m.tensor("dense/MatMul", [10, 8], 0, 2),
    m.tensor("dense/BiasAdd", [10], 2, 3),
    m.tensor("Identity", [1, 10], 0, 0),
]
subgraphs = m.offsets(tflite.ModelStartSubgraphsVector, [m.subgraph(tensors)])
codes = m.offsets(tflite.ModelStartOperatorCodesVector, [opcode(9), opcode(25), opcode(22)])
mname = b.CreateString("min_runtime_version")
tflite.MetadataStart(b)
tflite.MetadataAddName(b, mname)
tflite.MetadataAddBuffer(b, 4)
meta = m.offsets(tflite.ModelStartMetadataVector, [tflite.MetadataEnd(b)])
desc = b.CreateString("MLIR Converted.")
tflite.ModelStart(b)
tflite.ModelAddVersion(b, 3)
tflite.ModelAddOperatorCodes(b, codes)
tflite.ModelAddSubgraphs(b, subgraphs)
tflite.ModelAddDescription(b, desc)
tflite.ModelAddBuffers(b, buffers)
tflite.ModelAddMetadata(b, meta)
b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
with open(sys.argv[1], "wb") as f:
    f.write(b.Output())

m = tflite.Model.GetRootAs(open(sys.argv[2], "rb").read(), 0)
sg = m.Subgraphs(0)
print(json.dumps({
    "version": m.Version(),
    "subgraphs": m.SubgraphsLength(),
    "operator_codes": m.OperatorCodesLength(),
    "buffers": m.BuffersLength(),
    "description": m.Description().decode(),
    "tensors": [
        [sg.Tensors(i).Name().decode(), sg.Tensors(i).ShapeAsNumpy().tolist(),
         sg.Tensors(i).Type(), sg.Tensors(i).Buffer()]
        for i in range(sg.TensorsLength())
    ],
    "metadata": [m.Metadata(i).Name().decode() for i in range(m.MetadataLength())],
}))
"#;

/// Skips with the reason printed, or fails where CI forbids skipping
/// (`VIGIL_REQUIRE_PRIVILEGED=1`, which also means `make` installed the deps).
fn skip_or_fail(reason: &str) {
    if std::env::var("VIGIL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{reason}, and CI forbids skipping");
    }
    eprintln!("SKIP {reason}");
}

/// A model written by the `flatbuffers` and `tflite` Python packages
/// (installed by `make` into .vigil/deps/scanners; `$VIGIL_TEST_PYTHON`,
/// else `python3`), and the hand-built sample read back by them. Skipped,
/// saying why, where they are not, except in CI.
#[test]
fn models_written_by_the_flatbuffers_package() {
    let python = std::env::var("VIGIL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let dir = std::env::temp_dir().join(format!("vigil-tflite-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (theirs, ours) = (dir.join("theirs.tflite"), dir.join("ours.tflite"));
    std::fs::write(&ours, sample_tflite()).unwrap();
    // install-deps puts flatbuffers and tflite beside the pickle scanners.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let deps = root.join(".vigil/deps/scanners");
    let fixtures = root.join("integration/fixtures");
    let out = std::process::Command::new(&python)
        .env(
            "PYTHONPATH",
            format!("{}:{}", deps.display(), fixtures.display()),
        )
        .arg("-c")
        .arg(WRITE_WITH_FLATBUFFERS)
        .arg(&theirs)
        .arg(&ours)
        .output();
    let stdout = match out {
        Ok(o) if o.status.success() => o.stdout,
        Ok(o) => {
            let reason = format!(
                "{python} could not run the flatbuffers and tflite packages (make installs them into {}): {}",
                deps.display(),
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
            let _ = std::fs::remove_dir_all(&dir);
            skip_or_fail(&reason);
            return;
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            skip_or_fail(&format!("no {python} to run the flatbuffers package ({e})"));
            return;
        }
    };
    // Our builder's sample, as the generated Python reads it.
    let back: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(
        back,
        serde_json::json!({
            "version": 3,
            "subgraphs": 2,
            "operator_codes": 2,
            "buffers": 8,
            "description": "MLIR Converted.",
            "tensors": [
                ["input", [1, 224, 224, 3], 0, 1],
                ["conv/weights", [16, 3, 3, 3], 9, 2],
                ["conv/bias", [16], 2, 3],
                ["output", [1, 16], 0, 4],
                ["fc/weights", [4, 4], 1, 7],
            ],
            "metadata": ["min_runtime_version", "TFLITE_METADATA"],
        })
    );
    // Their model, as we read it.
    let file = std::fs::File::open(&theirs).unwrap();
    let report = inspect(file, Budget::default(), Some("theirs.tflite")).unwrap();
    let d = report.tflite.as_ref().unwrap();
    assert_eq!(report.format_version, "3");
    assert_eq!(
        (d.subgraphs, d.tensors, d.operator_codes, d.buffers),
        (1, 4, 3, 5)
    );
    assert_eq!(d.description, "MLIR Converted.");
    let tensors: Vec<_> = report
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice(), t.dtype.as_str()))
        .collect();
    assert_eq!(
        tensors,
        [
            ("dense/MatMul", &[10u64, 8][..], "float32"),
            ("dense/BiasAdd", &[10][..], "int32")
        ]
    );
    assert_eq!(report.parameters, 90);
    assert_eq!(report.metadata["min_runtime_version"], "2.3.0");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fuzz_tflite() {
    let mut other = TENSORS.to_vec();
    other[1].1 = &[2, 2];
    other.truncate(3);
    let seeds = vec![sample_tflite(), sample_parts(&other).0];
    crate::fuzz_tests::fuzz("tflite", "m.tflite", &seeds);
}
