//! Reading processes from /proc: the start-up snapshot and enrichment of
//! findings (resolved exe path, cwd-relative paths, cgroup identity).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use vigil_domain::ProcessInfo;

#[derive(Debug, Clone)]
pub struct Procfs {
    root: PathBuf,
    cgroup2_mount: Option<PathBuf>,
}

impl Default for Procfs {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl Procfs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let cgroup2_mount = find_cgroup2_mount(&root.join("self/mountinfo"));
        Self {
            root,
            cgroup2_mount,
        }
    }

    /// Where cgroup v2 is mounted (`/sys/fs/cgroup` or, on hybrid hosts,
    /// `/sys/fs/cgroup/unified`), if anywhere.
    pub fn cgroup2_mount(&self) -> Option<&Path> {
        self.cgroup2_mount.as_deref()
    }

    /// Every process id now in /proc.
    pub fn pids(&self) -> std::io::Result<Vec<u32>> {
        let mut pids: Vec<u32> = std::fs::read_dir(&self.root)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// The process as /proc shows it (no exe digest), or None when it is
    /// gone (or is a kernel thread).
    pub fn process(&self, pid: u32) -> Option<ProcessInfo> {
        let dir = self.root.join(pid.to_string());
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let ppid = field("PPid:")?.parse().ok()?;
        let uid = field("Uid:")?.split_whitespace().next()?.parse().ok()?;
        let comm = field("Name:").unwrap_or_default();
        let argv = std::fs::read(dir.join("cmdline"))
            .map(|b| split_nul(&b))
            .unwrap_or_default();
        let exe = self.exe(pid).unwrap_or_default();
        // NSpid lists the pid in each namespace, host first: a second value
        // is the pid the process sees in its own (container's) namespace.
        let ns_pid = field("NSpid:")
            .and_then(|v| {
                let pids: Vec<&str> = v.split_whitespace().collect();
                (pids.len() > 1).then(|| pids.last()?.parse().ok())?
            })
            .unwrap_or(0);
        Some(ProcessInfo {
            pid,
            ppid,
            uid,
            exe,
            argv,
            comm,
            cgroup_id: self.cgroup_id(pid).unwrap_or(0),
            cgroup_path: self.cgroup_path(pid).unwrap_or_default(),
            mnt_ns: self.mnt_ns(pid).unwrap_or(0),
            exe_sha256: String::new(),
            ns_pid,
        })
    }

    /// The resolved executable path (what /proc/PID/exe links to).
    pub fn exe(&self, pid: u32) -> Option<String> {
        let link = std::fs::read_link(self.root.join(format!("{pid}/exe"))).ok()?;
        Some(
            link.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string(),
        )
    }

    /// Path of the executable as a file that can be opened even if deleted.
    pub fn exe_handle(&self, pid: u32) -> PathBuf {
        self.root.join(format!("{pid}/exe"))
    }

    /// The parent's pid (from /proc/PID/stat), or None when gone.
    pub fn ppid(&self, pid: u32) -> Option<u32> {
        let stat = std::fs::read_to_string(self.root.join(format!("{pid}/stat"))).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    /// A process's open file descriptor, as a file the agent can open.
    pub fn fd_handle(&self, pid: u32, fd: i32) -> PathBuf {
        self.root.join(format!("{pid}/fd/{fd}"))
    }

    /// Resolves a path the process passed to openat(dfd, path): absolute paths
    /// as they are, relative ones against the cwd or the directory fd, while
    /// the process is alive. Otherwise the path as given.
    pub fn resolve_path(&self, pid: u32, dfd: i32, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        let base = if dfd == libc::AT_FDCWD {
            self.root.join(format!("{pid}/cwd"))
        } else {
            self.root.join(format!("{pid}/fd/{dfd}"))
        };
        match std::fs::read_link(base) {
            Ok(dir) => dir.join(path).to_string_lossy().into_owned(),
            Err(_) => path.to_string(),
        }
    }

    /// Full path of a library a process mapped through `fd`, whose file name
    /// is `name`: the fd while it is open, else the mapping in /proc/PID/maps
    /// (the dynamic linker closes the fd right after mapping), else `name`.
    pub fn mapped_library_path(&self, pid: u32, fd: i32, name: &str) -> String {
        if let Ok(link) = std::fs::read_link(self.root.join(format!("{pid}/fd/{fd}"))) {
            let link = link.to_string_lossy().into_owned();
            if link.ends_with(name) {
                return link;
            }
        }
        let suffix = format!("/{name}");
        std::fs::read_to_string(self.root.join(format!("{pid}/maps")))
            .ok()
            .and_then(|maps| {
                maps.lines()
                    .filter_map(|l| l.split_whitespace().nth(5))
                    .find(|p| p.ends_with(&suffix))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| name.to_string())
    }

    /// When the process started, in clock ticks since boot (field 22 of
    /// /proc/PID/stat): with the pid, it names one process over time.
    pub fn start_time(&self, pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(self.root.join(format!("{pid}/stat"))).ok()?;
        // Fields after the parenthesised comm, which may contain spaces.
        let rest = stat.rsplit_once(')')?.1;
        rest.split_whitespace().nth(19)?.parse().ok()
    }

    /// What the process's open file descriptors point to.
    pub fn open_files(&self, pid: u32) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.root.join(format!("{pid}/fd"))) else {
            return Vec::new();
        };
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|l| l.to_string_lossy().into_owned())
            .filter(|l| l.starts_with('/'))
            .collect()
    }

    /// The distinct files mapped into the process (libraries among them).
    pub fn mapped_files(&self, pid: u32) -> Vec<String> {
        let Ok(maps) = std::fs::read_to_string(self.root.join(format!("{pid}/maps"))) else {
            return Vec::new();
        };
        let mut files: Vec<String> = maps
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.starts_with('/'))
            .map(str::to_string)
            .collect();
        files.sort();
        files.dedup();
        files
    }

    /// cgroup v2 id (the inode of the process's cgroup directory), which is
    /// what `bpf_get_current_cgroup_id()` reports.
    pub fn cgroup_id(&self, pid: u32) -> Option<u64> {
        let mount = self.cgroup2_mount.as_ref()?;
        let rel = self.cgroup_path(pid)?;
        let dir = mount.join(rel.trim_start_matches('/'));
        std::fs::metadata(dir).ok().map(|m| m.ino())
    }

    /// The process's cgroup v2 path ("/" is the root; a container runtime's
    /// scope names the container).
    pub fn cgroup_path(&self, pid: u32) -> Option<String> {
        let text = std::fs::read_to_string(self.root.join(format!("{pid}/cgroup"))).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(str::to_string)
    }

    /// Inode number of the process's mount namespace.
    pub fn mnt_ns(&self, pid: u32) -> Option<u64> {
        let link = std::fs::read_link(self.root.join(format!("{pid}/ns/mnt"))).ok()?;
        let s = link.to_str()?;
        s.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
    }
}

fn split_nul(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

fn find_cgroup2_mount(mountinfo: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(mountinfo).ok()?;
    // Fields: id parent maj:min root mountpoint options ... - fstype source super
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_process() {
        let p = Procfs::default();
        let me = std::process::id();
        let snap = p.process(me).expect("own process is readable");
        assert_eq!(snap.pid, me);
        assert!(snap.exe.contains("vigil_agent"), "{}", snap.exe);
        assert!(!snap.argv.is_empty());
        assert!(p.pids().unwrap().contains(&me));
        if p.cgroup2_mount().is_some() {
            assert!(snap.cgroup_id > 0);
        }
        assert!(snap.mnt_ns > 0);
    }

    #[test]
    fn relative_paths_resolve_against_the_cwd() {
        let p = Procfs::default();
        let me = std::process::id();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            p.resolve_path(me, libc::AT_FDCWD, "m.onnx"),
            cwd.join("m.onnx").to_string_lossy()
        );
        assert_eq!(p.resolve_path(me, libc::AT_FDCWD, "/abs.onnx"), "/abs.onnx");
        // A process that does not exist keeps the path as given.
        assert_eq!(p.resolve_path(u32::MAX, libc::AT_FDCWD, "m.onnx"), "m.onnx");
    }

    #[test]
    fn gone_processes_read_as_none() {
        assert!(Procfs::default().process(u32::MAX).is_none());
    }
}
