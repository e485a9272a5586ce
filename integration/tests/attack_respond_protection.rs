//! Issue #19, the respond stage under attack: a local user poses as a
//! protected process. The agent never acts on itself, the control plane,
//! a `--protect-pid`, nor their ancestors. A user who runs the agent's own
//! binary non-dumpable (`PR_SET_DUMPABLE 0` turns the files under
//! /proc/PID root's) under their model runner, or who has a protected
//! process of theirs started by the runner, must not make the runner
//! unkillable: protection by executable needs real, effective and saved
//! uid 0 and the protected file itself, and only root-owned ancestors are
//! protected. Root (eBPF, a kill rule; the attacker runs as nobody).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::alert_filter::alerts_of_rule as of_rule;
use vigil_integration::policy_fixture::{python_copy, write_gguf, write_signed_bundle};
use vigil_integration::unprivileged::shared_dir;
use vigil_integration::{binary, compile_c, privileged, wait_for, Agent, ControlPlane, Killed};
use vigil_policy::SigningKey;

const RULES: &str = "id: test.posing\ndescription: d\nseverity: critical\nwhen: [model_file]\ncondition: process.name == \"posing-runner\"\naction: kill\n";

/// Preloaded into the agent's binary: makes the process non-dumpable and
/// holds it before `main` runs.
const NON_DUMPABLE: &str = r#"
#include <sys/prctl.h>
#include <unistd.h>
__attribute__((constructor)) static void hold(void) {
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    sleep(120);
    _exit(0);
}
"#;

/// The model runner: starts its child (argv[2...]; with `LD_PRELOAD` from
/// the environment variable `PRELOAD`, if set), prints the child's pid once
/// it runs, waits for a line on stdin, then opens the model (argv[1]) and
/// holds it.
const RUNNER: &str = r#"
import os, subprocess, sys, time
env = {"LD_PRELOAD": os.environ["PRELOAD"]} if os.environ.get("PRELOAD") else {}
child = subprocess.Popen(sys.argv[2:], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
exe = os.path.realpath(sys.argv[2])
for _ in range(2000):
    try:
        if os.readlink("/proc/%d/exe" % child.pid) == exe:
            break
    except OSError:
        pass
    time.sleep(0.005)
time.sleep(0.2)
print(child.pid, flush=True)
sys.stdin.readline()
open(sys.argv[1], "rb").read(4)
time.sleep(60)
"#;

/// A runner as nobody, with its child started: (runner, child pid).
fn runner(python: &Path, model: &Path, child: &[&OsStr], preload: Option<&Path>) -> (Killed, u32) {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(python)
        .args(["-c", RUNNER])
        .arg(model)
        .args(child)
        .env_remove("PRELOAD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Some(preload) = preload {
        cmd.env("PRELOAD", preload);
    }
    let mut runner = Killed(cmd.spawn().unwrap());
    let mut line = String::new();
    BufReader::new(runner.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let child: u32 = line.trim().parse().unwrap_or(0);
    assert!(child > 1, "runner said {line:?}");
    (runner, child)
}

/// The kill's outcome for `pid`, once reported.
async fn kill_outcome(cp: &ControlPlane, pid: u32) -> String {
    wait_for(
        &format!("the kill's outcome for pid {pid}"),
        Duration::from_secs(30),
        || async {
            let all = cp.alerts().await;
            of_rule(&all, "test.posing")
                .iter()
                .map(|a| a.finding.as_ref().unwrap())
                .find(|f| f.process.as_ref().is_some_and(|p| p.pid == pid) && f.action == "kill")
                .map(|f| f.summary.clone())
        },
    )
    .await
}

/// How `child` ended (it must, within 10 s).
fn ended(child: &mut Killed) -> std::process::ExitStatus {
    for _ in 0..1000 {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("pid {} did not end", child.0.id());
}

/// Whether `pid` is gone (or a zombie waiting for init to reap it).
fn gone(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_that_start_a_protected_looking_child_are_still_killed() {
    if !privileged("runners_that_start_a_protected_looking_child_are_still_killed") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::generate();
    let bundle = tmp.path().join("bundle.json");
    write_signed_bundle(&bundle, &key, 1, RULES);
    let dir = shared_dir(tmp.path(), "work");
    let model = dir.join("m.gguf");
    write_gguf(&model);
    let preload = compile_c(&dir, "non-dumpable.so", NON_DUMPABLE, &["-shared", "-fPIC"]);
    let python = python_copy(&dir, "posing-runner");
    // One runner starts the agent's own binary, non-dumpable.
    let agent_exe = binary("vigil-agent");
    let (mut impostor_runner, impostor) = runner(
        &python,
        &model,
        &[agent_exe.as_os_str(), OsStr::new("--help")],
        Some(&preload),
    );
    let status = std::fs::read_to_string(format!("/proc/{impostor}/status")).unwrap();
    assert!(status.contains("Uid:\t65534\t65534\t65534"), "{status}");
    // The other starts a process of its user's that the agent protects by pid.
    let (mut protected_runner, protected) = runner(
        &python,
        &model,
        &[OsStr::new("/bin/sleep"), OsStr::new("120")],
        None,
    );
    let cp = ControlPlane::start_leading(&tmp.path().join("cp")).await;
    let _agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "posing-host",
        &[
            "--trusted-policy-key",
            &key.public_hex(),
            "--policy-bundle",
            bundle.to_str().unwrap(),
            "--protect-pid",
            &protected.to_string(),
        ],
    )
    .await;
    for r in [&mut impostor_runner, &mut protected_runner] {
        r.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }
    use std::os::unix::process::ExitStatusExt;
    for (runner, child) in [
        (&mut impostor_runner, impostor),
        (&mut protected_runner, protected),
    ] {
        let pid = runner.0.id();
        let outcome = kill_outcome(&cp, pid).await;
        assert!(
            outcome.contains(&format!("killed pid {pid}")),
            "the runner of pid {child} was not killed: {outcome}"
        );
        assert_eq!(ended(runner).signal(), Some(9));
    }
    // The impostor is of its runner's tree, not protected: killed too. The
    // process protected by pid is spared, though its runner is not.
    wait_for("the impostor's end", Duration::from_secs(10), || async {
        gone(impostor).then_some(())
    })
    .await;
    assert!(!gone(protected), "the --protect-pid process was killed");
    let _ = Command::new("kill").arg(protected.to_string()).status();
}
