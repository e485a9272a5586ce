use super::*;
use vigil_domain::{FileObject, NetDirection, NetObject};

fn source(files: &[(&str, &str)]) -> PolicySource {
    files
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_string()))
        .collect()
}

fn finding(signal: SignalKind, exe: &str, path: &str) -> Finding {
    Finding {
        seq: 1,
        rule_id: "vigil.builtin".into(),
        severity: Severity::High,
        signal,
        observed_at_unix_nanos: 1,
        process: ProcessInfo {
            pid: 42,
            ppid: 1,
            exe: exe.into(),
            argv: vec![exe.into()],
            ..Default::default()
        },
        file: (!path.is_empty()).then(|| FileObject::at(path)),
        net: None,
        gpu: None,
        action: String::new(),
        summary: "s".into(),
    }
}

const RULES: &str = r#"id: kill-renamed-python
description: python under another name loading weights
severity: critical
when: [model_file]
condition: process.name != "python3" && file.path.endsWith(".gguf")
action: kill
exceptions:
  - process.exe.startsWith("/opt/approved/")
---
id: model-files
description: any other model file
severity: high
when: [model_file]
---
lists:
  ai_api_hosts: [api.openai.com]
---
id: ai-api
description: AI API lookups
severity: medium
when: [ai_egress]
condition: net.host in lists.ai_api_hosts
"#;

#[test]
fn first_matching_rule_decides_and_exceptions_apply() {
    let set = PolicySet::compile(&source(&[("rules.yaml", RULES)])).unwrap();
    let host = HostFacts::default();
    let d = set
        .evaluate(
            &finding(SignalKind::ModelFile, "/tmp/logrotate-helper", "/x/m.gguf"),
            None,
            &host,
        )
        .unwrap();
    assert_eq!(
        (d.rule_id.as_str(), d.action),
        ("kill-renamed-python", Action::Kill)
    );
    let d = set
        .evaluate(
            &finding(SignalKind::ModelFile, "/opt/approved/helper", "/x/m.gguf"),
            None,
            &host,
        )
        .unwrap();
    assert_eq!(
        (d.rule_id.as_str(), d.action),
        ("model-files", Action::Alert)
    );
    let mut egress = finding(SignalKind::AiEgress, "/usr/bin/curl", "");
    egress.net = Some(NetObject {
        direction: NetDirection::DnsQuery,
        address: "127.0.0.53".into(),
        port: 53,
        host: "api.openai.com".into(),
    });
    assert_eq!(
        set.evaluate(&egress, None, &host).unwrap().rule_id,
        "ai-api"
    );
    egress.net.as_mut().unwrap().host = "example.com".into();
    assert_eq!(set.evaluate(&egress, None, &host), None);
    assert!(!set.reads_parent(SignalKind::ModelFile));
    // No rule for the signal: the policy allows it.
    assert_eq!(
        set.evaluate(&finding(SignalKind::GpuUse, "/bin/x", ""), None, &host),
        None
    );
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    PolicySet::compile(&source(files))
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn problems_are_reported_with_file_line_and_column() {
    let unknown_field = "id: a\ndescription: d\nseverity: high\nwhen: [model_file]\nacton: kill\n";
    let e = errors(&[("p/a.yaml", unknown_field)]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("p/a.yaml:5:1: unknown field `acton`"),
        "{e:?}"
    );

    let syntax = "# header\nid: b\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.exe.startsWith(\"/tmp\" &&\n";
    let e = errors(&[("b.yaml", syntax)]);
    assert!(e[0].starts_with("b.yaml:6:"), "{e:?}");
    assert!(e[0].contains("CEL syntax error"), "{e:?}");

    let field = "id: c\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.exee == \"x\"\n";
    let e = errors(&[("c.yaml", field)]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("c.yaml:5:12: unknown field process.exee"),
        "{e:?}"
    );

    let types = "id: d\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.pid == \"1\"\n";
    let e = errors(&[("d.yaml", types)]);
    assert!(e[0].contains("cannot compare int with string"), "{e:?}");

    let not_bool =
        "id: e\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.exe\n";
    let e = errors(&[("e.yaml", not_bool)]);
    assert!(e[0].contains("a condition must be a bool"), "{e:?}");

    let second_doc = "id: f\ndescription: d\nseverity: high\nwhen: [model_file]\n---\nid: g\ndescription: d\nseverity: hihg\nwhen: [model_file]\n";
    let e = errors(&[("f.yaml", second_doc)]);
    assert!(e[0].starts_with("f.yaml:8:"), "{e:?}");
    assert!(e[0].contains("unknown variant `hihg`"), "{e:?}");

    let e = errors(&[("x.yaml", "id: h\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: net.host in lists.nope\n")]);
    assert!(e[0].contains("unknown list lists.nope"), "{e:?}");
    let dup = "id: i\ndescription: d\nseverity: high\nwhen: [model_file]\n";
    let e = errors(&[("y.yaml", dup), ("z.yaml", dup)]);
    assert!(
        e[0].starts_with("z.yaml:1:1: rule id i is already used at y.yaml:1"),
        "{e:?}"
    );
}

#[test]
fn the_default_pack_compiles_and_covers_every_signal() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default");
    let files: PolicySource = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    let set = PolicySet::compile(&files).unwrap_or_else(|e| panic!("{e:?}"));
    for signal in [
        SignalKind::ModelFile,
        SignalKind::AiRuntime,
        SignalKind::GpuDevice,
        SignalKind::GpuUse,
        SignalKind::AiEgress,
        SignalKind::AiServing,
    ] {
        let d = set.evaluate(
            &finding(signal, "/usr/bin/python3.11", "/m/x.onnx"),
            None,
            &HostFacts::default(),
        );
        assert!(d.is_some(), "no default rule for {signal}");
    }
    // A package manager touching a runtime library is not a finding.
    assert_eq!(
        set.evaluate(
            &finding(SignalKind::AiRuntime, "/usr/bin/dpkg", ""),
            None,
            &HostFacts::default()
        ),
        None
    );
}

#[test]
fn a_dry_run_bundle_reports_every_action_without_doing_it() {
    let files = source(&[
        ("rules.yaml", RULES),
        ("settings.yaml", "settings:\n  dry_run: true\n"),
    ]);
    let set = PolicySet::compile(&files).unwrap();
    let d = set
        .evaluate(
            &finding(SignalKind::ModelFile, "/tmp/logrotate-helper", "/x/m.gguf"),
            None,
            &HostFacts::default(),
        )
        .unwrap();
    assert_eq!((d.action, d.dry_run), (Action::Kill, true));
    let e = errors(&[("s.yaml", "settings:\n  dry_rn: true\n")]);
    assert!(
        e[0].starts_with("s.yaml:2:3: settings: unknown field `dry_rn`"),
        "{e:?}"
    );
}

#[test]
fn block_scalar_conditions_place_errors_and_parent_is_read_only_when_asked() {
    let block = "id: b\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: |\n  process.uid >= 0 &&\n    parent.nmae == \"bash\"\n";
    let e = errors(&[("b.yaml", block)]);
    assert!(
        e[0].starts_with("b.yaml:7:5: unknown field parent.nmae"),
        "{e:?}"
    );
    let rule = "id: p\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: parent.name == \"bash\"\n";
    let set = PolicySet::compile(&source(&[("p.yaml", rule)])).unwrap();
    assert!(set.reads_parent(SignalKind::ModelFile));
    let f = finding(SignalKind::ModelFile, "/usr/bin/python3", "/m/x.gguf");
    let bash = ProcessInfo {
        pid: 1,
        exe: "/usr/bin/bash".into(),
        ..Default::default()
    };
    assert!(set
        .evaluate(&f, Some(&bash), &HostFacts::default())
        .is_some());
    assert!(set.evaluate(&f, None, &HostFacts::default()).is_none());
}

fn rule_with_condition(condition: &str) -> String {
    format!("id: m\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: '{condition}'\n")
}

#[test]
fn malformed_conditions_are_diagnostics_not_panics() {
    for condition in [
        r#"process.exe.startsWith("/tmp" &&"#,
        "process.name ==",
        "(((",
        ")))",
        "&&",
        "!",
        ".",
        "a ? b :",
        "{1: ",
        "x.exists(y,",
        "process.argv.map(x,",
        "Foo{a:",
        "`a`",
        "\"unterminated",
        "\\u0000",
        "é",
    ] {
        let e = errors(&[("m.yaml", &rule_with_condition(condition))]);
        assert_eq!(e.len(), 1, "{condition}: {e:?}");
        assert!(e[0].starts_with("m.yaml:5:"), "{condition}: {e:?}");
    }
}

#[test]
fn an_invalid_regular_expression_is_a_diagnostic_not_a_silent_false() {
    let e = errors(&[(
        "m.yaml",
        &rule_with_condition(r#"process.exe.matches("(unclosed")"#),
    )]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("m.yaml:5:"), "{e:?}");
    assert!(e[0].contains("invalid regular expression"), "{e:?}");
    // A valid one compiles.
    assert!(PolicySet::compile(&source(&[(
        "m.yaml",
        &rule_with_condition(r#"process.exe.matches("^/tmp/.*$")"#),
    )]))
    .is_ok());
}

#[test]
fn compiling_leaves_other_threads_panics_to_the_panic_hook() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("unrelated") {
            SEEN.fetch_add(1, Ordering::SeqCst);
        }
        previous(info);
    }));
    let compiling = std::thread::spawn(|| {
        for _ in 0..50 {
            let _ = PolicySet::compile(&source(&[(
                "m.yaml",
                &rule_with_condition(r#"process.exe.startsWith("/tmp" &&"#),
            )]));
        }
    });
    for _ in 0..20 {
        let unrelated = std::thread::Builder::new()
            .name("unrelated".into())
            .spawn(|| panic!("an unrelated thread's panic"))
            .unwrap();
        assert!(unrelated.join().is_err());
    }
    compiling.join().unwrap();
    assert_eq!(SEEN.load(Ordering::SeqCst), 20);
}

#[test]
fn the_yaml_parser_places_values_keys_documents_and_syntax_errors() {
    // Quoted and plain exceptions, after a comment-only document.
    let rules = "# only a comment\n---\n---\nid: q\ndescription: d\nseverity: high\nwhen: [model_file]\nexceptions:\n  - \"process.nme == 'x'\"\n  -   process.exe.startsWith(\"/a\")\n  - 'parent.nmae == \"y\"'\n";
    let e = errors(&[("q.yaml", rules)]);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("q.yaml:9:6: unknown field process.nme"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("q.yaml:11:6: unknown field parent.nmae"),
        "{e:?}"
    );
    // Every document's problem is reported, each in its own place.
    let two = "id: a\ndescription: d\nseverity: hihg\nwhen: [model_file]\n---\nid: b\ndescription: d\nseverity: high\nwhen: []\n";
    let e = errors(&[("t.yaml", two)]);
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("t.yaml:3:11: severity: unknown variant `hihg`"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("t.yaml:9:1: when: list at least one signal"),
        "{e:?}"
    );
    // A YAML syntax error is a diagnostic at the parser's position.
    let e = errors(&[("s.yaml", "id: a\ndescription: [d\n")]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("s.yaml:"), "{e:?}");
    // The enforcement test's messages.
    let cel = "id: bad.cel\ndescription: d\nseverity: high\nwhen: [model_file]\ncondition: process.name ==\n";
    assert!(errors(&[("rules.yaml", cel)])[0].starts_with("rules.yaml:5:"));
    let field = "id: bad.field\ndescription: d\nseverity: high\nwhen: [model_file]\nactoin: kill\n";
    assert!(
        errors(&[("rules.yaml", field)])[0].starts_with("rules.yaml:5:1: unknown field `actoin`")
    );
}

/// Each of these aborted the process with a stack overflow (the parser,
/// the check or the interpreter recursing once per level) before the
/// bounds in `condition_limits`; this test runs on a 2 MiB test thread,
/// the size of the agent's tokio workers.
#[test]
fn deep_or_long_conditions_are_diagnostics_not_stack_overflows() {
    let chain = |term: &str, n: usize| format!("1{} > 0", term.repeat(n));
    for (condition, expected) in [
        (chain(" + 1", 1000), "nests at most 32 levels deep"),
        (
            format!("process.argv{} == \"\"", "[0]".repeat(1000)),
            "nests at most 32 levels deep",
        ),
        (
            format!("process{} == \"\"", ".name".repeat(500)),
            "nests at most 32 levels deep",
        ),
        (
            format!("{}true{}", "[1].all(x, ".repeat(60), ")".repeat(60)),
            "nests at most 32 levels deep",
        ),
        (
            format!("{}true{}", "(".repeat(2000), ")".repeat(2000)),
            "CEL syntax error",
        ),
        (
            format!("size({}1{}) > 0", "[".repeat(1500), "]".repeat(1500)),
            "CEL syntax error",
        ),
        (chain(" + 1", 100_000), "a condition is at most 4096 bytes"),
    ] {
        let e = errors(&[("m.yaml", &rule_with_condition(&condition))]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("m.yaml:5:"), "{e:?}");
        assert!(e[0].contains(expected), "{expected}: {e:?}");
    }
}

#[test]
fn conditions_at_the_depth_bound_compile_and_evaluate_on_a_small_stack() {
    let host = HostFacts::default();
    let f = finding(SignalKind::ModelFile, "/bin/x", "/m/a.gguf");
    for condition in [
        format!("1{} > 0", " + 1".repeat(30)),
        format!("{}true{}", "[1].all(x, ".repeat(15), ")".repeat(15)),
        format!("size({}1{}) > 0", "[".repeat(29), "]".repeat(29)),
        vec!["process.pid > 0"; 200].join(" && "),
    ] {
        let set = PolicySet::compile(&source(&[("m.yaml", &rule_with_condition(&condition))]))
            .unwrap_or_else(|e| panic!("{condition}: {e:?}"));
        assert!(set.evaluate(&f, None, &host).is_some(), "{condition}");
    }
}

/// The document outline once rescanned the file for each document's
/// first line: 100k empty documents took minutes.
#[test]
fn a_stream_of_many_documents_is_outlined_in_linear_time() {
    let many = "---\n".repeat(100_000);
    let started = std::time::Instant::now();
    let set = PolicySet::compile(&source(&[("m.yaml", &many)])).unwrap();
    assert!(set.rule_ids().is_empty());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn model_identity_fields_are_policy_inputs_and_empty_without_a_model() {
    let rules = r#"id: dangerous-checkpoint
description: a checkpoint that runs code, outside the model store
severity: critical
when: [model_file, model_risk]
condition: >
  file.model_risk == "dangerous" && "os.system" in file.model_dangerous_imports
  && file.model_parameters > 1000 && file.model_format == "pytorch-zip"
  && file.model_fingerprint.startsWith("ab") && file.model_sha256 != ""
action: kill
---
id: uninspected
description: anything else
severity: low
when: [model_file]
condition: file.model_risk == "unknown" && file.model_name == "" && size(file.model_dangerous_imports) == 0
"#;
    let set = PolicySet::compile(&source(&[("rules.yaml", rules)])).unwrap();
    let host = HostFacts::default();
    let mut f = finding(SignalKind::ModelRisk, "/usr/bin/python3", "/tmp/evil.pt");
    f.file.as_mut().unwrap().model = Some(Box::new(vigil_domain::ModelIdentity {
        format: "pytorch-zip".into(),
        parameters: 5_000,
        sha256: "00".repeat(32),
        structure_fingerprint: "ab".repeat(32),
        risk: vigil_domain::ModelRisk::Dangerous,
        dangerous_imports: vec!["posix.system".into(), "os.system".into()],
        ..Default::default()
    }));
    let d = set.evaluate(&f, None, &host).unwrap();
    assert_eq!(
        (d.rule_id.as_str(), d.action),
        ("dangerous-checkpoint", Action::Kill)
    );
    let plain = finding(SignalKind::ModelFile, "/usr/bin/python3", "/tmp/m.gguf");
    let d = set.evaluate(&plain, None, &host).unwrap();
    assert_eq!(d.rule_id, "uninspected");
    let bad = PolicySet::compile(&source(&[(
        "bad.yaml",
        "id: x\ndescription: d\nseverity: low\nwhen: [model_file]\ncondition: file.model.risk == \"x\"\n",
    )]))
    .unwrap_err();
    let bad = format!("{:?}", bad);
    assert!(bad.contains("bad.yaml") && bad.contains("line: 5"), "{bad}");
}
