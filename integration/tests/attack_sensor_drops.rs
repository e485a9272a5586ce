//! A local user cannot blind the sensors unseen (issue #19): a process that
//! floods the kernel's ring buffer is named in a finding and the lost
//! records are counted; opens waiting for their syscall to return are never
//! evicted, however many threads block in open at once. Runs as root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::{free_port, privileged, wait_for, Agent, ControlPlane};
use vigil_proto::types::v1::Alert;

/// The rule of the agent's sensor-flood finding.
const FLOOD_RULE: &str = "vigil.sensors.flood";

fn pid_of(a: &Alert) -> u32 {
    a.finding.as_ref().unwrap().process.as_ref().unwrap().pid
}

fn rule_of(a: &Alert) -> &str {
    &a.finding.as_ref().unwrap().rule_id
}

/// A directory anyone may write, under a temporary directory anyone may enter.
fn shared_dir(tmp: &Path, name: &str) -> std::path::PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `/usr/bin/python3 -c code args...` as nobody (the PATH python3 may be a
/// shim nobody cannot run).
fn as_nobody(code: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        code,
    ]);
    c
}

/// Four threads create, close and unlink distinct model-file names in
/// `argv[1]` as fast as they can for `argv[2]` seconds; print how many.
const FLOOD_C: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static const char *dir;
static time_t end;
static long counts[4];
static void *flood(void *arg) {
    long t = (long)arg;
    char p[4096];
    for (long i = 0; time(NULL) < end; i++) {
        snprintf(p, sizeof p, "%s/t%ld-%ld.onnx", dir, t, i);
        int fd = open(p, O_CREAT | O_WRONLY, 0600);
        if (fd >= 0) { close(fd); unlink(p); counts[t]++; }
    }
    return NULL;
}
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    dir = argv[1];
    end = time(NULL) + atoi(argv[2]);
    pthread_t th[4];
    for (long t = 0; t < 4; t++) pthread_create(&th[t], NULL, flood, (void *)t);
    long total = 0;
    for (long t = 0; t < 4; t++) { pthread_join(th[t], NULL); total += counts[t]; }
    printf("%ld\n", total);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_flooding_a_tiny_ring_is_named_in_one_finding_and_drops_are_counted() {
    if !privileged("a_process_flooding_a_tiny_ring_is_named_in_one_finding") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&tmp.path().join("cp"), free_port());
    cp.wait_leader().await;
    let agent = Agent::start_with(
        &tmp.path().join("agent"),
        &cp.endpoint(),
        "attack-drops",
        // The agent counts a flooder's opens cheaply once it is over its
        // finding cap and may lose few records: name a process for any.
        &[
            "--ring-buffer-kib",
            "4",
            "--sensor-flood-drops-per-sec",
            "1",
        ],
    )
    .await;
    let dir = shared_dir(tmp.path(), "flood");
    let counters_now = || async { cp.agent_summary("attack-drops").await.ok()??.counters };
    wait_for("the first heartbeat", Duration::from_secs(15), counters_now).await;

    // Four threads of one process (one tgid), in C: faster than the agent
    // drains a 4 KiB ring even with its over-cap fast path.
    let flooder =
        vigil_integration::compile_c(tmp.path(), "ring-flooder", FLOOD_C, &["-O2", "-pthread"]);
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let flood = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&flooder)
        .arg(&dir)
        .arg("6")
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv and the flooder");
    let flood_pid = flood.id();
    // An agent that falls behind, made certain: stopped for two seconds
    // mid-flood, its 4 KiB ring fills and every record after that is lost
    // (a fast agent may otherwise keep up, and there is nothing to name).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &agent.daemon.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} the agent");
    };
    signal("-STOP");
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal("-CONT");
    let finding = wait_for(
        "the flood finding naming the flooding process",
        Duration::from_secs(30),
        || async {
            cp.alerts()
                .await
                .into_iter()
                .find(|a| rule_of(a) == FLOOD_RULE && pid_of(a) == flood_pid)
        },
    )
    .await;
    let out = tokio::task::spawn_blocking(move || flood.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "the flood ran: {}", out.status);
    let opens = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let f = finding.finding.as_ref().unwrap();
    eprintln!("{opens} opens: {}", f.summary);
    assert!(
        f.summary.starts_with(&format!(
            "pid {flood_pid} (ring-flooder) flooded the sensors: "
        )),
        "{}",
        f.summary
    );
    assert_eq!(f.process.as_ref().unwrap().uid, 65534);

    // The agent record says records were dropped.
    let counters = wait_for(
        "dropped records in the agent record",
        Duration::from_secs(15),
        || async { counters_now().await.filter(|c| c.dropped > 0) },
    )
    .await;
    eprintln!(
        "emitted {} received {} dropped {}",
        counters.emitted, counters.received, counters.dropped
    );
    // One episode, one finding: not one a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let floods = cp
        .alerts()
        .await
        .iter()
        .filter(|a| rule_of(a) == FLOOD_RULE && pid_of(a) == flood_pid)
        .count();
    assert!(floods <= 2, "{floods} flood findings for one 6 s flood");
    let log = agent.log_text();
    assert!(log.contains("a process floods the sensors"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// Threads blocked in open on FIFOs named like models, more than the
/// kernel's in-flight table held before it became task-local (256), then
/// released.
const BLOCKED_OPENS: &str = r#"
import os, sys, threading, time
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.mkfifo(f'{d}/f{i}.onnx')
def reader(i):
    os.close(os.open(f'{d}/f{i}.onnx', os.O_RDONLY))
threads = [threading.Thread(target=reader, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
time.sleep(2)
for i in range(n):
    os.close(os.open(f'{d}/f{i}.onnx', os.O_WRONLY | os.O_NONBLOCK))
for t in threads:
    t.join()
"#;

/// Each waiting open is kept in its own thread's task-local storage, so
/// however many threads block in open at once, none is evicted: every
/// open becomes a record when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_blocked_at_once_are_never_evicted_from_the_in_flight_table() {
    if !privileged("opens_blocked_at_once_are_never_evicted_from_the_in_flight_table") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&tmp.path().join("cp"), free_port());
    cp.wait_leader().await;
    let agent = Agent::start(&tmp.path().join("agent"), &cp.endpoint(), "attack-evict").await;
    let dir = shared_dir(tmp.path(), "fifos");
    let counters_now = || async { cp.agent_summary("attack-evict").await.ok()??.counters };
    let before = wait_for("the first heartbeat", Duration::from_secs(15), counters_now).await;
    assert_eq!(before.evicted, 0);

    let blocked: u64 = 400;
    let status = as_nobody(BLOCKED_OPENS)
        .arg(&dir)
        .arg(blocked.to_string())
        .status()
        .expect("setpriv and /usr/bin/python3");
    assert!(status.success(), "the blocked opens ran: {status}");
    // Every blocked open (and the writers' opens that released them)
    // became a record: at least that many more were received.
    let after = wait_for(
        "the blocked opens' records in the agent record",
        Duration::from_secs(15),
        || async {
            counters_now()
                .await
                .filter(|c| c.received >= before.received + 2 * blocked)
        },
    )
    .await;
    eprintln!(
        "{blocked} opens blocked at once: {} evicted, {} records received",
        after.evicted,
        after.received - before.received
    );
    assert_eq!(after.evicted, 0, "opens evicted from the in-flight table");
    let log = agent.log_text();
    assert!(!log.contains("opens lost in the kernel"), "{log}");
}
