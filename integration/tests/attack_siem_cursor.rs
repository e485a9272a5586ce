//! A local user against the SIEM clients' cursor files, kept in a
//! directory others may write (/tmp, a shared spool): `vigilctl siem otlp`
//! and the Python example (`examples/python-siem/siem_follow.py`) may run
//! as root. A symlink planted where the cursor file or its temporary file
//! goes must never be written through (it would clobber any file the
//! client may write) nor read (its refusal would echo the target), and a
//! cursor file someone else could write (a planted cursor skips events) is
//! refused.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use vigil_integration::binary;
use vigil_integration::siem_clients::python_siem_example;

const SECRET: &str = "root:$6$not-for-the-log:19000:0:99999:7:::\n";

fn plant(dir: &Path) -> std::path::PathBuf {
    let secret = dir.join("shadow");
    std::fs::write(&secret, SECRET).unwrap();
    secret
}

#[test]
fn vigilctl_siem_otlp_refuses_a_cursor_file_that_is_a_symlink_without_reading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = plant(tmp.path());
    let cursor = tmp.path().join("otlp.cursor");
    symlink(&secret, &cursor).unwrap();
    let out = Command::new(binary("vigilctl"))
        .args(["--control-plane", "127.0.0.1:1", "siem", "otlp"])
        .args(["--collector", "http://127.0.0.1:1", "--cursor-file"])
        .arg(&cursor)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(!stderr.contains("not-for-the-log"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), SECRET);
}

/// The Python example's cursor functions, run on their own (stdlib only).
fn python(code: &str) -> std::process::Output {
    let dir = python_siem_example().parent().unwrap().to_path_buf();
    Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sys; sys.path.insert(0, {dir:?}); import siem_follow\n{code}"
        ))
        .output()
        .unwrap()
}

#[test]
fn the_python_example_never_writes_through_a_planted_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = plant(tmp.path());
    let cursor = tmp.path().join("siem.cursor");
    // Where the example put its temporary file.
    symlink(&secret, tmp.path().join(".siem.cursor.tmp")).unwrap();
    let out = python(&format!(
        "siem_follow.save_cursor({:?}, 17)\nprint(siem_follow.load_cursor({:?}))",
        cursor.to_str().unwrap(),
        cursor.to_str().unwrap()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "17");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), SECRET);
    let meta = std::fs::symlink_metadata(&cursor).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o077, 0);
}

#[test]
fn the_python_example_refuses_a_cursor_file_not_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = plant(tmp.path());
    let link = tmp.path().join("siem.cursor");
    symlink(&secret, &link).unwrap();
    let out = python(&format!(
        "siem_follow.load_cursor({:?})",
        link.to_str().unwrap()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert!(!stderr.contains("not-for-the-log"), "{stderr}");

    let shared = tmp.path().join("shared.cursor");
    std::fs::write(&shared, "5\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = python(&format!(
        "siem_follow.load_cursor({:?})",
        shared.to_str().unwrap()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("written by others"), "{stderr}");
}

/// The example's --out file in a shared directory: a planted symlink there
/// would have the example truncate the target (a torn last line is cut at
/// start) and append events to it. Refused, the target untouched.
#[test]
fn the_python_example_refuses_an_out_file_that_is_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = plant(tmp.path());
    let out_file = tmp.path().join("events.jsonl");
    symlink(&secret, &out_file).unwrap();
    let out = python(&format!(
        "siem_follow.last_written_cursor({:?})",
        out_file.to_str().unwrap()
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("symbolic link"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), SECRET);
    // Its own file, with a torn last line: cut, the cursor before it.
    let own = tmp.path().join("own.jsonl");
    std::fs::write(&own, "{\"cursor\":4}\n{\"cursor\":5").unwrap();
    let out = python(&format!(
        "print(siem_follow.last_written_cursor({:?}))",
        own.to_str().unwrap()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4");
}

/// The example imports the stubs it generates from --stubs-dir, first on
/// sys.path: in a directory another user made (or may write), a module
/// planted there (grpc.py) would run as the example's user. Refused.
#[test]
fn the_python_example_refuses_a_stubs_dir_others_may_write() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("stubs");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(shared.join("grpc.py"), "print('planted code ran')\n").unwrap();
    let out = Command::new("python3")
        .arg(python_siem_example())
        .args(["--endpoint", "127.0.0.1:1", "--plaintext", "--cursor-file"])
        .arg(tmp.path().join("c"))
        .arg("--stubs-dir")
        .arg(&shared)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stdout.contains("planted code ran"), "{stdout}");
    assert!(stderr.contains("--stubs-dir"), "{stderr}");
    assert!(stderr.contains("written by others"), "{stderr}");
    let link = tmp.path().join("link");
    symlink(&shared, &link).unwrap();
    let out = python(&format!(
        "siem_follow.check_own_dir({:?}, 'stubs')",
        link.to_str().unwrap()
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
}
