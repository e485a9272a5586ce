//! A local user cannot pass an unapproved model off as an approved one by
//! swapping files under its path (issue #19): an approved server opens an
//! unapproved model at P, renames it away and puts the approved bytes at P.
//! The kernel records which file the open returned (device and inode); the
//! agent hashes that file or, when it finds another one at P, reports that
//! the file changed, never the approved digest. Runs as root.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use vigil_integration::unprivileged::shared_dir;
use vigil_integration::{compile_c, privileged, AgentHost, Killed};
use vigil_proto::types::v1::{Alert, SignalKind};

/// Generous: a finding comes in well under a second on an idle host.
const PROMPT: Duration = Duration::from_secs(15);

/// `server MODE P Q A`: opens P. "plain": holds it. "swap-hold": renames
/// P to Q and A to P, and holds the fd it opened. "swap-close": closes the
/// fd first, then swaps the same way. Prints "open", then sleeps.
const SERVER_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	int fd = open(argv[2], O_RDONLY);
	if (fd < 0) {
		perror("open");
		return 2;
	}
	if (strncmp(argv[1], "swap", 4) == 0) {
		if (strcmp(argv[1], "swap-close") == 0)
			close(fd);
		if (argc < 5 || rename(argv[2], argv[3]) != 0 || rename(argv[4], argv[2]) != 0) {
			perror("rename");
			return 2;
		}
	}
	puts("open");
	fflush(stdout);
	sleep(600);
	return 0;
}
"#;

/// A GGUF header (a model file by its magic) and `tag`.
fn write_model(path: &Path, tag: &str) {
    let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
    bytes.extend_from_slice(tag.as_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// `exe args...` as nobody (uid and gid 65534, no supplementary groups).
fn as_nobody(exe: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe);
    c
}

fn model_alert_for(a: &Alert, pid: u32) -> bool {
    let f = a.finding.as_ref().unwrap();
    f.signal() == SignalKind::ModelFile && f.process.as_ref().unwrap().pid == pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_swapped_under_its_path_after_the_open_is_not_approved() {
    if !privileged("a_model_swapped_under_its_path_after_the_open_is_not_approved") {
        return;
    }
    let h = AgentHost::start("attack-swap").await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = shared_dir(tmp.path(), "models");
    let server = compile_c(&dir, "model-server", SERVER_C, &["-O2", "-Wall"]);
    let approved = dir.join("approved.gguf");
    write_model(&approved, "approved weights");

    // The server may load the approved model, and only that one.
    let out = h.cp.vigilctl(&[
        "workload",
        "approve",
        "--exe",
        server.to_str().unwrap(),
        "--model",
        approved.to_str().unwrap(),
        "--note",
        "the model server, with its model",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.wait_log(
        "the approval at the agent",
        "approved workloads updated count=1",
    )
    .await;

    // The approval holds: the approved model at its own path is no finding.
    let plain = Killed::spawn_until_line(as_nobody(&server).arg("plain").arg(&approved), "open");
    let marker = dir.join("marker.gguf");
    write_model(&marker, "marker");
    let mut cat = Command::new("/bin/cat")
        .arg(&marker)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let cat_pid = cat.id();
    assert!(cat.wait().unwrap().success());
    h.alert_within("the marker's finding", PROMPT, |a| {
        model_alert_for(a, cat_pid)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let plain_pid = plain.0.id();
    assert!(
        !h.cp
            .alerts()
            .await
            .iter()
            .any(|a| model_alert_for(a, plain_pid)),
        "the approved server loading the approved model made a finding"
    );

    // The swaps: the file the server opened is not the approved one, whatever
    // lies at its path when the agent looks.
    for mode in ["swap-hold", "swap-close"] {
        let path = dir.join(format!("{mode}.gguf"));
        write_model(&path, &format!("unapproved weights {mode}"));
        let spare = dir.join(format!("{mode}-approved.gguf"));
        std::fs::copy(&approved, &spare).unwrap();
        let moved = dir.join(format!("{mode}.moved"));
        let swapper = Killed::spawn_until_line(
            as_nobody(&server)
                .arg(mode)
                .arg(&path)
                .arg(&moved)
                .arg(&spare),
            "open",
        );
        let pid = swapper.0.id();
        let a = h
            .alert_within(&format!("the {mode} server's finding"), PROMPT, |a| {
                model_alert_for(a, pid)
            })
            .await;
        let f = a.finding.unwrap();
        assert!(
            f.summary.contains(&format!("{mode}.gguf")),
            "{mode}: {}",
            f.summary
        );
        if mode == "swap-close" {
            // No fd left: when the agent looks after the swap it finds
            // another file at the path and says so; when it looks first
            // (a loaded machine can let it), it reads the unapproved file
            // itself. Either way the approved copy never clears it: the
            // finding above is an alert, not an approval.
            assert!(
                f.summary.contains("replaced at its path after the open")
                    || f.summary.contains("unapproved process"),
                "{mode}: {}",
                f.summary
            );
        }
    }
}
