use serde::{Deserialize, Serialize};

/// What the agent knows of a process at the time of a finding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// Absolute executable path as the kernel resolved it at exec.
    pub exe: String,
    pub argv: Vec<String>,
    /// Kernel task name, at most 15 bytes.
    pub comm: String,
    pub cgroup_id: u64,
    pub mnt_ns: u64,
    /// Hex sha256 of the executable, empty when unknown.
    pub exe_sha256: String,
    /// The pid inside the process's own PID namespace (a container's view),
    /// when that namespace is not the host's; 0 otherwise.
    #[serde(default)]
    pub ns_pid: u32,
    /// cgroup v2 path, e.g. a container's scope; empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cgroup_path: String,
    /// Parent, grandparent, ...: nearest first, at most [`MAX_ANCESTORS`],
    /// as far as the agent's process table knows; empty when unknown (and
    /// from agents that predate it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<Ancestor>,
}

/// Most ancestors a finding's process carries.
pub const MAX_ANCESTORS: usize = 8;
/// Longest ancestor executable path kept, in bytes.
pub const MAX_ANCESTOR_EXE: usize = 512;
/// Longest ancestor task name kept, in bytes (the kernel's is 15).
pub const MAX_ANCESTOR_COMM: usize = 16;

/// One process above a finding's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    pub pid: u32,
    /// Executable path, cut to [`MAX_ANCESTOR_EXE`] bytes; empty when unknown.
    #[serde(default)]
    pub exe: String,
    /// Kernel task name, cut to [`MAX_ANCESTOR_COMM`] bytes.
    #[serde(default)]
    pub comm: String,
}

impl Ancestor {
    /// An ancestor with its texts cut to the bounds.
    pub fn new(pid: u32, exe: &str, comm: &str) -> Self {
        Self {
            pid,
            exe: crate::cut_text(exe, MAX_ANCESTOR_EXE),
            comm: crate::cut_text(comm, MAX_ANCESTOR_COMM),
        }
    }

    /// The executable's file name, else the task name.
    pub fn name(&self) -> &str {
        short_name(&self.exe, &self.comm)
    }
}

/// `exe`'s file name, else `comm` (a process's short name).
fn short_name<'a>(exe: &'a str, comm: &'a str) -> &'a str {
    exe.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(comm)
}

/// `ancestors` within the bounds: the first [`MAX_ANCESTORS`], texts cut.
/// What the control plane keeps of a chain any agent sent.
pub fn bounded_ancestors(ancestors: Vec<Ancestor>) -> Vec<Ancestor> {
    ancestors
        .into_iter()
        .take(MAX_ANCESTORS)
        .map(|a| Ancestor::new(a.pid, &a.exe, &a.comm))
        .collect()
}

impl ProcessInfo {
    /// The command line as one string, the way `ps` shows it.
    pub fn cmdline(&self) -> String {
        self.argv.join(" ")
    }

    /// The best short name: the executable's file name, else the task name.
    pub fn name(&self) -> &str {
        short_name(&self.exe, &self.comm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_round_trip_and_are_left_out_when_empty() {
        let mut p = ProcessInfo {
            pid: 10,
            ppid: 5,
            ..Default::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("ancestors"));
        let back: ProcessInfo = serde_json::from_str(&json).unwrap();
        assert!(back.ancestors.is_empty());
        p.ancestors = vec![
            Ancestor::new(5, "/bin/bash", "bash"),
            Ancestor::new(1, "", "init"),
        ];
        let back: ProcessInfo = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.ancestors[0].name(), "bash");
        assert_eq!(back.ancestors[1].name(), "init");
    }

    #[test]
    fn a_chain_is_bounded() {
        let long = format!("/{}", "é".repeat(MAX_ANCESTOR_EXE));
        let chain: Vec<Ancestor> = (0..MAX_ANCESTORS as u32 + 5)
            .map(|pid| Ancestor {
                pid,
                exe: long.clone(),
                comm: "c".repeat(100),
            })
            .collect();
        let b = bounded_ancestors(chain);
        assert_eq!(b.len(), MAX_ANCESTORS);
        assert_eq!(b[0].pid, 0);
        assert!(b.iter().all(|a| a.exe.len() <= MAX_ANCESTOR_EXE
            && a.exe.starts_with("/é")
            && a.comm.len() == MAX_ANCESTOR_COMM));
    }
}
