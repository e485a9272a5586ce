//! A model file opened on this host becomes an alert that vigilctl and a
//! SIEM client see; nothing acknowledged is lost across a control-plane
//! crash; the agent keeps findings while the control plane is down.
//! Real eBPF, real control-plane process, real gRPC: runs as root.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vigil_integration::siem_clients::follow_export;
use vigil_integration::{
    binary, free_port, privileged, python_opens, wait_for, Agent, ControlPlane,
};
use vigil_proto::siem::v1 as siem_pb;
use vigil_proto::types::v1::Alert;

fn alert_for(alerts: &[Alert], pid: u32, path: &str) -> Option<Alert> {
    alerts
        .iter()
        .find(|a| {
            let f = a.finding.as_ref().unwrap();
            f.process.as_ref().unwrap().pid == pid
                && f.file.as_ref().is_some_and(|o| o.path == path)
        })
        .cloned()
}

async fn wait_alert(cp: &ControlPlane, pid: u32, path: &str) -> Alert {
    wait_for(
        &format!("an alert for pid {pid} opening {path}"),
        Duration::from_secs(15),
        || async { alert_for(&cp.alerts().await, pid, path) },
    )
    .await
}

async fn next_siem_event_for(
    rx: &mut mpsc::UnboundedReceiver<siem_pb::SiemEvent>,
    seen: &mut Vec<u64>,
    index: u64,
) -> siem_pb::SiemEvent {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no SIEM event for alert {index}; saw cursors {seen:?}"))
            .expect("SIEM stream ended early");
        seen.push(ev.cursor);
        // The cursor is the event's place among every kind (audit entries
        // too), not the alert's index.
        if ev.alert.as_ref().is_some_and(|a| a.index == index) {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_file_open_reaches_vigilctl_and_siem_and_survives_a_control_plane_crash() {
    if !privileged("model_file_open_reaches_vigilctl_and_siem") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cp = ControlPlane::start(&tmp.path().join("cp"), port);
    cp.wait_leader().await;
    let _agent = Agent::start(&tmp.path().join("agent"), &cp.endpoint(), "e2e-agent").await;
    let mut siem = follow_export(cp.endpoint(), 0);
    // An operator following alerts live, as in the README's tour.
    let mut follow = Command::new(binary("vigilctl"))
        .args(["--endpoint", &cp.endpoint(), "alerts", "--follow", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (follow_tx, follow_rx) = std::sync::mpsc::channel::<String>();
    let follow_out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(follow_out)
            .lines()
            .map_while(Result::ok)
        {
            if follow_tx.send(line).is_err() {
                return;
            }
        }
    });

    // 1. python3 opens model.onnx → alert in the control plane.
    let models = tmp.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    let model = models.join("model.onnx");
    std::fs::write(&model, b"\x08\x07").unwrap();
    let started = Instant::now();
    let pid = python_opens(&model);
    let model_path = model.to_str().unwrap();
    let first = wait_alert(&cp, pid, model_path).await;
    eprintln!(
        "alert visible {:?} after python3 started",
        started.elapsed()
    );
    let finding = first.finding.clone().unwrap();
    let process = finding.process.clone().unwrap();
    assert!(process.exe.contains("python"), "exe {}", process.exe);
    assert!(
        process.argv.iter().any(|a| a == model_path),
        "argv {:?}",
        process.argv
    );
    assert_eq!(first.agent_id, "e2e-agent");

    // 2. vigilctl shows it, naming the python process and the file.
    let out = Command::new(binary("vigilctl"))
        .args(["--endpoint", &cp.endpoint(), "alerts", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout).unwrap();
    let shown: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let row = shown
        .iter()
        .find(|v| v["finding"]["process"]["pid"] == pid)
        .unwrap_or_else(|| panic!("vigilctl alerts lacks pid {pid}:\n{lines}"));
    assert_eq!(row["finding"]["file"]["path"], model_path);
    assert!(row["finding"]["process"]["exe"]
        .as_str()
        .unwrap()
        .contains("python"));
    let text = Command::new(binary("vigilctl"))
        .args(["--endpoint", &cp.endpoint(), "alerts"])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(model_path) && text.contains("python"),
        "{text}"
    );

    // ...and `vigilctl alerts --follow` printed it as it arrived.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = follow_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("vigilctl alerts --follow printed the alert");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["finding"]["process"]["pid"] == pid {
            assert_eq!(v["finding"]["file"]["path"], model_path);
            break;
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();

    // 3. The SIEM client receives the same alert, as OCSF.
    let mut cursors = Vec::new();
    let ev = next_siem_event_for(&mut siem, &mut cursors, first.index).await;
    assert_eq!(ev.alert.as_ref().unwrap(), &first);
    let ocsf: serde_json::Value = serde_json::from_str(&ev.ocsf_json).unwrap();
    assert_eq!(ocsf["class_uid"], 2004);
    assert_eq!(ocsf["evidences"][0]["file"]["path"], model_path);
    assert_eq!(ocsf["evidences"][0]["process"]["pid"], pid);

    // 4. The control plane crashes (SIGKILL); a model is opened while it is
    //    down; it comes back on the same data: nothing acked is lost, the
    //    spooled finding arrives, and the SIEM client resumes from its cursor.
    cp.daemon.kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while siem.recv().await.is_some() {}
    })
    .await;
    let second = models.join("second.safetensors");
    std::fs::write(&second, b"").unwrap();
    let pid2 = python_opens(&second);
    tokio::time::sleep(Duration::from_millis(300)).await;
    cp = ControlPlane::start(&cp.data_dir.clone(), port);
    cp.wait_leader().await;
    let after = wait_alert(&cp, pid2, second.to_str().unwrap()).await;
    let alerts = cp.alerts().await;
    let kept = alert_for(&alerts, pid, model_path).expect("the acked alert survived the crash");
    assert_eq!(kept, first);
    let indexes: Vec<u64> = alerts.iter().map(|a| a.index).collect();
    let expected: Vec<u64> = (1..=indexes.len() as u64).collect();
    assert_eq!(indexes, expected, "alert indexes are dense");

    let resume_from = *cursors.last().unwrap();
    let mut siem = follow_export(cp.endpoint(), resume_from);
    let mut resumed = Vec::new();
    next_siem_event_for(&mut siem, &mut resumed, after.index).await;
    let all: Vec<u64> = cursors.iter().chain(resumed.iter()).copied().collect();
    let want: Vec<u64> = (1..=*all.last().unwrap()).collect();
    assert_eq!(
        all, want,
        "SIEM cursors: no gap, no duplicate across the restart"
    );
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), all.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_started_before_its_control_plane_keeps_retrying_and_loses_nothing() {
    if !privileged("an_agent_started_before_its_control_plane") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let agent = Agent::start(&tmp.path().join("agent"), &endpoint, "early-agent").await;
    let model = tmp.path().join("early.gguf");
    std::fs::write(&model, b"GGUF\x03\x00\x00\x00").unwrap();
    let pid = python_opens(&model);
    // The agent reports the outage and retries with backoff.
    agent
        .wait_for_log(
            "the agent to report the control plane unreachable",
            Duration::from_secs(10),
            "control plane unreachable",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let cp = ControlPlane::start(&tmp.path().join("cp"), port);
    cp.wait_leader().await;
    let alert = wait_for("the spooled finding", Duration::from_secs(20), || async {
        alert_for(&cp.alerts().await, pid, model.to_str().unwrap())
    })
    .await;
    assert!(alert.finding.unwrap().summary.contains("gguf"));
    let log = std::fs::read_to_string(&agent.log).unwrap();
    assert!(log.contains("retry_in_ms"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
