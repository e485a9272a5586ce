//! The agent's control socket: an AF_UNIX SOCK_SEQPACKET socket the
//! sidecar inherits (`--control-fd N`). One message is one request or one
//! reply; a request may carry file descriptors (SCM_RIGHTS), which arrive
//! close-on-exec and owned.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::socket::{
    getsockname, getsockopt, recvmsg, sendmsg, sockopt, ControlMessageOwned, MsgFlags, SockType,
    UnixAddr,
};

use crate::control_protocol::MAX_CONTROL_MESSAGE;

/// Most descriptors one SCM_RIGHTS message carries (the kernel's
/// SCM_MAX_FD): room for all of them, so none is left unread and open.
const MAX_FDS: usize = 253;

/// Why an fd is not a usable control socket, or the socket failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlSocketError {
    #[error("--control-fd {0}: fds 0, 1 and 2 are stdin, stdout and stderr")]
    StandardStream(RawFd),
    #[error("--control-fd {fd}: not an open file descriptor ({source})")]
    NotOpen { fd: RawFd, source: Errno },
    #[error("the control fd is not an AF_UNIX SOCK_SEQPACKET socket ({0})")]
    NotSeqpacket(String),
    #[error("the control socket: {0}")]
    Io(Errno),
}

/// What one receive got.
#[derive(Debug)]
pub enum Received {
    /// A message, with the descriptors that came with it.
    Message {
        bytes: Vec<u8>,
        fds: Vec<OwnedFd>,
        /// The message was longer than [`MAX_CONTROL_MESSAGE`] (its tail
        /// is gone).
        oversize: bool,
        /// Descriptors were cut off (more than could be received).
        fds_cut: bool,
    },
    /// The agent's end is closed.
    Closed,
}

#[derive(Debug)]
pub struct ControlSocket {
    fd: OwnedFd,
}

impl ControlSocket {
    /// The control socket from `fd`, which must be an AF_UNIX
    /// SOCK_SEQPACKET socket; it is made close-on-exec.
    pub fn new(fd: OwnedFd) -> Result<ControlSocket, ControlSocketError> {
        let kind = getsockopt(&fd, sockopt::SockType)
            .map_err(|e| ControlSocketError::NotSeqpacket(e.to_string()))?;
        if kind != SockType::SeqPacket {
            return Err(ControlSocketError::NotSeqpacket(format!("{kind:?}")));
        }
        getsockname::<UnixAddr>(fd.as_raw_fd())
            .map_err(|e| ControlSocketError::NotSeqpacket(format!("not AF_UNIX: {e}")))?;
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(ControlSocketError::Io)?;
        Ok(ControlSocket { fd })
    }

    /// Takes ownership of descriptor `raw`, inherited from the parent
    /// (`--control-fd N`), and checks it as [`ControlSocket::new`] does.
    #[allow(unsafe_code)]
    pub fn from_inherited(raw: RawFd) -> Result<ControlSocket, ControlSocketError> {
        if (0..=2).contains(&raw) {
            return Err(ControlSocketError::StandardStream(raw));
        }
        // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags; any
        // integer is a valid argument (EBADF when nothing is open there).
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFD) };
        if flags < 0 {
            return Err(ControlSocketError::NotOpen {
                fd: raw,
                source: Errno::last(),
            });
        }
        // SAFETY: `raw` is open (just checked) and was handed to this
        // process by its parent to own, by number on the command line;
        // nothing else in the sidecar opens, uses or closes it, so the
        // OwnedFd made here is its only owner.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        ControlSocket::new(fd)
    }

    /// Waits for the next message (blocking).
    #[allow(unsafe_code)]
    pub fn receive(&self) -> Result<Received, ControlSocketError> {
        let mut bytes = vec![0u8; MAX_CONTROL_MESSAGE];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        loop {
            let mut iov = [IoSliceMut::new(&mut bytes)];
            let msg = match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ControlSocketError::Io(e)),
            };
            let len = msg.bytes;
            let oversize = msg.flags.contains(MsgFlags::MSG_TRUNC);
            let fds_cut = msg.flags.contains(MsgFlags::MSG_CTRUNC);
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(received) = c {
                        for raw in received {
                            // SAFETY: the kernel has just installed `raw`
                            // in this process's table for this message;
                            // nothing else knows or owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                        }
                    }
                }
            }
            if len == 0 && fds.is_empty() && !oversize {
                // SOCK_SEQPACKET: a zero-length read is the peer's end
                // (the agent never sends an empty message).
                return Ok(Received::Closed);
            }
            bytes.truncate(len);
            return Ok(Received::Message {
                bytes,
                fds,
                oversize,
                fds_cut,
            });
        }
    }

    /// Sends one message (blocking; never SIGPIPE).
    pub fn send(&self, message: &[u8]) -> Result<(), ControlSocketError> {
        loop {
            match sendmsg::<()>(
                self.fd.as_raw_fd(),
                &[IoSlice::new(message)],
                &[],
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ControlSocketError::Io(e)),
            }
        }
    }
}

impl AsFd for ControlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
#[path = "control_socket_tests.rs"]
pub(crate) mod tests;
