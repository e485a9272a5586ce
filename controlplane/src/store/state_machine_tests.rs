use super::*;
use openraft::{CommittedLeaderId, EntryPayload};
use vigil_domain::{Finding, ProcessInfo, SensorCounters, SensorMode, Severity, SignalKind};

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn finding(seq: u64) -> Finding {
    Finding {
        seq,
        rule_id: "r".into(),
        severity: Severity::High,
        signal: SignalKind::ModelFile,
        observed_at_unix_nanos: 5,
        process: ProcessInfo {
            pid: 9,
            ..Default::default()
        },
        file: None,
        net: None,
        gpu: None,
        action: String::new(),
        summary: "s".into(),
    }
}

/// Opens the stores in `dir` just dropped, as a restarted node would:
/// sled's flusher thread may hold the directory's lock for a moment after
/// the last handle goes (a process that exits releases it at once; a test
/// reopening in-process waits, up to 5 s).
fn reopen_stores(
    dir: &std::path::Path,
) -> (crate::store::SledLogStore, SledStateMachine, StateReader) {
    for _ in 0..250 {
        if let Ok(stores) = crate::store::open_stores(dir) {
            return stores;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    crate::store::open_stores(dir).expect("reopening the stores")
}

/// A snapshot of `sm` now, as a leader builds one to send.
async fn snapshot_of(sm: &mut SledStateMachine) -> Snapshot<TypeConfig> {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap()
}

fn register(id: &str) -> Command {
    Command::RegisterAgent {
        agent: vigil_domain::AgentIdentity {
            agent_id: id.into(),
            hostname: format!("{id}.example"),
            agent_version: "0.1.0".into(),
            sensor_mode: SensorMode::Ebpf,
            kernel_release: "6.1".into(),
            hooks: vec!["tracepoint/sched/sched_process_exec".into()],
        },
        at_unix_nanos: 100,
    }
}

fn append(id: &str, seqs: &[u64]) -> Command {
    Command::AppendAlerts {
        agent_id: id.into(),
        received_at_unix_nanos: 200,
        findings: seqs.iter().map(|&s| finding(s)).collect(),
    }
}

#[tokio::test]
async fn alerts_get_dense_indexes_and_resent_findings_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let mut watch = reader.watch_alerts();
    let r = sm
        .apply(vec![
            entry(1, register("a")),
            entry(2, append("a", &[1, 2, 3])),
            entry(3, append("a", &[2, 3, 4])),
            entry(4, register("b")),
            entry(5, append("b", &[1])),
        ])
        .await
        .unwrap();
    assert_eq!(
        r[2],
        CommandResult::AlertsAppended {
            first_index: 4,
            appended: 1,
            duplicates: 2,
            up_to_seq: 4
        }
    );
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), 5);
    let alerts = reader.alerts_after(0, 100).unwrap();
    assert_eq!(
        alerts.iter().map(|a| a.index).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(alerts[3].finding.seq, 4);
    assert_eq!(alerts[4].agent_id, "b");
    assert_eq!(alerts[4].hostname, "b.example");
    assert_eq!(reader.alerts_after(3, 1).unwrap()[0].index, 4);
    assert_eq!(reader.agent("a").unwrap().unwrap().last_acked_seq, 4);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 5);
}

#[tokio::test]
async fn state_survives_reopening_the_database() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_log, mut sm, _reader) = crate::store::open_stores(dir.path()).unwrap();
        sm.apply(vec![
            entry(1, register("a")),
            entry(2, append("a", &[1, 2])),
        ])
        .await
        .unwrap();
    }
    let (_log, mut sm, reader) = reopen_stores(dir.path());
    assert_eq!(reader.last_alert_index(), 2);
    sm.apply(vec![entry(3, append("a", &[2, 3]))])
        .await
        .unwrap();
    let idx: Vec<u64> = reader
        .alerts_after(0, 10)
        .unwrap()
        .iter()
        .map(|a| a.index)
        .collect();
    assert_eq!(idx, vec![1, 2, 3]);
}

#[tokio::test]
async fn heartbeats_update_registered_agents_and_refuse_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let counters = SensorCounters {
        emitted: 5,
        filtered: 6,
        dropped: 0,
        received: 5,
        evicted: 1,
    };
    let hb = |id: &str| Command::Heartbeat {
        agent_id: id.into(),
        at_unix_nanos: 300,
        counters,
        spooled: 2,
        spool_dropped: 7,
        spool_full: true,
    };
    let r = sm
        .apply(vec![
            entry(1, register("a")),
            entry(2, hb("a")),
            entry(3, hb("zz")),
        ])
        .await
        .unwrap();
    assert!(matches!(r[2], CommandResult::Refused { .. }));
    let a = reader.agent("a").unwrap().unwrap();
    assert_eq!(a.counters, counters);
    assert_eq!(a.last_heartbeat_unix_nanos, 300);
    assert_eq!(a.first_seen_unix_nanos, 100);
    assert_eq!((a.spooled, a.spool_dropped, a.spool_full), (2, 7, true));
    assert_eq!(reader.agents().unwrap().len(), 1);
}

#[test]
fn a_heartbeat_entry_without_the_spool_fields_still_reads() {
    let old = r#"{"heartbeat.v1":{"agent_id":"a","at_unix_nanos":1,"counters":{"emitted":0,"filtered":0,"dropped":0},"spooled":3}}"#;
    let cmd: Command = serde_json::from_str(old).unwrap();
    assert!(matches!(
        cmd,
        Command::Heartbeat {
            spooled: 3,
            spool_dropped: 0,
            spool_full: false,
            ..
        }
    ));
}

#[tokio::test]
async fn policy_versions_only_move_forward() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let put = |v: u64| Command::PutPolicyBundle {
        version: v,
        bundle: format!("bundle-{v}").into_bytes(),
        pushed_at_unix_nanos: v as i64,
        note: "push".into(),
    };
    let r = sm
        .apply(vec![entry(1, put(1)), entry(2, put(2)), entry(3, put(2))])
        .await
        .unwrap();
    assert!(matches!(r[2], CommandResult::Refused { .. }));
    assert_eq!(
        reader.active_policy().unwrap(),
        Some((2, b"bundle-2".to_vec()))
    );
}

#[tokio::test]
async fn a_snapshot_rebuilds_the_same_state_elsewhere() {
    let a = tempfile::tempdir().unwrap();
    let (_log, mut sm, _reader) = crate::store::open_stores(a.path()).unwrap();
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, append("a", &[1, 2])),
    ])
    .await
    .unwrap();
    let snap = snapshot_of(&mut sm).await;

    let b = tempfile::tempdir().unwrap();
    let (_log, mut other, reader) = crate::store::open_stores(b.path()).unwrap();
    other
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(reader.last_alert_index(), 2);
    assert_eq!(reader.agent("a").unwrap().unwrap().last_acked_seq, 2);
    let (applied, _) = other.applied_state().await.unwrap();
    assert_eq!(applied.unwrap().index, 2);
    let cur = other.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(cur.meta, snap.meta);
}

#[test]
fn a_corrupt_snapshot_is_an_error_that_names_the_offset() {
    use crate::store::snapshot_file::SnapshotRecords;
    let read = |bytes: &[u8]| -> Result<crate::store::snapshot_file::Records, String> {
        SnapshotRecords::new(bytes).collect()
    };
    assert!(read(&[0, 0, 0, 9, 1]).unwrap_err().contains("byte 0"));
    assert!(read(&[0, 0, 0, 1, 7, 0, 0]).unwrap_err().contains("byte 5"));
    assert!(read(&[]).unwrap().is_empty());
    assert_eq!(
        read(&[0, 0, 0, 1, 7, 0, 0, 0, 2, 8, 9]).unwrap(),
        vec![(vec![7], vec![8, 9])]
    );
}

#[tokio::test]
async fn a_bad_snapshot_is_refused_and_the_state_is_left_as_it_was() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    sm.apply(vec![entry(1, register("a")), entry(2, append("a", &[1]))])
        .await
        .unwrap();
    let meta = snapshot_of(&mut sm).await.meta;
    let mut incoming = sm.begin_receiving_snapshot().await.unwrap();
    incoming.write_all(&[0, 0, 0, 9, 1]).await.unwrap();
    let err = sm.install_snapshot(&meta, incoming).await.unwrap_err();
    assert!(err.to_string().contains("byte 0"), "{err}");
    assert!(sm
        .tree
        .get(crate::store::snapshot_file::INSTALLING)
        .unwrap()
        .is_none());
    assert_eq!(reader.last_alert_index(), 1);
    assert!(reader.agent("a").unwrap().is_some());
}

#[tokio::test]
async fn an_install_a_crash_cut_off_is_finished_when_the_store_opens_again() {
    // A snapshot of a state with agent "a" and two alerts.
    let a = tempfile::tempdir().unwrap();
    let (_log, mut sm, _reader) = crate::store::open_stores(a.path()).unwrap();
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, append("a", &[1, 2])),
    ])
    .await
    .unwrap();
    let snap = snapshot_of(&mut sm).await;
    let mut bytes = Vec::new();
    {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = snap.snapshot;
        f.seek(std::io::SeekFrom::Start(0)).await.unwrap();
        f.read_to_end(&mut bytes).await.unwrap();
    }
    // Another store with a state of its own, cut off part way through
    // installing it: the marker set, the file in place, half the old
    // state gone.
    let b = tempfile::tempdir().unwrap();
    {
        let (_log, mut other, _reader) = crate::store::open_stores(b.path()).unwrap();
        other
            .apply(vec![
                entry(1, register("b")),
                entry(2, append("b", &[1, 2, 3])),
            ])
            .await
            .unwrap();
        let snapshot_dir = b.path().join("snapshots.v1");
        std::fs::write(
            snapshot_dir.join(crate::store::snapshot_file::INSTALLING_FILE),
            &bytes,
        )
        .unwrap();
        other
            .tree
            .insert(
                crate::store::snapshot_file::INSTALLING,
                serde_json::to_vec(&snap.meta).unwrap(),
            )
            .unwrap();
        other.tree.remove(alert_key(1)).unwrap();
        other.tree.flush().unwrap();
    }
    let (_log, mut other, reader) = reopen_stores(b.path());
    assert!(reader.agent("b").unwrap().is_none());
    assert_eq!(reader.agent("a").unwrap().unwrap().last_acked_seq, 2);
    assert_eq!(reader.last_alert_index(), 2);
    assert_eq!(reader.alert_tally().unwrap().total(), 2);
    let (applied, _) = other.applied_state().await.unwrap();
    assert_eq!(applied, snap.meta.last_log_id);
    assert!(other
        .tree
        .get(crate::store::snapshot_file::INSTALLING)
        .unwrap()
        .is_none());
    let current = other.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
}

#[tokio::test]
async fn the_alert_tally_is_kept_at_apply_and_recounted_for_a_store_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let critical_gpu = |seq| Finding {
        severity: Severity::Critical,
        signal: SignalKind::GpuDevice,
        action: "kill".into(),
        ..finding(seq)
    };
    let expected = vec![("gpu_device", "critical", 1), ("model_file", "high", 3)];
    {
        let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
        assert_eq!(reader.alert_tally().unwrap().total(), 0);
        assert_eq!(reader.audit_entries().unwrap(), 0);
        sm.apply(vec![
            entry(1, register("a")),
            entry(2, append("a", &[1, 2])),
            entry(3, append("a", &[2, 3])),
            entry(
                4,
                Command::AppendAlerts {
                    agent_id: "a".into(),
                    received_at_unix_nanos: 300,
                    findings: vec![critical_gpu(4)],
                },
            ),
        ])
        .await
        .unwrap();
        let tally = reader.alert_tally().unwrap();
        assert_eq!(tally.total(), 4);
        assert_eq!(tally.counts().collect::<Vec<_>>(), expected);
        // The enforcement is also an audit entry.
        assert_eq!(reader.audit_entries().unwrap(), 1);
        // As a store written before the tally was kept.
        sm.tree.remove(ALERT_TALLY).unwrap();
        sm.db.flush_async().await.unwrap();
    }
    let (_log, _sm, reader) = reopen_stores(dir.path());
    let tally = reader.alert_tally().unwrap();
    assert_eq!(tally.total(), 4);
    assert_eq!(tally.counts().collect::<Vec<_>>(), expected);
}

/// A batch entry applies its commands in order, each seeing the ones
/// before (the second finding batch of one agent skips what the first
/// stored); its results come back one per command; the same state as the
/// commands in entries of their own.
#[tokio::test]
async fn a_batch_applies_in_order_like_entries_of_their_own() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_log, mut batched, batched_reader) = crate::store::open_stores(a.path()).unwrap();
    let (_log, mut single, single_reader) = crate::store::open_stores(b.path()).unwrap();
    let commands = vec![
        register("a"),
        append("a", &[1, 2, 3]),
        append("a", &[2, 3, 4]),
        register("b"),
        append("b", &[1]),
    ];
    let r = batched
        .apply(vec![entry(
            1,
            Command::Batch {
                commands: commands.clone(),
            },
        )])
        .await
        .unwrap();
    let CommandResult::Batch(results) = &r[0] else {
        panic!("{r:?}");
    };
    assert_eq!(results.len(), 5);
    assert_eq!(
        results[2],
        CommandResult::AlertsAppended {
            first_index: 4,
            appended: 1,
            duplicates: 2,
            up_to_seq: 4
        }
    );
    // The same commands one entry each (indexes shifted: compare what
    // the entries wrote, not where the log was).
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
    assert_eq!(
        batched_reader.alerts_after(0, 100).unwrap(),
        single_reader.alerts_after(0, 100).unwrap()
    );
    assert_eq!(
        batched_reader.agent("a").unwrap().unwrap().last_acked_seq,
        4
    );
    assert!(batched_reader.tree.get(BATCH_PROGRESS).unwrap().is_none());
}

/// A batch a crash cut off resumes after its last stored command: none is
/// applied twice (an audit entry appended twice would be two entries).
#[tokio::test]
async fn a_batch_cut_off_by_a_crash_resumes_without_applying_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let audit = |what: &str| Command::AppendAudit {
        at_unix_nanos: 1,
        actor: "t".into(),
        action: what.into(),
        subject: "s".into(),
        detail: "d".into(),
    };
    // Entry 1's first two commands were stored, then the node crashed
    // before the entry's last write: it is applied again from the log.
    sm.apply(vec![entry(
        1,
        Command::Batch {
            commands: vec![audit("x"), audit("y")],
        },
    )])
    .await
    .unwrap();
    reader
        .tree
        .insert(BATCH_PROGRESS, serde_json::to_vec(&(2u64, 2usize)).unwrap())
        .unwrap();
    sm.apply(vec![entry(
        2,
        Command::Batch {
            commands: vec![audit("x"), audit("y"), audit("z")],
        },
    )])
    .await
    .unwrap();
    assert_eq!(reader.audit_entries().unwrap(), 3);
    assert!(reader.tree.get(BATCH_PROGRESS).unwrap().is_none());
}

#[tokio::test]
async fn retention_removes_the_oldest_by_count_and_age_and_keeps_the_tally() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let at = |t: i64, seqs: &[u64]| Command::AppendAlerts {
        agent_id: "a".into(),
        received_at_unix_nanos: t,
        findings: seqs.iter().map(|&s| finding(s)).collect(),
    };
    let prune = |keep_at_most: u64, older_than_unix_nanos: i64| Command::PruneAlerts {
        at_unix_nanos: 10_000,
        keep_at_most,
        older_than_unix_nanos,
    };
    let r = sm
        .apply(vec![
            entry(1, register("a")),
            entry(2, at(100, &[1, 2, 3])),
            entry(3, at(200, &[4, 5, 6])),
            entry(4, at(300, &[7, 8, 9, 10])),
            // Count: 10 stored, keep 8.
            entry(5, prune(8, 0)),
            // Age: all received before 250 go (3, 4, 5, 6).
            entry(6, prune(0, 250)),
            // Nothing due: nothing removed, no audit entry.
            entry(7, prune(100, 1)),
        ])
        .await
        .unwrap();
    assert_eq!(
        r[4..],
        [
            CommandResult::AlertsPruned {
                removed: 2,
                more: false
            },
            CommandResult::AlertsPruned {
                removed: 4,
                more: false
            },
            CommandResult::AlertsPruned {
                removed: 0,
                more: false
            },
        ]
    );
    let left: Vec<u64> = reader
        .alerts_after(0, 100)
        .unwrap()
        .iter()
        .map(|a| a.index)
        .collect();
    assert_eq!(left, vec![7, 8, 9, 10]);
    // Reading on from a cursor that was pruned gives what is left.
    assert_eq!(reader.alerts_after(2, 1).unwrap()[0].index, 7);
    assert_eq!(reader.alert_tally().unwrap().total(), 4);
    assert_eq!(reader.alert_tally_ever().unwrap().total(), 10);
    assert_eq!(reader.last_alert_index(), 10);
    let audit = reader.audit_after(0, 100).unwrap();
    let prunes: Vec<&str> = audit
        .iter()
        .filter(|e| e.action == "alerts.prune")
        .map(|e| e.subject.as_str())
        .collect();
    assert_eq!(prunes, vec!["2 alerts", "4 alerts"]);
    // New alerts keep counting from where they were.
    let r = sm.apply(vec![entry(8, at(400, &[11]))]).await.unwrap();
    assert!(matches!(
        r[0],
        CommandResult::AlertsAppended {
            first_index: 11,
            ..
        }
    ));
}

#[tokio::test]
async fn one_prune_entry_removes_a_bounded_number_and_says_more_are_due() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let total = super::PRUNE_AT_MOST + 5;
    let mut entries = vec![entry(1, register("a"))];
    let seqs: Vec<u64> = (1..=total).collect();
    for (i, chunk) in seqs.chunks(5_000).enumerate() {
        entries.push(entry(2 + i as u64, append("a", chunk)));
    }
    let next = 2 + entries.len() as u64;
    let prune = Command::PruneAlerts {
        at_unix_nanos: 1,
        keep_at_most: 1,
        older_than_unix_nanos: 0,
    };
    entries.push(entry(next, prune.clone()));
    entries.push(entry(next + 1, prune));
    let r = sm.apply(entries).await.unwrap();
    let n = r.len();
    assert_eq!(
        r[n - 2..],
        [
            CommandResult::AlertsPruned {
                removed: super::PRUNE_AT_MOST,
                more: true
            },
            CommandResult::AlertsPruned {
                removed: 4,
                more: false
            },
        ]
    );
    assert_eq!(reader.alerts_after(0, 10).unwrap().len(), 1);
    assert_eq!(reader.alert_tally().unwrap().total(), 1);
}

#[tokio::test]
async fn while_an_install_is_under_way_no_certificate_is_taken_as_good() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    assert_eq!(
        reader.certificate_standing("ab").unwrap(),
        CertificateStanding::Good
    );
    sm.tree
        .insert(crate::store::snapshot_file::INSTALLING, b"{}".to_vec())
        .unwrap();
    assert_eq!(
        reader.certificate_standing("ab").unwrap(),
        CertificateStanding::Unsettled
    );
}

#[tokio::test]
async fn a_crash_after_the_snapshot_was_recorded_leaves_only_the_marker_to_remove() {
    let dir = tempfile::tempdir().unwrap();
    let meta = {
        let (_log, mut sm, _reader) = crate::store::open_stores(dir.path()).unwrap();
        sm.apply(vec![entry(1, register("a")), entry(2, append("a", &[1]))])
            .await
            .unwrap();
        let meta = snapshot_of(&mut sm).await.meta;
        // Recorded, file renamed; the marker not yet removed.
        sm.tree
            .insert(
                crate::store::snapshot_file::INSTALLING,
                serde_json::to_vec(&meta).unwrap(),
            )
            .unwrap();
        sm.tree.flush().unwrap();
        meta
    };
    let (_log, mut sm, reader) = reopen_stores(dir.path());
    assert!(sm
        .tree
        .get(crate::store::snapshot_file::INSTALLING)
        .unwrap()
        .is_none());
    assert_eq!(reader.last_alert_index(), 1);
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, meta);
}

fn model_finding(seq: u64, path: &str, sha: &str) -> Finding {
    let mut f = finding(seq);
    f.process.exe = "/usr/bin/python3".into();
    f.process.exe_sha256 = "ab".repeat(32);
    f.observed_at_unix_nanos = 150 + seq as i64;
    f.file = Some(vigil_domain::FileObject {
        path: path.into(),
        model: Some(Box::new(vigil_domain::ModelIdentity {
            format: "gguf".into(),
            sha256: sha.into(),
            structure_fingerprint: "fp".into(),
            ..Default::default()
        })),
    });
    f
}

#[tokio::test]
async fn stored_alerts_build_the_inventory_once_each_and_approvals_mark_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let m = "cd".repeat(32);
    let batch = |id: &str, f: Vec<Finding>| Command::AppendAlerts {
        agent_id: id.into(),
        received_at_unix_nanos: 200,
        findings: f,
    };
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, register("b")),
        entry(
            3,
            batch(
                "a",
                vec![
                    model_finding(1, "/m/a.gguf", &m),
                    model_finding(2, "/m/b.gguf", &m),
                ],
            ),
        ),
        // A resend of seq 2 is not a second sighting.
        entry(4, batch("a", vec![model_finding(2, "/m/b.gguf", &m)])),
        entry(5, batch("b", vec![model_finding(1, "/x/a.gguf", &m)])),
        entry(
            6,
            Command::ApproveWorkload {
                workload: vigil_domain::WorkloadApproval {
                    id: "w1".into(),
                    exe_sha256: "ab".repeat(32),
                    models: vec!["ef".repeat(32)],
                    ..Default::default()
                },
            },
        ),
    ])
    .await
    .unwrap();
    let (items, more) = reader.inventory(None, None, 100).unwrap();
    assert!(!more);
    let summary: Vec<(Option<InventoryKind>, &str, u64, bool)> = items
        .iter()
        .map(|i| (i.kind, i.key.as_str(), i.sightings, i.approved))
        .collect();
    let (mk, rk, unseen) = (
        format!("sha256:{m}"),
        format!("sha256:{}", "ab".repeat(32)),
        format!("sha256:{}", "ef".repeat(32)),
    );
    assert_eq!(
        summary,
        [
            (Some(InventoryKind::Model), mk.as_str(), 3, false),
            (Some(InventoryKind::Runtime), rk.as_str(), 3, true),
            (Some(InventoryKind::Model), unseen.as_str(), 0, true),
        ]
    );
    let model = &items[0];
    assert_eq!(model.hosts, ["a.example", "b.example"]);
    assert_eq!(model.paths, ["/m/a.gguf", "/m/b.gguf", "/x/a.gguf"]);
    assert_eq!(
        (model.first_seen_unix_nanos, model.last_seen_unix_nanos),
        (151, 152)
    );
    // Pages follow (kind, key) order; the last ends with the approved,
    // unseen model.
    let (page, more) = reader.inventory(None, None, 1).unwrap();
    assert!(more && page.len() == 1);
    let (page, more) = reader
        .inventory(None, Some((InventoryKind::Model, &mk)), 1)
        .unwrap();
    let keys: Vec<&str> = page.iter().map(|i| i.key.as_str()).collect();
    assert!(!more);
    assert_eq!(keys, [rk.as_str(), unseen.as_str()]);
    let (models, _) = reader
        .inventory(Some(InventoryKind::Model), None, 100)
        .unwrap();
    assert_eq!(models.len(), 2);
}

#[tokio::test]
async fn a_full_inventory_refuses_new_items_and_still_updates_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let known = "cd".repeat(32);
    sm.apply(vec![
        entry(1, register("a")),
        entry(
            2,
            Command::AppendAlerts {
                agent_id: "a".into(),
                received_at_unix_nanos: 200,
                findings: vec![model_finding(1, "/m/a.gguf", &known)],
            },
        ),
    ])
    .await
    .unwrap();
    sm.tree
        .insert(INVENTORY_ITEMS, json(&MAX_INVENTORY_ITEMS).unwrap())
        .unwrap();
    sm.apply(vec![entry(
        3,
        Command::AppendAlerts {
            agent_id: "a".into(),
            received_at_unix_nanos: 300,
            findings: vec![
                model_finding(2, "/m/new.gguf", &"ef".repeat(32)),
                model_finding(3, "/m/again.gguf", &known),
            ],
        },
    )])
    .await
    .unwrap();
    let (items, _) = reader.inventory(None, None, 100).unwrap();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].sightings, 2);
    assert_eq!(reader.inventory_refused().unwrap(), 1);
    // Every alert is still stored.
    assert_eq!(reader.alerts_after(0, 10).unwrap().len(), 3);
}

fn approve(id: &str) -> Command {
    Command::ApproveWorkload {
        workload: vigil_domain::WorkloadApproval {
            id: id.into(),
            exe_sha256: "ab".repeat(32),
            ..Default::default()
        },
    }
}

/// Found by the linearizability test: a list read while `a` was revoked
/// and then `z` approved held both, a state no prefix of the log gives.
/// (sled reads one leaf at a time, so the two must lie leaves apart: 2,000
/// workloads sit between them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_read_while_entries_apply_sees_the_state_between_two_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let mut entries: Vec<_> = (0..2_000u64)
        .map(|j| entry(j + 1, approve(&format!("m{j:06}"))))
        .collect();
    entries.push(entry(2_001, approve("a000000")));
    sm.apply(entries).await.unwrap();
    let rotating = |id: &str| id.starts_with('a') || id.starts_with('z');
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listing = {
        let (reader, stop) = (reader.clone(), stop.clone());
        tokio::task::spawn_blocking(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<String> = reader
                    .workloads()
                    .unwrap()
                    .into_iter()
                    .map(|w| w.id)
                    .filter(|id| rotating(id))
                    .collect();
                assert!(ids.len() <= 1, "read {reads} saw {ids:?}");
                reads += 1;
            }
            reads
        })
    };
    // Each round revokes the one rotating workload, then approves the next,
    // alternately at the start and the end of the scan.
    let name = |i: u32| format!("{}{i:06}", if i.is_multiple_of(2) { 'a' } else { 'z' });
    let mut index = 2_001;
    for i in 1..2_000u32 {
        sm.apply(vec![
            entry(index + 1, Command::RevokeWorkload { id: name(i - 1) }),
            entry(index + 2, approve(&name(i))),
        ])
        .await
        .unwrap();
        index += 2;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = listing.await.unwrap();
    assert!(reads > 0);
}

#[tokio::test]
async fn one_agent_cannot_fill_the_inventory_nor_date_an_item_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let day = 24 * 3600 * 1_000_000_000i64;
    let now = 400 * day;
    let mut backdated = model_finding(1, "/m/old.gguf", &"cd".repeat(32));
    backdated.observed_at_unix_nanos = 1;
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, register("b")),
        entry(
            3,
            Command::AppendAlerts {
                agent_id: "a".into(),
                received_at_unix_nanos: now,
                findings: vec![backdated],
            },
        ),
    ])
    .await
    .unwrap();
    let (items, _) = reader
        .inventory(Some(InventoryKind::Model), None, 10)
        .unwrap();
    assert_eq!(
        items[0].first_seen_unix_nanos,
        now - vigil_domain::MAX_SIGHTING_AGE_NANOS,
        "an agent's time is believed back to a spool's age, no further"
    );
    // Agent a has made its share of items: its new ones are refused, its
    // known ones still update, and agent b still adds its own.
    sm.tree
        .insert(
            prefixed(INVENTORY_BY_AGENT_PREFIX, b"a"),
            json(&MAX_INVENTORY_ITEMS_PER_AGENT).unwrap(),
        )
        .unwrap();
    sm.apply(vec![
        entry(
            4,
            Command::AppendAlerts {
                agent_id: "a".into(),
                received_at_unix_nanos: now,
                findings: vec![
                    model_finding(2, "/m/new.gguf", &"ef".repeat(32)),
                    model_finding(3, "/m/again.gguf", &"cd".repeat(32)),
                ],
            },
        ),
        entry(
            5,
            Command::AppendAlerts {
                agent_id: "b".into(),
                received_at_unix_nanos: now,
                findings: vec![model_finding(1, "/m/b.gguf", &"12".repeat(32))],
            },
        ),
    ])
    .await
    .unwrap();
    let (items, _) = reader
        .inventory(Some(InventoryKind::Model), None, 10)
        .unwrap();
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            format!("sha256:{}", "12".repeat(32)),
            format!("sha256:{}", "cd".repeat(32))
        ]
    );
    assert_eq!(items[1].sightings, 2);
    assert_eq!(reader.inventory_refused().unwrap(), 1);
}

fn model(name: &str, version: u64) -> vigil_domain::ModelRecord {
    vigil_domain::ModelRecord {
        name: name.into(),
        version,
        sha256: format!("{version:064x}"),
        size: 10,
        format: "onnx".into(),
        signer: "k".into(),
        signature: "s".into(),
        ..Default::default()
    }
}

fn register_model(record: vigil_domain::ModelRecord) -> Command {
    Command::RegisterModel {
        record,
        actor: "operator/admin/alice".into(),
        at_unix_nanos: 7,
        note: "first".into(),
    }
}

fn set_model(name: &str, version: u64, state: vigil_domain::ModelState) -> Command {
    Command::SetModelState {
        name: name.into(),
        version,
        state,
        actor: "operator/admin/bob".into(),
        reason: format!("to {state}"),
        at_unix_nanos: 8,
    }
}

fn rollback_model(name: &str, version: u64) -> Command {
    Command::RollbackModel {
        name: name.into(),
        version,
        actor: "operator/admin/carol".into(),
        reason: "v2 misbehaves".into(),
        at_unix_nanos: 9,
    }
}

fn refused(r: &CommandResult) -> &str {
    match r {
        CommandResult::Refused { reason } | CommandResult::NotFound { reason } => reason,
        other => panic!("not refused: {other:?}"),
    }
}

#[tokio::test]
async fn model_records_register_approve_roll_back_and_revoke_with_audit_entries() {
    use vigil_domain::ModelState::*;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let mut watch = reader.watch_models();
    let r = sm
        .apply(vec![
            entry(1, register_model(model("m", 1))),
            entry(2, register_model(model("m", 2))),
            entry(3, set_model("m", 1, Approved)),
            entry(4, set_model("m", 2, Approved)),
        ])
        .await
        .unwrap();
    let CommandResult::Model(first) = &r[0] else {
        panic!("{:?}", r[0])
    };
    assert_eq!(first.state, Registered);
    assert_eq!(first.registered_by, "operator/admin/alice");
    assert_eq!(first.registered_at_unix_nanos, 7);
    assert!(watch.has_changed().unwrap());
    watch.borrow_and_update();
    let catalog = reader.model_catalog().unwrap();
    let d = catalog.deployments_for("a");
    assert_eq!(d[0].active.version, 2);
    assert_eq!(d[0].fallbacks[0].version, 1);
    let approved = reader.model_record("m", 2).unwrap().unwrap();
    assert_eq!(
        (approved.state, approved.changed_by.as_str()),
        (Approved, "operator/admin/bob")
    );

    // Roll back to 1: pinned; then 3 approved clears the pin.
    let r = sm
        .apply(vec![
            entry(5, rollback_model("m", 1)),
            entry(6, register_model(model("m", 3))),
        ])
        .await
        .unwrap();
    assert!(matches!(r[0], CommandResult::Model(_)), "{:?}", r[0]);
    assert!(watch.has_changed().unwrap());
    let catalog = reader.model_catalog().unwrap();
    assert_eq!(catalog.pin_in_force("m"), Some(1));
    assert_eq!(catalog.deployments_for("a")[0].active.version, 1);
    sm.apply(vec![entry(7, set_model("m", 3, Approved))])
        .await
        .unwrap();
    let catalog = reader.model_catalog().unwrap();
    assert_eq!(catalog.pin_in_force("m"), None);
    assert_eq!(catalog.deployments_for("a")[0].active.version, 3);

    // Roll back to 2, revoke 2: the pin goes with it, 3 serves again.
    sm.apply(vec![
        entry(8, rollback_model("m", 2)),
        entry(9, set_model("m", 2, Revoked)),
    ])
    .await
    .unwrap();
    let catalog = reader.model_catalog().unwrap();
    assert_eq!(catalog.pin_in_force("m"), None);
    let d = catalog.deployments_for("a");
    assert_eq!(
        (
            d[0].active.version,
            d[0].fallbacks.iter().map(|r| r.version).collect::<Vec<_>>()
        ),
        (3, vec![1])
    );

    let audit = reader.audit_after(0, 100).unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("model.register", "operator/admin/alice"),
            ("model.register", "operator/admin/alice"),
            ("model.approve", "operator/admin/bob"),
            ("model.approve", "operator/admin/bob"),
            ("model.rollback", "operator/admin/carol"),
            ("model.register", "operator/admin/alice"),
            ("model.approve", "operator/admin/bob"),
            ("model.rollback", "operator/admin/carol"),
            ("model.revoke", "operator/admin/bob"),
        ]
    );
    assert!(
        audit[4].detail.contains("v2 misbehaves"),
        "{}",
        audit[4].detail
    );
    assert_eq!(audit[4].subject, "model m version 1");
    assert!(crate::audit_chain::verify(&audit).is_ok());
}

#[tokio::test]
async fn model_commands_refuse_what_their_state_does_not_allow_and_change_nothing() {
    use vigil_domain::ModelState::*;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    sm.apply(vec![
        entry(1, register_model(model("m", 1))),
        entry(2, register_model(model("m", 2))),
        entry(3, set_model("m", 2, Revoked)),
    ])
    .await
    .unwrap();
    let audit_before = reader.audit_entries().unwrap();
    let digest_before = reader.digest().unwrap().1;
    let mut other_digest = model("m", 1);
    other_digest.sha256 = "ab".repeat(32);
    let mut other_hosts = model("m", 1);
    other_hosts.hosts = vec!["h".into()];
    let mut bad = model("M", 1);
    bad.name = "../m".into();
    let r = sm
        .apply(vec![
            entry(4, register_model(other_digest)),
            entry(5, register_model(other_hosts)),
            entry(6, set_model("m", 2, Approved)),
            entry(7, set_model("m", 2, Revoked)),
            entry(8, rollback_model("m", 1)),
            entry(9, rollback_model("m", 2)),
            entry(10, set_model("m", 9, Approved)),
            entry(11, rollback_model("x", 1)),
            entry(12, set_model("m", 1, Registered)),
            entry(13, register_model(bad)),
        ])
        .await
        .unwrap();
    let reasons: Vec<&str> = r.iter().map(refused).collect();
    assert!(
        reasons[0].contains("another file needs another version"),
        "{}",
        reasons[0]
    );
    assert!(reasons[1].contains("other signed fields"), "{}", reasons[1]);
    assert!(
        reasons[2].contains("never approved again"),
        "{}",
        reasons[2]
    );
    assert!(reasons[3].contains("already revoked"), "{}", reasons[3]);
    assert!(
        reasons[4].contains("is registered: only an approved"),
        "{}",
        reasons[4]
    );
    assert!(
        reasons[5].contains("is revoked: only an approved"),
        "{}",
        reasons[5]
    );
    assert!(matches!(r[6], CommandResult::NotFound { .. }));
    assert!(matches!(r[7], CommandResult::NotFound { .. }));
    assert!(reasons[8].contains("never set back"), "{}", reasons[8]);
    assert!(
        reasons[9].starts_with("model record: name:"),
        "{}",
        reasons[9]
    );
    // The same registration again is taken and changes nothing.
    let r = sm
        .apply(vec![
            entry(14, register_model(model("m", 1))),
            entry(15, set_model("m", 1, Approved)),
            entry(16, set_model("m", 1, Approved)),
        ])
        .await
        .unwrap();
    let CommandResult::Model(same) = &r[0] else {
        panic!("{:?}", r[0])
    };
    assert_eq!(same.state, Registered);
    assert!(refused(&r[2]).contains("already approved"));
    // Nothing but the last approval changed the state (and its audit).
    assert_eq!(reader.audit_entries().unwrap(), audit_before + 1);
    assert_ne!(reader.digest().unwrap().1, digest_before);
}

#[tokio::test]
async fn model_records_and_pins_travel_in_snapshots_and_the_state_digest() {
    use vigil_domain::ModelState::*;
    let a = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader_a) = crate::store::open_stores(a.path()).unwrap();
    sm.apply(vec![
        entry(1, register_model(model("m", 1))),
        entry(2, register_model(model("m", 2))),
        entry(3, set_model("m", 1, Approved)),
        entry(4, set_model("m", 2, Approved)),
        entry(5, rollback_model("m", 1)),
    ])
    .await
    .unwrap();
    let before_pin = {
        let b = tempfile::tempdir().unwrap();
        let (_log, mut other, reader) = crate::store::open_stores(b.path()).unwrap();
        other
            .apply(vec![
                entry(1, register_model(model("m", 1))),
                entry(2, register_model(model("m", 2))),
                entry(3, set_model("m", 1, Approved)),
                entry(4, set_model("m", 2, Approved)),
            ])
            .await
            .unwrap();
        reader.digest().unwrap().1
    };
    assert_ne!(
        reader_a.digest().unwrap().1,
        before_pin,
        "the pin is in the digest"
    );
    let snap = snapshot_of(&mut sm).await;
    let b = tempfile::tempdir().unwrap();
    let (_log, mut other, reader) = crate::store::open_stores(b.path()).unwrap();
    let watch = reader.watch_models();
    other
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert!(watch.has_changed().unwrap());
    assert_eq!(
        reader.model_catalog().unwrap(),
        reader_a.model_catalog().unwrap()
    );
    let catalog = reader.model_catalog().unwrap();
    assert_eq!(catalog.pin_in_force("m"), Some(1));
    assert_eq!(catalog.records().count(), 2);
}

#[test]
fn model_commands_keep_their_versioned_names_in_the_log() {
    let json = serde_json::to_string(&register_model(model("m", 1))).unwrap();
    assert!(json.starts_with("{\"register_model.v1\":"), "{json}");
    let json =
        serde_json::to_string(&set_model("m", 1, vigil_domain::ModelState::Approved)).unwrap();
    assert!(json.starts_with("{\"set_model_state.v1\":"), "{json}");
    assert!(json.contains("\"state\":\"approved\""), "{json}");
    let json = serde_json::to_string(&rollback_model("m", 1)).unwrap();
    assert!(json.starts_with("{\"rollback_model.v1\":"), "{json}");
}

fn put_user(name: &str, role: Option<vigil_domain::UserRole>, disabled: Option<bool>) -> Command {
    Command::PutUser {
        name: name.into(),
        role,
        password_hash: role.map(|_| format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA${name}")),
        disabled,
        at_unix_nanos: 7,
        create_only: false,
    }
}

fn audited(command: Command, action: &str) -> Command {
    Command::Audited {
        command: Box::new(command),
        audit: crate::raft_types::AuditNote {
            at_unix_nanos: 8,
            actor: "operator admin:ops".into(),
            action: action.into(),
            subject: "user".into(),
            detail: String::new(),
        },
    }
}

#[tokio::test]
async fn users_are_put_changed_and_removed_with_their_audit_entries_keeping_an_admin() {
    use vigil_domain::UserRole::*;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let watch = reader.watch_users();
    let r = sm
        .apply(vec![
            entry(
                1,
                audited(put_user("root", Some(Admin), None), "user.create"),
            ),
            entry(
                2,
                audited(put_user("ann", Some(Analyst), None), "user.create"),
            ),
            // The only enabled admin may not be demoted, disabled or removed.
            entry(
                3,
                audited(put_user("root", Some(Viewer), None), "user.update"),
            ),
            entry(
                4,
                audited(put_user("root", None, Some(true)), "user.update"),
            ),
            entry(
                5,
                audited(
                    Command::RemoveUser {
                        name: "root".into(),
                    },
                    "user.remove",
                ),
            ),
            // A change to a user that does not exist, and a removal of one.
            entry(
                6,
                audited(put_user("ghost", None, Some(true)), "user.update"),
            ),
            entry(
                7,
                audited(
                    Command::RemoveUser {
                        name: "ghost".into(),
                    },
                    "user.remove",
                ),
            ),
            // With a second admin, the first may go.
            entry(
                8,
                audited(put_user("ann", Some(Admin), None), "user.update"),
            ),
            entry(
                9,
                audited(
                    Command::RemoveUser {
                        name: "root".into(),
                    },
                    "user.remove",
                ),
            ),
            entry(
                10,
                audited(put_user("Bad Name", Some(Viewer), None), "user.create"),
            ),
        ])
        .await
        .unwrap();
    assert!(
        matches!(&r[0], CommandResult::User(u) if u.name == "root" && u.created_at_unix_nanos == 7)
    );
    assert!(refused(&r[2]).contains("last enabled admin"), "{:?}", r[2]);
    assert!(refused(&r[3]).contains("last enabled admin"), "{:?}", r[3]);
    assert!(refused(&r[4]).contains("last enabled admin"), "{:?}", r[4]);
    assert!(
        matches!(&r[5], CommandResult::NotFound { .. }),
        "{:?}",
        r[5]
    );
    assert!(
        matches!(&r[6], CommandResult::NotFound { .. }),
        "{:?}",
        r[6]
    );
    assert!(matches!(&r[8], CommandResult::User(_)), "{:?}", r[8]);
    assert!(refused(&r[9]).contains("a-z"), "{:?}", r[9]);
    assert!(watch.has_changed().unwrap());
    let users = reader.users().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].name, "ann");
    assert_eq!(users[0].role, Admin);
    assert_eq!(users[0].created_at_unix_nanos, 7, "kept across changes");
    assert!(users[0].password_hash.starts_with("$argon2id$"));
    assert_eq!(reader.user("root").unwrap(), None);
    // Audited only what took effect: two creations, one update, one removal.
    let actions: Vec<String> = reader
        .audit_after(0, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        actions,
        ["user.create", "user.create", "user.update", "user.remove"]
    );
}

#[tokio::test]
async fn a_create_only_put_of_an_existing_user_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let mut again = put_user("root", Some(vigil_domain::UserRole::Viewer), None);
    if let Command::PutUser { create_only, .. } = &mut again {
        *create_only = true;
    }
    let r = sm
        .apply(vec![
            entry(
                1,
                put_user("root", Some(vigil_domain::UserRole::Admin), None),
            ),
            entry(2, again),
        ])
        .await
        .unwrap();
    assert!(
        refused(&r[1]).ends_with(crate::store::USER_EXISTS),
        "{:?}",
        r[1]
    );
    assert_eq!(
        reader.user("root").unwrap().unwrap().role,
        vigil_domain::UserRole::Admin
    );
}

#[tokio::test]
async fn users_travel_in_snapshots_and_the_state_digest() {
    use vigil_domain::UserRole::*;
    let a = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader_a) = crate::store::open_stores(a.path()).unwrap();
    sm.apply(vec![entry(1, register("a"))]).await.unwrap();
    let without_users = reader_a.digest().unwrap().1;
    sm.apply(vec![
        entry(2, put_user("root", Some(Admin), None)),
        entry(3, put_user("vic", Some(Viewer), Some(true))),
    ])
    .await
    .unwrap();
    assert_ne!(reader_a.digest().unwrap().1, without_users);
    let snap = snapshot_of(&mut sm).await;
    let b = tempfile::tempdir().unwrap();
    let (_log, mut other, reader) = crate::store::open_stores(b.path()).unwrap();
    let watch = reader.watch_users();
    other
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert!(watch.has_changed().unwrap());
    assert_eq!(reader.users().unwrap(), reader_a.users().unwrap());
    assert!(reader.user("vic").unwrap().unwrap().disabled);
}

#[test]
fn user_commands_keep_their_versioned_names_in_the_log() {
    let json =
        serde_json::to_string(&put_user("a", Some(vigil_domain::UserRole::Admin), None)).unwrap();
    assert!(json.starts_with("{\"put_user.v1\":"), "{json}");
    assert!(json.contains("\"role\":\"admin\""), "{json}");
    let json = serde_json::to_string(&Command::RemoveUser { name: "a".into() }).unwrap();
    assert!(json.starts_with("{\"remove_user.v1\":"), "{json}");
}

fn triage(index: u64, action: vigil_domain::TriageAction) -> Command {
    audited(
        Command::TriageAlert {
            index,
            actor: "ann".into(),
            action,
            at_unix_nanos: 9,
        },
        "alert.triage",
    )
}

/// Findings of severities high, low, high, critical as alerts 1 to 4.
fn mixed_alerts() -> Command {
    let mut findings: Vec<Finding> = (1..=4).map(finding).collect();
    findings[1].severity = Severity::Low;
    findings[3].severity = Severity::Critical;
    Command::AppendAlerts {
        agent_id: "a".into(),
        received_at_unix_nanos: 200,
        findings,
    }
}

fn counts(reader: &StateReader) -> (Vec<(String, u64)>, u64) {
    (
        reader.open_by_severity().unwrap().into_iter().collect(),
        reader.acknowledged_count().unwrap(),
    )
}

fn open(pairs: &[(&str, u64)], acknowledged: u64) -> (Vec<(String, u64)>, u64) {
    (
        pairs.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        acknowledged,
    )
}

#[tokio::test]
async fn triage_steps_are_stored_audited_and_counted_and_refusals_change_nothing() {
    use vigil_domain::TriageAction::*;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let mut watch = reader.watch_triage();
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, mixed_alerts()),
        entry(
            3,
            put_user("bob", Some(vigil_domain::UserRole::Analyst), None),
        ),
        entry(
            4,
            put_user("gone", Some(vigil_domain::UserRole::Analyst), Some(true)),
        ),
    ])
    .await
    .unwrap();
    assert_eq!(
        counts(&reader),
        open(&[("critical", 1), ("high", 2), ("low", 1)], 0)
    );
    assert!(!watch.has_changed().unwrap(), "no triage step yet");
    let script = "<script>alert(1)</script> & \"quotes\"";
    let r = sm
        .apply(vec![
            entry(5, triage(1, Ack)),
            entry(6, triage(1, Assign { to: "bob".into() })),
            entry(
                7,
                triage(
                    1,
                    Comment {
                        text: script.into(),
                    },
                ),
            ),
            entry(8, triage(2, Resolve)),
            entry(9, triage(4, Ack)),
            // Refused: unknown alert, unknown or disabled assignee, a step
            // the state does not allow.
            entry(10, triage(99, Ack)),
            entry(
                11,
                triage(
                    3,
                    Assign {
                        to: "nobody".into(),
                    },
                ),
            ),
            entry(12, triage(3, Assign { to: "gone".into() })),
            entry(13, triage(2, Ack)),
            entry(14, triage(1, Ack)),
            entry(15, triage(3, Reopen)),
        ])
        .await
        .unwrap();
    assert!(watch.has_changed().unwrap());
    watch.mark_unchanged();
    let t = match &r[2] {
        CommandResult::Triage(t) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(t.state, vigil_domain::TriageState::Acknowledged);
    assert_eq!(t.assignee.as_deref(), Some("bob"));
    assert_eq!(t.history_total, 3);
    assert!(refused(&r[5]).contains("no alert 99"), "{:?}", r[5]);
    assert!(
        refused(&r[6]).contains("no such enabled user"),
        "{:?}",
        r[6]
    );
    assert!(
        refused(&r[7]).contains("no such enabled user"),
        "{:?}",
        r[7]
    );
    assert!(
        refused(&r[8]).contains("resolved: reopen it first"),
        "{:?}",
        r[8]
    );
    assert!(
        refused(&r[9]).contains("acknowledged already"),
        "{:?}",
        r[9]
    );
    assert!(refused(&r[10]).contains("not resolved"), "{:?}", r[10]);
    // Stored verbatim (escaping is for whoever renders it).
    let stored = reader.triage(1).unwrap().unwrap();
    assert_eq!(
        stored.history[2].action,
        Comment {
            text: script.into()
        }
    );
    assert_eq!(stored.history[0].actor, "ann");
    assert_eq!(reader.triage(3).unwrap(), None, "refusals stored nothing");
    assert_eq!(
        counts(&reader),
        open(&[("critical", 1), ("high", 2), ("low", 0)], 2)
    );
    // Resolving an acknowledged alert moves it out of both counts;
    // reopening brings it back as open.
    sm.apply(vec![
        entry(16, triage(4, Resolve)),
        entry(17, triage(2, Reopen)),
    ])
    .await
    .unwrap();
    assert_eq!(
        counts(&reader),
        open(&[("critical", 0), ("high", 2), ("low", 1)], 1)
    );
    // Only what took effect was audited: 7 steps.
    let audited: Vec<String> = reader
        .audit_after(0, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "alert.triage")
        .map(|e| e.action)
        .collect();
    assert_eq!(audited.len(), 7);
}

#[tokio::test]
async fn retention_removes_triage_with_its_alerts_and_keeps_the_counts_true() {
    use vigil_domain::TriageAction::*;
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, mixed_alerts()),
        entry(3, triage(1, Ack)),
        entry(4, triage(2, Resolve)),
        entry(5, triage(3, Comment { text: "x".into() })),
        entry(6, triage(4, Resolve)),
    ])
    .await
    .unwrap();
    assert_eq!(
        counts(&reader),
        open(&[("critical", 0), ("high", 2), ("low", 0)], 1)
    );
    // Keep the newest 2: alerts 1 and 2 go, with their triage.
    let r = sm
        .apply(vec![entry(
            7,
            Command::PruneAlerts {
                at_unix_nanos: 10_000,
                keep_at_most: 2,
                older_than_unix_nanos: 0,
            },
        )])
        .await
        .unwrap();
    assert_eq!(
        r[0],
        CommandResult::AlertsPruned {
            removed: 2,
            more: false
        }
    );
    assert_eq!(reader.triage(1).unwrap(), None);
    assert_eq!(reader.triage(2).unwrap(), None);
    assert!(reader.triage(3).unwrap().is_some());
    assert_eq!(counts(&reader), open(&[("critical", 0), ("high", 1)], 0));
    // A pruned alert cannot be triaged.
    let r = sm.apply(vec![entry(8, triage(1, Resolve))]).await.unwrap();
    assert!(
        refused(&r[0]).contains("removed by retention"),
        "{:?}",
        r[0]
    );
    // No triage record is left without its alert.
    let alerts: Vec<u64> = reader
        .alerts_after(0, 100)
        .unwrap()
        .iter()
        .map(|a| a.index)
        .collect();
    for i in 1..=4 {
        if reader.triage(i).unwrap().is_some() {
            assert!(alerts.contains(&i), "triage {i} without its alert");
        }
    }
}

#[tokio::test]
async fn triage_and_its_counts_travel_in_snapshots() {
    use vigil_domain::TriageAction::*;
    let a = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader_a) = crate::store::open_stores(a.path()).unwrap();
    sm.apply(vec![
        entry(1, register("a")),
        entry(2, mixed_alerts()),
        entry(3, triage(1, Ack)),
        entry(4, triage(4, Resolve)),
    ])
    .await
    .unwrap();
    let snap = snapshot_of(&mut sm).await;
    let b = tempfile::tempdir().unwrap();
    let (_log, mut other, reader) = crate::store::open_stores(b.path()).unwrap();
    other
        .apply(vec![entry(1, register("x")), entry(2, mixed_alerts())])
        .await
        .unwrap();
    other
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(counts(&reader), counts(&reader_a));
    assert_eq!(reader.triage(1).unwrap(), reader_a.triage(1).unwrap());
    assert_eq!(reader.triage(4).unwrap(), reader_a.triage(4).unwrap());
    // And applying goes on from there on the installed node.
    let r = other
        .apply(vec![entry(5, triage(4, Reopen))])
        .await
        .unwrap();
    assert!(matches!(r[0], CommandResult::Triage(_)), "{:?}", r[0]);
    assert_eq!(
        counts(&reader),
        open(&[("critical", 1), ("high", 2), ("low", 1)], 1)
    );
}

#[test]
fn the_triage_command_keeps_its_versioned_name_in_the_log() {
    let json = serde_json::to_string(&Command::TriageAlert {
        index: 1,
        actor: "a".into(),
        action: vigil_domain::TriageAction::Assign { to: "b".into() },
        at_unix_nanos: 1,
    })
    .unwrap();
    assert!(json.starts_with("{\"triage_alert.v1\":"), "{json}");
    assert!(json.contains("{\"assign\":{\"to\":\"b\"}}"), "{json}");
}

const HOUR: i64 = 3_600_000_000_000;

/// Findings `seqs` of agent `id`, rule `rule` about `exe`, received at
/// `received`.
fn append_at(id: &str, seqs: &[u64], received: i64, rule: &str, exe: &str) -> Command {
    Command::AppendAlerts {
        agent_id: id.into(),
        received_at_unix_nanos: received,
        findings: seqs
            .iter()
            .map(|&s| {
                let mut f = finding(s);
                f.rule_id = rule.into();
                f.process.exe = exe.into();
                f
            })
            .collect(),
    }
}

/// (hours, rules, agents, executables) as the dashboard reads them.
type Counts = (
    Vec<(u64, u64)>,
    Vec<(String, u64)>,
    Vec<(String, u64)>,
    Vec<(String, u64)>,
);

fn finding_counts(reader: &StateReader) -> Counts {
    (
        reader.findings_per_hour(0).unwrap(),
        reader.top_counts(CountKind::Rule, 10).unwrap(),
        reader.top_counts(CountKind::Agent, 10).unwrap(),
        reader.top_counts(CountKind::Executable, 10).unwrap(),
    )
}

fn named(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(n, c)| (n.to_string(), *c)).collect()
}

/// The counting entries: 3 findings of `a` in hour 100 (and one resent,
/// skipped), 2 of `b` in hour 101 about `long_exe`, one of `a` in hour
/// 101 without an executable.
fn counted_entries(long_exe: &str) -> Vec<Entry<TypeConfig>> {
    vec![
        entry(1, register("a")),
        entry(2, register("b")),
        entry(
            3,
            append_at("a", &[1, 2], 100 * HOUR + 5, "r.model", "/usr/bin/ollama"),
        ),
        entry(
            4,
            append_at("a", &[2, 3], 100 * HOUR + 9, "r.model", "/usr/bin/ollama"),
        ),
        entry(5, append_at("b", &[1, 2], 101 * HOUR, "r.gpu", long_exe)),
        entry(6, append_at("a", &[4], 101 * HOUR + 1, "r.gpu", "")),
    ]
}

/// The dashboard's counters (issue #26) are kept in the batch that stores
/// each alert: per UTC hour, per rule, agent and executable (cut to 256
/// bytes; an empty one not counted); a resent finding is not counted.
#[tokio::test]
async fn finding_counters_are_kept_at_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    let long_exe = format!("/opt/{}", "é".repeat(400));
    sm.apply(counted_entries(&long_exe)).await.unwrap();
    let cut = vigil_domain::cut_text(&long_exe, finding_counts::MAX_COUNT_NAME);
    assert!(cut.len() <= 256 && cut.len() > 250);
    assert_eq!(
        finding_counts(&reader),
        (
            vec![(100, 3), (101, 3)],
            named(&[("r.gpu", 3), ("r.model", 3)]),
            named(&[("a", 4), ("b", 2)]),
            named(&[("/usr/bin/ollama", 3), (cut.as_str(), 2)]),
        )
    );
    assert_eq!(reader.findings_per_hour(101).unwrap(), vec![(101, 3)]);
    assert_eq!(
        reader.top_counts(CountKind::Rule, 1).unwrap(),
        named(&[("r.gpu", 3)])
    );
    // A new hour 48 hours on: the buckets before its horizon go in the
    // same batch; one received late for an hour before it is not kept.
    sm.apply(vec![
        entry(
            7,
            append_at("a", &[5], 148 * HOUR, "r.model", "/usr/bin/ollama"),
        ),
        entry(
            8,
            append_at("b", &[3], 99 * HOUR, "r.model", "/usr/bin/ollama"),
        ),
    ])
    .await
    .unwrap();
    assert_eq!(
        reader.findings_per_hour(0).unwrap(),
        vec![(101, 3), (148, 1)]
    );
    assert_eq!(
        reader.top_counts(CountKind::Executable, 1).unwrap(),
        named(&[("/usr/bin/ollama", 5)])
    );
}

/// Retention takes what it removes out of the counters in its own batch
/// (a counter at 0 is removed); snapshots carry the counters, two state
/// machines that applied the same entries have the same digest, and a
/// store without the counters counts its stored alerts once at open.
#[tokio::test]
async fn finding_counters_follow_retention_snapshots_and_a_store_without_them() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_log, mut sm, reader) = crate::store::open_stores(a.path()).unwrap();
    let (_log_b, mut twin, twin_reader) = crate::store::open_stores(b.path()).unwrap();
    let prune = entry(
        7,
        Command::PruneAlerts {
            at_unix_nanos: 200 * HOUR,
            keep_at_most: 2,
            older_than_unix_nanos: 0,
        },
    );
    sm.apply(counted_entries("/bin/x")).await.unwrap();
    sm.apply(vec![prune.clone()]).await.unwrap();
    twin.apply(counted_entries("/bin/x")).await.unwrap();
    twin.apply(vec![prune]).await.unwrap();
    // Alerts 1-4 gone: the newest two (b's second, a's fourth) stay.
    let expected = (
        vec![(101, 2)],
        named(&[("r.gpu", 2)]),
        named(&[("a", 1), ("b", 1)]),
        named(&[("/bin/x", 1)]),
    );
    assert_eq!(finding_counts(&reader), expected);
    assert_eq!(reader.digest().unwrap(), twin_reader.digest().unwrap());

    let snap = snapshot_of(&mut sm).await;
    let c = tempfile::tempdir().unwrap();
    let (_log_c, mut other, other_reader) = crate::store::open_stores(c.path()).unwrap();
    other
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_eq!(finding_counts(&other_reader), expected);
    // Every key the same (but the membership, which the install sets
    // from the snapshot's meta where these entries never applied one).
    let state = |t: &sled::Tree| -> Vec<(sled::IVec, sled::IVec)> {
        t.iter()
            .map(Result::unwrap)
            .filter(|(k, _)| k.as_ref() != MEMBERSHIP)
            .collect()
    };
    assert_eq!(state(&other.tree), state(&sm.tree));

    // As a store written before the counters were kept: counted once at
    // open, to the same state.
    let digest = reader.digest().unwrap();
    drop((_log, reader));
    let keys: Vec<sled::IVec> = sm
        .tree
        .iter()
        .keys()
        .map(Result::unwrap)
        .filter(|k| {
            k.starts_with(b"findings_hour.v1/")
                || k.starts_with(b"findings_by.v1/")
                || k.starts_with(b"findings_top.v1/")
                || k.as_ref() == b"meta/finding_counts.v2"
        })
        .collect();
    assert_eq!(keys.len(), 10);
    for k in keys {
        sm.tree.remove(k).unwrap();
    }
    assert_eq!(finding_counts(&twin_reader), expected);
    sm.db.flush_async().await.unwrap();
    drop(sm);
    let (_log, _sm, reader) = reopen_stores(a.path());
    assert_eq!(finding_counts(&reader), expected);
    assert_eq!(reader.digest().unwrap(), digest);
}

/// Every `findings_by.v1` counter has exactly its `findings_top.v1` index
/// key (`<kind>/<u64::MAX - count, be>/<name>`) and the index no other.
fn assert_index_agrees(tree: &sled::Tree) {
    let mut want = std::collections::BTreeSet::new();
    for kv in tree.scan_prefix(b"findings_by.v1/") {
        let (k, v) = kv.unwrap();
        let count: u64 = serde_json::from_slice(&v).unwrap();
        assert!(count > 0);
        let rest = &k[b"findings_by.v1/".len()..];
        let slash = rest.iter().position(|b| *b == b'/').unwrap();
        let mut t = b"findings_top.v1/".to_vec();
        t.extend_from_slice(&rest[..=slash]);
        t.extend_from_slice(&(u64::MAX - count).to_be_bytes());
        t.push(b'/');
        t.extend_from_slice(&rest[slash + 1..]);
        want.insert(t);
    }
    let got: std::collections::BTreeSet<Vec<u8>> = tree
        .scan_prefix(b"findings_top.v1/")
        .keys()
        .map(|k| k.unwrap().to_vec())
        .collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

/// Review attack: 250,000 distinct executables (and rules) that sort
/// before the real one, each with one finding, do not hide the real one's
/// five from the overview: `top_counts` reads the count-ordered index.
#[tokio::test]
async fn names_sorting_first_do_not_hide_the_top_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, mut sm, reader) = crate::store::open_stores(dir.path()).unwrap();
    sm.apply(vec![
        entry(1, register("a")),
        entry(
            2,
            append_at(
                "a",
                &[1, 2, 3, 4, 5],
                100 * HOUR,
                "real.rule",
                "/usr/bin/real",
            ),
        ),
    ])
    .await
    .unwrap();
    const NAMES: u64 = 250_000;
    const PER_BATCH: u64 = 25_000;
    for (index, start) in (3..).zip((0..NAMES).step_by(PER_BATCH as usize)) {
        let findings = (start..start + PER_BATCH)
            .map(|i| {
                let mut f = finding(6 + i);
                f.rule_id = format!("0rule{i:06}");
                f.process.exe = format!("!a{i:06}");
                f
            })
            .collect();
        sm.apply(vec![entry(
            index,
            Command::AppendAlerts {
                agent_id: "a".into(),
                received_at_unix_nanos: 100 * HOUR + 1,
                findings,
            },
        )])
        .await
        .unwrap();
    }
    let top = reader.top_counts(CountKind::Executable, 10).unwrap();
    assert_eq!(top.len(), 10);
    assert_eq!(top[0], ("/usr/bin/real".to_string(), 5));
    assert_eq!(top[1], ("!a000000".to_string(), 1));
    let rules = reader.top_counts(CountKind::Rule, 3).unwrap();
    assert_eq!(rules[0], ("real.rule".to_string(), 5));
    assert_eq!(
        reader.top_counts(CountKind::Agent, 10).unwrap(),
        named(&[("a", NAMES + 5)])
    );
    assert_index_agrees(&sm.tree);
}

/// The count-ordered index agrees with the counters after increments,
/// retention's decrements, a snapshot install and a recount (a store of
/// the build before the index: counters and `meta/finding_counts.v1`,
/// no index), and twins keep one digest.
#[tokio::test]
async fn the_top_index_agrees_with_the_counters() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_log, mut sm, reader) = crate::store::open_stores(a.path()).unwrap();
    let (_log_b, mut twin, twin_reader) = crate::store::open_stores(b.path()).unwrap();
    let more = entry(
        7,
        append_at("b", &[3, 4, 5], 101 * HOUR + 2, "r.gpu", "/bin/x"),
    );
    let prune = entry(
        8,
        Command::PruneAlerts {
            at_unix_nanos: 200 * HOUR,
            keep_at_most: 4,
            older_than_unix_nanos: 0,
        },
    );
    for m in [&mut sm, &mut twin] {
        m.apply(counted_entries("/bin/x")).await.unwrap();
        m.apply(vec![more.clone()]).await.unwrap();
    }
    assert_index_agrees(&sm.tree);
    assert_eq!(
        reader.top_counts(CountKind::Executable, 10).unwrap(),
        named(&[("/bin/x", 5), ("/usr/bin/ollama", 3)])
    );
    for m in [&mut sm, &mut twin] {
        m.apply(vec![prune.clone()]).await.unwrap();
    }
    assert_index_agrees(&sm.tree);
    let expected = finding_counts(&reader);
    assert_eq!(expected.3, named(&[("/bin/x", 3)]));
    assert_eq!(reader.digest().unwrap(), twin_reader.digest().unwrap());

    let snap = snapshot_of(&mut sm).await;
    let c = tempfile::tempdir().unwrap();
    let (_log_c, mut other, other_reader) = crate::store::open_stores(c.path()).unwrap();
    other
        .apply(vec![
            entry(1, register("z")),
            entry(2, append_at("z", &[1], 5, "q", "/q")),
        ])
        .await
        .unwrap();
    other
        .install_snapshot(&snap.meta, snap.snapshot)
        .await
        .unwrap();
    assert_index_agrees(&other.tree);
    assert_eq!(finding_counts(&other_reader), expected);

    // As a store of the build before the index: counters, the v1 marker
    // and no index; recounted once at open, with the index.
    let digest = reader.digest().unwrap();
    drop((_log, reader));
    let top: Vec<sled::IVec> = sm
        .tree
        .scan_prefix(b"findings_top.v1/")
        .keys()
        .map(Result::unwrap)
        .collect();
    assert!(!top.is_empty());
    for k in top {
        sm.tree.remove(k).unwrap();
    }
    sm.tree.remove(b"meta/finding_counts.v2").unwrap();
    sm.tree
        .insert(b"meta/finding_counts.v1", b"1".to_vec())
        .unwrap();
    sm.db.flush_async().await.unwrap();
    drop(sm);
    let (_log, sm, reader) = reopen_stores(a.path());
    assert_index_agrees(&sm.tree);
    assert!(sm.tree.get(b"meta/finding_counts.v1").unwrap().is_none());
    assert_eq!(finding_counts(&reader), expected);
    assert_eq!(reader.digest().unwrap(), digest);
    assert_eq!(reader.digest().unwrap(), twin_reader.digest().unwrap());
}
