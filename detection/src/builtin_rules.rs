//! The built-in rules: one per signal, each "this AI evidence comes from a
//! process that is not an approved workload". (The policy language replaces
//! them with rules from signed bundles; these stay as its default pack.)

use crate::model_file::{
    classify_model_path, may_be_pickle, sniff_model_format, sniff_unnamed_model_format,
    ModelPathClass, MODEL_FILE_RULE_ID,
};
use crate::signal_lists::{ai_api_host, ai_serving_port, is_ai_runtime_library, is_gpu_device};
use vigil_domain::{
    ApprovedWorkloads, FileObject, Finding, GpuObject, NetDirection, NetObject, ProcessInfo,
    Severity, SignalKind,
};

pub const AI_RUNTIME_RULE_ID: &str = "vigil.builtin.ai-runtime-unapproved";
pub const GPU_DEVICE_RULE_ID: &str = "vigil.builtin.gpu-device-unapproved";
pub const AI_EGRESS_RULE_ID: &str = "vigil.builtin.ai-egress-unapproved";
pub const AI_SERVING_RULE_ID: &str = "vigil.builtin.ai-serving-unapproved";
pub const GPU_USE_RULE_ID: &str = "vigil.builtin.gpu-use-unapproved";

/// What a sensor saw a process do, in domain terms. It owns its data: an
/// observation may wait (off the event loop) for the executable's or the
/// model's digest before it is evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Opened a file; `head` is its first bytes, None when unreadable.
    FileOpened { path: String, head: Option<Vec<u8>> },
    /// Mapped `length` bytes of a file read-only from its start (how
    /// weights are loaded with mmap); `head` is its first bytes.
    FileMapped {
        path: String,
        head: Option<Vec<u8>>,
        length: u64,
    },
    /// Read `bytes` bytes of a file from its start with read() or pread(),
    /// the first of which start like a model format (the kernel's check);
    /// `head` is its first bytes as the agent read them again.
    FileRead {
        path: String,
        head: Option<Vec<u8>>,
        bytes: u64,
    },
    /// Opened (or tried to open) an accelerator device node.
    DeviceOpened { path: String, failed: bool },
    /// Mapped a library executable; `name` is its file name.
    LibraryMapped { name: String, path: String },
    /// Mapped executable a file whose ELF content is an AI runtime's
    /// (`identify_runtime_library`), whatever its name: `runtime` names it,
    /// `evidence` says how it was known.
    RuntimeLibraryIdentified {
        path: String,
        runtime: String,
        evidence: String,
    },
    /// Started (exec) a program known as an AI runtime or model server by
    /// its name (`ai_runtime_binary`): `runtime` is the list's entry.
    RuntimeStarted { exe: String, runtime: String },
    /// Connected out over TCP.
    Connected { address: String, port: u16 },
    /// Holds memory or compute on a GPU (NVML); `device_opened` when the
    /// sensors also saw it open a GPU device node.
    GpuInUse { gpu: GpuObject, device_opened: bool },
    /// Asked the DNS server `server` (address:port) for `name`.
    DnsQuery { name: String, server: String },
    /// Opened TLS to `address`:`port` naming the server `name` in its
    /// ClientHello (SNI), whatever resolved it.
    TlsServerName {
        name: String,
        address: String,
        port: u16,
    },
    /// Listens on a TCP port; `api` when it answered a model-serving API's
    /// probe.
    Listening {
        address: String,
        port: u16,
        api: Option<crate::ServingApi>,
    },
}

impl Observation {
    /// The file the observation is about, where it is one a model-scoped
    /// approval may depend on (an opened or mapped file).
    pub fn model_candidate_path(&self) -> Option<&str> {
        match self {
            Observation::FileOpened { path, .. }
            | Observation::FileMapped { path, .. }
            | Observation::FileRead { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// Whether an opened or mapped file is model weights by its name or, where
/// the name needs it, its leading bytes: worth reading its header and
/// hashing, whoever opened it.
pub fn is_model_content(obs: &Observation) -> bool {
    match obs {
        Observation::FileOpened { path, head } => match classify_model_path(path) {
            ModelPathClass::ModelByName => true,
            // A pickle of protocol 0 or 1 has no magic to sniff: whatever
            // may be one is walked (and cached per file version).
            ModelPathClass::NeedsContent | ModelPathClass::PickleByName => head
                .as_deref()
                .is_some_and(|h| sniff_model_format(h).is_some() || may_be_pickle(h)),
            ModelPathClass::NotModel => false,
        },
        Observation::FileMapped { path, head, .. } | Observation::FileRead { path, head, .. } => {
            classify_model_path(path) != ModelPathClass::NotModel
                || head
                    .as_deref()
                    .and_then(sniff_unnamed_model_format)
                    .is_some()
        }
        _ => false,
    }
}

pub const MODEL_RISK_RULE_ID: &str = "vigil.builtin.model-file-runs-code";

/// The finding for a model file that runs code when loaded (a pickle
/// importing os.system, subprocess, eval...), opened by `process`: made
/// whoever the process is, approved or not, since loading it runs the
/// attacker's code inside the approved workload.
pub fn model_runs_code(
    process: &ProcessInfo,
    path: &str,
    model: vigil_domain::ModelIdentity,
    observed_at_unix_nanos: i64,
) -> Finding {
    let imports = if model.dangerous_imports.is_empty() {
        "a dangerous import".to_string()
    } else {
        model.dangerous_imports.join(", ")
    };
    Finding {
        seq: 0,
        rule_id: MODEL_RISK_RULE_ID.into(),
        severity: Severity::Critical,
        signal: SignalKind::ModelRisk,
        observed_at_unix_nanos,
        summary: format!(
            "model file {path} ({}) runs code when loaded: it imports {imports}; opened by {} (pid {})",
            model.format,
            process.name(),
            process.pid
        ),
        process: process.clone(),
        file: Some(FileObject {
            path: path.to_string(),
            model: Some(Box::new(model)),
        }),
        net: None,
        gpu: None,
        action: String::new(),
    }
}

#[derive(Debug, Clone, Default)]
pub struct BuiltinRules {
    pub approved: ApprovedWorkloads,
}

struct Verdict {
    rule_id: &'static str,
    signal: SignalKind,
    severity: Severity,
    file: Option<FileObject>,
    net: Option<NetObject>,
    gpu: Option<GpuObject>,
    summary: String,
}

/// A file named (or, where the name needs it, shaped) like a model, opened.
fn model_file_opened(path: &str, head: Option<&[u8]>, who: &str) -> Option<Verdict> {
    let format = head.and_then(sniff_model_format);
    match classify_model_path(path) {
        // Data as often as a model: a finding only if it runs code
        // (`model_runs_code`, after it is examined).
        ModelPathClass::NotModel | ModelPathClass::PickleByName => return None,
        // A readable file that does not look like a model is not one.
        ModelPathClass::NeedsContent if head.is_some() && format.is_none() => return None,
        ModelPathClass::NeedsContent | ModelPathClass::ModelByName => {}
    }
    let format = format
        .map(|f| format!(" ({})", f.as_str()))
        .unwrap_or_default();
    Some(Verdict {
        rule_id: MODEL_FILE_RULE_ID,
        signal: SignalKind::ModelFile,
        severity: Severity::High,
        file: file(path),
        net: None,
        gpu: None,
        summary: format!("model file {path}{format} opened by {who}"),
    })
}

/// A file mapped or read from its start: judged like an open of it when
/// it is named like a model, else by its content alone; `done` says what
/// `who` did ("read", "32.0 MiB mapped").
fn model_content(path: &str, head: Option<&[u8]>, who: &str, done: &str) -> Option<Verdict> {
    if classify_model_path(path) != ModelPathClass::NotModel {
        return model_file_opened(path, head, who);
    }
    let format = head.and_then(sniff_unnamed_model_format)?;
    Some(Verdict {
        rule_id: MODEL_FILE_RULE_ID,
        signal: SignalKind::ModelFile,
        severity: Severity::High,
        file: file(path),
        net: None,
        gpu: None,
        summary: format!(
            "{} model weights in {path} (a name that does not say so), {done} by {who}",
            format.as_str()
        ),
    })
}

fn file(path: &str) -> Option<FileObject> {
    Some(FileObject::at(path))
}

impl BuiltinRules {
    pub fn new(approved: ApprovedWorkloads) -> Self {
        Self { approved }
    }

    /// Replaces the approved-workload records from the control plane.
    pub fn set_workload_records(
        &mut self,
        records: impl IntoIterator<Item = vigil_domain::WorkloadApproval>,
    ) {
        self.approved.set_records(records);
    }

    /// Whether `process` runs a workload approved to use this GPU (its
    /// digest must be known).
    pub fn approves_on_gpu(&self, process: &ProcessInfo, gpu_uuid: &str) -> bool {
        self.approved.approves_in(
            process,
            vigil_domain::ApprovalScope {
                gpu_uuid: Some(gpu_uuid),
                ..Default::default()
            },
        )
    }

    /// The finding `obs` makes for `process`, if any. `process.exe_sha256`
    /// must be filled in for approvals to apply.
    pub fn evaluate(
        &self,
        process: &ProcessInfo,
        obs: &Observation,
        observed_at_unix_nanos: i64,
    ) -> Option<Finding> {
        self.evaluate_with_model(process, obs, observed_at_unix_nanos, None)
    }

    /// Whether approving `process` for a model file depends on the file's
    /// digest (an approval for its executable lists the models it may load).
    pub fn needs_model_digest(&self, process: &ProcessInfo) -> bool {
        self.approved.needs_model_digest(process)
    }

    /// `evaluate`, with the model file's digest for approvals that list models.
    pub fn evaluate_with_model(
        &self,
        process: &ProcessInfo,
        obs: &Observation,
        observed_at_unix_nanos: i64,
        model_sha256: Option<&str>,
    ) -> Option<Finding> {
        let who = format!(
            "unapproved process {} (pid {})",
            process.name(),
            process.pid
        );
        let who_cap = format!(
            "Unapproved process {} (pid {})",
            process.name(),
            process.pid
        );
        let v = match obs {
            Observation::FileOpened { path, head } => {
                model_file_opened(path, head.as_deref(), &who)?
            }
            Observation::FileMapped { path, head, length } => {
                let mib = *length as f64 / (1024.0 * 1024.0);
                model_content(path, head.as_deref(), &who, &format!("{mib:.1} MiB mapped"))?
            }
            Observation::FileRead { path, head, .. } => {
                model_content(path, head.as_deref(), &who, "read")?
            }
            Observation::DeviceOpened { path, failed } => {
                if !is_gpu_device(path) {
                    return None;
                }
                let how = if *failed { "tried to open" } else { "opened" };
                Verdict {
                    rule_id: GPU_DEVICE_RULE_ID,
                    signal: SignalKind::GpuDevice,
                    severity: Severity::Medium,
                    file: file(path),
                    net: None,
                    gpu: None,
                    summary: format!("{who_cap} {how} accelerator device {path}"),
                }
            }
            Observation::LibraryMapped { name, path } => {
                if !is_ai_runtime_library(name) {
                    return None;
                }
                Verdict {
                    rule_id: AI_RUNTIME_RULE_ID,
                    signal: SignalKind::AiRuntime,
                    severity: Severity::Medium,
                    file: file(path),
                    net: None,
                    gpu: None,
                    summary: format!("AI runtime library {name} loaded by {who}"),
                }
            }
            Observation::RuntimeLibraryIdentified {
                path,
                runtime,
                evidence,
            } => Verdict {
                rule_id: AI_RUNTIME_RULE_ID,
                signal: SignalKind::AiRuntime,
                severity: Severity::Medium,
                file: file(path),
                net: None,
                gpu: None,
                summary: format!(
                    "AI runtime library {runtime} ({evidence}) loaded from {path} by {who}"
                ),
            },
            Observation::RuntimeStarted { exe, runtime } => Verdict {
                rule_id: AI_RUNTIME_RULE_ID,
                signal: SignalKind::AiRuntime,
                severity: Severity::Medium,
                file: file(exe),
                net: None,
                gpu: None,
                summary: format!("AI runtime {runtime} ({exe}) started by {who}"),
            },
            Observation::GpuInUse { gpu, device_opened } => {
                let memory = match gpu.used_memory_bytes {
                    Some(b) => format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0)),
                    None => "memory not reported".to_string(),
                };
                let sm = gpu
                    .sm_util_percent
                    .map(|p| format!(", {p}% SM"))
                    .unwrap_or_default();
                let node = if *device_opened {
                    ""
                } else {
                    " (no GPU device open seen by the sensors)"
                };
                Verdict {
                    rule_id: GPU_USE_RULE_ID,
                    signal: SignalKind::GpuUse,
                    severity: Severity::High,
                    file: None,
                    net: None,
                    gpu: Some(gpu.clone()),
                    summary: format!(
                        "{who_cap} uses GPU {} {} ({}, {memory}{sm}){node}",
                        gpu.index,
                        gpu.uuid,
                        gpu.context.as_str()
                    ),
                }
            }
            Observation::TlsServerName {
                name,
                address,
                port,
            } => {
                let pattern = ai_api_host(name)?;
                Verdict {
                    rule_id: AI_EGRESS_RULE_ID,
                    signal: SignalKind::AiEgress,
                    severity: Severity::Medium,
                    file: None,
                    net: Some(NetObject {
                        direction: NetDirection::Connect,
                        address: address.clone(),
                        port: *port,
                        host: name.clone(),
                    }),
                    gpu: None,
                    summary: format!(
                        "{who_cap} opened TLS to AI API host {name} (list entry {pattern}; the server name in its ClientHello) at {address}:{port}"
                    ),
                }
            }
            Observation::DnsQuery { name, server } => {
                let pattern = ai_api_host(name)?;
                let (address, port) = match server.rsplit_once(':') {
                    Some((a, p)) => (a.trim_matches(['[', ']']), p.parse().unwrap_or(53)),
                    None => (server.as_str(), 53),
                };
                Verdict {
                    rule_id: AI_EGRESS_RULE_ID,
                    signal: SignalKind::AiEgress,
                    severity: Severity::Medium,
                    file: None,
                    net: Some(NetObject {
                        direction: NetDirection::DnsQuery,
                        address: address.to_string(),
                        port,
                        host: name.to_string(),
                    }),
                    gpu: None,
                    summary: format!(
                        "{who_cap} looked up AI API host {name} (list entry {pattern}) via DNS server {server}"
                    ),
                }
            }
            Observation::Connected { address, port } => {
                let (port, server) = (*port, ai_serving_port(*port)?);
                Verdict {
                    rule_id: AI_EGRESS_RULE_ID,
                    signal: SignalKind::AiEgress,
                    severity: Severity::Medium,
                    file: None,
                    net: Some(NetObject {
                        direction: NetDirection::Connect,
                        address: address.to_string(),
                        port,
                        host: String::new(),
                    }),
                    gpu: None,
                    summary: format!(
                        "{who_cap} connected to {server} model server port {address}:{port}"
                    ),
                }
            }
            Observation::Listening { address, port, api } => {
                let port = *port;
                let what = match (ai_serving_port(port), api) {
                    (_, Some(api)) => format!("{} on port", api.describe()),
                    (Some(server), None) => format!("{server} model server port"),
                    (None, None) => return None,
                };
                Verdict {
                    rule_id: AI_SERVING_RULE_ID,
                    signal: SignalKind::AiServing,
                    severity: Severity::High,
                    file: None,
                    net: Some(NetObject {
                        direction: NetDirection::Listen,
                        address: address.to_string(),
                        port,
                        host: String::new(),
                    }),
                    gpu: None,
                    summary: format!("{who_cap} serves {what} {address}:{port}"),
                }
            }
        };
        let scope = vigil_domain::ApprovalScope {
            gpu_uuid: v.gpu.as_ref().map(|g| g.uuid.as_str()),
            model_sha256,
            is_model: v.signal == SignalKind::ModelFile,
        };
        if self.approved.approves_in(process, scope) {
            return None;
        }
        Some(Finding {
            seq: 0,
            rule_id: v.rule_id.to_string(),
            severity: v.severity,
            signal: v.signal,
            observed_at_unix_nanos,
            process: process.clone(),
            file: v.file,
            net: v.net,
            gpu: v.gpu,
            action: String::new(),
            summary: v.summary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python() -> ProcessInfo {
        ProcessInfo {
            pid: 42,
            exe: "/usr/bin/python3.11".into(),
            argv: vec!["python3".into(), "-c".into(), "pass".into()],
            comm: "python3".into(),
            exe_sha256: "AB12".into(),
            ..Default::default()
        }
    }

    fn open(path: &str, head: Option<&[u8]>) -> Observation {
        Observation::FileOpened {
            path: path.into(),
            head: head.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn unapproved_process_opening_a_model_file_is_a_high_finding() {
        let rules = BuiltinRules::default();
        let f = rules
            .evaluate(&python(), &open("/tmp/m/model.onnx", Some(b"")), 7)
            .unwrap();
        assert_eq!(f.rule_id, MODEL_FILE_RULE_ID);
        assert_eq!(f.severity, Severity::High);
        assert_eq!(f.signal, SignalKind::ModelFile);
        assert_eq!(f.file.unwrap().path, "/tmp/m/model.onnx");
        assert_eq!(f.process.pid, 42);
        assert!(f.summary.contains("python3.11"), "{}", f.summary);
    }

    #[test]
    fn an_approved_exe_digest_suppresses_every_signal() {
        let rules = BuiltinRules::new(ApprovedWorkloads::new(["ab12"]));
        let p = python();
        assert!(rules
            .evaluate(&p, &open("/tmp/m/model.onnx", None), 7)
            .is_none());
        assert!(rules
            .evaluate(
                &p,
                &Observation::DeviceOpened {
                    path: "/dev/nvidia0".into(),
                    failed: false
                },
                7
            )
            .is_none());
        assert!(rules
            .evaluate(
                &p,
                &Observation::Connected {
                    address: "127.0.0.1".into(),
                    port: 11434
                },
                7
            )
            .is_none());
        let mut other = python();
        other.exe_sha256 = "cd34".into();
        assert!(rules
            .evaluate(&other, &open("/tmp/m/model.onnx", None), 7)
            .is_some());
        other.exe_sha256.clear();
        assert!(rules
            .evaluate(&other, &open("/tmp/m/model.onnx", None), 7)
            .is_some());
    }

    #[test]
    fn python_path_files_are_not_pytorch_checkpoints() {
        let rules = BuiltinRules::default();
        let site = "/usr/lib/python3/site-packages/distutils-precedence.pth";
        assert!(rules
            .evaluate(
                &python(),
                &open(site, Some(b"import os; var = 'SETUPTOOLS")),
                7
            )
            .is_none());
        let mut torch_zip = b"PK\x03\x04".to_vec();
        torch_zip.extend_from_slice(&[0; 22]);
        torch_zip.extend_from_slice(&16u16.to_le_bytes());
        torch_zip.extend_from_slice(&[0; 2]);
        torch_zip.extend_from_slice(b"archive/data.pkl");
        assert!(rules
            .evaluate(&python(), &open("/m/ckpt.pth", Some(&torch_zip)), 7)
            .is_some());
        // Names are hints: a zip that is not torch.save's is no checkpoint.
        assert!(rules
            .evaluate(
                &python(),
                &open("/m/ckpt.pth", Some(b"PK\x03\x04\x00\x00")),
                7
            )
            .is_none());
        assert!(rules
            .evaluate(&python(), &open("/m/old.pt", Some(b"\x80\x02\x8a\x0a")), 7)
            .is_some());
        assert!(rules
            .evaluate(&python(), &open("/m/gone.pt", None), 7)
            .is_some());
        assert!(rules
            .evaluate(&python(), &open("/etc/passwd", None), 7)
            .is_none());
    }

    #[test]
    fn an_observation_kept_for_later_evaluates_the_same() {
        let r = BuiltinRules::default();
        let head = b"GGUF\x03\x00\x00\x00".to_vec();
        let obs = Observation::FileOpened {
            path: "/m/x.gguf".into(),
            head: Some(head),
        };
        let kept = obs.clone();
        let now = r.evaluate(&python(), &obs, 1);
        assert!(now.is_some());
        assert_eq!(now, r.evaluate(&python(), &kept, 1));
    }

    #[test]
    fn device_library_and_network_signals() {
        let r = BuiltinRules::default();
        let p = python();
        let f = r
            .evaluate(
                &p,
                &Observation::DeviceOpened {
                    path: "/dev/nvidia0".into(),
                    failed: true,
                },
                1,
            )
            .unwrap();
        assert_eq!(f.signal, SignalKind::GpuDevice);
        assert!(f.summary.contains("tried to open"));
        assert!(r
            .evaluate(
                &p,
                &Observation::DeviceOpened {
                    path: "/dev/null".into(),
                    failed: false
                },
                1
            )
            .is_none());

        let lib = Observation::LibraryMapped {
            name: "libonnxruntime.so.1.17".into(),
            path: "/opt/ort/lib/libonnxruntime.so.1.17".into(),
        };
        let f = r.evaluate(&p, &lib, 1).unwrap();
        assert_eq!(f.signal, SignalKind::AiRuntime);
        assert_eq!(f.file.unwrap().path, "/opt/ort/lib/libonnxruntime.so.1.17");
        assert!(r
            .evaluate(
                &p,
                &Observation::LibraryMapped {
                    name: "libc.so.6".into(),
                    path: "/lib/libc.so.6".into()
                },
                1
            )
            .is_none());

        let f = r
            .evaluate(
                &p,
                &Observation::Connected {
                    address: "127.0.0.1".into(),
                    port: 11434,
                },
                1,
            )
            .unwrap();
        assert_eq!(f.signal, SignalKind::AiEgress);
        assert_eq!(f.object(), "connect 127.0.0.1:11434");
        assert!(r
            .evaluate(
                &p,
                &Observation::Connected {
                    address: "10.0.0.1".into(),
                    port: 443
                },
                1
            )
            .is_none());

        let listen = |port, api| Observation::Listening {
            address: "0.0.0.0".into(),
            port,
            api,
        };
        assert_eq!(
            r.evaluate(&p, &listen(11434, None), 1).unwrap().signal,
            SignalKind::AiServing
        );
        assert!(r.evaluate(&p, &listen(8080, None), 1).is_none());
        let f = r
            .evaluate(&p, &listen(8080, Some(crate::ServingApi::OpenAi)), 1)
            .unwrap();
        assert!(f.summary.contains("OpenAI-style"), "{}", f.summary);
        let f = r
            .evaluate(&p, &listen(31337, Some(crate::ServingApi::KServeV2)), 1)
            .unwrap();
        assert!(f.summary.contains("KServe v2"), "{}", f.summary);
    }

    #[test]
    fn a_large_mapping_is_a_model_by_content_whatever_its_name() {
        let rules = BuiltinRules::default();
        let gguf = b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        let mapped = |path: &str, head: &[u8]| Observation::FileMapped {
            path: path.into(),
            head: Some(head.to_vec()),
            length: 32 << 20,
        };
        let f = rules
            .evaluate(&python(), &mapped("/var/tmp/cache.dat", gguf), 1)
            .unwrap();
        assert_eq!(f.signal, SignalKind::ModelFile);
        assert_eq!(f.file.unwrap().path, "/var/tmp/cache.dat");
        assert!(f.summary.contains("gguf model weights"), "{}", f.summary);
        assert!(f.summary.contains("32.0 MiB"), "{}", f.summary);
        // A large library or database mapped: nothing.
        assert!(rules
            .evaluate(
                &python(),
                &mapped("/usr/lib/libfoo.so", b"\x7fELF\x02\x01\x01\x00"),
                1
            )
            .is_none());
        // Bytes that only start like ONNX need the name.
        assert!(rules
            .evaluate(&python(), &mapped("/data/blob", b"\x08\x07\x12\x04abcd"), 1)
            .is_none());
        assert!(rules
            .evaluate(
                &python(),
                &mapped("/data/m.onnx", b"\x08\x07\x12\x04abcd"),
                1
            )
            .is_some());
        let kept = mapped("/x/cache.dat", gguf);
        assert_eq!(
            rules.evaluate(&python(), &kept.clone(), 1),
            rules.evaluate(&python(), &kept, 1)
        );
    }

    #[test]
    fn a_file_read_from_its_start_is_a_model_by_content_whatever_its_name() {
        let rules = BuiltinRules::default();
        let read = |path: &str, head: &[u8]| Observation::FileRead {
            path: path.into(),
            head: Some(head.to_vec()),
            bytes: 4096,
        };
        let gguf = b"GGUF\x03\x00\x00\x00\x00\x00\x00\x00";
        let f = rules
            .evaluate(&python(), &read("/srv/shard.000", gguf), 1)
            .unwrap();
        assert_eq!(f.signal, SignalKind::ModelFile);
        assert_eq!(f.file.unwrap().path, "/srv/shard.000");
        assert!(
            f.summary.contains("gguf model weights in /srv/shard.000")
                && f.summary.contains("read by unapproved process"),
            "{}",
            f.summary
        );
        let onnx = b"\x08\x07\x12\x07pytorch\x1a\x052.1.0:\x90\x01";
        assert!(rules
            .evaluate(&python(), &read("/srv/weights.cache", onnx), 1)
            .is_some());
        // A model name is judged as an open of it; benign bytes under a
        // neutral name, or no head at all, are nothing.
        assert!(rules
            .evaluate(&python(), &read("/srv/m.gguf", gguf), 1)
            .unwrap()
            .summary
            .starts_with("model file /srv/m.gguf"));
        assert!(rules
            .evaluate(&python(), &read("/srv/blob", b"\x08\x07\x12\x04abcd"), 1)
            .is_none());
        assert!(rules
            .evaluate(&python(), &read("/srv/blob", b"\x80\x04\x95\x01\x00"), 1)
            .is_none());
        let unreadable = Observation::FileRead {
            path: "/srv/blob".into(),
            head: None,
            bytes: 10,
        };
        assert!(rules.evaluate(&python(), &unreadable, 1).is_none());
    }

    #[test]
    fn a_library_known_by_its_elf_content_is_an_ai_runtime_whatever_its_name() {
        let f = BuiltinRules::default()
            .evaluate(
                &python(),
                &Observation::RuntimeLibraryIdentified {
                    path: "/tmp/libfoo.so".into(),
                    runtime: "onnxruntime".into(),
                    evidence: "dynamic symbol OrtGetApiBase".into(),
                },
                1,
            )
            .unwrap();
        assert_eq!(f.signal, SignalKind::AiRuntime);
        assert_eq!(f.file.unwrap().path, "/tmp/libfoo.so");
        assert!(
            f.summary.starts_with(
                "AI runtime library onnxruntime (dynamic symbol OrtGetApiBase) loaded from /tmp/libfoo.so by"
            ),
            "{}",
            f.summary
        );
    }

    #[test]
    fn a_tls_server_name_of_an_ai_api_host_is_egress() {
        let rules = BuiltinRules::default();
        let tls = |name: &str| Observation::TlsServerName {
            name: name.into(),
            address: "203.0.113.7".into(),
            port: 443,
        };
        let f = rules
            .evaluate(&python(), &tls("api.openai.com"), 1)
            .unwrap();
        assert_eq!(f.signal, SignalKind::AiEgress);
        let net = f.net.unwrap();
        assert_eq!(net.direction, NetDirection::Connect);
        assert_eq!(
            (net.address.as_str(), net.port, net.host.as_str()),
            ("203.0.113.7", 443, "api.openai.com")
        );
        assert!(f.summary.contains("ClientHello"), "{}", f.summary);
        assert!(rules.evaluate(&python(), &tls("example.com"), 1).is_none());
    }

    #[test]
    fn a_dns_question_for_an_ai_api_host_is_egress() {
        let rules = BuiltinRules::default();
        let q = |name: &str| Observation::DnsQuery {
            name: name.into(),
            server: "127.0.0.53:53".into(),
        };
        let f = rules.evaluate(&python(), &q("api.openai.com"), 1).unwrap();
        assert_eq!(f.signal, SignalKind::AiEgress);
        let net = f.net.as_ref().unwrap();
        assert_eq!(
            (
                net.direction,
                net.address.as_str(),
                net.port,
                net.host.as_str()
            ),
            (NetDirection::DnsQuery, "127.0.0.53", 53, "api.openai.com")
        );
        assert_eq!(f.object(), "dns api.openai.com");
        assert!(rules.evaluate(&python(), &q("deb.debian.org"), 1).is_none());
        let v6 = Observation::DnsQuery {
            name: "huggingface.co".into(),
            server: "[::1]:53".into(),
        };
        assert_eq!(
            rules
                .evaluate(&python(), &v6, 1)
                .unwrap()
                .net
                .unwrap()
                .address,
            "::1"
        );
    }

    #[test]
    fn gpu_use_by_an_unapproved_process_names_the_gpu_and_memory() {
        let gpu = GpuObject {
            uuid: "GPU-b1".into(),
            name: "NVIDIA H100".into(),
            index: 1,
            used_memory_bytes: Some(512 << 20),
            sm_util_percent: Some(37),
            context: vigil_domain::GpuContext::Compute,
        };
        let rules = BuiltinRules::default();
        let obs = Observation::GpuInUse {
            gpu: gpu.clone(),
            device_opened: false,
        };
        let f = rules.evaluate(&python(), &obs, 1).unwrap();
        assert_eq!(f.signal, SignalKind::GpuUse);
        assert_eq!(f.object(), "gpu GPU-b1");
        assert_eq!(f.gpu.as_ref(), Some(&gpu));
        assert!(
            f.summary
                .contains("uses GPU 1 GPU-b1 (compute, 512.0 MiB, 37% SM) (no GPU device open"),
            "{}",
            f.summary
        );
        let approved = BuiltinRules::new(ApprovedWorkloads::new(["AB12".to_string()]));
        assert!(approved.evaluate(&python(), &obs, 1).is_none());
        assert_eq!(rules.evaluate(&python(), &obs.clone(), 1), Some(f));
    }
}
