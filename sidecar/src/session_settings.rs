//! How ONNX Runtime sessions are built: threads, graph optimisation and
//! the execution provider, as the command line sets them.

use ort::session::builder::{AutoDevicePolicy, GraphOptimizationLevel, SessionBuilder};
use ort::session::Session;

use crate::ort_runtime::OrtRuntime;

/// `--opt-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OptLevel {
    /// No graph optimisation.
    Disable,
    /// Semantics-preserving rewrites (constant folding, redundant nodes).
    Basic,
    /// Basic plus complex node fusions.
    Extended,
    /// Everything, layout optimisations included (ONNX Runtime's default).
    All,
}

impl OptLevel {
    fn to_ort(self) -> GraphOptimizationLevel {
        match self {
            OptLevel::Disable => GraphOptimizationLevel::Disable,
            OptLevel::Basic => GraphOptimizationLevel::Level1,
            OptLevel::Extended => GraphOptimizationLevel::Level2,
            OptLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// `--execution-provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutionProviderChoice {
    Cpu,
    /// CUDA where this ONNX Runtime build and the host have it, CPU
    /// otherwise (with a warning).
    Cuda,
}

/// The session options of every model the sidecar loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionSettings {
    /// Threads within an operator; 0 leaves ONNX Runtime's default (one
    /// per physical core).
    pub intra_threads: usize,
    /// Threads across independent operators; above 0 turns on parallel
    /// execution, 0 keeps ONNX Runtime's sequential default.
    pub inter_threads: usize,
    pub opt_level: OptLevel,
    pub execution_provider: ExecutionProviderChoice,
}

impl Default for SessionSettings {
    fn default() -> Self {
        SessionSettings {
            intra_threads: 0,
            inter_threads: 0,
            opt_level: OptLevel::All,
            execution_provider: ExecutionProviderChoice::Cpu,
        }
    }
}

/// Why a session could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SessionError(pub String);

impl<R> From<ort::Error<R>> for SessionError {
    fn from(e: ort::Error<R>) -> SessionError {
        SessionError(e.to_string())
    }
}

/// A builder with the CPU-only options: ort 2.0.0-rc.15 asks ONNX
/// Runtime to pick devices itself ("max efficiency": an NPU where one is
/// registered); the sidecar uses what it is told, so the policy is
/// "prefer CPU", which never adds an execution provider.
fn base_builder(
    runtime: &OrtRuntime,
    settings: &SessionSettings,
) -> Result<SessionBuilder, SessionError> {
    let mut builder = Session::builder(&runtime.environment)?
        .with_auto_device(AutoDevicePolicy::PreferCPU)?
        .with_optimization_level(settings.opt_level.to_ort())?
        .with_log_level(ort::logging::LogLevel::Warning)?;
    if settings.intra_threads > 0 {
        builder = builder.with_intra_threads(settings.intra_threads)?;
    }
    if settings.inter_threads > 0 {
        builder = builder
            .with_parallel_execution(true)?
            .with_inter_threads(settings.inter_threads)?;
    }
    Ok(builder)
}

/// A session for the model `bytes` with `settings`. With CUDA asked for
/// and available, the session runs on CUDA; if CUDA cannot be registered
/// or the session cannot be built on it, it is built on CPU, with a
/// warning.
pub fn build_session(
    runtime: &OrtRuntime,
    settings: &SessionSettings,
    bytes: &[u8],
) -> Result<Session, SessionError> {
    if settings.execution_provider == ExecutionProviderChoice::Cuda && runtime.cuda_available {
        let cuda = ort::ep::CUDA::default().build().error_on_failure();
        match base_builder(runtime, settings)?.with_execution_providers([cuda]) {
            Ok(mut builder) => match builder.commit_from_memory(bytes) {
                Ok(session) => return Ok(session),
                Err(e) => {
                    tracing::warn!(error = %e, "building the session on CUDA failed; building it on CPU")
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "the CUDA execution provider cannot be registered; using CPU")
            }
        }
    }
    Ok(base_builder(runtime, settings)?.commit_from_memory(bytes)?)
}
