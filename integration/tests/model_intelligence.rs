//! Model intelligence end to end (issue #22): a real process opens model
//! files; the agent reads their headers (never their weights), hashes
//! them, and the alerts that reach the control plane and `vigilctl alerts`
//! say which model each is and whether it runs code on load. Runs as root.

use std::process::Command;

use vigil_integration::{privileged, python_opens, sha256_file, AgentHost};
use vigil_proto::types::v1::{Alert, ModelRisk, Severity, SignalKind};

fn signal_for(a: &Alert, signal: SignalKind, pid: u32) -> bool {
    let f = a.finding.as_ref().unwrap();
    f.signal() == signal && f.process.as_ref().unwrap().pid == pid
}

/// Runs a Python snippet (standard library only) with `args`.
fn python(script: &str, args: &[&std::path::Path]) {
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .status()
        .expect("python3 is installed");
    assert!(status.success(), "python3 -c {script}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booby_trapped_checkpoint_is_a_critical_alert_naming_its_import_and_digest() {
    if !privileged("a_booby_trapped_checkpoint_is_a_critical_alert_naming_its_import_and_digest") {
        return;
    }
    let h = AgentHost::start("model-intel").await;
    // Protocol 4: os.system is written as STACK_GLOBAL("posix", "system")
    // from memoised strings. Only opened here, never loaded.
    let evil = h.dir.join("pytorch_model.pth");
    python(
        "import os, pickle, sys\n\
         class Payload:\n    def __reduce__(self):\n        return (os.system, ('touch /tmp/vigil-pwned',))\n\
         open(sys.argv[1], 'wb').write(pickle.dumps({'state_dict': Payload()}, protocol=4))",
        &[&evil],
    );
    let pid = python_opens(&evil);
    let risk = h
        .alert("the model-risk alert", |a| {
            signal_for(a, SignalKind::ModelRisk, pid)
        })
        .await;
    let f = risk.finding.unwrap();
    assert_eq!(f.severity(), Severity::Critical);
    let m = f.file.unwrap().model.expect("the model's identity");
    assert_eq!(m.risk(), ModelRisk::Dangerous);
    assert_eq!(m.format, "pickle");
    assert_eq!(m.dangerous_imports, ["posix.system"]);
    assert_eq!(m.sha256, sha256_file(&evil));
    assert!(f.summary.contains("runs code when loaded"), "{}", f.summary);
    assert!(!std::path::Path::new("/tmp/vigil-pwned").exists());

    // The model-file alert of the same open carries the identity too,
    // and vigilctl shows it.
    let opened = h
        .alert("the model-file alert", |a| {
            signal_for(a, SignalKind::ModelFile, pid)
        })
        .await;
    let m = opened.finding.unwrap().file.unwrap().model.unwrap();
    assert_eq!(m.risk(), ModelRisk::Dangerous);
    let out =
        h.cp.vigilctl(&["alerts", "--signal", "model_risk", "-o", "table"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("risk=dangerous") && text.contains("imports=[posix.system]"),
        "{text}"
    );

    // The fleet's AI inventory has the model, known by its digest, with
    // its fingerprint and risk, and the interpreter that opened it.
    let digest = sha256_file(&evil);
    let out =
        h.cp.vigilctl(&["inventory", "list", "--kind", "model", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let item = items
        .iter()
        .find(|i| i["key"] == format!("sha256:{digest}"))
        .unwrap_or_else(|| panic!("the model in the inventory: {items:?}"));
    assert_eq!(item["model"]["risk"], "dangerous");
    assert_eq!(item["model"]["dangerous_imports"][0], "posix.system");
    assert_eq!(item["paths"][0], evil.to_str().unwrap());
    assert_eq!(item["approved"], false);

    // Exported as a CycloneDX 1.6 ML-BOM: the model is a
    // machine-learning-model with its sha256 and risk, and the document
    // is valid against the official schema.
    let bom = exported_ml_bom(&h);
    let component = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["hashes"][0]["content"] == digest.as_str())
        .expect("the model in the ML-BOM");
    assert_eq!(component["type"], "machine-learning-model");
    assert!(component["properties"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "vigil:model:dangerous_import" && p["value"] == "posix.system"));
    assert!(bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["type"] == "application" && c["name"].as_str().unwrap().contains("python")));

    // And as CSV, one row per item, with the digest and risk.
    let out = h.cp.vigilctl(&["inventory", "export", "--format", "csv"]);
    assert!(out.status.success());
    let csv = String::from_utf8(out.stdout).unwrap();
    assert!(csv.starts_with("\"kind\",\"name\",\"key\""), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.contains(&digest) && l.contains("posix.system") && l.contains("dangerous")),
        "{csv}"
    );
}

/// The inventory exported by `vigilctl inventory export --format
/// cyclonedx`, checked against the CycloneDX 1.6 schema.
fn exported_ml_bom(h: &AgentHost) -> serde_json::Value {
    let bom_file = h.dir.join("fleet.cdx.json");
    let out = h.cp.vigilctl(&[
        "inventory",
        "export",
        "--format",
        "cyclonedx",
        "--out",
        bom_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    validate_cyclonedx(&bom_file);
    serde_json::from_slice(&std::fs::read(&bom_file).unwrap()).unwrap()
}

/// Checks a CycloneDX document with cyclonedx-python-lib's strict
/// validator (CycloneDX 1.6 schema), installed by `make` into
/// .vigil/deps/scanners.
fn validate_cyclonedx(file: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let deps = root.join(".vigil/deps/scanners");
    if !deps.join("cyclonedx").is_dir() {
        let reason = format!(
            "cyclonedx-python-lib is not in {} (make test installs it)",
            deps.display()
        );
        if std::env::var("VIGIL_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
            panic!("{reason}, and CI forbids skipping");
        }
        eprintln!("SKIP the ML-BOM schema check: {reason}");
        return;
    }
    let out = Command::new("python3")
        .arg(root.join("integration/fixtures/validate_cyclonedx.py"))
        .arg(file)
        .env("PYTHONPATH", &deps)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weights_only_model_is_identified_and_a_requantized_copy_keeps_its_fingerprint() {
    if !privileged(
        "a_weights_only_model_is_identified_and_a_requantized_copy_keeps_its_fingerprint",
    ) {
        return;
    }
    let h = AgentHost::start("model-intel-safe").await;
    // The same two tensors, F32 and then F16 under another name.
    let write = "import json, struct, sys\n\
         dtype, size = sys.argv[2], {'F32': 4, 'F16': 2}[sys.argv[2]]\n\
         t = {'embed.weight': [64, 16], 'head.weight': [16, 8]}\n\
         header, off = {'__metadata__': {'model_type': 'tiny', 'name': sys.argv[3]}}, 0\n\
         for k, s in t.items():\n    n = s[0] * s[1] * size\n    header[k] = {'dtype': dtype, 'shape': s, 'data_offsets': [off, off + n]}\n    off += n\n\
         h = json.dumps(header).encode()\n\
         open(sys.argv[1], 'wb').write(struct.pack('<Q', len(h)) + h + bytes(off))";
    let a = h.dir.join("model.safetensors");
    let b = h.dir.join("renamed-f16.safetensors");
    let run = |path: &std::path::Path, dtype: &str, name: &str| {
        let status = Command::new("python3")
            .args(["-c", write])
            .arg(path)
            .args([dtype, name])
            .status()
            .unwrap();
        assert!(status.success());
    };
    run(&a, "F32", "tiny-original");
    run(&b, "F16", "someone-elses");
    let mut models = Vec::new();
    for path in [&a, &b] {
        let pid = python_opens(path);
        let alert = h
            .alert("the model-file alert", |x| {
                signal_for(x, SignalKind::ModelFile, pid)
            })
            .await;
        let m = alert.finding.unwrap().file.unwrap().model.unwrap();
        assert_eq!(m.format, "safetensors");
        assert_eq!(m.architecture, "tiny");
        assert_eq!(m.parameters, 64 * 16 + 16 * 8);
        assert_eq!(m.risk(), ModelRisk::Safe);
        assert_eq!(m.sha256, sha256_file(path));
        models.push(m);
    }
    assert_eq!(models[0].quantization, "F32");
    assert_eq!(models[1].quantization, "F16");
    assert_ne!(models[0].sha256, models[1].sha256);
    assert_eq!(
        models[0].structure_fingerprint, models[1].structure_fingerprint,
        "re-quantized and renamed: the same structure"
    );
    // In the inventory and its ML-BOM: two models (two digests), one
    // structure fingerprint.
    let bom = exported_ml_bom(&h);
    for m in &models {
        let component = bom["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["hashes"][0]["content"] == m.sha256.as_str())
            .expect("each model in the ML-BOM");
        assert_eq!(component["type"], "machine-learning-model");
        assert_eq!(
            component["modelCard"]["modelParameters"]["architectureFamily"],
            "tiny"
        );
        assert!(component["properties"].as_array().unwrap().iter().any(|p| {
            p["name"] == "vigil:model:structure_fingerprint"
                && p["value"] == m.structure_fingerprint.as_str()
        }));
    }

    // No model_risk alert for a weights-only file.
    let alerts = h.cp.alerts().await;
    assert!(!alerts
        .iter()
        .any(|x| x.finding.as_ref().unwrap().signal() == SignalKind::ModelRisk));
}

/// Pickles by name (`.pkl`, `.joblib`) and protocol 0 checkpoints (no magic
/// to sniff) are examined when opened: one that runs code is a Critical
/// alert; a pickle of plain data, its benign twin, raises nothing (a
/// `.pkl` is data as often as a model).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pickles_by_name_and_in_protocol_0_are_examined_and_data_pickles_stay_silent() {
    if !privileged("pickles_by_name_and_in_protocol_0_are_examined_and_data_pickles_stay_silent") {
        return;
    }
    let h = AgentHost::start("model-intel-pkl").await;
    let data = h.dir.join("features.pkl");
    python(
        "import pickle, sys\n\
         open(sys.argv[1], 'wb').write(pickle.dumps({'rows': list(range(100)), 'name': 'x'}, protocol=0))",
        &[&data],
    );
    let benign_pid = python_opens(&data);
    let mut evil_pids = Vec::new();
    for name in ["classifier.joblib", "finetuned.pt"] {
        let evil = h.dir.join(name);
        std::fs::write(&evil, b"cos\nsystem\n(S'touch /tmp/vigil-pwned'\ntR.").unwrap();
        let pid = python_opens(&evil);
        let risk = h
            .alert("the model-risk alert", |a| {
                signal_for(a, SignalKind::ModelRisk, pid)
            })
            .await;
        let f = risk.finding.unwrap();
        assert_eq!(f.severity(), Severity::Critical, "{name}");
        let m = f.file.unwrap().model.unwrap();
        assert_eq!(m.dangerous_imports, ["os.system"], "{name}");
        evil_pids.push(pid);
    }
    let alerts = h.cp.alerts().await;
    let from = |pid: u32| {
        alerts
            .iter()
            .filter(|a| a.finding.as_ref().unwrap().process.as_ref().unwrap().pid == pid)
            .count()
    };
    assert_eq!(from(benign_pid), 0, "a data pickle raised an alert");
    // The .joblib is no model file by name: only its risk is an alert.
    assert_eq!(from(evil_pids[0]), 1);
}

/// Names are hints, content decides: a `.pt` that is torch.save's zip
/// (first entry `<archive>/data.pkl`) is a model file; a plain zip under
/// the same kind of name, its benign twin, is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pt_is_a_model_only_when_it_is_torch_saves_zip() {
    if !privileged("a_pt_is_a_model_only_when_it_is_torch_saves_zip") {
        return;
    }
    let h = AgentHost::start("model-intel-zip").await;
    let plain = h.dir.join("notes.pt");
    let torch = h.dir.join("checkpoint.pt");
    python(
        "import sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr('notes.txt', 'hello')\n\
         with zipfile.ZipFile(sys.argv[2], 'w') as z:\n    z.writestr('archive/data.pkl', b'\\x80\\x02}q\\x00.')\n    z.writestr('archive/byteorder', 'little')",
        &[&plain, &torch],
    );
    let plain_pid = python_opens(&plain);
    let torch_pid = python_opens(&torch);
    let alert = h
        .alert("the torch checkpoint's model-file alert", |a| {
            signal_for(a, SignalKind::ModelFile, torch_pid)
        })
        .await;
    let m = alert.finding.unwrap().file.unwrap().model.unwrap();
    assert_eq!(m.format, "pytorch-zip");
    assert_eq!(m.risk(), ModelRisk::Safe);
    let alerts = h.cp.alerts().await;
    assert!(
        !alerts
            .iter()
            .any(|a| a.finding.as_ref().unwrap().process.as_ref().unwrap().pid == plain_pid),
        "a plain zip named .pt raised an alert"
    );
}
