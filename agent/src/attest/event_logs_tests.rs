use super::*;

#[test]
fn logs_are_read_within_their_bound_and_skipped_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::write(&small, b"event").unwrap();
    assert_eq!(read_bounded("boot event log", &small, 5).unwrap(), b"event");

    let e = read_bounded("boot event log", &small, 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("boot event log"), "{e}");
    assert!(e.contains("larger than 4 bytes, not sent"), "{e}");

    let missing = dir.path().join("missing");
    let e = read_bounded("IMA log", &missing, 10)
        .unwrap_err()
        .to_string();
    assert!(e.contains("IMA log") && e.contains("not readable"), "{e}");

    let paths = EventLogPaths {
        boot: small,
        ima: missing,
    };
    assert_eq!(
        paths.read(),
        EventLogs {
            boot: Some(b"event".to_vec()),
            ima: None
        }
    );
}

#[test]
fn the_default_paths_are_the_kernels() {
    let paths = EventLogPaths::default();
    assert_eq!(
        paths.boot,
        Path::new("/sys/kernel/security/tpm0/binary_bios_measurements")
    );
    assert_eq!(
        paths.ima,
        Path::new("/sys/kernel/security/ima/binary_runtime_measurements")
    );
    assert_eq!(BOOT_EVENT_LOG_LIMIT, 1 << 20);
    assert_eq!(IMA_LOG_LIMIT, 2 << 20);
}
