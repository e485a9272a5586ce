//! What a served model is: a name, a version and the sha256 its bytes
//! must hash to; and `--model NAME:VERSION:SHA256:PATH`, where the bytes
//! of a standalone model come from.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::bounded_text::cut;

/// Longest model name.
pub const MAX_NAME_LEN: usize = 128;

/// A sha256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Sha256Digest {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// A digest written as 64 hex digits (either case).
    pub fn parse_hex(text: &str) -> Result<Sha256Digest, IdentityError> {
        let mut digest = [0u8; 32];
        if text.len() != 64 || hex::decode_to_slice(text, &mut digest).is_err() {
            return Err(IdentityError::BadDigest(cut(text, 80)));
        }
        Ok(Sha256Digest(digest))
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// A model as approved: name, version and the digest of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    pub name: String,
    pub version: u64,
    pub sha256: Sha256Digest,
}

impl ModelIdentity {
    /// An identity whose name is valid (see [`check_name`]).
    pub fn new(name: &str, version: u64, sha256: Sha256Digest) -> Result<Self, IdentityError> {
        check_name(name)?;
        Ok(ModelIdentity {
            name: name.to_string(),
            version,
            sha256,
        })
    }
}

impl fmt::Display for ModelIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model {:?} version {}", self.name, self.version)
    }
}

/// Why a name, digest or `--model` argument is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("model name {0:?} is not 1 to 128 characters of A-Z a-z 0-9 . _ - (and not . or ..)")]
    BadName(String),
    #[error("sha256 {0:?} is not 64 hex digits")]
    BadDigest(String),
    #[error("version {0:?} is not a whole number from 0 to 18446744073709551615")]
    BadVersion(String),
    #[error("{0:?} is not NAME:VERSION:SHA256:PATH")]
    BadModelArgument(String),
}

/// A model name is 1 to 128 of `[A-Za-z0-9._-]`, and not `.` or `..`: it
/// appears in logs, errors and, on a KServe HTTP front, in URL paths.
pub fn check_name(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadName(cut(name, 160)))
    }
}

/// `--model NAME:VERSION:SHA256:PATH`: a model served from the start,
/// read from `path` (which may itself hold colons).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    pub identity: ModelIdentity,
    pub path: PathBuf,
}

impl FromStr for ModelSource {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<ModelSource, IdentityError> {
        let mut parts = text.splitn(4, ':');
        let (Some(name), Some(version), Some(sha256), Some(path)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdentityError::BadModelArgument(cut(text, 200)));
        };
        if path.is_empty() {
            return Err(IdentityError::BadModelArgument(cut(text, 200)));
        }
        let version = version
            .parse::<u64>()
            .map_err(|_| IdentityError::BadVersion(cut(version, 40)))?;
        let identity = ModelIdentity::new(name, version, Sha256Digest::parse_hex(sha256)?)?;
        Ok(ModelSource {
            identity,
            path: PathBuf::from(path),
        })
    }
}

#[cfg(test)]
#[path = "model_identity_tests.rs"]
mod tests;
