//! The ONNX Runtime the unit tests load: the library of the onnxruntime
//! wheel `make deps` installs, one environment for the whole test process.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::ort_runtime::{load_runtime, OrtRuntime};

/// Where `scripts/install-deps.sh` puts the wheel's library.
pub fn ort_library_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.vigil/deps/python/onnxruntime/capi/libonnxruntime.so.1.32.0")
}

/// The process's ONNX Runtime; panics, saying to run `make deps`, when
/// the library is not installed.
pub fn runtime() -> &'static OrtRuntime {
    static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let path = ort_library_path();
        assert!(
            path.is_file(),
            "{} is missing: run `make deps` (scripts/install-deps.sh installs the onnxruntime wheel)",
            path.display()
        );
        load_runtime(&path).unwrap_or_else(|e| panic!("{e}"))
    })
}
