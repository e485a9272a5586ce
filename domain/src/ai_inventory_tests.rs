use super::*;
use crate::{FileObject, ModelRisk, NetObject, ProcessInfo, Severity};

/// A digest: `byte` (two hex digits) 32 times.
fn sha(byte: &str) -> String {
    byte.repeat(32)
}

fn finding(signal: SignalKind, exe: &str, exe_sha256: &str) -> Finding {
    Finding {
        seq: 1,
        rule_id: "r".into(),
        severity: Severity::High,
        signal,
        observed_at_unix_nanos: 1,
        process: ProcessInfo {
            pid: 10,
            exe: exe.into(),
            exe_sha256: exe_sha256.into(),
            comm: "python3".into(),
            ..Default::default()
        },
        file: None,
        net: None,
        gpu: None,
        action: String::new(),
        summary: "s".into(),
    }
}

fn model(digest: &str) -> ModelIdentity {
    ModelIdentity {
        format: "gguf".into(),
        architecture: "llama".into(),
        name: "Tiny".into(),
        size_label: "7B".into(),
        sha256: digest.into(),
        structure_fingerprint: sha("f0"),
        risk: ModelRisk::Safe,
        ..Default::default()
    }
}

fn model_finding(path: &str, m: Option<ModelIdentity>) -> Finding {
    let mut f = finding(SignalKind::ModelFile, "/usr/bin/python3", &sha("AB"));
    f.file = Some(FileObject {
        path: path.into(),
        model: m.map(Box::new),
    });
    f
}

fn fold(items: &mut Vec<InventoryItem>, f: &Finding, host: &str, at: i64) {
    for s in sightings(f) {
        match items
            .iter_mut()
            .find(|i| i.key == s.key && i.kind == Some(s.kind))
        {
            Some(i) => i.record(&s, host, at),
            None => {
                let mut i = InventoryItem::default();
                i.record(&s, host, at);
                items.push(i);
            }
        }
    }
}

#[test]
fn one_model_copied_to_two_hosts_and_paths_is_one_item_known_by_its_digest() {
    let mut items = Vec::new();
    fold(
        &mut items,
        &model_finding("/a/m.gguf", Some(model(&sha("CD")))),
        "h1",
        5,
    );
    fold(
        &mut items,
        &model_finding("/b/copy.gguf", Some(model(&sha("cd")))),
        "h2",
        3,
    );
    fold(
        &mut items,
        &model_finding("/a/m.gguf", Some(model(&sha("cd")))),
        "h1",
        9,
    );
    let models: Vec<_> = items
        .iter()
        .filter(|i| i.kind == Some(InventoryKind::Model))
        .collect();
    assert_eq!(models.len(), 1);
    let m = models[0];
    assert_eq!(m.key, format!("sha256:{}", sha("cd")));
    assert_eq!(m.sha256(), Some(sha("cd").as_str()));
    assert_eq!(m.hosts, ["h1", "h2"]);
    assert_eq!(m.paths, ["/a/m.gguf", "/b/copy.gguf"]);
    assert_eq!((m.first_seen_unix_nanos, m.last_seen_unix_nanos), (3, 9));
    assert_eq!(m.sightings, 3);
    assert_eq!(m.name, "llama 'Tiny' 7B (gguf)");
    assert_eq!(
        m.model.as_ref().unwrap().structure_fingerprint,
        sha("f0"),
        "the first identity stays"
    );
    // The process is a runtime, known by its executable's digest.
    let rt = items
        .iter()
        .find(|i| i.kind == Some(InventoryKind::Runtime))
        .unwrap();
    assert_eq!(
        (rt.key.as_str(), rt.name.as_str()),
        (format!("sha256:{}", sha("ab")).as_str(), "/usr/bin/python3")
    );
}

#[test]
fn a_model_not_hashed_is_known_by_its_path_and_endpoints_by_host_and_port() {
    let mut items = Vec::new();
    fold(&mut items, &model_finding("/m/x.pt", None), "h1", 1);
    let mut egress = finding(SignalKind::AiEgress, "/usr/bin/curl", "");
    egress.net = Some(NetObject {
        direction: NetDirection::Connect,
        address: "104.18.1.1".into(),
        port: 443,
        host: "api.openai.com".into(),
    });
    fold(&mut items, &egress, "h1", 2);
    let mut serving = finding(SignalKind::AiServing, "/usr/bin/ollama", "");
    serving.net = Some(NetObject {
        direction: NetDirection::Listen,
        address: "0.0.0.0".into(),
        port: 11434,
        host: String::new(),
    });
    fold(&mut items, &serving, "h2", 3);
    let keys: Vec<(&str, &str)> = items
        .iter()
        .map(|i| (i.kind.unwrap().as_str(), i.key.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("runtime", format!("sha256:{}", sha("ab")).as_str()),
            ("model", "path:/m/x.pt"),
            ("runtime", "path:/usr/bin/curl"),
            ("endpoint", "connect:api.openai.com:443"),
            ("runtime", "path:/usr/bin/ollama"),
            ("endpoint", "listen:listen:11434"),
        ]
    );
    assert_eq!(items[1].name, "x.pt");
}

#[test]
fn policy_findings_show_nothing_and_gpu_use_shows_only_its_runtime() {
    assert!(sightings(&finding(SignalKind::Policy, "/usr/bin/vigil-agent", "")).is_empty());
    let s = sightings(&finding(SignalKind::GpuUse, "/usr/bin/python3", ""));
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].kind, InventoryKind::Runtime);
}

#[test]
fn an_item_stays_bounded_however_many_hosts_and_paths_report_it() {
    let mut item = InventoryItem::default();
    for n in 0..(MAX_HOSTS + 50) {
        let f = model_finding(&format!("/p/{n}.gguf"), Some(model(&sha("cd"))));
        let s = &sightings(&f)[1];
        item.record(s, &format!("host-{n}"), n as i64);
        item.record(s, &format!("host-{n}"), n as i64);
    }
    assert_eq!(item.hosts.len(), MAX_HOSTS);
    assert_eq!(item.unnamed_host_sightings, 100);
    assert_eq!(item.paths.len(), MAX_PATHS);
    assert_eq!(
        item.unnamed_path_sightings,
        2 * (MAX_HOSTS + 50 - MAX_PATHS) as u64
    );
    let long = model_finding(&format!("/{}", "é".repeat(2000)), None);
    let key = &sightings(&long)[1].key;
    assert!(key.len() <= MAX_KEY_BYTES && key.starts_with("path:/é"));
    let mut item = InventoryItem::default();
    item.record(&sightings(&long)[1], "h", 1);
    assert!(item.paths[0].len() <= MAX_PATH_BYTES && item.paths[0].starts_with("/é"));
}

#[test]
fn approval_is_by_digest_and_approved_models_not_yet_seen_are_listed() {
    let w = WorkloadApproval {
        id: "w1".into(),
        exe_sha256: sha("AB"),
        path: Some("/usr/bin/python3".into()),
        models: vec![sha("CD"), sha("EF")],
        ..Default::default()
    };
    let mut items = Vec::new();
    fold(
        &mut items,
        &model_finding("/a/m.gguf", Some(model(&sha("cd")))),
        "h1",
        5,
    );
    fold(&mut items, &model_finding("/a/other.pt", None), "h1", 5);
    let approved: Vec<bool> = items
        .iter()
        .map(|i| i.approved_by(std::slice::from_ref(&w)))
        .collect();
    assert_eq!(approved, [true, true, false]);
    let unseen = approved_but_unseen(&[w], |kind, key| {
        items.iter().any(|i| i.kind == Some(kind) && i.key == key)
    });
    assert_eq!(unseen.len(), 1);
    assert_eq!(unseen[0].key, format!("sha256:{}", sha("ef")));
    assert!(unseen[0].approved && unseen[0].sightings == 0);
}

#[test]
fn what_an_agent_sends_cannot_grow_an_item_or_relabel_a_model() {
    // Not a digest: keyed by path, so it can neither be approved nor
    // merge with a real digest's item.
    let f = finding(SignalKind::AiRuntime, "/opt/x", &"Z".repeat(100_000));
    assert_eq!(sightings(&f)[0].key, "path:/opt/x");
    let f = model_finding("/m/a.gguf", Some(model(&"ab".repeat(33))));
    assert_eq!(sightings(&f)[1].key, "path:/m/a.gguf");
    // Long names, hosts and identity fields are cut.
    let mut big = model(&sha("cd"));
    big.name = "n".repeat(1 << 20);
    big.risk_reasons = vec!["r".repeat(1 << 20); 1000];
    let f = model_finding("/m/a.gguf", Some(big));
    let mut item = InventoryItem::default();
    item.record(&sightings(&f)[1], &"h".repeat(1 << 20), 1);
    let json = serde_json::to_vec(&item).unwrap();
    assert!(json.len() < 64 << 10, "{} bytes", json.len());
    // The first identity stays; a later, safer one does not replace it...
    let mut item = InventoryItem::default();
    let mut dangerous = model(&sha("cd"));
    dangerous.risk = ModelRisk::Dangerous;
    dangerous.name = "evil".into();
    item.record(
        &sightings(&model_finding("/m/a.pt", Some(dangerous)))[1],
        "h1",
        1,
    );
    let mut relabel = model(&sha("cd"));
    relabel.name = "harmless".into();
    item.record(
        &sightings(&model_finding("/m/a.pt", Some(relabel)))[1],
        "h2",
        2,
    );
    let m = item.model.as_ref().unwrap();
    assert_eq!((m.risk, m.name.as_str()), (ModelRisk::Dangerous, "evil"));
    assert!(item.name.contains("evil"), "{}", item.name);
    // ...a more dangerous one does.
    let mut item = InventoryItem::default();
    item.record(
        &sightings(&model_finding("/m/b.pt", Some(model(&sha("ee")))))[1],
        "h1",
        1,
    );
    let mut worse = model(&sha("ee"));
    worse.risk = ModelRisk::Dangerous;
    item.record(
        &sightings(&model_finding("/m/b.pt", Some(worse)))[1],
        "h2",
        2,
    );
    assert_eq!(item.model.as_ref().unwrap().risk, ModelRisk::Dangerous);
}
