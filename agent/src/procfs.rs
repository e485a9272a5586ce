//! Reading processes from /proc: the start-up snapshot and enrichment of
//! findings (resolved exe path, cwd-relative paths, cgroup identity).
//!
//! The `procfs` crate parses the files (status, stat, cmdline, maps,
//! mountinfo, cgroup) and reads the links (exe, cwd, fd/N, ns). What stays
//! hand-written is not parsing: the `/proc/PID/exe` and `/proc/PID/fd/N`
//! paths the agent opens to read a file through the process's own handle
//! (the crate gives a link's target, not a path to open), the pid listing
//! (the crate would open a handle per process to hand back numbers) and
//! the cgroup directory's inode.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ::procfs::process::{FDTarget, MMapPath, Process};
use ::procfs::FromRead;
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
        // Hand-written: `procfs::process::all_processes` opens a handle per
        // process, and only the numbers are wanted here.
        let mut pids: Vec<u32> = std::fs::read_dir(&self.root)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    /// A handle on /proc/PID, or None when the process is gone.
    fn open(&self, pid: u32) -> Option<Process> {
        Process::new_with_root(self.root.join(pid.to_string())).ok()
    }

    /// The process as /proc shows it (no exe digest), or None when it is
    /// gone (or is a kernel thread).
    pub fn process(&self, pid: u32) -> Option<ProcessInfo> {
        let proc = self.open(pid)?;
        let status = proc.status().ok()?;
        let ppid = u32::try_from(status.ppid).ok()?;
        // The name comes from stat, not status: the crate's status parser
        // cuts `Name:` at a colon (`kworker/0:1`, `a:b`).
        let comm = proc.stat().map(|s| s.comm).unwrap_or_default();
        let argv = proc.cmdline().unwrap_or_default();
        let exe = self.exe_of(pid, &proc).unwrap_or_default();
        // NSpid lists the pid in each namespace, host first: a second value
        // is the pid the process sees in its own (container's) namespace.
        let ns_pid = status
            .nspid
            .filter(|pids| pids.len() > 1)
            .and_then(|pids| u32::try_from(*pids.last()?).ok())
            .unwrap_or(0);
        let cgroup_path = cgroup_path_of(&proc);
        Some(ProcessInfo {
            pid,
            ppid,
            uid: status.ruid,
            exe,
            argv,
            comm,
            cgroup_id: cgroup_path
                .as_deref()
                .and_then(|p| self.cgroup_dir_ino(p))
                .unwrap_or(0),
            cgroup_path: cgroup_path.unwrap_or_default(),
            mnt_ns: mnt_ns_of(&proc).unwrap_or(0),
            exe_sha256: String::new(),
            ns_pid,
            ancestors: Vec::new(),
        })
    }

    /// The resolved executable path (what /proc/PID/exe links to).
    pub fn exe(&self, pid: u32) -> Option<String> {
        self.exe_of(pid, &self.open(pid)?)
    }

    /// The executable's path; the kernel's " (deleted)" mark is taken off
    /// only when the file really is unlinked (a live file may be named
    /// `P (deleted)` to pass for a deleted `P`).
    fn exe_of(&self, pid: u32, proc: &Process) -> Option<String> {
        let link = proc.exe().ok()?;
        let unlinked = std::fs::metadata(self.exe_handle(pid))
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m) == 0)
            .unwrap_or(false);
        Some(exe_path(&link, unlinked))
    }

    /// Path of the executable as a file that can be opened even if deleted.
    pub fn exe_handle(&self, pid: u32) -> PathBuf {
        // Hand-written: this is a path to open through, not a value to parse.
        self.root.join(format!("{pid}/exe"))
    }

    /// The parent's pid (from /proc/PID/stat), or None when gone.
    pub fn ppid(&self, pid: u32) -> Option<u32> {
        u32::try_from(self.open(pid)?.stat().ok()?.ppid).ok()
    }

    /// A process's open file descriptor, as a file the agent can open.
    pub fn fd_handle(&self, pid: u32, fd: i32) -> PathBuf {
        // Hand-written: a path to open the file through the process's fd.
        self.root.join(format!("{pid}/fd/{fd}"))
    }

    /// `path` as the process sees it, seen through its root directory
    /// (`/proc/PID/root/...`): a container's path names the container's file.
    pub fn root_handle(&self, pid: u32, path: &str) -> PathBuf {
        // Hand-written: a path to open through, not a value to parse.
        self.root
            .join(format!("{pid}/root"))
            .join(path.trim_start_matches('/'))
    }

    /// Resolves a path the process passed to openat(dfd, path): absolute paths
    /// as they are, relative ones against the cwd or the directory fd, while
    /// the process is alive. Otherwise the path as given.
    pub fn resolve_path(&self, pid: u32, dfd: i32, path: &str) -> String {
        if path.starts_with('/') {
            return path.to_string();
        }
        let base = self.open(pid).and_then(|proc| {
            if dfd == libc::AT_FDCWD {
                proc.cwd().ok()
            } else {
                fd_path(&proc, dfd)
            }
        });
        match base {
            Some(dir) => dir.join(path).to_string_lossy().into_owned(),
            None => path.to_string(),
        }
    }

    /// Full path of a library a process mapped through `fd`, whose file name
    /// is `name`: the fd while it is open, else the mapping in /proc/PID/maps
    /// (the dynamic linker closes the fd right after mapping), else `name`.
    pub fn mapped_library_path(&self, pid: u32, fd: i32, name: &str) -> String {
        let Some(proc) = self.open(pid) else {
            return name.to_string();
        };
        if let Some(link) = fd_path(&proc, fd) {
            let link = link.to_string_lossy().into_owned();
            if link.ends_with(name) {
                return link;
            }
        }
        let suffix = format!("/{name}");
        mapped_paths(&proc)
            .into_iter()
            .find(|p| p.ends_with(&suffix))
            .unwrap_or_else(|| name.to_string())
    }

    /// When the process started, in clock ticks since boot (field 22 of
    /// /proc/PID/stat): with the pid, it names one process over time.
    pub fn start_time(&self, pid: u32) -> Option<u64> {
        Some(self.open(pid)?.stat().ok()?.starttime)
    }

    /// The whole of /proc/PID/stat (state, flags, parent, start time).
    pub fn stat(&self, pid: u32) -> Option<::procfs::process::Stat> {
        self.open(pid)?.stat().ok()
    }

    /// The uid owning /proc/PID (the process's effective uid).
    pub fn owner_uid(&self, pid: u32) -> Option<u32> {
        self.open(pid)?.uid().ok()
    }

    /// The /proc directory of `pid` (its `fd/` lists open descriptors).
    pub fn pid_dir(&self, pid: u32) -> PathBuf {
        self.root.join(pid.to_string())
    }

    /// What the process's open file descriptors point to.
    pub fn open_files(&self, pid: u32) -> Vec<String> {
        let Some(fds) = self.open(pid).and_then(|proc| proc.fd().ok()) else {
            return Vec::new();
        };
        fds.filter_map(|fd| match fd.ok()?.target {
            FDTarget::Path(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .filter(|l| l.starts_with('/'))
        .collect()
    }

    /// The distinct files mapped into the process (libraries among them).
    pub fn mapped_files(&self, pid: u32) -> Vec<String> {
        let Some(proc) = self.open(pid) else {
            return Vec::new();
        };
        let mut files: Vec<String> = mapped_paths(&proc)
            .into_iter()
            .filter(|p| p.starts_with('/'))
            .collect();
        files.sort();
        files.dedup();
        files
    }

    /// cgroup v2 id (the inode of the process's cgroup directory), which is
    /// what `bpf_get_current_cgroup_id()` reports.
    pub fn cgroup_id(&self, pid: u32) -> Option<u64> {
        self.cgroup_dir_ino(&self.cgroup_path(pid)?)
    }

    fn cgroup_dir_ino(&self, cgroup_path: &str) -> Option<u64> {
        let mount = self.cgroup2_mount.as_ref()?;
        let dir = mount.join(cgroup_path.trim_start_matches('/'));
        std::fs::metadata(dir).ok().map(|m| m.ino())
    }

    /// The process's cgroup v2 path ("/" is the root; a container runtime's
    /// scope names the container).
    pub fn cgroup_path(&self, pid: u32) -> Option<String> {
        cgroup_path_of(&self.open(pid)?)
    }

    /// Inode number of the process's mount namespace.
    pub fn mnt_ns(&self, pid: u32) -> Option<u64> {
        mnt_ns_of(&self.open(pid)?)
    }
}

/// `/proc/PID/exe`'s target, without the kernel's one " (deleted)" mark
/// when the file is `unlinked`.
fn exe_path(link: &Path, unlinked: bool) -> String {
    let text = link.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) if unlinked => path.to_string(),
        _ => text.into_owned(),
    }
}

/// The path an fd of the process refers to, if it is a file or directory.
fn fd_path(proc: &Process, fd: i32) -> Option<PathBuf> {
    match proc.fd_from_fd(fd).ok()?.target {
        FDTarget::Path(p) => Some(p),
        _ => None,
    }
}

/// The file paths of the process's mappings, in /proc/PID/maps order
/// (whole paths: spaces in a path are part of it).
impl Procfs {
    /// The file process `pid` has mapped executable under the file name
    /// `name` (a memfd's too), opened through /proc/PID/map_files: what is
    /// mapped, whatever is at its path now (so no identity is compared:
    /// on overlayfs stat's device is not the kernel's).
    pub fn open_mapped(&self, pid: u32, name: &str) -> Option<(std::fs::File, std::fs::Metadata)> {
        let maps = self.open(pid)?.maps().ok()?;
        let deleted = format!("{name} (deleted)");
        maps.into_iter().find_map(|m| {
            let MMapPath::Path(p) = &m.pathname else {
                return None;
            };
            let p = p.to_string_lossy();
            let named = p
                .rsplit('/')
                .next()
                .is_some_and(|last| last == name || last == deleted);
            if !named || !m.perms.contains(::procfs::process::MMPermissions::EXECUTE) {
                return None;
            }
            let (start, end) = m.address;
            let file =
                std::fs::File::open(self.root.join(format!("{pid}/map_files/{start:x}-{end:x}")))
                    .ok()?;
            let meta = file.metadata().ok()?;
            meta.is_file().then_some((file, meta))
        })
    }
}

fn mapped_paths(proc: &Process) -> Vec<String> {
    let Ok(maps) = proc.maps() else {
        return Vec::new();
    };
    maps.into_iter()
        .filter_map(|m| match m.pathname {
            MMapPath::Path(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// The cgroup v2 line of /proc/PID/cgroup (hierarchy 0, no controllers).
fn cgroup_path_of(proc: &Process) -> Option<String> {
    proc.cgroups()
        .ok()?
        .0
        .into_iter()
        .find(|g| g.hierarchy == 0 && g.controllers.is_empty())
        .map(|g| g.pathname)
}

fn mnt_ns_of(proc: &Process) -> Option<u64> {
    let namespaces = proc.namespaces().ok()?;
    namespaces
        .0
        .get(std::ffi::OsStr::new("mnt"))
        .map(|ns| ns.identifier)
}

fn find_cgroup2_mount(mountinfo: &Path) -> Option<PathBuf> {
    ::procfs::process::MountInfos::from_file(mountinfo)
        .ok()?
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
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

    /// A copy of `sleep` at a path with spaces and a colon, running: its
    /// executable is a file mapping in /proc/PID/maps.
    struct OddlyNamedChild {
        child: std::process::Child,
        path: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl OddlyNamedChild {
        fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let spaced = dir.path().join("dir with space");
            std::fs::create_dir(&spaced).unwrap();
            let path = spaced.join("lib x:1.so");
            std::fs::copy("/bin/sleep", &path).unwrap();
            // Another test thread forking while the copy was open for
            // writing makes exec fail with ETXTBSY for a moment.
            let mut tries = 0;
            let child = loop {
                match std::process::Command::new(&path).arg("30").spawn() {
                    Ok(c) => break c,
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => panic!("spawning {}: {e}", path.display()),
                }
            };
            // spawn returns once the exec has begun: wait until the kernel
            // has mapped the new image (read raw, not through the parser).
            let maps = format!("/proc/{}/maps", child.id());
            for _ in 0..200 {
                let text = std::fs::read_to_string(&maps).unwrap_or_default();
                if text.contains("lib x:1.so") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Self {
                child,
                path,
                _dir: dir,
            }
        }

        fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for OddlyNamedChild {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn mapped_paths_with_spaces_are_whole() {
        let child = OddlyNamedChild::start();
        let p = Procfs::default();
        let full = child.path.to_string_lossy().into_owned();
        // No such fd: the path comes from /proc/PID/maps.
        assert_eq!(p.mapped_library_path(child.pid(), 9999, "lib x:1.so"), full);
        assert!(
            p.mapped_files(child.pid()).contains(&full),
            "{:?}",
            p.mapped_files(child.pid())
        );
        let info = p.process(child.pid()).expect("child is readable");
        assert_eq!(info.exe, full);
        assert_eq!(info.comm, "lib x:1.so");
        assert_eq!(info.argv, vec![full.clone(), "30".to_string()]);
        assert_eq!(info.ppid, std::process::id());
        assert_eq!(p.ppid(child.pid()), Some(std::process::id()));
        assert!(p.start_time(child.pid()).unwrap() >= p.start_time(std::process::id()).unwrap());
    }

    #[test]
    fn only_a_really_deleted_executable_loses_its_deleted_mark() {
        let dir = tempfile::tempdir().unwrap();
        let spawn = |path: &std::path::Path| {
            std::fs::copy("/bin/sleep", path).unwrap();
            let mut tries = 0;
            loop {
                match std::process::Command::new(path).arg("30").spawn() {
                    Ok(c) => break c,
                    Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => panic!("spawning {}: {e}", path.display()),
                }
            }
        };
        let exe_is = |pid: u32, want: &str| {
            let p = Procfs::default();
            for _ in 0..200 {
                if p.exe(pid).as_deref() == Some(want) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            panic!("exe of {pid}: {:?}, want {want}", p.exe(pid));
        };
        // A live file named to pass for a deleted one keeps its whole name.
        let posing = dir.path().join("tool (deleted)");
        let mut a = spawn(&posing);
        exe_is(a.id(), &posing.to_string_lossy());
        // A really deleted one is reported by the path it had.
        let real = dir.path().join("tool");
        let mut b = spawn(&real);
        exe_is(b.id(), &real.to_string_lossy());
        std::fs::remove_file(&real).unwrap();
        exe_is(b.id(), &real.to_string_lossy());
        for c in [&mut a, &mut b] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    #[test]
    fn open_fds_and_dir_fds_resolve() {
        let p = Procfs::default();
        let me = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let file_path = dir.path().join("weights file.bin");
        let file = std::fs::File::create(&file_path).unwrap();
        let dir_handle = std::fs::File::open(dir.path()).unwrap();
        use std::os::fd::AsRawFd;
        let full = file_path.to_string_lossy().into_owned();
        assert!(p.open_files(me).contains(&full));
        assert_eq!(
            p.mapped_library_path(me, file.as_raw_fd(), "weights file.bin"),
            full
        );
        assert_eq!(
            p.resolve_path(me, dir_handle.as_raw_fd(), "m.onnx"),
            dir.path().join("m.onnx").to_string_lossy()
        );
        // A name the fd does not end with falls back to maps, then the name.
        assert_eq!(
            p.mapped_library_path(me, file.as_raw_fd(), "libnothing.so"),
            "libnothing.so"
        );
    }

    #[test]
    fn cgroup_and_namespace_identity_match_the_kernel() {
        let p = Procfs::default();
        let me = std::process::id();
        let raw = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let expected = raw.lines().find_map(|l| l.strip_prefix("0::"));
        assert_eq!(p.cgroup_path(me).as_deref(), expected);
        let link = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        let ino: u64 = link
            .to_str()
            .and_then(|s| s.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok())
            .unwrap();
        assert_eq!(p.mnt_ns(me), Some(ino));
        if let Some(mount) = p.cgroup2_mount() {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(mounts
                .lines()
                .any(|l| l.contains(" - cgroup2 ") && l.split(' ').nth(4) == mount.to_str()));
        }
    }

    #[test]
    fn a_fake_root_without_processes_reads_as_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = Procfs::new(dir.path());
        assert!(p.cgroup2_mount().is_none());
        assert!(p.pids().unwrap().is_empty());
        assert!(p.process(1).is_none());
        assert!(p.open_files(1).is_empty());
        assert!(p.mapped_files(1).is_empty());
        assert_eq!(p.mapped_library_path(1, 3, "libx.so"), "libx.so");
    }
}
