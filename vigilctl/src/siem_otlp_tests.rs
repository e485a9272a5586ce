//! The forwarder against in-process servers: a SIEM export serving a
//! fixed list of events (optionally breaking its stream or refusing), and
//! an OTLP collector that fails, rejects or refuses on demand.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};
use vigil_proto::otlp::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use vigil_proto::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use vigil_proto::otlp::common::v1::any_value::Value;
use vigil_proto::siem::v1::siem_export_server::{SiemExport, SiemExportServer};

use super::*;

/// The forwarder from the cursor file's cursor, as `run` starts it (less
/// the signals).
async fn forward(
    target: &ControlPlaneArgs,
    args: OtlpArgs,
    filters: siem_pb::SubscribeRequest,
) -> anyhow::Result<()> {
    let cursor_file = CursorFile::new(args.cursor_file.clone());
    let saved = cursor_file.load()?;
    let mut writer = CursorWriter::start(cursor_file, saved);
    let r = forward_from(target, args, filters, saved, &mut writer).await;
    writer.finish().await?;
    r
}

fn event(cursor: u64) -> siem_pb::SiemEvent {
    siem_pb::SiemEvent {
        cursor,
        ocsf_json: format!(
            r#"{{"class_uid":2004,"severity_id":4,"severity":"High","finding_info":{{"uid":"{cursor}"}}}}"#
        ),
        kind: siem_pb::EventKind::Finding as i32,
        time_unix_nanos: 1_700_000_000_000_000_000 + cursor as i64,
        ..Default::default()
    }
}

/// A SIEM export serving `events` after the requested cursor, then
/// holding the stream open; or breaking it after `break_after` events; or
/// refusing every subscription with `refuse`.
#[derive(Clone, Default)]
struct FakeExport {
    events: Vec<siem_pb::SiemEvent>,
    break_after: Option<usize>,
    refuse: Option<tonic::Code>,
    asked: Arc<Mutex<Vec<u64>>>,
}

type EventStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<siem_pb::SiemEvent, Status>> + Send>>;

#[tonic::async_trait]
impl SiemExport for FakeExport {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<siem_pb::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let cursor = request.into_inner().cursor;
        self.asked.lock().unwrap().push(cursor);
        if let Some(code) = self.refuse {
            return Err(Status::new(code, "refused by the fake"));
        }
        let after: Vec<_> = self
            .events
            .iter()
            .filter(|e| e.cursor > cursor)
            .cloned()
            .map(Ok)
            .collect();
        let stream: EventStream = match self.break_after {
            Some(n) => Box::pin(
                tokio_stream::iter(after.into_iter().take(n))
                    .chain(tokio_stream::once(Err(Status::unavailable("node lost")))),
            ),
            None => Box::pin(tokio_stream::iter(after).chain(tokio_stream::pending())),
        };
        Ok(Response::new(stream))
    }
}

/// What the fake collector was sent and how it answers.
#[derive(Default)]
struct CollectorState {
    /// The cursors of every request, in arrival order, failed ones too.
    attempts: Vec<Vec<u64>>,
    /// The cursors of the requests it acknowledged.
    accepted: Vec<Vec<u64>>,
    /// Requests to fail with UNAVAILABLE before answering.
    fail_first: usize,
    /// A cursor whose record it refuses as INVALID_ARGUMENT.
    invalid: Option<u64>,
    /// Records to report rejected in the first acknowledged request.
    reject_in_first: i64,
    in_flight: usize,
    max_in_flight: usize,
}

#[derive(Clone, Default)]
struct FakeCollector(Arc<Mutex<CollectorState>>);

fn cursors_of(request: &ExportLogsServiceRequest) -> Vec<u64> {
    request.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .map(|r| {
            let Some(Value::IntValue(c)) = r.attributes[0].value.as_ref().unwrap().value else {
                panic!("vigil.cursor is an int")
            };
            c as u64
        })
        .collect()
}

#[tonic::async_trait]
impl LogsService for FakeCollector {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let cursors = cursors_of(request.get_ref());
        {
            let mut s = self.0.lock().unwrap();
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
            s.attempts.push(cursors.clone());
        }
        // Long enough for a second request to overlap, were one sent.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut s = self.0.lock().unwrap();
        s.in_flight -= 1;
        if s.fail_first > 0 {
            s.fail_first -= 1;
            return Err(Status::unavailable("collector restarting"));
        }
        if s.invalid.is_some_and(|bad| cursors.contains(&bad)) {
            return Err(Status::invalid_argument("a record is malformed"));
        }
        let partial_success =
            (s.accepted.is_empty() && s.reject_in_first > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: s.reject_in_first,
                error_message: "too old".into(),
            });
        s.accepted.push(cursors);
        Ok(Response::new(ExportLogsServiceResponse { partial_success }))
    }
}

async fn serve_collector(collector: FakeCollector) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LogsServiceServer::new(collector))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

async fn serve_export(export: FakeExport) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SiemExportServer::new(export))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn otlp_args(collector: String, cursor_file: PathBuf) -> OtlpArgs {
    OtlpArgs {
        collector,
        collector_ca: None,
        cursor_file,
        max_batch: 4,
        max_batch_delay_ms: 20,
        initial_backoff_ms: 5,
        max_backoff_ms: 40,
        export_timeout_secs: 5,
    }
}

fn control_plane(endpoint: String) -> ControlPlaneArgs {
    ControlPlaneArgs {
        endpoint,
        tls_ca: None,
        tls_cert: None,
        tls_key: None,
    }
}

/// Runs the forwarder until the cursor file reads `want` (checking on the
/// way that it never passes what the collector acknowledged), then stops it.
async fn forward_until(
    cp: String,
    args: OtlpArgs,
    collector: &FakeCollector,
    want: u64,
) -> Result<(), String> {
    let cursor_file = CursorFile::new(args.cursor_file.clone());
    let initial = cursor_file.load().unwrap();
    let task = tokio::spawn(async move {
        forward(
            &control_plane(cp),
            args,
            siem_pb::SubscribeRequest::default(),
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let saved = cursor_file.load().unwrap();
        let acked = collector
            .0
            .lock()
            .unwrap()
            .attempts
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(0)
            .max(initial);
        assert!(
            saved <= acked,
            "cursor file {saved} past what was sent {acked}"
        );
        if saved == want {
            task.abort();
            return Ok(());
        }
        if task.is_finished() {
            return Err(format!("{:#}", task.await.unwrap().unwrap_err()));
        }
        assert!(Instant::now() < deadline, "cursor file stuck at {saved}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_failing_collector_gets_the_same_batch_again_and_nothing_is_read_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = FakeCollector::default();
    collector.0.lock().unwrap().fail_first = 3;
    let url = serve_collector(collector.clone()).await;
    let cp = serve_export(FakeExport {
        events: (1..=10).map(event).collect(),
        ..Default::default()
    })
    .await;
    let args = otlp_args(url, tmp.path().join("cursor"));
    forward_until(cp, args, &collector, 10).await.unwrap();

    let s = collector.0.lock().unwrap();
    let first = &s.accepted[0];
    assert_eq!(s.attempts.len(), s.accepted.len() + 3, "{:?}", s.attempts);
    for attempt in &s.attempts[..4] {
        assert_eq!(attempt, first, "a retry sends the same batch");
    }
    assert!(first.len() <= 4);
    let delivered: Vec<u64> = s.accepted.iter().flatten().copied().collect();
    assert_eq!(delivered, (1..=10).collect::<Vec<_>>());
    assert_eq!(s.max_in_flight, 1, "one batch in flight at a time");
    let text = std::fs::read_to_string(tmp.path().join("cursor")).unwrap();
    assert_eq!(text, "10\n");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(
        left.len(),
        1,
        "no temporary file left beside the cursor file"
    );
}

#[tokio::test]
async fn rejected_records_are_counted_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = FakeCollector::default();
    collector.0.lock().unwrap().reject_in_first = 2;
    let url = serve_collector(collector.clone()).await;
    let cp = serve_export(FakeExport {
        events: (1..=9).map(event).collect(),
        ..Default::default()
    })
    .await;
    forward_until(cp, otlp_args(url, tmp.path().join("c")), &collector, 9)
        .await
        .unwrap();
    let s = collector.0.lock().unwrap();
    assert_eq!(s.attempts, s.accepted, "no batch sent twice");
}

#[tokio::test]
async fn a_batch_refused_as_invalid_is_split_until_the_one_bad_record_is_left_out() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = FakeCollector::default();
    collector.0.lock().unwrap().invalid = Some(3);
    let url = serve_collector(collector.clone()).await;
    let cp = serve_export(FakeExport {
        events: (1..=10).map(event).collect(),
        ..Default::default()
    })
    .await;
    forward_until(cp, otlp_args(url, tmp.path().join("c")), &collector, 10)
        .await
        .unwrap();
    let s = collector.0.lock().unwrap();
    let delivered: Vec<u64> = s.accepted.iter().flatten().copied().collect();
    let want: Vec<u64> = (1..=10).filter(|&c| c != 3).collect();
    assert_eq!(delivered, want);
    assert!(
        s.attempts.iter().filter(|a| a.as_slice() == [3]).count() == 1,
        "the bad record alone is tried once: {:?}",
        s.attempts
    );
}

#[tokio::test]
async fn a_broken_stream_is_followed_again_on_the_next_node_from_the_saved_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = FakeCollector::default();
    let url = serve_collector(collector.clone()).await;
    let events: Vec<_> = (1..=10).map(event).collect();
    let a = FakeExport {
        events: events.clone(),
        break_after: Some(5),
        ..Default::default()
    };
    let b = FakeExport {
        events,
        ..Default::default()
    };
    let (a_asked, b_asked) = (a.asked.clone(), b.asked.clone());
    let cp = format!("{},{}", serve_export(a).await, serve_export(b).await);
    forward_until(cp, otlp_args(url, tmp.path().join("c")), &collector, 10)
        .await
        .unwrap();
    assert_eq!(*a_asked.lock().unwrap(), vec![0]);
    assert_eq!(
        *b_asked.lock().unwrap(),
        vec![5],
        "resumed after the saved cursor"
    );
    let s = collector.0.lock().unwrap();
    let delivered: Vec<u64> = s.accepted.iter().flatten().copied().collect();
    assert_eq!(
        delivered,
        (1..=10).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
}

#[tokio::test]
async fn a_saved_cursor_is_where_it_resumes_and_a_refusal_ends_it() {
    let tmp = tempfile::tempdir().unwrap();
    let collector = FakeCollector::default();
    let url = serve_collector(collector.clone()).await;
    let export = FakeExport {
        events: (1..=10).map(event).collect(),
        ..Default::default()
    };
    let asked = export.asked.clone();
    let cp = serve_export(export).await;
    std::fs::write(tmp.path().join("c"), "7\n").unwrap();
    forward_until(
        cp,
        otlp_args(url.clone(), tmp.path().join("c")),
        &collector,
        10,
    )
    .await
    .unwrap();
    assert_eq!(*asked.lock().unwrap(), vec![7]);
    let delivered: Vec<u64> = collector.0.lock().unwrap().accepted.concat();
    assert_eq!(delivered, vec![8, 9, 10]);

    let refusing = serve_export(FakeExport {
        refuse: Some(tonic::Code::PermissionDenied),
        ..Default::default()
    })
    .await;
    let e = forward(
        &control_plane(refusing),
        otlp_args(url, tmp.path().join("c")),
        siem_pb::SubscribeRequest::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(ExitCode::of(&e), ExitCode::VerificationFailed, "{e:#}");
}

#[tokio::test]
async fn the_cursor_file_is_a_number_replaced_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let file = CursorFile::new(tmp.path().join("cursor"));
    assert_eq!(file.load().unwrap(), 0, "missing: from the oldest");
    file.store(42).await.unwrap();
    assert_eq!(file.load().unwrap(), 42);
    file.store(43).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("cursor")).unwrap(),
        "43\n"
    );
    std::fs::write(tmp.path().join("cursor"), "garbage").unwrap();
    let e = file.load().unwrap_err();
    assert_eq!(ExitCode::of(&e), ExitCode::Usage, "{e:#}");
}

#[test]
fn an_event_is_one_log_record_with_its_cursor_kind_class_and_severity() {
    let ev = event(12);
    let r = log_record(&ev, 99);
    let Some(Value::StringValue(body)) = r.body.as_ref().unwrap().value.clone() else {
        panic!("the body is the OCSF JSON string")
    };
    assert_eq!(body, ev.ocsf_json);
    let attr = |k: &str| {
        r.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(attr("vigil.cursor"), Some(Value::IntValue(12)));
    assert_eq!(
        attr("vigil.kind"),
        Some(Value::StringValue("finding".into()))
    );
    assert_eq!(attr("ocsf.class_uid"), Some(Value::IntValue(2004)));
    assert_eq!(r.severity_number, SeverityNumber::Error as i32);
    assert_eq!(r.severity_text, "High");
    assert_eq!(r.time_unix_nano, 1_700_000_000_000_000_012);
    assert_eq!(r.observed_time_unix_nano, 99);
    assert_eq!(r.event_name, "vigil.siem.finding");

    // Not JSON: still forwarded, without a class.
    let odd = siem_pb::SiemEvent {
        cursor: 1,
        ocsf_json: "not json".into(),
        ..Default::default()
    };
    let r = log_record(&odd, 0);
    assert!(r.attributes.iter().all(|a| a.key != "ocsf.class_uid"));
    assert_eq!(r.severity_number, SeverityNumber::Unspecified as i32);
    assert_eq!(r.severity_text, "Unknown");

    let sev: Vec<_> = (0..=6).map(|i| severity_number(Some(i)) as i32).collect();
    assert!(sev.windows(2).all(|w| w[0] < w[1]), "order kept: {sev:?}");
}

#[test]
fn kind_names_are_the_domain_names() {
    for (wire, domain) in [
        (
            siem_pb::EventKind::Finding,
            vigil_domain::EventKind::Finding,
        ),
        (
            siem_pb::EventKind::Enforcement,
            vigil_domain::EventKind::Enforcement,
        ),
        (
            siem_pb::EventKind::PolicyChange,
            vigil_domain::EventKind::PolicyChange,
        ),
        (
            siem_pb::EventKind::ApprovalChange,
            vigil_domain::EventKind::ApprovalChange,
        ),
        (
            siem_pb::EventKind::Attestation,
            vigil_domain::EventKind::Attestation,
        ),
        (siem_pb::EventKind::Audit, vigil_domain::EventKind::Audit),
    ] {
        assert_eq!(kind_name(wire as i32), domain.as_str());
    }
    assert_eq!(kind_name(77), "kind_77");
}

#[test]
fn backoff_doubles_to_its_cap_and_resets() {
    let mut args = otlp_args(String::new(), PathBuf::new());
    args.initial_backoff_ms = 100;
    args.max_backoff_ms = 10_000;
    let mut b = Backoff::new(&args);
    let waits: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
    assert_eq!(
        waits,
        vec![100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
    );
    b.reset();
    assert_eq!(b.next_delay().as_millis(), 100);
}

#[tokio::test]
async fn the_cursor_writer_writes_the_newest_acknowledged_cursor_and_reports_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let file = CursorFile::new(tmp.path().join("cursor"));
    let mut writer = CursorWriter::start(file.clone(), 0);
    for c in 1..=50 {
        writer.advance(c).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 50);
    assert_eq!(file.load().unwrap(), 50);

    // A directory that does not exist: the failure comes back.
    let lost = CursorFile::new(tmp.path().join("gone/cursor"));
    let mut writer = CursorWriter::start(lost, 0);
    let mut failed = None;
    for c in 1..=200 {
        if let Err(e) = writer.advance(c).await {
            failed = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let e = failed.expect("a write into a missing directory fails");
    assert!(format!("{e:#}").contains("cursor file"), "{e:#}");
}

/// A local user who can write the cursor file's directory (a shared one,
/// /tmp) plants a symlink where the temporary file goes: the forwarder
/// must not write through it (it may run as root) nor leave the cursor
/// file a link to the victim.
#[tokio::test]
async fn a_planted_symlink_is_never_written_through() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let path = tmp.path().join("cursor");
    // Every name the temporary file had or might have: the old fixed one
    // and this process's.
    std::os::unix::fs::symlink(&victim, tmp.path().join(".cursor.tmp")).unwrap();
    for n in 0..4 {
        let planted = tmp
            .path()
            .join(format!(".cursor.{}.{n}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, planted).unwrap();
    }
    let file = CursorFile::new(path.clone());
    file.store(7).await.unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file(), "the cursor file is a file");
    assert_eq!(meta.permissions().mode() & 0o077, 0, "readable by us only");
    assert_eq!(file.load().unwrap(), 7);
}

/// A cursor file that is a symlink (to a secret it would echo in its
/// error, or to another user's file) or that another user may write (a
/// planted cursor skips events) is refused, and says why.
#[tokio::test]
async fn a_cursor_file_not_ours_alone_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, "root:$6$hash:19000:0:99999:7:::\n").unwrap();
    let link = tmp.path().join("cursor");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let e = CursorFile::new(link).load().unwrap_err();
    let text = format!("{e:#}");
    assert_eq!(ExitCode::of(&e), ExitCode::Usage, "{text}");
    assert!(text.contains("symbolic link"), "{text}");
    assert!(!text.contains("root:"), "the target is not echoed: {text}");

    let shared = tmp.path().join("shared");
    std::fs::write(&shared, "5\n").unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = CursorFile::new(shared.clone()).load().unwrap_err();
    assert!(format!("{e:#}").contains("written by others"), "{e:#}");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(CursorFile::new(shared.clone()).load().unwrap(), 5);

    let dir = tmp.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    let e = CursorFile::new(dir).load().unwrap_err();
    assert!(format!("{e:#}").contains("not a regular file"), "{e:#}");

    // Owned by another user (only root can make one here).
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&shared, Some(65534), Some(65534)).unwrap();
        let e = CursorFile::new(shared).load().unwrap_err();
        assert!(format!("{e:#}").contains("belongs to uid 65534"), "{e:#}");
    }
}

/// A malicious collector (or a node) answers with escape sequences and
/// megabytes of error message: what is logged of it is escaped and cut.
#[test]
fn a_peers_message_is_logged_escaped_and_cut() {
    let hostile = format!(
        "\x1b]0;owned\x07\x1b[2J\nvigilctl siem otlp: delivered{}",
        "x".repeat(4 << 20)
    );
    let logged = peer_text(&hostile);
    assert!(
        !logged.chars().any(|c| c.is_control()),
        "{:?}",
        &logged[..80]
    );
    assert!(logged.len() <= 2 * MAX_PEER_TEXT, "{}", logged.len());
    assert!(logged.contains("truncated"));
    let status = tonic::Status::unavailable(hostile);
    let text = status_text(&status);
    assert!(!text.chars().any(|c| c.is_control()) && text.len() <= 2 * MAX_PEER_TEXT);
}
