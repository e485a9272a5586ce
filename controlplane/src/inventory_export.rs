//! The AI inventory as a document: CSV for spreadsheets, and a CycloneDX
//! 1.6 ML-BOM (JSON) for supply-chain tools.
//!
//! In the ML-BOM a model is a `machine-learning-model` component with its
//! sha256 as a hash, its architecture in the model card, and vigil's view
//! of it (structure fingerprint, format, risk, dangerous imports, hosts,
//! paths, first and last seen, approval) as `vigil:` properties; a runtime
//! is an `application` component (its executable's sha256 as a hash); an
//! endpoint is a service.
//!
//! Architecture invariant: every value in either document comes from the
//! fleet (file names, model metadata, host names), so none is trusted: the
//! CSV writer quotes every field and defuses spreadsheet formulas, and the
//! JSON is built by serde_json, never by string concatenation.

use serde_json::{json, Value};
use vigil_domain::{InventoryItem, InventoryKind, NetDirection};

/// The columns of the CSV export, in order.
pub const CSV_COLUMNS: [&str; 20] = [
    "kind",
    "name",
    "key",
    "approved",
    "sha256",
    "structure_fingerprint",
    "format",
    "architecture",
    "model_name",
    "size_label",
    "quantization",
    "parameters",
    "risk",
    "dangerous_imports",
    "hosts",
    "unnamed_host_sightings",
    "paths",
    "first_seen",
    "last_seen",
    "sightings",
];

/// The inventory as CSV (RFC 4180, a header line first).
pub fn to_csv(items: &[InventoryItem]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
    w.write_record(CSV_COLUMNS)?;
    for i in items {
        let m = i.model.as_deref().cloned().unwrap_or_default();
        let row: [String; 20] = [
            kind_str(i).into(),
            i.name.clone(),
            i.key.clone(),
            i.approved.to_string(),
            i.sha256().unwrap_or("").into(),
            m.structure_fingerprint,
            m.format,
            m.architecture,
            m.name,
            m.size_label,
            m.quantization,
            if m.parameters == 0 {
                String::new()
            } else {
                m.parameters.to_string()
            },
            if i.model.is_some() {
                m.risk.as_str().into()
            } else {
                String::new()
            },
            m.dangerous_imports.join(" "),
            i.hosts.join(" "),
            i.unnamed_host_sightings.to_string(),
            i.paths.join(" "),
            rfc3339(i.first_seen_unix_nanos),
            rfc3339(i.last_seen_unix_nanos),
            i.sightings.to_string(),
        ];
        w.write_record(row.iter().map(|f| defuse_formula(f)))?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab,
/// carriage return or line feed first, or one of those after leading
/// whitespace, or their full-width forms, which some spreadsheets fold)
/// gets a leading `'`, as OWASP advises.
fn defuse_formula(field: &str) -> String {
    let first = field.trim_start_matches([' ', '\u{3000}']).chars().next();
    match first {
        Some(
            '=' | '+' | '-' | '@' | '\t' | '\r' | '\n' | '\u{ff1d}' | '\u{ff0b}' | '\u{ff0d}'
            | '\u{ff20}',
        ) => format!("'{field}"),
        _ => field.to_string(),
    }
}

/// The inventory as a CycloneDX 1.6 BOM. `serial` is the document's
/// random serial number (a fresh one per export), `now_unix_nanos` its time.
pub fn to_cyclonedx(items: &[InventoryItem], serial: uuid::Uuid, now_unix_nanos: i64) -> Value {
    let mut components = Vec::new();
    let mut services = Vec::new();
    for i in items {
        let mut properties = vec![
            prop("vigil:inventory:key", &i.key),
            prop("vigil:approved", &i.approved.to_string()),
            prop("vigil:sightings", &i.sightings.to_string()),
        ];
        if i.sightings > 0 {
            properties.push(prop("vigil:first_seen", &rfc3339(i.first_seen_unix_nanos)));
            properties.push(prop("vigil:last_seen", &rfc3339(i.last_seen_unix_nanos)));
        }
        properties.extend(i.hosts.iter().map(|h| prop("vigil:host", h)));
        if i.unnamed_host_sightings > 0 {
            properties.push(prop(
                "vigil:unnamed_host_sightings",
                &i.unnamed_host_sightings.to_string(),
            ));
        }
        properties.extend(i.paths.iter().map(|p| prop("vigil:path", p)));
        let bom_ref = format!("{}:{}", kind_str(i), i.key);
        let hashes: Vec<Value> = i
            .sha256()
            .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(|d| json!({"alg": "SHA-256", "content": d}))
            .into_iter()
            .collect();
        match i.kind {
            Some(InventoryKind::Model) => {
                let mut component = json!({
                    "type": "machine-learning-model",
                    "bom-ref": bom_ref,
                    "name": i.name,
                });
                if let Some(m) = i.model.as_deref() {
                    for (name, value) in [
                        (
                            "vigil:model:structure_fingerprint",
                            &m.structure_fingerprint,
                        ),
                        ("vigil:model:format", &m.format),
                        ("vigil:model:format_version", &m.format_version),
                        ("vigil:model:name", &m.name),
                        ("vigil:model:size_label", &m.size_label),
                        ("vigil:model:quantization", &m.quantization),
                        ("vigil:model:error", &m.error),
                    ] {
                        if !value.is_empty() {
                            properties.push(prop(name, value));
                        }
                    }
                    if m.parameters > 0 {
                        properties.push(prop("vigil:model:parameters", &m.parameters.to_string()));
                    }
                    properties.push(prop("vigil:model:risk", m.risk.as_str()));
                    properties.extend(
                        m.dangerous_imports
                            .iter()
                            .map(|d| prop("vigil:model:dangerous_import", d)),
                    );
                    if !m.architecture.is_empty() {
                        component["modelCard"] = json!({
                            "modelParameters": {
                                "architectureFamily": m.architecture,
                                "modelArchitecture": m.describe(),
                            }
                        });
                    }
                }
                if !hashes.is_empty() {
                    component["hashes"] = Value::Array(hashes);
                }
                component["properties"] = Value::Array(properties);
                components.push(component);
            }
            Some(InventoryKind::Runtime) => {
                let mut component = json!({
                    "type": "application",
                    "bom-ref": bom_ref,
                    "name": i.name,
                });
                if !hashes.is_empty() {
                    component["hashes"] = Value::Array(hashes);
                }
                component["properties"] = Value::Array(properties);
                components.push(component);
            }
            Some(InventoryKind::Endpoint) | None => {
                let mut service = json!({
                    "bom-ref": bom_ref,
                    "name": i.name,
                });
                if i.key.starts_with(NetDirection::Connect.as_str()) {
                    service["endpoints"] = json!([format!("tcp://{}", i.name)]);
                }
                service["properties"] = Value::Array(properties);
                services.push(service);
            }
        }
    }
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": serial.urn().to_string(),
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(now_unix_nanos),
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "vigil-controlplane",
                    "version": env!("CARGO_PKG_VERSION"),
                }]
            }
        },
        "components": components,
        "services": services,
    })
}

fn kind_str(i: &InventoryItem) -> &'static str {
    i.kind.map_or("unknown", InventoryKind::as_str)
}

fn prop(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// `2026-12-06T01:02:03.000000004Z`; empty for 0 (never).
fn rfc3339(unix_nanos: i64) -> String {
    if unix_nanos == 0 {
        return String::new();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos.into())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "inventory_export_tests.rs"]
mod tests;
