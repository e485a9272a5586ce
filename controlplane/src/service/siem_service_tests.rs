//! `SiemExport/Subscribe` against a real state machine, called directly.

use std::time::Duration;

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload};
use tokio_stream::StreamExt;
use tonic::Code;
use vigil_domain::{Finding, ProcessInfo, SensorMode, Severity, SignalKind};
use vigil_proto::siem::v1 as pb;
use vigil_proto::siem::v1::siem_export_server::SiemExport;
use vigil_proto::types::v1 as types;

use super::*;
use crate::raft_types::{Command, LogId, TypeConfig};
use crate::store::SledStateMachine;

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn finding(seq: u64, severity: Severity, argv: Vec<String>) -> Finding {
    Finding {
        seq,
        rule_id: format!("rule.{seq}"),
        severity,
        signal: SignalKind::AiRuntime,
        observed_at_unix_nanos: 5,
        process: ProcessInfo {
            pid: 9,
            exe: "/usr/bin/python3".into(),
            argv,
            ..Default::default()
        },
        file: None,
        net: None,
        gpu: None,
        action: String::new(),
        summary: "an AI runtime".into(),
    }
}

fn register(id: &str) -> Command {
    Command::RegisterAgent {
        agent: vigil_domain::AgentIdentity {
            agent_id: id.into(),
            hostname: format!("{id}.example"),
            agent_version: "0.1.0".into(),
            sensor_mode: SensorMode::Ebpf,
            kernel_release: "6.1".into(),
            hooks: vec![],
        },
        at_unix_nanos: 100,
    }
}

fn append(id: &str, findings: Vec<Finding>) -> Command {
    Command::AppendAlerts {
        agent_id: id.into(),
        received_at_unix_nanos: 200,
        findings,
    }
}

fn audit(action: &str) -> Command {
    Command::AppendAudit {
        at_unix_nanos: 300,
        actor: "operator alice".into(),
        action: action.into(),
        subject: "x".into(),
        detail: String::new(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    sm: SledStateMachine,
    service: SiemExportImpl,
    next_index: u64,
}

impl Fixture {
    async fn new(commands: Vec<Command>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (_log, sm, reader) = crate::store::open_stores(dir.path()).unwrap();
        let mut f = Self {
            _dir: dir,
            sm,
            service: SiemExportImpl::new(reader),
            next_index: 1,
        };
        f.apply(commands).await;
        f
    }

    async fn apply(&mut self, commands: Vec<Command>) {
        let entries: Vec<_> = commands
            .into_iter()
            .map(|c| {
                self.next_index += 1;
                entry(self.next_index - 1, c)
            })
            .collect();
        self.sm.apply(entries).await.unwrap();
    }

    async fn subscribe(
        &self,
        req: pb::SubscribeRequest,
    ) -> Result<tonic::Response<<SiemExportImpl as SiemExport>::SubscribeStream>, tonic::Status>
    {
        self.service.subscribe(tonic::Request::new(req)).await
    }
}

/// Every event the stream sends until it ends (it must end).
async fn drain(
    response: tonic::Response<<SiemExportImpl as SiemExport>::SubscribeStream>,
) -> Vec<pb::SiemEvent> {
    let mut stream = response.into_inner();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(status))) => panic!("the stream failed: {status:?}"),
            Ok(None) => return out,
            Err(_) => panic!("the stream did not end; so far {out:?}"),
        }
    }
}

fn header(response: &tonic::Response<impl Sized>, name: &str) -> String {
    response
        .metadata()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn mixed() -> Vec<Command> {
    vec![
        register("a"),
        audit("policy.push"),                                      // 1
        append("a", vec![finding(1, Severity::Medium, vec![])]),   // 2
        audit("workload.approve"),                                 // 3
        append("a", vec![finding(2, Severity::Critical, vec![])]), // 4
        audit("certificate.revoke"),                               // 5
    ]
}

#[tokio::test]
async fn unknown_enum_values_in_filters_are_refused_naming_field_and_value() {
    let f = Fixture::new(mixed()).await;
    for (req, want) in [
        (
            pb::SubscribeRequest {
                kinds: vec![pb::EventKind::Finding.into(), 99],
                ..Default::default()
            },
            "kinds[1]: unknown value 99",
        ),
        (
            pb::SubscribeRequest {
                signals: vec![1234],
                ..Default::default()
            },
            "signals[0]: unknown value 1234",
        ),
        (
            pb::SubscribeRequest {
                min_severity: 17,
                ..Default::default()
            },
            "min_severity: unknown value 17",
        ),
    ] {
        let status = f.subscribe(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), want);
    }
}

#[tokio::test]
async fn every_kind_comes_in_one_order_and_filters_run_on_the_server() {
    let f = Fixture::new(mixed()).await;
    let response = f
        .subscribe(pb::SubscribeRequest {
            stop_at_head: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(header(&response, "vigil-cursor-state"), "ok");
    assert_eq!(header(&response, "vigil-head-cursor"), "5");
    let events = drain(response).await;
    let got: Vec<(u64, i32)> = events.iter().map(|e| (e.cursor, e.kind)).collect();
    assert_eq!(
        got,
        vec![
            (1, pb::EventKind::PolicyChange as i32),
            (2, pb::EventKind::Finding as i32),
            (3, pb::EventKind::ApprovalChange as i32),
            (4, pb::EventKind::Finding as i32),
            (5, pb::EventKind::Audit as i32),
        ]
    );
    for e in &events {
        let ocsf: serde_json::Value = serde_json::from_str(&e.ocsf_json).unwrap();
        assert!(ocsf.get("class_uid").is_some(), "{ocsf}");
        assert!(e.time_unix_nanos > 0);
        // Without include_record, the OCSF alone.
        assert!(e.alert.is_none() && e.audit.is_none());
    }

    let cursors = |events: Vec<pb::SiemEvent>| events.iter().map(|e| e.cursor).collect::<Vec<_>>();
    let only = |req: pb::SubscribeRequest| pb::SubscribeRequest {
        stop_at_head: true,
        ..req
    };
    let high = f
        .subscribe(only(pb::SubscribeRequest {
            min_severity: types::Severity::High.into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(cursors(drain(high).await), vec![4]);
    let changes = f
        .subscribe(only(pb::SubscribeRequest {
            kinds: vec![
                pb::EventKind::PolicyChange.into(),
                pb::EventKind::ApprovalChange.into(),
            ],
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(cursors(drain(changes).await), vec![1, 3]);
    let host = f
        .subscribe(only(pb::SubscribeRequest {
            hosts: vec!["a.example".into()],
            rules: vec!["rule.1".into()],
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(cursors(drain(host).await), vec![2]);
    // Resuming after a cursor starts after it.
    let resumed = f
        .subscribe(only(pb::SubscribeRequest {
            cursor: 3,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(cursors(drain(resumed).await), vec![4, 5]);
}

#[tokio::test]
async fn a_cursor_retention_passed_is_out_of_range_naming_the_oldest() {
    let mut commands = mixed();
    commands.push(Command::PruneAlerts {
        at_unix_nanos: 10_000,
        keep_at_most: 1,
        older_than_unix_nanos: 0,
    });
    let f = Fixture::new(commands).await;
    // Alert 1 (seq 2) went, and everything before it.
    {
        let cursor = 1;
        let status = f
            .subscribe(pb::SubscribeRequest {
                cursor,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(
            status.message().contains("oldest event kept (3)")
                && status.message().contains("resume with cursor 2"),
            "{}",
            status.message()
        );
        assert_eq!(
            status
                .metadata()
                .get("vigil-oldest-cursor")
                .unwrap()
                .to_str()
                .unwrap(),
            "3"
        );
    }
    // 0 means the oldest kept; the oldest's predecessor is fine too.
    for cursor in [0, 2] {
        let events = drain(
            f.subscribe(pb::SubscribeRequest {
                cursor,
                stop_at_head: true,
                ..Default::default()
            })
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(
            events.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
    }
}

#[tokio::test]
async fn a_cursor_beyond_the_head_says_so_and_waits_for_it() {
    let mut f = Fixture::new(mixed()).await;
    let response = f
        .subscribe(pb::SubscribeRequest {
            cursor: 7,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(header(&response, "vigil-cursor-state"), "ahead");
    assert_eq!(header(&response, "vigil-head-cursor"), "5");
    let mut stream = response.into_inner();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "nothing yet"
    );
    // Events 6 and 7 come and go unsent; 8 is the first after the cursor.
    f.apply(vec![
        audit("policy.push"),
        audit("policy.push"),
        audit("workload.revoke"),
    ])
    .await;
    let e = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the event after the cursor")
        .unwrap()
        .unwrap();
    assert_eq!(e.cursor, 8);
    assert_eq!(e.kind, pb::EventKind::ApprovalChange as i32);
}

#[tokio::test]
async fn a_follower_of_the_head_gets_new_events_as_they_apply() {
    let mut f = Fixture::new(mixed()).await;
    let mut stream = f
        .subscribe(pb::SubscribeRequest {
            cursor: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    f.apply(vec![append("a", vec![finding(3, Severity::Low, vec![])])])
        .await;
    let e = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((e.cursor, e.kind), (6, pb::EventKind::Finding as i32));
}

#[tokio::test]
async fn a_huge_command_line_is_carried_once_and_capped() {
    let argv = vec![
        "python3".to_string(),
        "-c".to_string(),
        "A".repeat(1_000_000),
    ];
    let f = Fixture::new(vec![
        register("a"),
        append("a", vec![finding(1, Severity::High, argv)]),
    ])
    .await;
    let events = drain(
        f.subscribe(pb::SubscribeRequest {
            include_record: true,
            stop_at_head: true,
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    let alert = e.alert.as_ref().unwrap();
    let argv = &alert
        .finding
        .as_ref()
        .unwrap()
        .process
        .as_ref()
        .unwrap()
        .argv;
    assert!(argv.join(" ").len() <= vigil_domain::MAX_EXPORTED_CMDLINE);
    assert!(argv.last().unwrap().contains("truncated"), "{argv:?}");
    let size = prost::Message::encoded_len(e);
    println!("one event with a 1 MB command line: {size} bytes on the wire");
    assert!(size < 64 * 1024, "{size} bytes");
    // Without the typed record the command line is there once, in OCSF.
    let bare = drain(
        f.subscribe(pb::SubscribeRequest {
            stop_at_head: true,
            ..Default::default()
        })
        .await
        .unwrap(),
    )
    .await;
    let ocsf = &bare[0].ocsf_json;
    assert_eq!(ocsf.matches("python3 -c AAAA").count(), 1, "{ocsf}");
    assert!(ocsf.len() < 16 * 1024, "{} bytes", ocsf.len());
}

#[tokio::test]
async fn a_revoked_certificate_ends_the_stream() {
    let mut f = Fixture::new(mixed()).await;
    let mut req = tonic::Request::new(pb::SubscribeRequest {
        cursor: 5,
        ..Default::default()
    });
    req.extensions_mut()
        .insert(crate::service::Caller::Authenticated {
            identity: vigil_pki::Identity::Operator {
                role: vigil_pki::OperatorRole::SiemReader,
                name: "splunk".into(),
            },
            serial: "abc123".into(),
        });
    let mut stream = f.service.subscribe(req).await.unwrap().into_inner();
    f.apply(vec![Command::RevokeCertificateV2 {
        certificate: vigil_domain::RevokedCertificate {
            serial: "abc123".into(),
            identity: "operator splunk".into(),
            reason: "left".into(),
            revoked_by: "alice".into(),
            revoked_at_unix_nanos: 1,
        },
    }])
    .await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream ends")
        {
            Some(Ok(_)) => continue,
            Some(Err(status)) => {
                assert_eq!(status.code(), Code::PermissionDenied);
                break;
            }
            None => panic!("ended without saying why"),
        }
    }
}

/// Retention passing a subscriber that reads slowly ends its stream with
/// OUT_OF_RANGE naming the oldest cursor kept, after the events it had
/// read already: never a silent jump.
#[tokio::test]
async fn retention_passing_a_slow_reader_ends_its_stream_out_of_range() {
    let mut commands = vec![register("a")];
    commands.push(append(
        "a",
        (1..=400)
            .map(|s| finding(s, Severity::Medium, vec![]))
            .collect(),
    ));
    let mut f = Fixture::new(commands).await;
    let mut stream = f
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    // The feed has read its first page and waits on the client.
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.apply(vec![Command::PruneAlerts {
        at_unix_nanos: 10_000,
        keep_at_most: 100,
        older_than_unix_nanos: 0,
    }])
    .await;
    let mut cursors = Vec::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream goes on or ends")
        {
            Some(Ok(e)) => cursors.push(e.cursor),
            Some(Err(status)) => break status,
            None => panic!("ended without saying why after {cursors:?}"),
        }
    };
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("oldest event kept (301)"),
        "{}",
        status.message()
    );
    assert!(
        !cursors.is_empty() && cursors.len() < 300,
        "{}",
        cursors.len()
    );
    assert_eq!(cursors, (1..=cursors.len() as u64).collect::<Vec<_>>());
}

/// A subscriber whose filter passes nothing makes its feed look through
/// the whole journal; on a runtime shared with raft and the agents' streams
/// that must come in pages that let other tasks run between them, not one
/// scan of millions of records that holds a worker thread meanwhile.
#[tokio::test]
async fn a_filter_that_passes_nothing_lets_other_tasks_run_between_pages() {
    let batch = |from: u64| {
        (from..from + 4_200)
            .map(|s| finding(s, Severity::Low, vec![]))
            .collect::<Vec<_>>()
    };
    let mut commands = vec![register("a")];
    for i in 0..5 {
        commands.push(append("a", batch(1 + i * 4_200)));
    }
    let f = Fixture::new(commands).await;
    assert!(f.service.state.last_event_cursor() >= 5 * 4_096);
    let response = f
        .subscribe(pb::SubscribeRequest {
            rules: vec!["no.such.rule".into()],
            stop_at_head: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let stream = response.into_inner();
    // The feed is spawned on this (single-threaded) runtime: one yield
    // lets it run once. Had it scanned to the head without yielding, it
    // would have ended (stop_at_head) and closed the stream already.
    tokio::task::yield_now().await;
    assert!(
        !stream.as_ref().is_closed(),
        "the feed scanned the whole journal without letting another task run"
    );
    let mut stream = stream;
    let rest = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the feed reaches the head");
    assert!(rest.is_none(), "nothing passes: {rest:?}");
}

/// A compromised agent chooses the host name it reports: naming another
/// agent's id as its host name must not put its events among that
/// agent's in a subscriber's `hosts` filter (agent ids are the
/// certificate's; host names are only what an agent says).
#[tokio::test]
async fn an_agent_reporting_another_agents_id_as_its_hostname_is_not_that_agent() {
    let mut mallory = register("mallory");
    if let Command::RegisterAgent { agent, .. } = &mut mallory {
        agent.hostname = "victim".into();
    }
    let f = Fixture::new(vec![
        register("victim"),
        mallory,
        append("victim", vec![finding(1, Severity::High, vec![])]), // 1
        append("mallory", vec![finding(1, Severity::High, vec![])]), // 2
    ])
    .await;
    let by_id = f
        .subscribe(pb::SubscribeRequest {
            hosts: vec!["victim".into()],
            stop_at_head: true,
            include_record: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let events = drain(by_id).await;
    let agents: Vec<(u64, String)> = events
        .iter()
        .map(|e| (e.cursor, e.alert.as_ref().unwrap().agent_id.clone()))
        .collect();
    assert_eq!(agents, vec![(1, "victim".to_string())]);
    // A host name no agent has as its id still selects by host name.
    let by_name = f
        .subscribe(pb::SubscribeRequest {
            hosts: vec!["victim.example".into()],
            stop_at_head: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let cursors: Vec<u64> = drain(by_name).await.iter().map(|e| e.cursor).collect();
    assert_eq!(cursors, vec![1]);
}

/// A siem-reader certificate opening subscriptions without end: past the
/// node's bound each is refused RESOURCE_EXHAUSTED (a client retries it),
/// and a subscription that ends gives its place back.
#[tokio::test]
async fn subscriptions_past_the_bound_are_refused_until_one_ends() {
    let f = Fixture::new(mixed()).await;
    let service = SiemExportImpl::with_limit(f.service.state.clone(), 2);
    let open = || async {
        service
            .subscribe(tonic::Request::new(pb::SubscribeRequest::default()))
            .await
    };
    let first = open().await.unwrap();
    let _second = open().await.unwrap();
    let refused = open().await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        match open().await {
            Ok(r) => {
                reopened = Some(r);
                break;
            }
            Err(s) => assert_eq!(s.code(), Code::ResourceExhausted),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened.is_some(), "a place is given back when a feed ends");
}

/// The largest cursors a peer can send: ahead, waiting, no panic in the
/// journal's range arithmetic (the feed keeps serving after an event).
#[tokio::test]
async fn the_largest_cursors_are_ahead_and_wait_without_a_panic() {
    let mut f = Fixture::new(mixed()).await;
    let mut streams = Vec::new();
    for cursor in [u64::MAX, u64::MAX - 1] {
        let response = f
            .subscribe(pb::SubscribeRequest {
                cursor,
                stop_at_head: cursor == u64::MAX - 1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(header(&response, "vigil-cursor-state"), "ahead");
        streams.push(response.into_inner());
    }
    f.apply(vec![audit("policy.push")]).await;
    for stream in &mut streams {
        let next = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        match next {
            // Waiting (past the head) or ended (stop_at_head is behind).
            Err(_) | Ok(None) => {}
            Ok(Some(e)) => panic!("nothing is after such a cursor: {e:?}"),
        }
    }
}

/// A client that subscribes with a filter passing nothing and goes away at
/// once: its feed stops at its next page rather than scanning the whole
/// journal for no one while it holds a subscription's place.
#[tokio::test]
async fn a_feed_whose_client_left_stops_at_its_next_page() {
    let batch = |from: u64| {
        (from..from + 4_200)
            .map(|s| finding(s, Severity::Low, vec![]))
            .collect::<Vec<_>>()
    };
    let mut commands = vec![register("a")];
    for i in 0..3 {
        commands.push(append("a", batch(1 + i * 4_200)));
    }
    let f = Fixture::new(commands).await;
    let service = SiemExportImpl::with_limit(f.service.state.clone(), 1);
    let nothing = || pb::SubscribeRequest {
        rules: vec!["no.such.rule".into()],
        ..Default::default()
    };
    let gone = service
        .subscribe(tonic::Request::new(nothing()))
        .await
        .unwrap();
    drop(gone);
    // Its feed runs once on this single-threaded runtime.
    tokio::task::yield_now().await;
    let again = service.subscribe(tonic::Request::new(nothing())).await;
    assert!(
        again.is_ok(),
        "the place of a client that left is still held: {:?}",
        again.err()
    );
}

/// One certificate (a SIEM that reconnects without closing, or a stolen
/// reader key) cannot take every place: past its own share its
/// subscriptions are refused while another certificate still subscribes.
#[tokio::test]
async fn one_certificate_cannot_take_every_subscription_place() {
    let f = Fixture::new(mixed()).await;
    let service = SiemExportImpl::with_limits(f.service.state.clone(), 8, 2);
    let as_reader = |serial: &str| {
        let mut req = tonic::Request::new(pb::SubscribeRequest::default());
        req.extensions_mut()
            .insert(crate::service::Caller::Authenticated {
                identity: vigil_pki::Identity::Operator {
                    role: vigil_pki::OperatorRole::SiemReader,
                    name: format!("reader-{serial}"),
                },
                serial: serial.into(),
            });
        req
    };
    let a1 = service.subscribe(as_reader("aa01")).await.unwrap();
    let _a2 = service.subscribe(as_reader("aa01")).await.unwrap();
    let refused = service.subscribe(as_reader("aa01")).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("aa01"), "{}", refused.message());
    let _b = service.subscribe(as_reader("bb02")).await.unwrap();
    // Its share comes back when one of its streams ends.
    drop(a1);
    let mut again = None;
    for _ in 0..100 {
        if let Ok(r) = service.subscribe(as_reader("aa01")).await {
            again = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some());
}
