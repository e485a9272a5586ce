//! A real `vigil-agent` process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{try_binary, wait_for, Daemon, HarnessError, READY_TIMEOUT};

/// Held by each running agent: within one process, agents run one at a
/// time. Two agents on one host see each other's content reads of model
/// files as findings (a real host runs one), and each would hash the other's
/// large debug binary, so concurrent agents would measure each other.
static ONE_AGENT_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Agent {
    pub daemon: Daemon,
    /// Its stderr, where it logs each finding: `<data_dir>.log`.
    pub log: PathBuf,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Agent {
    pub async fn start(data_dir: &Path, control_plane: &str, agent_id: &str) -> Agent {
        Self::start_with(data_dir, control_plane, agent_id, &[]).await
    }

    /// Starts an agent with extra command-line flags. Without a
    /// `--sensor-mode` among them, the agent must load eBPF or fail: a test
    /// never silently runs on the degraded fallback.
    pub async fn start_with(
        data_dir: &Path,
        control_plane: &str,
        agent_id: &str,
        extra: &[&str],
    ) -> Agent {
        Self::start_with_env(data_dir, control_plane, agent_id, extra, &[]).await
    }

    /// Starts an agent with extra flags and environment variables; panics
    /// with its log when it does not come up.
    pub async fn start_with_env(
        data_dir: &Path,
        control_plane: &str,
        agent_id: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Agent {
        Self::try_start(data_dir, control_plane, agent_id, extra, env)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts `vigil-agent` (heartbeat and reconnect backoff of one second,
    /// eBPF sensors unless `extra` names a `--sensor-mode`) once no other
    /// agent of this process runs, and waits for its ready line.
    pub async fn try_start(
        data_dir: &Path,
        control_plane: &str,
        agent_id: &str,
        extra: &[&str],
        env: &[(&str, &Path)],
    ) -> Result<Agent, HarnessError> {
        let binary = try_binary("vigil-agent")?;
        let turn = ONE_AGENT_AT_A_TIME.lock().await;
        let mode: &[&str] = if extra.contains(&"--sensor-mode") {
            &[]
        } else {
            &["--sensor-mode", "ebpf"]
        };
        let log = data_dir.with_extension("log");
        let mut cmd = Command::new(binary);
        cmd.arg("--control-plane")
            .arg(control_plane)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--agent-id")
            .arg(agent_id)
            .arg("--heartbeat-secs")
            .arg("1")
            .arg("--max-backoff-secs")
            .arg("1")
            .args(mode)
            .args(extra)
            .envs(env.iter().copied());
        let daemon = Daemon::spawn(
            cmd,
            "vigil-agent",
            "vigil-agent ready",
            READY_TIMEOUT,
            Some(&log),
        )?;
        Ok(Agent {
            daemon,
            log,
            _turn: turn,
        })
    }

    /// Everything the agent has logged so far (empty if the log is
    /// unreadable).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for the agent's log to contain `needle`;
    /// panics naming `what` on a timeout.
    pub async fn wait_for_log(&self, what: &str, timeout: Duration, needle: &str) {
        wait_for(what, timeout, || async {
            self.log_text().contains(needle).then_some(())
        })
        .await
    }
}

/// The unsigned number after `key` in a log line, as the agent writes
/// `latency_us=1234`: `log_number(line, "latency_us=")`.
pub fn log_number(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
