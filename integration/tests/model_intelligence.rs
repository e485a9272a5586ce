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
    // No model_risk alert for a weights-only file.
    let alerts = h.cp.alerts().await;
    assert!(!alerts
        .iter()
        .any(|x| x.finding.as_ref().unwrap().signal() == SignalKind::ModelRisk));
}
