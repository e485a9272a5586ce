//! The AI inventory: wire ↔ domain.

use vigil_domain as domain;

use crate::convert::{enum_value, model_from_wire};
use crate::types::v1 as pb;
use crate::WireError;

/// The domain kind of a wire kind; `None` for unspecified (every kind).
pub fn inventory_kind_from_wire(
    field: &str,
    raw: i32,
) -> Result<Option<domain::InventoryKind>, WireError> {
    Ok(match enum_value::<pb::InventoryKind>(field, raw)? {
        pb::InventoryKind::Unspecified => None,
        pb::InventoryKind::Runtime => Some(domain::InventoryKind::Runtime),
        pb::InventoryKind::Model => Some(domain::InventoryKind::Model),
        pb::InventoryKind::Endpoint => Some(domain::InventoryKind::Endpoint),
    })
}

pub fn inventory_kind_to_wire(kind: Option<domain::InventoryKind>) -> pb::InventoryKind {
    match kind {
        None => pb::InventoryKind::Unspecified,
        Some(domain::InventoryKind::Runtime) => pb::InventoryKind::Runtime,
        Some(domain::InventoryKind::Model) => pb::InventoryKind::Model,
        Some(domain::InventoryKind::Endpoint) => pb::InventoryKind::Endpoint,
    }
}

impl From<domain::InventoryItem> for pb::InventoryItem {
    fn from(i: domain::InventoryItem) -> Self {
        Self {
            kind: inventory_kind_to_wire(i.kind).into(),
            key: i.key,
            name: i.name,
            model: i.model.map(|m| (*m).into()),
            hosts: i.hosts,
            unnamed_host_sightings: i.unnamed_host_sightings,
            paths: i.paths,
            unnamed_path_sightings: i.unnamed_path_sightings,
            first_seen_unix_nanos: i.first_seen_unix_nanos,
            last_seen_unix_nanos: i.last_seen_unix_nanos,
            sightings: i.sightings,
            approved: i.approved,
        }
    }
}

impl TryFrom<pb::InventoryItem> for domain::InventoryItem {
    type Error = WireError;

    fn try_from(i: pb::InventoryItem) -> Result<Self, WireError> {
        let kind = inventory_kind_from_wire("kind", i.kind)?
            .ok_or_else(|| WireError::new("kind", "must be set"))?;
        Ok(Self {
            kind: Some(kind),
            key: i.key,
            name: i.name,
            model: i.model.map(model_from_wire).transpose()?.map(Box::new),
            hosts: i.hosts,
            unnamed_host_sightings: i.unnamed_host_sightings,
            paths: i.paths,
            unnamed_path_sightings: i.unnamed_path_sightings,
            first_seen_unix_nanos: i.first_seen_unix_nanos,
            last_seen_unix_nanos: i.last_seen_unix_nanos,
            sightings: i.sightings,
            approved: i.approved,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_round_trips_and_an_unset_or_unknown_kind_is_an_error() {
        let item = domain::InventoryItem {
            kind: Some(domain::InventoryKind::Model),
            key: "sha256:ab".into(),
            name: "llama (gguf)".into(),
            model: Some(Box::new(domain::ModelIdentity {
                format: "gguf".into(),
                structure_fingerprint: "fp".into(),
                risk: domain::ModelRisk::Dangerous,
                ..Default::default()
            })),
            hosts: vec!["h1".into()],
            unnamed_host_sightings: 2,
            paths: vec!["/m".into()],
            unnamed_path_sightings: 3,
            first_seen_unix_nanos: 4,
            last_seen_unix_nanos: 5,
            sightings: 6,
            approved: true,
        };
        let wire: pb::InventoryItem = item.clone().into();
        assert_eq!(domain::InventoryItem::try_from(wire.clone()).unwrap(), item);
        let unset = pb::InventoryItem {
            kind: 0,
            ..wire.clone()
        };
        assert!(domain::InventoryItem::try_from(unset)
            .unwrap_err()
            .to_string()
            .contains("kind"));
        let unknown = pb::InventoryItem { kind: 99, ..wire };
        assert!(domain::InventoryItem::try_from(unknown).is_err());
    }
}
