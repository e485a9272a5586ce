use std::os::unix::fs::PermissionsExt;

use super::*;

fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn the_socket_is_created_0660_and_removed_when_dropped() {
    let dir = private_dir();
    let path = dir.path().join("s.sock");
    let (listener, file) = bind_unix_socket(&path).unwrap();
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, SOCKET_MODE);
    // Reachable.
    std::os::unix::net::UnixStream::connect(&path).unwrap();
    drop(listener);
    drop(file);
    assert!(!path.exists());
}

#[test]
fn a_symlink_at_the_path_is_refused_and_its_target_untouched() {
    let dir = private_dir();
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep").unwrap();
    let path = dir.path().join("s.sock");
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let err = bind_unix_socket(&path).unwrap_err();
    assert!(matches!(err, SocketPathError::Symlink(_)), "{err}");
    assert!(err
        .to_string()
        .ends_with("is a symbolic link; not followed"));
    assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_dangling_symlink_is_refused_too_and_nothing_is_created_where_it_points() {
    let dir = private_dir();
    let path = dir.path().join("s.sock");
    let elsewhere = dir.path().join("elsewhere.sock");
    std::os::unix::fs::symlink(&elsewhere, &path).unwrap();
    assert!(matches!(
        bind_unix_socket(&path),
        Err(SocketPathError::Symlink(_))
    ));
    assert!(!elsewhere.exists());
}

#[test]
fn a_directory_others_can_write_is_refused() {
    let dir = private_dir();
    for mode in [0o777, 0o1777, 0o702] {
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        let err = bind_unix_socket(&dir.path().join("s.sock")).unwrap_err();
        assert!(
            matches!(err, SocketPathError::DirectoryWritable { .. }),
            "{mode:o}: {err}"
        );
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(bind_unix_socket(&dir.path().join("s.sock")).is_ok());
}

#[test]
fn a_stale_socket_is_replaced_and_a_regular_file_is_refused() {
    let dir = private_dir();
    let path = dir.path().join("s.sock");
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    assert!(path.exists());
    let (_listener, _file) = bind_unix_socket(&path).unwrap();

    let file_path = dir.path().join("f.sock");
    std::fs::write(&file_path, b"data").unwrap();
    assert!(matches!(
        bind_unix_socket(&file_path),
        Err(SocketPathError::NotSocket(_))
    ));
    assert_eq!(std::fs::read(&file_path).unwrap(), b"data");
}
