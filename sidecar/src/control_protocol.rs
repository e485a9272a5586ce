//! The control protocol between the agent and its sidecar: one JSON object
//! per SOCK_SEQPACKET message, at most 64 KiB; unknown fields and unknown
//! ops are refused. A `load` carries the model as one file descriptor
//! (SCM_RIGHTS).
//!
//! Requests and their replies:
//! - `{"op":"load","name":"m","version":2,"sha256":"<64 hex>","size":1234}`
//!   with the model's fd → `{"op":"loaded","name":"m","version":2,"load_ms":12}`
//!   or `{"op":"refused","name":"m","version":2,"reason":"…"}`
//! - `{"op":"unload","name":"m"}` → `{"op":"unloaded","name":"m"}`
//! - `{"op":"status"}` →
//!   `{"op":"status","models":[{"name":"m","version":2,"sha256":"…"}]}`
//! - anything else → `{"op":"error","reason":"…"}`

use serde::{Deserialize, Serialize};

use crate::bounded_text::cut;

/// Largest control message, either way.
pub const MAX_CONTROL_MESSAGE: usize = 64 * 1024;

/// Longest reason in a reply.
const MAX_REASON: usize = 4096;

/// A request from the agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Serve the model the attached fd holds as `name` version `version`,
    /// if its `size` bytes hash to `sha256`.
    Load {
        name: String,
        version: u64,
        sha256: String,
        size: u64,
    },
    /// Stop serving `name`.
    Unload { name: String },
    /// What is served. (A struct variant: serde applies
    /// `deny_unknown_fields` to those only, so `{"op":"status","x":1}` is
    /// refused too.)
    Status {},
}

/// A served model in a `status` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelStatus {
    pub name: String,
    pub version: u64,
    pub sha256: String,
}

/// A reply to the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlReply {
    Loaded {
        name: String,
        version: u64,
        load_ms: u64,
    },
    Refused {
        name: String,
        version: u64,
        reason: String,
    },
    Unloaded {
        name: String,
    },
    Status {
        models: Vec<ModelStatus>,
    },
    Error {
        reason: String,
    },
}

impl ControlReply {
    /// A refusal, its reason bounded.
    pub fn refused(name: &str, version: u64, reason: impl AsRef<str>) -> ControlReply {
        ControlReply::Refused {
            name: cut(name, 256),
            version,
            reason: cut(reason.as_ref(), MAX_REASON),
        }
    }

    /// An error, its reason bounded.
    pub fn error(reason: impl AsRef<str>) -> ControlReply {
        ControlReply::Error {
            reason: cut(reason.as_ref(), MAX_REASON),
        }
    }

    /// The reply as one message.
    pub fn to_message(&self) -> Vec<u8> {
        // Serialising these types cannot fail (string keys, no maps of
        // other keys); the fallback keeps even that from a panic.
        serde_json::to_vec(self)
            .unwrap_or_else(|_| br#"{"op":"error","reason":"reply not serialisable"}"#.to_vec())
    }
}

/// The request one message holds, or the reason it holds none.
pub fn parse_request(message: &[u8]) -> Result<ControlRequest, String> {
    if message.len() > MAX_CONTROL_MESSAGE {
        return Err(format!(
            "a control message is at most {MAX_CONTROL_MESSAGE} bytes; this one is {}",
            message.len()
        ));
    }
    serde_json::from_slice(message).map_err(|e| format!("not a control request: {e}"))
}

#[cfg(test)]
#[path = "control_protocol_tests.rs"]
mod tests;
