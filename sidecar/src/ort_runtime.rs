//! ONNX Runtime, loaded from the library path given with `--ort-lib`
//! (ort's `load-dynamic`: nothing is linked or downloaded at build time).
//!
//! The path is checked before ort sees it: ort's loader resolves a
//! relative path against the executable and panics where it cannot, and a
//! missing file, a directory or a file that is not a shared library should
//! each say so. ort then opens the library, finds `OrtGetApiBase` and
//! refuses a version older than the API the sidecar was built for (1.24).
//! A process holds one ONNX Runtime environment.

use std::io::Read;
use std::path::{Path, PathBuf};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};

/// Why the ONNX Runtime library cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeLoadError {
    #[error("ONNX Runtime library {}: {reason}", .path.display())]
    Unusable { path: PathBuf, reason: String },
}

fn unusable(path: &Path, reason: impl Into<String>) -> RuntimeLoadError {
    RuntimeLoadError::Unusable {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The loaded ONNX Runtime: its environment and what it was built with.
#[derive(Debug, Clone)]
pub struct OrtRuntime {
    pub environment: Environment,
    /// The library as opened (absolute, links resolved).
    pub library: PathBuf,
    /// ONNX Runtime's build description (version, commit).
    pub build_info: String,
    /// Whether this build has the CUDA execution provider.
    pub cuda_available: bool,
}

/// The absolute path of the shared library at `path`, or why it is not
/// one: missing, not a regular file, not an ELF file.
pub fn check_library_file(path: &Path) -> Result<PathBuf, RuntimeLoadError> {
    let absolute = std::fs::canonicalize(path).map_err(|e| unusable(path, e.to_string()))?;
    let meta = std::fs::metadata(&absolute).map_err(|e| unusable(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(unusable(path, "not a regular file"));
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(&absolute)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|e| unusable(path, format!("reading its header: {e}")))?;
    if magic != *b"\x7fELF" {
        return Err(unusable(path, "not a shared library (no ELF header)"));
    }
    Ok(absolute)
}

/// Opens the ONNX Runtime library at `path` and creates the process's
/// environment (named `vigil-sidecar`, telemetry off).
pub fn load_runtime(path: &Path) -> Result<OrtRuntime, RuntimeLoadError> {
    let library = check_library_file(path)?;
    let builder = ort::init_from(&library).map_err(|e| unusable(path, e.to_string()))?;
    let environment = builder
        .with_name("vigil-sidecar")
        .with_telemetry(false)
        .build()
        .map_err(|e| unusable(path, format!("creating the environment: {e}")))?;
    let cuda_available = ep::CUDA::is_available().unwrap_or(false);
    Ok(OrtRuntime {
        environment,
        library,
        build_info: ort::info().to_string(),
        cuda_available,
    })
}

#[cfg(test)]
#[path = "ort_runtime_tests.rs"]
mod tests;
