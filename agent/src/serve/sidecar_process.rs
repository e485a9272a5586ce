//! Starting one `vigil-sidecar` process: `--ort-lib PATH --listen L
//! --control-fd 3 [--intra-threads N]`, with the control socket's other
//! end as its fd 3 (the only descriptor it inherits besides stdio), an
//! empty environment, and placed in its cgroup between fork and exec, so
//! the runtime it loads is limited from its first page.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use vigil_domain::ModelListen;

use super::control_channel::ControlChannel;
use super::sidecar_cgroup::SidecarCgroup;

/// The fd the sidecar finds its control socket at.
pub const CONTROL_FD: i32 = 3;

/// What every sidecar of this agent runs with.
#[derive(Debug, Clone)]
pub struct SidecarCommand {
    pub binary: PathBuf,
    pub ort_lib: PathBuf,
    pub intra_threads: Option<u32>,
}

/// A started sidecar.
pub struct SidecarChild {
    pub child: tokio::process::Child,
    pub pid: u32,
    pub channel: ControlChannel,
}

/// The `--listen` argument for `listen`.
pub fn listen_arg(listen: &ModelListen) -> String {
    match listen {
        ModelListen::Unix { path } => format!("unix:{path}"),
        ModelListen::Tcp { host, port } => format!("tcp:{host}:{port}"),
    }
}

/// The directory for default sockets (`DATA_DIR/models`): made 0755 and
/// owned by the agent, refused when it is a symbolic link or someone
/// else's.
pub fn socket_dir(data_dir: &Path) -> Result<PathBuf, String> {
    let dir = data_dir.join("models");
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me {
        return Err(format!(
            "{}: not a directory of the agent's uid {me} (a symbolic link is not followed)",
            dir.display()
        ));
    }
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// The directory a sidecar of model `name` starts in (its working
/// directory): `DATA_DIR/sidecars/<name>`, made anew and empty for each
/// start, 0700, the agent's, so that nothing a path relative to it names
/// (an ONNX model's external data) is there. `DATA_DIR/sidecars` must be
/// the agent's own directory (a symbolic link is not followed).
pub fn fresh_work_dir(data_dir: &Path, name: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let me = rustix::process::geteuid().as_raw();
    let parent = data_dir.join("sidecars");
    match std::fs::DirBuilder::new().mode(0o700).create(&parent) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("creating {}: {e}", parent.display())),
    }
    let meta =
        std::fs::symlink_metadata(&parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    if !meta.is_dir() || meta.uid() != me {
        return Err(format!(
            "{}: not a directory of the agent's uid {me} (a symbolic link is not followed)",
            parent.display()
        ));
    }
    std::fs::set_permissions(&parent, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", parent.display()))?;
    let dir = parent.join(name);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&dir),
        Ok(_) => std::fs::remove_file(&dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    .map_err(|e| format!("clearing {}: {e}", dir.display()))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

impl SidecarCommand {
    /// Starts a sidecar listening on `listen`, in `cgroup`, in the empty
    /// directory `work_dir`.
    pub fn spawn(
        &self,
        listen: &ModelListen,
        cgroup: &SidecarCgroup,
        work_dir: &Path,
    ) -> Result<SidecarChild, String> {
        let (channel, theirs) =
            ControlChannel::pair().map_err(|e| format!("making the control socket: {e}"))?;
        let procs = cgroup.procs_for_writing().map_err(|e| {
            format!(
                "opening the cgroup.procs of {}: {e}",
                cgroup.dir().display()
            )
        })?;
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .arg("--ort-lib")
            .arg(&self.ort_lib)
            .arg("--listen")
            .arg(listen_arg(listen))
            .arg("--control-fd")
            .arg(CONTROL_FD.to_string());
        if let Some(n) = self.intra_threads {
            command.arg("--intra-threads").arg(n.to_string());
        }
        command.env_clear();
        for key in ["VIGIL_LOG", "RUST_LOG"] {
            if let Some(v) = std::env::var_os(key) {
                command.env(key, v);
            }
        }
        command
            .current_dir(work_dir)
            .stdin(Stdio::null())
            // Its log lines go to stderr, into the agent's log; stdout may
            // be a pipe nobody reads.
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // At most three: the v2 cgroup, and on a hybrid host the v1 memory
        // and cpu cgroups.
        let mut procs_fds = [-1i32; 3];
        for (slot, f) in procs_fds.iter_mut().zip(&procs) {
            *slot = f.as_raw_fd();
        }
        let control_fd = theirs.as_raw_fd();
        // SAFETY: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed: it calls write(2),
        // dup2(2) and fcntl(2) on descriptors the parent opened above and
        // keeps open until spawn returns, and open(2)/close(2) on a static
        // path; it allocates nothing and takes no lock. The error it may return is made from errno
        // (io::Error::last_os_error, no allocation).
        unsafe {
            command.pre_exec(move || into_cgroups_with_control_fd(&procs_fds, control_fd));
        }
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        drop::<OwnedFd>(theirs);
        drop(procs);
        let pid = child.id().unwrap_or(0);
        Ok(SidecarChild {
            child,
            pid,
            channel,
        })
    }
}

/// In the forked child: moves itself into the cgroups whose
/// `cgroup.procs` are open at `procs_fds` (-1: none; "0" is the writer),
/// takes an OOM score of its own (0), then puts the control socket at
/// fd 3 without close-on-exec (every other descriptor the agent has keeps
/// it, and closes at exec).
fn into_cgroups_with_control_fd(procs_fds: &[i32; 3], control_fd: i32) -> std::io::Result<()> {
    for &procs_fd in procs_fds.iter().filter(|fd| **fd >= 0) {
        // SAFETY: write(2) from a valid buffer of one byte to an fd the
        // parent keeps open across the fork.
        let written = unsafe { libc::write(procs_fd, b"0".as_ptr().cast(), 1) };
        if written != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // The agent protects itself from the OOM killer (the packaged unit's
    // OOMScoreAdjust=-900); its sidecars must not inherit that. Best
    // effort: a kernel without the file changes nothing.
    // SAFETY: open(2), write(2) and close(2) with a static NUL-terminated
    // path and a valid one-byte buffer.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
    }
    if control_fd == CONTROL_FD {
        // Already there: only its close-on-exec flag goes.
        // SAFETY: fcntl(2) F_SETFD on an open fd.
        if unsafe { libc::fcntl(CONTROL_FD, libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    } else {
        // dup2 leaves the new descriptor without close-on-exec; whatever
        // was at fd 3 (close-on-exec, like every fd Rust opens) is closed.
        // SAFETY: dup2(2) between two fd numbers; control_fd is open.
        if unsafe { libc::dup2(control_fd, CONTROL_FD) } != CONTROL_FD {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// How a process ended, in words: "exited with status 3", "killed by
/// signal 9 (SIGKILL)".
pub fn describe_exit(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = nix::sys::signal::Signal::try_from(sig)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {sig}"));
            let core = if status.core_dumped() {
                ", core dumped"
            } else {
                ""
            };
            format!("killed by signal {sig} ({name}{core})")
        }
        None => format!("ended ({status})"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    #[test]
    fn exits_are_said_in_words() {
        assert_eq!(
            describe_exit(&std::process::ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(
            describe_exit(&std::process::ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn listen_arguments_are_the_records_syntax() {
        assert_eq!(
            listen_arg(&ModelListen::Unix {
                path: "/run/m.sock".into()
            }),
            "unix:/run/m.sock"
        );
        assert_eq!(
            listen_arg(&ModelListen::Tcp {
                host: "127.0.0.1".into(),
                port: 8001
            }),
            "tcp:127.0.0.1:8001"
        );
    }

    #[test]
    fn each_start_gets_an_empty_private_work_dir() {
        let data = tempfile::tempdir().unwrap();
        let dir = fresh_work_dir(data.path(), "m").unwrap();
        assert_eq!(dir, data.path().join("sidecars/m"));
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&data.path().join("sidecars")), 0o700);
        // What was left there (external data planted beside the model's
        // name) is gone at the next start; a link there is removed, not
        // followed.
        std::fs::write(dir.join("weights.bin"), b"x").unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::write(elsewhere.path().join("keep"), b"k").unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.join("sub")).unwrap();
        let again = fresh_work_dir(data.path(), "m").unwrap();
        assert_eq!(std::fs::read_dir(&again).unwrap().count(), 0);
        assert!(elsewhere.path().join("keep").exists());
        // A link in place of the work dir is replaced.
        std::fs::remove_dir(&again).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &again).unwrap();
        let third = fresh_work_dir(data.path(), "m").unwrap();
        assert!(std::fs::symlink_metadata(&third).unwrap().is_dir());
        assert!(elsewhere.path().join("keep").exists());
        // DATA_DIR/sidecars as a link is refused.
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), other.path().join("sidecars")).unwrap();
        assert!(fresh_work_dir(other.path(), "m").is_err());
    }

    #[test]
    fn the_socket_directory_is_the_agents_and_not_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let made = socket_dir(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o777, 0o755);
        let other = tempfile::tempdir().unwrap();
        std::fs::remove_dir(&made).unwrap();
        std::os::unix::fs::symlink(other.path(), &made).unwrap();
        assert!(socket_dir(dir.path()).is_err());
    }
}
