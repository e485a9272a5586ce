//! A local user cannot open a model unseen through io_uring (issue #19):
//! `IORING_OP_OPENAT` never enters the open syscalls the sensors hook, so
//! the sensors read the request as io_uring submits it. Run as `nobody`,
//! from the submitting thread and from an SQPOLL kernel thread (whose
//! process is still the owner's). Runs as root.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vigil_integration::policy_fixture::write_gguf;
use vigil_integration::unprivileged::shared_dir;
use vigil_integration::{compile_c, privileged, AgentHost, Killed};
use vigil_proto::types::v1::{Alert, SignalKind};

/// Generous: a finding comes in well under a second on an idle host.
const PROMPT: Duration = Duration::from_secs(15);

/// Opens `argv[1]` read-only with one raw `IORING_OP_OPENAT` (no liburing),
/// submitted by this thread or, with `argv[2]` = "sqpoll", by the ring's
/// SQPOLL kernel thread; prints "open" once the completion says it opened,
/// then holds the file.
const IO_URING_OPEN_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/io_uring.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static int enter(int fd, unsigned submit, unsigned wait, unsigned flags)
{
	return (int)syscall(__NR_io_uring_enter, fd, submit, wait, flags, NULL, 0);
}

int main(int argc, char **argv)
{
	int sqpoll = argc > 2 && strcmp(argv[2], "sqpoll") == 0;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	if (sqpoll) {
		p.flags = IORING_SETUP_SQPOLL;
		p.sq_thread_idle = 2000;
	}
	int ring = (int)syscall(__NR_io_uring_setup, 4, &p);
	if (ring < 0) {
		perror("io_uring_setup");
		return 2;
	}
	size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	int single = p.features & IORING_FEAT_SINGLE_MMAP;
	if (single && cq_len > sq_len)
		sq_len = cq_len;
	char *sq = mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
			IORING_OFF_SQ_RING);
	char *cq = single ? sq
			  : mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
				 IORING_OFF_CQ_RING);
	struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe),
					 PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring,
					 IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	unsigned *sq_tail = (unsigned *)(sq + p.sq_off.tail);
	unsigned sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
	unsigned *sq_array = (unsigned *)(sq + p.sq_off.array);
	unsigned *sq_flags = (unsigned *)(sq + p.sq_off.flags);
	unsigned *cq_head = (unsigned *)(cq + p.cq_off.head);
	unsigned *cq_tail = (unsigned *)(cq + p.cq_off.tail);
	unsigned cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
	struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);

	struct io_uring_sqe *sqe = &sqes[0];
	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_OPENAT;
	sqe->fd = AT_FDCWD;
	sqe->addr = (unsigned long)argv[1];
	sqe->open_flags = O_RDONLY;
	sqe->user_data = 42;
	unsigned tail = *sq_tail;
	sq_array[tail & sq_mask] = 0;
	__atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);

	unsigned flags = IORING_ENTER_GETEVENTS;
	if (sqpoll && (__atomic_load_n(sq_flags, __ATOMIC_ACQUIRE) & IORING_SQ_NEED_WAKEUP))
		flags |= IORING_ENTER_SQ_WAKEUP;
	if (enter(ring, sqpoll ? 0 : 1, 1, flags) < 0) {
		perror("io_uring_enter");
		return 2;
	}
	while (__atomic_load_n(cq_tail, __ATOMIC_ACQUIRE) == *cq_head)
		enter(ring, 0, 1, IORING_ENTER_GETEVENTS);
	int res = cqes[*cq_head & cq_mask].res;
	if (res < 0) {
		fprintf(stderr, "IORING_OP_OPENAT: %s\n", strerror(-res));
		return 3;
	}
	puts("open");
	fflush(stdout);
	sleep(600);
	return 0;
}
"#;

/// `exe args...` as nobody (uid and gid 65534, no supplementary groups).
fn as_nobody(exe: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(exe);
    c
}

/// The model-file finding for `pid`, within [`PROMPT`].
async fn model_alert(h: &AgentHost, what: &str, pid: u32) -> Alert {
    h.alert_within(what, PROMPT, |a| {
        let f = a.finding.as_ref().unwrap();
        f.signal() == SignalKind::ModelFile && f.process.as_ref().unwrap().pid == pid
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_opened_through_io_uring_is_reported() {
    if !privileged("a_model_opened_through_io_uring_is_reported") {
        return;
    }
    let h = AgentHost::start("attack-io-uring").await;
    // The agent says it watches io_uring opens, and whether io_uring is on.
    let agent =
        h.cp.wait_agent_summary("the agent's hooks", PROMPT, "attack-io-uring", |a| {
            !a.hooks.is_empty()
        })
        .await;
    for hook in [
        "tracepoint/io_uring/io_uring_submit_req",
        "tracepoint/io_uring/io_uring_complete",
    ] {
        assert!(agent.hooks.iter().any(|h| h == hook), "{:?}", agent.hooks);
    }
    assert!(
        agent
            .hooks
            .iter()
            .any(|h| h.starts_with("sysctl/kernel.io_uring_disabled=")),
        "{:?}",
        agent.hooks
    );
    // Files nobody can reach (the host's directory is root's alone).
    let tmp = tempfile::tempdir().unwrap();
    let dir = shared_dir(tmp.path(), "uring");
    let exe = compile_c(&dir, "uring-open", IO_URING_OPEN_C, &["-O2", "-Wall"]);

    for mode in ["submit", "sqpoll"] {
        let model = dir.join(format!("{mode}.gguf"));
        write_gguf(&model);
        let opener = Killed::spawn_until_line(as_nobody(&exe).arg(&model).arg(mode), "open");
        let pid = opener.0.id();
        let a = model_alert(&h, &format!("the io_uring open ({mode})"), pid).await;
        let f = a.finding.unwrap();
        let process = f.process.unwrap();
        assert_eq!(process.uid, 65534, "{mode}: the opener's user");
        assert!(
            f.summary.contains(&format!("{mode}.gguf")),
            "{mode}: the finding names the file: {}",
            f.summary
        );
    }
}
