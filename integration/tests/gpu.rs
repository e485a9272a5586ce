//! GPU visibility against the fake libnvidia-ml (agent/fake-nvml), loaded
//! by the real agent through nvml-wrapper: two GPUs, three processes (one
//! approved, one not, one in its own PID namespace), NVML errors, and a
//! host without the library. Runs as root (the agent's eBPF sensors).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::{
    cgroup2_mount, fake_nvml_library, privileged, sha256_file, wait_for, Agent, ControlPlane,
    Killed,
};
use vigil_proto::types::v1::{Alert, SignalKind};

/// vigilctl's output, or None when it fails (the agent may not have
/// registered yet: callers poll).
fn try_vigilctl(cp: &ControlPlane, args: &[&str]) -> Option<String> {
    let out = cp.vigilctl(args);
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

fn vigilctl(cp: &ControlPlane, args: &[&str]) -> String {
    try_vigilctl(cp, args).unwrap_or_else(|| panic!("vigilctl {args:?} failed"))
}

fn gpu_uses(alerts: &[Alert]) -> Vec<&Alert> {
    alerts
        .iter()
        .filter(|a| a.finding.as_ref().unwrap().signal() == SignalKind::GpuUse)
        .collect()
}

/// The host pid of the only child of `parent` (unshare's forked child).
fn only_child(parent: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    let mut it = children.split_whitespace();
    let child = it.next()?.parse().ok()?;
    it.next().is_none().then_some(child)
}

/// A cgroup v2 directory, removed (after its processes) when dropped.
struct Cgroup {
    name: String,
    dir: PathBuf,
}

impl Cgroup {
    fn create(name: &str) -> Cgroup {
        let dir = cgroup2_mount().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Cgroup {
            name: name.to_string(),
            dir,
        }
    }

    fn adopt(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn sleep_binary() -> PathBuf {
    std::fs::canonicalize("/bin/sleep").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gpu_use_finding_for_the_one_unapproved_process() {
    if !privileged("one_gpu_use_finding_for_the_one_unapproved_process") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;

    // Approved: sleep (its digest is approved). Unapproved: python. In a PID
    // namespace: another approved sleep, pid 1 in its own namespace.
    let approved = Killed(Command::new(sleep_binary()).arg("60").spawn().unwrap());
    let unapproved = Killed(
        Command::new("python3")
            .args(["-c", "import time; time.sleep(60)"])
            .spawn()
            .unwrap(),
    );
    let unshare = Killed(
        Command::new("unshare")
            .args(["--pid", "--fork"])
            .arg(sleep_binary())
            .arg("60")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let namespaced = wait_for("unshare's child", Duration::from_secs(5), || async {
        only_child(unshare.0.id())
    })
    .await;
    // Its own cgroup, as a container runtime would give it.
    let container = Cgroup::create(&format!("vigil-test-gpu-{}", std::process::id()));
    container.adopt(namespaced);
    let status = std::fs::read_to_string(format!("/proc/{namespaced}/status")).unwrap();
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.ends_with("\t1"), "{nspid}");
    let (approved_pid, unapproved_pid) = (approved.0.id(), unapproved.0.id());

    let config = tmp.path().join("nvml.conf");
    std::fs::write(
        &config,
        format!(
            "driver 550.54.15
cuda 12040
gpu GPU-0a0a0a0a-0000-0000-0000-000000000001 1320000000001 00000000:01:00.0 85899345920 2147483648 0 NVIDIA H100 80GB HBM3
gpu GPU-0b0b0b0b-0000-0000-0000-000000000002 1320000000002 00000000:02:00.0 85899345920 402653184 0 NVIDIA H100 80GB HBM3
proc 0 compute {unapproved_pid} 536870912
proc 1 compute {approved_pid} 268435456
proc 1 compute {namespaced} 134217728
util 0 {unapproved_pid} 73 20
"
        ),
    )
    .unwrap();
    let sleep_digest = sha256_file(&sleep_binary());
    let lib = fake_nvml_library();
    let _agent = Agent::start_with_env(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "gpu-host",
        &[
            "--nvml-library",
            lib.to_str().unwrap(),
            "--gpu-poll-ms",
            "100",
            "--approved-exe-sha256",
            &sleep_digest,
        ],
        &[("VIGIL_FAKE_NVML_CONFIG", config.as_path())],
    )
    .await;

    let alert = wait_for("the gpu_use finding", Duration::from_secs(15), || async {
        gpu_uses(&cp.alerts().await).first().map(|a| (*a).clone())
    })
    .await;
    let f = alert.finding.unwrap();
    assert_eq!(f.process.as_ref().unwrap().pid, unapproved_pid);
    let gpu = f.gpu.unwrap();
    assert_eq!(gpu.uuid, "GPU-0a0a0a0a-0000-0000-0000-000000000001");
    assert_eq!(gpu.used_memory_bytes, Some(512 << 20));
    assert_eq!(gpu.sm_util_percent, Some(73));
    assert!(f.summary.contains("512.0 MiB"), "{}", f.summary);

    // The inventory reaches `vigilctl agents show`, the namespaced sleep
    // attributed by its host pid (and approved: it is sleep).
    let show = wait_for(
        "the inventory in vigilctl",
        Duration::from_secs(15),
        || async {
            let text = try_vigilctl(&cp, &["agents", "show", "gpu-host"])?;
            (text.matches("| approved").count() >= 2).then_some(text)
        },
    )
    .await;
    eprintln!("{show}");
    assert!(
        show.contains("GPUs: 2 (driver 550.54.15, CUDA 12.4)"),
        "{show}"
    );
    assert!(show.contains("GPU 0  NVIDIA H100 80GB HBM3  GPU-0a0a0a0a-0000-0000-0000-000000000001  serial 1320000000001  pci 00000000:01:00.0"), "{show}");
    let line = |pid: u32| {
        show.lines()
            .find(|l| l.trim_start().starts_with(&format!("pid {pid} ")))
            .unwrap_or_else(|| panic!("no line for pid {pid} in\n{show}"))
            .to_string()
    };
    assert!(line(unapproved_pid).ends_with("NOT APPROVED"), "{show}");
    assert!(line(approved_pid).ends_with("| approved"), "{show}");
    let ns_line = line(namespaced);
    assert!(ns_line.contains("(pid 1 in its namespace)"), "{ns_line}");
    assert!(
        ns_line.contains(&format!("| cgroup /{} |", container.name)),
        "{ns_line}"
    );
    assert!(ns_line.ends_with("| approved"), "{ns_line}");
    let json = vigilctl(&cp, &["agents", "show", "gpu-host", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["gpu"]["gpus"].as_array().unwrap().len(), 2);

    // Many polls later, still exactly one gpu_use finding.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let alerts = cp.alerts().await;
    let uses = gpu_uses(&alerts);
    assert_eq!(uses.len(), 1, "{uses:?}");

    // NVML errors become status lines; the agent goes on.
    std::fs::write(
        &config,
        format!(
            "{}fail nvmlDeviceGetProcessUtilization 1 3\nfail nvmlDeviceGetComputeRunningProcesses_v3 1 15\n",
            std::fs::read_to_string(&config).unwrap()
        ),
    )
    .unwrap();
    let show = wait_for(
        "NVML errors in vigilctl",
        Duration::from_secs(15),
        || async {
            let text = try_vigilctl(&cp, &["agents", "show", "gpu-host"])?;
            text.contains("lost").then_some(text)
        },
    )
    .await;
    assert!(
        show.contains("GPU 1 (GPU-0b0b0b0b-0000-0000-0000-000000000002): per-process utilisation not supported by this GPU or driver"),
        "{show}"
    );
    assert!(
        show.contains("GPU 1 (GPU-0b0b0b0b-0000-0000-0000-000000000002): lost (fell off the bus or stopped answering); compute processes unknown"),
        "{show}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_without_nvml_reports_no_nvidia_gpu() {
    if !privileged("a_host_without_nvml_reports_no_nvidia_gpu") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let missing = tmp.path().join("no-such-dir/libnvidia-ml.so.1");
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "no-gpu-host",
        &["--nvml-library", missing.to_str().unwrap()],
    )
    .await;
    let show = wait_for(
        "the GPU status in vigilctl",
        Duration::from_secs(15),
        || async {
            let text = try_vigilctl(&cp, &["agents", "show", "no-gpu-host"])?;
            text.contains("no NVIDIA GPU").then_some(text)
        },
    )
    .await;
    assert!(show.contains("GPUs: none"), "{show}");
    assert!(
        show.contains(&format!(
            "no NVIDIA GPU: NVML library {} could not be loaded",
            missing.display()
        )),
        "{show}"
    );
    // An unknown agent is a clear error, not a crash.
    let out = cp.vigilctl(&["agents", "show", "nobody"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no agent with id or hostname \"nobody\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
