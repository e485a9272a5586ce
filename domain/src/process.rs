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
}

impl ProcessInfo {
    /// The command line as one string, the way `ps` shows it.
    pub fn cmdline(&self) -> String {
        self.argv.join(" ")
    }

    /// The best short name: the executable's file name, else the task name.
    pub fn name(&self) -> &str {
        self.exe
            .rsplit('/')
            .next()
            .filter(|s| !s.is_empty())
            .unwrap_or(&self.comm)
    }
}
