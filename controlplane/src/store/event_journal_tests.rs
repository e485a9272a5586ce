//! The SIEM export's journal (`event/`): one dense sequence of every kind,
//! written in the apply that stores each alert and audit entry.

use super::*;
use openraft::{CommittedLeaderId, EntryPayload};
use vigil_domain::{Finding, ProcessInfo, SensorMode};

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn finding(seq: u64, action: &str) -> Finding {
    Finding {
        seq,
        rule_id: format!("rule.{seq}"),
        severity: if action.is_empty() {
            Severity::Medium
        } else {
            Severity::High
        },
        signal: SignalKind::AiRuntime,
        observed_at_unix_nanos: 5,
        process: ProcessInfo {
            pid: 9,
            argv: vec!["python".into(), "serve.py".into()],
            ..Default::default()
        },
        file: None,
        net: None,
        gpu: None,
        action: action.into(),
        summary: "s".into(),
    }
}

fn register(id: &str) -> Command {
    Command::RegisterAgent {
        agent: vigil_domain::AgentIdentity {
            agent_id: id.into(),
            hostname: format!("{id}.example"),
            agent_version: "0.1.0".into(),
            sensor_mode: SensorMode::Ebpf,
            kernel_release: "6.1".into(),
            hooks: vec![],
        },
        at_unix_nanos: 100,
    }
}

fn append(id: &str, at: i64, findings: Vec<Finding>) -> Command {
    Command::AppendAlerts {
        agent_id: id.into(),
        received_at_unix_nanos: at,
        findings,
    }
}

fn audit(action: &str) -> Command {
    Command::AppendAudit {
        at_unix_nanos: 300,
        actor: "operator alice".into(),
        action: action.into(),
        subject: "x".into(),
        detail: String::new(),
    }
}

fn enroll(id: &str) -> Command {
    Command::RecordTpmEnrollment {
        agent_id: id.into(),
        ek_sha256: "e".repeat(64),
        ek_certificate_issuer: "CN=tpm ca".into(),
        ak_sha256: "a".repeat(64),
        at_unix_nanos: 400,
    }
}

fn all() -> SiemFilter {
    SiemFilter::default()
}

/// (cursor, kind, alert index or audit action) of every event kept.
fn stream(reader: &StateReader, filter: &SiemFilter) -> Vec<(u64, EventKind, String)> {
    let from = reader.first_event_cursor().unwrap() - 1;
    let page = reader.events_after(from, 1000, 1000, filter).unwrap();
    page.events
        .into_iter()
        .map(|e| {
            let what = match &e.record {
                EventRecord::Alert(a) => format!("alert {}", a.index),
                EventRecord::Audit(x) => x.action.clone(),
            };
            (e.cursor, e.kind, what)
        })
        .collect()
}

fn kinds_commands() -> Vec<Command> {
    vec![
        register("a"),
        audit("policy.push"),
        append("a", 200, vec![finding(1, ""), finding(2, "kill")]),
        audit("workload.approve"),
        enroll("a"),
        audit("certificate.revoke"),
    ]
}

#[tokio::test]
async fn every_kind_is_journaled_in_apply_order_with_dense_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let mut watch = reader.watch_events();
    assert_eq!(reader.last_event_cursor(), 0);
    let entries: Vec<_> = kinds_commands()
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    sm.apply(entries).await.unwrap();
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), 7);
    assert_eq!(reader.last_event_cursor(), 7);
    assert_eq!(reader.first_event_cursor().unwrap(), 1);
    assert_eq!(
        stream(&reader, &all()),
        vec![
            (1, EventKind::PolicyChange, "policy.push".to_string()),
            (2, EventKind::Finding, "alert 1".to_string()),
            (3, EventKind::Enforcement, "alert 2".to_string()),
            // The enforcement's audit entry, right after its finding.
            (4, EventKind::Audit, "enforce.kill".to_string()),
            (5, EventKind::ApprovalChange, "workload.approve".to_string()),
            (6, EventKind::Attestation, "attest.enroll".to_string()),
            (7, EventKind::Audit, "certificate.revoke".to_string()),
        ]
    );
    // The journal records carry what filters read.
    let journal = reader.journal_after(0, 100).unwrap();
    let (_, enforce_audit) = &journal[3];
    assert_eq!(enforce_audit.agent_id, "a");
    assert_eq!(enforce_audit.hostname, "a.example");
    let (_, attest) = &journal[5];
    assert_eq!(
        (attest.agent_id.as_str(), attest.hostname.as_str()),
        ("a", "a.example")
    );
    let (_, policy) = &journal[0];
    assert!(policy.agent_id.is_empty() && policy.hostname.is_empty());
    let (_, alert) = &journal[1];
    assert_eq!(alert.refers, JournalRef::Alert(1));
    assert_eq!(alert.rule_id, "rule.1");
    assert_eq!(alert.signal, Some(SignalKind::AiRuntime));
}

#[tokio::test]
async fn filters_pick_from_the_journal_and_pages_move_past_what_they_leave_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let entries: Vec<_> = kinds_commands()
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    sm.apply(entries).await.unwrap();
    let cursors = |f: SiemFilter| -> Vec<u64> {
        stream(&reader, &f).into_iter().map(|(c, _, _)| c).collect()
    };
    assert_eq!(
        cursors(SiemFilter {
            kinds: vec![EventKind::PolicyChange, EventKind::ApprovalChange],
            ..all()
        }),
        vec![1, 5]
    );
    assert_eq!(
        cursors(SiemFilter {
            min_severity: Some(Severity::High),
            ..all()
        }),
        vec![3]
    );
    // A host: its alerts and the audit entries about it, not policy.
    assert_eq!(
        cursors(SiemFilter {
            hosts: vec!["a.example".into()],
            ..all()
        }),
        vec![2, 3, 4, 6]
    );
    assert_eq!(
        cursors(SiemFilter {
            rules: vec!["rule.2".into()],
            ..all()
        }),
        vec![3]
    );
    assert_eq!(
        cursors(SiemFilter {
            signals: vec![SignalKind::AiRuntime],
            ..all()
        }),
        vec![2, 3]
    );
    // A page bounded by the scan: nothing passes, the cursor still moves.
    let none = SiemFilter {
        rules: vec!["no.such.rule".into()],
        ..all()
    };
    let page = reader.events_after(0, 10, 3, &none).unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.scanned_to, 3);
    let page = reader.events_after(3, 10, 100, &none).unwrap();
    assert_eq!(page.scanned_to, 7);
    // Past the head: nothing, and the cursor stays.
    let page = reader.events_after(9, 10, 100, &all()).unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.scanned_to, 9);
    // A limit of matches.
    let page = reader.events_after(0, 2, 100, &all()).unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.scanned_to, 2);
}

/// Several appends in one command (alerts, their enforcement audits, an
/// attestation verdict), several commands in one batch entry and several
/// entries in one apply call all get consecutive seqs, none reused.
#[tokio::test]
async fn appends_within_one_command_batch_and_apply_chain_their_seqs() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_log, mut batched, batched_reader) = crate::store::open_stores(a.path()).unwrap();
    let (_log, mut single, single_reader) = crate::store::open_stores(b.path()).unwrap();
    let commands = vec![
        register("a"),
        append(
            "a",
            200,
            vec![finding(1, "kill"), finding(2, "freeze"), finding(3, "")],
        ),
        audit("policy.push"),
        register("b"),
        append("b", 210, vec![finding(1, "kill")]),
        audit("model.approve"),
    ];
    batched
        .apply(vec![
            entry(
                1,
                Command::Batch {
                    commands: commands[..3].to_vec(),
                },
            ),
            entry(
                2,
                Command::Batch {
                    commands: commands[3..].to_vec(),
                },
            ),
        ])
        .await
        .unwrap();
    single
        .apply(
            commands
                .into_iter()
                .enumerate()
                .map(|(i, c)| entry(i as u64 + 1, c))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let expected: Vec<(u64, EventKind, String)> = vec![
        (1, EventKind::Enforcement, "alert 1".into()),
        (2, EventKind::Audit, "enforce.kill".into()),
        (3, EventKind::Enforcement, "alert 2".into()),
        (4, EventKind::Audit, "enforce.freeze".into()),
        (5, EventKind::Finding, "alert 3".into()),
        (6, EventKind::PolicyChange, "policy.push".into()),
        (7, EventKind::Enforcement, "alert 4".into()),
        (8, EventKind::Audit, "enforce.kill".into()),
        (9, EventKind::ApprovalChange, "model.approve".into()),
    ];
    assert_eq!(stream(&batched_reader, &all()), expected);
    assert_eq!(stream(&single_reader, &all()), expected);
    assert_eq!(batched_reader.last_event_cursor(), 9);
    // The audit chain's own indexes are dense too, beside the journal's.
    let audit: Vec<u64> = batched_reader
        .audit_after(0, 100)
        .unwrap()
        .iter()
        .map(|e| e.index)
        .collect();
    assert_eq!(audit, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn retention_removes_a_prefix_of_the_journal_and_names_the_oldest_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let prune = |keep_at_most: u64| Command::PruneAlerts {
        at_unix_nanos: 10_000,
        keep_at_most,
        older_than_unix_nanos: 0,
    };
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, append("a", 100, vec![finding(1, "")])), // seq 1
        entry(3, audit("policy.push")),                   // seq 2
        entry(4, append("a", 110, vec![finding(2, "")])), // seq 3
        entry(5, audit("workload.approve")),              // seq 4
        entry(6, append("a", 120, vec![finding(3, "")])), // seq 5
        // Keep 1: alerts 1 and 2 go, and with them seqs 1 to 3.
        entry(7, prune(1)), // its own audit entry: seq 6
    ])
    .await
    .unwrap();
    assert_eq!(reader.first_event_cursor().unwrap(), 4);
    assert_eq!(reader.last_event_cursor(), 6);
    // From 0 the reader gets the gap named; from 3 on it reads.
    match reader.events_after(0, 100, 100, &all()) {
        Err(EventsError::OutOfRange {
            after: 0,
            oldest: 4,
        }) => {}
        other => panic!("{other:?}"),
    }
    let err = reader.events_after(2, 100, 100, &all()).unwrap_err();
    assert!(
        err.to_string().contains("oldest event kept (4)")
            && err.to_string().contains("resume with cursor 3"),
        "{err}"
    );
    let page = reader.events_after(3, 100, 100, &all()).unwrap();
    let got: Vec<(u64, EventKind)> = page.events.iter().map(|e| (e.cursor, e.kind)).collect();
    assert_eq!(
        got,
        vec![
            (4, EventKind::ApprovalChange),
            (5, EventKind::Finding),
            (6, EventKind::Audit),
        ]
    );
    assert!(reader.journal_after(0, 100).unwrap()[0].0 == 4);
    // The audit chain itself stays whole (policy.push is still there).
    assert_eq!(reader.audit_after(0, 100).unwrap().len(), 3);
    // Nothing due: the journal does not change.
    sm.apply(vec![entry(8, prune(5))]).await.unwrap();
    assert_eq!(reader.first_event_cursor().unwrap(), 4);
    assert_eq!(reader.last_event_cursor(), 6);
}

#[tokio::test]
async fn a_snapshot_carries_the_journal_and_replicas_agree_on_the_digest() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_log, mut first, first_reader) = crate::store::open_stores(a.path()).unwrap();
    let (_log, mut replica, replica_reader) = crate::store::open_stores(b.path()).unwrap();
    let mut commands = kinds_commands();
    commands.push(Command::PruneAlerts {
        at_unix_nanos: 10_000,
        keep_at_most: 1,
        older_than_unix_nanos: 0,
    });
    let entries = || {
        commands
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, c))
            .collect::<Vec<_>>()
    };
    first.apply(entries()).await.unwrap();
    replica.apply(entries()).await.unwrap();
    assert_eq!(
        first_reader.digest().unwrap(),
        replica_reader.digest().unwrap()
    );
    assert_eq!(
        first_reader.journal_after(0, 100).unwrap(),
        replica_reader.journal_after(0, 100).unwrap()
    );

    let snap = first
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let (_log, mut installed, installed_reader) = crate::store::open_stores(c.path()).unwrap();
    let watch = installed_reader.watch_events();
    installed
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert!(watch.has_changed().unwrap());
    assert_eq!(installed_reader.last_event_cursor(), 8);
    assert_eq!(
        installed_reader.first_event_cursor().unwrap(),
        first_reader.first_event_cursor().unwrap()
    );
    assert_eq!(
        stream(&installed_reader, &SiemFilter::default()),
        stream(&first_reader, &SiemFilter::default())
    );
    // The same records (but for the membership, which the snapshot's meta
    // brings and these test entries never set).
    let records = |r: &StateReader| -> Vec<(sled::IVec, sled::IVec)> {
        r.tree
            .iter()
            .map(Result::unwrap)
            .filter(|(k, _)| &k[..] != MEMBERSHIP)
            .collect()
    };
    assert_eq!(records(&installed_reader), records(&first_reader));
    // The next entry journals after the snapshot's last seq.
    installed
        .apply(vec![entry(20, audit("policy.rollback"))])
        .await
        .unwrap();
    assert_eq!(installed_reader.last_event_cursor(), 9);
}

/// A store reopened (a restarted node) keeps its journal and continues it.
#[tokio::test]
async fn the_journal_survives_reopening_and_continues() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm, _reader) = crate::store::open_stores(dir.path()).unwrap();
        sm.apply(vec![
            entry(1, register("a")),
            entry(2, append("a", 100, vec![finding(1, "")])),
            entry(3, audit("policy.push")),
        ])
        .await
        .unwrap();
    }
    let (_log, mut sm, reader) = {
        let mut opened = None;
        for _ in 0..250 {
            if let Ok(stores) = crate::store::open_stores(dir.path()) {
                opened = Some(stores);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        opened.expect("reopening the stores")
    };
    assert_eq!(reader.last_event_cursor(), 2);
    sm.apply(vec![entry(4, audit("workload.revoke"))])
        .await
        .unwrap();
    assert_eq!(
        stream(&reader, &SiemFilter::default())
            .into_iter()
            .map(|(c, _, _)| c)
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

/// A compromised agent sends findings as large as a message allows (a
/// command line of megabytes; stored whole). A page of the export decodes
/// what it picks at once and a subscriber that does not read holds its
/// page: 128 such records would be hundreds of MiB per subscriber. A page
/// stops once it holds [`EVENT_PAGE_BYTES`] (one record always), and the
/// next page carries on after it with nothing skipped.
#[tokio::test]
async fn a_page_of_huge_records_is_bounded_by_bytes_and_paging_skips_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let huge = |seq: u64| {
        let mut f = finding(seq, "");
        f.process.argv = vec!["python".into(), "A".repeat(512 * 1024)];
        f
    };
    let mut entries = vec![entry(1, register("a"))];
    for i in 0..3u64 {
        let findings = (1..=8).map(|s| huge(i * 8 + s)).collect();
        entries.push(entry(i + 2, append("a", 200, findings)));
    }
    sm.apply(entries).await.unwrap();
    assert_eq!(reader.last_event_cursor(), 24);
    let mut after = 0;
    let mut seen = Vec::new();
    while after < 24 {
        let page = reader.events_after(after, 128, 4096, &all()).unwrap();
        let argv_bytes: usize = page
            .events
            .iter()
            .map(|e| match &e.record {
                EventRecord::Alert(a) => a.finding.process.argv.iter().map(String::len).sum(),
                EventRecord::Audit(_) => 0,
            })
            .sum();
        assert!(
            !page.events.is_empty() && argv_bytes <= EVENT_PAGE_BYTES + 512 * 1024 + 64,
            "a page of {} events holds {argv_bytes} bytes of command lines",
            page.events.len()
        );
        seen.extend(page.events.iter().map(|e| e.cursor));
        after = page.scanned_to;
    }
    assert_eq!(seen, (1..=24).collect::<Vec<u64>>());
}

/// Journal records carry what filters read, the rule id among them, as
/// long as an agent made it: a filter that passes none of them still stops
/// a page once it looked at [`EVENT_SCAN_BYTES`] of records (one at least),
/// and the next page goes on after the last looked at.
#[tokio::test]
async fn a_scan_over_huge_journal_records_is_bounded_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let huge = |seq: u64| {
        let mut f = finding(seq, "");
        f.rule_id = format!("{seq}{}", "r".repeat(1 << 20));
        f
    };
    let findings = (1..=8).map(huge).collect();
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, append("a", 200, findings)),
    ])
    .await
    .unwrap();
    let none = SiemFilter {
        rules: vec!["no.such.rule".into()],
        ..all()
    };
    let page = reader.events_after(0, 128, 4096, &none).unwrap();
    assert!(page.events.is_empty());
    assert!(
        page.scanned_to >= 1 && page.scanned_to < 8,
        "one page looked at {} records of 1 MiB",
        page.scanned_to
    );
    let mut after = page.scanned_to;
    let mut pages = 1;
    while after < 8 {
        after = reader
            .events_after(after, 128, 4096, &none)
            .unwrap()
            .scanned_to;
        pages += 1;
        assert!(pages <= 8, "every page moves");
    }
}

/// How long a SIEM feed's read of one event takes (`events_after` in pages
/// of 128, the feed's), next to rendering it as OCSF, measured by hand (a
/// release build; nothing is asserted about time):
///
/// ```text
/// VIGIL_EVENTS_SPEED=1 cargo test --release -p vigil-controlplane events_after_speed -- --nocapture
/// ```
#[tokio::test]
async fn events_after_speed() {
    if std::env::var_os("VIGIL_EVENTS_SPEED").is_none() {
        return;
    }
    const EVENTS: u64 = 20_000;
    const AGENTS: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let mut commands: Vec<Command> = (0..AGENTS)
        .map(|a| register(&format!("agent-{a:04}")))
        .collect();
    for batch in 0..EVENTS / 500 {
        let findings = (0..500)
            .map(|i| crate::realistic_finding::realistic_model_finding(batch * 500 + i + 1))
            .collect();
        commands.push(append(
            &format!("agent-{:04}", batch % AGENTS),
            200,
            findings,
        ));
    }
    let entries: Vec<_> = commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    sm.apply(entries).await.unwrap();
    let head = reader.last_event_cursor();
    assert_eq!(head, EVENTS);
    let read_all = |filter: &SiemFilter| {
        let mut cursor = 0;
        let mut events = Vec::new();
        while cursor < head {
            let page = reader.events_after(cursor, 128, 4096, filter).unwrap();
            cursor = page.scanned_to;
            events.extend(page.events);
        }
        events
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let time = |f: &dyn Fn() -> usize| {
        median(
            (0..5)
                .map(|_| {
                    let start = std::time::Instant::now();
                    std::hint::black_box(f());
                    start.elapsed().as_nanos() as f64 / EVENTS as f64
                })
                .collect(),
        )
    };
    let some_host = SiemFilter {
        hosts: vec!["agent-0003".into()],
        ..Default::default()
    };
    // Its parts: looking an alert up, decoding it.
    let get_alert = |i: u64| reader.tree.get(alert_key(i)).unwrap().unwrap();
    let stored: Vec<sled::IVec> = (1..=EVENTS).map(get_alert).collect();
    let get = time(&|| (1..=EVENTS).map(|i| get_alert(i).len()).sum());
    let decode = time(&|| {
        stored
            .iter()
            .map(|v| serde_json::from_slice::<Alert>(v).unwrap().finding.seq as usize)
            .sum()
    });
    let read = time(&|| read_all(&all()).len());
    let filtered = time(&|| read_all(&some_host).len());
    let events = read_all(&all());
    let render = time(&|| events.iter().map(|e| crate::ocsf::ocsf_json(e).len()).sum());
    println!(
        "{EVENTS} realistic findings, median of 5 rounds, per event in the journal:\n  \
         events_after, every event:          {read:.0} ns\n    \
         of which looking its alert up:      {get:.0} ns\n    \
         of which decoding it ({} bytes):   {decode:.0} ns\n  \
         events_after, a host's 1/{AGENTS} of them: {filtered:.0} ns\n  \
         ocsf_json of an event read:          {render:.0} ns",
        stored[0].len()
    );
}

fn audited(command: Command, action: &str) -> Command {
    Command::Audited {
        command: Box::new(command),
        audit: crate::raft_types::AuditNote {
            at_unix_nanos: 500,
            actor: "operator alice".into(),
            action: action.into(),
            subject: "workload w1".into(),
            detail: String::new(),
        },
    }
}

#[tokio::test]
async fn an_audited_change_and_its_audit_entry_are_one_apply_and_a_refused_one_is_not_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let workload = vigil_domain::WorkloadApproval {
        id: "w1".into(),
        ..Default::default()
    };
    let results = sm
        .apply(vec![
            // Refused (no such workload): neither the change nor an entry.
            entry(
                1,
                audited(
                    Command::RevokeWorkload { id: "w1".into() },
                    "workload.revoke",
                ),
            ),
            entry(
                2,
                audited(Command::ApproveWorkload { workload }, "workload.approve"),
            ),
            entry(
                3,
                audited(
                    Command::RevokeWorkload { id: "w1".into() },
                    "workload.revoke",
                ),
            ),
            // Not a plain command: refused whole.
            entry(
                4,
                audited(
                    Command::Batch {
                        commands: vec![audit("policy.push")],
                    },
                    "policy.push",
                ),
            ),
        ])
        .await
        .unwrap();
    assert!(matches!(results[0], CommandResult::Refused { .. }));
    assert!(matches!(results[1], CommandResult::Done));
    assert!(matches!(results[2], CommandResult::Done));
    assert!(matches!(results[3], CommandResult::Refused { .. }));
    assert_eq!(
        stream(&reader, &all()),
        vec![
            (1, EventKind::ApprovalChange, "workload.approve".to_string()),
            (2, EventKind::ApprovalChange, "workload.revoke".to_string()),
        ]
    );
    assert!(reader.workloads().unwrap().is_empty());
}
