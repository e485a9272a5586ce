//! `vigilctl alerts`: the alert log, filtered, once or followed.
//!
//! Filters run here, on what the control plane sends: the AdminService
//! pages alerts by index only, and one scan of the log per request on the
//! server would cost as much as paging it here.

use anyhow::Context;
use clap::{Args, ValueEnum};
use vigil_domain::{Alert, Severity, SignalKind};
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{connect, refused, AdminClient};
use crate::exit_code::ExitCode;
use crate::output::{OutputArgs, OutputFormat};
use crate::render::timestamp;
use crate::terminal_text::escape_controls;

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:
  vigilctl alerts --severity high --since 10m
  vigilctl alerts --host gpu-node-3 --signal gpu_use -o json
  vigilctl alerts --follow --json
  vigilctl alerts ack 42"
)]
pub struct AlertsArgs {
    /// Triage one alert instead of listing (analyst).
    #[command(subcommand)]
    triage: Option<crate::alert_triage::TriageCommand>,
    /// Only alerts after this index.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many alerts (that pass the filters), without --follow.
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// Keep the stream open and print alerts as they arrive (table or jsonl).
    #[arg(long, short)]
    follow: bool,
    /// Only alerts of this severity or worse.
    #[arg(long, value_enum)]
    severity: Option<SeverityArg>,
    /// Only alerts from this host (hostname or agent id; repeatable).
    #[arg(long)]
    host: Vec<String>,
    /// Only alerts of this signal (repeatable).
    #[arg(long, value_enum)]
    signal: Vec<SignalArg>,
    /// Only alerts observed at or after this time: RFC 3339
    /// (2026-01-02T03:04:05Z) or a duration back from now (90s, 10m, 2h, 1d).
    #[arg(long, value_parser = parse_since)]
    since: Option<Since>,
    #[command(flatten)]
    output: OutputArgs,
}

/// Severity names as the rules and alerts spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub(crate) enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

/// Signal names as the rules and alerts spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub(crate) enum SignalArg {
    ModelFile,
    AiRuntime,
    GpuDevice,
    AiEgress,
    AiServing,
    GpuUse,
    Policy,
    ModelRisk,
    Attestation,
    Sidecar,
}

impl From<SignalArg> for SignalKind {
    fn from(s: SignalArg) -> Self {
        match s {
            SignalArg::ModelFile => SignalKind::ModelFile,
            SignalArg::AiRuntime => SignalKind::AiRuntime,
            SignalArg::GpuDevice => SignalKind::GpuDevice,
            SignalArg::AiEgress => SignalKind::AiEgress,
            SignalArg::AiServing => SignalKind::AiServing,
            SignalArg::GpuUse => SignalKind::GpuUse,
            SignalArg::Policy => SignalKind::Policy,
            SignalArg::ModelRisk => SignalKind::ModelRisk,
            SignalArg::Attestation => SignalKind::Attestation,
            SignalArg::Sidecar => SignalKind::Sidecar,
        }
    }
}

/// `--since`: a point in time, or how far back from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Since {
    At { unix_nanos: i64 },
    Ago { nanos: i64 },
}

impl Since {
    fn unix_nanos(self, now: i64) -> i64 {
        match self {
            Since::At { unix_nanos } => unix_nanos,
            Since::Ago { nanos } => now.saturating_sub(nanos),
        }
    }
}

fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(at) = text.parse::<jiff::Timestamp>() {
        let unix_nanos = i64::try_from(at.as_nanosecond())
            .map_err(|_| format!("{text:?} is too far from 1970"))?;
        return Ok(Since::At { unix_nanos });
    }
    let span = text.parse::<jiff::Span>().map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor a duration (10m, 2h, 1d)")
    })?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("{text:?}: {e}"))?;
    if duration.is_negative() {
        return Err(format!(
            "{text:?}: a duration back from now must not be negative"
        ));
    }
    let nanos = i64::try_from(duration.as_nanos()).map_err(|_| format!("{text:?} is too long"))?;
    Ok(Since::Ago { nanos })
}

/// Which alerts to print.
#[derive(Debug, Default)]
struct AlertFilter {
    min_severity: Option<Severity>,
    hosts: Vec<String>,
    signals: Vec<SignalKind>,
    since_unix_nanos: Option<i64>,
}

impl AlertFilter {
    fn new(args: &AlertsArgs, now: i64) -> Self {
        Self {
            min_severity: args.severity.map(Into::into),
            hosts: args.host.clone(),
            signals: args.signal.iter().copied().map(Into::into).collect(),
            since_unix_nanos: args.since.map(|s| s.unix_nanos(now)),
        }
    }

    fn is_empty(&self) -> bool {
        self.min_severity.is_none()
            && self.hosts.is_empty()
            && self.signals.is_empty()
            && self.since_unix_nanos.is_none()
    }

    fn matches(&self, a: &Alert) -> bool {
        let f = &a.finding;
        self.min_severity.is_none_or(|min| f.severity >= min)
            && (self.hosts.is_empty()
                || self
                    .hosts
                    .iter()
                    .any(|h| *h == a.hostname || *h == a.agent_id))
            && (self.signals.is_empty() || self.signals.contains(&f.signal))
            && self
                .since_unix_nanos
                .is_none_or(|since| f.observed_at_unix_nanos >= since)
    }
}

/// One alert as a line of text; every host-supplied part escaped.
pub fn alert_line(a: &Alert) -> String {
    let f = &a.finding;
    let mut line = format!(
        "#{:<5} {} {:<8} {:<12} {} pid={} exe={} object={} cmd=[{}]",
        a.index,
        timestamp(f.observed_at_unix_nanos),
        f.severity.as_str(),
        escape_controls(&a.hostname),
        f.signal.as_str(),
        f.process.pid,
        escape_controls(&f.process.exe),
        escape_controls(&f.object()),
        escape_controls(&f.process.cmdline())
    );
    if let Some(m) = f.file.as_ref().and_then(|o| o.model.as_ref()) {
        line.push_str(&format!(
            " model=[{}] risk={} sha256={} structure={}",
            escape_controls(&m.describe()),
            m.risk.as_str(),
            short(&m.sha256),
            short(&m.structure_fingerprint)
        ));
        if !m.dangerous_imports.is_empty() {
            line.push_str(&format!(
                " imports=[{}]",
                escape_controls(&m.dangerous_imports.join(","))
            ));
        }
    }
    line
}

/// The first 16 hex digits of a digest ("-" for none).
fn short(digest: &str) -> String {
    if digest.is_empty() {
        return "-".into();
    }
    escape_controls(digest.get(..16).unwrap_or(digest)).into_owned()
}

/// Where alerts go as they arrive: printed at once, or gathered for one
/// JSON document.
enum AlertSink {
    Table,
    Jsonl,
    Json(Vec<Alert>),
}

impl AlertSink {
    fn new(format: OutputFormat) -> Self {
        match format {
            OutputFormat::Table => AlertSink::Table,
            OutputFormat::Jsonl => AlertSink::Jsonl,
            OutputFormat::Json => AlertSink::Json(Vec::new()),
        }
    }

    fn push(&mut self, alert: Alert) -> anyhow::Result<()> {
        match self {
            AlertSink::Table => println!("{}", alert_line(&alert)),
            AlertSink::Jsonl => println!("{}", serde_json::to_string(&alert)?),
            AlertSink::Json(all) => all.push(alert),
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        if let AlertSink::Json(all) = self {
            println!("{}", serde_json::to_string(&all)?);
        }
        Ok(())
    }
}

fn domain_alert(wire: vigil_proto::types::v1::Alert) -> anyhow::Result<Alert> {
    Alert::try_from(wire).context("the control plane sent a malformed alert")
}

/// Checks the arguments clap cannot, then asks the control plane.
pub async fn run(
    endpoint: &crate::control_plane::ControlPlaneArgs,
    mut args: AlertsArgs,
) -> anyhow::Result<()> {
    if let Some(command) = args.triage.take() {
        return crate::alert_triage::run(&mut connect(endpoint).await?, command).await;
    }
    let format = args.output.format(OutputFormat::Jsonl);
    if args.follow && format == OutputFormat::Json {
        return Err(ExitCode::Usage.error(
            "--follow prints alerts as they arrive: use -o jsonl (or --json), not -o json",
        ));
    }
    print_alerts(&mut connect(endpoint).await?, args, format).await
}

async fn print_alerts(
    client: &mut AdminClient,
    args: AlertsArgs,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let filter = AlertFilter::new(&args, crate::render::now_unix_nanos());
    let mut sink = AlertSink::new(format);
    if args.follow {
        let req = pb::QueryAlertsRequest {
            after_index: args.after,
            limit: 0,
        };
        let mut stream = client
            .follow_alerts(req)
            .await
            .map_err(refused)?
            .into_inner();
        while let Some(wire) = stream.message().await.map_err(refused)? {
            let alert = domain_alert(wire)?;
            if filter.matches(&alert) {
                sink.push(alert)?;
            }
        }
        return sink.finish();
    }
    // Page through: one response stays far below gRPC's 4 MiB limit.
    const PAGE: u32 = 500;
    let (mut after, mut left) = (args.after, args.limit);
    while left > 0 {
        // Unfiltered, ask for no more than is left to print.
        let ask = if filter.is_empty() {
            left.min(PAGE)
        } else {
            PAGE
        };
        let page = client
            .query_alerts(pb::QueryAlertsRequest {
                after_index: after,
                limit: ask,
            })
            .await
            .map_err(refused)?
            .into_inner()
            .alerts;
        let n = page.len() as u32;
        for wire in page {
            let alert = domain_alert(wire)?;
            after = alert.index;
            if left > 0 && filter.matches(&alert) {
                sink.push(alert)?;
                left -= 1;
            }
        }
        if n < ask {
            break;
        }
    }
    sink.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_domain::{FileObject, Finding, ProcessInfo};

    fn alert(index: u64, severity: Severity, signal: SignalKind, host: &str, at: i64) -> Alert {
        Alert {
            index,
            agent_id: format!("id-{host}"),
            hostname: host.into(),
            received_at_unix_nanos: at,
            finding: Finding {
                seq: index,
                rule_id: "r".into(),
                severity,
                signal,
                observed_at_unix_nanos: at,
                process: ProcessInfo {
                    pid: 7,
                    exe: "/usr/bin/python3".into(),
                    argv: vec!["python3".into(), "/m.onnx".into()],
                    ..Default::default()
                },
                file: Some(FileObject::at("/m.onnx")),
                net: None,
                gpu: None,
                action: String::new(),
                summary: String::new(),
            },
        }
    }

    #[test]
    fn a_model_findings_line_names_the_model_its_risk_and_digests() {
        let mut a = alert(3, Severity::Critical, SignalKind::ModelRisk, "h1", 1);
        a.finding.file = Some(FileObject {
            path: "/m/evil.pt".into(),
            model: Some(Box::new(vigil_domain::ModelIdentity {
                format: "pytorch-zip".into(),
                architecture: "\x1b[2Jllama".into(),
                size_label: "7B".into(),
                sha256: "ab".repeat(32),
                structure_fingerprint: "cd".repeat(32),
                risk: vigil_domain::ModelRisk::Dangerous,
                dangerous_imports: vec!["os.system".into()],
                ..Default::default()
            })),
        });
        let line = alert_line(&a);
        assert!(line.contains(" model_risk "), "{line}");
        assert!(
            line.ends_with(
                " model=[\\x1b[2Jllama 7B (pytorch-zip)] risk=dangerous sha256=abababababababab structure=cdcdcdcdcdcdcdcd imports=[os.system]"
            ),
            "{line}"
        );
    }

    fn args(cli: &[&str]) -> AlertsArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            alerts: AlertsArgs,
        }
        let argv = std::iter::once("alerts").chain(cli.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().alerts
    }

    #[test]
    fn filters_combine_severity_host_signal_and_time() {
        let now = 100 * 60 * 1_000_000_000;
        let filter = AlertFilter::new(
            &args(&[
                "--severity",
                "high",
                "--host",
                "h1",
                "--signal",
                "model_file",
                "--since",
                "10m",
            ]),
            now,
        );
        let recent = now - 60 * 1_000_000_000;
        assert!(filter.matches(&alert(
            1,
            Severity::High,
            SignalKind::ModelFile,
            "h1",
            recent
        )));
        assert!(filter.matches(&alert(
            1,
            Severity::Critical,
            SignalKind::ModelFile,
            "h1",
            recent
        )));
        assert!(!filter.matches(&alert(
            1,
            Severity::Medium,
            SignalKind::ModelFile,
            "h1",
            recent
        )));
        assert!(!filter.matches(&alert(1, Severity::High, SignalKind::GpuUse, "h1", recent)));
        assert!(!filter.matches(&alert(
            1,
            Severity::High,
            SignalKind::ModelFile,
            "h2",
            recent
        )));
        assert!(!filter.matches(&alert(1, Severity::High, SignalKind::ModelFile, "h1", 0)));
        // A host filter takes the agent id too.
        let by_id = AlertFilter::new(&args(&["--host", "id-h2"]), now);
        assert!(by_id.matches(&alert(1, Severity::Info, SignalKind::Policy, "h2", 0)));
        assert!(AlertFilter::default().matches(&alert(
            1,
            Severity::Info,
            SignalKind::Policy,
            "h",
            0
        )));
    }

    #[test]
    fn since_takes_rfc3339_or_a_duration_and_refuses_the_rest() {
        assert_eq!(
            parse_since("2026-01-02T03:04:05Z"),
            Ok(Since::At {
                unix_nanos: 1_767_323_045_000_000_000
            })
        );
        assert_eq!(
            parse_since("10m"),
            Ok(Since::Ago {
                nanos: 600_000_000_000
            })
        );
        assert_eq!(
            parse_since("1d").map(|s| s.unix_nanos(100_000_000_000_000)),
            Ok(100_000_000_000_000 - 86_400_000_000_000)
        );
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("-5m").is_err());
    }

    #[test]
    fn unknown_filter_values_are_usage_errors() {
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(flatten)]
            alerts: AlertsArgs,
        }
        for bad in [
            &["--severity", "urgent"][..],
            &["--signal", "model-files"],
            &["--since", "last tuesday"],
            &["--json", "-o", "table"],
        ] {
            let argv = std::iter::once("alerts").chain(bad.iter().copied());
            let e = <Cli as clap::Parser>::try_parse_from(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_line_escapes_what_the_host_chose() {
        let mut a = alert(3, Severity::High, SignalKind::ModelFile, "h\x1b[2J", 0);
        a.finding.process.argv = vec!["evil\x1b]0;pwned\x07".into(), "x\ry".into()];
        let line = alert_line(&a);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.contains("cmd=[evil\\x1b]0;pwned\\x07 x\\ry]"),
            "{line}"
        );
        assert!(line.contains("h\\x1b[2J"), "{line}");
        // JSON keeps the real bytes, escaped by serde_json.
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("evil\\u001b]0;pwned\\u0007"), "{json}");
    }
}
