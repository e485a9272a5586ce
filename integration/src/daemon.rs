//! Child processes that never outlive the test or benchmark that started
//! them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::HarnessError;

/// How long [`Daemon::start`] waits for the ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Killed(pub Child);

impl Killed {
    /// Spawns `cmd` with its stdout piped and waits for its first line,
    /// which must be `ready` (the child says it holds what the test needs).
    pub fn spawn_until_line(cmd: &mut Command, ready: &str) -> Killed {
        let mut child = Killed(cmd.stdout(Stdio::piped()).spawn().unwrap());
        let mut line = String::new();
        BufReader::new(child.0.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), ready);
        child
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A long-running child that announced it is ready on stdout; killed
/// (SIGKILL) when dropped.
pub struct Daemon {
    pub child: Child,
    pub name: String,
}

impl Daemon {
    /// Starts `cmd` with its stderr appended to `log` and waits up to
    /// [`READY_TIMEOUT`] for a stdout line containing `ready`; panics with
    /// the log when it does not come.
    pub fn start(cmd: Command, name: &str, ready: &str, log: &Path) -> Daemon {
        Self::spawn(cmd, name, ready, READY_TIMEOUT, Some(log)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `cmd` and waits up to `timeout` for a stdout line containing
    /// `ready`. With a `log`, stderr is appended to it (and shown in the
    /// error); without one, stderr is what `cmd` says. On failure the child
    /// is killed.
    pub fn spawn(
        mut cmd: Command,
        name: &str,
        ready: &str,
        timeout: Duration,
        log: Option<&Path>,
    ) -> Result<Daemon, HarnessError> {
        if let Some(log) = log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|source| HarnessError::Log {
                    path: log.to_path_buf(),
                    source,
                })?;
            cmd.stderr(file);
        }
        cmd.stdout(Stdio::piped());
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            name: name.to_string(),
            source,
        })?;
        let mut daemon = Daemon {
            child,
            name: name.to_string(),
        };
        let stdout = daemon.child.stdout.take().expect("stdout is piped");
        if wait_for_line(stdout, ready, timeout).is_err() {
            daemon.kill();
            return Err(HarnessError::NotReady {
                name: name.to_string(),
                needle: ready.to_string(),
                timeout,
                log: log
                    .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                    .unwrap_or_default(),
            });
        }
        Ok(daemon)
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the child to exit; returns its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        }
        self.child.wait().expect("wait for child")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads `stdout` on a thread until a line contains `needle`, for at most
/// `timeout`. The thread keeps draining stdout afterwards, so a chatty
/// child never blocks on a full pipe.
fn wait_for_line(
    stdout: ChildStdout,
    needle: &str,
    timeout: Duration,
) -> Result<(), mpsc::RecvTimeoutError> {
    let (tx, rx) = mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains(&needle) {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(timeout)
}
