//! Who holds a TCP port the sidecar could not listen on: the listening
//! sockets on that port in `/proc/net/tcp` and `/proc/net/tcp6` (their
//! owner's uid and inode), and the processes holding those inodes open
//! (`/proc/*/fd`). Best effort: what cannot be read is left out.

use std::collections::BTreeMap;

/// A listening socket on the port: its owner's uid; the pids holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub uid: u32,
    pub inode: u64,
    pub pids: Vec<(u32, String)>,
}

/// The TCP_LISTEN state in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// The listening sockets on `port` in one `/proc/net/tcp{,6}` text:
/// (uid, inode) each.
pub fn listeners_on(table: &str, port: u16) -> Vec<(u32, u64)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f.get(1)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            if u16::from_str_radix(hex_port, 16).ok()? != port || *f.get(3)? != LISTEN {
                return None;
            }
            Some((f.get(7)?.parse().ok()?, f.get(9)?.parse().ok()?))
        })
        .collect()
}

/// Who listens on TCP `port` on this host (in the agent's network
/// namespace).
pub fn tcp_port_holders(port: u16) -> Vec<Holder> {
    let mut holders: BTreeMap<u64, Holder> = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for (uid, inode) in listeners_on(&text, port) {
            holders.insert(
                inode,
                Holder {
                    uid,
                    inode,
                    pids: Vec::new(),
                },
            );
        }
    }
    if holders.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return holders.into_values().collect();
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(h) = holders.get_mut(&inode) {
                if !h.pids.iter().any(|(p, _)| *p == pid) {
                    let comm = std::fs::read_to_string(entry.path().join("comm"))
                        .map(|c| c.trim().to_string())
                        .unwrap_or_default();
                    h.pids.push((pid, comm));
                }
            }
        }
    }
    holders.into_values().collect()
}

/// The holders in words: "held by pid 812 (python3) of uid 1000", or why
/// none is named.
pub fn describe(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "no listening socket on it found in /proc/net/tcp{,6} (another network namespace, or already gone)".into();
    }
    let each: Vec<String> = holders
        .iter()
        .map(|h| {
            if h.pids.is_empty() {
                format!(
                    "a socket of uid {} (inode {}, no process found)",
                    h.uid, h.inode
                )
            } else {
                let pids: Vec<String> = h
                    .pids
                    .iter()
                    .map(|(p, c)| format!("pid {p} ({c})"))
                    .collect();
                format!("{} of uid {}", pids.join(", "), h.uid)
            }
        })
        .collect();
    format!("held by {}", each.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F41 0100007F:C350 01 00000000:00000000 00:00000000 00000000  1000        0 4243 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_on_the_port_are_taken() {
        assert_eq!(listeners_on(TABLE, 8001), vec![(1000, 4242)]);
        assert_eq!(listeners_on(TABLE, 22), vec![(0, 17)]);
        assert!(listeners_on(TABLE, 80).is_empty());
        assert!(listeners_on("garbage\nnot a table", 1).is_empty());
    }

    #[test]
    fn a_listener_of_this_process_is_found_with_its_pid() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holders = tcp_port_holders(port);
        let me = std::process::id();
        assert!(
            holders.iter().any(|h| h.pids.iter().any(|(p, _)| *p == me)),
            "{holders:?}"
        );
        let said = describe(&holders);
        assert!(said.contains(&format!("pid {me} (")), "{said}");
        assert!(describe(&[]).contains("no listening socket"));
    }
}
