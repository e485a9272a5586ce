//! Issue #19, the respond stage under attack: a kill acts on the offender's
//! process tree, so a worker that double-forked (reparented to init) and
//! keeps the model file open would live on. A kill for a model file also
//! kills the other processes of the offender's uid, born after it, that
//! hold the file open (never another uid's, nor one that held it before the
//! offender started, nor a protected one), and says so. Holding is a
//! descriptor or a mapping: a loader that maps the weights and closes the
//! file keeps them all the same. Root (eBPF, a kill rule; the offender runs
//! as nobody).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::alert_filter::alerts_of_rule as of_rule;
use vigil_integration::policy_fixture::{python_copy, write_gguf, write_signed_bundle};
use vigil_integration::unprivileged::shared_dir;
use vigil_integration::{privileged, wait_for, Agent, ControlPlane, Killed};
use vigil_policy::SigningKey;

const RULES: &str = "id: test.holders\ndescription: d\nseverity: critical\nwhen: [model_file]\ncondition: process.name == \"holder-parent\"\naction: kill\n";

/// The offender: a worker double-forks away (`setsid -f`: its parent
/// exits, it is reparented) with the model (argv[1]) open as `sleep`, and
/// writes its pid to argv[2]; the offender prints that pid, then opens the
/// model itself and holds it.
const OFFENDER: &str = r#"
import os, subprocess, sys, time
model, pidfile = sys.argv[1], sys.argv[2]
subprocess.run(["setsid", "-f", "/bin/sh", "-c", 'exec 3<"$1"; echo $$ > "$2.tmp"; mv "$2.tmp" "$2"; exec sleep 120', "sh", model, pidfile],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(2000):
    if os.path.exists(pidfile):
        break
    time.sleep(0.005)
worker = int(open(pidfile).read())
for _ in range(2000):
    if os.readlink("/proc/%d/exe" % worker).endswith("sleep"):
        break
    time.sleep(0.005)
print(worker, flush=True)
time.sleep(0.5)
open(model, "rb").read(4)
time.sleep(60)
"#;

/// The offender: a worker double-forks away (its parent exits, it is
/// reparented), runs as argv[3] (another name than the rule's), opens the
/// model (argv[1]), maps it, closes the descriptor and writes its pid to
/// argv[2]; the offender prints that pid, then opens the model itself.
/// The mapping goes through libc: Python's own mmap keeps a dup of the
/// descriptor, and the worker must hold none.
const MAPPING_OFFENDER: &str = r#"
import os, sys, time
model, pidfile, mapper = sys.argv[1], sys.argv[2], sys.argv[3]
WORKER = """
import ctypes, os, sys, time
model, pidfile = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
fd = os.open(model, os.O_RDONLY)
size = os.fstat(fd).st_size
addr = libc.mmap(None, size, 1, 2, fd, 0)  # PROT_READ, MAP_PRIVATE
assert addr not in (None, ctypes.c_void_p(-1).value), ctypes.get_errno()
os.close(fd)
assert not [f for f in os.listdir("/proc/self/fd") if int(f) > 2 and os.path.realpath("/proc/self/fd/" + f) == os.path.realpath(model)]
ctypes.string_at(addr, 4)
open(pidfile + ".tmp", "w").write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)
time.sleep(120)
"""
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(mapper, [mapper, "-c", WORKER, model, pidfile])
    os._exit(0)
os.wait()
for _ in range(2000):
    if os.path.exists(pidfile):
        break
    time.sleep(0.005)
worker = int(open(pidfile).read())
print(worker, flush=True)
time.sleep(0.5)
open(model, "rb").read(4)
time.sleep(60)
"#;

/// Whether `pid` is gone (or a zombie waiting for init to reap it).
fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_worker_holding_the_model_open_is_killed_too() {
    if !privileged("a_double_forked_worker_holding_the_model_open_is_killed_too") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let bundle = tmp.path().join("bundle.json");
    write_signed_bundle(&bundle, &key, 1, RULES);
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "holders-host",
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
        ],
    )
    .await;
    let dir = shared_dir(tmp.path(), "work");
    let model = dir.join("m.gguf");
    write_gguf(&model);
    let python = python_copy(&dir, "holder-parent");
    // Root holds the same file open: another uid, spared.
    let mut bystander = Killed(
        Command::new("sleep")
            .arg("120")
            .stdin(std::fs::File::open(&model).unwrap())
            .spawn()
            .unwrap(),
    );
    // So does a process of nobody's that held it before the offender
    // started (another workload on the same model): spared.
    let mut earlier = Killed(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sleep",
                "120",
            ])
            .stdin(std::fs::File::open(&model).unwrap())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(100));
    let mut offender = Killed(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&python)
            .args(["-c", OFFENDER])
            .arg(&model)
            .arg(dir.join("worker.pid"))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = offender.0.id();
    let mut line = String::new();
    BufReader::new(offender.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let worker: u32 = line.trim().parse().unwrap_or(0);
    assert!(worker > 1, "offender said {line:?}");
    let ppid = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap();
    assert!(
        !ppid.contains(&format!(" {pid} ")),
        "the worker is still the offender's child: {ppid}"
    );

    let summary = wait_for(
        "the kill's outcome for the offender",
        Duration::from_secs(30),
        || async {
            let all = cp.alerts().await;
            of_rule(&all, "test.holders")
                .iter()
                .map(|a| a.finding.as_ref().unwrap())
                .find(|f| f.process.as_ref().is_some_and(|p| p.pid == pid) && f.action == "kill")
                .map(|f| f.summary.clone())
        },
    )
    .await;
    assert!(summary.contains(&format!("killed pid {pid}")), "{summary}");
    wait_for("the worker's end", Duration::from_secs(10), || async {
        gone(worker).then_some(())
    })
    .await;
    assert!(
        summary.contains("1 other processes of uid 65534 holding")
            && summary.contains(&format!("[{worker}]")),
        "{summary}"
    );
    assert!(
        bystander.0.try_wait().unwrap().is_none(),
        "root's process holding the file was killed"
    );
    assert!(
        earlier.0.try_wait().unwrap().is_none(),
        "nobody's process that held the file before the offender was killed"
    );
    let _ = bystander.0.kill();
    let _ = earlier.0.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_double_forked_worker_holding_only_a_mapping_of_the_model_is_killed_too() {
    if !privileged("a_double_forked_worker_holding_only_a_mapping_of_the_model_is_killed_too") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let bundle = tmp.path().join("bundle.json");
    write_signed_bundle(&bundle, &key, 1, RULES);
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "mapping-holders-host",
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
        ],
    )
    .await;
    let dir = shared_dir(tmp.path(), "work");
    let model = dir.join("m.gguf");
    write_gguf(&model);
    let python = python_copy(&dir, "holder-parent");
    let mapper = python_copy(&dir, "model-mapper");
    let mut offender = Killed(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&python)
            .args(["-c", MAPPING_OFFENDER])
            .arg(&model)
            .arg(dir.join("worker.pid"))
            .arg(&mapper)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = offender.0.id();
    let mut line = String::new();
    BufReader::new(offender.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let worker: u32 = line.trim().parse().unwrap_or(0);
    assert!(worker > 1, "offender said {line:?}");
    let stat = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap();
    assert!(
        !stat.contains(&format!(" {pid} ")),
        "the worker is still the offender's child: {stat}"
    );
    let maps = std::fs::read_to_string(format!("/proc/{worker}/maps")).unwrap();
    assert!(
        maps.contains(model.to_str().unwrap()),
        "the worker does not map the model: {maps}"
    );

    let summary = wait_for(
        "the kill's outcome for the offender",
        Duration::from_secs(30),
        || async {
            let all = cp.alerts().await;
            of_rule(&all, "test.holders")
                .iter()
                .map(|a| a.finding.as_ref().unwrap())
                .find(|f| f.process.as_ref().is_some_and(|p| p.pid == pid) && f.action == "kill")
                .map(|f| f.summary.clone())
        },
    )
    .await;
    assert!(summary.contains(&format!("killed pid {pid}")), "{summary}");
    wait_for(
        "the mapping worker's end",
        Duration::from_secs(10),
        || async { gone(worker).then_some(()) },
    )
    .await;
    assert!(
        summary.contains("1 other processes of uid 65534 holding")
            && summary.contains(&format!("[{worker}]")),
        "{summary}"
    );
}
