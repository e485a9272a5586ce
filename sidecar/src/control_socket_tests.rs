use std::io::Write;
use std::os::fd::AsRawFd;

use nix::sys::socket::{socketpair, AddressFamily, ControlMessage, SockFlag};

use super::*;

/// (the sidecar's end, the agent's end).
pub(crate) fn pair() -> (ControlSocket, OwnedFd) {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    (ControlSocket::new(ours).unwrap(), theirs)
}

/// Sends `message` from the agent's end, with `fds`.
pub(crate) fn send_from_agent(agent: &OwnedFd, message: &[u8], fds: &[RawFd]) {
    let cmsgs: Vec<ControlMessage> = if fds.is_empty() {
        vec![]
    } else {
        vec![ControlMessage::ScmRights(fds)]
    };
    sendmsg::<()>(
        agent.as_raw_fd(),
        &[IoSlice::new(message)],
        &cmsgs,
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

#[test]
fn a_message_and_its_descriptors_arrive_owned_and_close_on_exec() {
    let (socket, agent) = pair();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(b"payload").unwrap();
    send_from_agent(&agent, br#"{"op":"status"}"#, &[file.as_raw_fd()]);
    match socket.receive().unwrap() {
        Received::Message {
            bytes,
            fds,
            oversize,
            fds_cut,
        } => {
            assert_eq!(bytes, br#"{"op":"status"}"#);
            assert_eq!(fds.len(), 1);
            assert!(!oversize && !fds_cut);
            let flags = fcntl(&fds[0], FcntlArg::F_GETFD).unwrap();
            assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        }
        Received::Closed => panic!("closed"),
    }
}

#[test]
fn an_oversize_message_is_flagged_and_the_next_one_reads_whole() {
    let (socket, agent) = pair();
    // Socket buffers must hold it.
    nix::sys::socket::setsockopt(&agent, sockopt::SndBuf, &(512 * 1024)).unwrap();
    nix::sys::socket::setsockopt(&socket.fd, sockopt::RcvBuf, &(512 * 1024)).unwrap();
    send_from_agent(&agent, &vec![b'x'; MAX_CONTROL_MESSAGE + 10], &[]);
    send_from_agent(&agent, b"next", &[]);
    match socket.receive().unwrap() {
        Received::Message {
            bytes, oversize, ..
        } => {
            assert!(oversize);
            assert_eq!(bytes.len(), MAX_CONTROL_MESSAGE);
        }
        Received::Closed => panic!("closed"),
    }
    match socket.receive().unwrap() {
        Received::Message {
            bytes, oversize, ..
        } => {
            assert!(!oversize);
            assert_eq!(bytes, b"next");
        }
        Received::Closed => panic!("closed"),
    }
}

#[test]
fn the_agents_end_closing_is_seen_as_closed() {
    let (socket, agent) = pair();
    drop(agent);
    assert!(matches!(socket.receive().unwrap(), Received::Closed));
}

#[test]
fn replies_reach_the_agent_as_one_message() {
    let (socket, agent) = pair();
    socket.send(br#"{"op":"unloaded","name":"m"}"#).unwrap();
    let mut buf = [0u8; 128];
    let n = nix::sys::socket::recv(agent.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    assert_eq!(&buf[..n], br#"{"op":"unloaded","name":"m"}"#);
}

#[test]
fn anything_but_a_unix_seqpacket_socket_is_refused() {
    let (stream, _) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap();
    let err = ControlSocket::new(stream).unwrap_err();
    assert!(
        err.to_string()
            .contains("not an AF_UNIX SOCK_SEQPACKET socket"),
        "{err}"
    );
    let file: OwnedFd = tempfile::tempfile().unwrap().into();
    assert!(ControlSocket::new(file).is_err());
}

#[test]
fn standard_streams_and_closed_descriptors_are_refused_as_control_fds() {
    for fd in 0..=2 {
        assert!(matches!(
            ControlSocket::from_inherited(fd),
            Err(ControlSocketError::StandardStream(_))
        ));
    }
    // A number far above anything open here.
    let err = ControlSocket::from_inherited(987_654).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("--control-fd 987654: not an open file descriptor"),
        "{err}"
    );
}
