//! The agent's session messages about itself: wire ↔ domain.
//!
//! `Hello` opens every session (who the agent is and how it senses);
//! `PolicyStatus` says which policy bundle it enforces; `Heartbeat` how
//! its sensors and spool fare.

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

/// The longest agent id or host name a hello may carry, in bytes (a DNS
/// name is at most 253; Linux's HOST_NAME_MAX is 64). Both are copied into
/// every alert the agent's findings make and into the SIEM journal's record
/// of each: unbounded, one hello with a host name of megabytes made every
/// later finding of a few bytes cost the control plane megabytes.
pub const MAX_HELLO_NAME: usize = 255;

impl TryFrom<pb::Hello> for domain::AgentIdentity {
    type Error = WireError;

    fn try_from(h: pb::Hello) -> Result<Self, WireError> {
        if h.agent_id.trim().is_empty() {
            return Err(WireError::new("agent_id", "must not be empty"));
        }
        for (field, value) in [("agent_id", &h.agent_id), ("hostname", &h.hostname)] {
            if value.len() > MAX_HELLO_NAME {
                return Err(WireError::new(
                    field,
                    format!("{} bytes; at most {MAX_HELLO_NAME}", value.len()),
                ));
            }
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

impl From<domain::AgentHeartbeat> for pb::Heartbeat {
    fn from(h: domain::AgentHeartbeat) -> Self {
        Self {
            counters: Some(h.counters.into()),
            spooled: h.spooled,
            spool_dropped: h.spool_dropped,
            spool_full: h.spool_full,
        }
    }
}

/// Every field is valid as it comes (absent counters read as zero): the
/// conversion cannot fail, and is a `TryFrom` only to read like the other
/// wire edges.
impl TryFrom<pb::Heartbeat> for domain::AgentHeartbeat {
    type Error = WireError;

    fn try_from(h: pb::Heartbeat) -> Result<Self, WireError> {
        Ok(Self {
            counters: h.counters.map(Into::into).unwrap_or_default(),
            spooled: h.spooled,
            spool_dropped: h.spool_dropped,
            spool_full: h.spool_full,
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

    /// A compromised agent's hello with a host name of megabytes: copied
    /// into each of its alerts and SIEM journal records, every finding of
    /// a few bytes would cost the control plane megabytes (and a SIEM
    /// filter's scan of 4,096 records gigabytes). Refused at the edge.
    #[test]
    fn a_hello_with_an_overlong_hostname_or_agent_id_is_refused() {
        let wire = pb::Hello {
            agent_id: "a1".into(),
            hostname: "h".repeat(MAX_HELLO_NAME),
            sensor_mode: types_pb::SensorMode::Ebpf.into(),
            ..Default::default()
        };
        assert!(domain::AgentIdentity::try_from(wire.clone()).is_ok());
        let err = domain::AgentIdentity::try_from(pb::Hello {
            hostname: "h".repeat(3 << 20),
            ..wire.clone()
        })
        .unwrap_err();
        assert_eq!(
            err.within("hello").to_string(),
            format!(
                "hello.hostname: {} bytes; at most {MAX_HELLO_NAME}",
                3 << 20
            )
        );
        let err = domain::AgentIdentity::try_from(pb::Hello {
            agent_id: "a".repeat(MAX_HELLO_NAME + 1),
            ..wire
        })
        .unwrap_err();
        assert!(err.to_string().starts_with("agent_id: "), "{err}");
    }

    #[test]
    fn heartbeat_round_trips_with_the_spool_state() {
        let heartbeat = domain::AgentHeartbeat {
            counters: domain::SensorCounters {
                emitted: 1,
                filtered: 2,
                dropped: 3,
                received: 4,
                evicted: 7,
            },
            spooled: 5,
            spool_dropped: 6,
            spool_full: true,
        };
        let wire = pb::Heartbeat::from(heartbeat);
        assert_eq!(domain::AgentHeartbeat::try_from(wire), Ok(heartbeat));
        // A heartbeat from an agent that predates the spool fields.
        let old = pb::Heartbeat {
            counters: None,
            spooled: 2,
            ..Default::default()
        };
        assert_eq!(
            domain::AgentHeartbeat::try_from(old),
            Ok(domain::AgentHeartbeat {
                spooled: 2,
                ..Default::default()
            })
        );
    }

    #[test]
    fn policy_status_round_trips() {
        let status = domain::PolicyStatus::refused(3, 4, "bad signature".into());
        let wire = pb::PolicyStatus::from(status.clone());
        assert_eq!(domain::PolicyStatus::try_from(wire), Ok(status));
    }
}
