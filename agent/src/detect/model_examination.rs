//! What a model file is: its header read by `vigil-modelinspect` (never its
//! weights) and its bytes hashed, off the event loop, once per file
//! version, within a time and byte budget.

use std::collections::HashMap;
use std::io::{BufReader, Seek, SeekFrom};

use vigil_domain::{ModelIdentity, ModelRisk};
use vigil_modelinspect::{Budget, ImportClass, ModelReport, Risk};

use crate::detect::file_digest::{sha256_within, FileKey, HashBudget};

/// Examines the model file `file` (`size` bytes; `name` its file name,
/// for formats content alone cannot tell): the header, then the digest.
/// Always an identity: what could not be done is in its `error`.
pub fn examine(
    file: &mut std::fs::File,
    size: u64,
    name: &str,
    inspect: Budget,
    hash: HashBudget,
) -> ModelIdentity {
    let mut errors = Vec::new();
    let mut identity = match inspect_file(file, name, inspect) {
        Ok(report) => identity_of(&report),
        Err(e) => {
            errors.push(format!("not inspected: {e}"));
            ModelIdentity::default()
        }
    };
    match file
        .seek(SeekFrom::Start(0))
        .map_err(Into::into)
        .and_then(|_| sha256_within(file, size, hash))
    {
        Ok(d) => identity.sha256 = d,
        Err(why) => errors.push(why.to_string()),
    }
    identity.error = errors.join("; ");
    identity
}

fn inspect_file(
    file: &mut std::fs::File,
    name: &str,
    budget: Budget,
) -> Result<ModelReport, vigil_modelinspect::Failed> {
    file.seek(SeekFrom::Start(0))
        .map_err(|e| vigil_modelinspect::Failed {
            format: None,
            error: e.into(),
        })?;
    vigil_modelinspect::inspect(
        BufReader::with_capacity(1 << 16, &*file),
        budget,
        Some(name),
    )
}

/// The domain's view of an inspection report.
pub fn identity_of(r: &ModelReport) -> ModelIdentity {
    ModelIdentity {
        format: r.format.as_str().into(),
        format_version: r.format_version.clone(),
        architecture: r.architecture.clone(),
        name: r.name.clone(),
        size_label: r.size_label.clone(),
        quantization: r.quantization.clone(),
        parameters: r.parameters,
        tensor_count: r.tensor_count,
        sha256: String::new(),
        structure_fingerprint: r.structure_fingerprint.clone(),
        risk: match r.risk {
            Risk::Safe => ModelRisk::Safe,
            Risk::Suspicious => ModelRisk::Suspicious,
            Risk::Dangerous => ModelRisk::Dangerous,
        },
        risk_reasons: r.risk_reasons.clone(),
        dangerous_imports: r
            .pickle
            .iter()
            .flat_map(|p| p.imports.iter())
            .filter(|i| i.class == ImportClass::Dangerous)
            .map(|i| format!("{}.{}", i.module, i.name))
            .fold(Vec::new(), |mut v, i| {
                if !v.contains(&i) {
                    v.push(i);
                }
                v
            }),
        error: String::new(),
    }
}

/// Identities by file version; cleared when full (a version is examined
/// again at worst).
#[derive(Debug)]
pub struct ModelCache {
    by_file: HashMap<FileKey, ModelIdentity>,
    capacity: usize,
}

impl ModelCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_file: HashMap::new(),
            capacity,
        }
    }

    pub fn get(&self, key: &FileKey) -> Option<&ModelIdentity> {
        self.by_file.get(key)
    }

    pub fn insert(&mut self, key: FileKey, identity: ModelIdentity) {
        if self.by_file.len() >= self.capacity {
            self.by_file.clear();
        }
        self.by_file.insert(key, identity);
    }
}
