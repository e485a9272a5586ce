//! The messages of the control protocol between the agent and a sidecar,
//! one JSON object per SEQPACKET message (`op` names it):
//!
//! ```text
//! agent → sidecar: {"op":"load","name","version","sha256","size"} + the model's memfd (SCM_RIGHTS)
//!                  {"op":"unload","name"}
//!                  {"op":"status"}
//! sidecar → agent: {"op":"loaded","name","version","sha256","load_ms"}
//!                  {"op":"refused","name","version","sha256","reason"}
//!                  {"op":"status","models":[{"name","version","sha256"}]}
//!                  {"op":"error","reason"}
//! ```
//!
//! The agent closing its end (EOF) makes the sidecar exit.

use serde::{Deserialize, Serialize};

/// What the agent asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Load the model whose bytes come with the message (a sealed memfd):
    /// the sidecar hashes them again and refuses them unless they are
    /// `size` bytes hashing to `sha256`.
    Load {
        name: String,
        version: u64,
        sha256: String,
        size: u64,
    },
    Unload {
        name: String,
    },
    Status,
}

/// A model a sidecar has loaded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LoadedModel {
    pub name: String,
    pub version: u64,
    pub sha256: String,
}

/// What a sidecar answers. Fields it leaves out are empty; unknown fields
/// are ignored (the sidecar may say more).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Reply {
    Loaded {
        name: String,
        #[serde(default)]
        version: u64,
        #[serde(default)]
        sha256: String,
        #[serde(default)]
        load_ms: f64,
    },
    Refused {
        #[serde(default)]
        name: String,
        #[serde(default)]
        version: u64,
        #[serde(default)]
        sha256: String,
        reason: String,
    },
    Status {
        #[serde(default)]
        models: Vec<LoadedModel>,
    },
    /// An answer to an unload (or any other acknowledgement the sidecar
    /// sends): logged, otherwise not waited for.
    Unloaded {
        #[serde(default)]
        name: String,
    },
    Error {
        reason: String,
    },
}

/// Longest text from a sidecar kept (a reason it gives).
pub const MAX_REASON: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_the_json_the_sidecar_reads() {
        let load = Request::Load {
            name: "m".into(),
            version: 2,
            sha256: "ab".repeat(32),
            size: 10,
        };
        assert_eq!(
            serde_json::to_string(&load).unwrap(),
            format!(
                r#"{{"op":"load","name":"m","version":2,"sha256":"{}","size":10}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(
            serde_json::to_string(&Request::Unload { name: "m".into() }).unwrap(),
            r#"{"op":"unload","name":"m"}"#
        );
        assert_eq!(
            serde_json::to_string(&Request::Status).unwrap(),
            r#"{"op":"status"}"#
        );
    }

    #[test]
    fn replies_parse_with_missing_and_unknown_fields() {
        let r: Reply = serde_json::from_str(
            r#"{"op":"loaded","name":"m","version":2,"sha256":"x","load_ms":12.5,"extra":1}"#,
        )
        .unwrap();
        assert!(matches!(r, Reply::Loaded { version: 2, load_ms, .. } if load_ms == 12.5));
        let r: Reply =
            serde_json::from_str(r#"{"op":"refused","name":"m","reason":"bad"}"#).unwrap();
        assert!(matches!(r, Reply::Refused { ref reason, version: 0, .. } if reason == "bad"));
        let r: Reply = serde_json::from_str(
            r#"{"op":"status","models":[{"name":"m","version":1,"sha256":"s"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Reply::Status {
                models: vec![LoadedModel {
                    name: "m".into(),
                    version: 1,
                    sha256: "s".into()
                }]
            }
        );
        let r: Reply = serde_json::from_str(r#"{"op":"error","reason":"no"}"#).unwrap();
        assert_eq!(
            r,
            Reply::Error {
                reason: "no".into()
            }
        );
        assert!(serde_json::from_str::<Reply>(r#"{"op":"launch"}"#).is_err());
        assert!(serde_json::from_str::<Reply>("not json").is_err());
    }
}
