//! What the policy and respond tests set up: a policy source, a signed
//! bundle file, a model file, and a copy of python named like an offender.

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_policy::{PolicySource, SigningKey};

/// A python program: opens the file named by its first argument, reads its
/// magic, and holds it open for a minute.
pub const HOLD_MODEL_OPEN: &str =
    "import sys, time\nopen(sys.argv[1], 'rb').read(4)\ntime.sleep(60)\n";

/// A policy source of one file, `rules.yaml`, holding `rules`.
pub fn policy_source(rules: &str) -> PolicySource {
    [("rules.yaml".to_string(), rules.to_string())].into()
}

/// `rules` signed by `key` as `version`, written as a bundle to `path`.
pub fn write_signed_bundle(path: &Path, key: &SigningKey, version: u64, rules: &str) {
    std::fs::write(path, key.sign(version, policy_source(rules)).to_json()).unwrap();
}

/// Writes a GGUF header (a model file by its magic) to `path`.
pub fn write_gguf(path: &Path) {
    std::fs::write(
        path,
        b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    )
    .unwrap();
}

/// A copy of the real python interpreter under `name` in `dir`.
pub fn python_copy(dir: &Path, name: &str) -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .unwrap();
    let real = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let copy = dir.join(name);
    std::fs::copy(real, &copy).unwrap();
    copy
}
