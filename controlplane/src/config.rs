//! Control plane configuration: command-line flags, each also settable by environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use vigil_observability::LogFormat;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "vigil-controlplane",
    version,
    about = "vigil control plane: policy, agents, alerts and audit on openraft + sled"
)]
pub struct ControlPlaneConfig {
    /// This node's raft id (1 for a single-node cluster).
    #[arg(long, env = "VIGIL_NODE_ID", default_value_t = 1)]
    pub node_id: u64,

    /// gRPC listen address (agents, vigilctl, SIEM). Loopback unless configured.
    #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,

    /// A listener for agents alone (AgentService: streams and enrollment).
    /// When given, --listen serves operators (admin, SIEM) only, so each
    /// can be firewalled on its own; when not, --listen serves both.
    #[arg(long, env = "VIGIL_AGENT_LISTEN", value_name = "ADDR")]
    pub agent_listen: Option<SocketAddr>,

    /// Where the other nodes reach this one (raft traffic, and what a join
    /// records): host:port. Defaults to the --listen address, which is
    /// right unless that is a wildcard (0.0.0.0) or behind NAT.
    #[arg(long, env = "VIGIL_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<SocketAddr>,

    /// Join the cluster a node at PEER (host:port) belongs to, instead of
    /// starting a cluster of one: on first start this node asks to be
    /// added (as a learner, then a voter once it has caught up) and never
    /// makes a cluster of its own. With mutual TLS its certificate must
    /// name its raft id (`vigilctl ca issue --node ID`). A node that is
    /// already a member ignores it.
    #[arg(long, env = "VIGIL_JOIN", value_name = "PEER")]
    pub join: Option<String>,

    /// Directory for the raft log and state machine.
    #[arg(
        long,
        env = "VIGIL_CP_DATA_DIR",
        default_value = "./.vigil/controlplane"
    )]
    pub data_dir: PathBuf,

    /// Public key (hex ed25519) whose policy bundles may be pushed
    /// (repeatable; `vigilctl policy keygen` prints one).
    #[arg(
        long = "trusted-policy-key",
        env = "VIGIL_TRUSTED_POLICY_KEYS",
        value_delimiter = ','
    )]
    pub trusted_policy_keys: Vec<String>,

    /// Serve Prometheus metrics at `http://ADDR/metrics` (off when not
    /// given; give a loopback address unless scrapers elsewhere need it).
    #[arg(long, env = "VIGIL_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve the SOC dashboard (pages and their JSON API) at ADDR (off
    /// when not given). HTTPS with --tls-cert and --tls-key; without them
    /// plaintext, on a loopback address only unless --allow-plaintext.
    #[arg(long, env = "VIGIL_DASHBOARD_LISTEN", value_name = "ADDR")]
    pub dashboard_listen: Option<SocketAddr>,

    /// Seconds a dashboard session may go unused (30 minutes).
    #[arg(long, hide = true, default_value_t = 30 * 60)]
    pub dashboard_idle_secs: u64,

    /// Seconds a dashboard session lasts at most (12 hours).
    #[arg(long, hide = true, default_value_t = 12 * 3600)]
    pub dashboard_absolute_secs: u64,

    /// The fleet's CA certificate (PEM). With --tls-cert and --tls-key,
    /// the gRPC listener takes only mutual-TLS peers whose certificates
    /// chain to it, and each RPC is authorised by the identity and role
    /// the certificate names. Without them the listener is plaintext and
    /// unauthenticated: a lab only (the control plane warns at start).
    #[arg(long, env = "VIGIL_TLS_CA", value_name = "PEM", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,

    /// This node's certificate (PEM; `vigilctl ca issue --node ID`).
    #[arg(long, env = "VIGIL_TLS_CERT", value_name = "PEM", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,

    /// This node's private key (PEM).
    #[arg(long, env = "VIGIL_TLS_KEY", value_name = "PEM", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,

    /// The fleet CA's private key (PEM; or an intermediate CA's, with its
    /// certificate as --tls-ca): with it this node enrolls agents that
    /// present a join token (`vigilctl agent token create`), and a peer
    /// without a certificate may complete the TLS handshake to enroll
    /// (and call nothing else).
    #[arg(
        long,
        env = "VIGIL_TLS_CA_KEY",
        value_name = "PEM",
        requires = "tls_ca"
    )]
    pub tls_ca_key: Option<PathBuf>,

    /// Serve plaintext, unauthenticated gRPC on a non-loopback address
    /// (without --tls-* the control plane refuses to, since anyone who
    /// reaches it could pose as any agent and push policy). A lab only.
    #[arg(long, env = "VIGIL_ALLOW_PLAINTEXT")]
    pub allow_plaintext: bool,

    /// Accept workload approvals that no trusted key signed, when no
    /// --trusted-policy-key is configured (without it they are refused:
    /// an approval decides what may run AI). A lab only.
    #[arg(long, env = "VIGIL_ALLOW_UNSIGNED")]
    pub allow_unsigned: bool,

    /// Days an enrolled agent's certificate is valid.
    #[arg(long, env = "VIGIL_ENROLL_CERT_DAYS", default_value_t = 30)]
    pub enroll_cert_days: u32,

    /// Give every agent heartbeat and finding batch a raft entry of its
    /// own instead of letting those that arrive together share one (for
    /// the benchmark that compares the two).
    #[arg(long, hide = true)]
    pub no_write_coalescing: bool,

    /// Alerts the cluster keeps at most; the oldest beyond go (0: no limit).
    /// Export them to a SIEM for longer keeping.
    #[arg(long, env = "VIGIL_ALERT_RETENTION_COUNT", default_value_t = 1_000_000)]
    pub alert_retention_count: u64,

    /// Days an alert is kept (0: no limit).
    #[arg(long, env = "VIGIL_ALERT_RETENTION_DAYS", default_value_t = 90)]
    pub alert_retention_days: u64,

    /// Seconds between the leader's retention runs.
    #[arg(long, hide = true, default_value_t = 60)]
    pub alert_retention_every_secs: u64,

    /// Entries between snapshots of the replicated state; the log is
    /// purged behind each (but for the last 1,000).
    #[arg(long, env = "VIGIL_SNAPSHOT_EVERY", default_value_t = 20_000)]
    pub snapshot_every: u64,

    /// MiB kept free on the data directory's file system: below them the
    /// node refuses new writes (agents keep theirs spooled) and says
    /// NOT_SERVING, and takes writes again once space is freed; sled is
    /// not trusted to come back from a disk that filled (0: none kept).
    #[arg(long, env = "VIGIL_MIN_FREE_DISK_MIB", default_value_t = 128)]
    pub min_free_disk_mib: u64,

    /// The largest model file (MiB) an upload may store, or this node
    /// pull from another member.
    #[arg(long, env = "VIGIL_MAX_MODEL_MIB", default_value_t = 4096)]
    pub max_model_mib: u64,

    /// PEM file of TPM manufacturer CA certificates (roots, and the
    /// intermediates under them) that agents' EK certificates must chain
    /// to (repeatable). With one, agents with a TPM are attested; without,
    /// attestation is off.
    #[arg(long = "tpm-ca", env = "VIGIL_TPM_CA", value_delimiter = ',')]
    pub tpm_ca: Vec<PathBuf>,

    /// Seconds between quotes of each agent; a host that stops answering
    /// is untrusted within two of them.
    #[arg(long, env = "VIGIL_ATTEST_INTERVAL_SECS", default_value_t = 10)]
    pub attest_interval_secs: u64,

    /// The sha256 PCRs quoted: a list and ranges ("0-7", "0-7,10" with IMA).
    #[arg(long, env = "VIGIL_ATTEST_PCRS", default_value = "0-7", value_parser = parse_pcr_list)]
    pub attest_pcrs: PcrList,

    /// Hosts without a verified TPM get no approved workloads (without it,
    /// only hosts whose attestation failed lose them).
    #[arg(long, env = "VIGIL_REQUIRE_ATTESTATION")]
    pub require_attestation: bool,

    /// Log lines on stderr as human-readable text or one JSON object each.
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// PCR indexes, ascending, no repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrList(pub Vec<u8>);

/// "0-7,10" → [0..=7, 10]; each PCR 0 to 23.
pub fn parse_pcr_list(s: &str) -> Result<PcrList, String> {
    let mut out = std::collections::BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let pcr = |t: &str| -> Result<u8, String> {
            t.trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p < 24)
                .ok_or_else(|| format!("{t:?} in {s:?} is not a PCR (0 to 23)"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (pcr(a)?, pcr(b)?);
                if a > b {
                    return Err(format!("{part:?} in {s:?}: the range runs backwards"));
                }
                out.extend(a..=b);
            }
            None => {
                out.insert(pcr(part)?);
            }
        }
    }
    if out.is_empty() {
        return Err(format!("{s:?} names no PCR"));
    }
    Ok(PcrList(out.into_iter().collect()))
}

impl ControlPlaneConfig {
    /// The verifier the flags ask for (None: no --tpm-ca, attestation off).
    pub fn verifier(&self) -> anyhow::Result<Option<std::sync::Arc<crate::attestation::Verifier>>> {
        if self.tpm_ca.is_empty() {
            return Ok(None);
        }
        let roots = crate::attestation::tpm_roots::TpmRoots::load(&self.tpm_ca)?;
        if roots.roots.is_empty() {
            anyhow::bail!(
                "--tpm-ca: no self-signed root certificate among {:?}: a chain must end at a root",
                self.tpm_ca
            );
        }
        let verifier = crate::attestation::Verifier::new(crate::attestation::VerifierConfig {
            roots: roots.roots,
            intermediates: roots.intermediates,
            pcrs: self.attest_pcrs.0.clone(),
            interval: std::time::Duration::from_secs(self.attest_interval_secs.max(1)),
            require_attestation: self.require_attestation,
        })
        .map_err(|e| anyhow::anyhow!("--attest-pcrs: {e}"))?;
        Ok(Some(std::sync::Arc::new(verifier)))
    }

    /// The alert retention the flags ask for.
    pub fn alert_retention(&self) -> crate::alert_retention::AlertRetention {
        crate::alert_retention::AlertRetention {
            keep_at_most: self.alert_retention_count,
            max_age: (self.alert_retention_days > 0).then(|| {
                std::time::Duration::from_secs(self.alert_retention_days.saturating_mul(86_400))
            }),
            every: std::time::Duration::from_secs(self.alert_retention_every_secs.max(1)),
        }
    }

    /// The dashboard's limits, with the session lifetimes the flags give.
    pub fn dashboard_settings(&self) -> crate::dashboard::DashboardSettings {
        crate::dashboard::DashboardSettings {
            idle_timeout: std::time::Duration::from_secs(self.dashboard_idle_secs.max(1)),
            absolute_timeout: std::time::Duration::from_secs(self.dashboard_absolute_secs.max(1)),
            ..Default::default()
        }
    }

    /// The TLS files, when all three are given.
    pub fn tls_files(&self) -> Option<crate::mtls::TlsFiles> {
        Some(crate::mtls::TlsFiles {
            ca: self.tls_ca.clone()?,
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn pcr_lists_take_ranges_and_refuse_what_is_no_pcr() {
        assert_eq!(
            parse_pcr_list("0-7").unwrap().0,
            (0..=7).collect::<Vec<u8>>()
        );
        assert_eq!(parse_pcr_list("10, 0-2,1").unwrap().0, vec![0, 1, 2, 10]);
        for bad in ["", "24", "7-3", "x", "-1"] {
            assert!(parse_pcr_list(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn metrics_are_off_and_logs_are_text_unless_asked() {
        let config = ControlPlaneConfig::try_parse_from(["vigil-controlplane"]).unwrap();
        if std::env::var_os("VIGIL_METRICS_LISTEN").is_none() {
            assert_eq!(config.metrics_listen, None);
        }
        if std::env::var_os("VIGIL_LOG_FORMAT").is_none() {
            assert_eq!(config.log_format, LogFormat::Text);
        }
        let config = ControlPlaneConfig::try_parse_from([
            "vigil-controlplane",
            "--metrics-listen",
            "127.0.0.1:9464",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(
            ControlPlaneConfig::try_parse_from(["vigil-controlplane", "--log-format", "xml"])
                .is_err()
        );
    }
}
