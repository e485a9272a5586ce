//! Approved inference models: wire ↔ domain (records, the deployments an
//! agent serves, the active version of each name).

use vigil_domain as domain;

use crate::admin::v1 as admin_pb;
use crate::agent::v1 as agent_pb;
use crate::convert::enum_value;
use crate::types::v1 as pb;
use crate::WireError;

/// A model state from the wire; unspecified reads as registered (a record
/// an admin sends for registration carries none).
pub fn model_state_from_wire(field: &str, raw: i32) -> Result<domain::ModelState, WireError> {
    Ok(match enum_value::<pb::ModelState>(field, raw)? {
        pb::ModelState::Unspecified | pb::ModelState::Registered => domain::ModelState::Registered,
        pb::ModelState::Approved => domain::ModelState::Approved,
        pb::ModelState::Revoked => domain::ModelState::Revoked,
    })
}

impl From<domain::ModelState> for pb::ModelState {
    fn from(s: domain::ModelState) -> Self {
        match s {
            domain::ModelState::Registered => pb::ModelState::Registered,
            domain::ModelState::Approved => pb::ModelState::Approved,
            domain::ModelState::Revoked => pb::ModelState::Revoked,
        }
    }
}

impl TryFrom<pb::ModelRecord> for domain::ModelRecord {
    type Error = WireError;

    /// Every signed field is checked ([`domain::ModelRecord::check`]); the
    /// error names the field.
    fn try_from(r: pb::ModelRecord) -> Result<Self, WireError> {
        let state = model_state_from_wire("state", r.state)?;
        let record = Self {
            name: r.name,
            version: r.version,
            sha256: r.sha256,
            size: r.size,
            format: r.format,
            hosts: r.hosts,
            memory_max_bytes: r.memory_max_bytes,
            cpu_millicores: r.cpu_millicores,
            listen: r.listen,
            signer: r.signer,
            signature: r.signature,
            state,
            registered_by: r.registered_by,
            registered_at_unix_nanos: r.registered_at_unix_nanos,
            changed_by: r.changed_by,
            reason: r.reason,
        };
        record
            .check()
            .map_err(|e| WireError::new(e.field, e.reason))?;
        Ok(record)
    }
}

impl From<domain::ModelRecord> for pb::ModelRecord {
    fn from(r: domain::ModelRecord) -> Self {
        Self {
            name: r.name,
            version: r.version,
            sha256: r.sha256,
            size: r.size,
            format: r.format,
            hosts: r.hosts,
            memory_max_bytes: r.memory_max_bytes,
            cpu_millicores: r.cpu_millicores,
            listen: r.listen,
            signer: r.signer,
            signature: r.signature,
            state: pb::ModelState::from(r.state) as i32,
            registered_by: r.registered_by,
            registered_at_unix_nanos: r.registered_at_unix_nanos,
            changed_by: r.changed_by,
            reason: r.reason,
        }
    }
}

impl TryFrom<agent_pb::ModelDeployment> for domain::ModelDeployment {
    type Error = WireError;

    fn try_from(d: agent_pb::ModelDeployment) -> Result<Self, WireError> {
        let active = d
            .active
            .ok_or_else(|| WireError::new("active", "must be set"))?;
        let active = domain::ModelRecord::try_from(active).map_err(|e| e.within("active"))?;
        let fallbacks = d
            .fallbacks
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let r = domain::ModelRecord::try_from(r)
                    .map_err(|e| e.within(format!("fallbacks[{i}]")))?;
                if r.name != active.name {
                    return Err(WireError::new(
                        format!("fallbacks[{i}].name"),
                        format!("{:?} is not the active record's {:?}", r.name, active.name),
                    ));
                }
                Ok(r)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { active, fallbacks })
    }
}

impl From<domain::ModelDeployment> for agent_pb::ModelDeployment {
    fn from(d: domain::ModelDeployment) -> Self {
        Self {
            active: Some(d.active.into()),
            fallbacks: d.fallbacks.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<domain::ActiveModel> for admin_pb::ActiveModel {
    fn from(a: domain::ActiveModel) -> Self {
        Self {
            name: a.name,
            version: a.version,
            pinned: a.pinned,
        }
    }
}

impl From<admin_pb::ActiveModel> for domain::ActiveModel {
    fn from(a: admin_pb::ActiveModel) -> Self {
        Self {
            name: a.name,
            version: a.version,
            pinned: a.pinned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> pb::ModelRecord {
        pb::ModelRecord {
            name: "resnet".into(),
            version: 2,
            sha256: "ab".repeat(32),
            size: 100,
            format: "onnx".into(),
            hosts: vec!["h1".into()],
            memory_max_bytes: 1 << 20,
            cpu_millicores: 500,
            listen: "unix:/run/m.sock".into(),
            signer: "cd".repeat(32),
            signature: "ef".repeat(64),
            state: pb::ModelState::Approved as i32,
            registered_by: "admin".into(),
            registered_at_unix_nanos: 7,
            changed_by: "admin".into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn a_record_goes_round_the_wire_unchanged() {
        let d = domain::ModelRecord::try_from(wire()).unwrap();
        assert_eq!(d.state, domain::ModelState::Approved);
        assert_eq!(pb::ModelRecord::from(d), wire());
        // No state (a registration): registered.
        let d = domain::ModelRecord::try_from(pb::ModelRecord { state: 0, ..wire() }).unwrap();
        assert_eq!(d.state, domain::ModelState::Registered);
    }

    #[test]
    fn wire_errors_name_the_field() {
        let err = |r: pb::ModelRecord| domain::ModelRecord::try_from(r).unwrap_err().to_string();
        assert_eq!(
            err(pb::ModelRecord {
                state: 99,
                ..wire()
            }),
            "state: unknown value 99"
        );
        assert!(err(pb::ModelRecord {
            name: "../x".into(),
            ..wire()
        })
        .starts_with("name: "));
        assert!(err(pb::ModelRecord {
            sha256: "AB".repeat(32),
            ..wire()
        })
        .starts_with("sha256: "));
        assert_eq!(
            err(pb::ModelRecord {
                version: 0,
                ..wire()
            }),
            "version: must be 1 or more"
        );
        assert!(err(pb::ModelRecord {
            listen: "ftp:x".into(),
            ..wire()
        })
        .starts_with("listen: "));
        let deployment = |active: Option<pb::ModelRecord>, fallbacks| {
            domain::ModelDeployment::try_from(agent_pb::ModelDeployment { active, fallbacks })
                .unwrap_err()
                .to_string()
        };
        assert_eq!(deployment(None, vec![]), "active: must be set");
        assert!(deployment(
            Some(wire()),
            vec![wire(), pb::ModelRecord { size: 0, ..wire() }]
        )
        .starts_with("fallbacks[1].size: "));
        assert!(deployment(
            Some(wire()),
            vec![pb::ModelRecord {
                name: "other".into(),
                ..wire()
            }]
        )
        .starts_with("fallbacks[0].name: "));
        let ok = domain::ModelDeployment::try_from(agent_pb::ModelDeployment {
            active: Some(wire()),
            fallbacks: vec![pb::ModelRecord {
                version: 1,
                ..wire()
            }],
        })
        .unwrap();
        assert_eq!(ok.fallbacks[0].version, 1);
        let back = agent_pb::ModelDeployment::from(ok);
        assert_eq!(back.active, Some(wire()));
    }
}
