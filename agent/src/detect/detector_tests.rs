use super::*;
use vigil_domain::ApprovedWorkloads;

fn ctx(pid: u32) -> EventContext {
    EventContext {
        ktime_boot_ns: crate::clock::boot_now_ns(),
        cgroup_id: 0,
        mnt_ns: 0,
        tid: pid,
        pid,
        ppid: 1,
        uid: 0,
        gid: 0,
        comm: "t".into(),
    }
}

fn open(pid: u32, path: &str, matched: PathMatch) -> SensorEvent {
    open_with_result(pid, path, matched, 3)
}

fn open_with_result(pid: u32, path: &str, matched: PathMatch, ret: i32) -> SensorEvent {
    SensorEvent::Open {
        ctx: ctx(pid),
        dfd: libc::AT_FDCWD,
        flags: 0,
        matched,
        path: path.into(),
        ret,
        origin: crate::sensors::OpenOrigin::Syscall,
        file: None,
    }
}

/// What the main loop does with a detection: pending digests and model
/// examinations are computed (here, inline) and completed; every finding
/// (a model file's and its risk's).
fn settle_all(d: &mut Detector, det: Option<Detection>) -> Vec<Finding> {
    match det {
        Some(Detection::Finding(f)) => vec![f],
        Some(Detection::NeedsDigest(mut p)) => {
            let digest = crate::detect::file_digest::sha256_reader(&mut p.exe).ok();
            let next = d.complete(p, digest);
            settle_all(d, next)
        }
        Some(Detection::NeedsModelExamination(mut p)) => {
            let (size, name) = (p.size, p.name.clone());
            let limits = d.limits();
            let examined = crate::detect::model_examination::examine(
                &mut p.file,
                size,
                &name,
                limits.inspect,
                limits.hash,
            );
            d.complete_model(p, Some(examined))
        }
        Some(Detection::Findings(f)) => f,
        Some(other) => panic!("unexpected {other:?}"),
        None => Vec::new(),
    }
}

/// `settle_all`'s first finding.
fn settle(d: &mut Detector, det: Option<Detection>) -> Option<Finding> {
    settle_all(d, det).into_iter().next()
}

fn finding(d: &mut Detector, det: Option<Detection>) -> Finding {
    settle(d, det).expect("a finding")
}

fn detector(self_pid: u32) -> Detector {
    Detector::new(BuiltinRules::default(), Procfs::default(), self_pid)
}

#[test]
fn an_open_of_a_model_file_by_this_process_is_a_finding_with_its_digest() {
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let me = std::process::id();
    let det = d.on_event(&open(me, "/tmp/m/model.onnx", PathMatch::ModelFile), &mut t);
    assert!(
        matches!(det, Some(Detection::NeedsDigest(_))),
        "first sight of a binary"
    );
    let f = finding(&mut d, det);
    assert_eq!(f.process.pid, me);
    assert_eq!(f.process.exe_sha256.len(), 64);
    assert!(f.process.exe.contains("vigil_agent"));
    assert_eq!(f.file.unwrap().path, "/tmp/m/model.onnx");
    let now = crate::clock::unix_now_nanos();
    assert!((now - f.observed_at_unix_nanos).abs() < 5_000_000_000);
}

#[test]
fn a_finding_names_its_processs_ancestors_from_the_table() {
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let init = EventContext {
        pid: 1,
        tid: 1,
        ppid: 0,
        comm: "systemd".into(),
        ..ctx(1)
    };
    t.observe_exec(&init, "/sbin/init", &[]);
    let me = std::process::id();
    let det = d.on_event(&open(me, "/tmp/m/model.onnx", PathMatch::ModelFile), &mut t);
    let f = finding(&mut d, det);
    assert_eq!(f.process.ppid, 1);
    assert_eq!(
        f.process.ancestors,
        vec![vigil_domain::Ancestor::new(1, "/sbin/init", "systemd")]
    );
}

#[test]
fn the_same_process_signal_and_object_is_one_finding_until_the_process_exits() {
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let me = std::process::id();
    let ev = open(me, "/tmp/m/model.onnx", PathMatch::ModelFile);
    let first = d.on_event(&ev, &mut t);
    assert!(settle(&mut d, first).is_some());
    // Now the digest is cached: the repeat is recognised at once.
    assert!(d.on_event(&ev, &mut t).is_none());
    assert_eq!(d.suppressed_duplicates(), 1);
    let other = d.on_event(&open(me, "/tmp/m/other.onnx", PathMatch::ModelFile), &mut t);
    assert!(
        matches!(other, Some(Detection::Finding(_))),
        "digest cached"
    );
    let exit = SensorEvent::Exit {
        ctx: ctx(me),
        exit_code: 0,
    };
    d.on_event(&exit, &mut t);
    assert!(d.on_event(&ev, &mut t).is_some());
}

#[test]
fn an_approved_binary_makes_no_finding() {
    let me = std::process::id();
    let digest =
        crate::detect::file_digest::sha256_file(&Procfs::default().exe_handle(me)).unwrap();
    let rules = BuiltinRules::new(ApprovedWorkloads::new([digest]));
    let mut d = Detector::new(rules, Procfs::default(), 0);
    let mut t = ProcessTable::new(100);
    let det = d.on_event(&open(me, "/tmp/m/model.onnx", PathMatch::ModelFile), &mut t);
    assert!(settle(&mut d, det).is_none());
    // Cached now: decided at once.
    let again = d.on_event(&open(me, "/tmp/m/model.onnx", PathMatch::ModelFile), &mut t);
    assert!(again.is_none());
}

#[test]
fn a_pending_digest_is_computed_from_the_file_opened_while_the_process_lived() {
    // A short-lived process: its /proc entry is gone by the time the
    // digest is computed, but the executable was opened at detection.
    let mut child = std::process::Command::new("/bin/sleep")
        .arg("5")
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let det = d.on_event(
        &open(pid, "/tmp/m/model.onnx", PathMatch::ModelFile),
        &mut t,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let Some(Detection::NeedsDigest(mut p)) = det else {
        panic!("expected a pending digest")
    };
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    let digest = crate::detect::file_digest::sha256_reader(&mut p.exe).ok();
    let next = d.complete(p, digest);
    let f = settle(&mut d, next).unwrap();
    let exe = std::path::Path::new(&f.process.exe);
    assert_eq!(
        f.process.exe_sha256,
        crate::detect::file_digest::sha256_file(exe).unwrap()
    );
}

#[test]
fn the_agents_own_events_are_ignored() {
    let me = std::process::id();
    let mut d = detector(me);
    let mut t = ProcessTable::new(100);
    assert!(d
        .on_event(&open(me, "/tmp/m/model.onnx", PathMatch::ModelFile), &mut t)
        .is_none());
}

#[test]
fn relative_paths_are_resolved_before_the_rules_see_them() {
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let me = std::process::id();
    let det = d.on_event(&open(me, "w.gguf", PathMatch::ModelFile), &mut t);
    let f = finding(&mut d, det);
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(f.file.unwrap().path, cwd.join("w.gguf").to_string_lossy());
}

#[test]
fn a_missing_gpu_node_is_a_failed_open_and_still_a_finding() {
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let ev = open_with_result(
        std::process::id(),
        "/dev/nvidia0",
        PathMatch::GpuDevice,
        -libc::ENOENT,
    );
    let det = d.on_event(&ev, &mut t);
    let f = finding(&mut d, det);
    assert_eq!(f.signal, SignalKind::GpuDevice);
    let how = "tried to open";
    assert!(
        f.summary
            .contains(&format!("{how} accelerator device /dev/nvidia0")),
        "{}",
        f.summary
    );
}

#[test]
fn listeners_on_ollamas_port_are_findings_and_on_other_ports_are_probed_unless_excluded() {
    let mut d = detector(0).with_probe_exclusions(&[22, 5432]);
    let mut t = ProcessTable::new(100);
    let me = std::process::id();
    let net = |port: u16| SensorEvent::Net {
        ctx: ctx(me),
        op: NetOp::Listen,
        local: SocketAddr::from(([0, 0, 0, 0], port)),
        remote: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let det = d.on_event(&net(11434), &mut t);
    assert_eq!(finding(&mut d, det).signal, SignalKind::AiServing);
    for port in [8080, 31337, 1] {
        assert!(matches!(
            d.on_event(&net(port), &mut t),
            Some(Detection::ProbeListener { .. })
        ));
    }
    assert_eq!(d.on_event(&net(5432), &mut t), None);
    assert_eq!(d.on_event(&net(22), &mut t), None);
}

#[test]
fn a_running_process_holding_a_model_open_is_found_by_the_startup_scan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00").unwrap();
    let _held = std::fs::File::open(&path).unwrap();
    let mut t = ProcessTable::new(1 << 16);
    t.seed(&Procfs::default()).unwrap();
    let mut d = detector(0);
    let found = d.scan_running(&mut t);
    let me = std::process::id();
    let f = found
        .iter()
        .find(|f| f.process.pid == me && f.object() == path.to_string_lossy())
        .expect("the held model file is found");
    assert!(f.summary.contains("(gguf)"), "{}", f.summary);
    // And it is not reported twice. (Only this file: tests running beside
    // this one in the same process hold model files of their own.)
    assert!(d
        .scan_running(&mut t)
        .iter()
        .all(|f| !(f.process.pid == me && f.object() == path.to_string_lossy())));
}

#[test]
fn a_booby_trapped_checkpoint_held_open_before_the_start_is_a_risk_finding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.pth");
    std::fs::write(&path, OS_SYSTEM_PICKLE).unwrap();
    let _held = std::fs::File::open(&path).unwrap();
    let mut t = ProcessTable::new(1 << 16);
    t.seed(&Procfs::default()).unwrap();
    let mut d = detector(0);
    let me = std::process::id();
    let found: Vec<_> = d
        .scan_running(&mut t)
        .into_iter()
        .filter(|f| f.process.pid == me && f.object() == path.to_string_lossy())
        .collect();
    let signals: Vec<_> = found.iter().map(|f| f.signal).collect();
    assert_eq!(signals, [SignalKind::ModelFile, SignalKind::ModelRisk]);
    let m = found[1].file.as_ref().unwrap().model.as_ref().unwrap();
    assert_eq!(m.dangerous_imports, ["os.system"]);
    // The header is read; the digest waits for the next open.
    assert!(
        m.sha256.is_empty() && m.error.contains("not hashed"),
        "{m:?}"
    );
}

#[test]
fn a_failed_open_of_a_model_file_is_not_a_load() {
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let me = std::process::id();
    let ev = open_with_result(
        me,
        "/tmp/m/missing.onnx",
        PathMatch::ModelFile,
        -libc::ENOENT,
    );
    assert!(d.on_event(&ev, &mut t).is_none());
}

#[test]
fn an_approval_listing_models_covers_those_models_only() {
    let me = std::process::id();
    let digest =
        crate::detect::file_digest::sha256_file(&Procfs::default().exe_handle(me)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed.onnx");
    let other = dir.path().join("other.onnx");
    std::fs::write(&allowed, b"\x08\x07allowed weights").unwrap();
    std::fs::write(&other, b"\x08\x07other weights").unwrap();
    let mut rules = BuiltinRules::new(ApprovedWorkloads::default());
    rules.set_workload_records([vigil_domain::WorkloadApproval {
        id: "w1".into(),
        exe_sha256: digest,
        path: None,
        uid: None,
        cgroup_prefix: None,
        models: vec![crate::detect::file_digest::sha256_file(&allowed).unwrap()],
        gpus: vec![],
        hosts: vec![],
        approved_by: "test".into(),
        note: String::new(),
        approved_at_unix_nanos: 0,
        signer: String::new(),
        signature: String::new(),
    }]);
    let mut d = Detector::new(rules, Procfs::default(), 0);
    let mut t = ProcessTable::new(100);
    let det = d.on_event(
        &open(me, allowed.to_str().unwrap(), PathMatch::ModelFile),
        &mut t,
    );
    assert!(
        settle(&mut d, det).is_none(),
        "the listed model is approved"
    );
    let det = d.on_event(
        &open(me, other.to_str().unwrap(), PathMatch::ModelFile),
        &mut t,
    );
    let f = settle(&mut d, det).expect("an unlisted model is a finding");
    assert_eq!(f.file.unwrap().path, other.to_str().unwrap());
}

#[test]
fn a_model_replaced_at_its_path_after_the_open_is_not_approved() {
    let me = std::process::id();
    let digest =
        crate::detect::file_digest::sha256_file(&Procfs::default().exe_handle(me)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let approved = dir.path().join("approved.onnx");
    let loaded = dir.path().join("loaded.onnx");
    std::fs::write(&approved, b"\x08\x07approved weights").unwrap();
    std::fs::write(&loaded, b"\x08\x07other weights").unwrap();
    let mut rules = BuiltinRules::new(ApprovedWorkloads::default());
    rules.set_workload_records([vigil_domain::WorkloadApproval {
        id: "w1".into(),
        exe_sha256: digest,
        path: None,
        uid: None,
        cgroup_prefix: None,
        models: vec![crate::detect::file_digest::sha256_file(&approved).unwrap()],
        gpus: vec![],
        hosts: vec![],
        approved_by: "test".into(),
        note: String::new(),
        approved_at_unix_nanos: 0,
        signer: String::new(),
        signature: String::new(),
    }]);
    let mut d = Detector::new(rules, Procfs::default(), 0);
    let mut t = ProcessTable::new(100);
    // An io_uring open whose fd is closed already: only the path and the
    // identity the kernel recorded at completion.
    let open_of = |identity_of: &std::path::Path| SensorEvent::Open {
        ctx: ctx(me),
        dfd: libc::AT_FDCWD,
        flags: 0,
        matched: PathMatch::ModelFile,
        path: approved.to_str().unwrap().into(),
        ret: 999_999,
        origin: crate::sensors::OpenOrigin::IoUring,
        file: Some(FileIdentity::of(&std::fs::metadata(identity_of).unwrap())),
    };
    // The approved file itself: approved.
    let det = d.on_event(&open_of(&approved), &mut t);
    assert!(settle(&mut d, det).is_none(), "the approved model");
    // The process opened another file, which the approved one replaced at
    // the path since: never the approved digest.
    let det = d.on_event(&open_of(&loaded), &mut t);
    let f = settle(&mut d, det).expect("a file replaced after the open is a finding");
    assert!(
        f.summary.contains("replaced at its path after the open"),
        "{}",
        f.summary
    );
}

/// An io_uring open into a fixed-file slot (or sent at submission): the
/// kernel records no file, as it never does for these.
fn unidentified_open(
    pid: u32,
    path: &std::path::Path,
    origin: crate::sensors::OpenOrigin,
) -> SensorEvent {
    SensorEvent::Open {
        ctx: ctx(pid),
        dfd: libc::AT_FDCWD,
        flags: 0,
        matched: PathMatch::ModelFile,
        path: path.to_str().unwrap().into(),
        ret: 0,
        origin,
        file: None,
    }
}

#[test]
fn an_open_without_a_kernel_recorded_file_gets_no_model_digest_approval() {
    let me = std::process::id();
    let digest =
        crate::detect::file_digest::sha256_file(&Procfs::default().exe_handle(me)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The approved file lies at the path when the agent looks; the process
    // may have opened another one and swapped this one in since.
    let approved = dir.path().join("approved.gguf");
    std::fs::write(&approved, b"GGUF\x03\x00\x00\x00approved weights").unwrap();
    let mut rules = BuiltinRules::new(ApprovedWorkloads::default());
    rules.set_workload_records([vigil_domain::WorkloadApproval {
        id: "w1".into(),
        exe_sha256: digest,
        path: None,
        uid: None,
        cgroup_prefix: None,
        models: vec![crate::detect::file_digest::sha256_file(&approved).unwrap()],
        gpus: vec![],
        hosts: vec![],
        approved_by: "test".into(),
        note: String::new(),
        approved_at_unix_nanos: 0,
        signer: String::new(),
        signature: String::new(),
    }]);
    let mut d = Detector::new(rules, Procfs::default(), 0);
    let mut t = ProcessTable::new(100);
    for origin in [
        crate::sensors::OpenOrigin::IoUringFixed,
        crate::sensors::OpenOrigin::IoUringSubmitted,
    ] {
        let ev = unidentified_open(me, &approved, origin);
        let det = d.on_event(&ev, &mut t);
        let f = settle(&mut d, det).expect("never approved by the digest of what is at the path");
        assert!(f.summary.contains("file identity unknown"), "{}", f.summary);
        // Forgotten, so that the next origin is decided afresh.
        d.reported.remove(me, 0, Instant::now());
    }
}

#[test]
fn an_open_without_a_kernel_recorded_file_is_not_cleared_by_content() {
    let me = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    // A .pt is a model only by its content: a decoy swapped in at the path
    // must not clear the open.
    let decoy = dir.path().join("weights.pt");
    std::fs::write(&decoy, b"not a model at all").unwrap();
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    // With a recorded identity (or an fd), the content decides: no finding.
    let mut identified = unidentified_open(me, &decoy, crate::sensors::OpenOrigin::IoUring);
    if let SensorEvent::Open { file, ret, .. } = &mut identified {
        *file = Some(FileIdentity::of(&std::fs::metadata(&decoy).unwrap()));
        *ret = 999_999;
    }
    let det = d.on_event(&identified, &mut t);
    assert!(settle(&mut d, det).is_none(), "a non-model .pt is cleared");
    // Without one: reported, saying why.
    let ev = unidentified_open(me, &decoy, crate::sensors::OpenOrigin::IoUringFixed);
    let det = d.on_event(&ev, &mut t);
    let f = settle(&mut d, det).expect("not cleared by what is at the path now");
    assert!(f.summary.contains("file identity unknown"), "{}", f.summary);
}

#[test]
fn a_sensor_flood_is_one_finding_naming_the_process_and_the_count() {
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let me = std::process::id();
    let ev = SensorEvent::SensorFlood {
        ctx: ctx(me),
        dropped: 4321,
        dropped_total: 9000,
    };
    let Some(Detection::Finding(f)) = d.on_event(&ev, &mut t) else {
        panic!("a finding");
    };
    assert_eq!(f.rule_id, SENSOR_FLOOD_RULE);
    assert_eq!(f.process.pid, me);
    assert!(
        f.summary.starts_with(&format!("pid {me} (")),
        "{}",
        f.summary
    );
    assert!(
        f.summary
            .contains("flooded the sensors: 4321 records dropped"),
        "{}",
        f.summary
    );
}

/// A safetensors file as the `safetensors` library writes one.
fn safetensors_file(path: &std::path::Path) {
    let header = br#"{"__metadata__":{"format":"pt","model_type":"bert"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 16]);
    std::fs::write(path, bytes).unwrap();
}

/// The open of `path` that returned `held`'s fd: a name that needs its
/// content (`.pt`, `.pth`) is judged by what that fd holds.
fn held_open(pid: u32, path: &std::path::Path, held: &std::fs::File) -> SensorEvent {
    use std::os::fd::AsRawFd;
    open_with_result(
        pid,
        path.to_str().unwrap(),
        PathMatch::ModelFile,
        held.as_raw_fd(),
    )
}

/// A protocol 2 pickle that runs `os.system("id")` when loaded.
const OS_SYSTEM_PICKLE: &[u8] =
    b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";

#[test]
fn a_model_file_finding_names_the_model_with_its_digest_and_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    safetensors_file(&model);
    let mut d = detector(0);
    d.keep_unsettled_models();
    let mut t = ProcessTable::new(100);
    let me = std::process::id();
    let det = d.on_event(
        &open(me, model.to_str().unwrap(), PathMatch::ModelFile),
        &mut t,
    );
    let found = settle_all(&mut d, det);
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    let m = f.file.as_ref().unwrap().model.as_ref().expect("inspected");
    assert_eq!(m.format, "safetensors");
    assert_eq!(m.architecture, "bert");
    assert_eq!(m.parameters, 4);
    assert_eq!(
        m.sha256,
        crate::detect::file_digest::sha256_file(&model).unwrap()
    );
    assert_eq!(m.structure_fingerprint.len(), 64);
    assert_eq!(m.risk, vigil_domain::ModelRisk::Safe);
    assert!(m.error.is_empty(), "{}", m.error);
    assert!(
        f.summary.ends_with("; bert 4 F32 (safetensors), risk safe"),
        "{}",
        f.summary
    );
    // The examination is cached by file version: another process's open
    // of it is decided at once.
    let other = d.on_event(
        &open(1, model.to_str().unwrap(), PathMatch::ModelFile),
        &mut t,
    );
    assert!(
        !matches!(other, Some(Detection::NeedsModelExamination(_))),
        "examined again: {other:?}"
    );
}

#[test]
fn a_pickle_that_runs_code_is_a_critical_finding_even_for_an_approved_process() {
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("checkpoint.pt");
    std::fs::write(&evil, OS_SYSTEM_PICKLE).unwrap();
    let me = std::process::id();
    let digest =
        crate::detect::file_digest::sha256_file(&Procfs::default().exe_handle(me)).unwrap();
    let rules = BuiltinRules::new(ApprovedWorkloads::new([digest]));
    let mut d = Detector::new(rules, Procfs::default(), 0);
    let mut t = ProcessTable::new(100);
    let held = std::fs::File::open(&evil).unwrap();
    let det = d.on_event(&held_open(me, &evil, &held), &mut t);
    let found = settle_all(&mut d, det);
    assert_eq!(
        found.len(),
        1,
        "approved: no model_file finding, only the risk: {found:?}"
    );
    let f = &found[0];
    assert_eq!(f.signal, vigil_domain::SignalKind::ModelRisk);
    assert_eq!(f.severity, vigil_domain::Severity::Critical);
    assert_eq!(f.rule_id, vigil_detection::MODEL_RISK_RULE_ID);
    let m = f.file.as_ref().unwrap().model.as_ref().unwrap();
    assert_eq!(m.risk, vigil_domain::ModelRisk::Dangerous);
    assert_eq!(m.dangerous_imports, ["os.system"]);
    assert!(
        f.summary
            .contains("runs code when loaded: it imports os.system"),
        "{}",
        f.summary
    );
    // Once per process and file.
    let again = d.on_event(&held_open(me, &evil, &held), &mut t);
    assert!(settle_all(&mut d, again).is_empty());
}

#[test]
fn an_unapproved_process_loading_a_dangerous_pickle_gets_both_findings() {
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("pytorch_model.pth");
    std::fs::write(&evil, OS_SYSTEM_PICKLE).unwrap();
    let mut d = detector(0);
    let mut t = ProcessTable::new(100);
    let me = std::process::id();
    let held = std::fs::File::open(&evil).unwrap();
    let det = d.on_event(&held_open(me, &evil, &held), &mut t);
    let found = settle_all(&mut d, det);
    let signals: Vec<_> = found.iter().map(|f| f.signal).collect();
    assert_eq!(
        signals,
        [
            vigil_domain::SignalKind::ModelFile,
            vigil_domain::SignalKind::ModelRisk
        ]
    );
    assert!(
        found[0].summary.ends_with("risk dangerous"),
        "{}",
        found[0].summary
    );
}

/// Pickles `pickle.load` and `torch.load` run, under pickle names and in
/// protocols 0 and 1 (no magic to sniff), are examined: a dangerous one is
/// a `model_risk` finding (and a `.pkl` of data no model-file finding).
#[test]
fn pickles_by_name_and_old_protocols_get_a_risk_finding() {
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id();
    for (name, bytes) in [
        ("model.pkl", OS_SYSTEM_PICKLE),
        ("checkpoint.pt", &b"cos\nsystem\n(S'id'\ntR."[..]),
        ("finetuned.pth", &b"cos\nsystem\n(S'id'\ntR."[..]),
    ] {
        let evil = dir.path().join(name);
        std::fs::write(&evil, bytes).unwrap();
        let mut d = detector(0);
        let mut t = ProcessTable::new(100);
        let held = std::fs::File::open(&evil).unwrap();
        let det = d.on_event(&held_open(me, &evil, &held), &mut t);
        let found = settle_all(&mut d, det);
        assert!(
            found
                .iter()
                .any(|f| f.signal == vigil_domain::SignalKind::ModelRisk),
            "{name}: {found:?}"
        );
    }
}

#[test]
fn a_local_approval_narrowed_to_a_cgroup_covers_a_process_seen_at_exec() {
    // A process the table knows from its exec has no cgroup path yet: it
    // is read when an approval narrows by cgroup (the agent's approval of
    // its own sidecars does).
    let me = std::process::id();
    let procfs = Procfs::default();
    let Some(cgroup) = procfs.cgroup_path(me) else {
        return; // no cgroup v2 here: nothing to narrow by
    };
    let digest = crate::detect::file_digest::sha256_file(&procfs.exe_handle(me)).unwrap();
    let approval = |prefix: &str| vigil_domain::WorkloadApproval {
        id: "local:test".into(),
        exe_sha256: digest.clone(),
        cgroup_prefix: Some(prefix.to_string()),
        ..Default::default()
    };
    for (prefix, approved) in [(cgroup.as_str(), true), ("/elsewhere", false)] {
        let mut d = Detector::new(BuiltinRules::default(), Procfs::default(), 0);
        d.set_local_approvals([approval(prefix)]);
        // Control plane updates leave the local approval be.
        d.set_workload_records([]);
        let mut t = ProcessTable::new(100);
        t.observe_exec(&ctx(me), &procfs.exe(me).unwrap(), &[]);
        let det = d.on_event(&open(me, "/tmp/m/model.onnx", PathMatch::ModelFile), &mut t);
        let f = settle(&mut d, det);
        assert_eq!(f.is_none(), approved, "prefix {prefix}: {f:?}");
        if let Some(f) = f {
            assert_eq!(f.process.cgroup_path, cgroup);
        }
    }
}

#[test]
fn a_local_approval_narrowed_to_a_cgroup_covers_a_process_in_the_procfs_rescan() {
    // Sensor mode procfs: the poller's exec (no cgroup path, and maybe
    // from before the exec: another binary) then the rescan after each
    // batch, which finds what the process holds open. The agent's own
    // sidecars are approved by digest, path and cgroup prefix.
    let me = std::process::id();
    let procfs = Procfs::default();
    let Some(cgroup) = procfs.cgroup_path(me) else {
        return; // no cgroup v2 here: nothing to narrow by
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sidecar-held.gguf");
    std::fs::write(&path, b"GGUF\x03\x00\x00\x00").unwrap();
    let _held = std::fs::File::open(&path).unwrap();
    let exe = procfs.exe(me).unwrap();
    let digest = crate::detect::file_digest::sha256_file(&procfs.exe_handle(me)).unwrap();
    let approval = |prefix: &str| vigil_domain::WorkloadApproval {
        id: "local:vigil-sidecar".into(),
        exe_sha256: digest.clone(),
        path: Some(exe.clone()),
        cgroup_prefix: Some(prefix.to_string()),
        ..Default::default()
    };
    for (prefix, approved) in [(cgroup.as_str(), true), ("/elsewhere", false)] {
        let mut d = Detector::new(BuiltinRules::default(), Procfs::default(), 0);
        d.set_local_approvals([approval(prefix)]);
        let mut t = ProcessTable::new(100);
        // Polled between fork and exec: the parent's binary.
        t.observe_exec(&ctx(me), "/usr/sbin/vigil-agent", &[]);
        let found: Vec<Finding> = d
            .scan_running(&mut t)
            .into_iter()
            .filter(|f| f.process.pid == me && f.object() == path.to_string_lossy())
            .collect();
        assert_eq!(found.is_empty(), approved, "prefix {prefix}: {found:?}");
        for f in &found {
            assert_eq!(f.process.cgroup_path, cgroup);
            assert_eq!(f.process.exe, exe);
        }
    }
}
