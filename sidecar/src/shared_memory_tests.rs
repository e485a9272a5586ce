use std::os::unix::fs::{chown, symlink};

use super::*;

const ME: u32 = 0;
const OTHER: u32 = 65534;

fn me() -> Caller {
    Caller::Uid(nix::unistd::geteuid().as_raw())
}

/// A file of `size` bytes in `dir`, owned by `uid`.
fn file(dir: &Path, name: &str, size: u64, uid: u32) -> PathBuf {
    let path = dir.join(name);
    let f = File::create(&path).unwrap();
    f.set_len(size).unwrap();
    chown(&path, Some(uid), Some(uid)).unwrap();
    path
}

fn memory(dir: &Path) -> SharedMemory {
    SharedMemory::new(dir, Limits::default())
}

fn owner() -> u32 {
    nix::unistd::geteuid().as_raw()
}

#[test]
fn a_key_names_one_file_and_nothing_else() {
    assert_eq!(key_file_name("/input").unwrap(), "input");
    assert_eq!(key_file_name("input").unwrap(), "input");
    assert_eq!(key_file_name("/a.b-c_1").unwrap(), "a.b-c_1");
    for bad in [
        "",
        "/",
        "//x",
        ".",
        "/.",
        "..",
        "/..",
        "../etc/passwd",
        "/../etc/shadow",
        "a/b",
        "/x/",
        "a\0b",
    ] {
        let err = key_file_name(bad).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err}");
        assert!(err.to_string().contains("refused"), "{bad:?}: {err}");
    }
    let long = "x".repeat(256);
    assert!(key_file_name(&long).is_err());
    assert!(key_file_name(&"x".repeat(255)).is_ok());
}

#[test]
fn path_traversal_keys_are_refused_before_anything_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let shm = dir.path().join("shm");
    std::fs::create_dir(&shm).unwrap();
    // A file one level up that a traversal would reach.
    file(dir.path(), "secret", 64, owner());
    let memory = memory(&shm);
    for key in ["../secret", "/../secret", "x/../../secret"] {
        let err = memory.register(&me(), "r", key, 0, 8).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{key}: {err}");
    }
    assert_eq!(memory.count(), 0);
}

#[test]
fn a_symbolic_link_a_directory_and_a_fifo_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let target = file(dir.path(), "target", 64, owner());
    symlink(&target, dir.path().join("link")).unwrap();
    std::fs::create_dir(dir.path().join("dir")).unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let memory = memory(dir.path());
    let err = memory.register(&me(), "r", "/link", 0, 8).unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = memory.register(&me(), "r", "/dir", 0, 8).unwrap_err();
    assert_ne!(err.code(), Code::Ok, "{err}");
    // A FIFO opens without blocking (O_NONBLOCK) and is refused.
    let err = memory.register(&me(), "r", "/fifo", 0, 0).unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.to_string().contains("not a regular file"), "{err}");
    let err = memory.register(&me(), "r", "/absent", 0, 8).unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert_eq!(memory.count(), 0);
}

#[test]
fn another_uids_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "theirs", 4096, OTHER);
    file(dir.path(), "mine", 4096, ME);
    let memory = memory(dir.path());
    // Root (the sidecar's own uid here) may not register a file of uid
    // 65534, nor uid 65534 one of root's.
    let err = memory
        .register(&Caller::Uid(ME), "r", "/theirs", 0, 8)
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    let err = memory
        .register(&Caller::Uid(OTHER), "r", "/mine", 0, 8)
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    memory
        .register(&Caller::Uid(OTHER), "r", "/theirs", 0, 8)
        .unwrap();
}

#[test]
fn a_caller_sees_uses_and_unregisters_only_its_own_regions() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "a", 4096, OTHER);
    file(dir.path(), "b", 4096, ME);
    let memory = memory(dir.path());
    let them = Caller::Uid(OTHER);
    let us = Caller::Uid(ME);
    memory.register(&them, "input", "/a", 0, 4096).unwrap();
    // The same name is free for another uid: namespaces are per uid.
    memory.register(&us, "input", "/b", 0, 4096).unwrap();
    assert_eq!(memory.status(&us, "").unwrap().len(), 1);
    assert_eq!(memory.status(&us, "input").unwrap()[0].key, "/b");
    memory.unregister(&us, "input").unwrap();
    assert_eq!(
        memory.status(&us, "input").unwrap_err().code(),
        Code::NotFound
    );
    assert!(memory.slice(&us, "input", 0, 8).is_err());
    // Unregistering everything is the caller's everything.
    memory.unregister(&us, "").unwrap();
    assert_eq!(memory.status(&them, "input").unwrap()[0].key, "/a");
    memory.slice(&them, "input", 0, 8).unwrap();
    assert_eq!(memory.count(), 1);
}

#[test]
fn without_an_identity_nothing_is_served() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "a", 64, ME);
    let memory = memory(dir.path());
    let tcp = Caller::Unidentified("TCP carries no peer credentials".into());
    for err in [
        memory.register(&tcp, "r", "/a", 0, 8).unwrap_err(),
        memory.status(&tcp, "").unwrap_err(),
        memory.unregister(&tcp, "").unwrap_err(),
        memory.slice(&tcp, "r", 0, 8).unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        assert!(err.to_string().contains("TCP carries"), "{err}");
    }
}

#[test]
fn ranges_are_checked_without_overflow() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "a", 4096, owner());
    let memory = memory(dir.path());
    let err = memory.register(&me(), "r", "/a", 4000, 200).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("past the end"), "{err}");
    let err = memory.register(&me(), "r", "/a", u64::MAX, 2).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = memory.register(&me(), "r", "/a", 0, u64::MAX).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    memory.register(&me(), "r", "/a", 1024, 1024).unwrap();
    for (offset, size) in [(0, 1025), (1024, 1), (u64::MAX, 2), (1, u64::MAX)] {
        let err = memory.slice(&me(), "r", offset, size).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{offset}+{size}: {err}");
    }
    let slice = memory.slice(&me(), "r", 1000, 24).unwrap();
    let err = slice.region.read_at(1020, &mut [0u8; 8]).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

#[test]
fn reads_and_writes_land_at_the_region_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "a", 4096, owner());
    let memory = memory(dir.path());
    memory.register(&me(), "r", "/a", 1024, 1024).unwrap();
    let slice = memory.slice(&me(), "r", 16, 8).unwrap();
    slice.region.write_at(16, b"abcdefgh").unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[1040..1048], b"abcdefgh");
    let mut back = [0u8; 8];
    slice.region.read_at(16, &mut back).unwrap();
    assert_eq!(&back, b"abcdefgh");
}

#[test]
fn a_file_truncated_after_registration_is_an_error_never_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "a", 8192, owner());
    let memory = memory(dir.path());
    memory.register(&me(), "r", "/a", 0, 8192).unwrap();
    let slice = memory.slice(&me(), "r", 4096, 4096).unwrap();
    File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(100)
        .unwrap();
    let err = slice.region.read_at(4096, &mut [0u8; 4096]).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    let err = slice.region.write_at(4096, &[1u8; 4096]).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // The write was refused before it could grow the file back.
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 100);
    // What still lies within the file is served.
    slice.region.read_at(0, &mut [0u8; 100]).unwrap();
}

#[test]
fn registration_floods_hit_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "a", 64, ME);
    file(dir.path(), "b", 64, OTHER);
    let memory = SharedMemory::new(
        dir.path(),
        Limits {
            max_regions: 6,
            max_regions_per_owner: 4,
            max_region_bytes: 64,
            ..Limits::default()
        },
    );
    let us = Caller::Uid(ME);
    let them = Caller::Uid(OTHER);
    for i in 0..4 {
        memory.register(&us, &format!("r{i}"), "/a", 0, 8).unwrap();
    }
    let err = memory.register(&us, "r4", "/a", 0, 8).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    let err = memory.register(&us, "r0", "/a", 0, 8).unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    memory.register(&them, "r0", "/b", 0, 8).unwrap();
    memory.register(&them, "r1", "/b", 0, 8).unwrap();
    let err = memory.register(&them, "r2", "/b", 0, 8).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    assert!(
        err.to_string().contains("the most the sidecar holds"),
        "{err}"
    );
    let err = memory.register(&them, "big", "/b", 0, 65).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = memory.register(&them, "", "/b", 0, 8).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = memory
        .register(&them, &"n".repeat(MAX_NAME_BYTES + 1), "/b", 0, 8)
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    memory.unregister(&us, "").unwrap();
    memory.register(&them, "r2", "/b", 0, 8).unwrap();
    assert_eq!(memory.count(), 3);
}

#[test]
fn a_region_unregistered_mid_request_stays_readable_to_that_request() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "a", 64, owner());
    let memory = memory(dir.path());
    memory.register(&me(), "r", "/a", 0, 64).unwrap();
    let slice = memory.slice(&me(), "r", 0, 64).unwrap();
    memory.unregister(&me(), "r").unwrap();
    std::fs::remove_file(dir.path().join("a")).unwrap();
    slice.region.read_at(0, &mut [0u8; 64]).unwrap();
    assert!(memory.slice(&me(), "r", 0, 8).is_err());
}

#[test]
fn overlapping_slices_are_seen_across_regions_of_one_file() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "a", 4096, owner());
    file(dir.path(), "b", 4096, owner());
    let memory = memory(dir.path());
    memory.register(&me(), "low", "/a", 0, 2048).unwrap();
    memory.register(&me(), "high", "/a", 1024, 2048).unwrap();
    memory.register(&me(), "other", "/b", 0, 2048).unwrap();
    let low = memory.slice(&me(), "low", 1024, 16).unwrap();
    let high = memory.slice(&me(), "high", 8, 16).unwrap();
    let apart = memory.slice(&me(), "high", 16, 16).unwrap();
    let other = memory.slice(&me(), "other", 1024, 16).unwrap();
    assert!(low.overlaps(&high));
    assert!(!low.overlaps(&apart));
    assert!(!low.overlaps(&other));
}

#[test]
fn efbig_is_invalid_argument_naming_the_file_size_limit() {
    let err = write_error(
        "out",
        1 << 20,
        64,
        std::io::Error::from_raw_os_error(libc::EFBIG),
    );
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.to_string().contains(
            "bytes 1048576 to 1048640 of its file are past the sidecar's file size limit \
             (RLIMIT_FSIZE)"
        ),
        "{err}"
    );
    let err = write_error("out", 0, 1, std::io::Error::from_raw_os_error(libc::EIO));
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

/// Set in the child process the test below starts.
const FSIZE_CHILD: &str = "VIGIL_SIDECAR_TEST_FSIZE_CHILD";

/// RLIMIT_FSIZE is process-wide: the write past it runs in a child (this
/// test binary, running only this test), never in the test process.
#[test]
fn a_write_past_rlimit_fsize_is_an_error_reply_not_the_process_s_end() {
    if let Some(dir) = std::env::var_os(FSIZE_CHILD) {
        let dir = PathBuf::from(dir);
        let memory = memory(&dir);
        memory.register(&me(), "out", "/out", 0, 1 << 20).unwrap();
        let slice = memory.slice(&me(), "out", 0, 1 << 20).unwrap();
        ignore_file_size_signal().unwrap();
        let (_, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE).unwrap();
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_FSIZE, 4096, hard)
            .unwrap();
        // Within the limit: written.
        slice.region.write_at(0, &[1u8; 64]).unwrap();
        // Past it: EFBIG, a clear INVALID_ARGUMENT (SIGXFSZ would have
        // killed the process).
        let err = slice.region.write_at(8192, &[1u8; 64]).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.to_string().contains("(RLIMIT_FSIZE)"), "{err}");
        println!("FSIZE-CHILD-OK");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "out", 1 << 20, owner());
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shared_memory::tests::a_write_past_rlimit_fsize_is_an_error_reply_not_the_process_s_end",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(FSIZE_CHILD, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("FSIZE-CHILD-OK"),
        "child: {:?}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
