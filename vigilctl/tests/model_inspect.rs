//! `vigilctl model inspect`: the report for a file on disk, without a
//! control plane; exit 5 for a file that runs code on load, 1 for one it
//! cannot read as a model.

use std::process::{Command, Output};

fn vigilctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigilctl"))
        .env_remove("VIGIL_ENDPOINT")
        .args(args)
        .output()
        .expect("vigilctl runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A safetensors file as the `safetensors` library writes one.
fn safetensors(path: &std::path::Path) {
    let header = br#"{"__metadata__":{"format":"pt","model_type":"bert","name":"tiny"},"w":{"dtype":"F16","shape":[4,4],"data_offsets":[0,32]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 32]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_weights_only_file_is_reported_as_json_and_as_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    safetensors(&path);
    let out = vigilctl(&["model", "inspect", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "safetensors");
    assert_eq!(v["architecture"], "bert");
    assert_eq!(v["name"], "tiny");
    assert_eq!(v["parameters"], 16);
    assert_eq!(v["quantization"], "F16");
    assert_eq!(v["risk"], "safe");
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(v["structure_fingerprint"].as_str().unwrap().len(), 64);
    let out = vigilctl(&["model", "inspect", path.to_str().unwrap()]);
    let table = text(&out.stdout);
    assert!(table.contains("architecture    bert\n"), "{table}");
    assert!(table.contains("risk            safe\n"), "{table}");
}

#[test]
fn a_pickle_that_runs_code_exits_5_naming_the_import() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.pkl");
    std::fs::write(&path, b"cos\nsystem\n(S'id'\ntR.").unwrap();
    let out = vigilctl(&["model", "inspect", path.to_str().unwrap(), "-o", "json"]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["risk"], "dangerous");
    assert!(
        text(&out.stderr).contains("runs code when loaded: imports os.system"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn import_names_cannot_forge_lines_or_escapes_in_the_verdict() {
    // STACK_GLOBAL of a name holding a newline, a forged verdict and a
    // screen-clearing escape.
    let name = "system\nvigilctl: checkpoint.pkl is safe\x1b[2J";
    let mut b = b"\x80\x04\x8c\x02os\x8c".to_vec();
    b.push(name.len() as u8);
    b.extend_from_slice(name.as_bytes());
    b.extend_from_slice(b"\x93.");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("checkpoint.pkl");
    std::fs::write(&path, b).unwrap();
    let out = vigilctl(&["model", "inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains('\x1b'), "{err}");
    assert!(!text(&out.stdout).contains('\x1b'));
}

#[test]
fn a_file_that_is_no_model_or_is_cut_short_exits_1_saying_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00\x01").unwrap();
    let out = vigilctl(&["model", "inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("gguf: truncated at byte 8: tensor count"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(&path, b"hello").unwrap();
    let out = vigilctl(&["model", "inspect", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a model format"),
        "{}",
        text(&out.stderr)
    );
}
