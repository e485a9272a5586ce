//! `vigilctl siem otlp`: a long-running forwarder from the control plane's
//! SIEM export to an OpenTelemetry collector, as OTLP logs over gRPC.
//!
//! At least once, in order, from a persisted cursor:
//! - it subscribes from the cursor saved in `--cursor-file` (0 when the
//!   file does not exist: from the oldest event kept);
//! - it gathers events into a batch (at most `--max-batch` events or
//!   [`MAX_BATCH_BYTES`] of OCSF JSON, and at most `--max-batch-delay-ms`
//!   after the batch's first event) and sends it as one
//!   `ExportLogsServiceRequest`, one `LogRecord` per event;
//! - only once the collector acknowledged a batch is its last cursor
//!   written to the cursor file (a temporary file, fsync, rename, fsync of
//!   the directory), off the delivery path: while one write is under way
//!   the next batch is sent, and the cursors acknowledged meanwhile fold
//!   into the next write. A crash at any point resends what was in flight
//!   or acknowledged since the last write, never skips an event;
//! - while the collector fails, the same batch is retried with exponential
//!   backoff (`--initial-backoff-ms` doubling to `--max-backoff-ms`) and
//!   nothing more is read from the stream (one batch in flight: the
//!   control plane's stream stalls on HTTP/2 flow control, which is the
//!   back-pressure);
//! - a control-plane stream that fails or ends is followed again from the
//!   saved cursor, on the next endpoint of `--control-plane`, with the same
//!   backoff;
//! - the collector's `partial_success` (records it rejected) is logged and
//!   counted, never retried: the batch counts as delivered. A batch refused
//!   whole as INVALID_ARGUMENT is split in halves until the one event at
//!   fault is found; that event is rejected (logged, counted) and the rest
//!   delivered. Every other collector error is retried: an unreachable or
//!   misconfigured collector loses nothing, it only delays.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::Streaming;
use vigil_proto::otlp::collector::logs::v1::logs_service_client::LogsServiceClient;
use vigil_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vigil_proto::otlp::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use vigil_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use vigil_proto::otlp::resource::v1::Resource;
use vigil_proto::siem::v1 as siem_pb;
use vigil_proto::siem::v1::siem_export_client::SiemExportClient;

use crate::control_plane::{self, ControlPlaneArgs};
use crate::exit_code::ExitCode;

/// The most OCSF JSON one batch carries: well under the 4 MiB a gRPC
/// server (the collector's default) accepts in one message.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// How often, at most, progress is logged while events flow.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// Where to push and how: the flags of `vigilctl siem otlp` (the filters
/// and the control plane are the `siem` group's and the global ones).
#[derive(Debug, Clone, clap::Args)]
pub struct OtlpArgs {
    /// The OpenTelemetry collector's OTLP/gRPC endpoint: http://HOST:4317, or https:// with --collector-ca.
    #[arg(long, value_name = "URL")]
    pub collector: String,
    /// The CA certificate (PEM) the collector's TLS certificate must chain to, for an https:// collector.
    #[arg(long, value_name = "PEM")]
    pub collector_ca: Option<PathBuf>,
    /// The file holding the cursor of the last event the collector acknowledged: read at start (missing: from the oldest event kept), replaced atomically with the newest cursor the collector acknowledged.
    #[arg(long, value_name = "PATH")]
    pub cursor_file: PathBuf,
    /// The most events one export request carries.
    #[arg(long, default_value_t = 512, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,
    /// The longest an event waits for more to join its batch, in milliseconds.
    #[arg(long, default_value_t = 200, value_name = "MS")]
    pub max_batch_delay_ms: u64,
    /// The first wait before a failed export (or a lost control-plane stream) is retried, in milliseconds; doubled at each failure.
    #[arg(long, default_value_t = 100, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub initial_backoff_ms: u64,
    /// The longest wait between retries, in milliseconds.
    #[arg(long, default_value_t = 10_000, value_name = "MS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_backoff_ms: u64,
    /// How long one export request may take before it counts as failed (and is retried), in seconds.
    #[arg(long, default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub export_timeout_secs: u64,
}

/// Runs the forwarder until SIGINT or SIGTERM (then exits 0: the cursor
/// file holds the last acknowledged cursor), or until the control plane
/// refuses the subscription for good (permission, bad filter, a cursor
/// older than its retention).
pub async fn run(
    target: &ControlPlaneArgs,
    args: OtlpArgs,
    filters: siem_pb::SubscribeRequest,
) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let cursor_file = CursorFile::new(args.cursor_file.clone());
    let saved = cursor_file.load()?;
    let mut writer = CursorWriter::start(cursor_file, saved);
    let why = tokio::select! {
        r = forward_from(target, args, filters, saved, &mut writer) => return r,
        _ = tokio::signal::ctrl_c() => "interrupted",
        _ = terminate.recv() => "terminated",
    };
    let last = writer.finish().await?;
    eprintln!(
        "vigilctl siem otlp: {why}; the cursor file holds the last acknowledged event, {last}"
    );
    Ok(())
}

/// The forwarder's loop from cursor `saved`: subscribe, deliver batches,
/// hand acknowledged cursors to `writer`, follow again on the next
/// endpoint when the stream breaks. Returns only on an error that retrying
/// cannot cure.
async fn forward_from(
    target: &ControlPlaneArgs,
    args: OtlpArgs,
    filters: siem_pb::SubscribeRequest,
    mut saved: u64,
    writer: &mut CursorWriter,
) -> anyhow::Result<()> {
    let mut collector = Collector::new(&args)?;
    let endpoints = vigil_proto::endpoint::split_endpoints(&target.endpoint);
    if endpoints.is_empty() {
        return Err(ExitCode::Usage.error("--control-plane names no endpoint"));
    }
    let mut backoff = Backoff::new(&args);
    let mut progress = Progress::default();
    let mut first_endpoint = 0usize;
    loop {
        let mut at = target.clone();
        at.endpoint = rotated(&endpoints, first_endpoint).join(",");
        let request = siem_pb::SubscribeRequest {
            cursor: saved,
            ..filters.clone()
        };
        let why = match subscribe(&at, request).await {
            Ok(mut stream) => {
                eprintln!(
                    "vigilctl siem otlp: following the SIEM export after cursor {saved}, pushing to {}",
                    args.collector
                );
                let ended = follow(
                    &mut stream,
                    &args,
                    &mut collector,
                    writer,
                    &mut saved,
                    &mut progress,
                    &mut backoff,
                )
                .await?;
                if let Some(fatal) = refusal(&ended) {
                    return Err(fatal);
                }
                format!("the stream ended: {}", status_text(&ended))
            }
            Err(e) => {
                if ExitCode::of(&e) != ExitCode::Unreachable {
                    return Err(e);
                }
                format!("{e:#}")
            }
        };
        first_endpoint = (first_endpoint + 1) % endpoints.len();
        let wait = backoff.next_delay();
        eprintln!(
            "vigilctl siem otlp: control plane: {why}; following again after cursor {saved} in {} ms",
            wait.as_millis()
        );
        tokio::time::sleep(wait).await;
    }
}

/// `endpoints` starting at `first`, wrapping round.
fn rotated(endpoints: &[String], first: usize) -> Vec<String> {
    let n = endpoints.len();
    (0..n).map(|i| endpoints[(first + i) % n].clone()).collect()
}

/// Opens the SIEM stream; an unreachable control plane or a refusal that
/// may pass (UNAVAILABLE) is `Unreachable`, a refusal for good keeps its
/// own exit code.
async fn subscribe(
    target: &ControlPlaneArgs,
    request: siem_pb::SubscribeRequest,
) -> anyhow::Result<Streaming<siem_pb::SiemEvent>> {
    let channel = control_plane::connect_channel(target).await?;
    let mut client = SiemExportClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let cursor = request.cursor;
    match client.subscribe(request).await {
        Ok(response) => {
            let header = |name: &str| {
                response
                    .metadata()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string()
            };
            if header("vigil-cursor-state") == "ahead" {
                // A cursor file from another cluster, or a control plane
                // whose data was replaced: nothing arrives until it catches up.
                eprintln!(
                    "vigilctl siem otlp: warning: the saved cursor {cursor} is beyond the newest event the control plane has ({}); waiting for it",
                    header("vigil-head-cursor")
                );
            }
            Ok(response.into_inner())
        }
        Err(status) => match refusal(&status) {
            Some(fatal) => Err(fatal),
            None => Err(ExitCode::Unreachable.error(status_text(&status))),
        },
    }
}

/// A control plane's answer that following again would only repeat: who
/// we are, what we asked, or a cursor it no longer holds.
fn refusal(status: &tonic::Status) -> Option<anyhow::Error> {
    use tonic::Code::*;
    let code = match status.code() {
        PermissionDenied | Unauthenticated => ExitCode::VerificationFailed,
        InvalidArgument | Unimplemented => ExitCode::Usage,
        OutOfRange => {
            return Some(ExitCode::Failure.error(format!(
                "the control plane no longer holds the events after the saved cursor (retention): {}; \
                 to resume from the oldest kept, write 0 (or the cursor it names) to the cursor file",
                peer_text(status.message())
            )))
        }
        _ => return None,
    };
    Some(code.error(format!(
        "the control plane refused the subscription: {}",
        status_text(status)
    )))
}

fn status_text(status: &tonic::Status) -> String {
    format!("{:?}: {}", status.code(), peer_text(status.message()))
}

/// The longest text from a peer (a collector's or control plane's error
/// message) this logs, in bytes.
const MAX_PEER_TEXT: usize = 1024;

/// Text a peer chose, fit for stderr: control characters escaped (a
/// collector's message must not drive the operator's terminal or forge log
/// lines) and cut to [`MAX_PEER_TEXT`] (nor flood the log at every retry).
pub fn peer_text(s: &str) -> String {
    crate::terminal_text::escape_controls(&vigil_domain::truncate_marked(s, MAX_PEER_TEXT))
        .into_owned()
}

/// Delivers batches from `stream` until it fails or ends; that status.
/// Errors only when the cursor file cannot be written.
#[allow(clippy::too_many_arguments)]
async fn follow(
    stream: &mut Streaming<siem_pb::SiemEvent>,
    args: &OtlpArgs,
    collector: &mut Collector,
    writer: &mut CursorWriter,
    saved: &mut u64,
    progress: &mut Progress,
    backoff: &mut Backoff,
) -> anyhow::Result<tonic::Status> {
    let max_events = args.max_batch as usize;
    let delay = Duration::from_millis(args.max_batch_delay_ms);
    loop {
        // The first event: wait as long as it takes.
        let first = match stream.message().await {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(tonic::Status::unavailable("closed by the control plane")),
            Err(status) => return Ok(status),
        };
        // The control plane answers: a later loss starts its backoff afresh.
        backoff.reset();
        let mut batch = Batch::default();
        batch.push(first, *saved);
        let deadline = tokio::time::Instant::now() + delay;
        let mut ended = None;
        while batch.events.len() < max_events && batch.bytes < MAX_BATCH_BYTES {
            match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => break,
                Ok(Ok(Some(ev))) => batch.push(ev, *saved),
                Ok(Ok(None)) => {
                    ended = Some(tonic::Status::unavailable("closed by the control plane"));
                    break;
                }
                Ok(Err(status)) => {
                    ended = Some(status);
                    break;
                }
            }
        }
        if let Some(last) = batch.last_cursor() {
            let outcome = collector.deliver(&batch.events, args).await;
            writer.advance(last).await?;
            *saved = last;
            progress.add(&outcome, last);
        }
        if let Some(status) = ended {
            return Ok(status);
        }
    }
}

/// The events of one export request, in cursor order.
#[derive(Default)]
struct Batch {
    events: Vec<siem_pb::SiemEvent>,
    bytes: usize,
}

impl Batch {
    /// Adds `ev` unless it is at or before the saved cursor or the batch's
    /// last (a control plane that sends one again): it was delivered.
    fn push(&mut self, ev: siem_pb::SiemEvent, saved: u64) {
        if ev.cursor <= self.last_cursor().unwrap_or(saved) {
            return;
        }
        self.bytes += ev.ocsf_json.len();
        self.events.push(ev);
    }

    fn last_cursor(&self) -> Option<u64> {
        self.events.last().map(|e| e.cursor)
    }
}

/// What the collector made of one batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Records it accepted.
    pub accepted: u64,
    /// Records it rejected (partial success, or refused as INVALID_ARGUMENT
    /// one by one): logged, not retried.
    pub rejected: u64,
    /// Export attempts that failed and were retried.
    pub retries: u64,
}

/// The collector's client.
struct Collector {
    client: LogsServiceClient<Channel>,
    endpoint: String,
}

impl Collector {
    fn new(args: &OtlpArgs) -> anyhow::Result<Collector> {
        let bad = |e: &dyn std::fmt::Display| {
            ExitCode::Usage.error(format!("bad --collector {:?}: {e}", args.collector))
        };
        let https = args.collector.starts_with("https://");
        if !https && !args.collector.starts_with("http://") {
            return Err(bad(&"it must start with http:// or https://"));
        }
        let mut endpoint = Endpoint::from_shared(args.collector.clone())
            .map_err(|e| bad(&e))?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(args.export_timeout_secs));
        match (https, &args.collector_ca) {
            (true, Some(ca)) => {
                let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
                let tls = ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(pem))
                    .domain_name(vigil_proto::endpoint::host_of(&args.collector));
                endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
            }
            (true, None) => return Err(bad(&"an https:// collector needs --collector-ca")),
            (false, Some(_)) => return Err(bad(&"--collector-ca is for an https:// collector")),
            (false, None) => {}
        }
        Ok(Collector {
            client: LogsServiceClient::new(endpoint.connect_lazy()),
            endpoint: args.collector.clone(),
        })
    }

    /// Sends `events` until the collector has acknowledged every one
    /// (accepted or rejected): one request in flight at a time, a failed
    /// one retried whole after a growing wait.
    async fn deliver(&mut self, events: &[siem_pb::SiemEvent], args: &OtlpArgs) -> Outcome {
        let mut outcome = Outcome::default();
        let mut parts: VecDeque<&[siem_pb::SiemEvent]> = VecDeque::from([events]);
        while let Some(part) = parts.pop_front() {
            let request = export_request(part, now_unix_nanos());
            let mut backoff = Backoff::new(args);
            let mut failing_since: Option<Instant> = None;
            loop {
                match self.client.export(request.clone()).await {
                    Ok(response) => {
                        let rejected = response
                            .into_inner()
                            .partial_success
                            .filter(|p| p.rejected_log_records > 0 || !p.error_message.is_empty());
                        let n = part.len() as u64;
                        let r = rejected
                            .as_ref()
                            .map_or(0, |p| (p.rejected_log_records.max(0) as u64).min(n));
                        if let Some(p) = rejected {
                            eprintln!(
                                "vigilctl siem otlp: the collector rejected {} of {n} records (cursors {}..={}): {}",
                                p.rejected_log_records,
                                part[0].cursor,
                                part[part.len() - 1].cursor,
                                peer_text(&p.error_message)
                            );
                        }
                        if let Some(since) = failing_since {
                            eprintln!(
                                "vigilctl siem otlp: the collector at {} accepted the batch after {:.1} s of failures",
                                self.endpoint,
                                since.elapsed().as_secs_f64()
                            );
                        }
                        outcome.accepted += n - r;
                        outcome.rejected += r;
                        break;
                    }
                    Err(status) if status.code() == tonic::Code::InvalidArgument => {
                        if part.len() > 1 {
                            // Find the event at fault: each half on its own.
                            let (a, b) = part.split_at(part.len() / 2);
                            parts.push_front(b);
                            parts.push_front(a);
                        } else {
                            eprintln!(
                                "vigilctl siem otlp: the collector refused the record of cursor {} as invalid: {}",
                                part[0].cursor,
                                peer_text(status.message())
                            );
                            outcome.rejected += 1;
                        }
                        break;
                    }
                    Err(status) => {
                        failing_since.get_or_insert_with(Instant::now);
                        outcome.retries += 1;
                        let wait = backoff.next_delay();
                        eprintln!(
                            "vigilctl siem otlp: export of {} records (cursors {}..={}) to {} failed: {}; retrying the same batch in {} ms",
                            part.len(),
                            part[0].cursor,
                            part[part.len() - 1].cursor,
                            self.endpoint,
                            status_text(&status),
                            wait.as_millis()
                        );
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        outcome
    }
}

/// Exponential backoff: the initial delay, doubled at each call, capped.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(args: &OtlpArgs) -> Backoff {
        let initial = Duration::from_millis(args.initial_backoff_ms);
        let max = Duration::from_millis(args.max_backoff_ms.max(args.initial_backoff_ms));
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(self.max);
        now
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Totals, logged at most every [`PROGRESS_EVERY`].
#[derive(Default)]
struct Progress {
    total: Outcome,
    last_log: Option<Instant>,
}

impl Progress {
    fn add(&mut self, o: &Outcome, cursor: u64) {
        self.total.accepted += o.accepted;
        self.total.rejected += o.rejected;
        self.total.retries += o.retries;
        if self.last_log.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
            self.last_log = Some(Instant::now());
            eprintln!(
                "vigilctl siem otlp: delivered up to cursor {cursor}: {} records accepted, {} rejected, {} export retries so far",
                self.total.accepted, self.total.rejected, self.total.retries
            );
        }
    }
}

fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One export request for `events`: one resource (`service.name` vigil),
/// one scope, one log record per event.
pub fn export_request(
    events: &[siem_pb::SiemEvent],
    observed_unix_nanos: u64,
) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "vigil")],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "vigil.siem".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                log_records: events
                    .iter()
                    .map(|e| log_record(e, observed_unix_nanos))
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The fields of the OCSF event a log record lifts out of it.
#[derive(Debug, Default, serde::Deserialize)]
struct OcsfHead {
    class_uid: Option<i64>,
    severity_id: Option<i64>,
    severity: Option<String>,
}

/// One event as a log record: the OCSF JSON as its body; `vigil.cursor`,
/// `vigil.kind` and `ocsf.class_uid` as attributes; the OCSF severity as
/// the severity; the commit time as its time.
pub fn log_record(ev: &siem_pb::SiemEvent, observed_unix_nanos: u64) -> LogRecord {
    let head: OcsfHead = serde_json::from_str(&ev.ocsf_json).unwrap_or_default();
    let kind = kind_name(ev.kind);
    let mut attributes = vec![
        attribute(
            "vigil.cursor",
            any_value::Value::IntValue(i64::try_from(ev.cursor).unwrap_or(i64::MAX)),
        ),
        string_attribute("vigil.kind", &kind),
    ];
    if let Some(class) = head.class_uid {
        attributes.push(attribute(
            "ocsf.class_uid",
            any_value::Value::IntValue(class),
        ));
    }
    let severity = severity_number(head.severity_id);
    LogRecord {
        time_unix_nano: u64::try_from(ev.time_unix_nanos).unwrap_or(0),
        observed_time_unix_nano: observed_unix_nanos,
        severity_number: severity as i32,
        severity_text: head
            .severity
            .unwrap_or_else(|| ocsf_severity_name(head.severity_id).to_string()),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(ev.ocsf_json.clone())),
        }),
        attributes,
        event_name: format!("vigil.siem.{kind}"),
        ..Default::default()
    }
}

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

/// An event kind's name as `vigil_domain::EventKind` spells it
/// (`finding`, `policy_change`, ...); `kind_N` when this vigilctl does not
/// know it.
pub fn kind_name(kind: i32) -> String {
    vigil_proto::event_kind_from_wire("kind", kind)
        .map_or_else(|_| format!("kind_{kind}"), |k| k.as_str().to_string())
}

/// OCSF `severity_id` → OTLP severity number: Informational INFO, Low
/// INFO2, Medium WARN, High ERROR, Critical FATAL, Fatal FATAL2; Unknown
/// (0), Other (99) and anything else UNSPECIFIED.
pub fn severity_number(severity_id: Option<i64>) -> SeverityNumber {
    match severity_id {
        Some(1) => SeverityNumber::Info,
        Some(2) => SeverityNumber::Info2,
        Some(3) => SeverityNumber::Warn,
        Some(4) => SeverityNumber::Error,
        Some(5) => SeverityNumber::Fatal,
        Some(6) => SeverityNumber::Fatal2,
        _ => SeverityNumber::Unspecified,
    }
}

/// OCSF's caption of a `severity_id`, for an event that does not carry
/// its `severity` text.
fn ocsf_severity_name(severity_id: Option<i64>) -> &'static str {
    match severity_id {
        Some(1) => "Informational",
        Some(2) => "Low",
        Some(3) => "Medium",
        Some(4) => "High",
        Some(5) => "Critical",
        Some(6) => "Fatal",
        Some(99) => "Other",
        _ => "Unknown",
    }
}

/// The cursor file: one decimal number and a newline.
#[derive(Debug, Clone)]
pub struct CursorFile {
    path: PathBuf,
}

impl CursorFile {
    pub fn new(path: PathBuf) -> CursorFile {
        CursorFile { path }
    }

    /// The saved cursor; 0 when the file does not exist. Anything but a
    /// number is an error: never a silent restart from the oldest event.
    ///
    /// The file must be ours: a symlink, something other than a regular
    /// file, a file another user owns or one others may write is refused
    /// (in a shared directory such as /tmp another local user could
    /// otherwise point it at a file we may read, or plant a cursor that
    /// skips events), and it is opened without following a symlink.
    pub fn load(&self) -> anyhow::Result<u64> {
        use std::io::Read;
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        let shown = self.path.display();
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(ExitCode::Usage.error(format!(
                    "the cursor file {shown} is a symbolic link: refused (name the file itself)"
                )))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {shown}")),
        };
        let meta = file
            .metadata()
            .with_context(|| format!("reading {shown}"))?;
        let me = nix::unistd::geteuid().as_raw();
        let refused = if !meta.file_type().is_file() {
            Some("is not a regular file".to_string())
        } else if meta.uid() != me {
            Some(format!(
                "belongs to uid {}, not to this user ({me})",
                meta.uid()
            ))
        } else if meta.mode() & 0o022 != 0 {
            Some(format!(
                "may be written by others (mode {:o})",
                meta.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(ExitCode::Usage.error(format!(
                "the cursor file {shown} {why}: refused (it decides which events are sent)"
            )));
        }
        let mut text = String::new();
        file.take(64)
            .read_to_string(&mut text)
            .with_context(|| format!("reading {shown}"))?;
        text.trim().parse().map_err(|_| {
            ExitCode::Usage.error(format!(
                "the cursor file {shown} does not hold a cursor (a decimal number): {:?}",
                text.chars().take(40).collect::<String>()
            ))
        })
    }

    /// Replaces the file with `cursor`, durably: written to a temporary
    /// file beside it, synced, renamed over it, and the directory synced.
    pub async fn store(&self, cursor: u64) -> anyhow::Result<()> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, format!("{cursor}\n").as_bytes())
        })
        .await
        .context("the cursor writer stopped")?
    }
}

/// Writes acknowledged cursors to the cursor file in a task of its own:
/// each write takes the newest cursor acknowledged, so an fsync never
/// holds up the next batch and a burst of small batches costs a few
/// writes.
pub struct CursorWriter {
    newest: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<anyhow::Result<u64>>,
}

impl CursorWriter {
    /// A writer for `file`, which holds `saved`.
    pub fn start(file: CursorFile, saved: u64) -> CursorWriter {
        let (newest, mut rx) = tokio::sync::watch::channel(saved);
        let task = tokio::spawn(async move {
            let mut written = saved;
            loop {
                let open = rx.changed().await.is_ok();
                let cursor = *rx.borrow_and_update();
                if cursor > written {
                    file.store(cursor).await?;
                    written = cursor;
                }
                if !open {
                    return Ok(written);
                }
            }
        });
        CursorWriter { newest, task }
    }

    /// `cursor` was acknowledged: it is written once the write under way
    /// (if any) is done. Errors when an earlier write failed.
    pub async fn advance(&mut self, cursor: u64) -> anyhow::Result<()> {
        if self.task.is_finished() {
            (&mut self.task).await.context("the cursor writer")??;
            anyhow::bail!("the cursor writer stopped");
        }
        self.newest.send_replace(cursor);
        Ok(())
    }

    /// Waits until the newest cursor acknowledged is written; that cursor.
    pub async fn finish(self) -> anyhow::Result<u64> {
        drop(self.newest);
        self.task.await.context("the cursor writer")?
    }
}

/// `bytes` into `path` so that a crash leaves the old or the new contents,
/// never a mix, and the new contents once this returns survive one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    // The temporary file is created new (O_EXCL: never through a
    // symlink or into a file someone placed there), readable by this user
    // only, under a name no other process uses.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut tries = 0;
        let (tmp, mut f) = loop {
            let mut tmp_name = std::ffi::OsString::from(".");
            tmp_name.push(name);
            tmp_name.push(format!(
                ".{}.{}.tmp",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            let tmp = dir.join(tmp_name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 100 => {
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let done = (|| {
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done?;
        std::fs::File::open(&dir)?.sync_all()
    };
    write().with_context(|| format!("writing the cursor file {}", path.display()))
}

#[cfg(test)]
#[path = "siem_otlp_tests.rs"]
mod tests;
