//! The SIEM export: a subscription's filters in, events out.

use vigil_domain as domain;

use crate::convert::enum_value;
use crate::siem::v1 as pb;
use crate::{severity_from_wire, signal_from_wire, WireError};

/// The most values one filter list (kinds, hosts, rules, signals) holds.
pub const MAX_FILTER_VALUES: usize = 256;
/// The longest host name or rule id a filter names, in bytes.
pub const MAX_FILTER_VALUE_LEN: usize = 1024;

pub fn event_kind_from_wire(field: &str, raw: i32) -> Result<domain::EventKind, WireError> {
    Ok(match enum_value::<pb::EventKind>(field, raw)? {
        pb::EventKind::Unspecified => return Err(WireError::new(field, "must be set")),
        pb::EventKind::Finding => domain::EventKind::Finding,
        pb::EventKind::Enforcement => domain::EventKind::Enforcement,
        pb::EventKind::PolicyChange => domain::EventKind::PolicyChange,
        pb::EventKind::ApprovalChange => domain::EventKind::ApprovalChange,
        pb::EventKind::Attestation => domain::EventKind::Attestation,
        pb::EventKind::Audit => domain::EventKind::Audit,
    })
}

impl From<domain::EventKind> for pb::EventKind {
    fn from(k: domain::EventKind) -> Self {
        match k {
            domain::EventKind::Finding => pb::EventKind::Finding,
            domain::EventKind::Enforcement => pb::EventKind::Enforcement,
            domain::EventKind::PolicyChange => pb::EventKind::PolicyChange,
            domain::EventKind::ApprovalChange => pb::EventKind::ApprovalChange,
            domain::EventKind::Attestation => pb::EventKind::Attestation,
            domain::EventKind::Audit => pb::EventKind::Audit,
        }
    }
}

fn bounded(field: &str, n: usize) -> Result<(), WireError> {
    if n > MAX_FILTER_VALUES {
        return Err(WireError::new(
            field,
            format!("{n} values; at most {MAX_FILTER_VALUES}"),
        ));
    }
    Ok(())
}

fn names(field: &str, values: &[String]) -> Result<Vec<String>, WireError> {
    bounded(field, values.len())?;
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if v.is_empty() {
                Err(WireError::new(format!("{field}[{i}]"), "must not be empty"))
            } else if v.len() > MAX_FILTER_VALUE_LEN {
                Err(WireError::new(
                    format!("{field}[{i}]"),
                    format!("{} bytes; at most {MAX_FILTER_VALUE_LEN}", v.len()),
                ))
            } else {
                Ok(v.clone())
            }
        })
        .collect()
}

/// A subscription's filters; an unknown enum value is refused naming its
/// field and place (`kinds[1]: unknown value 99`).
impl TryFrom<&pb::SubscribeRequest> for domain::SiemFilter {
    type Error = WireError;

    fn try_from(r: &pb::SubscribeRequest) -> Result<Self, WireError> {
        bounded("kinds", r.kinds.len())?;
        bounded("signals", r.signals.len())?;
        let kinds = r
            .kinds
            .iter()
            .enumerate()
            .map(|(i, raw)| event_kind_from_wire(&format!("kinds[{i}]"), *raw))
            .collect::<Result<_, _>>()?;
        let signals = r
            .signals
            .iter()
            .enumerate()
            .map(|(i, raw)| signal_from_wire(&format!("signals[{i}]"), *raw))
            .collect::<Result<_, _>>()?;
        let min_severity = match r.min_severity {
            0 => None,
            raw => Some(severity_from_wire("min_severity", raw)?),
        };
        Ok(Self {
            kinds,
            min_severity,
            hosts: names("hosts", &r.hosts)?,
            agent_ids: Vec::new(),
            rules: names("rules", &r.rules)?,
            signals,
        })
    }
}

/// An event as it is sent: its OCSF JSON (rendered by the control plane)
/// and, with `include_record`, its typed record with the large fields
/// capped ([`domain::SiemEvent::capped`]).
pub fn siem_event_to_wire(
    event: domain::SiemEvent,
    ocsf_json: String,
    include_record: bool,
) -> pb::SiemEvent {
    let mut wire = pb::SiemEvent {
        cursor: event.cursor,
        ocsf_json,
        kind: pb::EventKind::from(event.kind).into(),
        time_unix_nanos: event.time_unix_nanos(),
        ..Default::default()
    };
    if include_record {
        match event.capped().record {
            domain::EventRecord::Alert(a) => wire.alert = Some(a.into()),
            domain::EventRecord::Audit(e) => wire.audit = Some(e.into()),
        }
    }
    wire
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_refused_by_field_and_place() {
        let refused =
            |r: pb::SubscribeRequest| domain::SiemFilter::try_from(&r).unwrap_err().to_string();
        assert_eq!(
            refused(pb::SubscribeRequest {
                kinds: vec![1, 99],
                ..Default::default()
            }),
            "kinds[1]: unknown value 99"
        );
        assert_eq!(
            refused(pb::SubscribeRequest {
                signals: vec![77],
                ..Default::default()
            }),
            "signals[0]: unknown value 77"
        );
        assert_eq!(
            refused(pb::SubscribeRequest {
                min_severity: 42,
                ..Default::default()
            }),
            "min_severity: unknown value 42"
        );
        assert_eq!(
            refused(pb::SubscribeRequest {
                kinds: vec![0],
                ..Default::default()
            }),
            "kinds[0]: must be set"
        );
        assert_eq!(
            refused(pb::SubscribeRequest {
                hosts: vec!["a".into(), String::new()],
                ..Default::default()
            }),
            "hosts[1]: must not be empty"
        );
        assert!(refused(pb::SubscribeRequest {
            rules: vec!["r".into(); MAX_FILTER_VALUES + 1],
            ..Default::default()
        })
        .starts_with("rules: "));
    }

    #[test]
    fn filters_convert() {
        let f = domain::SiemFilter::try_from(&pb::SubscribeRequest {
            kinds: vec![pb::EventKind::PolicyChange.into(), 6],
            min_severity: crate::types::v1::Severity::High.into(),
            hosts: vec!["gpu-1".into()],
            rules: vec!["r".into()],
            signals: vec![crate::types::v1::SignalKind::GpuUse.into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            f,
            domain::SiemFilter {
                kinds: vec![domain::EventKind::PolicyChange, domain::EventKind::Audit],
                min_severity: Some(domain::Severity::High),
                hosts: vec!["gpu-1".into()],
                agent_ids: vec![],
                rules: vec!["r".into()],
                signals: vec![domain::SignalKind::GpuUse],
            }
        );
        for k in domain::EventKind::ALL {
            assert_eq!(
                event_kind_from_wire("k", pb::EventKind::from(k).into()).unwrap(),
                k
            );
        }
    }

    #[test]
    fn the_record_is_sent_only_when_asked_and_capped() {
        let entry = domain::AuditEntry {
            index: 3,
            at_unix_nanos: 9,
            actor: "op".into(),
            action: "policy.push".into(),
            subject: "policy 2".into(),
            detail: "d".repeat(100_000),
            prev_hash: String::new(),
            hash: String::new(),
        };
        let event = domain::SiemEvent {
            cursor: 7,
            kind: domain::EventKind::PolicyChange,
            record: domain::EventRecord::Audit(entry),
        };
        let bare = siem_event_to_wire(event.clone(), "{}".into(), false);
        assert_eq!(bare.cursor, 7);
        assert_eq!(bare.time_unix_nanos, 9);
        assert_eq!(bare.kind, pb::EventKind::PolicyChange as i32);
        assert!(bare.audit.is_none() && bare.alert.is_none());
        let full = siem_event_to_wire(event, "{}".into(), true);
        let audit = full.audit.unwrap();
        assert!(audit.detail.len() <= domain::MAX_EXPORTED_TEXT);
        assert!(audit.detail.ends_with("bytes]"));
    }
}
