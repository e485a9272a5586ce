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
    AiRuntime,
    GpuDevice,
    AiEgress,
    AiServing,
    GpuUse,
    /// Not AI evidence: what the agent's policy did (an automatic rollback).
    Policy,
}

impl SignalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalKind::ModelFile => "model_file",
            SignalKind::AiRuntime => "ai_runtime",
            SignalKind::GpuDevice => "gpu_device",
            SignalKind::AiEgress => "ai_egress",
            SignalKind::AiServing => "ai_serving",
            SignalKind::GpuUse => "gpu_use",
            SignalKind::Policy => "policy",
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
