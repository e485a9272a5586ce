//! What the SIEM benchmarks share: a backlog of findings the size of real
//! ones committed before anything is timed, and a subscription that reads
//! the export from its start.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;
use vigil_integration::raw_agent::{findings, hello, model_file_finding};
use vigil_integration::ControlPlane;
use vigil_proto::agent::v1::agent_service_client::AgentServiceClient;
use vigil_proto::siem::v1 as siem_pb;
use vigil_proto::siem::v1::siem_export_client::SiemExportClient;
use vigil_proto::types::v1::Finding;

/// Commits `events` findings (see [`realistic`]) from `agents` raw
/// sessions (agent ids `<prefix>-0`, `<prefix>-1`...), in batches of
/// `batch`, each acked (after commit) before the next.
pub(crate) async fn preload(
    cp: &ControlPlane,
    events: u64,
    agents: u64,
    batch: u64,
    prefix: &str,
) -> anyhow::Result<()> {
    let channel = vigil_integration::try_connect(&cp.endpoint()).await?;
    let mut tasks = Vec::new();
    for a in 0..agents {
        let channel = channel.clone();
        let agent_id = format!("{prefix}-{a}");
        tasks.push(tokio::spawn(async move {
            let mut client = AgentServiceClient::new(channel);
            let (tx, rx) = mpsc::channel(4);
            tx.send(hello(&agent_id, &format!("host-{a}"))).await?;
            let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
            let mut seq = 0;
            while seq < events / agents {
                let batch: Vec<_> = (0..batch)
                    .map(|_| {
                        seq += 1;
                        realistic(model_file_finding(seq, 3))
                    })
                    .collect();
                tx.send(findings(batch)).await?;
                crate::transport_bench::acked_up_to(&mut inbound, seq).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// A finding the size of a real one: a command line, a digest, a cgroup.
pub(crate) fn realistic(mut f: Finding) -> Finding {
    if let Some(p) = f.process.as_mut() {
        p.argv = [
            "python3",
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            "/srv/models/llama-3-8b-instruct.safetensors",
            "--port",
            "8000",
        ]
        .map(String::from)
        .to_vec();
        p.exe_sha256 = "ab".repeat(32);
        p.cgroup_path = "/system.slice/inference.service".into();
        p.uid = 1000;
        p.ppid = 1;
    }
    f.summary = "python3 (pid 77) opened model file /srv/models/llama-3-8b-instruct.safetensors; no approved workload covers it".into();
    f
}

/// A SIEM subscription from cursor 0 (events up to 64 MiB), ending at the
/// head when `stop_at_head`.
pub(crate) async fn subscribe_from_start(
    channel: Channel,
    stop_at_head: bool,
) -> anyhow::Result<Streaming<siem_pb::SiemEvent>> {
    Ok(SiemExportClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .subscribe(siem_pb::SubscribeRequest {
            cursor: 0,
            stop_at_head,
            ..Default::default()
        })
        .await?
        .into_inner())
}
