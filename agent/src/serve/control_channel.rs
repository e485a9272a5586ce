//! The agent's end of a sidecar's control socket: an AF_UNIX
//! SOCK_SEQPACKET socketpair (message boundaries kept, no name in any
//! file system, so no other process can connect to it), one JSON message
//! per packet, a model's memfd passed with SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

use super::control_messages::{Reply, Request, MAX_REASON};

/// Largest message either side sends.
pub const MAX_MESSAGE: usize = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the sidecar closed its control socket")]
    Closed,
    #[error("control socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the sidecar sent a message over {MAX_MESSAGE} bytes")]
    TooLong,
    #[error("the sidecar sent a message that is not the protocol's: {0}")]
    Malformed(String),
}

/// The socket is registered with tokio as a `UnixDatagram`: tokio only
/// waits for its readiness; every call on it is sendmsg/recvmsg here,
/// which a SEQPACKET socket answers as it should.
pub struct ControlChannel {
    socket: UnixDatagram,
}

impl ControlChannel {
    /// A new socketpair: the agent's end (non-blocking, close-on-exec) and
    /// the sidecar's end (blocking, close-on-exec until it is placed at
    /// the child's fd 3, which alone is inherited).
    pub fn pair() -> std::io::Result<(ControlChannel, OwnedFd)> {
        let (ours, theirs) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        rustix::io::ioctl_fionbio(&ours, true)?;
        let socket = UnixDatagram::from_std(std::os::unix::net::UnixDatagram::from(ours))?;
        Ok((ControlChannel { socket }, theirs))
    }

    /// Sends one request, with `fd` attached when given.
    pub async fn send(
        &self,
        request: &Request,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<(), ChannelError> {
        let bytes =
            serde_json::to_vec(request).map_err(|e| ChannelError::Malformed(e.to_string()))?;
        loop {
            self.socket.writable().await?;
            let sent = self.socket.try_io(Interest::WRITABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                let mut control = SendAncillaryBuffer::new(&mut space);
                let fds;
                if let Some(fd) = fd {
                    fds = [fd];
                    control.push(SendAncillaryMessage::ScmRights(&fds));
                }
                rustix::net::sendmsg(
                    self.socket.as_fd(),
                    &[IoSlice::new(&bytes)],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {
                    return Err(ChannelError::Closed)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next message from the sidecar. Descriptors it sends are closed.
    pub async fn recv(&self) -> Result<Reply, ChannelError> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        loop {
            self.socket.readable().await?;
            let got = self.socket.try_io(Interest::READABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = rustix::net::recvmsg(
                    self.socket.as_fd(),
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                // Whatever descriptors came along are dropped (closed).
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(fds) = m {
                        fds.for_each(drop::<OwnedFd>);
                    }
                }
                Ok(msg)
            });
            let msg = match got {
                Ok(msg) => msg,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => {
                    return Err(ChannelError::Closed)
                }
                Err(e) => return Err(e.into()),
            };
            if msg.bytes == 0 {
                return Err(ChannelError::Closed);
            }
            if msg.flags.contains(ReturnFlags::TRUNC) {
                return Err(ChannelError::TooLong);
            }
            return parse(&buf[..msg.bytes]);
        }
    }
}

fn parse(bytes: &[u8]) -> Result<Reply, ChannelError> {
    let mut reply: Reply = serde_json::from_slice(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        ChannelError::Malformed(format!("{e}: {text:?}"))
    })?;
    // Text from the sidecar goes into findings: bounded.
    match &mut reply {
        Reply::Refused { reason, .. } | Reply::Error { reason } => {
            *reason = vigil_domain::cut_text(reason, MAX_REASON);
        }
        _ => {}
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::serve::sealed_memfd::MemfdWriter;

    /// The sidecar's side, blocking, as a test plays it.
    fn sidecar_recv(fd: &OwnedFd) -> (Vec<u8>, Vec<OwnedFd>) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = rustix::net::recvmsg(
            fd,
            &mut [IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .unwrap();
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(got) = m {
                fds.extend(got);
            }
        }
        buf.truncate(msg.bytes);
        (buf, fds)
    }

    fn sidecar_send(fd: &OwnedFd, bytes: &[u8]) {
        let mut control = SendAncillaryBuffer::default();
        rustix::net::sendmsg(fd, &[IoSlice::new(bytes)], &mut control, SendFlags::empty()).unwrap();
    }

    #[tokio::test]
    async fn a_load_carries_the_sealed_memfd_and_the_reply_comes_back() {
        let (channel, theirs) = ControlChannel::pair().unwrap();
        let mut w = MemfdWriter::new("vigil-test", 5).unwrap();
        w.write_all(b"hello").unwrap();
        let memfd = w.seal().unwrap();
        let request = Request::Load {
            name: "m".into(),
            version: 1,
            sha256: "ab".repeat(32),
            size: 5,
        };
        channel.send(&request, Some(memfd.as_fd())).await.unwrap();
        let theirs = tokio::task::spawn_blocking(move || {
            let (bytes, fds) = sidecar_recv(&theirs);
            assert_eq!(fds.len(), 1);
            assert_ne!(fds[0].as_raw_fd(), -1);
            let mut model = String::new();
            std::fs::File::from(fds.into_iter().next().unwrap())
                .read_to_string(&mut model)
                .unwrap();
            assert_eq!(model, "hello");
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.starts_with(r#"{"op":"load","name":"m""#), "{text}");
            sidecar_send(
                &theirs,
                br#"{"op":"loaded","name":"m","version":1,"sha256":"x","load_ms":3.0}"#,
            );
            theirs
        })
        .await
        .unwrap();
        assert!(matches!(
            channel.recv().await.unwrap(),
            Reply::Loaded { version: 1, .. }
        ));
        // Garbage is an error naming it, not a panic.
        sidecar_send(&theirs, b"{\"op\":");
        let e = channel.recv().await.unwrap_err();
        assert!(e.to_string().contains("not the protocol's"), "{e}");
        drop(theirs);
        assert!(matches!(channel.recv().await, Err(ChannelError::Closed)));
        assert!(matches!(
            channel.send(&Request::Status, None).await,
            Err(ChannelError::Closed)
        ));
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused() {
        let (channel, theirs) = ControlChannel::pair().unwrap();
        let mut big = br#"{"op":"error","reason":""#.to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_MESSAGE));
        big.extend_from_slice(b"\"}");
        sidecar_send(&theirs, &big);
        assert!(matches!(channel.recv().await, Err(ChannelError::TooLong)));
        // A long reason within the limit is cut.
        let mut long = br#"{"op":"error","reason":""#.to_vec();
        long.extend(std::iter::repeat_n(b'y', 5000));
        long.extend_from_slice(b"\"}");
        sidecar_send(&theirs, &long);
        let Reply::Error { reason } = channel.recv().await.unwrap() else {
            panic!("not an error reply");
        };
        assert_eq!(reason.len(), MAX_REASON);
    }
}
