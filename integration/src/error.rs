//! What can go wrong while the harness starts or queries vigil's processes.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(
        "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`, as `make test` does)",
        .0.display()
    )]
    MissingBinary(PathBuf),
    #[error("opening the log file {}: {source}", .path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("{name} printed no {needle:?} within {timeout:?}; its log:\n{log}")]
    NotReady {
        name: String,
        needle: String,
        timeout: Duration,
        log: String,
    },
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{rpc}: {source}")]
    Rpc {
        rpc: &'static str,
        source: tonic::Status,
    },
    #[error("timed out after {timeout:?} waiting for {what}")]
    TimedOut { what: String, timeout: Duration },
}
