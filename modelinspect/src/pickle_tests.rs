//! Pickle walker tests. Fixtures come from Python's own pickler (python3's
//! standard library only: no torch) run at test time, with a fake `torch`
//! whose functions and storage classes pickle under their real names, so
//! the bytes are what `torch.save` writes; the rest are opcodes by hand.

use std::io::Cursor;
use std::process::Command;
use std::time::Duration;

use super::{read_file, Memo, DENSE_GAP, DENSE_SLACK, V};
use crate::{inspect, Bounded, Budget, Format, ImportClass, InspectError, ModelReport, Risk};

/// Python that fakes as much of torch as `torch.save` needs: the rebuild
/// functions and storage classes (named `torch._utils._rebuild_tensor_v2`,
/// `torch.FloatStorage`...), tensors that reduce the way torch's do, a
/// pickler writing storages as persistent ids, and writers of the legacy
/// and zip file formats. Ends with `out`, bytes to stdout.
pub(crate) const FAKE_TORCH: &str = r#"
import sys, types, pickle, collections, io, struct, zipfile, zlib
torch = types.ModuleType('torch'); _utils = types.ModuleType('torch._utils')
torch._utils = _utils
sys.modules['torch'] = torch; sys.modules['torch._utils'] = _utils
def _fn(mod, name):
    def f(*a):
        raise RuntimeError('never called')
    f.__module__ = mod.__name__; f.__qualname__ = f.__name__ = name
    setattr(mod, name, f)
    return f
rebuild_v2 = _fn(_utils, '_rebuild_tensor_v2')
rebuild_param = _fn(_utils, '_rebuild_parameter')
def _cls(name):
    c = type(name, (), {}); c.__module__ = 'torch'; setattr(torch, name, c)
    return c
FloatStorage = _cls('FloatStorage'); HalfStorage = _cls('HalfStorage'); LongStorage = _cls('LongStorage')
class Storage:
    def __init__(self, cls, key, numel):
        self.cls, self.key, self.numel = cls, key, numel
class Tensor:
    def __init__(self, cls, key, shape, param=False):
        n = 1
        for d in shape: n *= d
        self.storage = Storage(cls, key, n); self.shape = tuple(shape); self.param = param
    def __reduce_ex__(self, proto):
        stride, acc = [], 1
        for d in reversed(self.shape):
            stride.insert(0, acc); acc *= d
        if self.param:
            inner = Tensor(self.storage.cls, self.storage.key, self.shape)
            inner.storage = self.storage
            return (rebuild_param, (inner, True, collections.OrderedDict()))
        return (rebuild_v2, (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()))
class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ('storage', obj.cls, obj.key, 'cpu', obj.numel)
        return None
def state_dict():
    sd = collections.OrderedDict()
    sd['fc1.weight'] = Tensor(FloatStorage, '0', (8, 4), param=True)
    sd['fc1.bias'] = Tensor(FloatStorage, '1', (8,))
    sd['emb.weight'] = Tensor(HalfStorage, '2', (12, 4))
    sd['step'] = Tensor(LongStorage, '3', ())
    sd._metadata = collections.OrderedDict([('', {'version': 1}), ('fc1', {'version': 1})])
    return sd
def dump(obj, proto=2):
    b = io.BytesIO(); P(b, protocol=proto).dump(obj)
    return b.getvalue()
def legacy(obj, numels=(32, 8, 48, 1)):
    o = io.BytesIO()
    for x in (0x1950a86a20f9469cfc6c, 1001,
              {'protocol_version': 1001, 'little_endian': True,
               'type_sizes': {'short': 2, 'int': 4, 'long': 4}}):
        pickle.dump(x, o, protocol=2)
    o.write(dump(obj))
    keys = [str(i) for i in range(len(numels))]
    pickle.dump(keys, o, protocol=2)
    for n in numels:
        o.write(struct.pack('<q', n)); o.write(b'\x80\x02' + b'\x00' * (4 * n))
    return o.getvalue()
def torch_zip(entries, method=zipfile.ZIP_STORED):
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w', method) as z:
        for name, data in entries:
            z.writestr(name, data)
    return b.getvalue()
def benign_entries():
    return [('archive/data.pkl', dump(state_dict())), ('archive/byteorder', b'little'),
            ('archive/data/0', b'\0' * 128), ('archive/data/1', b'\0' * 32),
            ('archive/data/2', b'\0' * 96), ('archive/data/3', b'\0' * 8),
            ('archive/version', b'3\n')]
class Reduce:
    def __init__(self, f, *args):
        self.f, self.args = f, args
    def __reduce__(self):
        return (self.f, self.args)
out = sys.stdout.buffer.write
"#;

/// Runs `FAKE_TORCH` then `script`; its stdout.
pub(crate) fn py(script: &str) -> Vec<u8> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("{FAKE_TORCH}\n{script}"))
        .output()
        .expect("python3 runs (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub(crate) fn scan_with(bytes: &[u8], budget: Budget) -> Result<ModelReport, InspectError> {
    let mut r = Bounded::new(Cursor::new(bytes.to_vec()), budget)?;
    let mut report = ModelReport::new(Format::Pickle);
    read_file(&mut r, &mut report)?;
    Ok(report)
}

pub(crate) fn scan(bytes: &[u8]) -> Result<ModelReport, InspectError> {
    scan_with(bytes, Budget::default())
}

/// "module.name" of every import of a class.
pub(crate) fn imports_of(report: &ModelReport, class: ImportClass) -> Vec<String> {
    report
        .pickle
        .iter()
        .flat_map(|s| s.imports.iter())
        .filter(|i| i.class == class)
        .map(|i| format!("{}.{}", i.module, i.name))
        .collect()
}

pub(crate) fn called(report: &ModelReport, module: &str, name: &str) -> bool {
    report
        .pickle
        .iter()
        .flat_map(|s| s.imports.iter())
        .any(|i| i.module == module && i.name == name && i.called)
}

/// What `inspect` makes of `bytes` named `name`.
pub(crate) fn inspected(bytes: &[u8], name: &str) -> ModelReport {
    inspect(Cursor::new(bytes.to_vec()), Budget::default(), Some(name)).expect("inspects")
}

pub(crate) fn assert_state_dict_tensors(report: &ModelReport) {
    let mut t: Vec<(String, Vec<u64>, String)> = report
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.dtype.clone()))
        .collect();
    t.sort();
    assert_eq!(
        t,
        vec![
            ("emb.weight".into(), vec![12, 4], "F16".into()),
            ("fc1.bias".into(), vec![8], "F32".into()),
            ("fc1.weight".into(), vec![8, 4], "F32".into()),
            ("step".into(), vec![], "I64".into()),
        ]
    );
}

/// Hand-written opcodes.
fn short_unicode(s: &str) -> Vec<u8> {
    let mut v = vec![0x8c, s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn assert_dangerous(report: &ModelReport, module: &str, name: &str) {
    assert!(
        imports_of(report, ImportClass::Dangerous).contains(&format!("{module}.{name}")),
        "{module}.{name} not found dangerous in {:?}",
        report.pickle
    );
}

// --- benign ---

#[test]
fn torch_state_dict_protocol_2_is_safe_with_its_tensors() {
    let report = inspected(&py("out(dump(state_dict()))"), "model.bin");
    assert_eq!(report.format, Format::Pickle);
    assert_eq!(report.format_version, "2");
    assert_eq!(report.risk, Risk::Safe, "{:?}", report.risk_reasons);
    assert!(report.risk_reasons.is_empty());
    assert_state_dict_tensors(&report);
    assert_eq!(report.tensor_count, 4);
    assert_eq!(report.parameters, 32 + 8 + 48 + 1);
    assert!(!report.structure_fingerprint.is_empty());
    assert_eq!(report.quantization, "F16");
    let safe = imports_of(&report, ImportClass::Safe);
    for g in [
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch.FloatStorage",
        "torch.HalfStorage",
        "torch.LongStorage",
    ] {
        assert!(safe.contains(&g.to_string()), "{g} in {safe:?}");
    }
    assert!(called(&report, "torch._utils", "_rebuild_tensor_v2"));
    assert!(!called(&report, "torch", "FloatStorage"));
    let scan = report.pickle.as_ref().unwrap();
    assert_eq!(scan.pickles, vec!["pickle".to_string()]);
    assert!(scan.opcodes > 50);
}

#[test]
fn torch_state_dict_protocols_1_to_5_read_alike() {
    // (Protocol 0 writes a persistent id as the text of the tuple; torch
    // never uses it.)
    let mut fingerprints = Vec::new();
    for proto in 1..=5 {
        let report = scan(&py(&format!("out(dump(state_dict(), {proto}))"))).unwrap();
        assert_eq!(report.format_version, proto.to_string(), "protocol {proto}");
        assert_eq!(
            imports_of(&report, ImportClass::Dangerous),
            Vec::<String>::new()
        );
        assert_eq!(
            imports_of(&report, ImportClass::Unknown),
            Vec::<String>::new()
        );
        assert_state_dict_tensors(&report);
        fingerprints.push(crate::structure_fingerprint("", &report.tensors));
    }
    fingerprints.dedup();
    assert_eq!(fingerprints.len(), 1);
}

#[test]
fn legacy_torch_save_reads_its_five_pickles_and_stops_at_raw_data() {
    // Storage sizes whose u64 starts 0x80 0x02: raw data that looks like a
    // pickle, right after the last one.
    let bytes = py("out(legacy(state_dict(), numels=(0x280, 8, 48, 1)))");
    let report = inspected(&bytes, "old.pt");
    assert_eq!(report.risk, Risk::Safe, "{:?}", report.risk_reasons);
    let scan = report.pickle.as_ref().unwrap();
    assert_eq!(scan.pickles.len(), 5, "{:?}", scan.pickles);
    assert_eq!(scan.pickles[0], "pickle");
    assert!(scan.pickles[1].starts_with("pickle@"));
    assert_eq!(report.tensors.len(), 4);
    // The raw data is not read.
    assert!(report.bytes_read < bytes.len() as u64);
}

#[test]
fn builtin_values_of_every_protocol_walk_cleanly() {
    let script = r#"
import datetime, decimal
big = 'x' * 10000
obj = {
    'ints': [0, 1, -1, 255, 65535, 2**31 - 1, -2**31, 2**63, -2**100, 10**40],
    'floats': [0.5, -1e300, float('inf')],
    'text': ['', 'abc', 'ünïcödé', big, '\n\\\'"'],
    'bytes': [b'', b'abc', b'\x00\xff' * 5000, bytearray(b'xyz')],
    'tuples': [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((1,), ((2,),))],
    'sets': [set(), {1, 2}, frozenset({3})],
    'none': [None, True, False],
    'nested': {'a': {'b': {'c': [1, {'d': (2,)}]}}},
    'complex': 1 + 2j,
    'slice': slice(1, 2),
}
rec = [1]; rec.append(rec); obj['rec'] = rec
shared = ['s']; obj['shared'] = [shared, shared]
for proto in range(6):
    data = pickle.dumps(obj, protocol=proto)
    assert pickle.loads(data)['text'][3] == big
    out(struct.pack('<I', len(data))); out(data)
"#;
    let all = py(script);
    let mut rest = all.as_slice();
    for proto in 0..=5u8 {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let (one, tail) = tail.split_at(len);
        rest = tail;
        let report = scan(one).unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        assert_eq!(report.format_version, proto.to_string());
        assert_eq!(
            imports_of(&report, ImportClass::Dangerous),
            Vec::<String>::new(),
            "protocol {proto}"
        );
        // The 10,000-character string and the bytes are skipped, not read.
        assert!(
            report.pickle.as_ref().unwrap().opcodes > 30,
            "protocol {proto}"
        );
    }
    assert!(rest.is_empty());
}

#[test]
fn bulk_bytes_are_skipped_not_read() {
    // 1 MiB of bytes in a protocol 4 pickle: BINBYTES, skipped by seek.
    let bytes = py("out(pickle.dumps({'blob': b'\\x01' * (1 << 20)}, protocol=4))");
    let report = scan(&bytes).unwrap();
    assert!(report.risk_reasons.is_empty());
    let mut r = Bounded::new(Cursor::new(bytes.clone()), Budget::default()).unwrap();
    let mut rep = ModelReport::new(Format::Pickle);
    read_file(&mut r, &mut rep).unwrap();
    assert!(r.bytes_read() < 4096, "read {} bytes", r.bytes_read());
}

#[test]
fn a_whole_pickled_model_is_suspicious_and_names_tensors_like_a_state_dict() {
    let script = r#"
mynet = types.ModuleType('mynet'); sys.modules['mynet'] = mynet
class Linear: pass
class Net: pass
Linear.__module__ = Net.__module__ = 'mynet'; mynet.Linear = Linear; mynet.Net = Net
fc = Linear(); fc.__dict__.update(training=True, _parameters=collections.OrderedDict(
    weight=Tensor(FloatStorage, '0', (3, 2), param=True), bias=Tensor(FloatStorage, '1', (3,), param=True)),
    _buffers=collections.OrderedDict(), _modules=collections.OrderedDict())
net = Net(); net.__dict__.update(training=True, _parameters=collections.OrderedDict(),
    _buffers=collections.OrderedDict(), _modules=collections.OrderedDict(fc=fc))
out(dump(net))
"#;
    let report = inspected(&py(script), "net.pt");
    assert_eq!(report.risk, Risk::Suspicious);
    assert!(report
        .risk_reasons
        .iter()
        .any(|r| r.contains("mynet.Net") && r.contains("not a known")));
    let mut names: Vec<_> = report.tensors.iter().map(|t| t.name.as_str()).collect();
    names.sort();
    assert_eq!(names, vec!["fc.bias", "fc.weight"]);
}

// --- malicious ---

#[test]
fn posix_system_via_reduce_protocols_2_and_4_is_dangerous_and_called() {
    for proto in [2, 4] {
        let bytes = py(&format!(
            "import os\nout(pickle.dumps(Reduce(os.system, 'echo pwned'), protocol={proto}))"
        ));
        let report = inspected(&bytes, "evil.pkl");
        assert_eq!(report.risk, Risk::Dangerous, "protocol {proto}");
        assert_dangerous(&report, "posix", "system");
        assert!(called(&report, "posix", "system"));
        assert!(
            report
                .risk_reasons
                .iter()
                .any(|r| r == "imports posix.system (pickle), called"),
            "{:?}",
            report.risk_reasons
        );
    }
}

#[test]
fn protocol_0_global_opcode() {
    let report = inspected(b"cos\nsystem\n(S'id'\ntR.", "evil.pkl");
    assert_eq!(report.risk, Risk::Dangerous);
    assert_dangerous(&report, "os", "system");
    assert!(called(&report, "os", "system"));
    assert_eq!(report.format_version, "0");
    // The extension in any case: read as a pickle by name all the same.
    let report = inspected(b"cos\nsystem\n(S'id'\ntR.", "EVIL.PKL");
    assert_eq!(report.format, crate::Format::Pickle);
    assert_dangerous(&report, "os", "system");
}

#[test]
fn inst_opcode() {
    let report = inspected(b"(S'id'\nios\nsystem\n.", "evil.pkl");
    assert_eq!(report.risk, Risk::Dangerous);
    assert!(called(&report, "os", "system"));
}

#[test]
fn obj_and_newobj_call_their_class() {
    // OBJ: MARK, class, args..., 'o'.
    let report = scan(b"(csubprocess\nPopen\nS'id'\no.").unwrap();
    assert!(called(&report, "subprocess", "Popen"));
    // NEWOBJ: class, args tuple.
    let report = scan(&cat(&[
        b"\x80\x02csubprocess\nPopen\n",
        b"U\x02id\x85\x81.",
    ]))
    .unwrap();
    assert!(called(&report, "subprocess", "Popen"));
    // copyreg's helpers call their first argument.
    let report =
        scan(b"ccopy_reg\n_reconstructor\n(csubprocess\nPopen\nc__builtin__\nobject\nNtR.")
            .unwrap();
    assert!(called(&report, "subprocess", "Popen"));
    assert!(!called(&report, "__builtin__", "object"));
}

#[test]
fn stack_global_from_memoised_strings() {
    // "os" and "system" memoised, popped, fetched back by BINGET and
    // LONG_BINGET for STACK_GLOBAL.
    let bytes = cat(&[
        b"\x80\x04",
        &short_unicode("os"),
        b"q\x01",
        &short_unicode("system"),
        b"r\x02\x00\x00\x00",
        b"00",
        b"h\x01j\x02\x00\x00\x00\x93",
        &short_unicode("id"),
        b"\x85R.",
    ]);
    let report = inspected(&bytes, "evil.pkl");
    assert_dangerous(&report, "os", "system");
    assert!(called(&report, "os", "system"));
    // The same through MEMOIZE and GET ('g', protocol 0's text form), with
    // strings spelled by different opcodes.
    let bytes = cat(&[
        b"\x80\x04",
        b"Vsubprocess\n\x94",
        b"U\x05Popen\x94",
        b"00",
        b"g0\ng1\n\x93",
        b"X\x02\x00\x00\x00id\x85R.",
    ]);
    let report = scan(&bytes).unwrap();
    assert_dangerous(&report, "subprocess", "Popen");
    assert!(called(&report, "subprocess", "Popen"));
}

#[test]
fn stack_global_of_unresolvable_operands_is_a_hidden_import() {
    // The name is a call's result (here "system" built by a join).
    let bytes = cat(&[
        b"\x80\x04",
        &short_unicode("os"),
        b"cbuiltins\nstr\n",
        &short_unicode("system"),
        b"\x85R\x93",
        &short_unicode("id"),
        b"\x85R.",
    ]);
    let report = inspected(&bytes, "evil.pkl");
    assert_eq!(report.risk, Risk::Dangerous);
    assert_dangerous(&report, "os", "?");
    // Bytes are not str: also hidden.
    let report = scan(b"\x80\x04C\x02osC\x06system\x93N\x85R.").unwrap();
    assert_dangerous(&report, "?", "?");
    // A name longer than any real one.
    let long = "a".repeat(5000);
    let mut bytes = b"\x80\x04X".to_vec();
    bytes.extend_from_slice(&(long.len() as u32).to_le_bytes());
    bytes.extend_from_slice(long.as_bytes());
    bytes.extend_from_slice(&short_unicode("system"));
    bytes.extend_from_slice(b"\x93.");
    let report = scan(&bytes).unwrap();
    assert_dangerous(&report, "?", "system");
}

/// `getattr(__import__('os'), 'system')('id')`, protocol 2.
pub(crate) const GETATTR_CHAIN: &[u8] =
    b"\x80\x02cbuiltins\ngetattr\n(cbuiltins\n__import__\n(Vos\ntRVsystem\ntR(Vid\ntR.";

#[test]
fn getattr_chain_on_import_resolves_to_os_system() {
    // getattr(__import__('os'), 'system')('id')
    let bytes = GETATTR_CHAIN;
    let report = inspected(bytes, "evil.pkl");
    assert_eq!(report.risk, Risk::Dangerous);
    assert_dangerous(&report, "builtins", "getattr");
    assert_dangerous(&report, "builtins", "__import__");
    assert_dangerous(&report, "os", "system");
    assert!(called(&report, "os", "system"));
    assert!(called(&report, "builtins", "getattr"));
    // getattr of a global: `posixpath.os.system` spelled by attribute.
    let bytes = b"\x80\x02c__builtin__\ngetattr\ncposixpath\nos\nVsystem\n\x86R.";
    let report = scan(bytes).unwrap();
    assert_dangerous(&report, "posixpath", "os.system");
    // getattr of something unresolvable still names the attribute.
    let bytes = b"\x80\x02cbuiltins\ngetattr\n(NVsystem\ntR.";
    let report = scan(bytes).unwrap();
    assert_dangerous(&report, "?", "system");
}

#[test]
fn attrgetter_resolves_to_its_attribute() {
    // operator.attrgetter('system')(__import__('os'))
    let bytes = b"\x80\x02coperator\nattrgetter\n(Vsystem\ntRcbuiltins\n__import__\n(Vos\ntR\x85R.";
    let report = scan(bytes).unwrap();
    assert_dangerous(&report, "os", "system");
    assert_dangerous(&report, "operator", "attrgetter");
}

#[test]
fn known_payloads_are_dangerous() {
    for (script, module, name) in [
        (
            "import subprocess\nout(pickle.dumps(Reduce(subprocess.Popen, ['id']), protocol=4))",
            "subprocess",
            "Popen",
        ),
        // Protocols 0 to 2 write subprocess under its Python 2 name.
        (
            "import subprocess\nout(pickle.dumps(Reduce(subprocess.Popen, ['id']), protocol=2))",
            "commands",
            "Popen",
        ),
        (
            "import runpy\nout(pickle.dumps(Reduce(runpy._run_code, 'print(1)', {}), protocol=4))",
            "runpy",
            "_run_code",
        ),
        (
            "import webbrowser\nout(pickle.dumps(Reduce(webbrowser.open, 'http://x'), protocol=3))",
            "webbrowser",
            "open",
        ),
        (
            "out(pickle.dumps(Reduce(eval, '1+1'), protocol=3))",
            "builtins",
            "eval",
        ),
        (
            "out(pickle.dumps(Reduce(exec, 'pass'), protocol=0))",
            "__builtin__",
            "exec",
        ),
    ] {
        let report = inspected(&py(script), "evil.pkl");
        assert_eq!(report.risk, Risk::Dangerous, "{module}.{name}");
        assert_dangerous(&report, module, name);
        assert!(called(&report, module, name), "{module}.{name}");
    }
}

#[test]
fn a_poisoned_state_dict_is_dangerous_and_keeps_its_tensors() {
    let script =
        "import os\nsd = state_dict(); sd['evil'] = Reduce(os.system, 'id')\nout(dump(sd))";
    let report = inspected(&py(script), "model.bin");
    assert_eq!(report.risk, Risk::Dangerous);
    assert_dangerous(&report, "posix", "system");
    assert_state_dict_tensors(&report);
}

#[test]
fn a_second_pickle_in_a_row_is_scanned() {
    let bytes = py("import os\nout(pickle.dumps([1, 2], protocol=2)); out(pickle.dumps(Reduce(os.system, 'id'), protocol=2))");
    let report = inspected(&bytes, "two.pkl");
    assert_eq!(report.risk, Risk::Dangerous);
    let scan = report.pickle.as_ref().unwrap();
    assert_eq!(scan.pickles.len(), 2);
    assert!(scan.imports[0].at.starts_with("pickle@"));
}

#[test]
fn build_on_a_global_and_ext_codes_are_dangerous() {
    // BUILD on a function rewrites it.
    let report = scan(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}b.").unwrap();
    assert_dangerous(&report, "torch._utils", "_rebuild_tensor_v2.__dict__");
    // An extension code names a global the file does not spell out.
    let report = scan(b"\x80\x02\x82\x07N\x85R.").unwrap();
    assert_dangerous(&report, "?", "extension code 7");
}

#[test]
fn imports_are_recorded_once_per_place() {
    let report = scan(b"\x80\x02cos\nsystem\ncos\nsystem\n\x86.").unwrap();
    assert_eq!(
        imports_of(&report, ImportClass::Dangerous),
        vec!["os.system"]
    );
    assert!(!called(&report, "os", "system"));
}

#[test]
fn an_error_after_a_dangerous_import_still_reports_it() {
    // os.system called, then garbage: Python has run it by then.
    let report = inspected(b"cos\nsystem\n(S'id'\ntR\xff", "evil.pkl");
    assert_eq!(report.risk, Risk::Dangerous);
    assert!(report
        .risk_reasons
        .iter()
        .any(|r| r.contains("stopped early") && r.contains("unknown pickle opcode 0xff")));
}

// --- bad input ---

#[test]
fn truncated_pickle_fails() {
    let bytes = py("out(dump(state_dict()))");
    for cut in [1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
        match scan(&bytes[..cut]) {
            Err(InspectError::Truncated { .. }) => {}
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

/// Why the scan of `r` stopped on a budget ("" if it did not).
fn unscanned(r: Result<ModelReport, InspectError>) -> String {
    r.expect("a budget running out is not a failure")
        .pickle
        .and_then(|p| p.unscanned)
        .unwrap_or_default()
}

#[test]
fn deep_marks_and_deep_lists_stop_the_walk_unscanned() {
    let mut marks = b"\x80\x02".to_vec();
    marks.extend(std::iter::repeat_n(b'(', 100_000));
    assert!(unscanned(scan(&marks)).contains("nested deeper"));

    let mut lists = b"\x80\x02".to_vec();
    lists.extend(std::iter::repeat_n(b']', 100_000));
    lists.extend(std::iter::repeat_n(b'a', 99_999));
    lists.push(b'.');
    assert!(unscanned(scan(&lists)).contains("nested deeper"));

    let mut tuples = b"\x80\x02N".to_vec();
    tuples.extend(std::iter::repeat_n(0x85, 100_000));
    tuples.push(b'.');
    assert!(unscanned(scan(&tuples)).contains("nested deeper"));

    // A stack of 100,000 items under a 10,000 item budget.
    let mut wide = b"\x80\x02".to_vec();
    wide.extend(std::iter::repeat_n(b'N', 100_000));
    let budget = Budget {
        max_items: 10_000,
        ..Budget::default()
    };
    assert!(unscanned(scan_with(&wide, budget)).contains("stack items"));

    // A memo of 100,000 entries under the same budget stores 10,000 and
    // walks on: a memoised value never hides an import.
    let mut memo = b"\x80\x04N".to_vec();
    memo.extend(std::iter::repeat_n(0x94, 100_000));
    memo.extend_from_slice(b"h\x05j\x50\xc3\x00\x000cos\nsystem\n.");
    let report = scan_with(&memo, budget).expect("walks on");
    assert_eq!(report.pickle.as_ref().unwrap().unscanned, None);
    assert_eq!(imports_of(&report, ImportClass::Dangerous), ["os.system"]);
    // A string past the budget named by STACK_GLOBAL is a hidden import.
    let mut hidden = b"\x80\x04N".to_vec();
    hidden.extend(std::iter::repeat_n(0x94, 10_000));
    hidden.extend_from_slice(b"\x8c\x02os\x94\x8c\x06system\x94");
    hidden.extend_from_slice(b"j\x10\x27\x00\x00j\x11\x27\x00\x00\x93.");
    let report = scan_with(&hidden, budget).expect("walks on");
    assert_eq!(imports_of(&report, ImportClass::Dangerous), ["?.?"]);
}

#[test]
fn memo_index_out_of_range_is_malformed() {
    for bytes in [
        &b"\x80\x02h\x05."[..],
        b"\x80\x02j\xff\xff\xff\xff.",
        b"g99999999999999999999999\n.",
        b"\x80\x02Nq\x01h\x02.",
    ] {
        assert!(
            matches!(scan(bytes), Err(InspectError::Malformed { .. })),
            "{bytes:?}: {:?}",
            scan(bytes)
        );
    }
}

#[test]
fn huge_claimed_lengths_fail_without_allocating() {
    let mut b = b"\x80\x04\x8e".to_vec();
    b.extend_from_slice(&(1u64 << 60).to_le_bytes());
    b.extend_from_slice(b"xx.");
    assert!(matches!(scan(&b), Err(InspectError::Truncated { .. })));
    for op in [0x8du8, 0x96] {
        let mut b = vec![0x80, 0x04, op];
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(scan(&b), Err(InspectError::Truncated { .. })));
    }
    let b = b"\x80\x02X\xff\xff\xff\xff.";
    assert!(matches!(scan(b), Err(InspectError::Truncated { .. })));
    let b = b"\x80\x02\x8b\xff\xff\xff\x7f.";
    assert!(matches!(scan(b), Err(InspectError::Truncated { .. })));
    let b = b"\x80\x02\x8b\xff\xff\xff\xff.";
    assert!(matches!(scan(b), Err(InspectError::Malformed { .. })));
}

#[test]
fn malformed_opcodes_say_where() {
    match scan(b"\x80\x02N\xff.") {
        Err(InspectError::Malformed { offset: 3, what }) => assert!(what.contains("0xff")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        scan(b"\x80\x09N."),
        Err(InspectError::Malformed { .. })
    ));
    assert!(matches!(
        scan(b"\x80\x02R."),
        Err(InspectError::Malformed { .. })
    ));
    assert!(matches!(
        scan(b"\x80\x02(Ns."),
        Err(InspectError::Malformed { .. })
    ));
    assert!(matches!(
        scan(b"\x80\x02(Nu."),
        Err(InspectError::Malformed { .. })
    ));
    assert!(matches!(
        scan(b"\x80\x02."),
        Err(InspectError::Malformed { .. })
    ));
    assert!(matches!(
        scan(b"\x80\x02e."),
        Err(InspectError::Malformed { .. })
    ));
    assert!(matches!(
        scan(b"\x80\x02(o."),
        Err(InspectError::Malformed { .. })
    ));
    assert!(matches!(
        scan(b"S'abc\n."),
        Err(InspectError::Malformed { .. })
    ));
}

#[test]
fn out_of_time_leaves_the_pickle_unscanned() {
    let mut b = b"\x80\x02".to_vec();
    for _ in 0..200_000 {
        b.extend_from_slice(b"N0");
    }
    b.extend_from_slice(b"N.");
    let budget = Budget {
        max_time: Duration::ZERO,
        ..Budget::default()
    };
    assert!(unscanned(scan_with(&b, budget)).contains("took longer"));
}

#[test]
fn fuzz_pickle() {
    let seeds = vec![
        py("out(dump(state_dict()))"),
        py("out(dump(state_dict(), 4))"),
        py("out(legacy(state_dict()))"),
        py("import os\nout(pickle.dumps(Reduce(os.system, 'id'), protocol=4))"),
        b"cos\nsystem\n(S'id'\ntR.".to_vec(),
        GETATTR_CHAIN.to_vec(),
    ];
    crate::fuzz_tests::fuzz("pickle", "m.pkl", &seeds);
}

#[test]
fn the_memo_keeps_every_key_whether_dense_or_far_and_counts_each_once() {
    let mut m = Memo::default();
    m.insert(1_000, V::Int(1));
    m.insert(0, V::Int(2));
    for k in 1..200 {
        m.insert(k, V::Int(k as i64));
    }
    // 1_000 was stored far from the dense run; the vector has since grown
    // past it, and it is still found and counted once.
    m.insert(1_000, V::Int(3));
    assert_eq!(m.get(1_000), Some(&V::Int(3)));
    assert_eq!(m.get(0), Some(&V::Int(2)));
    assert_eq!(m.get(150), Some(&V::Int(150)));
    assert_eq!(m.get(5_000), None);
    assert_eq!(m.len(), 201);
    m.insert(u64::MAX, V::None);
    assert_eq!(m.get(u64::MAX), Some(&V::None));
    assert_eq!(m.len(), 202);
    // A far key does not grow the vector, nor do keys that step ahead of
    // what is stored.
    assert!(m.dense.len() < 300);
    let mut m = Memo::default();
    for n in 0..100_000u64 {
        m.insert(n * (DENSE_GAP - 1), V::None);
    }
    assert!(m.dense.len() as u64 <= 2 * 100_000 + DENSE_SLACK + DENSE_GAP);
    assert_eq!(m.len(), 100_000);
}
