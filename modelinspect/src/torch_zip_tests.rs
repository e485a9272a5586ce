//! Torch zip tests: archives Python's `zipfile` writes as `torch.save`
//! does (stored entries under `archive/`), with the fake torch of the
//! pickle tests.

use std::io::Cursor;
use std::time::{Duration, Instant};

use super::read;
use crate::pickle::tests::{
    assert_state_dict_tensors, called, imports_of, inspected, py, GETATTR_CHAIN,
};
use crate::{inspect, Bounded, Budget, Format, ImportClass, InspectError, ModelReport, Risk};

fn read_with(bytes: &[u8], budget: Budget) -> Result<ModelReport, InspectError> {
    let mut r = Bounded::new(Cursor::new(bytes.to_vec()), budget)?;
    let mut report = ModelReport::new(Format::PytorchZip);
    read(&mut r, &mut report)?;
    Ok(report)
}

#[test]
fn benign_torch_zip_is_safe_with_its_tensors() {
    let bytes = py(
        "e = benign_entries(); e[2] = ('archive/data/0', b'\\1' * (1 << 20))\nout(torch_zip(e))",
    );
    let report = inspected(&bytes, "model.pt");
    assert_eq!(report.format, Format::PytorchZip);
    assert_eq!(report.format_version, "3");
    assert_eq!(report.risk, Risk::Safe, "{:?}", report.risk_reasons);
    assert_state_dict_tensors(&report);
    assert_eq!(report.parameters, 32 + 8 + 48 + 1);
    let scan = report.pickle.as_ref().unwrap();
    assert_eq!(scan.pickles, vec!["archive/data.pkl".to_string()]);
    assert_eq!(scan.protocol, 2);
    assert!(scan.imports.iter().all(|i| i.at == "archive/data.pkl"));
    // The storages are never read.
    assert!(report.bytes_read < 16 << 10, "read {}", report.bytes_read);
    // What it counted is all it needs: the directory, read twice (once to
    // compare names), counts once.
    let budget = Budget {
        max_bytes: report.bytes_read,
        ..Budget::default()
    };
    let again = inspect(Cursor::new(bytes.clone()), budget, Some("model.pt")).unwrap();
    assert_eq!(again.risk, Risk::Safe, "{:?}", again.risk_reasons);
}

#[test]
fn same_state_dict_same_fingerprint_in_zip_and_legacy_files() {
    let zip = inspected(&py("out(torch_zip(benign_entries()))"), "a.pt");
    let legacy = inspected(&py("out(legacy(state_dict()))"), "b.pt");
    assert_eq!(zip.structure_fingerprint, legacy.structure_fingerprint);
    assert!(!zip.structure_fingerprint.is_empty());
}

#[test]
fn deflated_entries_and_other_prefixes_read_too() {
    let script = "e = [(n.replace('archive/', 'mymodel/'), d) for n, d in benign_entries()]\n\
                  e.remove(('mymodel/version', b'3\\n'))\n\
                  out(torch_zip(e, zipfile.ZIP_DEFLATED))";
    let report = inspected(&py(script), "model.pth");
    assert_eq!(report.risk, Risk::Safe);
    assert_state_dict_tensors(&report);
    // No version entry: the pickle protocol.
    assert_eq!(report.format_version, "2");
}

#[test]
fn a_poisoned_data_pkl_is_dangerous() {
    let script = "import os\nsd = state_dict(); sd['x'] = Reduce(os.system, 'id')\n\
                  e = benign_entries(); e[0] = ('archive/data.pkl', dump(sd))\n\
                  out(torch_zip(e))";
    let report = inspected(&py(script), "model.pt");
    assert_eq!(report.risk, Risk::Dangerous);
    assert!(called(&report, "posix", "system"));
    assert!(report
        .risk_reasons
        .iter()
        .any(|r| r == "imports posix.system (archive/data.pkl), called"));
    assert_state_dict_tensors(&report);
}

#[test]
fn an_extra_pickle_entry_is_scanned() {
    let script = "import os\n\
                  e = benign_entries() + [('archive/extra/payload.pkl', pickle.dumps(Reduce(os.system, 'id'), protocol=4))]\n\
                  out(torch_zip(e))";
    let report = inspected(&py(script), "model.pt");
    assert_eq!(report.risk, Risk::Dangerous);
    let scan = report.pickle.as_ref().unwrap();
    assert_eq!(scan.pickles.len(), 2);
    let evil = scan
        .imports
        .iter()
        .find(|i| i.class == ImportClass::Dangerous)
        .unwrap();
    assert_eq!(evil.at, "archive/extra/payload.pkl");
    // Only data.pkl's tensors count.
    assert_state_dict_tensors(&report);
}

#[test]
fn getattr_chain_in_a_zip() {
    let chain: String = GETATTR_CHAIN
        .iter()
        .map(|b| format!("\\x{b:02x}"))
        .collect();
    let script =
        format!("e = benign_entries(); e[0] = ('archive/data.pkl', b'{chain}')\nout(torch_zip(e))");
    let report = inspected(&py(&script), "model.pt");
    assert_eq!(report.risk, Risk::Dangerous);
    assert!(imports_of(&report, ImportClass::Dangerous).contains(&"os.system".to_string()));
}

#[test]
fn a_zip_without_a_pickle_is_not_a_torch_file() {
    let report = inspect(
        Cursor::new(py("out(torch_zip([('config.json', b'{}')]))")),
        Budget::default(),
        Some("x.keras"),
    );
    let e = report.unwrap_err();
    assert!(matches!(e.error, InspectError::UnknownFormat(_)), "{e}");
}

#[test]
fn duplicate_entry_names_make_the_archive_dangerous() {
    // The zip reader keeps one entry per name; torch may read the other.
    let script = "import os, warnings\nwarnings.simplefilter('ignore')\n\
                  e = benign_entries() + [('archive/data.pkl', pickle.dumps(Reduce(os.system, 'id'), protocol=2))]\n\
                  out(torch_zip(e))";
    let report = inspected(&py(script), "model.pt");
    assert_eq!(report.risk, Risk::Dangerous, "{:?}", report.risk_reasons);
    let why = report.pickle.and_then(|p| p.unscanned).unwrap_or_default();
    assert!(why.contains("duplicate"), "{why}");
}

/// What a Unicode path extra field (0x7075) holding `unicode` says for an
/// entry whose header name is `raw`, as Python source.
const UNICODE_PATH: &str = r#"def upath(raw, unicode):
    import struct, zlib
    body = b'\x01' + struct.pack('<I', zlib.crc32(raw.encode())) + unicode.encode()
    return struct.pack('<HH', 0x7075, len(body)) + body
def zip_with_extra(entries):
    b = io.BytesIO()
    with zipfile.ZipFile(b, 'w') as z:
        for name, data, extra in entries:
            i = zipfile.ZipInfo(name)
            i.extra = extra
            z.writestr(i, data)
    return b.getvalue()
"#;

#[test]
fn an_entry_renamed_by_a_unicode_path_field_makes_the_archive_dangerous() {
    // Torch's reader (miniz) takes the header's name: it loads the entry
    // called `archive/data.pkl` there, which the zip reader renames to
    // `archive/data.bin`, while a benign decoy is renamed `data.pkl`.
    let script = format!(
        "{UNICODE_PATH}import os, warnings\nwarnings.simplefilter('ignore')\n\
         evil = pickle.dumps(Reduce(os.system, 'id'), protocol=2)\n\
         e = [(n, d, b'') for n, d in benign_entries() if n != 'archive/data.pkl']\n\
         e.insert(0, ('archive/data.pkl', evil, upath('archive/data.pkl', 'archive/data.bin')))\n\
         e.insert(1, ('archive/zz', dump(state_dict()), upath('archive/zz', 'archive/data.pkl')))\n\
         out(zip_with_extra(e))"
    );
    let report = inspected(&py(&script), "model.pt");
    assert_eq!(report.risk, Risk::Dangerous, "{:?}", report.risk_reasons);
    let why = report.pickle.and_then(|p| p.unscanned).unwrap_or_default();
    assert!(why.contains("Unicode path"), "{why}");
    // Without the decoy: still read, still dangerous.
    let script = format!(
        "{UNICODE_PATH}import os, warnings\nwarnings.simplefilter('ignore')\n\
         evil = pickle.dumps(Reduce(os.system, 'id'), protocol=2)\n\
         e = [(n, d, b'') for n, d in benign_entries() if n != 'archive/data.pkl']\n\
         e.insert(0, ('archive/data.pkl', evil, upath('archive/data.pkl', 'archive/data.bin')))\n\
         out(zip_with_extra(e))"
    );
    let report = inspected(&py(&script), "model.pt");
    assert_eq!(report.risk, Risk::Dangerous, "{:?}", report.risk_reasons);
}

#[test]
fn a_second_end_of_directory_record_makes_the_archive_dangerous() {
    // A record in the comment of another, claiming a comment that runs
    // past the end: miniz takes that last one, the zip reader refuses it
    // and takes the one before. Here both name the same directory; an
    // attacker's would not.
    let script = r#"b = torch_zip(benign_entries())
z = io.BytesIO(b)
with zipfile.ZipFile(z, 'a') as a:
    a.comment = b[-22:-2] + b'\x01\x00'
out(z.getvalue())
"#;
    let report = inspected(&py(script), "model.pt");
    assert_eq!(report.risk, Risk::Dangerous, "{:?}", report.risk_reasons);
    let why = report.pickle.and_then(|p| p.unscanned).unwrap_or_default();
    assert!(why.contains("end-of-central-directory records"), "{why}");
    // A comment that is only text is fine.
    let script = r#"b = io.BytesIO()
with zipfile.ZipFile(b, 'w') as z:
    z.comment = b'saved by a test'
    [z.writestr(n, d) for n, d in benign_entries()]
out(b.getvalue())
"#;
    let report = inspected(&py(script), "model.pt");
    assert_eq!(report.risk, Risk::Safe, "{:?}", report.risk_reasons);
}

#[test]
fn zip_bombs_fail_on_the_budget_quickly() {
    // 100 MB of zeros deflated to ~100 KB, its size declared honestly.
    let honest = py("out(torch_zip([('archive/data.pkl', b'\\x80\\x02' + b'N' * 100_000_000)], zipfile.ZIP_DEFLATED))");
    assert!(honest.len() < 1 << 20);
    // Over the budget, its pickle is unscanned: dangerous (torch would
    // read it all).
    let started = Instant::now();
    let report = read_with(&honest, Budget::default()).expect("reads");
    let why = report.pickle.and_then(|p| p.unscanned).unwrap_or_default();
    assert!(why.contains("over budget"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // The same with small sizes written in both headers: decompression
    // stops at the declared size, as torch's reader's does.
    let lying = py(r#"
data = torch_zip([('archive/data.pkl', b'\x80\x02' + b'N' * 8_000_000)], zipfile.ZIP_DEFLATED)
size = struct.pack('<I', 8_000_002)
assert data.count(size) == 2
out(data.replace(size, struct.pack('<I', 100)))
"#);
    let budget = Budget {
        max_bytes: 1 << 20,
        ..Budget::default()
    };
    let started = Instant::now();
    match read_with(&lying, budget) {
        Err(InspectError::Truncated { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn too_many_entries_are_refused_before_the_directory_is_read() {
    let bytes = py("out(torch_zip([('archive/data/%d' % i, b'') for i in range(2000)] + [('archive/data.pkl', b'\\x80\\x02N.')]))");
    let budget = Budget {
        max_items: 1000,
        ..Budget::default()
    };
    match read_with(&bytes, budget) {
        Err(InspectError::TooMany { what, count, .. }) => {
            assert_eq!(what, "zip entries");
            assert_eq!(count, 2001);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn zip64_entry_counts_are_read_too() {
    // Over 65,535 entries: the count is in the zip64 record.
    let bytes = py("out(torch_zip([('archive/data.pkl', dump(state_dict()))] + [('archive/d/%d' % i, b'') for i in range(70000)]))");
    // Refused from the end records alone, before the directory is read.
    let mut r = Bounded::new(Cursor::new(bytes.clone()), Budget::default()).unwrap();
    let ends = super::end_records(&mut r).unwrap();
    assert_eq!(ends.last.map(|(entries, _, _)| entries), Some(70001));
    assert_eq!(ends.plausible, 1);
    // The last 64 KiB and the zip64 records, not the 3 MB directory.
    assert!(r.bytes_read() < 70_000, "read {}", r.bytes_read());
    let budget = Budget {
        max_items: 1000,
        ..Budget::default()
    };
    match read_with(&bytes, budget) {
        Err(InspectError::TooMany { what, count, .. }) => {
            assert_eq!(what, "zip entries");
            assert_eq!(count, 70001);
        }
        other => panic!("{other:?}"),
    }
    let report = read_with(&bytes, Budget::default()).unwrap();
    assert_eq!(report.tensors.len(), 4);
}

#[test]
fn broken_archives_fail_without_panicking() {
    let bytes = py("out(torch_zip(benign_entries()))");
    for cut in [4, 30, bytes.len() / 2, bytes.len() - 10] {
        assert!(
            read_with(&bytes[..cut], Budget::default()).is_err(),
            "cut {cut}"
        );
    }
    // A truncated data.pkl inside a whole archive.
    let bytes =
        py("e = benign_entries(); e[0] = ('archive/data.pkl', e[0][1][:40])\nout(torch_zip(e))");
    assert!(matches!(
        read_with(&bytes, Budget::default()),
        Err(InspectError::Truncated { .. })
    ));
}

#[test]
fn fuzz_torch_zip() {
    let seeds = vec![
        py("out(torch_zip(benign_entries()))"),
        py("out(torch_zip(benign_entries(), zipfile.ZIP_DEFLATED))"),
        py("import os\nout(torch_zip(benign_entries() + [('archive/x.pkl', pickle.dumps(Reduce(os.system, 'id'), protocol=4))]))"),
    ];
    crate::fuzz_tests::fuzz("torch-zip", "m.pt", &seeds);
}
