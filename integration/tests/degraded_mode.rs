//! Without eBPF the agent polls /proc, still finds a process holding a
//! model file, and says it is degraded, to the control plane and in
//! `vigilctl status`. Forces procfs mode, so it needs no privileges.

use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::{binary, wait_for, Agent, ControlPlane};
use vigil_proto::admin::v1::ClusterStatusRequest;
use vigil_proto::types::v1::SensorMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn procfs_polling_finds_a_model_holder_and_reports_degraded_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "degraded-agent",
        &["--sensor-mode", "procfs", "--procfs-poll-ms", "200"],
    )
    .await;

    let model = tmp.path().join("held.safetensors");
    let mut header = 2u64.to_le_bytes().to_vec();
    header.extend_from_slice(b"{}");
    std::fs::write(&model, &header).unwrap();
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import time\nf = open({:?}, 'rb')\ntime.sleep(30)\n",
            model
        ))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = holder.id();
    let alert = wait_for(
        "the poller to find the model holder",
        Duration::from_secs(15),
        || async {
            cp.alerts().await.into_iter().find(|a| {
                a.finding
                    .as_ref()
                    .and_then(|f| f.process.as_ref())
                    .map(|p| p.pid)
                    == Some(pid)
            })
        },
    )
    .await;
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(
        alert.finding.unwrap().file.unwrap().path,
        model.to_str().unwrap()
    );

    let mut admin = cp.admin().await;
    let status = admin
        .cluster_status(ClusterStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let agent = status
        .agents
        .iter()
        .find(|a| a.agent_id == "degraded-agent")
        .unwrap();
    assert_eq!(agent.sensor_mode(), SensorMode::ProcfsDegraded);
    assert_eq!(agent.hooks, vec!["procfs-poll/200ms"]);
    let text = Command::new(binary("vigilctl"))
        .args(["--endpoint", &cp.endpoint(), "status"])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains("mode=procfs-degraded"), "{text}");
}
