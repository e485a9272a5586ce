//! The JSON Schema of one policy document (a rule, `lists:` or
//! `settings:`), generated from the types `rule_file.rs` deserializes, and
//! committed as `policies/schema/policy-document.schema.json` for editors.
//! A test keeps the committed file equal to this; `VIGIL_BLESS=1 cargo test
//! -p vigil-policy` rewrites it.

use schemars::generate::SchemaSettings;
use schemars::{json_schema, Schema, SchemaGenerator};
use vigil_domain::{Severity, SignalKind};

use crate::rule_file::{ListsDoc, RuleDoc, SettingsDoc};

/// The schema, as committed.
pub fn policy_document_schema() -> Schema {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let documents = [
        generator.subschema_for::<RuleDoc>(),
        generator.subschema_for::<ListsDoc>(),
        generator.subschema_for::<SettingsDoc>(),
    ];
    json_schema!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://vigil.dev/schema/policy-document.v1.json",
        "title": "vigil policy document",
        "description": "One YAML document of a vigil policy directory: a rule, a block of named lists, or the bundle's settings. `vigilctl policy check DIR` checks the same and also type-checks the CEL.",
        "oneOf": documents,
    })
}

/// `severity:` by name (`vigil_domain` has no schema of its own).
pub(crate) fn severity(_: &mut SchemaGenerator) -> Schema {
    let names = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ]
    .map(Severity::as_str);
    json_schema!({ "enum": names })
}

/// `when:` the signals a rule can look at, at least one.
pub(crate) fn signals(_: &mut SchemaGenerator) -> Schema {
    let names = [
        SignalKind::ModelFile,
        SignalKind::AiRuntime,
        SignalKind::GpuDevice,
        SignalKind::GpuUse,
        SignalKind::AiEgress,
        SignalKind::AiServing,
    ]
    .map(SignalKind::as_str);
    json_schema!({
        "type": "array",
        "minItems": 1,
        "items": { "enum": names },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../policies/schema/policy-document.schema.json");
        let generated = serde_json::to_string_pretty(&policy_document_schema()).unwrap() + "\n";
        if std::env::var_os("VIGIL_BLESS").is_some() {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} differs from the schema generated from the policy types; \
             regenerate it with `VIGIL_BLESS=1 cargo test -p vigil-policy`",
            path.display()
        );
    }
}
