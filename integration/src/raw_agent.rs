//! Hand-built agent-stream messages (hello, a finding, heartbeats) and a
//! raw `AgentService/Stream` client, for tests that speak for an agent
//! without running one: bad input, metrics, a control plane's full disk.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use vigil_proto::agent::v1 as pb;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;
use vigil_proto::types::v1 as types_pb;

use crate::ControlPlane;

/// A `Hello` from `agent_id` on `hostname`, sensor mode eBPF.
pub fn hello(agent_id: &str, hostname: &str) -> pb::AgentMessage {
    hello_with_sensor_mode(agent_id, hostname, types_pb::SensorMode::Ebpf as i32)
}

/// A `Hello` with a raw `sensor_mode` (an unknown value is bad input).
pub fn hello_with_sensor_mode(
    agent_id: &str,
    hostname: &str,
    sensor_mode: i32,
) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Hello(pb::Hello {
            agent_id: agent_id.into(),
            hostname: hostname.into(),
            agent_version: "0".into(),
            sensor_mode,
            kernel_release: "k".into(),
            hooks: vec![],
        })),
    }
}

/// A model-file finding of python3 (pid 77) on `/m/model.onnx`, with a raw
/// `severity` (an unknown value is bad input).
pub fn model_file_finding(seq: u64, severity: i32) -> types_pb::Finding {
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
            model: None,
        }),
        net: None,
        gpu: None,
        action: String::new(),
        summary: "s".into(),
    }
}

/// A batch of `findings`.
pub fn findings(findings: Vec<types_pb::Finding>) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Findings(pb::FindingBatch {
            findings,
        })),
    }
}

/// A `heartbeat`.
pub fn heartbeat(heartbeat: pb::Heartbeat) -> pb::AgentMessage {
    pb::AgentMessage {
        body: Some(pb::agent_message::Body::Heartbeat(heartbeat)),
    }
}

/// An open agent stream: what the test sends, and what the control plane
/// answers.
pub struct RawAgentStream {
    pub tx: mpsc::Sender<pb::AgentMessage>,
    pub inbound: tonic::Streaming<pb::ControlMessage>,
}

impl RawAgentStream {
    /// Queues `first` (a channel of `capacity`), then opens the stream to
    /// `cp`: the control plane reads them as the stream's first messages.
    pub async fn open(
        cp: &ControlPlane,
        capacity: usize,
        first: Vec<pb::AgentMessage>,
    ) -> RawAgentStream {
        Self::open_on(cp.channel().await, capacity, first).await
    }

    /// As [`RawAgentStream::open`], over `channel` (mutual TLS with an
    /// agent's certificate, another node).
    pub async fn open_on(
        channel: Channel,
        capacity: usize,
        first: Vec<pb::AgentMessage>,
    ) -> RawAgentStream {
        let mut client = AgentServiceClient::new(channel);
        let (tx, rx) = mpsc::channel(capacity);
        for msg in first {
            tx.send(msg).await.unwrap();
        }
        let inbound = client
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        RawAgentStream { tx, inbound }
    }

    pub async fn send(&self, msg: pb::AgentMessage) {
        self.tx.send(msg).await.unwrap();
    }

    /// The next control message within 10 s; panics on none.
    pub async fn next_message(&mut self) -> pb::ControlMessage {
        tokio::time::timeout(Duration::from_secs(10), self.inbound.message())
            .await
            .expect("an answer")
            .expect("a message")
            .expect("the stream stays open")
    }

    /// The next answer to findings; what every session is sent on its own
    /// (the policy bundle, the approved workloads and models) is passed
    /// over.
    pub async fn next_answer(&mut self) -> pb::control_message::Body {
        loop {
            match self.next_message().await.body.expect("a body") {
                pb::control_message::Body::Policy(_)
                | pb::control_message::Body::Workloads(_)
                | pb::control_message::Body::Models(_) => {}
                other => return other,
            }
        }
    }

    /// The next approved-models message (other messages passed over),
    /// within `within`; panics on none.
    pub async fn next_models(&mut self, within: Duration) -> pb::ApprovedModels {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = tokio::time::timeout(left, self.inbound.message())
                .await
                .expect("approved models in time")
                .expect("a message")
                .expect("the stream stays open");
            if let Some(pb::control_message::Body::Models(m)) = msg.body {
                return m;
            }
        }
    }
}
