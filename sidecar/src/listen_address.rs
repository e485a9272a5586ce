//! `--listen tcp:HOST:PORT` or `--listen unix:PATH`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the gRPC server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `HOST:PORT`, resolved when bound (`127.0.0.1:8001`, `[::1]:8001`,
    /// `localhost:8001`).
    Tcp(String),
    /// A unix socket created at this path (0660).
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenAddressError {
    #[error("{0:?} is neither tcp:HOST:PORT nor unix:PATH")]
    Scheme(String),
    #[error("tcp:{0}: expected HOST:PORT with a port from 0 to 65535")]
    Port(String),
    #[error("unix: needs a socket path")]
    EmptyPath,
}

impl FromStr for ListenAddress {
    type Err = ListenAddressError;

    fn from_str(text: &str) -> Result<ListenAddress, ListenAddressError> {
        if let Some(rest) = text.strip_prefix("tcp:") {
            let port_ok = rest
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(ListenAddressError::Port(rest.to_string()));
            }
            Ok(ListenAddress::Tcp(rest.to_string()))
        } else if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ListenAddressError::EmptyPath);
            }
            Ok(ListenAddress::Unix(PathBuf::from(path)))
        } else {
            Err(ListenAddressError::Scheme(text.to_string()))
        }
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddress::Tcp(addr) => write!(f, "tcp:{addr}"),
            ListenAddress::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
#[path = "listen_address_tests.rs"]
mod tests;
