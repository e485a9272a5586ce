use serde::{Deserialize, Serialize};
use std::fmt;

use crate::{GpuObject, ProcessInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of evidence that AI is present on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    ModelFile,
    /// A model file that runs code when loaded (a pickle importing
    /// os.system...), whoever opens it.
    ModelRisk,
    AiRuntime,
    GpuDevice,
    AiEgress,
    AiServing,
    GpuUse,
    /// Not AI evidence: what the agent's policy did (an automatic rollback).
    Policy,
    /// Not AI evidence: the host failed TPM attestation (raised by the
    /// control plane's verifier, never accepted from an agent).
    Attestation,
    /// Not AI evidence: what the agent's supervision of the approved
    /// inference sidecar did (started, restarted, stopped, rolled back).
    Sidecar,
}

impl SignalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::ModelFile => "model_file",
            SignalKind::ModelRisk => "model_risk",
            SignalKind::AiRuntime => "ai_runtime",
            SignalKind::GpuDevice => "gpu_device",
            SignalKind::AiEgress => "ai_egress",
            SignalKind::AiServing => "ai_serving",
            SignalKind::GpuUse => "gpu_use",
            SignalKind::Policy => "policy",
            SignalKind::Attestation => "attestation",
            SignalKind::Sidecar => "sidecar",
        }
    }
}

impl fmt::Display for SignalKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileObject {
    pub path: String,
    /// What the model file is, for a model file the agent inspected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Box<ModelIdentity>>,
}

impl FileObject {
    /// A file known by its path only.
    pub fn at(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            model: None,
        }
    }
}

/// How dangerous loading a model file is.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ModelRisk {
    /// Not inspected, or the inspection failed (`ModelIdentity::error`).
    #[default]
    Unknown,
    /// No code runs on load.
    Safe,
    /// A pickle importing something not known to be safe.
    Suspicious,
    /// A pickle importing something that runs commands or code, or reaches
    /// the network or the disk, on load.
    Dangerous,
}

impl ModelRisk {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelRisk::Unknown => "unknown",
            ModelRisk::Safe => "safe",
            ModelRisk::Suspicious => "suspicious",
            ModelRisk::Dangerous => "dangerous",
        }
    }
}

/// Which model a file holds, read from its header (never its weights).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelIdentity {
    /// gguf, safetensors, onnx, pytorch-zip, pickle, tflite.
    pub format: String,
    pub format_version: String,
    pub architecture: String,
    pub name: String,
    /// "7B", as the file labels itself or from the parameter count.
    pub size_label: String,
    /// "Q4_K_M", "F16".
    pub quantization: String,
    pub parameters: u64,
    pub tensor_count: u64,
    /// sha256 of the file's bytes; empty when over the hashing budget.
    pub sha256: String,
    /// The same for a renamed, re-saved or re-quantized copy.
    pub structure_fingerprint: String,
    pub risk: ModelRisk,
    /// Why the risk is what it is.
    pub risk_reasons: Vec<String>,
    /// "module.name" of every dangerous import a pickle makes.
    pub dangerous_imports: Vec<String>,
    /// Why the file could not be (fully) inspected or hashed.
    pub error: String,
}

/// Longest text field of a `ModelIdentity` from the wire.
pub const MAX_IDENTITY_TEXT: usize = 256;
/// Longest reason, import or error of a `ModelIdentity` from the wire.
pub const MAX_IDENTITY_REASON: usize = 1024;
/// Most reasons and dangerous imports kept.
pub const MAX_IDENTITY_LIST: usize = 17;

impl ModelIdentity {
    /// The identity within the bounds the agent keeps to (texts cut, lists
    /// shortened, a digest or fingerprint that is not 64 hex digits
    /// dropped): what the control plane keeps of one any agent sent.
    pub fn bounded(&self) -> ModelIdentity {
        let text = |s: &str| cut_text(s, MAX_IDENTITY_TEXT);
        let list = |v: &[String]| {
            v.iter()
                .take(MAX_IDENTITY_LIST)
                .map(|s| cut_text(s, MAX_IDENTITY_REASON))
                .collect()
        };
        let digest = |s: &str| {
            if is_sha256_hex(s) {
                s.to_ascii_lowercase()
            } else {
                String::new()
            }
        };
        ModelIdentity {
            format: text(&self.format),
            format_version: text(&self.format_version),
            architecture: text(&self.architecture),
            name: text(&self.name),
            size_label: text(&self.size_label),
            quantization: text(&self.quantization),
            parameters: self.parameters,
            tensor_count: self.tensor_count,
            sha256: digest(&self.sha256),
            structure_fingerprint: digest(&self.structure_fingerprint),
            risk: self.risk,
            risk_reasons: list(&self.risk_reasons),
            dangerous_imports: list(&self.dangerous_imports),
            error: cut_text(&self.error, MAX_IDENTITY_REASON),
        }
    }

    /// "llama 'TinyLlama' 1.1B Q4_K_M (gguf)": what a summary names.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for p in [
            &self.architecture,
            &self.name,
            &self.size_label,
            &self.quantization,
        ] {
            if !p.is_empty() {
                parts.push(if std::ptr::eq(p, &self.name) {
                    format!("'{p}'")
                } else {
                    p.clone()
                });
            }
        }
        if parts.is_empty() {
            self.format.clone()
        } else {
            format!("{} ({})", parts.join(" "), self.format)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetDirection {
    /// The process connected out to `address:port`.
    Connect,
    /// The process listens on `address:port`.
    Listen,
    /// The process asked the DNS server `address:port` for `host`.
    DnsQuery,
}

impl NetDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            NetDirection::Connect => "connect",
            NetDirection::Listen => "listen",
            NetDirection::DnsQuery => "dns",
        }
    }
}

/// A TCP endpoint a process connected to or listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetObject {
    pub direction: NetDirection,
    /// IP address, textual.
    pub address: String,
    pub port: u16,
    /// The host name involved, where known (the question of a DNS query).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

/// One detection made by an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Agent-local sequence number, assigned by the agent's spool; strictly
    /// increasing per agent. 0 until spooled.
    pub seq: u64,
    pub rule_id: String,
    pub severity: Severity,
    pub signal: SignalKind,
    /// Wall-clock time of the triggering syscall, ns since the Unix epoch.
    pub observed_at_unix_nanos: i64,
    pub process: ProcessInfo,
    pub file: Option<FileObject>,
    #[serde(default)]
    pub net: Option<NetObject>,
    /// The GPU a `gpu_use` finding is about.
    #[serde(default)]
    pub gpu: Option<GpuObject>,
    /// Set when the finding records an enforcement (the action it reports
    /// on: "kill", "freeze", ...), empty for a detection.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    pub summary: String,
}

impl Finding {
    /// What the finding is about, for deduplication and display: the file
    /// path or `direction address:port`.
    pub fn object(&self) -> String {
        match (&self.file, &self.net) {
            (Some(f), _) => f.path.clone(),
            (None, None) if self.gpu.is_some() => {
                format!("gpu {}", self.gpu.as_ref().map_or("", |g| &g.uuid))
            }
            (None, Some(n)) if n.direction == NetDirection::DnsQuery => format!("dns {}", n.host),
            (None, Some(n)) => format!("{} {}:{}", n.direction.as_str(), n.address, n.port),
            (None, None) => String::new(),
        }
    }
}

/// Whether `s` is a sha256 in hex (64 digits, either case).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `s`, cut to at most `max` bytes at a character boundary.
pub fn cut_text(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
