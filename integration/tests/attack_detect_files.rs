//! A local user cannot stall the agent's detection with the files it names
//! (issue #19): a FIFO named like a model, a link planted in place of a
//! model, a sparse terabyte as a model and as an executable. Runs as root.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vigil_integration::{compile_c, privileged, python_opens, AgentHost, Killed};
use vigil_proto::types::v1::{Alert, SignalKind};

/// Generous: each finding comes in well under a second on an idle host;
/// this only tells a stalled detect loop from a working one.
const PROMPT: Duration = Duration::from_secs(10);

/// The model-file finding for `pid`, within [`PROMPT`].
async fn model_alert(h: &AgentHost, what: &str, pid: u32) -> Alert {
    h.alert_within(what, PROMPT, |a| {
        let f = a.finding.as_ref().unwrap();
        f.signal() == SignalKind::ModelFile && f.process.as_ref().unwrap().pid == pid
    })
    .await
}

/// An ordinary model file opened by a new process is still reported.
async fn still_detects(h: &AgentHost, name: &str) {
    let model = h.dir.join(name);
    std::fs::write(&model, b"GGUF\x03\x00\x00\x00").unwrap();
    let pid = python_opens(&model);
    model_alert(h, &format!("the later open of {name}"), pid).await;
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// A shell that holds `fifo` open for reading and writing (so readers'
/// opens succeed) and writes nothing: a reader's `read` blocks for good.
fn hold_fifo(fifo: &Path) -> Killed {
    Killed::spawn_until_line(
        Command::new("bash")
            .arg("-c")
            .arg("exec 3<>\"$1\"; echo held; exec sleep 600")
            .arg("bash")
            .arg(fifo),
        "held",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_named_like_a_model_does_not_stall_detection() {
    if !privileged("a_fifo_named_like_a_model_does_not_stall_detection") {
        return;
    }
    let h = AgentHost::start("attack-fifo").await;
    let fifo = h.dir.join("x.onnx");
    mkfifo(&fifo);
    let _writer = hold_fifo(&fifo);
    // A reader opens it (the writer is there, so the open returns) and
    // keeps it open; a content check that read it by name would block.
    let reader = Killed::spawn_until_line(
        Command::new("python3")
            .arg("-c")
            .arg("import sys, time; f = open(sys.argv[1], 'rb'); print('open', flush=True); time.sleep(600)")
            .arg(&fifo),
        "open",
    );
    let pid = reader.0.id();
    // Named like a model: still a finding, without content.
    let a = model_alert(&h, "the FIFO's open", pid).await;
    let summary = &a.finding.unwrap().summary;
    assert!(summary.contains("x.onnx"), "{summary}");
    still_detects(&h, "after-fifo.gguf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_planted_as_a_model_is_not_followed() {
    if !privileged("a_link_planted_as_a_model_is_not_followed") {
        return;
    }
    let h = AgentHost::start("attack-link").await;
    // The target: a FIFO with a writer that never writes. Followed by
    // name, reading it hangs; so the agent's staying responsive shows it
    // did not follow the link.
    let target = h.dir.join("target");
    mkfifo(&target);
    let _writer = hold_fifo(&target);
    let link = h.dir.join("m.onnx");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    // The process opens the link and exits at once: its fd is gone when
    // the agent looks, only the name is left.
    let pid = python_opens(&link);
    let a = model_alert(&h, "the open through the link", pid).await;
    let summary = a.finding.unwrap().summary;
    assert!(summary.contains("m.onnx"), "{summary}");
    still_detects(&h, "after-link.gguf").await;

    // A link to a regular model-shaped file the process could not read:
    // its content is not the agent's to report.
    let secret = h.dir.join("secret");
    std::fs::write(&secret, b"GGUF\x03\x00\x00\x00").unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let link = h.dir.join("weights.bin");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    // Planted by another user (nobody): root's file is not theirs.
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let pid = python_opens(&link);
    // `.bin` needs content to be a model; without it the name alone is
    // reported, never "(GGUF)" read through the link.
    if let Some(a) = wait_for_optional(&h, pid).await {
        let summary = a.finding.unwrap().summary;
        assert!(
            !summary.contains("GGUF"),
            "read through the link: {summary}"
        );
    }
}

async fn wait_for_optional(h: &AgentHost, pid: u32) -> Option<Alert> {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < deadline {
        if let Some(a) =
            h.cp.alerts()
                .await
                .into_iter()
                .find(|a| a.finding.as_ref().unwrap().process.as_ref().unwrap().pid == pid)
        {
            return Some(a);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sparse_terabyte_is_reported_unhashed_and_promptly() {
    if !privileged("a_sparse_terabyte_is_reported_unhashed_and_promptly") {
        return;
    }
    let h = AgentHost::start("attack-huge").await;
    // An executable padded to a terabyte (sparse: the ELF runs as before)
    // opens a terabyte model file, and holds it.
    let exe = compile_c(
        &h.dir,
        "holder",
        "#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\nint main(int c, char **v) { if (open(v[1], O_RDONLY) < 0) return 1; puts(\"open\"); fflush(stdout); sleep(600); return 0; }\n",
        &[],
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&exe)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let model = h.dir.join("big.onnx");
    std::fs::File::create(&model)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let holder = Killed::spawn_until_line(Command::new(&exe).arg(&model), "open");
    let a = model_alert(&h, "the terabyte model's finding", holder.0.id()).await;
    let f = a.finding.unwrap();
    assert!(
        f.summary.contains("not hashed: over budget"),
        "the finding says why there is no digest: {}",
        f.summary
    );
    assert!(f.process.unwrap().exe_sha256.is_empty());
    still_detects(&h, "after-huge.gguf").await;
}
