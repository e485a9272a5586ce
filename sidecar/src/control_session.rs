//! Serves the agent's control socket: each request gets its reply, in
//! order, on the thread that reads them (loads are one at a time; gRPC
//! requests keep being served meanwhile, by the version served before).
//! A bad request gets `error` and the session goes on; the agent's end
//! closing ends it.

use std::os::fd::{AsFd, OwnedFd};

use crate::control_protocol::{
    parse_request, ControlReply, ControlRequest, ModelStatus, MAX_CONTROL_MESSAGE,
};
use crate::control_socket::{ControlSocket, ControlSocketError, Received};
use crate::model_bytes::read_model_fd;
use crate::model_identity::{ModelIdentity, Sha256Digest};
use crate::model_loader::ModelLoader;

/// Answers requests on `socket` until the agent's end closes (Ok) or the
/// socket fails.
pub fn serve_control(
    socket: &ControlSocket,
    loader: &ModelLoader,
) -> Result<(), ControlSocketError> {
    loop {
        let reply = match socket.receive()? {
            Received::Closed => return Ok(()),
            Received::Message {
                bytes,
                fds,
                oversize,
                fds_cut,
            } => {
                if oversize {
                    ControlReply::error(format!(
                        "a control message is at most {MAX_CONTROL_MESSAGE} bytes"
                    ))
                } else if fds_cut {
                    ControlReply::error("too many file descriptors came with the message")
                } else {
                    handle_request(loader, &bytes, fds)
                }
            }
        };
        if let ControlReply::Error { reason } = &reply {
            tracing::warn!(%reason, "control request refused");
        }
        socket.send(&reply.to_message())?;
    }
}

/// The reply to one request message and the descriptors that came with
/// it (all closed when this returns).
pub fn handle_request(loader: &ModelLoader, message: &[u8], fds: Vec<OwnedFd>) -> ControlReply {
    let request = match parse_request(message) {
        Ok(request) => request,
        Err(reason) => return ControlReply::error(reason),
    };
    match request {
        ControlRequest::Load {
            name,
            version,
            sha256,
            size,
        } => load(loader, &name, version, &sha256, size, fds),
        _ if !fds.is_empty() => {
            ControlReply::error("only a load request carries a file descriptor")
        }
        ControlRequest::Unload { name } => {
            if let Some(old) = loader.models().unload(&name) {
                tracing::info!(model = %old.identity, "unloaded");
            }
            ControlReply::Unloaded { name }
        }
        ControlRequest::Status {} => ControlReply::Status {
            models: loader
                .models()
                .identities()
                .into_iter()
                .map(|m| ModelStatus {
                    name: m.name,
                    version: m.version,
                    sha256: m.sha256.to_hex(),
                })
                .collect(),
        },
    }
}

fn load(
    loader: &ModelLoader,
    name: &str,
    version: u64,
    sha256: &str,
    size: u64,
    fds: Vec<OwnedFd>,
) -> ControlReply {
    let identity = match Sha256Digest::parse_hex(sha256)
        .and_then(|digest| ModelIdentity::new(name, version, digest))
    {
        Ok(identity) => identity,
        Err(e) => return ControlReply::refused(name, version, e.to_string()),
    };
    let fd = match <[OwnedFd; 1]>::try_from(fds) {
        Ok([fd]) => fd,
        Err(fds) => {
            return ControlReply::refused(
                name,
                version,
                format!(
                    "a load carries exactly one file descriptor (the model); this one carried {}",
                    fds.len()
                ),
            )
        }
    };
    let bytes = match read_model_fd(fd.as_fd(), size) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(model = %identity, "refused: {e}");
            return ControlReply::refused(name, version, e.to_string());
        }
    };
    drop(fd);
    match loader.load(identity, &bytes) {
        Ok(load_ms) => ControlReply::Loaded {
            name: name.to_string(),
            version,
            load_ms,
        },
        Err(e) => ControlReply::refused(name, version, e.to_string()),
    }
}

#[cfg(test)]
#[path = "control_session_tests.rs"]
mod tests;
