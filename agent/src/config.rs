//! Agent configuration: command-line flags, each also settable by environment.

use std::path::PathBuf;
use std::time::Duration;
use vigil_observability::LogFormat;

use crate::attest::event_logs::{DEFAULT_BOOT_EVENT_LOG, DEFAULT_IMA_LOG};
use crate::attest::{EventLogPaths, PcrBank, PcrList, TpmSelection};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "vigil-agent",
    version,
    about = "vigil host agent: finds shadow AI on this host"
)]
pub struct AgentConfig {
    /// What to do instead of running: enroll with a join token.
    #[command(subcommand)]
    pub command: Option<AgentCommand>,

    /// Control plane gRPC endpoint, or the endpoints of a cluster's
    /// nodes, comma-separated: the agent uses one at a time and moves to
    /// the next when it cannot reach it.
    #[arg(
        long,
        global = true,
        env = "VIGIL_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7700"
    )]
    pub control_plane: String,

    /// Directory for the agent's spool and state.
    #[arg(
        long,
        env = "VIGIL_AGENT_DATA_DIR",
        default_value = "/var/lib/vigil/agent"
    )]
    pub data_dir: PathBuf,

    /// Stable identity of this agent (default: the agent id its --tls-cert
    /// names, else /etc/machine-id, else the hostname).
    #[arg(long, global = true, env = "VIGIL_AGENT_ID")]
    pub agent_id: Option<String>,

    /// The fleet's CA certificate (PEM). With --tls-cert and --tls-key the
    /// agent talks to the control plane over mutual TLS (an https://
    /// endpoint) and trusts only a control plane whose certificate this CA
    /// issued to a node.
    #[arg(long, global = true, env = "VIGIL_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// This agent's certificate (PEM): it names the agent id.
    #[arg(long, env = "VIGIL_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// Renew the certificate when it has at most this many seconds left
    /// (default: a third of its lifetime). The control plane signs a new
    /// key's request and retires the old certificate, which ends the
    /// stream opened with it; the agent reconnects with the new one.
    #[arg(long, env = "VIGIL_TLS_RENEW_WITHIN_SECS", value_name = "SECS")]
    pub tls_renew_within_secs: Option<u64>,

    /// How often the certificate's expiry is looked at, in seconds.
    #[arg(long, default_value_t = 3600, hide = true)]
    pub tls_renew_check_secs: u64,

    /// This agent's private key (PEM).
    #[arg(long, env = "VIGIL_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// sha256 of an executable approved to run AI on this host (repeatable).
    #[arg(
        long = "approved-exe-sha256",
        env = "VIGIL_APPROVED_EXE_SHA256",
        value_delimiter = ','
    )]
    pub approved_exe_sha256: Vec<String>,

    /// Seconds between heartbeats to the control plane.
    #[arg(long, default_value_t = 5)]
    pub heartbeat_secs: u64,

    /// Longest wait between reconnection attempts, in seconds.
    #[arg(long, default_value_t = 10)]
    pub max_backoff_secs: u64,

    /// Which sensor: eBPF with procfs fallback, eBPF only, or procfs only.
    #[arg(long, value_enum, env = "VIGIL_SENSOR_MODE", default_value = "auto")]
    pub sensor_mode: crate::sensors::SensorChoice,

    /// Milliseconds between /proc polls in degraded (procfs) mode.
    #[arg(long, default_value_t = 1000)]
    pub procfs_poll_ms: u64,

    /// Read-only file mappings at least this many MiB long get a content
    /// check, whatever the file's name (0: off).
    #[arg(long, default_value_t = 8)]
    pub large_mapping_mib: u64,

    /// Check the first bytes read at offset 0 (read, pread64) of every file
    /// opened for reading only, whatever its name: weights read under a
    /// neutral name (shard.000) are found by content. `false` detaches the
    /// read hooks.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub content_read_checks: bool,

    /// Check the ELF content (dynamic symbols, soname) of executable files
    /// mapped under names that are no AI runtime's, once per file version:
    /// a renamed copy of libonnxruntime or libllama is still found.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub library_content_checks: bool,

    /// Read the first bytes a process sends on TCP connections to port 443
    /// (the TLS ClientHello's server name) and 53 (DNS over TCP): AI API
    /// hosts reached without a DNS question on the wire are still named.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub stream_checks: bool,

    /// Size of the kernel's event ring buffer in KiB (a power of two, at
    /// least 4). Records that do not fit are counted as dropped.
    #[arg(long, default_value_t = 8192)]
    pub ring_buffer_kib: u32,

    /// Records of one process lost for a full ring buffer in a second that
    /// make it a flood: one finding per episode names the process (0: off).
    #[arg(long, default_value_t = 1000)]
    pub sensor_flood_drops_per_sec: u64,

    /// The NVML library to load (a path, or a name the dynamic linker
    /// finds). When it cannot load, the host reports "no NVIDIA GPU".
    #[arg(long, env = "VIGIL_NVML_LIBRARY", default_value = "libnvidia-ml.so.1")]
    pub nvml_library: PathBuf,

    /// Milliseconds between NVML polls of GPU processes.
    #[arg(long, default_value_t = 1000)]
    pub gpu_poll_ms: u64,

    /// Public key (hex ed25519) whose policy bundles this agent accepts
    /// (repeatable). Without one, no bundle is accepted and the built-in
    /// rules apply.
    #[arg(
        long = "trusted-policy-key",
        env = "VIGIL_TRUSTED_POLICY_KEYS",
        value_delimiter = ','
    )]
    pub trusted_policy_keys: Vec<String>,

    /// A signed policy bundle to activate at start (`vigilctl policy sign`).
    #[arg(long)]
    pub policy_bundle: Option<PathBuf>,

    /// Roll a newly received policy bundle back to the previous one when it
    /// makes more than this many findings within a minute (0: never).
    #[arg(long, default_value_t = 0)]
    pub policy_auto_rollback_per_minute: u64,

    /// How long after activation a bundle is watched for that, in seconds.
    #[arg(long, default_value_t = 300)]
    pub policy_auto_rollback_watch_secs: u64,

    /// A pid enforcement must never touch, nor its ancestors (repeatable).
    /// The agent itself, pid 1 and kernel threads are always spared.
    #[arg(long = "protect-pid", value_delimiter = ',')]
    pub protect_pids: Vec<u32>,

    /// An executable (absolute path, as /proc/PID/exe shows it) whose
    /// processes running as root enforcement must never touch, nor their
    /// ancestors (repeatable). The agent's own executable and the
    /// `vigil-controlplane` next to it are always protected.
    #[arg(long = "protect-exe", value_delimiter = ',')]
    pub protect_exes: Vec<PathBuf>,

    /// Most actions (kill, freeze, deny_gpu, block_egress) one rule takes
    /// on one user's (uid's) processes per window (a minute, see
    /// --action-budget-window-secs); past it, one finding says so and the
    /// further actions are queued until the window refills (0: no limit).
    #[arg(long, default_value_t = 20)]
    pub max_actions_per_rule_per_minute: u32,

    /// The window of --max-actions-per-rule-per-minute, in seconds (tests
    /// shorten it).
    #[arg(long, default_value_t = 60.0, hide = true)]
    pub action_budget_window_secs: f64,

    /// Append every finding, before policy, to this file as JSON lines
    /// (for `vigilctl policy test --events`).
    #[arg(long)]
    pub record_events: Option<PathBuf>,

    /// Most processes the process table holds.
    #[arg(long, default_value_t = 65_536)]
    pub process_table_capacity: usize,

    /// Largest executable or model file hashed, in bytes: a bigger one is
    /// reported unhashed ("not hashed: over budget"), never read.
    #[arg(long, default_value_t = 4 << 30)]
    pub max_hash_bytes: u64,

    /// Longest a single file may take to hash, in seconds; past it the
    /// file is reported unhashed.
    #[arg(long, default_value_t = 60)]
    pub max_hash_secs: u64,

    /// Most bytes of one model file's header read to identify it (GGUF
    /// metadata and tensor table, safetensors JSON, ONNX graph, pickle
    /// opcodes); the weights are skipped, never read.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_model_header_bytes: u64,

    /// Longest one model file's header may take to read, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub max_model_header_millis: u64,

    /// Ports whose new listeners are never asked what they serve (a
    /// listener on any other port is probed for the OpenAI, Ollama and
    /// KServe v2 routes): services that do not speak HTTP.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "22,25,53,111,389,443,465,587,631,636,993,995,2049,3306,5432,6379,11211,27017"
    )]
    pub serving_probe_exclude_ports: Vec<u16>,

    /// Distinct objects (files, hosts...) reported one by one per process
    /// and signal; the rest are counted into one aggregate finding.
    #[arg(long, default_value_t = 64)]
    pub max_findings_per_signal: usize,

    /// Distinct objects reported one by one per user (uid) and signal in
    /// ten minutes, across the user's processes (who forks many processes
    /// is not many times the per-process cap); the rest are counted into
    /// one aggregate finding that names the uid and its busiest processes.
    /// Root (uid 0) has no per-user cap. Default: 4 × --max-findings-per-signal.
    #[arg(long)]
    pub max_findings_per_uid: Option<usize>,

    /// Most processes whose findings are remembered for deduplication; the
    /// least recently active are forgotten first.
    #[arg(long, default_value_t = 65_536)]
    pub max_tracked_processes: usize,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (off when not
    /// given; give a loopback address unless scrapers elsewhere need it).
    #[arg(long, env = "VIGIL_AGENT_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Log lines on stderr as human-readable text or one JSON object each
    /// (`timestamp`, `level`, `target`, `fields`), as the control plane's.
    #[arg(long, value_enum, env = "VIGIL_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Most MiB of findings the spool holds waiting for an ack; past it
    /// (or --spool-max-findings) the newest findings wait in memory and the
    /// agent reports spool-full.
    #[arg(long, env = "VIGIL_SPOOL_MAX_MIB", default_value_t = 256)]
    pub spool_max_mib: u64,

    /// Most findings the spool holds waiting for an ack.
    #[arg(long, env = "VIGIL_SPOOL_MAX_FINDINGS", default_value_t = 1_000_000)]
    pub spool_max_findings: u64,

    /// Free MiB the spool leaves on its file system: below it, it takes no
    /// finding (acks and the agent's state still need room).
    #[arg(long, default_value_t = 1)]
    pub spool_keep_free_mib: u64,

    /// Newest findings kept in memory while the spool is full; older ones
    /// are dropped and counted.
    #[arg(long, default_value_t = 4096)]
    pub spool_memory_findings: usize,

    /// The TPM 2.0 for remote attestation: `off`, `auto` (/dev/tpmrm0 when
    /// it exists, else none), `device:PATH`, or `swtpm:host=H,port=P` (a
    /// software TPM). Without one the agent enrolls no TPM and answers the
    /// control plane's attestation requests "no TPM configured".
    #[arg(
        long,
        global = true,
        env = "VIGIL_TPM",
        default_value = "auto",
        value_name = "TPM"
    )]
    pub tpm: TpmSelection,

    /// The firmware's TCG boot event log, sent with a quote when the
    /// control plane asks (when readable, and at most 1 MiB).
    #[arg(
        long,
        env = "VIGIL_TPM_EVENT_LOG",
        default_value = DEFAULT_BOOT_EVENT_LOG,
        value_name = "PATH"
    )]
    pub tpm_event_log: PathBuf,

    /// The kernel's IMA log, sent with a quote when the control plane asks
    /// (when readable, and at most 16 MiB).
    #[arg(
        long,
        env = "VIGIL_IMA_LOG",
        default_value = DEFAULT_IMA_LOG,
        value_name = "PATH"
    )]
    pub ima_log: PathBuf,

    /// The inference sidecar that serves approved models (default:
    /// `vigil-sidecar` next to this agent's executable). Its sha256 is
    /// taken at start: the agent's own approval names it.
    #[arg(long, env = "VIGIL_SIDECAR_BIN", value_name = "PATH")]
    pub sidecar_bin: Option<PathBuf>,

    /// ONNX Runtime's shared library (libonnxruntime.so) the sidecars load
    /// (default: the one scripts/install-deps.sh installs in the source
    /// tree, when it exists). Without one, sidecars are off and approved
    /// models are not served (said in the log and in a finding).
    #[arg(long, env = "VIGIL_ORT_LIB", value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,

    /// ONNX Runtime intra-op threads of each sidecar (default: its own).
    #[arg(long, value_name = "N")]
    pub sidecar_intra_threads: Option<u32>,

    /// Milliseconds between health checks of each sidecar: its model's
    /// store file (verified again when it changed), KServe ServerLive and
    /// ModelReady, the control socket's status.
    #[arg(long, default_value_t = 2000, value_name = "MS")]
    pub sidecar_health_interval_ms: u64,

    /// A sidecar's memory limit (its cgroup's memory.max) when its model
    /// record sets none, in MiB.
    #[arg(long, default_value_t = 2048, value_name = "MIB")]
    pub sidecar_memory_max_mib: u64,

    /// A directory besides `DATA_DIR/models` where a model record may put
    /// its sidecar's unix socket (`listen unix:DIR/NAME`, NAME a plain
    /// file name); repeat for more. It must be the agent's, writable by no
    /// one else, with no symbolic link on its path; a record naming any
    /// other path is refused.
    #[arg(long, value_name = "DIR", default_value = "/run/vigil")]
    pub sidecar_socket_dir: Vec<PathBuf>,

    /// How long a stopping sidecar has after SIGTERM before its cgroup is
    /// killed, in milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub sidecar_stop_grace_ms: u64,

    /// The sha256 PCRs the model store's key is sealed to, where the agent
    /// has a TPM (--tpm): when they change, the store cannot be read; a
    /// new key and store are made and the models fetched again.
    #[arg(long, default_value = "0-7", value_name = "PCRS")]
    pub model_store_pcrs: PcrList,
}

impl AgentConfig {
    /// The control plane's endpoints (`--control-plane a,b,c`: the nodes
    /// of a cluster, tried in turn).
    pub fn control_planes(&self) -> Vec<String> {
        vigil_proto::endpoint::split_endpoints(&self.control_plane)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_secs.max(1))
    }

    pub fn gpu_poll(&self) -> Duration {
        Duration::from_millis(self.gpu_poll_ms.max(10))
    }

    /// The spool's byte quota.
    pub fn spool_max_bytes(&self) -> u64 {
        self.spool_max_mib.saturating_mul(1 << 20)
    }

    /// Free space the spool leaves on its file system, in bytes.
    pub fn spool_keep_free_bytes(&self) -> u64 {
        self.spool_keep_free_mib.saturating_mul(1 << 20)
    }

    pub fn max_backoff(&self) -> Duration {
        Duration::from_secs(self.max_backoff_secs.max(1))
    }

    pub fn ebpf_options(&self) -> crate::sensors::EbpfOptions {
        crate::sensors::EbpfOptions {
            large_mapping_min: self.large_mapping_mib.saturating_mul(1 << 20),
            content_read: self.content_read_checks,
            library_checks: self.library_content_checks,
            stream_checks: self.stream_checks,
            ring_buffer_bytes: self.ring_buffer_kib.saturating_mul(1024),
            flood_drops_per_sec: self.sensor_flood_drops_per_sec,
        }
    }

    /// Where the measurement logs sent with quotes are.
    pub fn event_log_paths(&self) -> EventLogPaths {
        EventLogPaths {
            boot: self.tpm_event_log.clone(),
            ima: self.ima_log.clone(),
        }
    }

    pub fn resolved_agent_id(&self) -> String {
        if let Some(id) = self.agent_id.as_ref().filter(|s| !s.trim().is_empty()) {
            return id.trim().to_string();
        }
        if let Some(Ok(id)) = self.tls_cert.as_deref().map(certified_agent_id) {
            return id;
        }
        std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(hostname)
    }
}

/// The agent id a PEM certificate names (`spiffe://vigil/agent/<id>`).
pub fn certified_agent_id(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let info = vigil_pki::CertificateInfo::from_pem(&pem)
        .with_context(|| format!("{}", path.display()))?;
    match info.identity {
        Ok(vigil_pki::Identity::Agent { id }) => Ok(id),
        Ok(other) => anyhow::bail!(
            "{}: the certificate is for {other}, not an agent",
            path.display()
        ),
        Err(e) => anyhow::bail!("{}: {e}", path.display()),
    }
}

/// The agent's commands other than running.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgentCommand {
    /// Enrolls this host with a one-time join token: makes a key, sends a
    /// certificate request to the control plane (verified with --tls-ca)
    /// and writes agent.pem, agent.key (0600) and ca.pem to --out-dir.
    /// Example: vigilctl agent token | vigil-agent enroll --token-file -
    /// --control-plane https://cp1:7700 --tls-ca ca.pem
    Enroll {
        /// A file holding the token `vigilctl agent token` printed, or `-`
        /// for standard input. Prefer it (or VIGIL_JOIN_TOKEN) to --token:
        /// any local user can read a command line while it runs.
        #[arg(
            long,
            value_name = "FILE",
            conflicts_with = "token",
            required_unless_present = "token"
        )]
        token_file: Option<PathBuf>,
        /// The token itself (visible to local users in the process list
        /// while enrollment runs; see --token-file).
        #[arg(long, env = "VIGIL_JOIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Where to write the certificate and key (made 0700).
        #[arg(long, default_value = "/etc/vigil/tls")]
        out_dir: PathBuf,
    },
    /// Uses the TPM that --tpm names: seals and unseals small secrets to
    /// PCR values, writes a quote for other tools to check.
    Tpm {
        #[command(subcommand)]
        command: TpmCommand,
    },
}

/// `vigil-agent tpm ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum TpmCommand {
    /// Seals the content of a file (at most 128 bytes, e.g. a disk key) to
    /// the current values of sha256 PCRs: only this TPM, with those PCRs
    /// unchanged, can unseal it.
    /// Example: vigil-agent tpm seal --pcrs 0-7 --in key.bin --out key.sealed
    Seal {
        /// The sha256 PCRs to seal to: `0-7`, `0,1,2,7`...
        #[arg(long)]
        pcrs: PcrList,
        /// The secret.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the sealed secret.
        #[arg(long = "out", value_name = "SEALED")]
        output: PathBuf,
    },
    /// Unseals what `tpm seal` wrote, while the PCRs have the values it was
    /// sealed to, into a new file (mode 0600).
    Unseal {
        #[arg(long = "in", value_name = "SEALED")]
        input: PathBuf,
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
    },
    /// Makes an attestation key and quotes PCRs with a nonce; writes
    /// quote.msg (TPMS_ATTEST), quote.sig (TPMT_SIGNATURE), ak.pub
    /// (TPM2B_PUBLIC) and pcrs.bin (per PCR: u32 BE index, u16 BE length,
    /// digest) into --out-dir, for tpm2_checkquote and the like.
    Quote {
        /// The qualifying data, hex (at most 64 bytes).
        #[arg(long, value_name = "HEX")]
        nonce: String,
        /// The PCRs to quote: `0-7`, `0,1,2,7`...
        #[arg(long)]
        pcrs: PcrList,
        /// The PCR bank.
        #[arg(long, default_value = "sha256")]
        bank: PcrBank,
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_string())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn metrics_are_off_and_the_log_format_text_unless_asked() {
        let config = AgentConfig::try_parse_from(["vigil-agent"]).unwrap();
        if std::env::var_os("VIGIL_AGENT_METRICS_LISTEN").is_none() {
            assert_eq!(config.metrics_listen, None);
        }
        if std::env::var_os("VIGIL_LOG_FORMAT").is_none() {
            assert_eq!(config.log_format, LogFormat::Text);
        }
        let config = AgentConfig::try_parse_from([
            "vigil-agent",
            "--metrics-listen",
            "127.0.0.1:9465",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9465".parse().unwrap())
        );
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(AgentConfig::try_parse_from(["vigil-agent", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn the_tpm_flags_and_commands_parse() {
        let config = AgentConfig::try_parse_from(["vigil-agent"]).unwrap();
        if std::env::var_os("VIGIL_TPM").is_none() {
            assert_eq!(config.tpm, TpmSelection::Auto);
        }
        if std::env::var_os("VIGIL_TPM_EVENT_LOG").is_none()
            && std::env::var_os("VIGIL_IMA_LOG").is_none()
        {
            assert_eq!(config.event_log_paths(), EventLogPaths::default());
        }
        let config = AgentConfig::try_parse_from([
            "vigil-agent",
            "--tpm",
            "swtpm:host=127.0.0.1,port=2321",
            "--tpm-event-log",
            "/tmp/boot.log",
            "--ima-log",
            "/tmp/ima.log",
        ])
        .unwrap();
        assert_eq!(
            config.tpm,
            TpmSelection::Swtpm {
                host: "127.0.0.1".into(),
                port: 2321
            }
        );
        assert_eq!(
            config.event_log_paths().boot,
            PathBuf::from("/tmp/boot.log")
        );
        assert_eq!(config.event_log_paths().ima, PathBuf::from("/tmp/ima.log"));
        let e = AgentConfig::try_parse_from(["vigil-agent", "--tpm", "swtpm:port=1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no host"), "{e}");

        // --tpm after the subcommand, as `vigil-agent tpm seal --tpm ...`.
        let config = AgentConfig::try_parse_from([
            "vigil-agent",
            "tpm",
            "seal",
            "--pcrs",
            "0,1,2,3,4,5,6,7",
            "--in",
            "key.bin",
            "--out",
            "key.sealed",
            "--tpm",
            "device:/dev/tpm0",
        ])
        .unwrap();
        assert_eq!(config.tpm, TpmSelection::Device("/dev/tpm0".into()));
        let Some(AgentCommand::Tpm {
            command:
                TpmCommand::Seal {
                    pcrs,
                    input,
                    output,
                },
        }) = config.command
        else {
            panic!("not tpm seal: {:?}", config.command);
        };
        assert_eq!(pcrs, "0-7".parse().unwrap());
        assert_eq!(
            (input, output),
            (PathBuf::from("key.bin"), PathBuf::from("key.sealed"))
        );
        let config = AgentConfig::try_parse_from([
            "vigil-agent",
            "tpm",
            "quote",
            "--nonce",
            "00ff",
            "--pcrs",
            "0-7",
            "--out-dir",
            "q",
        ])
        .unwrap();
        assert!(matches!(
            config.command,
            Some(AgentCommand::Tpm {
                command: TpmCommand::Quote {
                    bank: PcrBank::Sha256,
                    ..
                }
            })
        ));
        let e = AgentConfig::try_parse_from(["vigil-agent", "tpm", "unseal", "--in", "a"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--out"), "{e}");
        let e = AgentConfig::try_parse_from([
            "vigil-agent",
            "tpm",
            "seal",
            "--pcrs",
            "0-30",
            "--in",
            "a",
            "--out",
            "b",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("PCR 30 is out of range"), "{e}");
    }
}
