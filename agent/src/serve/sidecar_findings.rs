//! What the supervision did, as findings: signal `sidecar`, `action`
//! naming the event (so the control plane writes an `enforce.<action>`
//! audit entry with the alert), the sidecar's process and the model's
//! store file (digest, name, version).

use vigil_domain::{
    FileObject, Finding, ModelIdentity, ModelRecord, ProcessInfo, Severity, SignalKind,
};

use crate::detect::TimedFinding;

/// The rule id sidecar findings carry.
pub const SIDECAR_RULE: &str = "vigil.sidecar";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SidecarEvent {
    /// A sidecar started serving a model.
    Start,
    /// A sidecar that died or failed its health checks was started again.
    Restart,
    /// The kernel's OOM killer ended a sidecar (memory.max).
    Oom,
    /// A sidecar was stopped (the model is no longer deployed here, the
    /// host's approved set was emptied, the agent is stopping).
    Stop,
    /// A running sidecar switched to another approved version.
    Load,
    /// Serving went back from a failed version to a fallback.
    Rollback,
    /// A version was not loaded: its record does not verify, the
    /// sidecar refused it, its bytes are not the approved ones.
    Refused,
    /// A stored model file failed verification (changed, cut, swapped):
    /// dropped and fetched again.
    Tampered,
    /// The model store was started anew (its sealed key no longer
    /// unseals).
    StoreReset,
    /// The sidecar cannot listen where its record says (someone else
    /// holds the port, or something not the agent's is at the socket
    /// path): restarted with backoff, the version not blamed.
    ListenFailed,
}

impl SidecarEvent {
    pub fn action(self) -> &'static str {
        match self {
            SidecarEvent::Start => "sidecar_start",
            SidecarEvent::Restart => "sidecar_restart",
            SidecarEvent::Oom => "sidecar_oom",
            SidecarEvent::Stop => "sidecar_stop",
            SidecarEvent::Load => "model_load",
            SidecarEvent::Rollback => "model_rollback",
            SidecarEvent::Refused => "model_refused",
            SidecarEvent::Tampered => "model_tampered",
            SidecarEvent::StoreReset => "model_store_reset",
            SidecarEvent::ListenFailed => "sidecar_listen_failed",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            SidecarEvent::Oom
            | SidecarEvent::Rollback
            | SidecarEvent::Refused
            | SidecarEvent::Tampered
            | SidecarEvent::StoreReset
            | SidecarEvent::ListenFailed => Severity::High,
            SidecarEvent::Start
            | SidecarEvent::Restart
            | SidecarEvent::Stop
            | SidecarEvent::Load => Severity::Info,
        }
    }
}

/// The file object for a model version: its store path, and what the
/// record says it is.
pub fn model_file(path: &str, record: &ModelRecord) -> FileObject {
    FileObject {
        path: path.to_string(),
        model: Some(Box::new(ModelIdentity {
            format: record.format.clone(),
            name: format!("{} v{}", record.name, record.version),
            sha256: record.sha256.clone(),
            ..Default::default()
        })),
    }
}

/// The finding for `event`, logged as it is made.
pub fn sidecar_finding(
    event: SidecarEvent,
    process: ProcessInfo,
    file: Option<FileObject>,
    summary: String,
) -> TimedFinding {
    let severity = event.severity();
    if severity >= Severity::High {
        tracing::warn!(action = event.action(), pid = process.pid, %summary, "sidecar");
    } else {
        tracing::info!(action = event.action(), pid = process.pid, %summary, "sidecar");
    }
    TimedFinding {
        finding: Finding {
            seq: 0,
            rule_id: SIDECAR_RULE.to_string(),
            severity,
            signal: SignalKind::Sidecar,
            observed_at_unix_nanos: crate::clock::unix_now_nanos(),
            process,
            file,
            net: None,
            gpu: None,
            action: event.action().to_string(),
            summary: vigil_domain::cut_text(&summary, 2048),
        },
        event_boot_ns: crate::clock::boot_now_ns(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serious_events_are_high_and_the_rest_informational() {
        for e in [
            SidecarEvent::Oom,
            SidecarEvent::Rollback,
            SidecarEvent::Refused,
            SidecarEvent::Tampered,
            SidecarEvent::StoreReset,
            SidecarEvent::ListenFailed,
        ] {
            assert_eq!(e.severity(), Severity::High, "{}", e.action());
        }
        for e in [
            SidecarEvent::Start,
            SidecarEvent::Restart,
            SidecarEvent::Stop,
            SidecarEvent::Load,
        ] {
            assert_eq!(e.severity(), Severity::Info, "{}", e.action());
        }
    }

    #[test]
    fn a_finding_carries_the_action_signal_and_model() {
        let record = ModelRecord {
            name: "m".into(),
            version: 2,
            sha256: "ab".repeat(32),
            format: "onnx".into(),
            ..Default::default()
        };
        let f = sidecar_finding(
            SidecarEvent::Rollback,
            ProcessInfo {
                pid: 7,
                ..Default::default()
            },
            Some(model_file("/x.vgm", &record)),
            "rolled back".into(),
        )
        .finding;
        assert_eq!(f.signal, SignalKind::Sidecar);
        assert_eq!(f.action, "model_rollback");
        assert_eq!(SidecarEvent::ListenFailed.action(), "sidecar_listen_failed");
        assert_eq!(f.severity, Severity::High);
        let model = f.file.unwrap().model.unwrap();
        assert_eq!(model.sha256, "ab".repeat(32));
        assert_eq!(model.name, "m v2");
    }
}
