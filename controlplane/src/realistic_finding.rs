//! Test support: a finding shaped like a real one (a python process
//! serving a model file, its real command line, digest, cgroup and
//! summary), shared by the by-hand speed measurements of the SIEM export.

use vigil_domain::{Ancestor, FileObject, Finding, ProcessInfo, Severity, SignalKind};

/// The model file a realistic finding names.
pub const MODEL_PATH: &str = "/srv/models/llama-3-8b-instruct.safetensors";

/// A model-file finding of python3 (pid 77) serving [`MODEL_PATH`] with
/// vLLM, as seq `seq`.
pub fn realistic_model_finding(seq: u64) -> Finding {
    Finding {
        seq,
        rule_id: "vigil.builtin.model-file-unapproved".into(),
        severity: Severity::High,
        signal: SignalKind::ModelFile,
        observed_at_unix_nanos: 1_765_000_000_000_000_000 + seq as i64,
        process: ProcessInfo {
            pid: 77,
            ppid: 1,
            uid: 1000,
            exe: "/usr/bin/python3".into(),
            argv: [
                "python3",
                "-m",
                "vllm.entrypoints.openai.api_server",
                "--model",
                MODEL_PATH,
                "--port",
                "8000",
            ]
            .map(String::from)
            .to_vec(),
            comm: "python3".into(),
            cgroup_id: 4242,
            mnt_ns: 4026531840,
            exe_sha256: "ab".repeat(32),
            ns_pid: 0,
            cgroup_path: "/system.slice/inference.service".into(),
            ancestors: vec![Ancestor::new(1, "/usr/lib/systemd/systemd", "systemd")],
        },
        file: Some(FileObject::at(MODEL_PATH)),
        net: None,
        gpu: None,
        action: String::new(),
        summary: format!(
            "python3 (pid 77) opened model file {MODEL_PATH}; no approved workload covers it"
        ),
    }
}
