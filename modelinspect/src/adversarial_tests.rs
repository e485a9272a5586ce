//! Files made to run code while the inspector calls them safe, or to make
//! it fail, stall or blow up: each was a bypass before the fix beside it.
//! Fixtures are hand-written opcodes, or Python's standard library (the
//! fake torch of the pickle tests); every pickle here runs `os.system`
//! when Python's own unpickler loads it.

use std::io::Cursor;
use std::time::{Duration, Instant};

use crate::pickle::tests::{imports_of, py};
use crate::{inspect, Budget, Format, ImportClass, ModelReport, Risk};

/// `os.system("id")` called, protocol 0.
const PAYLOAD: &[u8] = b"cos\nsystem\n(S'id'\ntR.";

fn report_of(bytes: &[u8], name: &str) -> ModelReport {
    inspect(Cursor::new(bytes.to_vec()), Budget::default(), Some(name))
        .unwrap_or_else(|e| panic!("{name}: not inspected: {e}"))
}

fn assert_dangerous(bytes: &[u8], name: &str) -> ModelReport {
    let report = report_of(bytes, name);
    assert_eq!(
        report.risk,
        Risk::Dangerous,
        "{name}: {:?} {:?}",
        report.risk_reasons,
        report.pickle
    );
    report
}

/// Python's unpickler calls `os.system` on `bytes` (with `find_class`
/// answering a stand-in, so nothing runs).
fn python_calls_system(bytes: &[u8]) -> bool {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "vigil-adversarial-{}-{}.bin",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).expect("writes the fixture");
    let out = py(&format!(
        "class U(pickle.Unpickler):\n    def find_class(self, m, n):\n        \
         return (lambda *a: out(b'CALLED')) if (m, n) == ('os', 'system') else (lambda *a: None)\n\
         try:\n    U(open({:?}, 'rb')).load()\nexcept Exception:\n    pass\n",
        path.display().to_string()
    ));
    let _ = std::fs::remove_file(&path);
    out == b"CALLED"
}

/// `report` names a dangerous `system` (`os.system` pickles as
/// `posix.system` on Linux).
fn imports_system(report: &ModelReport) -> bool {
    imports_of(report, ImportClass::Dangerous)
        .iter()
        .any(|i| i.ends_with(".system"))
}

#[test]
fn marks_nested_past_the_budget_before_the_import() {
    // Python has no limit on marks: 300 of them, then os.system.
    let mut b = b"\x80\x02".to_vec();
    b.extend(std::iter::repeat_n(b'(', 300));
    b.extend_from_slice(PAYLOAD);
    assert!(python_calls_system(&b));
    let report = assert_dangerous(&b, "model.pkl");
    assert!(report.pickle.and_then(|p| p.unscanned).is_some());
}

#[test]
fn a_stack_past_the_budget_before_the_import() {
    let budget = Budget {
        max_items: 1000,
        ..Budget::default()
    };
    let mut b = b"\x80\x02".to_vec();
    b.extend(std::iter::repeat_n(b'N', 2000));
    b.extend_from_slice(PAYLOAD);
    let report = inspect(Cursor::new(b), budget, Some("m.pt")).expect("inspects");
    assert_eq!(report.risk, Risk::Dangerous);
}

#[test]
fn memo_indices_python_accepts_with_underscores_signs_and_spaces() {
    // int("1_0") is 10 to Python's unpickler.
    for arg in ["1_0", " 7 ", "+3", "-0", "0_0"] {
        let b = [
            b"\x80\x02K\x01p",
            arg.as_bytes(),
            b"\n0g",
            arg.as_bytes(),
            b"\n0",
            PAYLOAD,
        ]
        .concat();
        assert!(python_calls_system(&b), "{arg}");
        assert_dangerous(&b, "m.pkl");
    }
}

#[test]
fn a_torch_zip_whose_crc_is_wrong() {
    // torch's zip reader does not check CRCs; the zip crate's does, at
    // the end of an entry.
    for method in ["zipfile.ZIP_STORED", "zipfile.ZIP_DEFLATED"] {
        let b = py(&format!(
            r#"
import os
p = pickle.dumps(Reduce(os.system, 'id'), protocol=2)
z = bytearray(torch_zip([('archive/data.pkl', p), ('archive/version', b'3\n')], {method}))
crc = struct.pack('<I', zlib.crc32(p))
assert z.count(crc) == 2
out(bytes(z).replace(crc, b'\0\0\0\0'))
"#
        ));
        let report = assert_dangerous(&b, "model.pt");
        assert!(imports_system(&report), "{:?}", report.pickle);
    }
}

#[test]
fn a_pickle_behind_another_formats_header() {
    // "GGUF" starts a BINFLOAT whose 8 bytes end after the version.
    let gguf = [&b"GGUF\x03\x00\x00\x00\x00"[..], b"0", PAYLOAD].concat();
    assert!(python_calls_system(&gguf));
    assert_dangerous(&gguf, "model.gguf");

    // A valid safetensors file (metadata only) that is also a pickle: the
    // header length's bytes open a STRING that runs to a newline the JSON
    // may hold between tokens.
    let head = b"S\"\0\0\0\0\0\0";
    let n = u64::from_le_bytes(*head) as usize;
    let (pre, post) = (&b"{\"__metadata__\":{\"a\":\""[..], &b"\"\n}}"[..]);
    let mut json = pre.to_vec();
    json.resize(n - post.len(), b'x');
    json.extend_from_slice(post);
    let st = [&head[..], &json, b"000", PAYLOAD].concat();
    assert!(python_calls_system(&st));
    let report = assert_dangerous(&st, "model.safetensors");
    assert_eq!(report.format, Format::Safetensors);

    // TFL3 at bytes 4..8: a BINSTRING whose length runs past it.
    let mut tfl = b"N0N0TFL3\x00".to_vec();
    tfl.resize(9 + 0x0033_4c46 - 1, b' ');
    tfl.extend_from_slice(b"0");
    tfl.extend_from_slice(PAYLOAD);
    assert!(python_calls_system(&tfl));
    assert_dangerous(&tfl, "model.tflite");
}

#[test]
fn a_protocol_0_pickle_under_any_model_name() {
    for name in [
        "model.gguf",
        "model.safetensors",
        "model.onnx",
        "x.mlmodel",
        "noext",
    ] {
        assert_dangerous(PAYLOAD, name);
    }
    // Not a pickle: still not a model format.
    assert!(inspect(
        Cursor::new(b"hello world".to_vec()),
        Budget::default(),
        None
    )
    .is_err());
}

/// A protocol 4 pickle calling `torch.storage._load_from_bytes(inner)`.
fn load_from_bytes(inner: &[u8]) -> Vec<u8> {
    let su = |s: &str| [&[0x8c, s.len() as u8][..], s.as_bytes()].concat();
    [
        &b"\x80\x04"[..],
        &su("torch.storage"),
        &su("_load_from_bytes"),
        b"\x93B",
        &(inner.len() as u32).to_le_bytes(),
        inner,
        b"\x85R.",
    ]
    .concat()
}

#[test]
fn torch_load_of_bytes_the_pickle_carries_is_scanned() {
    // A bare pickle, a legacy torch.save stream, a torch zip, and the
    // same nested twice: each runs os.system inside torch.load.
    let legacy = py(r#"
import os
o = io.BytesIO()
for x in (0x1950a86a20f9469cfc6c, 1001, {'little_endian': True}):
    pickle.dump(x, o, protocol=2)
o.write(pickle.dumps(Reduce(os.system, 'id'), protocol=2))
pickle.dump(['0'], o, protocol=2)
out(o.getvalue())
"#);
    let zip = py("import os\nout(torch_zip([('archive/data.pkl', pickle.dumps(Reduce(os.system, 'id'), protocol=2))]))");
    let bare = [&b"\x80\x02"[..], PAYLOAD].concat();
    for inner in [bare.clone(), legacy, zip, load_from_bytes(&bare)] {
        let report = assert_dangerous(&load_from_bytes(&inner), "m.pkl");
        assert!(imports_system(&report), "{:?}", report.pickle);
    }

    // What torch itself writes for a storage: suspicious, not dangerous.
    let benign = py(r#"
o = io.BytesIO()
for x in (0x1950a86a20f9469cfc6c, 1001, {'little_endian': True}, {'a': 1}, ['0']):
    pickle.dump(x, o, protocol=2)
out(o.getvalue() + b'\0' * 64)
"#);
    let report = report_of(&load_from_bytes(&benign), "m.pkl");
    assert_eq!(report.risk, Risk::Suspicious, "{:?}", report.risk_reasons);

    // Bytes the walker cannot find in the file (built by a call).
    let built = b"\x80\x02ctorch.storage\n_load_from_bytes\nc_codecs\nencode\n\
                  X\x03\x00\x00\x00abcX\x06\x00\x00\x00latin1\x86R\x85R.";
    assert_dangerous(built, "m.pkl");
}

/// A reader that hands over at most one byte a call.
struct OneByte(Cursor<Vec<u8>>);

impl std::io::Read for OneByte {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

impl std::io::Seek for OneByte {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        self.0.seek(to)
    }
}

#[test]
fn the_verdict_and_the_bytes_counted_do_not_depend_on_how_the_reader_reads() {
    // A benign torch zip inside torch.load bytes, at budgets around what
    // it needs: the nested reader's read-ahead once went through the outer
    // budget, so a reader handing over whole buffers ran out where one
    // handing over a byte at a time did not (helper-32).
    let zip = py("out(torch_zip(benign_entries()))");
    let file = load_from_bytes(&zip);
    for max_bytes in [1_000, 2_000, 4_000, 8_000, 16_000, 33_000, 40_000, 1 << 20] {
        let budget = Budget {
            max_bytes,
            ..Budget::default()
        };
        let whole = inspect(Cursor::new(file.clone()), budget, Some("m.pkl"));
        let bytewise = inspect(OneByte(Cursor::new(file.clone())), budget, Some("m.pkl"));
        match (whole, bytewise) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    (a.risk, a.bytes_read, &a.risk_reasons),
                    (b.risk, b.bytes_read, &b.risk_reasons),
                    "max_bytes {max_bytes}"
                );
            }
            (a, b) => assert_eq!(
                a.map(|r| r.risk).map_err(|e| e.to_string()),
                b.map(|r| r.risk).map_err(|e| e.to_string()),
                "max_bytes {max_bytes}"
            ),
        }
    }
}

#[test]
fn items_set_on_a_global_rewrite_library_state() {
    // copyreg's extension registry, a module's __dict__: SETITEM, APPEND
    // and ADDITEMS on a global are no pickler's output.
    for b in [
        &b"ccopyreg\n_extension_registry\n(S'os'\nS'system'\ntK\x01s."[..],
        b"\x80\x02ctorch.serialization\n_package_registry\nNa.",
        b"\x80\x04ctorch._weights_only_unpickler\n_marked_safe_globals_set\n(N\x90.",
    ] {
        assert_dangerous(b, "m.pkl");
    }
}

#[test]
fn many_long_imports_from_a_small_file_are_capped() {
    // 256 memoised 4 KiB strings paired up by STACK_GLOBAL: 65,536
    // imports of 8 KiB names from 1.3 MB.
    let mut b = b"\x80\x04".to_vec();
    for i in 0..256u32 {
        let mut s = format!("m{i:04}").into_bytes();
        s.resize(4000, b'x');
        b.push(b'X');
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(&s);
        b.push(b'r');
        b.extend_from_slice(&i.to_le_bytes());
        b.push(b'0');
    }
    for i in 0..256u32 {
        for j in 0..256u32 {
            b.push(b'j');
            b.extend_from_slice(&i.to_le_bytes());
            b.push(b'j');
            b.extend_from_slice(&j.to_le_bytes());
            b.extend_from_slice(b"\x930");
        }
    }
    b.extend_from_slice(b"N.");
    let started = Instant::now();
    let report = assert_dangerous(&b, "m.pkl");
    assert!(started.elapsed() < Duration::from_secs(2));
    let scan = report.pickle.expect("a pickle");
    assert!(scan.imports.len() <= 4096);
    let bytes: usize = scan
        .imports
        .iter()
        .map(|i| i.module.len() + i.name.len())
        .sum();
    assert!(bytes <= 1 << 20);
}

#[test]
fn a_big_plain_data_pickle_is_judged_past_the_values_budget() {
    let budget = Budget {
        max_items: 5000,
        ..Budget::default()
    };
    // A list of 100,000 floats: more values than the budget keeps
    // structure for, safe all the same.
    let floats = py("out(pickle.dumps([float(i) for i in range(100000)], protocol=4))");
    let report = inspect(Cursor::new(floats), budget, Some("m.pkl")).expect("inspects");
    assert_eq!(report.risk, Risk::Safe, "{:?}", report.risk_reasons);
    // os.system after the budget, by name and by memoised strings.
    let late = py("import os\nout(pickle.dumps([(i, 'a%d' % i) for i in range(5000)] + [Reduce(os.system, 'id')], protocol=4))");
    let report = inspect(Cursor::new(late), budget, Some("m.pkl")).expect("inspects");
    assert_eq!(report.risk, Risk::Dangerous, "{:?}", report.risk_reasons);
    assert!(imports_system(&report), "{:?}", report.pickle);
}

/// The other way round: a benign file of another format whose first byte
/// happens to be an opcode is not made dangerous by its walk as a pickle.
/// A safetensors header 0x7a70 bytes long starts with `p` (PUT), whose
/// argument is read to a newline the JSON and the zeros after it lack: the
/// walk stops at the first byte no number holds, at once, and the file is
/// the safetensors file it is.
#[test]
fn a_large_benign_safetensors_starting_with_an_opcode_byte_stays_safe() {
    let mut json = br#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F16","shape":[4,4],"data_offsets":[0,32]}}"#.to_vec();
    json.resize(0x7a70, b' ');
    let mut file = (json.len() as u64).to_le_bytes().to_vec();
    assert_eq!(file[0], b'p');
    file.extend_from_slice(&json);
    file.resize(file.len() + (8 << 20), 0);
    let started = Instant::now();
    let report = report_of(&file, "model.safetensors");
    assert_eq!(report.format, Format::Safetensors);
    assert_eq!(report.risk, Risk::Safe, "{:?}", report.risk_reasons);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Stops at the first byte past the PUT opcode, not the byte budget.
    assert!(report.bytes_read < 0x7a70 + 4096, "{}", report.bytes_read);
}
