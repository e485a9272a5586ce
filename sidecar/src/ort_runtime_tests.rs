use super::*;
use crate::test_runtime::{ort_library_path, runtime};

#[test]
fn a_missing_library_a_directory_and_a_file_that_is_no_library_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("libonnxruntime.so");
    let err = check_library_file(&missing).unwrap_err().to_string();
    assert!(
        err.contains("libonnxruntime.so") && err.contains("No such file"),
        "{err}"
    );

    let err = check_library_file(dir.path()).unwrap_err().to_string();
    assert!(err.ends_with("not a regular file"), "{err}");

    let text = dir.path().join("notes.so");
    std::fs::write(&text, b"just text").unwrap();
    let err = check_library_file(&text).unwrap_err().to_string();
    assert!(
        err.ends_with("not a shared library (no ELF header)"),
        "{err}"
    );

    let empty = dir.path().join("empty.so");
    std::fs::write(&empty, b"").unwrap();
    let err = check_library_file(&empty).unwrap_err().to_string();
    assert!(err.contains("reading its header"), "{err}");
}

#[test]
fn the_installed_wheel_library_loads_as_an_environment() {
    let runtime = runtime();
    assert_eq!(
        runtime.library,
        std::fs::canonicalize(ort_library_path()).unwrap()
    );
    assert!(
        runtime.build_info.starts_with("ORT Build Info"),
        "{}",
        runtime.build_info
    );
    // The PyPI wheel is a CPU build.
    assert!(!runtime.cuda_available);
}
