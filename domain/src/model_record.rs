//! Approved inference models: the record an admin registers and signs for
//! one version of a model, its state, and which versions a host serves
//! (the active one and those it falls back to).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The one model format the inference sidecar serves.
pub const MODEL_FORMAT_ONNX: &str = "onnx";

/// The most hosts one record may name.
pub const MAX_MODEL_HOSTS: usize = 256;

/// The longest agent id a record may name.
pub const MAX_MODEL_HOST_LEN: usize = 253;

/// The longest `listen` a record may carry.
pub const MAX_MODEL_LISTEN_LEN: usize = 512;

/// Where a model version stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Uploaded and signed, not yet served anywhere.
    #[default]
    Registered,
    /// May be served (and fallen back to).
    Approved,
    /// Never served again.
    Revoked,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Registered => "registered",
            ModelState::Approved => "approved",
            ModelState::Revoked => "revoked",
        }
    }
}

impl std::fmt::Display for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One version of a model an admin registered. `name` to `listen` are
/// what the signer signed (`vigil_policy::model_canonical_bytes`); the
/// rest the control plane fills in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// `[a-z0-9][a-z0-9._-]{0,63}` ([`check_model_name`]).
    pub name: String,
    /// 1 and up; one record per (name, version).
    pub version: u64,
    /// Lowercase hex sha256 of the model file, and its size in bytes.
    pub sha256: String,
    pub size: u64,
    /// [`MODEL_FORMAT_ONNX`].
    pub format: String,
    /// Agent ids or hostnames it may be served on; empty: every host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Its sidecar's memory limit in bytes (0: the agent's default).
    #[serde(default)]
    pub memory_max_bytes: u64,
    /// Its sidecar's CPU limit in millicores (0: unlimited).
    #[serde(default)]
    pub cpu_millicores: u32,
    /// Where its sidecar listens ([`ModelListen`]); empty: the agent's
    /// default for the model.
    #[serde(default)]
    pub listen: String,
    /// Hex ed25519 public key of the signer, and the signature.
    pub signer: String,
    pub signature: String,
    pub state: ModelState,
    /// Who registered it (the caller's identity), and when.
    pub registered_by: String,
    pub registered_at_unix_nanos: i64,
    /// The last state change: who, and why.
    #[serde(default)]
    pub changed_by: String,
    #[serde(default)]
    pub reason: String,
}

/// A record that is not valid: the field and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ModelRecordError {
    pub field: &'static str,
    pub reason: String,
}

impl ModelRecordError {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// Whether `name` may name a model: `[a-z0-9][a-z0-9._-]{0,63}` (it becomes
/// part of file names and cgroup names on the hosts).
pub fn check_model_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let rest_ok = bytes
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > 64 || !first_ok || !rest_ok {
        return Err(format!(
            "{name:?} is not a model name: 1 to 64 of a-z 0-9 . _ - starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Whether `digest` is a sha256 as the model store names it: exactly 64
/// lowercase hex characters (no other spelling, so one digest has one
/// file name).
pub fn is_model_digest(digest: &str) -> bool {
    digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Where a model's sidecar listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelListen {
    /// `tcp:HOST:PORT` (an IPv6 host in brackets).
    Tcp { host: String, port: u16 },
    /// `unix:PATH` (an absolute path).
    Unix { path: String },
}

impl ModelListen {
    /// `tcp:HOST:PORT` or `unix:/PATH`; None for the empty string (the
    /// agent's default).
    pub fn parse(s: &str) -> Result<Option<ModelListen>, String> {
        if s.is_empty() {
            return Ok(None);
        }
        if s.len() > MAX_MODEL_LISTEN_LEN || s.chars().any(char::is_control) {
            return Err(format!(
                "{:?} is too long or holds control characters",
                crate::cut_text(s, 64)
            ));
        }
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') || path.contains('\0') || path.split('/').any(|c| c == "..") {
                return Err(format!(
                    "{s:?}: a unix socket path must be absolute, without .."
                ));
            }
            return Ok(Some(ModelListen::Unix { path: path.into() }));
        }
        if let Some(rest) = s.strip_prefix("tcp:") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: want tcp:HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{s:?}: {port:?} is not a port (1 to 65535)"))?;
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(format!("{s:?}: want tcp:HOST:PORT"));
            }
            return Ok(Some(ModelListen::Tcp {
                host: host.into(),
                port,
            }));
        }
        Err(format!("{s:?}: want tcp:HOST:PORT or unix:PATH"))
    }
}

impl ModelRecord {
    /// Checks the signed fields: each refusal names its field.
    pub fn check(&self) -> Result<(), ModelRecordError> {
        check_model_name(&self.name).map_err(|r| ModelRecordError::new("name", r))?;
        if self.version == 0 {
            return Err(ModelRecordError::new("version", "must be 1 or more"));
        }
        if !is_model_digest(&self.sha256) {
            return Err(ModelRecordError::new(
                "sha256",
                format!(
                    "{:?} is not a lowercase hex sha256 (64 of 0-9 a-f)",
                    crate::cut_text(&self.sha256, 80)
                ),
            ));
        }
        if self.size == 0 {
            return Err(ModelRecordError::new("size", "must be more than 0"));
        }
        if self.format != MODEL_FORMAT_ONNX {
            return Err(ModelRecordError::new(
                "format",
                format!(
                    "{:?} is not a served format (only {MODEL_FORMAT_ONNX:?})",
                    crate::cut_text(&self.format, 32)
                ),
            ));
        }
        if self.hosts.len() > MAX_MODEL_HOSTS {
            return Err(ModelRecordError::new(
                "hosts",
                format!("{} hosts, more than {MAX_MODEL_HOSTS}", self.hosts.len()),
            ));
        }
        for h in &self.hosts {
            if h.is_empty()
                || h.len() > MAX_MODEL_HOST_LEN
                || h.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(ModelRecordError::new(
                    "hosts",
                    format!("{:?} is not an agent id", crate::cut_text(h, 64)),
                ));
            }
        }
        ModelListen::parse(&self.listen).map_err(|r| ModelRecordError::new("listen", r))?;
        Ok(())
    }

    /// Whether the record may be served on the agent `agent_id`. A model
    /// is scoped by agent id alone, the identity its certificate proves:
    /// a hostname is what an agent says of itself, and an agent that
    /// named itself after another host would be given that host's model
    /// bytes.
    pub fn covers_agent(&self, agent_id: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == agent_id)
    }

    /// The signed fields are the same (an identical registration).
    pub fn same_signed_fields(&self, other: &ModelRecord) -> bool {
        let mut a = self.hosts.clone();
        let mut b = other.hosts.clone();
        a.sort();
        b.sort();
        self.name == other.name
            && self.version == other.version
            && self.sha256 == other.sha256
            && self.size == other.size
            && self.format == other.format
            && a == b
            && self.memory_max_bytes == other.memory_max_bytes
            && self.cpu_millicores == other.cpu_millicores
            && self.listen == other.listen
            && self.signer == other.signer
            && self.signature == other.signature
    }
}

/// One model name on a host: the version to serve, then the approved
/// versions to fall back to, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelDeployment {
    pub active: ModelRecord,
    pub fallbacks: Vec<ModelRecord>,
}

impl ModelDeployment {
    /// The active record and the fallbacks, in the order to try them.
    pub fn records(&self) -> impl Iterator<Item = &ModelRecord> {
        std::iter::once(&self.active).chain(self.fallbacks.iter())
    }
}

/// The version a name serves fleet-wide, and whether a rollback pinned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveModel {
    pub name: String,
    pub version: u64,
    pub pinned: bool,
}

/// Every model record and every rollback pin, and what they make each
/// host serve. Pure: built from what the control plane stores.
///
/// Per name: the active version is the rollback pin when one is set and
/// that version is still approved (versions above it are not served
/// while it holds), else the newest approved; the fallbacks are the other
/// approved versions below the active one, newest first. Revoked and
/// merely registered versions are never served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelCatalog {
    /// Name → version → record.
    by_name: BTreeMap<String, BTreeMap<u64, ModelRecord>>,
    /// Name → the version a rollback pinned.
    pins: BTreeMap<String, u64>,
}

impl ModelCatalog {
    pub fn new(
        records: impl IntoIterator<Item = ModelRecord>,
        pins: impl IntoIterator<Item = (String, u64)>,
    ) -> Self {
        let mut by_name: BTreeMap<String, BTreeMap<u64, ModelRecord>> = BTreeMap::new();
        for r in records {
            by_name
                .entry(r.name.clone())
                .or_default()
                .insert(r.version, r);
        }
        Self {
            by_name,
            pins: pins.into_iter().collect(),
        }
    }

    /// Keeps only the records `keep` accepts (a pin on a record dropped
    /// is no longer in force).
    pub fn retain(&mut self, mut keep: impl FnMut(&ModelRecord) -> bool) {
        for versions in self.by_name.values_mut() {
            versions.retain(|_, r| keep(r));
        }
        self.by_name.retain(|_, versions| !versions.is_empty());
    }

    /// Every record, by name then version.
    pub fn records(&self) -> impl Iterator<Item = &ModelRecord> {
        self.by_name.values().flat_map(|v| v.values())
    }

    /// One record.
    pub fn record(&self, name: &str, version: u64) -> Option<&ModelRecord> {
        self.by_name.get(name)?.get(&version)
    }

    /// The pin that holds for `name`: set, and its version approved.
    pub fn pin_in_force(&self, name: &str) -> Option<u64> {
        let pin = *self.pins.get(name)?;
        (self.record(name, pin)?.state == ModelState::Approved).then_some(pin)
    }

    /// The approved versions of `name` that may be served (all, or those
    /// at or below a pin in force), newest first, narrowed by `keep`.
    fn servable<'a>(
        &'a self,
        name: &str,
        keep: impl Fn(&ModelRecord) -> bool + 'a,
    ) -> impl Iterator<Item = &'a ModelRecord> + 'a {
        let ceiling = self.pin_in_force(name).unwrap_or(u64::MAX);
        self.by_name
            .get(name)
            .into_iter()
            .flat_map(move |versions| versions.range(..=ceiling).rev().map(|(_, r)| r))
            .filter(move |r| r.state == ModelState::Approved && keep(r))
    }

    /// The version each name serves fleet-wide (names with no approved
    /// version are absent).
    pub fn actives(&self) -> Vec<ActiveModel> {
        self.by_name
            .keys()
            .filter_map(|name| {
                let active = self.servable(name, |_| true).next()?;
                Some(ActiveModel {
                    name: name.clone(),
                    version: active.version,
                    pinned: self.pin_in_force(name) == Some(active.version),
                })
            })
            .collect()
    }

    /// What the agent `agent_id` serves: per name, the newest servable
    /// version whose host scope covers it, and the older ones that also
    /// do.
    pub fn deployments_for(&self, agent_id: &str) -> Vec<ModelDeployment> {
        self.by_name
            .keys()
            .filter_map(|name| {
                let mut versions = self.servable(name, |r| r.covers_agent(agent_id));
                let active = versions.next()?.clone();
                Some(ModelDeployment {
                    active,
                    fallbacks: versions.cloned().collect(),
                })
            })
            .collect()
    }

    /// Whether the host may fetch the model file `sha256`: some record of
    /// its deployments (active or fallback) names it.
    pub fn host_may_fetch(&self, agent_id: &str, sha256: &str) -> bool {
        self.deployments_for(agent_id)
            .iter()
            .any(|d| d.records().any(|r| r.sha256 == sha256))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, version: u64, state: ModelState) -> ModelRecord {
        ModelRecord {
            name: name.into(),
            version,
            sha256: format!("{version:064x}"),
            size: 10,
            format: MODEL_FORMAT_ONNX.into(),
            state,
            ..Default::default()
        }
    }

    fn versions(d: &ModelDeployment) -> (u64, Vec<u64>) {
        (
            d.active.version,
            d.fallbacks.iter().map(|r| r.version).collect(),
        )
    }

    #[test]
    fn the_newest_approved_version_is_active_and_the_older_ones_fall_back_newest_first() {
        use ModelState::*;
        let catalog = ModelCatalog::new(
            [
                record("m", 1, Approved),
                record("m", 2, Revoked),
                record("m", 3, Approved),
                record("m", 4, Approved),
                record("m", 5, Registered),
                record("other", 1, Registered),
            ],
            [],
        );
        let d = catalog.deployments_for("a1");
        assert_eq!(d.len(), 1, "a name with nothing approved serves nothing");
        assert_eq!(versions(&d[0]), (4, vec![3, 1]));
        assert_eq!(
            catalog.actives(),
            vec![ActiveModel {
                name: "m".into(),
                version: 4,
                pinned: false
            }]
        );
        assert!(catalog.host_may_fetch("a1", &format!("{:064x}", 1)));
        assert!(!catalog.host_may_fetch("a1", &format!("{:064x}", 2)));
        assert!(!catalog.host_may_fetch("a1", &format!("{:064x}", 5)));
    }

    #[test]
    fn a_pin_holds_while_its_version_is_approved_and_hides_the_newer_ones() {
        use ModelState::*;
        let records = [
            record("m", 1, Approved),
            record("m", 2, Approved),
            record("m", 3, Approved),
        ];
        let pinned = ModelCatalog::new(records.clone(), [("m".to_string(), 2)]);
        assert_eq!(versions(&pinned.deployments_for("a")[0]), (2, vec![1]));
        assert_eq!(
            pinned.actives()[0],
            ActiveModel {
                name: "m".into(),
                version: 2,
                pinned: true
            }
        );
        // Version 3 is above the pin: not fetchable while it holds.
        assert!(!pinned.host_may_fetch("a", &format!("{:064x}", 3)));
        // A pin on a version no longer approved is not in force.
        let mut revoked = records.clone();
        revoked[1].state = Revoked;
        let unpinned = ModelCatalog::new(revoked, [("m".to_string(), 2)]);
        assert_eq!(unpinned.pin_in_force("m"), None);
        assert_eq!(versions(&unpinned.deployments_for("a")[0]), (3, vec![1]));
        assert!(!unpinned.actives()[0].pinned);
        // A pin on a version that does not exist is not in force either.
        let ghost = ModelCatalog::new(records, [("m".to_string(), 9)]);
        assert_eq!(versions(&ghost.deployments_for("a")[0]), (3, vec![2, 1]));
    }

    #[test]
    fn host_scopes_narrow_per_agent_id_alone() {
        use ModelState::*;
        let mut v1 = record("m", 1, Approved);
        let mut v2 = record("m", 2, Approved);
        v1.hosts = vec![];
        v2.hosts = vec!["agent-a".into(), "agent-b".into()];
        let catalog = ModelCatalog::new([v1, v2], []);
        assert_eq!(
            versions(&catalog.deployments_for("agent-a")[0]),
            (2, vec![1])
        );
        assert_eq!(
            versions(&catalog.deployments_for("agent-b")[0]),
            (2, vec![1])
        );
        // Another agent serves what covers it: version 1 alone.
        assert_eq!(
            versions(&catalog.deployments_for("agent-c")[0]),
            (1, vec![])
        );
        assert!(!catalog.host_may_fetch("agent-c", &format!("{:064x}", 2)));
        // A version scoped to one agent only, nothing for the others; an
        // agent whose hostname is "agent-a" is not agent-a.
        let mut only = record("solo", 1, Approved);
        only.hosts = vec!["agent-a".into()];
        assert!(only.covers_agent("agent-a"));
        assert!(!only.covers_agent("h"));
        let catalog = ModelCatalog::new([only], []);
        assert!(catalog.deployments_for("agent-c").is_empty());
        assert_eq!(catalog.deployments_for("agent-a").len(), 1);
    }

    #[test]
    fn names_digests_and_listen_addresses_are_checked_by_field() {
        for good in ["m", "resnet-50", "a.b_c-9", &"x".repeat(64)] {
            assert!(check_model_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-m",
            ".m",
            "_m",
            "M",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(65),
            "../x",
        ] {
            assert!(check_model_name(bad).is_err(), "{bad:?}");
        }
        assert!(is_model_digest(&"ab".repeat(32)));
        for bad in [
            "AB".repeat(32),
            "ab".repeat(31),
            "../".repeat(22),
            "g".repeat(64),
        ] {
            assert!(!is_model_digest(&bad), "{bad}");
        }
        let mut r = record("m", 1, ModelState::Registered);
        assert_eq!(r.check(), Ok(()));
        r.listen = "tcp:127.0.0.1:8001".into();
        assert_eq!(r.check(), Ok(()));
        assert_eq!(
            ModelListen::parse("tcp:[::1]:9").unwrap(),
            Some(ModelListen::Tcp {
                host: "[::1]".into(),
                port: 9
            })
        );
        assert_eq!(
            ModelListen::parse("unix:/run/vigil/m.sock").unwrap(),
            Some(ModelListen::Unix {
                path: "/run/vigil/m.sock".into()
            })
        );
        let field = |f: &dyn Fn(&mut ModelRecord)| {
            let mut r = record("m", 1, ModelState::Registered);
            f(&mut r);
            r.check().unwrap_err().field
        };
        assert_eq!(field(&|r| r.name = "Bad".into()), "name");
        assert_eq!(field(&|r| r.version = 0), "version");
        assert_eq!(field(&|r| r.sha256 = "AB".repeat(32)), "sha256");
        assert_eq!(field(&|r| r.size = 0), "size");
        assert_eq!(field(&|r| r.format = "gguf".into()), "format");
        assert_eq!(field(&|r| r.hosts = vec![String::new()]), "hosts");
        assert_eq!(field(&|r| r.hosts = vec!["a\nb".into()]), "hosts");
        assert_eq!(
            field(&|r| r.hosts = vec!["h".into(); MAX_MODEL_HOSTS + 1]),
            "hosts"
        );
        for bad in [
            "tcp:h",
            "tcp::80",
            "tcp:h:0",
            "tcp:h:99999",
            "unix:rel",
            "unix:/a/../b",
            "http://x",
        ] {
            assert_eq!(field(&|r| r.listen = bad.into()), "listen", "{bad}");
        }
    }

    #[test]
    fn identical_registrations_compare_equal_whatever_the_host_order() {
        let mut a = record("m", 1, ModelState::Registered);
        a.hosts = vec!["b".into(), "a".into()];
        let mut b = a.clone();
        b.hosts = vec!["a".into(), "b".into()];
        b.state = ModelState::Approved;
        b.registered_by = "someone".into();
        assert!(a.same_signed_fields(&b));
        b.listen = "unix:/x".into();
        assert!(!a.same_signed_fields(&b));
    }
}
