//! Loads models into the served set: the one path both a `--model` given
//! at start and a `load` from the agent take (bytes in memory → hash →
//! session → swapped in), logging each outcome.

use std::sync::Arc;

use crate::model_identity::ModelIdentity;
use crate::ort_runtime::OrtRuntime;
use crate::served_model::{LoadError, ServedModel};
use crate::served_models::{ServedModels, TooManyModels};
use crate::session_settings::{ExecutionProviderChoice, SessionSettings};

/// Why a model is not served; the version served before keeps serving.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadRefusal {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    TooMany(#[from] TooManyModels),
}

/// Builds sessions with the sidecar's settings and serves them.
#[derive(Debug)]
pub struct ModelLoader {
    runtime: OrtRuntime,
    settings: SessionSettings,
    models: Arc<ServedModels>,
}

impl ModelLoader {
    pub fn new(
        runtime: OrtRuntime,
        settings: SessionSettings,
        models: Arc<ServedModels>,
    ) -> ModelLoader {
        if settings.execution_provider == ExecutionProviderChoice::Cuda && !runtime.cuda_available {
            tracing::warn!(
                library = %runtime.library.display(),
                "--execution-provider cuda: this ONNX Runtime has no CUDA execution provider; models run on CPU"
            );
        }
        ModelLoader {
            runtime,
            settings,
            models,
        }
    }

    pub fn models(&self) -> &Arc<ServedModels> {
        &self.models
    }

    /// Serves `bytes` as `identity` if they hash to its digest and ONNX
    /// Runtime builds a session from them; returns the load time in ms.
    pub fn load(&self, identity: ModelIdentity, bytes: &[u8]) -> Result<u64, LoadRefusal> {
        let described = identity.to_string();
        let sha256 = identity.sha256;
        if !self.models.has_room_for(&identity.name) {
            tracing::warn!(model = %described, "refused: {TooManyModels}");
            return Err(TooManyModels.into());
        }
        let model = match ServedModel::load(&self.runtime, &self.settings, identity, bytes) {
            Ok(model) => model,
            Err(e) => {
                tracing::warn!(model = %described, %sha256, "refused: {e}");
                return Err(e.into());
            }
        };
        let load_ms = model.load_ms;
        let replaced = self.models.serve(model)?;
        match replaced {
            Some(old) => tracing::info!(
                model = %described, %sha256, load_ms, replaced_version = old.identity.version,
                "serving"
            ),
            None => tracing::info!(model = %described, %sha256, load_ms, "serving"),
        }
        Ok(load_ms)
    }
}
