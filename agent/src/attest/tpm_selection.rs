//! Which TPM the agent uses: the `--tpm` flag's value.
//!
//! - `off`: none; attestation requests are answered "no TPM configured".
//! - `auto` (the default): the kernel's resource manager `/dev/tpmrm0`
//!   when it exists, else none.
//! - `device:PATH`: a TPM character device (`device:/dev/tpmrm0`).
//! - `swtpm:host=H,port=P`: a software TPM (swtpm) in socket mode, the
//!   TCTI configuration tpm2-tools takes in `TPM2TOOLS_TCTI`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The kernel's TPM resource manager, where `auto` looks.
pub const DEFAULT_TPM_DEVICE: &str = "/dev/tpmrm0";

/// The `--tpm` flag as given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TpmSelection {
    Off,
    #[default]
    Auto,
    Device(PathBuf),
    Swtpm {
        host: String,
        port: u16,
    },
}

/// A TPM to open: what a selection resolves to on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmTarget {
    Device(PathBuf),
    Swtpm { host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmSelectionError {
    #[error("--tpm {given:?}: expected off, auto, device:PATH or swtpm:host=H,port=P")]
    Unknown { given: String },
    #[error("--tpm {given:?}: device: needs an absolute path, e.g. device:/dev/tpmrm0")]
    DevicePath { given: String },
    #[error("--tpm {given:?}: {problem} (expected swtpm:host=H,port=P)")]
    Swtpm { given: String, problem: String },
}

impl TpmSelection {
    /// The TPM to open on this host, if any: `auto` is `/dev/tpmrm0` when
    /// it exists.
    pub fn resolve(&self) -> Option<TpmTarget> {
        self.resolve_with(|p| p.exists())
    }

    /// As [`TpmSelection::resolve`], asking `exists` whether a path exists.
    pub fn resolve_with(&self, exists: impl Fn(&Path) -> bool) -> Option<TpmTarget> {
        match self {
            TpmSelection::Off => None,
            TpmSelection::Auto => {
                let device = Path::new(DEFAULT_TPM_DEVICE);
                exists(device).then(|| TpmTarget::Device(device.to_path_buf()))
            }
            TpmSelection::Device(path) => Some(TpmTarget::Device(path.clone())),
            TpmSelection::Swtpm { host, port } => Some(TpmTarget::Swtpm {
                host: host.clone(),
                port: *port,
            }),
        }
    }
}

impl FromStr for TpmSelection {
    type Err = TpmSelectionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let given = s.trim();
        match given {
            "off" => return Ok(TpmSelection::Off),
            "auto" => return Ok(TpmSelection::Auto),
            _ => {}
        }
        if let Some(path) = given.strip_prefix("device:") {
            if !path.starts_with('/') || path.contains(',') {
                return Err(TpmSelectionError::DevicePath {
                    given: given.to_string(),
                });
            }
            return Ok(TpmSelection::Device(PathBuf::from(path)));
        }
        if let Some(options) = given.strip_prefix("swtpm:") {
            return parse_swtpm(given, options);
        }
        Err(TpmSelectionError::Unknown {
            given: given.to_string(),
        })
    }
}

fn parse_swtpm(given: &str, options: &str) -> Result<TpmSelection, TpmSelectionError> {
    let problem = |problem: String| TpmSelectionError::Swtpm {
        given: given.to_string(),
        problem,
    };
    let mut host = None;
    let mut port = None;
    for option in options.split(',') {
        let Some((key, value)) = option.split_once('=') else {
            return Err(problem(format!("{option:?} is not key=value")));
        };
        let value = value.trim();
        match key.trim() {
            "host" => {
                let valid = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
                if !valid {
                    return Err(problem(format!("host {value:?} is not a host name or IP")));
                }
                host = Some(value.to_string());
            }
            "port" => match value.parse::<u16>() {
                Ok(p) if p > 0 && p < u16::MAX => port = Some(p),
                // The control channel is at port + 1.
                _ => return Err(problem(format!("port {value:?} is not in 1-65534"))),
            },
            other => return Err(problem(format!("unknown option {other:?}"))),
        }
    }
    match (host, port) {
        (Some(host), Some(port)) => Ok(TpmSelection::Swtpm { host, port }),
        (None, _) => Err(problem("no host".into())),
        (_, None) => Err(problem("no port".into())),
    }
}

impl fmt::Display for TpmSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TpmSelection::Off => f.write_str("off"),
            TpmSelection::Auto => f.write_str("auto"),
            TpmSelection::Device(path) => write!(f, "device:{}", path.display()),
            TpmSelection::Swtpm { host, port } => write!(f, "swtpm:host={host},port={port}"),
        }
    }
}

impl fmt::Display for TpmTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TpmTarget::Device(path) => write!(f, "device:{}", path.display()),
            TpmTarget::Swtpm { host, port } => write!(f, "swtpm:host={host},port={port}"),
        }
    }
}

#[cfg(test)]
#[path = "tpm_selection_tests.rs"]
mod tests;
