//! What can go wrong reading a model file: each error says what and where
//! (a byte offset), and every budget overrun is its own variant.

use std::time::Duration;

use crate::report::Format;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("not a model format this inspector reads ({0})")]
    UnknownFormat(String),
    #[error("truncated at byte {offset}: {what}")]
    Truncated { offset: u64, what: String },
    #[error("malformed at byte {offset}: {what}")]
    Malformed { offset: u64, what: String },
    #[error("over budget: more than {max} bytes to read")]
    OverBytes { max: u64 },
    #[error("over budget: took longer than {0:?}")]
    OutOfTime(Duration),
    #[error("over budget: {what} ({count}, more than the {max} allowed)")]
    TooMany { what: String, count: u64, max: u64 },
    #[error("over budget: {what} nested deeper than {max}")]
    TooDeep { what: String, max: usize },
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

impl InspectError {
    pub fn malformed(offset: u64, what: impl Into<String>) -> Self {
        InspectError::Malformed {
            offset,
            what: what.into(),
        }
    }

    /// Whether the error is a budget running out (the file may be fine).
    pub fn is_budget(&self) -> bool {
        matches!(
            self,
            InspectError::OverBytes { .. }
                | InspectError::OutOfTime(_)
                | InspectError::TooMany { .. }
                | InspectError::TooDeep { .. }
        )
    }
}

/// An inspection that failed, with the format it was read as.
#[derive(Debug, thiserror::Error)]
#[error("{}: {error}", format.map(Format::as_str).unwrap_or("model file"))]
pub struct Failed {
    pub format: Option<Format>,
    #[source]
    pub error: InspectError,
}
