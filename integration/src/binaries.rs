//! Where the built vigil binaries are.

use std::path::{Path, PathBuf};

use crate::HarnessError;

/// Directory holding the built binaries, the first of:
/// - `$VIGIL_BIN_DIR`;
/// - `$VIGIL_ROOT/target/release` (the benchmarks, run by `bench/run.sh`);
/// - the directory of the running executable, out of its `deps/` if it is
///   in one: `target/<profile>` for a test binary (`target/<profile>/deps/`)
///   or for a binary of the workspace itself.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VIGIL_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(root) = std::env::var_os("VIGIL_ROOT") {
        return Path::new(&root).join("target/release");
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe
        .parent()
        .expect("an executable lives in a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    }
}

/// The path of the built binary `name`, or why it is not there.
pub fn try_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let path = bin_dir().join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(HarnessError::MissingBinary(path))
    }
}

/// The path of the built binary `name`; panics, saying how to build it,
/// when it is missing.
pub fn binary(name: &str) -> PathBuf {
    try_binary(name).unwrap_or_else(|e| panic!("{e}"))
}
