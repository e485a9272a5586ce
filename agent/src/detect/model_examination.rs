//! What a model file is: its header read by `vigil-modelinspect` (never its
//! weights) and its bytes hashed, off the event loop, once per file
//! version, within a time and byte budget.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom};

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
    let (mut identity, mut errors) = inspected(file, name, inspect);
    match file
        .seek(SeekFrom::Start(0))
        .map_err(Into::into)
        .and_then(|_| sha256_within(file, size, hash))
    {
        Ok(d) => identity.sha256 = d,
        Err(why) => errors.push(why.to_string()),
    }
    identity.error = cut(&errors.join("; "), MAX_REASON);
    identity
}

/// The header only, not the digest: for the model files processes held
/// open before the agent started (hashing every one a busy host holds
/// would hold up the start; the next open of each is hashed).
pub fn examine_header(file: &mut std::fs::File, name: &str, inspect: Budget) -> ModelIdentity {
    let (mut identity, mut errors) = inspected(file, name, inspect);
    errors.push("not hashed: open before the agent started".into());
    identity.error = cut(&errors.join("; "), MAX_REASON);
    identity
}

fn inspected(
    file: &mut std::fs::File,
    name: &str,
    inspect: Budget,
) -> (ModelIdentity, Vec<String>) {
    match inspect_file(file, name, inspect) {
        Ok(report) => (identity_of(&report), Vec::new()),
        Err(e) => (
            ModelIdentity::default(),
            vec![format!("not inspected: {e}")],
        ),
    }
}

/// The longest a name, label or version taken from a file is kept.
const MAX_TEXT: usize = 256;
/// The longest one reason, import or error is kept.
const MAX_REASON: usize = 1024;
/// The most reasons and dangerous imports kept (the last one saying how
/// many more there were).
const MAX_LIST: usize = 16;

/// `s` cut to at most `max` bytes (at a character boundary), marked "…".
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// At most `MAX_LIST` items, each cut to `max`, and how many more.
fn cut_list<'a>(items: impl Iterator<Item = &'a String>, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut more = 0usize;
    for item in items {
        if out.len() < MAX_LIST {
            out.push(cut(item, max));
        } else {
            more += 1;
        }
    }
    if more > 0 {
        out.push(format!("{more} more"));
    }
    out
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
    // Unbuffered: the inspector reads ahead by itself, a little at a
    // time, so a header spread over a big file (TFLite's tables between
    // inline weights) is not read 64 KiB per hop.
    vigil_modelinspect::inspect(&*file, budget, Some(name))
}

/// The domain's view of an inspection report. What the file supplies is
/// cut to size: the identity rides on every finding, in the cache and to
/// the control plane, and a safetensors `__metadata__` name can be tens of
/// megabytes.
pub fn identity_of(r: &ModelReport) -> ModelIdentity {
    let mut dangerous: Vec<String> = r
        .pickle
        .iter()
        .flat_map(|p| p.imports.iter())
        .filter(|i| i.class == ImportClass::Dangerous)
        .map(|i| format!("{}.{}", i.module, i.name))
        .fold(Vec::new(), |mut v, i| {
            if !v.contains(&i) && v.len() <= MAX_LIST {
                v.push(i);
            }
            v
        });
    // A pickle not scanned to its end imports what cannot be named.
    if r.pickle.as_ref().is_some_and(|p| p.unscanned.is_some()) {
        dangerous.insert(0, "?.? (pickle not scanned to its end)".into());
    }
    ModelIdentity {
        format: r.format.as_str().into(),
        format_version: cut(&r.format_version, MAX_TEXT),
        architecture: cut(&r.architecture, MAX_TEXT),
        name: cut(&r.name, MAX_TEXT),
        size_label: cut(&r.size_label, MAX_TEXT),
        quantization: cut(&r.quantization, MAX_TEXT),
        parameters: r.parameters,
        tensor_count: r.tensor_count,
        sha256: String::new(),
        structure_fingerprint: r.structure_fingerprint.clone(),
        risk: match r.risk {
            Risk::Safe => ModelRisk::Safe,
            Risk::Suspicious => ModelRisk::Suspicious,
            Risk::Dangerous => ModelRisk::Dangerous,
        },
        risk_reasons: cut_list(r.risk_reasons.iter(), MAX_REASON),
        dangerous_imports: cut_list(dangerous.iter(), MAX_REASON),
        error: String::new(),
    }
}

/// How long after its last change a file version's examination is not
/// kept: a rewrite within the timestamps' granularity (a clock tick, up
/// to a second or two on some file systems) keeps the key, so the bytes
/// examined may not be the ones the key names. Such a file is examined
/// again at its next open.
pub const UNSETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// Identities by file version; cleared when full (a version is examined
/// again at worst). A version changed within `UNSETTLED` of its
/// examination is not kept.
#[derive(Debug)]
pub struct ModelCache {
    by_file: HashMap<FileKey, ModelIdentity>,
    capacity: usize,
    unsettled: std::time::Duration,
}

impl ModelCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            by_file: HashMap::new(),
            capacity,
            unsettled: UNSETTLED,
        }
    }

    /// Keeps examinations of files however recently changed (tests).
    #[cfg(test)]
    pub fn keep_unsettled(&mut self) {
        self.unsettled = std::time::Duration::ZERO;
    }

    pub fn get(&self, key: &FileKey) -> Option<&ModelIdentity> {
        self.by_file.get(key)
    }

    /// Keeps `identity` for `key`, examined no earlier than `read_from`
    /// (the open's time serves): not when the version changed less than
    /// `UNSETTLED` before that, as then bytes written in the same tick as
    /// the read may be what the key names.
    pub fn insert(
        &mut self,
        key: FileKey,
        identity: ModelIdentity,
        read_from: std::time::SystemTime,
    ) {
        if key.changed_within(self.unsettled, read_from) {
            return;
        }
        if self.by_file.len() >= self.capacity {
            self.by_file.clear();
        }
        self.by_file.insert(key, identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_modelinspect::{Format, PickleImport, PickleScan};

    #[test]
    fn an_examination_of_a_file_changed_just_before_is_not_kept() {
        // Bytes rewritten within a timestamp tick of the examination keep
        // the key: a benign examination must not stand for what follows.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.pt");
        std::fs::write(&path, b"x").unwrap();
        let key = crate::detect::file_digest::file_key(&std::fs::metadata(&path).unwrap());
        let now = std::time::SystemTime::now();
        let mut cache = ModelCache::new(8);
        // Even when the examination ends long after (a long hash): what
        // counts is when the bytes were read.
        cache.insert(key, ModelIdentity::default(), now);
        assert!(cache.get(&key).is_none(), "an unsettled version was kept");
        // A version last changed well before the read is kept.
        cache.insert(key, ModelIdentity::default(), now + UNSETTLED * 2);
        assert!(cache.get(&key).is_some());
        let mut cache = ModelCache::new(8);
        cache.keep_unsettled();
        cache.insert(key, ModelIdentity::default(), now);
        assert!(cache.get(&key).is_some());
    }

    #[test]
    fn what_the_file_supplies_is_cut_to_size() {
        let mut r = ModelReport::new(Format::Pickle);
        r.name = "é".repeat(10 << 20);
        r.architecture = "a".repeat(1000);
        r.risk = Risk::Dangerous;
        r.risk_reasons = (0..10_000)
            .map(|i| format!("{i} {}", "x".repeat(5000)))
            .collect();
        r.pickle = Some(PickleScan {
            imports: (0..10_000)
                .map(|i| PickleImport {
                    module: "os".into(),
                    name: format!("f{i}{}", "y".repeat(5000)),
                    class: ImportClass::Dangerous,
                    at: "pickle".into(),
                    called: true,
                })
                .collect(),
            ..PickleScan::default()
        });
        let id = identity_of(&r);
        assert!(id.name.len() <= MAX_TEXT + 3 && id.name.ends_with('…'));
        assert!(id.architecture.len() <= MAX_TEXT + 3);
        assert_eq!(id.risk_reasons.len(), MAX_LIST + 1);
        assert_eq!(id.risk_reasons.last().unwrap(), "9984 more");
        assert!(id.risk_reasons.iter().all(|r| r.len() <= MAX_REASON + 3));
        assert!(id.dangerous_imports.len() <= MAX_LIST + 1);
        assert!(id.dangerous_imports[0].starts_with("os.f0"));
        assert_eq!(id.risk, ModelRisk::Dangerous);
    }

    #[test]
    fn a_pickle_not_scanned_to_its_end_names_a_hidden_import() {
        let mut b = b"\x80\x02".to_vec();
        b.extend(std::iter::repeat_n(b'(', 300));
        b.extend_from_slice(b"cos\nsystem\n(S'id'\ntR.");
        let r = vigil_modelinspect::inspect(std::io::Cursor::new(b), Budget::default(), None)
            .expect("inspects");
        let id = identity_of(&r);
        assert_eq!(id.risk, ModelRisk::Dangerous);
        assert_eq!(
            id.dangerous_imports,
            ["?.? (pickle not scanned to its end)"]
        );
    }
}
