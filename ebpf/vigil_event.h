/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Records the vigil sensors write into the ring buffer, and the path filter
 * table the agent fills at start. Shared by the BPF programs (sensors.bpf.c)
 * and the agent, whose #[repr(C)] mirror lives in
 * agent/src/sensors/event_layout.rs; a test there compiles this header with
 * the host C compiler and checks every offset against the Rust mirror.
 *
 * Every record starts with struct vigil_event_header; header.size is the
 * whole record's length, so variable-length tails (paths, argv) travel
 * without padding.
 */
#ifndef VIGIL_EVENT_H
#define VIGIL_EVENT_H

#include <linux/types.h>

#define VIGIL_EVENT_EXEC 1
#define VIGIL_EVENT_EXIT 2
#define VIGIL_EVENT_OPEN 3

#define VIGIL_COMM_LEN 16
/* Longest path the kernel accepts, NUL included. */
#define VIGIL_PATH_MAX 4096
/* argv bytes captured at exec (NUL-separated). */
#define VIGIL_ARGS_MAX 1024

/* Counter slots of the per-CPU "COUNTERS" array. */
#define VIGIL_COUNTER_EMITTED 0
#define VIGIL_COUNTER_FILTERED 1
#define VIGIL_COUNTER_DROPPED 2
#define VIGIL_COUNTER_SLOTS 4

/* Path filter table. */
#define VIGIL_FILTER_SLOTS 32
#define VIGIL_FILTER_UNUSED 0
#define VIGIL_FILTER_SUFFIX 1
#define VIGIL_FILTER_PREFIX 2
/* What a filter entry says a matching path is. */
#define VIGIL_MATCH_MODEL_FILE 1
#define VIGIL_MATCH_GPU_DEVICE 2
#define VIGIL_MATCH_AI_RUNTIME 3

struct vigil_event_header {
	__u32 kind;          /* VIGIL_EVENT_* */
	__u32 size;          /* whole record, header included */
	__u64 ktime_boot_ns; /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;     /* cgroup v2 id of the task */
	__u64 mnt_ns;        /* mount namespace inode number */
	__u32 pid;           /* thread id */
	__u32 tgid;          /* process id */
	__u32 ppid;          /* real parent's process id */
	__u32 uid;
	__u32 gid;
	__u32 aux;           /* exit: exit code (wait status); others: 0 */
	char comm[VIGIL_COMM_LEN];
};

/* After exec: the executable path (NUL included), then argv bytes. */
struct vigil_exec_event {
	struct vigil_event_header hdr;
	__u32 filename_len; /* bytes of filename in data[], NUL included */
	__u32 args_len;     /* bytes of argv following it */
	char data[VIGIL_PATH_MAX + VIGIL_ARGS_MAX];
};

struct vigil_open_event {
	struct vigil_event_header hdr;
	__s32 dfd;        /* directory fd a relative path is resolved against */
	__u32 flags;      /* open flags */
	__u32 match;      /* VIGIL_MATCH_* of the filter entry that kept it */
	__u32 path_len;   /* bytes of path[], NUL included */
	char path[VIGIL_PATH_MAX];
};

/*
 * One entry of the path filter. Bytes are compared 16 at a time as two
 * little-endian u64 words under a mask: a suffix is right-aligned (it must
 * end where the path ends), a prefix left-aligned.
 */
struct vigil_path_filter {
	__u32 kind;  /* VIGIL_FILTER_* */
	__u32 len;   /* pattern bytes, 1..16 */
	__u32 match; /* VIGIL_MATCH_* reported on a hit */
	__u32 _pad;
	__u64 value[2];
	__u64 mask[2];
};

#endif /* VIGIL_EVENT_H */
