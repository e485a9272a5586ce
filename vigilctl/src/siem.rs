//! `vigilctl siem`: the SIEM export (`SiemExport/Subscribe`) from the
//! command line.
//!
//! `tail` prints every committed event after a cursor (findings,
//! enforcements, policy and approval changes, attestation verdicts, audit
//! entries) in the one order the control plane assigned, filtered on the
//! server. Without `--follow` it stops once it has passed the newest event
//! committed when it started; with it, it keeps waiting for new ones.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use vigil_domain::EventKind;
use vigil_proto::siem::v1 as pb;
use vigil_proto::siem::v1::siem_export_client::SiemExportClient;

use crate::alerts::{SeverityArg, SignalArg};
use crate::control_plane::{connect_channel, refused, ControlPlaneArgs};
use crate::render::timestamp;
use crate::terminal_text::escape_controls;

#[derive(Debug, Subcommand)]
pub enum SiemCommand {
    /// Print the control plane's events after a cursor, in order: one OCSF
    /// JSON object a line with --json.
    Tail(TailArgs),
    /// Forward every event after a saved cursor to an OpenTelemetry
    /// collector as OTLP logs over gRPC, for ever: batched, retried with
    /// backoff, the cursor saved once the collector acknowledged.
    Otlp(OtlpCommandArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "Output (--json): one object a line,
  {\"cursor\":N,\"kind\":\"finding\",\"time_unix_nanos\":T,\"ocsf\":{...}}
where kind is finding, enforcement, policy_change, approval_change,
attestation or audit, and ocsf the event as OCSF 1.1 JSON. Resume with
--from the last cursor processed. A cursor older than retention kept is
refused naming the oldest cursor to resume from; one beyond the newest event
waits for it (said on stderr).

Examples:
  vigilctl siem tail --json
  vigilctl siem tail --from 1200 --follow --json --kind finding --min-severity high
  vigilctl siem tail --kind policy_change --kind approval_change --host gpu-node-3")]
pub struct TailArgs {
    /// Start after this cursor (the last one processed); 0 starts at the oldest event kept.
    #[arg(long = "from", value_name = "CURSOR", default_value_t = 0)]
    from: u64,
    /// Keep the stream open and print new events as they are committed; without it, stop once past the newest event committed at the start.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    filters: FilterArgs,
    /// One JSON object a line (cursor, kind, time, OCSF event) instead of text.
    #[arg(long)]
    json: bool,
    /// Stop after this many events (0: no limit).
    #[arg(long, default_value_t = 0)]
    limit: u64,
}

/// The server-side filters, shared by `tail` and `otlp`.
#[derive(Debug, Clone, Args)]
pub struct FilterArgs {
    /// Only events of this kind (repeatable).
    #[arg(long, value_enum)]
    kind: Vec<KindArg>,
    /// Only events of this severity or worse (events that are not alerts are info).
    #[arg(long, value_enum)]
    min_severity: Option<SeverityArg>,
    /// Only events about this host: a hostname or agent id (repeatable; events about no host, such as policy changes, are then left out).
    #[arg(long)]
    host: Vec<String>,
    /// Only alerts with this rule id (repeatable).
    #[arg(long)]
    rule: Vec<String>,
    /// Only alerts of this signal (repeatable).
    #[arg(long, value_enum)]
    signal: Vec<SignalArg>,
}

/// `vigilctl siem otlp`: the filters and where to push.
#[derive(Debug, Args)]
#[command(
    after_help = "Runs until SIGINT or SIGTERM. Each event becomes one OTLP log record:
the OCSF JSON as its body; vigil.cursor, vigil.kind and ocsf.class_uid as
attributes; the OCSF severity as its severity number. The cursor file only
ever names an event the collector acknowledged, so a restart (even after
kill -9) sends again at most the batches acknowledged since its last write,
and never skips one: at least once.

Examples:
  vigilctl siem otlp --collector http://otel-collector:4317 --cursor-file /var/lib/vigil/otlp.cursor
  vigilctl --control-plane https://cp1:7700,https://cp2:7700 --tls-ca ca.pem --tls-cert reader.pem \\
      --tls-key reader.key siem otlp --collector http://127.0.0.1:4317 --cursor-file otlp.cursor --min-severity high"
)]
pub struct OtlpCommandArgs {
    #[command(flatten)]
    filters: FilterArgs,
    #[command(flatten)]
    otlp: crate::siem_otlp::OtlpArgs,
}

/// Event kinds as the export names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
enum KindArg {
    Finding,
    Enforcement,
    PolicyChange,
    ApprovalChange,
    Attestation,
    Audit,
}

impl From<KindArg> for EventKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Finding => EventKind::Finding,
            KindArg::Enforcement => EventKind::Enforcement,
            KindArg::PolicyChange => EventKind::PolicyChange,
            KindArg::ApprovalChange => EventKind::ApprovalChange,
            KindArg::Attestation => EventKind::Attestation,
            KindArg::Audit => EventKind::Audit,
        }
    }
}

pub async fn run(target: &ControlPlaneArgs, command: SiemCommand) -> anyhow::Result<()> {
    match command {
        SiemCommand::Tail(args) => tail(target, args).await,
        SiemCommand::Otlp(args) => {
            crate::siem_otlp::run(target, args.otlp, args.filters.subscription()).await
        }
    }
}

fn request(args: &TailArgs) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        cursor: args.from,
        stop_at_head: !args.follow,
        ..args.filters.subscription()
    }
}

impl FilterArgs {
    /// A subscription from cursor 0 with these filters.
    pub fn subscription(&self) -> pb::SubscribeRequest {
        use vigil_proto::types::v1 as types;
        pb::SubscribeRequest {
            cursor: 0,
            min_severity: self.min_severity.map_or(0, |s| {
                types::Severity::from(vigil_domain::Severity::from(s)).into()
            }),
            kinds: self
                .kind
                .iter()
                .map(|k| pb::EventKind::from(EventKind::from(*k)).into())
                .collect(),
            hosts: self.host.clone(),
            rules: self.rule.clone(),
            signals: self
                .signal
                .iter()
                .map(|s| types::SignalKind::from(vigil_domain::SignalKind::from(*s)).into())
                .collect(),
            include_record: false,
            stop_at_head: false,
        }
    }
}

/// One `--json` line.
#[derive(serde::Serialize)]
struct JsonLine<'a> {
    cursor: u64,
    kind: &'a str,
    time_unix_nanos: i64,
    ocsf: serde_json::Value,
}

fn kind_name(raw: i32) -> &'static str {
    vigil_proto::event_kind_from_wire("kind", raw).map_or("unknown", EventKind::as_str)
}

/// One event as a line of JSON.
fn json_line(e: &pb::SiemEvent) -> anyhow::Result<String> {
    let ocsf: serde_json::Value = serde_json::from_str(&e.ocsf_json).map_err(|err| {
        anyhow::anyhow!(
            "event {}: the control plane sent OCSF that is not JSON: {err}",
            e.cursor
        )
    })?;
    Ok(serde_json::to_string(&JsonLine {
        cursor: e.cursor,
        kind: kind_name(e.kind),
        time_unix_nanos: e.time_unix_nanos,
        ocsf,
    })?)
}

/// One event as a line of text: cursor, time, kind, and the OCSF message
/// (host-supplied text escaped).
fn text_line(e: &pb::SiemEvent) -> String {
    let ocsf: serde_json::Value = serde_json::from_str(&e.ocsf_json).unwrap_or_default();
    let text = |key: &str| ocsf.get(key).and_then(|v| v.as_str()).unwrap_or("");
    let message = match text("message") {
        "" => text("class_name"),
        m => m,
    };
    format!(
        "#{:<6} {} {:<15} {}",
        e.cursor,
        timestamp(e.time_unix_nanos),
        kind_name(e.kind),
        escape_controls(message)
    )
}

async fn tail(target: &ControlPlaneArgs, args: TailArgs) -> anyhow::Result<()> {
    let mut client = SiemExportClient::new(connect_channel(target).await?)
        .max_decoding_message_size(16 * 1024 * 1024);
    let response = client.subscribe(request(&args)).await.map_err(refused)?;
    let header = |name: &str| {
        response
            .metadata()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    if header("vigil-cursor-state") == "ahead" {
        eprintln!(
            "vigilctl: cursor {} is beyond the newest event this node has ({}); waiting for it",
            args.from,
            header("vigil-head-cursor")
        );
    }
    let mut stream = response.into_inner();
    let mut printed = 0u64;
    while let Some(event) = stream.message().await.map_err(refused)? {
        let line = if args.json {
            json_line(&event)?
        } else {
            text_line(&event)
        };
        let mut out = std::io::stdout().lock();
        // A reader that went away (`| head`) ends the tail, quietly.
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return Ok(());
        }
        printed += 1;
        if args.limit > 0 && printed >= args.limit {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SiemCommand,
    }

    fn parse(args: &[&str]) -> TailArgs {
        let mut argv = vec!["t", "tail"];
        argv.extend_from_slice(args);
        match Cli::parse_from(argv).command {
            SiemCommand::Tail(a) => a,
            SiemCommand::Otlp(_) => panic!("parsed as otlp"),
        }
    }

    #[test]
    fn flags_become_server_side_filters() {
        let r = request(&parse(&[
            "--from",
            "42",
            "--kind",
            "policy_change",
            "--kind",
            "finding",
            "--min-severity",
            "high",
            "--host",
            "gpu-1",
            "--rule",
            "r.one",
            "--signal",
            "gpu_use",
        ]));
        assert_eq!(r.cursor, 42);
        assert_eq!(
            r.kinds,
            vec![
                pb::EventKind::PolicyChange as i32,
                pb::EventKind::Finding as i32
            ]
        );
        assert_eq!(
            r.min_severity,
            vigil_proto::types::v1::Severity::High as i32
        );
        assert_eq!(r.hosts, vec!["gpu-1"]);
        assert_eq!(r.rules, vec!["r.one"]);
        assert_eq!(
            r.signals,
            vec![vigil_proto::types::v1::SignalKind::GpuUse as i32]
        );
        assert!(
            r.stop_at_head,
            "without --follow the stream ends at the head"
        );
        assert!(!request(&parse(&["--follow"])).stop_at_head);
    }

    #[test]
    fn a_json_line_wraps_the_ocsf_object() {
        let e = pb::SiemEvent {
            cursor: 9,
            ocsf_json: r#"{"class_uid":2004,"message":"x"}"#.into(),
            kind: pb::EventKind::Enforcement as i32,
            time_unix_nanos: 5,
            ..Default::default()
        };
        let line: serde_json::Value = serde_json::from_str(&json_line(&e).unwrap()).unwrap();
        assert_eq!(line["cursor"], 9);
        assert_eq!(line["kind"], "enforcement");
        assert_eq!(line["time_unix_nanos"], 5);
        assert_eq!(line["ocsf"]["class_uid"], 2004);
        assert!(text_line(&e).contains("enforcement"));
        let bad = pb::SiemEvent {
            ocsf_json: "not json".into(),
            ..e
        };
        assert!(json_line(&bad).is_err());
    }
}
