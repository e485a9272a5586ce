//! Pickles (PyTorch checkpoints, joblib and plain pickle files): an opcode
//! walker that never unpickles. It keeps a symbolic stack and memo, so an
//! import is seen by its real name however the pickle spells it (a
//! `STACK_GLOBAL` from memoised strings, a `builtins.getattr` chain on an
//! `__import__`), records every one with what it is
//! ([`classify_import`]) and whether it is called, and reads the tensor
//! structure of a `torch.save` state dict from the `_rebuild_tensor_v2`
//! calls and the storages' persistent ids.
//!
//! Protocols 0 to 5, every opcode `pickletools` lists. Bulk data (bytes,
//! long strings) is skipped by seek, so the byte budget pays for structure
//! only; every length is checked against what the file holds before
//! anything is allocated; the stack and the memo are bounded by
//! `max_items`, marks and nesting by `max_depth`.

use foldhash::HashMap;
use std::io::{Read, Seek};
use std::rc::Rc;

use crate::budget::{Bounded, Budget};
use crate::error::InspectError;
use crate::import_class::classify_import;
use crate::report::{ImportClass, ModelReport, PickleImport, PickleScan, Tensor};

/// Strings up to this long are read; longer ones, and all bytes, are
/// skipped (a module or attribute name is never this long).
const SHORT: u64 = 4096;

/// Most distinct imports of one file's pickles, and bytes of their names.
const MAX_IMPORTS: u64 = 4096;
const MAX_IMPORT_BYTES: u64 = 1 << 20;

/// Longest tensor name built from nested keys; deeper names are left out.
const MAX_NAME: usize = 4096;

/// The number a legacy (pre-zip) `torch.save` file's first pickle holds.
const TORCH_MAGIC: i128 = 0x1950_a86a_20f9_469c_fc6c;

/// Pickles a legacy `torch.save` file holds after the magic number:
/// protocol version, system info, the object, the storage keys.
const TORCH_LEGACY_PICKLES: usize = 4;

/// A symbolic stack or memo value: scalars inline, anything with
/// structure in the walker's arena.
#[derive(Debug, Clone, Copy, PartialEq)]
enum V {
    None,
    Bool(bool),
    Int(i64),
    Float,
    /// Bytes, long strings, big integers, sets, buffers: nothing to follow.
    Other,
    /// The legacy `torch.save` magic number.
    TorchMagic,
    Node(u32),
}

#[derive(Debug)]
enum Node {
    /// A string: `len` bytes at `start` in the walker's text arena (one
    /// buffer for every string, not an allocation each).
    Str { start: u32, len: u32 },
    /// A tuple: `len` items at `start` in the walker's tuple arena
    /// (tuples never change once made: no allocation each).
    Tuple { start: u32, len: u32 },
    /// A list: its index in the walker's `lists`.
    List(u32),
    /// A dict: its index in the walker's `dicts`.
    Dict(u32),
    /// An imported global: its index in `PickleScan::imports`.
    Global(u32),
    /// A module, from `__import__("os")` or `importlib.import_module`: its
    /// name's index in the walker's `modules`.
    Module(u32),
    /// A `bytes` argument: the index in the walker's `spans` of where its
    /// data lies in the file.
    Bytes(u32),
    /// What calling `func` with `args` made (`REDUCE`, `OBJ`, `INST`,
    /// `NEWOBJ`), with the items set on it and its `BUILD` state: its index
    /// in the walker's object arena.
    Obj(u32),
    /// A persistent id: its index in the walker's `pers_ids`.
    PersId(u32),
}

// Small enough to move in registers: a bigger node was built on the stack
// and copied into the arena, which stalled every push.
const _: () = assert!(std::mem::size_of::<Node>() <= 12);

#[derive(Debug)]
struct Obj {
    func: V,
    args: V,
    items: Vec<(V, V)>,
    elems: Vec<V>,
    state: V,
}

/// What a pickle left at its `STOP`.
struct Root {
    torch_magic: bool,
}

/// A bare pickle file: one pickle, the five of a legacy `torch.save` file
/// (magic number, protocol, system info, the object, storage keys; raw
/// storage data after them), or several in a row.
pub fn read_file<R: Read + Seek>(
    r: &mut Bounded<R>,
    report: &mut ModelReport,
) -> Result<(), InspectError> {
    let mut scan = PickleScan::default();
    let mut tensors = Vec::new();
    let outcome = scan_stream(r, "pickle", &mut scan, Some(&mut tensors));
    settle(outcome, &mut scan, report)?;
    report.format_version = scan.protocol.to_string();
    report.tensors = tensors;
    report.pickle = Some(scan);
    Ok(())
}

/// Scans the pickles `r` holds from its position on, as [`read_file`]
/// describes, adding what they import to `scan` and the tensors of the
/// object (a state dict, a whole model) to `tensors` where given. The
/// first is named `at` in the scan, later ones `at@offset`. The torch zip
/// reader calls this for each `.pkl` entry.
pub(crate) fn scan_stream<R: Read + Seek>(
    r: &mut Bounded<R>,
    at: &str,
    scan: &mut PickleScan,
    mut tensors: Option<&mut Vec<Tensor>>,
) -> Result<(), InspectError> {
    let root = scan_pickle(r, at, scan, tensors.as_deref_mut())?;
    if root.torch_magic {
        // torch.load unpickles exactly these; what follows is raw data.
        for _ in 0..TORCH_LEGACY_PICKLES {
            let at = format!("{at}@{}", r.pos());
            scan_pickle(r, &at, scan, tensors.as_deref_mut())?;
        }
        return Ok(());
    }
    // Pickles written one after another (a loader may call `load` again);
    // stop at the first thing that is not one.
    while (scan.pickles.len() as u64) < r.budget().max_items && looks_like_pickle(r)? {
        let at = format!("{at}@{}", r.pos());
        if scan_pickle(r, &at, scan, tensors.as_deref_mut()).is_err() {
            // Data, not a pickle: what it seemed to import stays recorded.
            break;
        }
    }
    Ok(())
}

/// An error that stopped a scan after a dangerous import was found is not
/// a failure: the file is dangerous either way (and Python would have run
/// the import before reaching the error). Nor is a budget running out:
/// Python has no such limits and goes on to whatever follows (a pickle
/// opening 300 marks, or pushing a million items, before its `os.system`),
/// so the rest of the pickle is unscanned and the file counts as
/// dangerous. Other errors (truncated, malformed: where Python stops too)
/// stand.
pub(crate) fn settle(
    outcome: Result<(), InspectError>,
    scan: &mut PickleScan,
    report: &mut ModelReport,
) -> Result<(), InspectError> {
    match outcome {
        Ok(()) => Ok(()),
        Err(e) if scan.dangerous().next().is_some() => {
            report
                .risk_reasons
                .push(format!("pickle scan stopped early ({e})"));
            Ok(())
        }
        Err(e) if e.is_budget() => {
            scan.unscanned.get_or_insert_with(|| e.to_string());
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// How deep `_load_from_bytes` bytes are followed into more of them.
const MAX_NESTED: u8 = 4;

/// What a nested pickle's place says after its container's.
const NESTED_MARK: &str = " torch.load@";

/// Scans the bytes (`len` at `start` of `r`) a pickle hands
/// `torch.storage._load_from_bytes`, which `torch.load`s them (a legacy
/// `torch.save` stream as a storage pickles itself, or a zip), into
/// `scan`: in place, so their raw data costs nothing. Whatever cannot be
/// scanned leaves the file unscanned (dangerous): these bytes only ever
/// hold what torch itself wrote.
fn scan_nested<R: Read + Seek>(
    r: &mut Bounded<R>,
    start: u64,
    len: u64,
    at: &str,
    scan: &mut PickleScan,
) {
    // Named for where the bytes lie, each level marked: the marks count
    // the nesting.
    let name = format!("{at}{NESTED_MARK}{start}");
    if name.matches(NESTED_MARK).count() > usize::from(MAX_NESTED) {
        scan.unscanned.get_or_insert_with(|| {
            format!("{name}: torch.load bytes nested more than {MAX_NESTED} deep")
        });
        return;
    }
    let budget = Budget {
        max_time: r.time_left(),
        ..r.budget()
    };
    let result = (|| {
        let mut inner =
            Bounded::new(Window::new(&mut *r, start, len)?, budget)?.without_read_ahead();
        let mut magic = [0u8; 4];
        if len >= 4 {
            inner.read_exact_or(&mut magic, "leading bytes")?;
            inner.seek_to(0)?;
        }
        if &magic == b"PK\x03\x04" {
            let mut sub = ModelReport::new(crate::Format::PytorchZip);
            crate::torch_zip::read(&mut inner, &mut sub)?;
            if let Some(found) = sub.pickle {
                for mut i in found.imports {
                    i.at = format!("{name}/{}", i.at);
                    scan.imports.push(i);
                }
                if let Some(why) = found.unscanned {
                    scan.unscanned.get_or_insert(why);
                }
            }
            Ok(())
        } else {
            let outcome = scan_stream(&mut inner, &name, scan, None);
            let mut ignored = ModelReport::new(crate::Format::Pickle);
            settle(outcome, scan, &mut ignored)
        }
    })();
    if let Err(e) = result {
        scan.unscanned
            .get_or_insert_with(|| format!("the bytes torch.load reads at {name}: {e}"));
    }
}

trait ReadSeek: Read + Seek {}

impl<T: Read + Seek> ReadSeek for T {}

/// `len` bytes of `inner` from `start`, as a file of their own (one type
/// however deep the nesting, so the scanners instantiate once).
struct Window<'a> {
    inner: &'a mut dyn ReadSeek,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a> Window<'a> {
    fn new(inner: &'a mut dyn ReadSeek, start: u64, len: u64) -> std::io::Result<Self> {
        inner.seek(std::io::SeekFrom::Start(start))?;
        Ok(Self {
            inner,
            start,
            len,
            pos: 0,
        })
    }
}

impl Read for Window<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let take = buf.len().min(left);
        let n = self.inner.read(&mut buf[..take])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Window<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.len.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        }
        .ok_or_else(|| std::io::Error::other("seek before the start"))?;
        let to = self
            .start
            .checked_add(target)
            .ok_or_else(|| std::io::Error::other("seek overflow"))?;
        self.inner.seek(std::io::SeekFrom::Start(to))?;
        self.pos = target;
        Ok(target)
    }
}

/// Whether `b` is an opcode Python's unpickler knows: a file whose first
/// byte is one may be a pickle, whatever else it looks like.
pub(crate) fn is_opcode(b: u8) -> bool {
    matches!(b, 0x80..=0x98) || b"(.012BCFGIJKLMNPQRSTUVXabcdeghijlopqrstu}])".contains(&b)
}

/// The next bytes are `PROTO 2..=5`; `r` stays where it was.
fn looks_like_pickle<R: Read + Seek>(r: &mut Bounded<R>) -> Result<bool, InspectError> {
    if r.remaining() < 2 {
        return Ok(false);
    }
    let at = r.pos();
    let mut b = [0u8; 2];
    r.read_exact_or(&mut b, "pickle protocol")?;
    r.seek_to(at)?;
    Ok(b[0] == 0x80 && (2..=5).contains(&b[1]))
}

fn scan_pickle<R: Read + Seek>(
    r: &mut Bounded<R>,
    at: &str,
    scan: &mut PickleScan,
    tensors: Option<&mut Vec<Tensor>>,
) -> Result<Root, InspectError> {
    scan.pickles.push(at.to_string());
    let budget = r.budget();
    // The arenas the last walk on this thread left (empty, with their
    // room), so a walk neither grows them from nothing nor faults in
    // fresh pages.
    let arenas = Arenas::take();
    let mut w = Walker {
        at,
        scan,
        max_items: budget.max_items,
        max_depth: budget.max_depth,
        max_values: budget.max_items.saturating_mul(4),
        max_name_bytes: budget.max_bytes,
        stack: arenas.stack,
        marks: Vec::new(),
        memo: Memo {
            dense: arenas.memo,
            ..Memo::default()
        },
        nodes: arenas.nodes,
        text: arenas.text,
        tuple_items: arenas.tuple_items,
        objs: arenas.objs,
        lists: arenas.lists,
        dicts: arenas.dicts,
        modules: Vec::new(),
        spans: Vec::new(),
        pers_ids: arenas.pers_ids,
        scratch: arenas.scratch,
        depths: arenas.depths,
        values: 0,
        seen: HashMap::default(),
        proto: None,
        op_level: 0,
        nested: Vec::new(),
        memo_full: false,
        lossy: false,
        lossy_nodes: 0,
    };
    let result = w.walk(r);
    let protocol = w.proto.unwrap_or(w.op_level);
    w.scan.protocol = w.scan.protocol.max(protocol);
    // What `_load_from_bytes` loads ran even if the walk failed later.
    let nested = std::mem::take(&mut w.nested);
    if !nested.is_empty() {
        let here = r.pos();
        for (start, len) in nested {
            scan_nested(r, start, len, at, w.scan);
        }
        r.seek_to(here)?;
    }
    let root = result?;
    if let Some(out) = tensors {
        w.collect_tensors(root, out)?;
    }
    Ok(Root {
        torch_magic: root == V::TorchMagic,
    })
}

/// The walker's growable buffers, kept per thread between walks (a walk
/// takes them and gives them back, emptied, when it ends). Each is kept
/// only while its room stays under `KEEP_BYTES`, so one huge pickle does
/// not pin its memory.
#[derive(Default)]
struct Arenas {
    stack: Vec<V>,
    nodes: Vec<Node>,
    depths: Vec<u32>,
    tuple_items: Vec<V>,
    objs: Vec<Obj>,
    lists: Vec<Vec<V>>,
    dicts: Vec<Vec<(V, V)>>,
    pers_ids: Vec<V>,
    text: String,
    scratch: Vec<u8>,
    memo: Vec<Option<V>>,
}

const KEEP_BYTES: usize = 8 << 20;

thread_local! {
    static ARENAS: std::cell::RefCell<Arenas> = std::cell::RefCell::default();
}

impl Arenas {
    fn take() -> Self {
        ARENAS.with(|a| std::mem::take(&mut *a.borrow_mut()))
    }

    fn give_back(mut self) {
        fn keep<T>(v: &mut Vec<T>) {
            v.clear();
            if v.capacity() * std::mem::size_of::<T>() > KEEP_BYTES {
                *v = Vec::new();
            }
        }
        keep(&mut self.stack);
        keep(&mut self.nodes);
        keep(&mut self.depths);
        keep(&mut self.tuple_items);
        keep(&mut self.objs);
        keep(&mut self.lists);
        keep(&mut self.dicts);
        keep(&mut self.pers_ids);
        keep(&mut self.scratch);
        keep(&mut self.memo);
        self.text.clear();
        if self.text.capacity() > KEEP_BYTES {
            self.text = String::new();
        }
        // A nested walk's buffers give way to its container's.
        ARENAS.with(|a| *a.borrow_mut() = self);
    }
}

impl Drop for Walker<'_> {
    fn drop(&mut self) {
        Arenas {
            stack: std::mem::take(&mut self.stack),
            nodes: std::mem::take(&mut self.nodes),
            depths: std::mem::take(&mut self.depths),
            tuple_items: std::mem::take(&mut self.tuple_items),
            objs: std::mem::take(&mut self.objs),
            lists: std::mem::take(&mut self.lists),
            dicts: std::mem::take(&mut self.dicts),
            pers_ids: std::mem::take(&mut self.pers_ids),
            text: std::mem::take(&mut self.text),
            scratch: std::mem::take(&mut self.scratch),
            memo: std::mem::take(&mut self.memo.dense),
        }
        .give_back();
    }
}

struct Walker<'a> {
    at: &'a str,
    scan: &'a mut PickleScan,
    max_items: u64,
    max_depth: usize,
    /// Arena nodes plus container slots, in all.
    max_values: u64,
    max_name_bytes: u64,
    stack: Vec<V>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    memo: Memo,
    nodes: Vec<Node>,
    /// The bytes of every `Node::Str`.
    text: String,
    /// The items of every `Node::Tuple`.
    tuple_items: Vec<V>,
    /// Every `Node::Obj`.
    objs: Vec<Obj>,
    /// What `Node::List`, `Node::Dict`, `Node::Module`, `Node::Bytes` and
    /// `Node::PersId` hold.
    lists: Vec<Vec<V>>,
    dicts: Vec<Vec<(V, V)>>,
    modules: Vec<Box<str>>,
    spans: Vec<(u64, u64)>,
    pers_ids: Vec<V>,
    /// Where a short string is read before it joins `text`.
    scratch: Vec<u8>,
    /// Nesting of each node (1 for a leaf), as far as insertion tells.
    depths: Vec<u32>,
    values: u64,
    /// This pickle's imports: (module, name) to index in `scan.imports`.
    seen: HashMap<(String, String), usize>,
    proto: Option<u8>,
    /// The highest protocol an opcode seen needs (for protocols 0 and 1,
    /// which have no `PROTO`).
    op_level: u8,
    /// Where the bytes handed to `torch.storage._load_from_bytes` lie
    /// (start, length): scanned when the walk ends.
    nested: Vec<(u64, u64)>,
    /// The memo reached its budget and stores no more.
    memo_full: bool,
    /// Past the values budget: structure is no longer kept.
    lossy: bool,
    /// Nodes made while lossy.
    lossy_nodes: u64,
}

/// The pickle memo. Keys are almost always dense from 0 (`MEMOIZE`, and
/// `BINPUT` as Python writes it), so those live in a vector; a key far
/// past the dense run goes to a map, so a crafted key cannot make the
/// vector large: it grows by at most `DENSE_GAP` past its end, and to at
/// most twice the entries stored plus `DENSE_SLACK`.
#[derive(Default)]
struct Memo {
    dense: Vec<Option<V>>,
    sparse: HashMap<u64, V>,
    len: usize,
}

const DENSE_GAP: u64 = 64;
const DENSE_SLACK: u64 = 1024;

impl Memo {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: u64) -> Option<&V> {
        // A key stored in the map before the vector grew past it stays
        // there.
        usize::try_from(key)
            .ok()
            .and_then(|k| self.dense.get(k))
            .and_then(Option::as_ref)
            .or_else(|| self.sparse.get(&key))
    }

    fn insert(&mut self, key: u64, v: V) {
        let dense_len = self.dense.len() as u64;
        if key < dense_len {
            let was_sparse = self.sparse.remove(&key).is_some();
            let slot = &mut self.dense[key as usize];
            if slot.is_none() && !was_sparse {
                self.len += 1;
            }
            *slot = Some(v);
        } else if key < dense_len + DENSE_GAP
            && key <= 2 * self.len as u64 + DENSE_SLACK
            && !self.sparse.contains_key(&key)
        {
            self.dense.resize(key as usize, None);
            self.dense.push(Some(v));
            self.len += 1;
        } else if self.sparse.insert(key, v).is_none() {
            self.len += 1;
        }
    }
}

fn malformed(offset: u64, what: impl Into<String>) -> InspectError {
    InspectError::malformed(offset, what)
}

/// Reads a text argument up to its newline: the first `SHORT` bytes, and
/// whether there were more.
fn line<R: Read + Seek>(r: &mut Bounded<R>, what: &str) -> Result<(Vec<u8>, bool), InspectError> {
    let mut out = Vec::new();
    let mut long = false;
    loop {
        let b = r.u8(what)?;
        if b == b'\n' {
            return Ok((out, long));
        }
        if (out.len() as u64) < SHORT {
            out.push(b);
        } else {
            long = true;
        }
    }
}

/// A number's text argument (`INT`, `LONG`, `FLOAT`, `GET`, `PUT`), read
/// up to its newline but given up at the first byte no number Python
/// parses can hold (a digit, sign, `_`, space, `.`, a hex digit or base
/// letter, `L`, or the letters of `inf`, `nan` and `infinity`): Python
/// reads the line and then fails to parse it, so the load stops there
/// and nothing past it runs. Without this, a file that happens to start
/// with `p` (a safetensors header length of 0x..70) is read for a newline
/// to the end of its byte budget.
fn number_line<R: Read + Seek>(
    r: &mut Bounded<R>,
    what: &str,
) -> Result<(Vec<u8>, bool), InspectError> {
    let mut out = Vec::new();
    let mut long = false;
    loop {
        let at = r.pos();
        let b = r.u8(what)?;
        if b == b'\n' {
            return Ok((out, long));
        }
        let may_be_number = b.is_ascii_hexdigit() || b" \t\r\x0b\x0c+-_.xXoOLiInNtTyY".contains(&b);
        if !may_be_number {
            return Err(malformed(
                at,
                format!("{what} holds byte 0x{b:02x}, which no number has"),
            ));
        }
        if (out.len() as u64) < SHORT {
            out.push(b);
        } else {
            long = true;
        }
    }
}

/// A decimal argument (`GET`, `PUT`).
fn decimal<R: Read + Seek>(
    r: &mut Bounded<R>,
    offset: u64,
    what: &str,
) -> Result<u64, InspectError> {
    let (l, long) = number_line(r, what)?;
    match python_index(&l) {
        Some(n) if !long => Ok(n),
        _ => Err(malformed(offset, format!("{what} is not a memo index"))),
    }
}

/// A memo index as Python's unpickler parses `PUT` and `GET` arguments
/// (`int(text, 10)`): ASCII whitespace around, a sign, and single
/// underscores between digits (`1_0` is 10); negative ones only as zero.
/// Anything stricter would let a pickle Python loads stop the walk.
fn python_index(text: &[u8]) -> Option<u64> {
    let space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c);
    let start = text.iter().position(|b| !space(b))?;
    let end = text.iter().rposition(|b| !space(b))? + 1;
    let mut digits = &text[start..end];
    let negative = digits.first() == Some(&b'-');
    if matches!(digits.first(), Some(b'+' | b'-')) {
        digits = &digits[1..];
    }
    if digits.is_empty()
        || !digits.first().is_some_and(u8::is_ascii_digit)
        || !digits.last().is_some_and(u8::is_ascii_digit)
        || digits.windows(2).any(|w| w == b"__")
    {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        match d {
            b'_' => {}
            b'0'..=b'9' => n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?,
            _ => return None,
        }
    }
    (!negative || n == 0).then_some(n)
}

/// The protocol that introduced each opcode (pickletools' `proto`).
fn op_level(op: u8) -> u8 {
    OP_LEVELS[usize::from(op)]
}

/// `op_level`, as a table (it is asked for every opcode).
const OP_LEVELS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut op = 0;
    while op < 256 {
        let b = op as u8;
        t[op] = match b {
            b'B' | b'C' => 3,
            0x8c..=0x95 => 4,
            0x96..=0x98 => 5,
            0x80..=0x8b => 2,
            b'J' | b'K' | b'M' | b'T' | b'U' | b'X' | b'G' | b']' | b'e' | b')' | b'}' | b'u'
            | b'1' | b'h' | b'j' | b'q' | b'r' | b'o' | b'Q' => 1,
            _ => 0,
        };
        op += 1;
    }
    t
};

/// Decodes `escape_decode` (Python's `STRING` argument, without quotes).
fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let e = *s.get(i)?;
        i += 1;
        match e {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(e),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'x' => {
                let h = std::str::from_utf8(s.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut n = u32::from(e - b'0');
                for _ in 0..2 {
                    match s.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            n = n * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((n & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Decodes `raw-unicode-escape` (the `UNICODE` argument).
fn raw_unicode_escape(s: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(&c) = s.get(i) {
        if c == b'\\' {
            let width = match s.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if width > 0 {
                let h = std::str::from_utf8(s.get(i + 2..i + 2 + width)?).ok()?;
                out.push(char::from_u32(u32::from_str_radix(h, 16).ok()?)?);
                i += 2 + width;
                continue;
            }
        }
        out.push(char::from(c));
        i += 1;
    }
    Some(out)
}

/// A little-endian two's complement integer of up to 16 bytes.
fn le_signed(bytes: &[u8]) -> i128 {
    let mut v: i128 = 0;
    for (i, b) in bytes.iter().enumerate() {
        v |= i128::from(*b) << (8 * i);
    }
    let bits = 8 * bytes.len();
    if bits > 0 && bits < 128 && bytes.last().is_some_and(|b| b & 0x80 != 0) {
        v -= 1i128 << bits;
    }
    v
}

/// The safetensors-style name of a storage class's or dtype's elements.
fn dtype_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "DoubleStorage" | "float64" | "double" => "F64",
        "FloatStorage" | "float32" | "float" => "F32",
        "HalfStorage" | "float16" | "half" => "F16",
        "BFloat16Storage" | "bfloat16" => "BF16",
        "LongStorage" | "int64" | "long" => "I64",
        "IntStorage" | "int32" | "int" => "I32",
        "ShortStorage" | "int16" | "short" => "I16",
        "CharStorage" | "int8" => "I8",
        "ByteStorage" | "uint8" => "U8",
        "BoolStorage" | "bool" => "BOOL",
        "ComplexFloatStorage" | "complex64" | "cfloat" => "C64",
        "ComplexDoubleStorage" | "complex128" | "cdouble" => "C128",
        "QInt8Storage" | "qint8" => "QI8",
        "QUInt8Storage" | "quint8" => "QU8",
        "QInt32Storage" | "qint32" => "QI32",
        "QUInt4x2Storage" | "quint4x2" => "QU4X2",
        "QUInt2x4Storage" | "quint2x4" => "QU2X4",
        "uint16" => "U16",
        "uint32" => "U32",
        "uint64" => "U64",
        "float8_e4m3fn" => "F8_E4M3",
        "float8_e5m2" => "F8_E5M2",
        "float8_e4m3fnuz" => "F8_E4M3FNUZ",
        "float8_e5m2fnuz" => "F8_E5M2FNUZ",
        "float8_e8m0fnu" => "F8_E8M0",
        _ => return None,
    })
}

/// Keys of `torch.nn.Module` state that are structure, not names: a whole
/// pickled model names its tensors as its `state_dict` would.
fn transparent_key(key: &str) -> bool {
    matches!(key, "_parameters" | "_buffers" | "_modules")
}

impl Walker<'_> {
    fn walk<R: Read + Seek>(&mut self, r: &mut Bounded<R>) -> Result<V, InspectError> {
        loop {
            let offset = r.pos();
            let op = r.u8("pickle opcode")?;
            self.scan.opcodes = self.scan.opcodes.saturating_add(1);
            self.op_level = self.op_level.max(op_level(op));
            match op {
                // MARK
                b'(' => {
                    if self.marks.len() >= self.max_depth {
                        return Err(InspectError::TooDeep {
                            what: "pickle marks".into(),
                            max: self.max_depth,
                        });
                    }
                    self.marks.push(self.stack.len());
                }
                // STOP
                b'.' => return self.pop(offset),
                // POP: the top item, or the topmost mark when nothing is above it.
                b'0' => {
                    if self.stack.len() > self.base() {
                        self.stack.pop();
                    } else if self.marks.pop().is_none() {
                        return Err(malformed(offset, "POP on an empty stack"));
                    }
                }
                // POP_MARK
                b'1' => {
                    self.pop_mark(offset)?;
                }
                // DUP
                b'2' => {
                    let v = self.top(offset)?;
                    self.push(v)?;
                }
                // INT: also True and False in protocol 0.
                b'I' => {
                    let (l, long) = number_line(r, "INT argument")?;
                    let v = match l.as_slice() {
                        b"00" => V::Bool(false),
                        b"01" => V::Bool(true),
                        _ => Self::int_text(&l, long),
                    };
                    self.push(v)?;
                }
                // BININT
                b'J' => {
                    let v = r.u32_le("BININT argument")? as i32;
                    self.push(V::Int(i64::from(v)))?;
                }
                // BININT1
                b'K' => {
                    let v = r.u8("BININT1 argument")?;
                    self.push(V::Int(i64::from(v)))?;
                }
                // BININT2
                b'M' => {
                    let v = r.u16_le("BININT2 argument")?;
                    self.push(V::Int(i64::from(v)))?;
                }
                // LONG
                b'L' => {
                    let (mut l, long) = number_line(r, "LONG argument")?;
                    if l.last() == Some(&b'L') {
                        l.pop();
                    }
                    let v = Self::int_text(&l, long);
                    self.push(v)?;
                }
                // LONG1
                0x8a => {
                    let n = r.u8("LONG1 length")?;
                    let v = self.long_bytes(r, u64::from(n))?;
                    self.push(v)?;
                }
                // LONG4
                0x8b => {
                    let n = r.u32_le("LONG4 length")? as i32;
                    let n = u64::try_from(n)
                        .map_err(|_| malformed(offset, "LONG4 with a negative length"))?;
                    let v = self.long_bytes(r, n)?;
                    self.push(v)?;
                }
                // STRING: a quoted Python literal.
                b'S' => {
                    let (l, long) = line(r, "STRING argument")?;
                    let quoted = l.len() >= 2
                        && l.first() == l.last()
                        && matches!(l.first(), Some(b'\'' | b'"'));
                    if !quoted && !long {
                        return Err(malformed(offset, "STRING argument is not quoted"));
                    }
                    let v = match l.get(1..l.len().saturating_sub(1)).and_then(unescape) {
                        Some(s) if !long => self.str(String::from_utf8_lossy(&s).into())?,
                        _ => V::Other,
                    };
                    self.push(v)?;
                }
                // BINSTRING
                b'T' => {
                    let n = r.u32_le("BINSTRING length")? as i32;
                    let n = u64::try_from(n)
                        .map_err(|_| malformed(offset, "BINSTRING with a negative length"))?;
                    let v = self.text(r, n, "BINSTRING")?;
                    self.push(v)?;
                }
                // SHORT_BINSTRING
                b'U' => {
                    let n = r.u8("SHORT_BINSTRING length")?;
                    let v = self.text(r, u64::from(n), "SHORT_BINSTRING")?;
                    self.push(v)?;
                }
                // SHORT_BINUNICODE
                0x8c => {
                    let n = r.u8("SHORT_BINUNICODE length")?;
                    let v = self.text(r, u64::from(n), "SHORT_BINUNICODE")?;
                    self.push(v)?;
                }
                // BINUNICODE
                b'X' => {
                    let n = r.u32_le("BINUNICODE length")?;
                    let v = self.text(r, u64::from(n), "BINUNICODE")?;
                    self.push(v)?;
                }
                // BINUNICODE8
                0x8d => {
                    let n = r.u64_le("BINUNICODE8 length")?;
                    let v = self.text(r, n, "BINUNICODE8")?;
                    self.push(v)?;
                }
                // UNICODE: raw-unicode-escape text.
                b'V' => {
                    let (l, long) = line(r, "UNICODE argument")?;
                    let v = match raw_unicode_escape(&l) {
                        Some(s) if !long => self.str(s)?,
                        _ => V::Other,
                    };
                    self.push(v)?;
                }
                // SHORT_BINBYTES, BINBYTES, BINBYTES8, BYTEARRAY8: skipped
                // (where the long ones lie is kept: a nested torch.load
                // reads them).
                b'C' => {
                    let n = r.u8("SHORT_BINBYTES length")?;
                    r.skip(u64::from(n), "SHORT_BINBYTES")?;
                    self.push(V::Other)?;
                }
                b'B' => {
                    let n = r.u32_le("BINBYTES length")?;
                    let v = self.bytes(r, u64::from(n), "BINBYTES")?;
                    self.push(v)?;
                }
                0x8e => {
                    let n = r.u64_le("BINBYTES8 length")?;
                    let v = self.bytes(r, n, "BINBYTES8")?;
                    self.push(v)?;
                }
                0x96 => {
                    let n = r.u64_le("BYTEARRAY8 length")?;
                    r.skip(n, "BYTEARRAY8")?;
                    self.push(V::Other)?;
                }
                // NEXT_BUFFER: an out-of-band buffer.
                0x97 => self.push(V::Other)?,
                // READONLY_BUFFER: makes the top a read-only view.
                0x98 => {
                    self.top(offset)?;
                }
                b'N' => self.push(V::None)?,
                0x88 => self.push(V::Bool(true))?,
                0x89 => self.push(V::Bool(false))?,
                // FLOAT
                b'F' => {
                    number_line(r, "FLOAT argument")?;
                    self.push(V::Float)?;
                }
                // BINFLOAT
                b'G' => {
                    r.skip(8, "BINFLOAT argument")?;
                    self.push(V::Float)?;
                }
                // EMPTY_LIST
                b']' => {
                    let v = self.list(Vec::new())?;
                    self.push(v)?;
                }
                // APPEND
                b'a' => {
                    let v = self.pop(offset)?;
                    let target = self.top(offset)?;
                    self.append(target, vec![v])?;
                }
                // APPENDS
                b'e' => {
                    let items = self.pop_mark(offset)?;
                    let target = self.top(offset)?;
                    self.append(target, items)?;
                }
                // LIST
                b'l' => {
                    let items = self.pop_mark(offset)?;
                    let v = self.list(items)?;
                    self.push(v)?;
                }
                // EMPTY_TUPLE
                b')' => {
                    let v = self.tuple_from_stack(self.stack.len())?;
                    self.push(v)?;
                }
                // TUPLE
                b't' => {
                    let base = self.pop_mark_base(offset)?;
                    let v = self.tuple_from_stack(base)?;
                    self.push(v)?;
                }
                // TUPLE1, TUPLE2, TUPLE3
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if self.stack.len() < self.base() + n {
                        return Err(malformed(
                            offset,
                            "tuple of more items than the stack holds",
                        ));
                    }
                    let v = self.tuple_from_stack(self.stack.len() - n)?;
                    self.push(v)?;
                }
                // EMPTY_DICT
                b'}' => {
                    let v = self.dict()?;
                    self.push(v)?;
                }
                // DICT
                b'd' => {
                    let items = self.pop_mark(offset)?;
                    let pairs = Self::pairs(items, offset)?;
                    let v = self.dict()?;
                    self.set_items(v, pairs)?;
                    self.push(v)?;
                }
                // SETITEM
                b's' => {
                    let value = self.pop(offset)?;
                    let key = self.pop(offset)?;
                    let target = self.top(offset)?;
                    self.set_items(target, vec![(key, value)])?;
                }
                // SETITEMS
                b'u' => {
                    let items = self.pop_mark(offset)?;
                    let pairs = Self::pairs(items, offset)?;
                    let target = self.top(offset)?;
                    self.set_items(target, pairs)?;
                }
                // EMPTY_SET
                0x8f => self.push(V::Other)?,
                // ADDITEMS
                0x90 => {
                    self.pop_mark(offset)?;
                    let target = self.top(offset)?;
                    self.mutated(target, "add")?;
                }
                // FROZENSET
                0x91 => {
                    self.pop_mark(offset)?;
                    self.push(V::Other)?;
                }
                // GET, BINGET, LONG_BINGET
                b'g' => {
                    let key = decimal(r, offset, "GET argument")?;
                    self.get(key, offset)?;
                }
                b'h' => {
                    let key = r.u8("BINGET argument")?;
                    self.get(u64::from(key), offset)?;
                }
                b'j' => {
                    let key = r.u32_le("LONG_BINGET argument")?;
                    self.get(u64::from(key), offset)?;
                }
                // PUT, BINPUT, LONG_BINPUT, MEMOIZE
                b'p' => {
                    let key = decimal(r, offset, "PUT argument")?;
                    self.put(key, offset)?;
                }
                b'q' => {
                    let key = r.u8("BINPUT argument")?;
                    self.put(u64::from(key), offset)?;
                }
                b'r' => {
                    let key = r.u32_le("LONG_BINPUT argument")?;
                    self.put(u64::from(key), offset)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.put(key, offset)?;
                }
                // EXT1, EXT2, EXT4: a global from the extension registry,
                // named by a number the file alone cannot resolve.
                0x82..=0x84 => {
                    let code = match op {
                        0x82 => i64::from(r.u8("EXT1 code")?),
                        0x83 => i64::from(r.u16_le("EXT2 code")?),
                        _ => i64::from(r.u32_le("EXT4 code")? as i32),
                    };
                    let v = self.import("?", &format!("extension code {code}"), false)?;
                    self.push(v)?;
                }
                // GLOBAL
                b'c' => {
                    let (module, name) = Self::global_lines(r)?;
                    let v = self.import(&module, &name, false)?;
                    self.push(v)?;
                }
                // STACK_GLOBAL
                0x93 => {
                    let name = self.pop(offset)?;
                    let module = self.pop(offset)?;
                    let module = self.str_of(module).unwrap_or("?").to_string();
                    let name = self.str_of(name).unwrap_or("?").to_string();
                    let v = self.import(&module, &name, false)?;
                    self.push(v)?;
                }
                // INST: a GLOBAL called with the items since the mark.
                b'i' => {
                    let (module, name) = Self::global_lines(r)?;
                    let func = self.import(&module, &name, true)?;
                    let base = self.pop_mark_base(offset)?;
                    let args = self.tuple_from_stack(base)?;
                    let v = self.obj(func, args)?;
                    self.push(v)?;
                }
                // OBJ: the first item since the mark called with the rest.
                b'o' => {
                    let base = self.pop_mark_base(offset)?;
                    let Some(&func) = self.stack.get(base) else {
                        return Err(malformed(offset, "OBJ without a class"));
                    };
                    let args = self.tuple_from_stack(base + 1)?;
                    self.stack.truncate(base);
                    self.called(func);
                    let v = self.obj(func, args)?;
                    self.push(v)?;
                }
                // NEWOBJ
                0x81 => {
                    let args = self.pop(offset)?;
                    let cls = self.pop(offset)?;
                    self.called(cls);
                    let v = self.obj(cls, args)?;
                    self.push(v)?;
                }
                // NEWOBJ_EX
                0x92 => {
                    let _kwargs = self.pop(offset)?;
                    let args = self.pop(offset)?;
                    let cls = self.pop(offset)?;
                    self.called(cls);
                    let v = self.obj(cls, args)?;
                    self.push(v)?;
                }
                // REDUCE
                b'R' => {
                    let args = self.pop(offset)?;
                    let func = self.pop(offset)?;
                    self.called(func);
                    let v = self.reduce(func, args)?;
                    self.push(v)?;
                }
                // BUILD
                b'b' => {
                    let state = self.pop(offset)?;
                    let target = self.top(offset)?;
                    self.build(target, state)?;
                }
                // PROTO
                0x80 => {
                    let p = r.u8("PROTO argument")?;
                    if p > 5 {
                        return Err(malformed(
                            offset,
                            format!("unsupported pickle protocol {p}"),
                        ));
                    }
                    self.proto = Some(self.proto.map_or(p, |q| q.max(p)));
                }
                // FRAME: a length hint for buffering, nothing to the stack.
                0x95 => {
                    r.u64_le("FRAME length")?;
                }
                // PERSID
                b'P' => {
                    let (l, long) = line(r, "PERSID argument")?;
                    let id = if long {
                        V::Other
                    } else {
                        self.str(String::from_utf8_lossy(&l).into())?
                    };
                    let v = self.pers_id(id)?;
                    self.push(v)?;
                }
                // BINPERSID
                b'Q' => {
                    let id = self.pop(offset)?;
                    let v = self.pers_id(id)?;
                    self.push(v)?;
                }
                _ => {
                    return Err(malformed(
                        offset,
                        format!("unknown pickle opcode 0x{op:02x}"),
                    ))
                }
            }
        }
    }

    fn int_text(l: &[u8], long: bool) -> V {
        if long {
            return V::Other;
        }
        match String::from_utf8_lossy(l).trim().parse::<i64>() {
            Ok(n) => V::Int(n),
            Err(_) => V::Other,
        }
    }

    fn long_bytes<R: Read + Seek>(
        &mut self,
        r: &mut Bounded<R>,
        n: u64,
    ) -> Result<V, InspectError> {
        if n > 16 {
            r.skip(n, "long integer")?;
            return Ok(V::Other);
        }
        let bytes = r.read_vec(n, "long integer")?;
        let v = le_signed(&bytes);
        Ok(if v == TORCH_MAGIC {
            V::TorchMagic
        } else {
            i64::try_from(v).map_or(V::Other, V::Int)
        })
    }

    /// A length-prefixed string: read when short, skipped when long.
    fn text<R: Read + Seek>(
        &mut self,
        r: &mut Bounded<R>,
        n: u64,
        what: &str,
    ) -> Result<V, InspectError> {
        if n > SHORT {
            r.skip(n, what)?;
            return Ok(V::Other);
        }
        if n > r.remaining() {
            return Err(InspectError::Truncated {
                offset: r.pos(),
                what: format!("{what} ({n} bytes claimed, {} left)", r.remaining()),
            });
        }
        // Read into one buffer kept for the walk, not a new one each.
        let mut bytes = std::mem::take(&mut self.scratch);
        bytes.clear();
        bytes.resize(n as usize, 0);
        let v =
            r.read_exact_or(&mut bytes, what)
                .and_then(|()| match std::str::from_utf8(&bytes) {
                    Ok(text) => self.str_ref(text),
                    Err(_) => self.str(String::from_utf8_lossy(&bytes).into_owned()),
                });
        self.scratch = bytes;
        v
    }

    /// A `bytes` value of `n` bytes, skipped, as where it lies.
    fn bytes<R: Read + Seek>(
        &mut self,
        r: &mut Bounded<R>,
        n: u64,
        what: &str,
    ) -> Result<V, InspectError> {
        let start = r.pos();
        r.skip(n, what)?;
        self.side_node(Node::Bytes, |w| &mut w.spans, (start, n), 1, 0)
    }

    /// `GLOBAL` and `INST`'s two lines, module and name ("?" when too long
    /// to be a real one).
    fn global_lines<R: Read + Seek>(r: &mut Bounded<R>) -> Result<(String, String), InspectError> {
        let (m, mlong) = line(r, "global module name")?;
        let (n, nlong) = line(r, "global name")?;
        let text = |b: &[u8], long: bool| {
            if long {
                "?".to_string()
            } else {
                String::from_utf8_lossy(b).into_owned()
            }
        };
        Ok((text(&m, mlong), text(&n, nlong)))
    }

    // --- the stack ---

    /// Where the items of the open mark start.
    #[inline]
    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    #[inline(always)]
    fn push(&mut self, v: V) -> Result<(), InspectError> {
        if self.stack.len() as u64 >= self.max_items {
            return Err(InspectError::TooMany {
                what: "pickle stack items".into(),
                count: self.stack.len() as u64 + 1,
                max: self.max_items,
            });
        }
        self.stack.push(v);
        Ok(())
    }

    #[inline(always)]
    fn pop(&mut self, offset: u64) -> Result<V, InspectError> {
        if self.stack.len() <= self.base() {
            return Err(malformed(offset, "pickle stack underflow"));
        }
        self.stack
            .pop()
            .ok_or_else(|| malformed(offset, "pickle stack underflow"))
    }

    #[inline(always)]
    fn top(&self, offset: u64) -> Result<V, InspectError> {
        if self.stack.len() <= self.base() {
            return Err(malformed(offset, "pickle stack underflow"));
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| malformed(offset, "pickle stack underflow"))
    }

    fn pop_mark(&mut self, offset: u64) -> Result<Vec<V>, InspectError> {
        let base = self.pop_mark_base(offset)?;
        Ok(self.stack.split_off(base))
    }

    /// Closes the open mark: where its items start on the stack.
    fn pop_mark_base(&mut self, offset: u64) -> Result<usize, InspectError> {
        let base = self
            .marks
            .pop()
            .ok_or_else(|| malformed(offset, "no MARK to pop to"))?;
        Ok(base.min(self.stack.len()))
    }

    fn pairs(items: Vec<V>, offset: u64) -> Result<Vec<(V, V)>, InspectError> {
        if !items.len().is_multiple_of(2) {
            return Err(malformed(offset, "odd number of items for a dict"));
        }
        let mut it = items.into_iter();
        let mut out = Vec::with_capacity(it.len() / 2);
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    #[inline(always)]
    fn get(&mut self, key: u64, offset: u64) -> Result<(), InspectError> {
        let v = match self.memo.get(key) {
            Some(v) => *v,
            // Maybe one of the entries past the memo's budget: a value
            // not followed (an import it names becomes "?", dangerous).
            None if self.memo_full => V::Other,
            None => {
                return Err(malformed(
                    offset,
                    format!("memo key {key} was never stored"),
                ))
            }
        };
        self.push(v)
    }

    /// A memo full to its budget (a big vocabulary pickled as a dict)
    /// stores no more: what it would hold is only ever a value, and every
    /// import is recorded where its opcode is, so the walk goes on.
    #[inline(always)]
    fn put(&mut self, key: u64, offset: u64) -> Result<(), InspectError> {
        let v = self.top(offset)?;
        if self.memo.len() as u64 >= self.max_items && self.memo.get(key).is_none() {
            self.memo_full = true;
            return Ok(());
        }
        self.memo.insert(key, v);
        Ok(())
    }

    // --- the arena ---

    /// Counts `n` values against the budget: past it the walk goes on
    /// without structure (`lossy`), as a big plain-data pickle (a list of
    /// millions of tuples) needs no more to be judged.
    #[inline]
    fn charge(&mut self, n: u64) {
        self.values = self.values.saturating_add(n);
        if self.values > self.max_values {
            self.lossy = true;
        }
    }

    #[inline]
    fn check_depth(&self, depth: usize) -> Result<(), InspectError> {
        if depth > self.max_depth {
            return Err(InspectError::TooDeep {
                what: "pickle nesting".into(),
                max: self.max_depth,
            });
        }
        Ok(())
    }

    #[inline(always)]
    fn node(&mut self, node: Node, depth: usize, slots: usize) -> Result<V, InspectError> {
        self.check_depth(depth)?;
        self.charge(1 + slots as u64);
        if self.lossy {
            // Past the values budget only what names an import is kept:
            // globals (capped by the import cap), and up to `max_items`
            // strings, modules and bytes (STACK_GLOBAL's operands, a nested
            // load's bytes). Containers and objects become plain values;
            // an import whose name is lost that way is "?", dangerous.
            match node {
                Node::Global(_) => {}
                Node::Str { .. } | Node::Module(_) | Node::Bytes { .. }
                    if self.lossy_nodes < self.max_items =>
                {
                    self.lossy_nodes += 1;
                }
                _ => return Ok(V::Other),
            }
        }
        let id = u32::try_from(self.nodes.len()).map_err(|_| InspectError::TooMany {
            what: "pickle values".into(),
            count: self.nodes.len() as u64,
            max: u64::from(u32::MAX),
        })?;
        self.nodes.push(node);
        self.depths.push(u32::try_from(depth).unwrap_or(u32::MAX));
        Ok(V::Node(id))
    }

    #[inline]
    fn at(&self, v: V) -> Option<&Node> {
        match v {
            V::Node(id) => self.nodes.get(id as usize),
            _ => None,
        }
    }

    #[inline]
    fn depth(&self, v: V) -> usize {
        match v {
            V::Node(id) => self.depths.get(id as usize).map_or(1, |&d| d as usize),
            _ => 0,
        }
    }

    fn str(&mut self, s: String) -> Result<V, InspectError> {
        self.str_ref(&s)
    }

    #[inline(always)]
    fn str_ref(&mut self, s: &str) -> Result<V, InspectError> {
        // Strings come from the file, so the arena is bounded by the byte
        // budget (and by 4 GiB, where offsets stop fitting).
        let (Ok(start), Ok(len)) = (u32::try_from(self.text.len()), u32::try_from(s.len())) else {
            return Err(InspectError::TooMany {
                what: "pickle string bytes".into(),
                count: self.text.len() as u64 + s.len() as u64,
                max: u64::from(u32::MAX),
            });
        };
        let v = self.node(Node::Str { start, len }, 1, 0)?;
        if matches!(v, V::Node(_)) {
            self.text.push_str(s);
        }
        Ok(v)
    }

    fn str_of(&self, v: V) -> Option<&str> {
        match self.at(v)? {
            Node::Str { start, len } => self
                .text
                .get(*start as usize..(*start as usize + *len as usize)),
            _ => None,
        }
    }

    fn list(&mut self, items: Vec<V>) -> Result<V, InspectError> {
        let depth = 1 + items.iter().map(|v| self.depth(*v)).max().unwrap_or(0);
        let slots = items.len();
        self.side_node(Node::List, |w| &mut w.lists, items, depth, slots)
    }

    fn dict(&mut self) -> Result<V, InspectError> {
        self.side_node(Node::Dict, |w| &mut w.dicts, Vec::new(), 1, 0)
    }

    fn pers_id(&mut self, id: V) -> Result<V, InspectError> {
        let depth = self.depth(id) + 1;
        self.side_node(Node::PersId, |w| &mut w.pers_ids, id, depth, 0)
    }

    /// A node whose payload lives in one of the walker's side arenas
    /// (`arena`), at the index `make` records: stored there only if the
    /// node is kept (not past the values budget).
    #[inline(always)]
    fn side_node<T>(
        &mut self,
        make: fn(u32) -> Node,
        arena: fn(&mut Self) -> &mut Vec<T>,
        payload: T,
        depth: usize,
        slots: usize,
    ) -> Result<V, InspectError> {
        let index = arena(self).len();
        let Ok(index32) = u32::try_from(index) else {
            return Err(InspectError::TooMany {
                what: "pickle values".into(),
                count: index as u64,
                max: u64::from(u32::MAX),
            });
        };
        let v = self.node(make(index32), depth, slots)?;
        if matches!(v, V::Node(_)) {
            arena(self).push(payload);
        }
        Ok(v)
    }

    /// The name of the module `v` is, if it is one.
    fn module_of(&self, v: V) -> Option<&str> {
        match self.at(v)? {
            Node::Module(m) => self.modules.get(*m as usize).map(|m| &**m),
            _ => None,
        }
    }

    /// A tuple of the stack's items from `base` on, which leave the stack.
    #[inline]
    fn tuple_from_stack(&mut self, base: usize) -> Result<V, InspectError> {
        let items = self.stack.get(base..).unwrap_or_default();
        let depth = 1 + items.iter().map(|v| self.depth(*v)).max().unwrap_or(0);
        let len = items.len();
        // Bounded by the values budget, as the nodes are.
        let (Ok(start), Ok(len32)) = (u32::try_from(self.tuple_items.len()), u32::try_from(len))
        else {
            return Err(InspectError::TooMany {
                what: "pickle tuple items".into(),
                count: self.tuple_items.len() as u64 + len as u64,
                max: u64::from(u32::MAX),
            });
        };
        let v = self.node(Node::Tuple { start, len: len32 }, depth, len)?;
        if matches!(v, V::Node(_)) {
            let base = base.min(self.stack.len());
            self.tuple_items.extend_from_slice(&self.stack[base..]);
        }
        self.stack.truncate(base);
        Ok(v)
    }

    fn obj(&mut self, func: V, args: V) -> Result<V, InspectError> {
        let depth = 1 + self.depth(func).max(self.depth(args));
        let Ok(index) = u32::try_from(self.objs.len()) else {
            return Err(InspectError::TooMany {
                what: "pickle objects".into(),
                count: self.objs.len() as u64,
                max: u64::from(u32::MAX),
            });
        };
        let v = self.node(Node::Obj(index), depth, 2)?;
        if matches!(v, V::Node(_)) {
            self.objs.push(Obj {
                func,
                args,
                items: Vec::new(),
                elems: Vec::new(),
                state: V::None,
            });
        }
        Ok(v)
    }

    /// The object `v` is, if it is one.
    fn obj_of(&self, v: V) -> Option<&Obj> {
        match self.at(v)? {
            Node::Obj(i) => self.objs.get(*i as usize),
            _ => None,
        }
    }

    fn obj_mut(&mut self, v: V) -> Option<&mut Obj> {
        let V::Node(id) = v else { return None };
        match self.nodes.get(id as usize)? {
            Node::Obj(i) => self.objs.get_mut(*i as usize),
            _ => None,
        }
    }

    /// Deepens `target` for a child of depth `child` (not when it is
    /// its own child).
    fn deepen(&mut self, target: V, child: V) -> Result<(), InspectError> {
        if target == child {
            return Ok(());
        }
        let d = self.depth(child) + 1;
        self.check_depth(d)?;
        if let V::Node(id) = target {
            if let Some(t) = self.depths.get_mut(id as usize) {
                *t = (*t).max(u32::try_from(d).unwrap_or(u32::MAX));
            }
        }
        Ok(())
    }

    /// Whether a dict value can lead to a tensor (scalars and strings
    /// cannot, and are not kept).
    fn structured(&self, v: V) -> bool {
        matches!(
            self.at(v),
            Some(Node::Tuple { .. } | Node::List(_) | Node::Dict(_) | Node::Obj(_))
        )
    }

    /// Items added to a global or a module itself (`APPEND`, `SETITEM`,
    /// `ADDITEMS` on `copyreg._extension_registry`, a module's
    /// `__dict__`...): no pickler writes that, it rewrites library state,
    /// as `BUILD` on a global does.
    fn mutated(&mut self, target: V, how: &str) -> Result<(), InspectError> {
        let named = match self.at(target) {
            Some(Node::Global(i)) => match self.scan.imports.get(*i as usize) {
                Some(g) => Some((g.module.clone(), format!("{}.{how}", g.name))),
                None => Some(("?".into(), "?".into())),
            },
            Some(Node::Module(_)) => Some((
                self.module_of(target).unwrap_or("?").to_string(),
                how.to_string(),
            )),
            _ => None,
        };
        if let Some((module, name)) = named {
            self.record(&module, &name, Some(ImportClass::Dangerous))?;
        }
        Ok(())
    }

    fn append(&mut self, target: V, items: Vec<V>) -> Result<(), InspectError> {
        self.mutated(target, "append")?;
        self.charge(items.len() as u64);
        if self.lossy {
            return Ok(());
        }
        for v in &items {
            self.deepen(target, *v)?;
        }
        if let Some(o) = self.obj_mut(target) {
            o.elems.extend(items);
        } else if let V::Node(id) = target {
            if let Some(&Node::List(l)) = self.nodes.get(id as usize) {
                if let Some(l) = self.lists.get_mut(l as usize) {
                    l.extend(items);
                }
            }
        }
        Ok(())
    }

    fn set_items(&mut self, target: V, pairs: Vec<(V, V)>) -> Result<(), InspectError> {
        self.mutated(target, "__setitem__")?;
        let kept: Vec<(V, V)> = pairs
            .into_iter()
            .filter(|(_, v)| self.structured(*v))
            .collect();
        self.charge(2 * kept.len() as u64);
        if self.lossy {
            return Ok(());
        }
        for (_, v) in &kept {
            self.deepen(target, *v)?;
        }
        if let Some(o) = self.obj_mut(target) {
            o.items.extend(kept);
        } else if let V::Node(id) = target {
            if let Some(&Node::Dict(d)) = self.nodes.get(id as usize) {
                if let Some(d) = self.dicts.get_mut(d as usize) {
                    d.extend(kept);
                }
            }
        }
        Ok(())
    }

    fn build(&mut self, target: V, state: V) -> Result<(), InspectError> {
        enum Target {
            Obj,
            Named(String, String),
            Other,
        }
        let t = match self.at(target) {
            Some(Node::Obj(_)) => Target::Obj,
            Some(Node::Global(i)) => match self.scan.imports.get(*i as usize) {
                Some(g) => Target::Named(g.module.clone(), format!("{}.__dict__", g.name)),
                None => Target::Named("?".into(), "?".into()),
            },
            Some(Node::Module(_)) => Target::Named(
                self.module_of(target).unwrap_or("?").to_string(),
                "__dict__".into(),
            ),
            _ => Target::Other,
        };
        match t {
            Target::Obj => {
                self.deepen(target, state)?;
                if let Some(o) = self.obj_mut(target) {
                    o.state = state;
                }
            }
            // Setting state on a class, function or module is not how any
            // pickler writes an object: it rewrites what the global is.
            Target::Named(module, name) => {
                self.record(&module, &name, Some(ImportClass::Dangerous))?;
            }
            Target::Other => {}
        }
        Ok(())
    }

    // --- imports ---

    /// Records `module.name` (once per pickle) and returns it as a value.
    fn import(&mut self, module: &str, name: &str, called: bool) -> Result<V, InspectError> {
        let i = self.record(module, name, None)?;
        if called {
            if let Some(imp) = self.scan.imports.get_mut(i) {
                imp.called = true;
            }
        }
        let i = u32::try_from(i).map_err(|_| InspectError::TooMany {
            what: "pickle imports".into(),
            count: i as u64,
            max: u64::from(u32::MAX),
        })?;
        self.node(Node::Global(i), 1, 0)
    }

    fn record(
        &mut self,
        module: &str,
        name: &str,
        class: Option<ImportClass>,
    ) -> Result<usize, InspectError> {
        let key = (module.to_string(), name.to_string());
        if let Some(&i) = self.seen.get(&key) {
            if let (Some(c), Some(imp)) = (class, self.scan.imports.get_mut(i)) {
                imp.class = imp.class.max(c);
            }
            return Ok(i);
        }
        // Distinct imports are few in any real pickle; the cap keeps a
        // small file from making a big report (a thousand memoised 4 KiB
        // strings paired up by STACK_GLOBAL are a million 8 KiB names).
        let max = self.max_items.min(MAX_IMPORTS);
        if self.scan.imports.len() as u64 >= max {
            return Err(InspectError::TooMany {
                what: "pickle imports".into(),
                count: self.scan.imports.len() as u64 + 1,
                max,
            });
        }
        let bytes = self
            .scan
            .imports
            .iter()
            .map(|i| (i.module.len() + i.name.len()) as u64)
            .sum::<u64>()
            + (module.len() + name.len()) as u64;
        if bytes > MAX_IMPORT_BYTES {
            return Err(InspectError::TooMany {
                what: "bytes of pickle import names".into(),
                count: bytes,
                max: MAX_IMPORT_BYTES,
            });
        }
        let base = classify_import(module, name);
        let class = class.map_or(base, |c| c.max(base));
        let i = self.scan.imports.len();
        self.scan.imports.push(PickleImport {
            module: key.0.clone(),
            name: key.1.clone(),
            class,
            at: self.at.to_string(),
            called: false,
        });
        self.seen.insert(key, i);
        Ok(i)
    }

    fn global_of(&self, v: V) -> Option<&PickleImport> {
        match self.at(v)? {
            Node::Global(i) => self.scan.imports.get(*i as usize),
            _ => None,
        }
    }

    fn called(&mut self, func: V) {
        if let Some(Node::Global(i)) = self.at(func) {
            let i = *i as usize;
            if let Some(imp) = self.scan.imports.get_mut(i) {
                imp.called = true;
            }
        }
    }

    /// The items of a tuple or a list.
    fn items_of(&self, v: V) -> Option<&[V]> {
        match self.at(v)? {
            Node::Tuple { start, len } => self
                .tuple_items
                .get(*start as usize..*start as usize + *len as usize),
            Node::List(l) => self.lists.get(*l as usize).map(Vec::as_slice),
            _ => None,
        }
    }

    /// `REDUCE`: follows `getattr`, `__import__`, `import_module` and
    /// `attrgetter` to the global they reach; anything else is an object.
    fn reduce(&mut self, func: V, args: V) -> Result<V, InspectError> {
        let target = self
            .global_of(func)
            .map(|g| (g.module.clone(), g.name.clone()));
        let (first, second) = match self.items_of(args) {
            Some(a) => (a.first().copied(), a.get(1).copied()),
            None => (None, None),
        };
        if let Some((module, name)) = &target {
            let builtins = matches!(module.as_str(), "builtins" | "__builtin__" | "__builtins__");
            if builtins && name == "getattr" {
                if let (Some(obj), Some(attr)) = (first, second.and_then(|a| self.str_of(a))) {
                    let attr = attr.to_string();
                    return self.attribute(obj, &attr);
                }
            }
            if (builtins && name == "__import__")
                || (module == "importlib" && name == "import_module")
            {
                if let Some(m) = first.and_then(|m| self.str_of(m)) {
                    let m: Box<str> = m.into();
                    return self.side_node(Node::Module, |w| &mut w.modules, m, 1, 0);
                }
            }
            // torch.load of bytes the pickle carries (how a storage pickles
            // outside torch.save): scanned when the walk ends; bytes that
            // cannot be found in the file make it dangerous.
            if module == "torch.storage" && name == "_load_from_bytes" {
                let bytes = match first.and_then(|b| self.at(b)) {
                    Some(Node::Bytes(i)) => self.spans.get(*i as usize).copied(),
                    _ => None,
                };
                match bytes {
                    Some(region) => self.nested.push(region),
                    None => {
                        self.record(module, name, Some(ImportClass::Dangerous))?;
                    }
                }
            }
            // copyreg's helpers call the class they are given.
            if matches!(module.as_str(), "copyreg" | "copy_reg")
                && matches!(
                    name.as_str(),
                    "__newobj__" | "__newobj_ex__" | "_reconstructor"
                )
            {
                if let Some(cls) = first {
                    self.called(cls);
                }
            }
        }
        // attrgetter("system")(module): the attribute of the argument.
        if let Some(o) = self.obj_of(func) {
            let getter = self.global_of(o.func).is_some_and(|g| {
                matches!(g.module.as_str(), "operator" | "_operator") && g.name == "attrgetter"
            });
            if getter {
                let attr = self
                    .items_of(o.args)
                    .and_then(|a| match a {
                        [one] => self.str_of(*one),
                        _ => None,
                    })
                    .map(str::to_string);
                if let (Some(attr), Some(obj)) = (attr, first) {
                    return self.attribute(obj, &attr);
                }
            }
        }
        self.obj(func, args)
    }

    /// `obj.attr` as a global: `module.attr` of a module, `module.name.attr`
    /// of a global, `?.attr` of anything else.
    fn attribute(&mut self, obj: V, attr: &str) -> Result<V, InspectError> {
        let (module, name) = match self.at(obj) {
            Some(Node::Module(_)) => (
                self.module_of(obj).unwrap_or("?").to_string(),
                attr.to_string(),
            ),
            Some(Node::Global(i)) => match self.scan.imports.get(*i as usize) {
                Some(g) => (g.module.clone(), format!("{}.{attr}", g.name)),
                None => ("?".into(), attr.to_string()),
            },
            _ => ("?".into(), attr.to_string()),
        };
        if module.len() + name.len() > SHORT as usize {
            return self.import("?", "?", false);
        }
        self.import(&module, &name, false)
    }

    // --- tensors ---

    /// The tensors of the object `root`: a state dict's keys, a whole
    /// model's parameter names (through `_modules` and `_parameters`),
    /// nested dicts' keys joined with ".".
    fn collect_tensors<'s>(&'s self, root: V, out: &mut Vec<Tensor>) -> Result<(), InspectError> {
        /// A child's key: text in the arena, or a number.
        #[derive(Clone, Copy)]
        enum Key<'t> {
            Text(&'t str),
            Number(i64),
        }
        let joined = |parent: &str, key: Key<'_>| -> Option<String> {
            let mut name = String::with_capacity(parent.len() + 24);
            name.push_str(parent);
            if !parent.is_empty() {
                name.push('.');
            }
            match key {
                Key::Text(k) => name.push_str(k),
                Key::Number(n) => {
                    use std::fmt::Write;
                    let _ = write!(name, "{n}");
                }
            }
            (name.len() <= MAX_NAME).then_some(name)
        };
        // (value, parent name, key, depth); names are shared by their
        // children and made only for what is not a tensor.
        let mut todo: Vec<(V, Rc<str>, Option<Key<'s>>, usize)> =
            vec![(root, Rc::from(""), None, 0)];
        let mut visited = vec![false; self.nodes.len()];
        let mut children: Vec<(V, Option<Key<'s>>)> = Vec::new();
        let mut name_bytes = 0u64;
        out.reserve(self.objs.len().min(1 << 16));
        while let Some((v, parent, key, depth)) = todo.pop() {
            if let Some((shape, dtype)) = self.tensor_of(v, 0) {
                let name = match key {
                    None => parent.to_string(),
                    Some(k) => match joined(&parent, k) {
                        Some(name) => name,
                        None => continue,
                    },
                };
                if out.len() as u64 >= self.max_items {
                    return Err(InspectError::TooMany {
                        what: "tensors".into(),
                        count: out.len() as u64 + 1,
                        max: self.max_items,
                    });
                }
                name_bytes = name_bytes.saturating_add(name.len() as u64);
                if name_bytes > self.max_name_bytes {
                    return Err(InspectError::TooMany {
                        what: "tensor name bytes".into(),
                        count: name_bytes,
                        max: self.max_name_bytes,
                    });
                }
                out.push(Tensor {
                    name,
                    shape,
                    dtype: dtype.to_string(),
                });
                continue;
            }
            let V::Node(id) = v else { continue };
            if depth >= self.max_depth || visited.get(id as usize).is_none_or(|&seen| seen) {
                continue;
            }
            visited[id as usize] = true;
            let name: Rc<str> = match key {
                None => parent,
                Some(k) => match joined(&parent, k) {
                    Some(name) => Rc::from(name),
                    None => continue,
                },
            };
            children.clear();
            let keyed = |items: &'s [(V, V)], children: &mut Vec<(V, Option<Key<'s>>)>| {
                for (k, val) in items {
                    let k = match (*k, self.str_of(*k)) {
                        (_, Some(s)) if transparent_key(s) => None,
                        (_, Some(s)) => Some(Key::Text(s)),
                        (V::Int(i), _) => Some(Key::Number(i)),
                        _ => continue,
                    };
                    children.push((*val, k));
                }
            };
            let indexed = |items: &'s [V], children: &mut Vec<(V, Option<Key<'s>>)>| {
                for (i, v) in items.iter().enumerate() {
                    if matches!(v, V::Node(_)) {
                        children.push((*v, Some(Key::Number(i as i64))));
                    }
                }
            };
            match self.nodes.get(id as usize) {
                Some(Node::Dict(d)) => keyed(
                    self.dicts.get(*d as usize).map_or(&[], Vec::as_slice),
                    &mut children,
                ),
                Some(Node::List(_) | Node::Tuple { .. }) => {
                    indexed(self.items_of(v).unwrap_or_default(), &mut children)
                }
                Some(Node::Obj(_)) => {
                    let Some(o) = self.obj_of(v) else { continue };
                    keyed(&o.items, &mut children);
                    indexed(&o.elems, &mut children);
                    // An object's state: its attributes (a dict, or a
                    // (dict, slots) pair) under its own name.
                    match self.at(o.state) {
                        Some(Node::Dict(_)) => children.push((o.state, None)),
                        Some(Node::Tuple { .. }) => children.extend(
                            self.items_of(o.state)
                                .unwrap_or_default()
                                .iter()
                                .filter(|s| matches!(self.at(**s), Some(Node::Dict(_))))
                                .map(|s| (*s, None)),
                        ),
                        _ => {}
                    }
                }
                _ => {}
            }
            for &(child, k) in children.iter().rev() {
                if matches!(child, V::Node(_)) {
                    todo.push((child, name.clone(), k, depth + 1));
                }
            }
        }
        Ok(())
    }

    fn obj_parts(&self, v: V) -> Option<(V, V)> {
        self.obj_of(v).map(|o| (o.func, o.args))
    }

    fn tensor_of(&self, v: V, hops: u8) -> Option<(Vec<u64>, &'static str)> {
        let (func, args) = self.obj_parts(v)?;
        self.tensor_call(func, args, hops)
    }

    /// The shape and dtype of the tensor `func(*args)` rebuilds.
    fn tensor_call(&self, func: V, args: V, hops: u8) -> Option<(Vec<u64>, &'static str)> {
        if hops > 4 {
            return None;
        }
        let g = self.global_of(func)?;
        let a = self.items_of(args)?;
        match (g.module.as_str(), g.name.as_str()) {
            (
                "torch._utils",
                "_rebuild_tensor" | "_rebuild_tensor_v2" | "_rebuild_tensor_v3"
                | "_rebuild_qtensor",
            ) => {
                let shape = self.shape(*a.get(2)?, 0)?;
                let from_arg = if g.name == "_rebuild_tensor_v3" {
                    a.get(6)
                        .and_then(|d| self.global_of(*d))
                        .and_then(|d| dtype_name(&d.name))
                } else {
                    None
                };
                let dtype = from_arg
                    .or_else(|| self.storage_dtype(*a.first()?))
                    .unwrap_or("");
                Some((shape, dtype))
            }
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                self.tensor_of(*a.first()?, hops + 1)
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                self.tensor_call(*a.first()?, *a.get(2)?, hops + 1)
            }
            _ => None,
        }
    }

    /// A tuple of dimensions, or `torch.Size` of one.
    fn shape(&self, v: V, hops: u8) -> Option<Vec<u64>> {
        match self.at(v)? {
            Node::Tuple { .. } | Node::List(_) => self
                .items_of(v)?
                .iter()
                .map(|d| match d {
                    V::Int(n) => u64::try_from(*n).ok(),
                    _ => None,
                })
                .collect(),
            Node::Obj(_) if hops == 0 => {
                let o = self.obj_of(v)?;
                let g = self.global_of(o.func)?;
                if g.module == "torch" && g.name == "Size" {
                    self.shape(*self.items_of(o.args)?.first()?, 1)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// The element type a storage's persistent id names:
    /// `('storage', torch.FloatStorage, key, location, numel)`.
    fn storage_dtype(&self, v: V) -> Option<&'static str> {
        let Node::PersId(id) = self.at(v)? else {
            return None;
        };
        let id = self.pers_ids.get(*id as usize)?;
        let items = self.items_of(*id)?;
        let class = self.global_of(*items.get(1)?)?;
        if !matches!(class.module.as_str(), "torch" | "torch.cuda") {
            return None;
        }
        dtype_name(&class.name)
    }
}

#[cfg(test)]
#[path = "pickle_tests.rs"]
pub(crate) mod tests;
