//! The models being served, one version per name. Serving a new version
//! swaps it in at once: a request already running keeps the `Arc` of the
//! version it started with and finishes on it; the next one gets the new
//! version.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use crate::infer_error::InferError;
use crate::model_identity::ModelIdentity;
use crate::served_model::ServedModel;

/// Most models served at once (a `status` reply lists them all in one
/// control message).
pub const MAX_MODELS: usize = 64;

#[derive(Debug, Default)]
pub struct ServedModels {
    models: RwLock<BTreeMap<String, Arc<ServedModel>>>,
}

/// Why a model cannot be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("already serving {MAX_MODELS} models; unload one first")]
pub struct TooManyModels;

impl ServedModels {
    pub fn new() -> ServedModels {
        ServedModels::default()
    }

    /// Makes `model` the served version of its name; returns the version
    /// it replaced, if any.
    pub fn serve(&self, model: ServedModel) -> Result<Option<Arc<ServedModel>>, TooManyModels> {
        let mut models = self.models.write().unwrap_or_else(PoisonError::into_inner);
        if !models.contains_key(&model.identity.name) && models.len() >= MAX_MODELS {
            return Err(TooManyModels);
        }
        Ok(models.insert(model.identity.name.clone(), Arc::new(model)))
    }

    /// Stops serving `name`; returns the version that was served.
    pub fn unload(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.models
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name)
    }

    /// The served version of `name`.
    pub fn get(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Whether `name` would replace a served model or fits under
    /// [`MAX_MODELS`] (checked before a load's work, again at `serve`).
    pub fn has_room_for(&self, name: &str) -> bool {
        let models = self.models.read().unwrap_or_else(PoisonError::into_inner);
        models.contains_key(name) || models.len() < MAX_MODELS
    }

    /// The model a KServe request names: `version` empty means the served
    /// one; any other version must be the served one.
    pub fn resolve(&self, name: &str, version: &str) -> Result<Arc<ServedModel>, InferError> {
        let unknown = || InferError::UnknownModel {
            name: crate::bounded_text::cut(name, 256),
        };
        let model = self.get(name).ok_or_else(unknown)?;
        if version.is_empty() || version.parse::<u64>().ok() == Some(model.identity.version) {
            Ok(model)
        } else {
            Err(InferError::UnknownVersion {
                name: model.identity.name.clone(),
                requested: crate::bounded_text::cut(version, 64),
                served: model.identity.version,
            })
        }
    }

    /// The identities of every served model, by name.
    pub fn identities(&self) -> Vec<ModelIdentity> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|m| m.identity.clone())
            .collect()
    }
}
