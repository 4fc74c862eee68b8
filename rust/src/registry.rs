//! The models a server serves, by name, and the repository hooks behind the
//! load and unload calls.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::error::CoreError;
use crate::served::ServedModel;

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: String,
    pub reason: String,
}

/// What the repository calls do; implemented where models are loaded.
pub trait RepositoryHooks: Send + Sync {
    /// Every model in the repository, loaded or not.
    fn index(&self) -> Result<Vec<IndexEntry>, CoreError>;
    /// Loads (or reloads) `name` and registers it.
    fn load(&self, name: &str) -> Result<(), CoreError>;
    /// Unregisters `name`.
    fn unload(&self, name: &str) -> Result<(), CoreError>;
}

/// The served models; cheap to read on every request.
#[derive(Debug, Default)]
pub struct Registry {
    models: RwLock<HashMap<String, Arc<ServedModel>>>,
}

impl Registry {
    /// The model `name`; `version` must be empty or the served version.
    pub fn get(&self, name: &str, version: &str) -> Result<Arc<ServedModel>, CoreError> {
        self.models
            .read()
            .get(name)
            .filter(|m| version.is_empty() || m.spec.version == version)
            .cloned()
            .ok_or_else(|| CoreError::ModelNotFound {
                name: name.into(),
                version: version.into(),
            })
    }

    /// Serves `model`, returning the model it replaces (to be shut down by the caller).
    pub fn insert(&self, model: ServedModel) -> Option<Arc<ServedModel>> {
        let name = model.spec.name.clone();
        self.models.write().insert(name, Arc::new(model))
    }

    /// Stops routing to `name`, returning it (to be shut down by the caller).
    pub fn remove(&self, name: &str) -> Option<Arc<ServedModel>> {
        self.models.write().remove(name)
    }

    /// Names of the served models, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.models.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Every served model, sorted by name.
    pub fn all(&self) -> Vec<Arc<ServedModel>> {
        let mut models: Vec<_> = self.models.read().values().cloned().collect();
        models.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        models
    }
}
