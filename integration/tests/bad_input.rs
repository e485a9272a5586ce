//! Bad input on the wire gets a clear error naming what is wrong, never a
//! crash, and loses nothing already accepted. Needs no privileges.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use vigil_integration::raw_codec::RawCodec;
use vigil_integration::{free_port, ControlPlane};
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;
use vigil_proto::types::v1 as types_pb;

fn hello(sensor_mode: i32) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            agent_id: "bad-input-agent".into(),
            hostname: "h".into(),
            agent_version: "0".into(),
            sensor_mode,
            kernel_release: "k".into(),
            hooks: vec![],
        })),
    }
}

fn finding(seq: u64, severity: i32) -> types_pb::Finding {
    types_pb::Finding {
        seq,
        rule_id: "r".into(),
        severity,
        signal: types_pb::SignalKind::ModelFile as i32,
        observed_at_unix_nanos: 1,
        process: Some(types_pb::Process {
            pid: 77,
            exe: "/usr/bin/python3".into(),
            ..Default::default()
        }),
        file: Some(types_pb::FileObject {
            path: "/m/model.onnx".into(),
        }),
        net: None,
        gpu: None,
        action: String::new(),
        summary: "s".into(),
    }
}

async fn start() -> (tempfile::TempDir, ControlPlane) {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&tmp.path().join("cp"), free_port());
    cp.wait_leader().await;
    (tmp, cp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_gets_a_clear_error_and_the_server_stays_up() {
    let (_tmp, cp) = start().await;
    let mut grpc = tonic::client::Grpc::new(cp.channel().await);
    grpc.ready().await.unwrap();
    // Field 1 as a varint whose bytes never end.
    let garbage = vec![0x08, 0xff, 0xff, 0xff];
    let err = grpc
        .unary(
            tonic::Request::new(garbage.clone()),
            PathAndQuery::from_static("/vigil.admin.v1.AdminService/QueryAlerts"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert!(err.message().to_lowercase().contains("decode"), "{err:?}");

    grpc.ready().await.unwrap();
    let err = grpc
        .streaming(
            tonic::Request::new(tokio_stream::iter(vec![garbage])),
            PathAndQuery::from_static("/vigil.agent.v1.AgentService/Stream"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("malformed agent message"), "{err:?}");

    let mut admin = cp.admin().await;
    let status = admin
        .cluster_status(admin_pb::ClusterStatusRequest {})
        .await
        .expect("still serving");
    assert_eq!(status.into_inner().leader_id, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_with_an_unknown_enum_value_is_refused_naming_the_field() {
    let (_tmp, cp) = start().await;
    let mut client = AgentServiceClient::new(cp.channel().await);
    let err = client
        .stream(tokio_stream::iter(vec![hello(42)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "hello.sensor_mode: unknown value 42");

    let not_hello = pb::AgentMessage {
        body: Some(pb::agent_message::Body::Heartbeat(pb::Heartbeat::default())),
    };
    let err = client
        .stream(tokio_stream::iter(vec![not_hello]))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "the first message must be hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_finding_is_rejected_by_seq_and_the_rest_of_its_batch_is_kept() {
    let (_tmp, cp) = start().await;
    let mut client = AgentServiceClient::new(cp.channel().await);
    let (tx, rx) = mpsc::channel(8);
    tx.send(hello(types_pb::SensorMode::Ebpf as i32))
        .await
        .unwrap();
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Findings(pb::FindingBatch {
            findings: vec![finding(1, 99), finding(2, types_pb::Severity::High as i32)],
        })),
    })
    .await
    .unwrap();
    let mut inbound = client
        .stream(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // The next answer to findings; what every session is sent on its own
    // (the policy bundle, the approved workloads) is passed over.
    async fn answer(
        inbound: &mut tonic::Streaming<pb::ControlMessage>,
    ) -> pb::control_message::Body {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), inbound.message())
                .await
                .expect("an answer")
                .expect("a message")
                .expect("the stream stays open");
            match msg.body.expect("a body") {
                pb::control_message::Body::Policy(_) | pb::control_message::Body::Workloads(_) => {}
                other => return other,
            }
        }
    }
    let mut rejected = None;
    let mut acked = 0;
    while acked < 2 {
        match answer(&mut inbound).await {
            pb::control_message::Body::Rejected(r) => rejected = Some(r),
            pb::control_message::Body::Ack(a) => acked = a.up_to_seq,
            other => panic!("unexpected control message {other:?}"),
        }
    }
    let r = rejected.expect("the bad finding was rejected");
    assert_eq!(r.seq, 1);
    assert_eq!(r.reason, "findings[0].severity: unknown value 99");
    let alerts = cp.alerts().await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].finding.as_ref().unwrap().seq, 2);

    // A resend of the same batch (agent reconnect) stores nothing twice.
    tx.send(pb::AgentMessage {
        body: Some(pb::agent_message::Body::Findings(pb::FindingBatch {
            findings: vec![finding(2, types_pb::Severity::High as i32)],
        })),
    })
    .await
    .unwrap();
    assert!(matches!(
        answer(&mut inbound).await,
        pb::control_message::Body::Ack(pb::Ack { up_to_seq: 2 })
    ));
    assert_eq!(cp.alerts().await.len(), 1);
}
