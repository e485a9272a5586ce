//! The model inspector side by side with picklescan and modelscan (from
//! PyPI; `make` installs them into .vigil/deps/scanners) on the same files
//! (integration/fixtures/pickle_corpus.py): vigil flags every file either
//! of them flags, flags no benign checkpoint, and the test prints any file
//! vigil flags that they miss.

use std::path::{Path, PathBuf};
use std::process::Command;

use vigil_modelinspect::{inspect, Budget, Risk};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The scanners' directory, or None (with the reason printed) when `make`
/// has not installed them; CI (VIGIL_REQUIRE_PRIVILEGED=1) must have them.
fn scanners() -> Option<PathBuf> {
    let dir = root().join(".vigil/deps/scanners");
    if dir.join("picklescan").is_dir() && dir.join("modelscan").is_dir() {
        return Some(dir);
    }
    let reason = format!(
        "skipped: picklescan and modelscan are not in {} (make test installs them)",
        dir.display()
    );
    if std::env::var("VIGIL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{reason}, and CI forbids skipping");
    }
    eprintln!("SKIP {reason}");
    None
}

/// Writes the corpus into `dir`: (name, whether it is malicious).
pub fn corpus(dir: &Path) -> Vec<(String, bool)> {
    let out = Command::new("python3")
        .arg(root().join("integration/fixtures/pickle_corpus.py"))
        .arg(dir)
        .output()
        .expect("python3 is installed");
    assert!(
        out.status.success(),
        "pickle_corpus.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (kind, name) = l.split_once(' ').unwrap();
            (name.to_string(), kind == "malicious")
        })
        .collect()
}

fn picklescan_flags(scanners: &Path, file: &Path) -> bool {
    let out = Command::new("python3")
        .args(["-m", "picklescan", "-p"])
        .arg(file)
        .env("PYTHONPATH", scanners)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let infected = text
        .lines()
        .find_map(|l| l.strip_prefix("Infected files: "))
        .unwrap_or_else(|| {
            panic!(
                "picklescan said: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    infected.trim() != "0"
}

fn modelscan_flags(scanners: &Path, file: &Path) -> bool {
    let out = Command::new("python3")
        .arg(scanners.join("bin/modelscan"))
        .arg("-p")
        .arg(file)
        .env("PYTHONPATH", scanners)
        .output()
        .unwrap();
    // modelscan: 0 no issues, 1 issues found, 2+ errors.
    match out.status.code() {
        Some(0) => false,
        Some(1) => true,
        other => panic!(
            "modelscan failed ({other:?}) on {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn vigil_flags_every_pickle_picklescan_or_modelscan_flags_and_no_benign_checkpoint() {
    let Some(scanners) = scanners() else { return };
    let dir = tempfile::tempdir().unwrap();
    let files = corpus(dir.path());
    assert!(files.len() >= 20, "{files:?}");
    let mut missed_by_them = Vec::new();
    let mut table = String::new();
    for (name, malicious) in &files {
        let path = dir.path().join(name);
        let report = inspect(
            std::fs::File::open(&path).unwrap(),
            Budget::default(),
            Some(name),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let vigil = report.risk == Risk::Dangerous;
        let picklescan = picklescan_flags(&scanners, &path);
        let modelscan = modelscan_flags(&scanners, &path);
        table.push_str(&format!(
            "{name:<28} malicious={malicious:<5} vigil={:<10} picklescan={picklescan:<5} modelscan={modelscan}\n",
            report.risk.as_str()
        ));
        if (picklescan || modelscan) && !vigil {
            panic!("{name}: flagged by picklescan={picklescan} modelscan={modelscan}, not by vigil ({:?})\n{table}", report.risk_reasons);
        }
        assert_eq!(
            vigil, *malicious,
            "{name}: {:?}\n{table}",
            report.risk_reasons
        );
        if !malicious {
            assert_eq!(report.risk, Risk::Safe, "{name}: {:?}", report.risk_reasons);
        }
        if vigil && !(picklescan && modelscan) {
            missed_by_them.push(format!(
                "{name} (picklescan {}, modelscan {})",
                if picklescan { "flags it" } else { "misses it" },
                if modelscan { "flags it" } else { "misses it" }
            ));
        }
    }
    eprintln!("{table}");
    eprintln!(
        "flagged by vigil, missed by picklescan or modelscan: {}",
        if missed_by_them.is_empty() {
            "none".to_string()
        } else {
            missed_by_them.join(", ")
        }
    );
}
