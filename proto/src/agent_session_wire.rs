//! The agent's session messages about itself: wire ↔ domain.
//!
//! `Hello` opens every session (who the agent is and how it senses);
//! `PolicyStatus` says which policy bundle it enforces.

use vigil_domain as domain;

use crate::agent::v1 as pb;
use crate::types::v1 as types_pb;
use crate::{sensor_mode_from_wire, WireError};

impl From<domain::AgentIdentity> for pb::Hello {
    fn from(a: domain::AgentIdentity) -> Self {
        Self {
            agent_id: a.agent_id,
            hostname: a.hostname,
            agent_version: a.agent_version,
            sensor_mode: types_pb::SensorMode::from(a.sensor_mode).into(),
            kernel_release: a.kernel_release,
            hooks: a.hooks,
        }
    }
}

impl TryFrom<pb::Hello> for domain::AgentIdentity {
    type Error = WireError;

    fn try_from(h: pb::Hello) -> Result<Self, WireError> {
        if h.agent_id.trim().is_empty() {
            return Err(WireError::new("agent_id", "must not be empty"));
        }
        Ok(Self {
            sensor_mode: sensor_mode_from_wire("sensor_mode", h.sensor_mode)?,
            agent_id: h.agent_id,
            hostname: h.hostname,
            agent_version: h.agent_version,
            kernel_release: h.kernel_release,
            hooks: h.hooks,
        })
    }
}

impl From<domain::PolicyStatus> for pb::PolicyStatus {
    fn from(s: domain::PolicyStatus) -> Self {
        Self {
            active_version: s.active_version,
            error: s.error,
            refused_version: s.refused_version,
        }
    }
}

/// Every field is valid as it comes: the conversion cannot fail, and is a
/// `TryFrom` only to read like the other wire edges.
impl TryFrom<pb::PolicyStatus> for domain::PolicyStatus {
    type Error = WireError;

    fn try_from(s: pb::PolicyStatus) -> Result<Self, WireError> {
        Ok(Self {
            active_version: s.active_version,
            error: s.error,
            refused_version: s.refused_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_names_the_bad_field() {
        let identity = domain::AgentIdentity {
            agent_id: "a1".into(),
            hostname: "h".into(),
            agent_version: "0.1".into(),
            sensor_mode: domain::SensorMode::Ebpf,
            kernel_release: "6.1".into(),
            hooks: vec!["tracepoint/sched/sched_process_exec".into()],
        };
        let wire = pb::Hello::from(identity.clone());
        assert_eq!(domain::AgentIdentity::try_from(wire.clone()), Ok(identity));
        let err = domain::AgentIdentity::try_from(pb::Hello {
            agent_id: " ".into(),
            ..wire.clone()
        })
        .unwrap_err();
        assert_eq!(
            err.within("hello").to_string(),
            "hello.agent_id: must not be empty"
        );
        let err = domain::AgentIdentity::try_from(pb::Hello {
            sensor_mode: 42,
            ..wire
        })
        .unwrap_err();
        assert_eq!(
            err.within("hello").to_string(),
            "hello.sensor_mode: unknown value 42"
        );
    }

    #[test]
    fn policy_status_round_trips() {
        let status = domain::PolicyStatus::refused(3, 4, "bad signature".into());
        let wire = pb::PolicyStatus::from(status.clone());
        assert_eq!(domain::PolicyStatus::try_from(wire), Ok(status));
    }
}
