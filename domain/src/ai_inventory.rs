//! The fleet's AI inventory: every AI runtime, model file and AI endpoint
//! the agents reported, approved or not, with where and when it was seen.
//!
//! Items are folded from findings as the control plane stores them
//! (`InventoryItem::record`), so every node derives the same inventory from
//! the same log. A model is known by its content (sha256) where the agent
//! hashed it, so one model copied to many hosts and paths is one item; a
//! runtime by its executable's digest; an endpoint by host name (or
//! address) and port.
//!
//! Architecture invariant: an item is bounded whatever the agents send
//! (at most `MAX_HOSTS` hosts and `MAX_PATHS` paths are named, sightings
//! past them counted; a key is at most `MAX_KEY_BYTES`, names and hosts
//! `MAX_NAME_BYTES`, the model identity as `ModelIdentity::bounded`; a
//! digest that is not 64 hex digits is no digest).
//!
//! Architecture invariant: the first identity reported for a model stays
//! (the name and fields people read); a later one replaces it only when it
//! says the file is more dangerous, so one agent cannot relabel a model
//! the fleet knows, only raise an alarm about it.

use serde::{Deserialize, Serialize};

use crate::{Finding, ModelIdentity, NetDirection, SignalKind, WorkloadApproval};

/// Hosts named per item; sightings past them are counted.
pub const MAX_HOSTS: usize = 256;
/// Paths named per item (a model copied to many places); more are counted.
pub const MAX_PATHS: usize = 8;
/// Longest path kept on an item (a longer one is cut at a character
/// boundary): one agent can name many long paths.
pub const MAX_PATH_BYTES: usize = 512;
/// Longest key kept (a longer path is cut at a character boundary).
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest name and host name kept.
pub const MAX_NAME_BYTES: usize = 512;
/// Farthest back an agent's own time may put a sighting before it reached
/// the cluster (findings spooled while offline arrive late); older times
/// are taken as the time it arrived, so no agent can make an item seem
/// to have been there for years.
pub const MAX_SIGHTING_AGE_NANOS: i64 = 30 * 24 * 3600 * 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InventoryKind {
    /// A process that ran AI: loaded a model, used a GPU, served or called
    /// a model API.
    Runtime,
    /// A model file.
    Model,
    /// An AI API a process called, or a model-serving port it opened.
    Endpoint,
}

impl InventoryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InventoryKind::Runtime => "runtime",
            InventoryKind::Model => "model",
            InventoryKind::Endpoint => "endpoint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "runtime" => Some(InventoryKind::Runtime),
            "model" => Some(InventoryKind::Model),
            "endpoint" => Some(InventoryKind::Endpoint),
            _ => None,
        }
    }
}

/// One thing a finding shows exists, before it is folded into an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub kind: InventoryKind,
    /// What identifies it across hosts: `sha256:<hex>` for content known
    /// by digest, `path:<path>` otherwise, `<host>:<port>` for an endpoint.
    pub key: String,
    pub name: String,
    pub path: Option<String>,
    pub model: Option<ModelIdentity>,
}

/// What the fleet has of one runtime, model or endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InventoryItem {
    pub kind: Option<InventoryKind>,
    pub key: String,
    /// A name for people: the model's description, the executable's path,
    /// the endpoint's `host:port`.
    pub name: String,
    /// The newest identity an agent reported, for a model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Box<ModelIdentity>>,
    /// Hosts it was seen on, in order of first sighting.
    pub hosts: Vec<String>,
    /// Sightings on hosts not named (past `MAX_HOSTS`): a host seen twice
    /// counts twice, so the fleet-wide host count is at least `hosts.len()`
    /// and at most that plus this.
    #[serde(default)]
    pub unnamed_host_sightings: u64,
    /// Paths it was seen at (models, runtimes), first ones first.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Sightings at paths not named (past `MAX_PATHS`).
    #[serde(default)]
    pub unnamed_path_sightings: u64,
    pub first_seen_unix_nanos: i64,
    pub last_seen_unix_nanos: i64,
    /// Findings that showed it.
    pub sightings: u64,
    /// Set when read, not stored: an approved workload names it (a model's
    /// digest, a runtime's executable digest).
    #[serde(default)]
    pub approved: bool,
}

impl InventoryItem {
    /// Folds one sighting on `host` at `at_unix_nanos` into the item.
    pub fn record(&mut self, s: &Sighting, host: &str, at_unix_nanos: i64) {
        if self.sightings == 0 {
            self.kind = Some(s.kind);
            self.key = s.key.clone();
            self.first_seen_unix_nanos = at_unix_nanos;
        }
        self.first_seen_unix_nanos = self.first_seen_unix_nanos.min(at_unix_nanos);
        self.last_seen_unix_nanos = self.last_seen_unix_nanos.max(at_unix_nanos);
        self.sightings += 1;
        if let Some(m) = &s.model {
            let more_dangerous = self.model.as_ref().is_some_and(|old| m.risk > old.risk);
            if self.model.is_none() || more_dangerous {
                self.model = Some(Box::new(m.bounded()));
                self.name = cut(&s.name, MAX_NAME_BYTES);
            }
        }
        if self.name.is_empty() {
            self.name = cut(&s.name, MAX_NAME_BYTES);
        }
        let host = cut(host, MAX_NAME_BYTES);
        if !host.is_empty() && !self.hosts.contains(&host) {
            if self.hosts.len() < MAX_HOSTS {
                self.hosts.push(host);
            } else {
                self.unnamed_host_sightings += 1;
            }
        }
        if let Some(p) = s.path.as_deref().filter(|p| !p.is_empty()) {
            let p = cut(p, MAX_PATH_BYTES);
            if !self.paths.contains(&p) {
                if self.paths.len() < MAX_PATHS {
                    self.paths.push(p);
                } else {
                    self.unnamed_path_sightings += 1;
                }
            }
        }
    }

    /// The model's sha256 or the runtime's executable digest, when known.
    pub fn sha256(&self) -> Option<&str> {
        self.key.strip_prefix("sha256:")
    }

    /// Whether an approved workload names it.
    pub fn approved_by(&self, workloads: &[WorkloadApproval]) -> bool {
        let Some(digest) = self.sha256() else {
            return false;
        };
        match self.kind {
            Some(InventoryKind::Model) => workloads
                .iter()
                .any(|w| w.models.iter().any(|m| m.eq_ignore_ascii_case(digest))),
            Some(InventoryKind::Runtime) => workloads
                .iter()
                .any(|w| w.exe_sha256.eq_ignore_ascii_case(digest)),
            _ => false,
        }
    }
}

/// What a finding shows exists: its process as a runtime, and its model
/// file or endpoint. Policy and sidecar findings (the agent's own actions)
/// and attestation alerts (the verifier's) show none.
pub fn sightings(f: &Finding) -> Vec<Sighting> {
    if matches!(
        f.signal,
        SignalKind::Policy | SignalKind::Attestation | SignalKind::Sidecar
    ) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(2);
    let p = &f.process;
    if !p.exe.is_empty() || !p.exe_sha256.is_empty() {
        out.push(Sighting {
            kind: InventoryKind::Runtime,
            key: digest_or_path(&p.exe_sha256, &p.exe),
            name: if p.exe.is_empty() {
                p.comm.clone()
            } else {
                p.exe.clone()
            },
            path: Some(p.exe.clone()),
            model: None,
        });
    }
    if let (Some(file), SignalKind::ModelFile | SignalKind::ModelRisk) = (&f.file, f.signal) {
        let model = file.model.as_deref();
        let digest = model.map_or("", |m| m.sha256.as_str());
        out.push(Sighting {
            kind: InventoryKind::Model,
            key: digest_or_path(digest, &file.path),
            name: match model {
                Some(m) => m.describe(),
                None => file
                    .path
                    .rsplit('/')
                    .next()
                    .unwrap_or(&file.path)
                    .to_string(),
            },
            path: Some(file.path.clone()),
            model: model.cloned(),
        });
    }
    if let Some(n) = &f.net {
        if matches!(f.signal, SignalKind::AiEgress | SignalKind::AiServing) {
            let who = match n.direction {
                NetDirection::Listen => "listen".to_string(),
                NetDirection::DnsQuery => n.host.clone(),
                NetDirection::Connect if !n.host.is_empty() => n.host.clone(),
                NetDirection::Connect => n.address.clone(),
            };
            let name = match n.direction {
                NetDirection::DnsQuery => n.host.clone(),
                _ => format!("{who}:{}", n.port),
            };
            out.push(Sighting {
                kind: InventoryKind::Endpoint,
                key: bounded(format!("{}:{}", n.direction.as_str(), name)),
                name,
                path: None,
                model: None,
            });
        }
    }
    out
}

/// Items for what approved workloads name and no finding showed yet
/// (`seen(kind, key)` says whether one did), so the inventory lists
/// approved models and runtimes too.
pub fn approved_but_unseen(
    workloads: &[WorkloadApproval],
    seen: impl Fn(InventoryKind, &str) -> bool,
) -> Vec<InventoryItem> {
    let mut out: Vec<InventoryItem> = Vec::new();
    let mut add = |kind: InventoryKind, digest: &str, name: String| {
        let key = format!("sha256:{}", digest.to_ascii_lowercase());
        if digest.is_empty()
            || seen(kind, &key)
            || out.iter().any(|i| i.kind == Some(kind) && i.key == key)
        {
            return;
        }
        out.push(InventoryItem {
            kind: Some(kind),
            key,
            name,
            approved: true,
            ..Default::default()
        });
    };
    for w in workloads {
        let exe = w
            .path
            .clone()
            .unwrap_or_else(|| format!("workload {}", w.id));
        add(InventoryKind::Runtime, &w.exe_sha256, exe);
        for m in &w.models {
            add(
                InventoryKind::Model,
                m,
                format!("model approved for workload {}", w.id),
            );
        }
    }
    out
}

/// `sha256:<hex>` for a real digest (64 hex digits), else the path: what
/// an agent sends as a digest is a key only when it could be one.
fn digest_or_path(sha256: &str, path: &str) -> String {
    if crate::is_sha256_hex(sha256) {
        format!("sha256:{}", sha256.to_ascii_lowercase())
    } else {
        bounded(format!("path:{path}"))
    }
}

fn bounded(key: String) -> String {
    cut(&key, MAX_KEY_BYTES)
}

/// `s`, cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> String {
    crate::cut_text(s, max)
}

#[cfg(test)]
#[path = "ai_inventory_tests.rs"]
mod tests;
