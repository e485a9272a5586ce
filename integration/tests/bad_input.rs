//! Bad input on the wire gets a clear error naming what is wrong, never a
//! crash, and loses nothing already accepted. Needs no privileges.

use tonic::codegen::http::uri::PathAndQuery;
use vigil_integration::raw_agent::{
    findings, heartbeat, hello_with_sensor_mode, model_file_finding as finding, RawAgentStream,
};
use vigil_integration::raw_codec::RawCodec;
use vigil_integration::ControlPlane;
use vigil_proto::admin::v1 as admin_pb;
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;
use vigil_proto::types::v1 as types_pb;

async fn start() -> (tempfile::TempDir, ControlPlane) {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
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
        .stream(tokio_stream::iter(vec![hello_with_sensor_mode(
            "bad-input-agent",
            "h",
            42,
        )]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "hello.sensor_mode: unknown value 42");

    let not_hello = heartbeat(pb::Heartbeat::default());
    let err = client
        .stream(tokio_stream::iter(vec![not_hello]))
        .await
        .unwrap_err();
    assert_eq!(err.message(), "the first message must be hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_finding_is_rejected_by_seq_and_the_rest_of_its_batch_is_kept() {
    let (_tmp, cp) = start().await;
    let mut agent = RawAgentStream::open(
        &cp,
        8,
        vec![
            hello_with_sensor_mode("bad-input-agent", "h", types_pb::SensorMode::Ebpf as i32),
            findings(vec![
                finding(1, 99),
                finding(2, types_pb::Severity::High as i32),
            ]),
        ],
    )
    .await;
    let mut rejected = None;
    let mut acked = 0;
    while acked < 2 {
        match agent.next_answer().await {
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
    agent
        .send(findings(vec![finding(2, types_pb::Severity::High as i32)]))
        .await;
    assert!(matches!(
        agent.next_answer().await,
        pb::control_message::Body::Ack(pb::Ack { up_to_seq: 2 })
    ));
    assert_eq!(cp.alerts().await.len(), 1);
}
