//! What the control plane knows of an agent: wire ↔ domain.
//!
//! `AgentSummary` is an `AgentRecord` without its GPU inventory (a cluster
//! status lists every agent; the inventory comes with `GetAgent` only).

use vigil_domain as domain;

use crate::admin::v1 as pb;
use crate::types::v1 as types_pb;
use crate::{sensor_mode_from_wire, WireError};

impl From<domain::AgentRecord> for pb::AgentSummary {
    fn from(a: domain::AgentRecord) -> Self {
        let id = a.identity;
        Self {
            agent_id: id.agent_id,
            hostname: id.hostname,
            agent_version: id.agent_version,
            sensor_mode: types_pb::SensorMode::from(id.sensor_mode).into(),
            kernel_release: id.kernel_release,
            hooks: id.hooks,
            first_seen_unix_nanos: a.first_seen_unix_nanos,
            last_heartbeat_unix_nanos: a.last_heartbeat_unix_nanos,
            last_acked_seq: a.last_acked_seq,
            counters: Some(a.counters.into()),
            spooled: a.spooled,
            policy_version: a.policy_version,
            policy_error: a.policy_error,
            spool_dropped: a.spool_dropped,
            spool_full: a.spool_full,
            attestation: Some(a.attestation.into()),
        }
    }
}

impl From<domain::AttestationRecord> for pb::Attestation {
    fn from(a: domain::AttestationRecord) -> Self {
        let (code, reason) = match &a.trust {
            domain::TrustState::Untrusted { code, reason } => (code.clone(), reason.clone()),
            _ => (String::new(), String::new()),
        };
        Self {
            trust: a.trust.as_str().into(),
            code,
            reason,
            trust_changed_at_unix_nanos: a.trust_changed_at_unix_nanos,
            ek_sha256: a.ek_sha256,
            ek_certificate_issuer: a.ek_certificate_issuer,
            ak_sha256: a.ak_sha256,
            enrolled_at_unix_nanos: a.enrolled_at_unix_nanos,
            last_quote_at_unix_nanos: a.last_quote_at_unix_nanos,
            last_verified_at_unix_nanos: a.last_verified_at_unix_nanos,
            clock: a.clock.map(|c| pb::TpmClock {
                clock: c.clock,
                reset_count: c.reset_count,
                restart_count: c.restart_count,
            }),
            golden_pcrs: a.golden_pcrs.into_iter().collect(),
        }
    }
}

impl TryFrom<pb::Attestation> for domain::AttestationRecord {
    type Error = WireError;

    fn try_from(a: pb::Attestation) -> Result<Self, WireError> {
        let trust = match a.trust.as_str() {
            "" | "unattested" => domain::TrustState::Unattested,
            "trusted" => domain::TrustState::Trusted,
            "untrusted" => domain::TrustState::Untrusted {
                code: a.code,
                reason: a.reason,
            },
            other => {
                return Err(WireError::new(
                    "trust",
                    format!("unknown trust state {other:?}"),
                ))
            }
        };
        Ok(Self {
            trust,
            trust_changed_at_unix_nanos: a.trust_changed_at_unix_nanos,
            ek_sha256: a.ek_sha256,
            ek_certificate_issuer: a.ek_certificate_issuer,
            ak_sha256: a.ak_sha256,
            enrolled_at_unix_nanos: a.enrolled_at_unix_nanos,
            last_quote_at_unix_nanos: a.last_quote_at_unix_nanos,
            last_verified_at_unix_nanos: a.last_verified_at_unix_nanos,
            clock: a.clock.map(|c| domain::TpmClock {
                clock: c.clock,
                reset_count: c.reset_count,
                restart_count: c.restart_count,
            }),
            golden_pcrs: a.golden_pcrs.into_iter().collect(),
        })
    }
}

/// The record with an empty GPU inventory: a summary carries none.
impl TryFrom<pb::AgentSummary> for domain::AgentRecord {
    type Error = WireError;

    fn try_from(a: pb::AgentSummary) -> Result<Self, WireError> {
        if a.agent_id.trim().is_empty() {
            return Err(WireError::new("agent_id", "must not be empty"));
        }
        Ok(Self {
            identity: domain::AgentIdentity {
                agent_id: a.agent_id,
                hostname: a.hostname,
                agent_version: a.agent_version,
                sensor_mode: sensor_mode_from_wire("sensor_mode", a.sensor_mode)?,
                kernel_release: a.kernel_release,
                hooks: a.hooks,
            },
            first_seen_unix_nanos: a.first_seen_unix_nanos,
            last_heartbeat_unix_nanos: a.last_heartbeat_unix_nanos,
            last_acked_seq: a.last_acked_seq,
            counters: a.counters.map(Into::into).unwrap_or_default(),
            spooled: a.spooled,
            spool_dropped: a.spool_dropped,
            spool_full: a.spool_full,
            gpu: domain::GpuInventory::default(),
            policy_version: a.policy_version,
            policy_error: a.policy_error,
            attestation: a
                .attestation
                .map(domain::AttestationRecord::try_from)
                .transpose()
                .map_err(|e| e.within("attestation"))?
                .unwrap_or_default(),
        })
    }
}

/// One agent with its GPU inventory, as `GetAgent` answers.
impl From<domain::AgentRecord> for pb::GetAgentResponse {
    fn from(mut a: domain::AgentRecord) -> Self {
        let gpu = std::mem::take(&mut a.gpu);
        Self {
            agent: Some(a.into()),
            gpu: Some(gpu.into()),
        }
    }
}

impl TryFrom<pb::GetAgentResponse> for domain::AgentRecord {
    type Error = WireError;

    fn try_from(r: pb::GetAgentResponse) -> Result<Self, WireError> {
        let summary = r
            .agent
            .ok_or_else(|| WireError::new("agent", "must be set"))?;
        let mut record = Self::try_from(summary).map_err(|e| e.within("agent"))?;
        record.gpu = domain::GpuInventory::try_from(r.gpu.unwrap_or_default())
            .map_err(|e| e.within("gpu"))?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> domain::AgentRecord {
        domain::AgentRecord {
            identity: domain::AgentIdentity {
                agent_id: "m1".into(),
                hostname: "h1".into(),
                agent_version: "0.1.0".into(),
                sensor_mode: domain::SensorMode::ProcfsDegraded,
                kernel_release: "6.1".into(),
                hooks: vec!["procfs-poll/200ms".into()],
            },
            first_seen_unix_nanos: 1,
            last_heartbeat_unix_nanos: 2,
            last_acked_seq: 3,
            counters: domain::SensorCounters {
                emitted: 4,
                filtered: 5,
                dropped: 6,
                received: 7,
                evicted: 11,
            },
            spooled: 8,
            spool_dropped: 10,
            spool_full: true,
            gpu: domain::GpuInventory {
                driver_version: "550".into(),
                status: vec!["ok".into()],
                ..Default::default()
            },
            policy_version: 9,
            policy_error: "refused".into(),
            attestation: domain::AttestationRecord {
                trust: domain::TrustState::Untrusted {
                    code: "pcr-policy".into(),
                    reason: "PCR 7 changed".into(),
                },
                trust_changed_at_unix_nanos: 12,
                ek_sha256: "ab".into(),
                ek_certificate_issuer: "CN=swtpm".into(),
                ak_sha256: "cd".into(),
                enrolled_at_unix_nanos: 13,
                last_quote_at_unix_nanos: 14,
                last_verified_at_unix_nanos: 15,
                clock: Some(domain::TpmClock {
                    clock: 16,
                    reset_count: 17,
                    restart_count: 18,
                }),
                golden_pcrs: [(7, "00".into())].into(),
            },
        }
    }

    #[test]
    fn a_record_round_trips_through_get_agent() {
        let wire = pb::GetAgentResponse::from(record());
        assert_eq!(domain::AgentRecord::try_from(wire).unwrap(), record());
    }

    #[test]
    fn a_summary_round_trips_without_the_inventory() {
        let wire = pb::AgentSummary::from(record());
        let back = domain::AgentRecord::try_from(wire).unwrap();
        assert_eq!(back.gpu, domain::GpuInventory::default());
        assert_eq!(
            back,
            domain::AgentRecord {
                gpu: Default::default(),
                ..record()
            }
        );
    }

    #[test]
    fn bad_fields_are_named_with_their_parent() {
        let mut wire = pb::GetAgentResponse::from(record());
        wire.agent.as_mut().unwrap().sensor_mode = 42;
        assert_eq!(
            domain::AgentRecord::try_from(wire).unwrap_err().to_string(),
            "agent.sensor_mode: unknown value 42"
        );
        let wire = pb::GetAgentResponse {
            agent: None,
            gpu: None,
        };
        assert_eq!(
            domain::AgentRecord::try_from(wire).unwrap_err().to_string(),
            "agent: must be set"
        );
        let mut summary = pb::AgentSummary::from(record());
        summary.agent_id = " ".into();
        assert_eq!(
            domain::AgentRecord::try_from(summary).unwrap_err().field,
            "agent_id"
        );
    }
}
