use serde::{Deserialize, Serialize};

use crate::Finding;

/// A finding as the control plane stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// Position in the control plane's alert log: dense, from 1.
    pub index: u64,
    pub agent_id: String,
    pub hostname: String,
    pub received_at_unix_nanos: i64,
    pub finding: Finding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorMode {
    /// eBPF programs loaded into the kernel.
    #[default]
    Ebpf,
    /// eBPF could not load; procfs polling, short-lived processes may be missed.
    ProcfsDegraded,
}

impl SensorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorMode::Ebpf => "ebpf",
            SensorMode::ProcfsDegraded => "procfs-degraded",
        }
    }
}

/// Per-CPU sensor counters summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SensorCounters {
    /// Records written into the ring buffer.
    pub emitted: u64,
    /// Events seen by a program and filtered out in the kernel.
    pub filtered: u64,
    /// Records lost because the ring buffer was full.
    pub dropped: u64,
    /// Records the agent read from the ring buffer (decoded or not).
    #[serde(default)]
    pub received: u64,
    /// Matched opens lost from the kernel's in-flight table (evicted by
    /// other threads' opens) before their syscall returned.
    #[serde(default)]
    pub evicted: u64,
}

/// What an agent says of itself in every heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentHeartbeat {
    pub counters: SensorCounters,
    /// Findings waiting in the agent's spool for an ack.
    pub spooled: u64,
    /// Findings the agent dropped since it started because its spool was
    /// full (its quota reached or its disk out of space).
    pub spool_dropped: u64,
    /// The spool takes no more findings: the newest wait in memory.
    pub spool_full: bool,
}

/// Who an agent is and how it senses, as it says when it connects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentIdentity {
    pub agent_id: String,
    pub hostname: String,
    pub agent_version: String,
    pub sensor_mode: SensorMode,
    pub kernel_release: String,
    pub hooks: Vec<String>,
}

/// What the control plane knows of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentRecord {
    #[serde(flatten)]
    pub identity: AgentIdentity,
    pub first_seen_unix_nanos: i64,
    pub last_heartbeat_unix_nanos: i64,
    /// Highest finding seq of this agent that the control plane has committed.
    pub last_acked_seq: u64,
    pub counters: SensorCounters,
    pub spooled: u64,
    /// Findings the agent dropped for a full spool, as last reported.
    #[serde(default)]
    pub spool_dropped: u64,
    /// The agent's spool was full at its last heartbeat.
    #[serde(default)]
    pub spool_full: bool,
    /// The host's GPUs and their users, as last reported.
    #[serde(default)]
    pub gpu: crate::GpuInventory,
    /// The policy bundle version the agent enforces (0: built-in rules).
    #[serde(default)]
    pub policy_version: u64,
    /// Why the last bundle the agent received was refused, if it was.
    #[serde(default)]
    pub policy_error: String,
    /// The host's TPM and its verdict (absent in records written before
    /// attestation).
    #[serde(default)]
    pub attestation: crate::AttestationRecord,
}
