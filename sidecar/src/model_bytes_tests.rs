use std::io::Write;
use std::os::fd::AsFd;

use nix::sys::memfd::{memfd_create, MFdFlags};

use super::*;

fn memfd_with(bytes: &[u8]) -> File {
    let fd = memfd_create("model", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).unwrap();
    let mut file = File::from(fd);
    file.write_all(bytes).unwrap();
    file
}

#[test]
fn a_file_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    std::fs::write(&path, b"model bytes").unwrap();
    assert_eq!(read_model_file(&path).unwrap(), b"model bytes");
    let err = read_model_file(&dir.path().join("missing")).unwrap_err();
    assert!(err.to_string().starts_with("opening "), "{err}");
    assert!(matches!(
        read_model_file(dir.path()),
        Err(ReadError::NotRegularFile)
    ));
}

#[test]
fn an_fd_is_read_from_offset_zero_whatever_its_position() {
    // The writes left the offset at the end: pread does not care.
    let file = memfd_with(b"0123456789");
    assert_eq!(read_model_fd(file.as_fd(), 10).unwrap(), b"0123456789");
}

#[test]
fn the_claimed_size_must_be_the_fds_size() {
    let file = memfd_with(b"0123456789");
    let err = read_model_fd(file.as_fd(), 11).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the load request says 11 bytes, but the file holds 10"
    );
}

#[test]
fn a_pipe_or_socket_is_refused_without_reading() {
    let (read_end, _write_end) = nix::unistd::pipe().unwrap();
    assert!(matches!(
        read_model_fd(read_end.as_fd(), 0),
        Err(ReadError::NotRegularFile)
    ));
}

#[test]
fn what_was_read_is_a_private_copy_later_writes_do_not_reach() {
    let mut file = memfd_with(b"approved");
    let bytes = read_model_fd(file.as_fd(), 8).unwrap();
    use std::io::{Seek, SeekFrom};
    file.seek(SeekFrom::Start(0)).unwrap();
    file.write_all(b"tampered").unwrap();
    assert_eq!(bytes, b"approved");
}

#[test]
fn a_size_beyond_memory_is_an_error_not_an_abort() {
    // A sparse memfd of 4 EiB: fstat says so, no address space holds it.
    let file = memfd_with(b"");
    file.set_len(1 << 62).unwrap();
    let err = read_model_fd(file.as_fd(), 1 << 62).unwrap_err();
    assert!(matches!(err, ReadError::TooLarge(_)), "{err:?}");
}
