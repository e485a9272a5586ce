use super::*;
use vigil_domain::{ModelIdentity, ModelRisk};

fn items() -> Vec<InventoryItem> {
    vec![
        InventoryItem {
            kind: Some(InventoryKind::Model),
            key: format!("sha256:{}", "ab".repeat(32)),
            name: "llama 'Tiny' 7B (gguf)".into(),
            model: Some(Box::new(ModelIdentity {
                format: "gguf".into(),
                architecture: "llama".into(),
                name: "Tiny".into(),
                size_label: "7B".into(),
                parameters: 7_000,
                sha256: "ab".repeat(32),
                structure_fingerprint: "cd".repeat(32),
                risk: ModelRisk::Dangerous,
                dangerous_imports: vec!["posix.system".into()],
                ..Default::default()
            })),
            hosts: vec!["h1".into(), "h2".into()],
            paths: vec!["/m/a.gguf".into()],
            first_seen_unix_nanos: 1_000_000_000,
            last_seen_unix_nanos: 2_000_000_000,
            sightings: 3,
            approved: true,
            ..Default::default()
        },
        InventoryItem {
            kind: Some(InventoryKind::Model),
            key: "path:/tmp/=HYPERLINK(\"http://x\")".into(),
            name: "=HYPERLINK(\"http://x\"),\"\n".into(),
            hosts: vec!["-h3".into()],
            sightings: 1,
            first_seen_unix_nanos: 1,
            last_seen_unix_nanos: 1,
            ..Default::default()
        },
        InventoryItem {
            kind: Some(InventoryKind::Runtime),
            key: format!("sha256:{}", "ef".repeat(32)),
            name: "/usr/bin/python3".into(),
            sightings: 1,
            first_seen_unix_nanos: 1,
            last_seen_unix_nanos: 1,
            ..Default::default()
        },
        InventoryItem {
            kind: Some(InventoryKind::Endpoint),
            key: "connect:api.openai.com:443".into(),
            name: "api.openai.com:443".into(),
            sightings: 1,
            first_seen_unix_nanos: 1,
            last_seen_unix_nanos: 1,
            ..Default::default()
        },
    ]
}

#[test]
fn the_csv_has_every_column_quotes_every_field_and_defuses_formulas() {
    let out = String::from_utf8(to_csv(&items()).unwrap()).unwrap();
    let mut r = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(r.headers().unwrap().iter().collect::<Vec<_>>(), CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = r.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 4);
    let col = |row: &csv::StringRecord, name: &str| {
        row[CSV_COLUMNS.iter().position(|c| *c == name).unwrap()].to_string()
    };
    assert_eq!(col(&rows[0], "sha256"), "ab".repeat(32));
    assert_eq!(col(&rows[0], "structure_fingerprint"), "cd".repeat(32));
    assert_eq!(col(&rows[0], "risk"), "dangerous");
    assert_eq!(col(&rows[0], "dangerous_imports"), "posix.system");
    assert_eq!(col(&rows[0], "hosts"), "h1 h2");
    assert_eq!(col(&rows[0], "approved"), "true");
    assert_eq!(col(&rows[0], "first_seen"), "1970-01-01T00:00:01Z");
    // A name an attacker chose cannot become a formula or break the row.
    assert_eq!(col(&rows[1], "name"), "'=HYPERLINK(\"http://x\"),\"\n");
    assert_eq!(col(&rows[1], "hosts"), "'-h3");
    assert_eq!(col(&rows[1], "risk"), "");
    assert!(out.lines().next().unwrap().starts_with("\"kind\",\"name\""));
    // After leading spaces or a line feed, and in full width, too.
    for cell in ["  =1+1", "\n=1+1", "\u{ff1d}1+1", "\u{3000}\u{ff0b}1"] {
        assert_eq!(super::defuse_formula(cell), format!("'{cell}"), "{cell:?}");
    }
    assert_eq!(super::defuse_formula("llama 7B"), "llama 7B");
}

#[test]
fn the_ml_bom_names_models_with_hash_fingerprint_and_card_runtimes_and_services() {
    let serial = uuid::Builder::from_random_bytes([7; 16]).into_uuid();
    let bom = to_cyclonedx(&items(), serial, 1_700_000_000_000_000_000);
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.6");
    assert_eq!(bom["serialNumber"], format!("urn:uuid:{serial}"));
    assert_eq!(bom["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    let components = bom["components"].as_array().unwrap();
    assert_eq!(components.len(), 3);
    let m = &components[0];
    assert_eq!(m["type"], "machine-learning-model");
    assert_eq!(
        m["hashes"][0],
        json!({"alg": "SHA-256", "content": "ab".repeat(32)})
    );
    assert_eq!(
        m["modelCard"]["modelParameters"]["architectureFamily"],
        "llama"
    );
    let props = |c: &Value, name: &str| -> Vec<String> {
        c["properties"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == name)
            .map(|p| p["value"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        props(m, "vigil:model:structure_fingerprint"),
        ["cd".repeat(32)]
    );
    assert_eq!(props(m, "vigil:model:risk"), ["dangerous"]);
    assert_eq!(props(m, "vigil:model:dangerous_import"), ["posix.system"]);
    assert_eq!(props(m, "vigil:host"), ["h1", "h2"]);
    assert_eq!(props(m, "vigil:approved"), ["true"]);
    // A model known by path has no hash rather than a wrong one.
    assert!(components[1].get("hashes").is_none());
    assert_eq!(components[2]["type"], "application");
    assert_eq!(components[2]["hashes"][0]["content"], "ef".repeat(32));
    let services = bom["services"].as_array().unwrap();
    assert_eq!(
        services[0]["endpoints"],
        json!(["tcp://api.openai.com:443"])
    );
    // bom-refs are unique.
    let mut refs: Vec<&str> = components
        .iter()
        .chain(services)
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    refs.sort();
    refs.dedup();
    assert_eq!(refs.len(), 4);
}
