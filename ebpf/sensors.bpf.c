// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * vigil host sensors: exec, exit and file opens, into one ring buffer.
 *
 * Architecture invariant: only what user space needs leaves the kernel.
 * Opens are matched against the agent's path filter table here; every
 * event either becomes a record (EMITTED), is filtered out (FILTERED), is
 * lost because the ring buffer is full (DROPPED, also counted per process
 * in DROPS_BY_PROCESS) or, for an open waiting for its syscall to return,
 * could not be kept (EVICTED: no memory for its task-local entry); the
 * per-CPU counters say which, so nothing is lost silently.
 */
#include <stdbool.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "kernel_types.h"
#include "vigil_event.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Filled by the agent before load (read-only data: the verifier sees the
 * values). PATH_FILTERS holds suffix entries in [0, SUFFIX_END), prefix
 * entries in [SUFFIX_END, PREFIX_END) and basename-prefix entries in
 * [PREFIX_END, PATH_FILTER_COUNT). Two prefilters let most opens skip the
 * loops: the set of last bytes of all suffixes (a 256-bit map), and the
 * prefix all prefix entries share (masked over the first 8 bytes).
 */
const volatile struct vigil_path_filter PATH_FILTERS[VIGIL_FILTER_SLOTS] = {};
const volatile __u32 PATH_FILTER_COUNT = 0;
const volatile __u32 SUFFIX_END = 0;
const volatile __u32 PREFIX_END = 0;
const volatile __u64 SUFFIX_LAST_BYTES[4] = {};
const volatile __u64 PREFIX_COMMON_MASK = 0;
const volatile __u64 PREFIX_COMMON_VALUE = 0;
/* TCP ports (host order) whose connects are reported (listens: all). */
const volatile __u16 AI_PORTS[VIGIL_PORT_SLOTS] = {};
const volatile __u32 AI_PORT_COUNT = 0;
/* The agent's own process id: its own opens (content checks) are never events. */
const volatile __u32 AGENT_TGID = 0;
/* Read-only mappings from offset 0 at least this long are reported (0: none). */
const volatile __u64 LARGE_MAPPING_MIN = 0;
/* Executable mappings under other names are checked by content (0: off). */
const volatile __u32 LIBRARY_CHECKS = 0;
/* The first send on TCP streams to 443 and 53 goes to the agent (0: off). */
const volatile __u32 STREAM_CHECKS = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} EVENTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, VIGIL_COUNTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} COUNTERS SEC(".maps");

/* The path is read 16 bytes past a zeroed guard so a suffix window never underflows. */
struct path_scratch {
	__u8 guard[16];
	char path[VIGIL_PATH_MAX];
	__u8 tail_pad[16];
};

union event_scratch {
	struct vigil_event_header hdr;
	struct vigil_exec_event exec;
	struct vigil_open_event open;
	struct vigil_file_map_event map;
	struct vigil_dns_event dns;
	struct vigil_stream_event stream;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_scratch);
} PATH_SCRATCH SEC(".maps");

/*
 * A matched open waits here for its syscall to return, in its own thread's
 * task-local storage: no other thread's open can evict it (an LRU table by
 * thread id could be flooded on purpose with threads blocked in open on
 * FIFOs). The exit program adds the result, sends the record and deletes
 * the entry, so memory follows the opens in flight; an entry is also freed
 * with its task. hdr.kind is 0 in an entry with no open waiting. Only when
 * the kernel has no memory for an entry is an open lost, counted EVICTED.
 * PENDING_OPENS counts the entries waiting, so that the exit of an
 * unmatched open (nearly all of them) returns after one load.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct vigil_open_event);
} OPEN_PENDING SEC(".maps");

__u32 PENDING_OPENS = 0;

/*
 * Records lost for a full ring buffer, by the process (tgid) whose event
 * they were: the agent reads it every second and reports a process that
 * floods the sensors. LRU: a flood from many processes cannot fill it, the
 * flooding process stays (it is the most recently used).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} DROPS_BY_PROCESS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, union event_scratch);
} EVENT_SCRATCH SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *c = bpf_map_lookup_elem(&COUNTERS, &slot);
	if (c)
		*c += 1;
}

static __always_inline void fill_header(struct vigil_event_header *h, __u32 kind, __u32 size)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	h->kind = kind;
	h->size = size;
	h->ktime_boot_ns = bpf_ktime_get_boot_ns();
	h->cgroup_id = bpf_get_current_cgroup_id();
	h->mnt_ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	h->pid = (__u32)pid_tgid;
	h->tgid = pid_tgid >> 32;
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = (__u32)uid_gid;
	h->gid = uid_gid >> 32;
	h->aux = 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
}

/*
 * Context records (exec, exit) do not wake the agent, which drains the ring
 * every few milliseconds: a wake-up per record cost about 20 us per exec on
 * a VM (irq_work). They do wake it once the ring holds a lot, so it never
 * fills. Records that make findings force a wake-up, which also delivers
 * the context queued before them.
 */
#define VIGIL_WAKEUP_BACKLOG (1024 * 1024)

static __always_inline __u64 context_wakeup(void)
{
	return bpf_ringbuf_query(&EVENTS, BPF_RB_AVAIL_DATA) > VIGIL_WAKEUP_BACKLOG ? BPF_RB_FORCE_WAKEUP
										      : BPF_RB_NO_WAKEUP;
}

/* A record lost for a full ring: counted, and against the current process. */
static __always_inline void count_drop(void)
{
	count(VIGIL_COUNTER_DROPPED);
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 *n = bpf_map_lookup_elem(&DROPS_BY_PROCESS, &tgid);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return;
	}
	__u64 one = 1;
	bpf_map_update_elem(&DROPS_BY_PROCESS, &tgid, &one, BPF_NOEXIST);
}

static __always_inline void emit(void *record, __u64 size, __u64 flags)
{
	if (bpf_ringbuf_output(&EVENTS, record, size, flags) == 0)
		count(VIGIL_COUNTER_EMITTED);
	else
		count_drop();
}

SEC("tracepoint/sched/sched_process_exec")
int vigil_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 zero = 0;
	struct vigil_exec_event *ev = bpf_map_lookup_elem(&EVENT_SCRATCH, &zero);
	if (!ev)
		return 0;

	__u32 loc = ctx->__data_loc_filename;
	long flen = bpf_probe_read_kernel_str(ev->data, VIGIL_PATH_MAX, (void *)ctx + (loc & 0xFFFF));
	if (flen < 0)
		flen = 0;
	if (flen > VIGIL_PATH_MAX)
		flen = VIGIL_PATH_MAX;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	unsigned long arg_start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(task, mm, arg_end);
	__u64 alen = arg_end > arg_start ? arg_end - arg_start : 0;
	if (alen > VIGIL_ARGS_MAX)
		alen = VIGIL_ARGS_MAX;
	if (bpf_probe_read_user(ev->data + flen, alen, (void *)arg_start) != 0)
		alen = 0;

	ev->filename_len = flen;
	ev->args_len = alen;
	__u64 size = offsetof(struct vigil_exec_event, data) + flen + alen;
	fill_header(&ev->hdr, VIGIL_EVENT_EXEC, size);
	if (size > sizeof(*ev))
		return 0;
	emit(ev, size, context_wakeup());
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int vigil_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	/* Only the whole process ends when its thread-group leader exits. */
	if ((__u32)pid_tgid != (__u32)(pid_tgid >> 32)) {
		count(VIGIL_COUNTER_FILTERED);
		return 0;
	}
	struct vigil_event_header h;
	fill_header(&h, VIGIL_EVENT_EXIT, sizeof(h));
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	h.aux = BPF_CORE_READ(task, exit_code);
	emit(&h, sizeof(h), context_wakeup());
	return 0;
}

/* Entries [from, to) of the table that keep this window, or 0. */
static __always_inline __u32 match_range(__u32 from, __u32 to, __u64 w0, __u64 w1, __u32 len)
{
	for (__u32 i = 0; i < VIGIL_FILTER_SLOTS; i++) {
		if (i < from)
			continue;
		if (i >= to)
			break;
		if (PATH_FILTERS[i].len > len)
			continue;
		if ((w0 & PATH_FILTERS[i].mask[0]) == PATH_FILTERS[i].value[0] &&
		    (w1 & PATH_FILTERS[i].mask[1]) == PATH_FILTERS[i].value[1])
			return PATH_FILTERS[i].match;
	}
	return 0;
}

/*
 * The table entry that keeps this name, or 0. ps->path holds len bytes (NUL
 * excluded), followed by 16 zero bytes. `basename` selects the entries for
 * file names of executable mappings; otherwise path suffix/prefix entries.
 */
static __always_inline __u32 match_path(struct path_scratch *ps, __u32 len, bool basename)
{
	if (len == 0 || len > VIGIL_PATH_MAX - 1)
		return 0;
	__u64 head0 = *(__u64 *)((__u8 *)ps->path);
	__u64 head1 = *(__u64 *)((__u8 *)ps->path + 8);
	if (basename)
		return match_range(PREFIX_END, PATH_FILTER_COUNT, head0, head1, len);

	__u8 last = ((__u8 *)ps->path)[(len - 1) & (VIGIL_PATH_MAX - 1)];
	if ((SUFFIX_LAST_BYTES[(last >> 6) & 3] >> (last & 63)) & 1) {
		/* The 16 bytes ending at the path's end (the zero guard fills short paths). */
		__u64 tail0 = *(__u64 *)((__u8 *)ps + len);
		__u64 tail1 = *(__u64 *)((__u8 *)ps + len + 8);
		__u32 m = match_range(0, SUFFIX_END, tail0, tail1, len);
		if (m)
			return m;
	}
	if ((head0 & PREFIX_COMMON_MASK) == PREFIX_COMMON_VALUE)
		return match_range(SUFFIX_END, PREFIX_END, head0, head1, len);
	return 0;
}

/*
 * After a string read of n bytes (NUL included) into ps->path: the filter
 * entry it matches, or 0, counted as filtered. Zeroes the 16 bytes after
 * the string, which a prefix window of a short name reads.
 */
static __always_inline __u32 match_read_name(struct path_scratch *ps, long n, bool basename)
{
	if (n <= 1) {
		count(VIGIL_COUNTER_FILTERED);
		return 0;
	}
	__u32 len = (__u32)(n - 1) & (VIGIL_PATH_MAX - 1);
	*(__u64 *)((__u8 *)ps->path + len) = 0;
	*(__u64 *)((__u8 *)ps->path + len + 8) = 0;
	__u32 match = match_path(ps, len, basename);
	if (!match)
		count(VIGIL_COUNTER_FILTERED);
	return match;
}

static __always_inline bool is_agent(void)
{
	return (__u32)(bpf_get_current_pid_tgid() >> 32) == AGENT_TGID;
}

#define EFAULT 14

/*
 * Makes the open this thread is in wait for its return (on_open_exit) in
 * OPEN_PENDING: matched (`match`, the path's `plen` bytes in `ps`), or,
 * when its path was in memory not yet faulted in (match 0), with the user
 * pointer in `ino`, to be read and matched on return, after the kernel
 * faulted the page in copying it.
 */
static __always_inline int wait_for_open(struct path_scratch *ps, const char *upath, int dfd,
					 __u32 flags, __u32 match, __u32 plen)
{
	struct vigil_open_event *ev = bpf_task_storage_get(
		&OPEN_PENDING, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!ev) {
		count(VIGIL_COUNTER_EVICTED);
		return 0;
	}
	bool waiting = ev->hdr.kind != 0;
	if (match && plen && plen <= VIGIL_PATH_MAX)
		bpf_probe_read_kernel(ev->path, plen, ps->path);
	ev->dfd = dfd;
	ev->flags = flags;
	ev->match = match;
	ev->path_len = plen;
	ev->ret = 0;
	ev->origin = VIGIL_OPEN_SYSCALL;
	ev->dev = 0;
	ev->ino = match ? 0 : (__u64)upath;
	__u64 size = offsetof(struct vigil_open_event, path) + plen;
	fill_header(&ev->hdr, VIGIL_EVENT_OPEN, size);
	if (!waiting)
		__sync_fetch_and_add(&PENDING_OPENS, 1);
	return 0;
}

/* Every open syscall ends here: the path is matched against the table. */
static __always_inline int on_open(const char *upath, int dfd, __u32 flags)
{
	if (is_agent()) {
		count(VIGIL_COUNTER_FILTERED);
		return 0;
	}
	__u32 zero = 0;
	struct path_scratch *ps = bpf_map_lookup_elem(&PATH_SCRATCH, &zero);
	if (!ps)
		return 0;
	long n = bpf_probe_read_user_str(ps->path, VIGIL_PATH_MAX, upath);
	if (n == -EFAULT && upath)
		return wait_for_open(ps, upath, dfd, flags, 0, 0);
	__u32 len = (__u32)(n - 1) & (VIGIL_PATH_MAX - 1);
	__u32 match = match_read_name(ps, n, false);
	if (!match)
		return 0;
	/* Sent when the syscall returns (on_open_exit), with its result. */
	return wait_for_open(ps, upath, dfd, flags, match, len + 1);
}

/*
 * An open whose path could not be read on entry (match 0): read and
 * matched now. False when it is not one to send (the entry is then free).
 */
static __always_inline bool match_late_path(struct vigil_open_event *ev)
{
	if (ev->match)
		return true;
	__u32 zero = 0;
	struct path_scratch *ps = bpf_map_lookup_elem(&PATH_SCRATCH, &zero);
	if (!ps)
		return false;
	long n = bpf_probe_read_user_str(ps->path, VIGIL_PATH_MAX, (const char *)ev->ino);
	__u32 len = (__u32)(n - 1) & (VIGIL_PATH_MAX - 1);
	__u32 match = match_read_name(ps, n, false);
	if (!match)
		return false;
	__u32 plen = len + 1;
	if (plen > VIGIL_PATH_MAX)
		return false;
	bpf_probe_read_kernel(ev->path, plen, ps->path);
	ev->match = match;
	ev->path_len = plen;
	ev->hdr.size = offsetof(struct vigil_open_event, path) + plen;
	return true;
}

/* The file at `fd` in the current task's table, or NULL. */
static __always_inline struct file *file_of_fd(long fd)
{
	if (fd < 0)
		return NULL;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/* A file's superblock dev_t and inode number (0, 0 when unknown). */
static __always_inline void file_identity(struct file *f, __u64 *dev, __u64 *ino)
{
	*dev = 0;
	*ino = 0;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	if (!inode)
		return;
	*ino = BPF_CORE_READ(inode, i_ino);
	*dev = BPF_CORE_READ(inode, i_sb, s_dev);
}

/*
 * The file an open returned, by its fd in the current task's table: the
 * superblock's dev_t and the inode number, for user space to check that a
 * file it reads later by path is this one (a file renamed away and another
 * put at its path is not). Only opens that passed the filter get here.
 */
static __always_inline void read_opened_file(long fd, struct vigil_open_event *ev)
{
	ev->dev = 0;
	ev->ino = 0;
	struct file *f = file_of_fd(fd);
	if (f)
		file_identity(f, &ev->dev, &ev->ino);
}

static __always_inline void watch_first_read(long fd);

/*
 * The open syscalls' return: send the waiting record, if this thread has
 * one, and free its entry. Any other open of a file for reading is
 * watched for its first read (content checks, below).
 */
static __always_inline int on_open_exit(long ret)
{
	if (PENDING_OPENS == 0) {
		watch_first_read(ret);
		return 0;
	}
	struct task_struct *task = bpf_get_current_task_btf();
	struct vigil_open_event *ev = bpf_task_storage_get(&OPEN_PENDING, task, 0, 0);
	if (!ev || ev->hdr.kind == 0) {
		watch_first_read(ret);
		return 0;
	}
	__sync_fetch_and_add(&PENDING_OPENS, -1); /* BPF v1 has no atomic sub */
	if (!match_late_path(ev)) {
		ev->hdr.kind = 0;
		bpf_task_storage_delete(&OPEN_PENDING, task);
		watch_first_read(ret);
		return 0;
	}
	ev->ret = (__s32)ret;
	read_opened_file(ret, ev);
	__u64 size = ev->hdr.size;
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	/* Opens that pass the filter are rare and are what findings are made
	 * of: wake the agent now rather than when the kernel next gets to it. */
	emit(ev, size, BPF_RB_FORCE_WAKEUP);
	ev->hdr.kind = 0;
	bpf_task_storage_delete(&OPEN_PENDING, task);
	return 0;
}

#define AT_FDCWD -100
#define O_CREAT_WRONLY_TRUNC 01101

/* The context is read directly (no probe_read); offsets stay CO-RE. */
SEC("tracepoint/syscalls/sys_enter_openat")
int vigil_openat(struct syscall_trace_enter *ctx)
{
	return on_open((const char *)ctx->args[1], (int)ctx->args[0], (__u32)ctx->args[2]);
}

/* openat2(dfd, path, struct open_how *how, size): flags live in user memory. */
SEC("tracepoint/syscalls/sys_enter_openat2")
int vigil_openat2(struct syscall_trace_enter *ctx)
{
	return on_open((const char *)ctx->args[1], (int)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_open")
int vigil_open(struct syscall_trace_enter *ctx)
{
	return on_open((const char *)ctx->args[0], AT_FDCWD, (__u32)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_enter_creat")
int vigil_creat(struct syscall_trace_enter *ctx)
{
	return on_open((const char *)ctx->args[0], AT_FDCWD, O_CREAT_WRONLY_TRUNC);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int vigil_openat_ret(struct syscall_trace_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int vigil_openat2_ret(struct syscall_trace_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_open")
int vigil_open_ret(struct syscall_trace_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_creat")
int vigil_creat_ret(struct syscall_trace_exit *ctx)
{
	return on_open_exit(ctx->ret);
}

/* UAPI opcodes (include/uapi/linux/io_uring.h): stable. */
#define IORING_OP_OPENAT 18
#define IORING_OP_OPENAT2 28

/*
 * io_uring opens waiting for their completion, by request (struct
 * io_kiocb address). Unlike a syscall, a request may complete on another
 * task (an io-wq worker), so the key is the request, not the thread. Not
 * LRU: an open is never lost to other entries; when the table is full the
 * record goes out at submission, without its result (OPEN_IO_URING_SUBMITTED).
 * A request address is reused by the kernel, so an entry whose completion
 * never came is overwritten rather than kept.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct vigil_open_event);
} IO_URING_OPENS SEC(".maps");

/* Entries in IO_URING_OPENS: every completion on the host passes here, and
 * returns after this one load while no matched open waits. */
__u32 IO_URING_PENDING = 0;

/*
 * An io_uring request as submitted (by the submitting thread, or by the
 * ring's SQPOLL kernel thread, whose process is the ring owner's): its
 * prep has run, so an open's path is already in the kernel (getname), and
 * it is matched against the table like an open syscall's. CO-RE guards: on
 * a kernel without these types the program does nothing.
 */
SEC("tracepoint/io_uring/io_uring_submit_req")
int vigil_io_uring_submit(struct trace_event_raw_io_uring_submit_req *ctx)
{
	if (!bpf_core_type_exists(struct io_open) || !bpf_core_field_exists(struct io_kiocb, cmd) ||
	    !bpf_core_field_exists(struct trace_event_raw_io_uring_submit_req, opcode))
		return 0;
	__u8 op = ctx->opcode;
	if (op != IORING_OP_OPENAT && op != IORING_OP_OPENAT2)
		return 0;
	if (is_agent()) {
		count(VIGIL_COUNTER_FILTERED);
		return 0;
	}
	struct io_kiocb *req = ctx->req;
	struct io_open *open = (struct io_open *)&req->cmd;
	const char *name = BPF_CORE_READ(open, filename, name);
	__u32 zero = 0;
	struct path_scratch *ps = bpf_map_lookup_elem(&PATH_SCRATCH, &zero);
	if (!ps || !name)
		return 0;
	long n = bpf_probe_read_kernel_str(ps->path, VIGIL_PATH_MAX, name);
	__u32 len = (__u32)(n - 1) & (VIGIL_PATH_MAX - 1);
	__u32 match = match_read_name(ps, n, false);
	if (!match)
		return 0;
	struct vigil_open_event *ev = bpf_map_lookup_elem(&EVENT_SCRATCH, &zero);
	if (!ev)
		return 0;
	__u32 plen = len + 1;
	if (plen > VIGIL_PATH_MAX)
		return 0;
	bpf_probe_read_kernel(ev->path, plen, ps->path);
	ev->dfd = BPF_CORE_READ(open, dfd);
	ev->flags = (__u32)BPF_CORE_READ(open, how.flags);
	ev->match = match;
	ev->path_len = plen;
	ev->ret = 0;
	ev->origin = BPF_CORE_READ(open, file_slot) ? VIGIL_OPEN_IO_URING_FIXED : VIGIL_OPEN_IO_URING;
	ev->dev = 0;
	ev->ino = 0;
	__u64 size = offsetof(struct vigil_open_event, path) + plen;
	fill_header(&ev->hdr, VIGIL_EVENT_OPEN, size);
	__u64 key = (__u64)req;
	bool known = bpf_map_lookup_elem(&IO_URING_OPENS, &key) != NULL;
	if (bpf_map_update_elem(&IO_URING_OPENS, &key, ev, BPF_ANY) != 0) {
		/* No room to wait for the result: sent now, never lost. */
		ev->origin = VIGIL_OPEN_IO_URING_SUBMITTED;
		emit(ev, size, BPF_RB_FORCE_WAKEUP);
		return 0;
	}
	if (!known)
		__sync_fetch_and_add(&IO_URING_PENDING, 1);
	return 0;
}

/* A completion: an open's waiting record goes out with its result. */
SEC("tracepoint/io_uring/io_uring_complete")
int vigil_io_uring_complete(struct trace_event_raw_io_uring_complete *ctx)
{
	if (IO_URING_PENDING == 0)
		return 0;
	__u64 key = (__u64)ctx->req;
	struct vigil_open_event *ev = bpf_map_lookup_elem(&IO_URING_OPENS, &key);
	if (!ev)
		return 0;
	ev->ret = ctx->res;
	/* The completion runs in a task of the ring owner's process (the
	 * submitter, an io-wq worker or the SQPOLL thread share its fd table). */
	if (ev->origin == VIGIL_OPEN_IO_URING)
		read_opened_file(ev->ret, ev);
	__u64 size = ev->hdr.size;
	if (size > sizeof(*ev))
		size = sizeof(*ev);
	emit(ev, size, BPF_RB_FORCE_WAKEUP);
	if (bpf_map_delete_elem(&IO_URING_OPENS, &key) == 0)
		__sync_fetch_and_add(&IO_URING_PENDING, -1);
	return 0;
}

#define TCP_SYN_SENT 2
#define TCP_LISTEN 10
#define IPPROTO_TCP 6
#define AF_INET 2
#define AF_INET6 10
#define PROT_EXEC 0x4

static __always_inline bool ai_port(__u16 port)
{
	for (__u32 i = 0; i < VIGIL_PORT_SLOTS; i++) {
		if (i >= AI_PORT_COUNT)
			break;
		if (AI_PORTS[i] == port)
			return true;
	}
	return false;
}

/*
 * TCP connects and listens, in the context of the connect()/listen() caller.
 * One tracepoint covers both and never fires for UDP or Unix sockets.
 */
SEC("tracepoint/sock/inet_sock_set_state")
int vigil_inet_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	int newstate = ctx->newstate;
	if (ctx->protocol != IPPROTO_TCP ||
	    (newstate != TCP_SYN_SENT && newstate != TCP_LISTEN))
		return 0;
	__u16 sport = ctx->sport;
	__u16 dport = ctx->dport;
	__u16 op = newstate == TCP_LISTEN ? VIGIL_NET_LISTEN : VIGIL_NET_CONNECT;
	/* Every listen (rare: the agent asks each new listener what it serves);
	 * connects only to the ports in the table. */
	if (is_agent() || (op == VIGIL_NET_CONNECT && !ai_port(dport))) {
		count(VIGIL_COUNTER_FILTERED);
		return 0;
	}
	struct vigil_net_event ev = {};
	ev.family = ctx->family;
	ev.op = op;
	ev.sport = sport;
	ev.dport = dport;
	/* Arrays are copied with probe reads (the verifier refuses derived ctx
	 * pointers), with explicit sizes: BPF_CORE_READ_INTO copies sizeof(*dst). */
	if (ev.family == AF_INET6) {
		bpf_core_read(ev.saddr, sizeof(ctx->saddr_v6), &ctx->saddr_v6);
		bpf_core_read(ev.daddr, sizeof(ctx->daddr_v6), &ctx->daddr_v6);
	} else {
		bpf_core_read(ev.saddr, sizeof(ctx->saddr), &ctx->saddr);
		bpf_core_read(ev.daddr, sizeof(ctx->daddr), &ctx->daddr);
	}
	fill_header(&ev.hdr, VIGIL_EVENT_NET, sizeof(ev));
	emit(&ev, sizeof(ev), BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* Where a path walk is: pointers kept as integers (read with probe reads). */
struct path_walk {
	__u64 dentry;
	__u64 mount;
	__u32 n;
	__u32 complete;
};

/* One step of the walk (a bpf_loop callback, so the verifier sees it once). */
static long path_walk_step(__u32 i, void *arg)
{
	struct path_walk *w = arg;
	struct dentry *d = (struct dentry *)w->dentry;
	struct mount *mnt = (struct mount *)w->mount;
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	struct dentry *mnt_root = BPF_CORE_READ(mnt, mnt.mnt_root);
	if (d == mnt_root || d == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (up == mnt || !up) {
			w->complete = 1;
			return 1;
		}
		/* Cross into the mount this one is mounted on. */
		w->dentry = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mount = (__u64)up;
		return 0;
	}
	if (w->n >= VIGIL_PATH_COMPONENTS)
		return 1;
	__u32 zero = 0;
	struct vigil_file_map_event *ev = bpf_map_lookup_elem(&EVENT_SCRATCH, &zero);
	if (!ev)
		return 1;
	const unsigned char *name = BPF_CORE_READ(d, d_name.name);
	bpf_probe_read_kernel_str(ev->components[w->n & (VIGIL_PATH_COMPONENTS - 1)],
				  VIGIL_COMPONENT_MAX, name);
	w->n++;
	w->dentry = (__u64)parent;
	return 0;
}

/*
 * The mapped file's path, from its dentry up through the mounts to the
 * root of the process's mount tree: what /proc/PID/maps would say, read
 * while the mapping happens (a loader may exit before user space looks).
 */
static __always_inline void walk_path(struct file *f, struct vigil_file_map_event *ev)
{
	struct vfsmount *vmnt = BPF_CORE_READ(f, f_path.mnt);
	struct path_walk w = {
		.dentry = (__u64)BPF_CORE_READ(f, f_path.dentry),
		.mount = (__u64)((char *)vmnt - bpf_core_field_offset(struct mount, mnt)),
	};
	bpf_loop(VIGIL_PATH_COMPONENTS * 2, path_walk_step, &w, 0);
	ev->component_count = w.n;
	ev->path_complete = w.complete;
}

/* Verdicts on executable files by version (see vigil_event.h). LRU: a
 * verdict aged out only costs a second check. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct vigil_library_key);
	__type(value, struct vigil_library_verdict);
} LIBRARY_VERDICTS SEC(".maps");

static __always_inline void inode_ctime(struct inode *inode, __s64 *sec, __u32 *nsec)
{
	struct inode___ctime_split *split = (void *)inode;
	if (bpf_core_field_exists(split->i_ctime_sec)) {
		*sec = BPF_CORE_READ(split, i_ctime_sec);
		/* Bit 31 is I_CTIME_QUERIED (multigrain timestamps, 6.13+), not
		 * part of the time stat reports. */
		*nsec = BPF_CORE_READ(split, i_ctime_nsec) & ~(1U << 31);
		return;
	}
	struct inode___ctime_hidden *hidden = (void *)inode;
	if (bpf_core_field_exists(hidden->__i_ctime)) {
		*sec = BPF_CORE_READ(hidden, __i_ctime.tv_sec);
		*nsec = BPF_CORE_READ(hidden, __i_ctime.tv_nsec);
		return;
	}
	struct inode___ctime_plain *plain = (void *)inode;
	*sec = BPF_CORE_READ(plain, i_ctime.tv_sec);
	*nsec = BPF_CORE_READ(plain, i_ctime.tv_nsec);
}

/* FMODE_PATH: an O_PATH fd, which cannot be mapped (mmap fails). */
#define FMODE_PATH 0x4000

/*
 * Whether an executable mapping of `f`, whose name is no AI runtime's,
 * goes to user space for a content check: every mapping of a file version
 * user space has not judged yet, and of one it found to be an AI runtime;
 * a version judged plain stays here. A file changed in place has a new
 * change time, so it is checked again. Nothing is written here: until
 * user space answers, every mapping goes out (a check that failed, or an
 * answer about another file, hides nothing).
 */
static __always_inline bool library_needs_check(struct file *f)
{
	if (!LIBRARY_CHECKS || (BPF_CORE_READ(f, f_mode) & FMODE_PATH))
		return false;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	if (!inode)
		return false;
	struct vigil_library_key key = {
		.ino = BPF_CORE_READ(inode, i_ino),
		.dev = BPF_CORE_READ(inode, i_sb, s_dev),
	};
	__s64 sec = 0;
	__u32 nsec = 0;
	inode_ctime(inode, &sec, &nsec);
	struct vigil_library_verdict *v = bpf_map_lookup_elem(&LIBRARY_VERDICTS, &key);
	if (v && v->ctime_sec == sec && v->ctime_nsec == nsec)
		return v->state == VIGIL_LIBRARY_AI_RUNTIME;
	return true;
}

/*
 * Two kinds of file mapping leave the kernel:
 * - executable (how a library gets loaded, by dlopen or the dynamic
 *   linker), when the file name read from the dentry matches a
 *   basename-prefix entry, or else for a content check
 *   (library_needs_check);
 * - read-only from offset 0 over at least LARGE_MAPPING_MIN bytes,
 *   whatever the name: how llama.cpp, safetensors and numpy load weights,
 *   so a model under a name that says nothing (cache.dat) still reaches the
 *   agent's content check.
 * mmap is far rarer than open, so this costs the open path nothing.
 */
SEC("tracepoint/syscalls/sys_enter_mmap")
int vigil_mmap(struct syscall_trace_enter *ctx)
{
	__u64 length = ctx->args[1];
	unsigned long prot = ctx->args[2];
	long fd = (long)ctx->args[4];
	__u64 offset = ctx->args[5];
	bool exec = prot & PROT_EXEC;
	bool large = !exec && LARGE_MAPPING_MIN && offset == 0 && length >= LARGE_MAPPING_MIN;
	if ((!exec && !large) || fd < 0 || is_agent()) {
		count(VIGIL_COUNTER_FILTERED);
		return 0;
	}
	struct file *f = file_of_fd(fd);
	if (!f)
		return 0;
	const unsigned char *name = BPF_CORE_READ(f, f_path.dentry, d_name.name);

	__u32 zero = 0;
	struct path_scratch *ps = bpf_map_lookup_elem(&PATH_SCRATCH, &zero);
	if (!ps)
		return 0;
	long n = bpf_probe_read_kernel_str(ps->path, VIGIL_NAME_MAX, name);
	if (n <= 0)
		return 0;
	__u32 len = (__u32)(n - 1) & (VIGIL_NAME_MAX - 1);
	__u32 match = VIGIL_MATCH_LARGE_MAPPING;
	if (exec) {
		match = match_read_name(ps, n, true);
		if (!match && !library_needs_check(f))
			return 0;
		if (!match)
			match = VIGIL_MATCH_EXEC_BY_CONTENT;
	}
	struct vigil_file_map_event *ev = bpf_map_lookup_elem(&EVENT_SCRATCH, &zero);
	if (!ev)
		return 0;
	__u32 nlen = len + 1;
	if (nlen > VIGIL_NAME_MAX)
		return 0;
	bpf_probe_read_kernel(ev->name, nlen, ps->path);
	ev->fd = (__s32)fd;
	ev->match = match;
	ev->name_len = nlen;
	ev->prot = (__u32)prot;
	ev->length = length;
	file_identity(f, &ev->dev, &ev->ino);
	ev->component_count = 0;
	ev->path_complete = 0;
	walk_path(f, ev);
	__u64 size = offsetof(struct vigil_file_map_event, name) + nlen;
	fill_header(&ev->hdr, VIGIL_EVENT_FILE_MAP, size);
	emit(ev, size, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/*
 * Content checks of files read with read() (not mapped): weights under a
 * name that says nothing (shard.000, weights.cache) are found by their
 * first bytes. Three steps, each cheap where nothing is to be done:
 * - every successful open not already matched by name, by a process other
 *   than the agent, marks its fd in the process's table (one byte per fd
 *   below VIGIL_WATCH_FDS, in task storage of the thread-group leader;
 *   higher fds in HIGH_FD_WATCHES); no file is looked at yet;
 * - read() or pread64() of a marked fd looks at the file once: opened for
 *   reading only, a regular file of at least CONTENT_READ_MIN bytes, read
 *   at offset 0. Then it arms this thread's READ_PENDING with the buffer
 *   and clears the mark; anything else clears it (a read at another
 *   offset first, as a zip reader makes to find its directory, uses up one
 *   of VIGIL_READ_TRIES instead);
 * - the read's return looks at the bytes it read and sends a FILE_MAP
 *   record (match CONTENT_READ) only when they start like a model format,
 *   so ELF headers, text and images never leave the kernel; the agent reads
 *   the file's head again and decides.
 * An open costs one storage lookup and a store, a read that is not marked
 * one lookup and a load, a read's return one load (PENDING_READS is 0
 * nearly always). A mark left by a closed fd is overwritten by the next
 * open or connect of that number, or cleared by the next read of it.
 */
const volatile __u32 CONTENT_READ = 0;
const volatile __u64 CONTENT_READ_MIN = 16;

#define VIGIL_READ_TRIES 8
/* fds below this are marked in the process's own table, one byte each;
 * higher ones (a raised RLIMIT_NOFILE) in HIGH_FD_WATCHES. */
#define VIGIL_WATCH_FDS 1024
#define FMODE_READ 0x1
#define FMODE_WRITE 0x2
#define S_IFMT 00170000
#define S_IFREG 0100000

/* A mark: awaiting its first read (low bits: reads at other offsets
 * left), or its first send. */
#define VIGIL_WATCH_READ 0x80
#define VIGIL_WATCH_SEND 0x40
#define VIGIL_WATCH_TRIES 0x0f

struct fd_watches {
	__u8 state[VIGIL_WATCH_FDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct fd_watches);
} READ_WATCHES SEC(".maps");

/* Marks of fds at or above VIGIL_WATCH_FDS, by (tgid << 32 | fd). LRU:
 * only a process with more than a thousand fds open uses it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} HIGH_FD_WATCHES SEC(".maps");

struct read_pending {
	__u64 buf;
	__s32 fd;
	__u32 armed;
	__s32 dup_of; /* dup's old fd + 1 while dup runs, else 0 */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct read_pending);
} READ_PENDING SEC(".maps");

__u32 PENDING_READS = 0;

/*
 * The mark of `fd` in the current process, or NULL: in the thread-group
 * leader's table, or for a high fd in HIGH_FD_WATCHES. `create` makes the
 * table or the entry where missing.
 */
static __always_inline __u8 *fd_mark(long fd, bool create)
{
	if (fd < 0)
		return NULL;
	if (fd < VIGIL_WATCH_FDS) {
		struct task_struct *leader = bpf_get_current_task_btf()->group_leader;
		struct fd_watches *w = bpf_task_storage_get(&READ_WATCHES, leader, 0, 0);
		if (!w) {
			/* A process's table starts as its parent's, made at its
			 * first mark or its first look at one: the fds a fork
			 * inherits keep their marks (a shell's `exec 3<f`, then a
			 * child reading fd 3). */
			struct task_struct *parent = leader->real_parent;
			struct fd_watches *from =
				parent ? bpf_task_storage_get(&READ_WATCHES, parent->group_leader, 0, 0) : NULL;
			if (from || create) {
				w = bpf_task_storage_get(&READ_WATCHES, leader, 0,
							 BPF_LOCAL_STORAGE_GET_F_CREATE);
				if (w && from)
					bpf_probe_read_kernel(w->state, sizeof(w->state), from->state);
			}
		}
		if (!w)
			return NULL;
		/* Keeps the compiler from indexing before the null check (the
		 * verifier refuses arithmetic on a maybe-null pointer). */
		asm volatile("" : "+r"(w));
		return &w->state[fd & (VIGIL_WATCH_FDS - 1)];
	}
	__u64 key = (bpf_get_current_pid_tgid() & 0xFFFFFFFF00000000ULL) | (__u32)fd;
	__u8 *mark = bpf_map_lookup_elem(&HIGH_FD_WATCHES, &key);
	if (mark || !create)
		return mark;
	__u8 none = 0;
	bpf_map_update_elem(&HIGH_FD_WATCHES, &key, &none, BPF_NOEXIST);
	return bpf_map_lookup_elem(&HIGH_FD_WATCHES, &key);
}

static __always_inline void watch_first_read(long fd)
{
	if (!CONTENT_READ || fd < 0 || is_agent())
		return;
	__u8 *mark = fd_mark(fd, true);
	if (mark)
		*mark = VIGIL_WATCH_READ | VIGIL_READ_TRIES;
}

/* Whether `f` is worth a look at its first bytes read. */
static __always_inline bool readable_regular_file(struct file *f)
{
	unsigned int mode = BPF_CORE_READ(f, f_mode);
	if (!(mode & FMODE_READ) || (mode & FMODE_WRITE))
		return false;
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFREG)
		return false;
	return BPF_CORE_READ(inode, i_size) >= (long long)CONTENT_READ_MIN;
}

/* A read of `fd` into `buf` begins; `pos` is its offset, or -1 for the file's. */
static __always_inline int on_read(long fd, __u64 buf, long long pos)
{
	if (!CONTENT_READ)
		return 0;
	__u8 *mark = fd_mark(fd, false);
	if (!mark || !(*mark & VIGIL_WATCH_READ))
		return 0;
	struct file *f = file_of_fd(fd);
	if (!f || !readable_regular_file(f)) {
		*mark = 0;
		return 0;
	}
	if (pos < 0)
		pos = BPF_CORE_READ(f, f_pos);
	if (pos != 0) {
		__u8 tries = *mark & VIGIL_WATCH_TRIES;
		*mark = tries <= 1 ? 0 : (VIGIL_WATCH_READ | (tries - 1));
		return 0;
	}
	*mark = 0;
	struct read_pending *p = bpf_task_storage_get(&READ_PENDING, bpf_get_current_task_btf(), 0,
						      BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p) {
		count(VIGIL_COUNTER_EVICTED);
		return 0;
	}
	if (!p->armed)
		__sync_fetch_and_add(&PENDING_READS, 1);
	p->buf = buf;
	p->fd = (__s32)fd;
	p->armed = 1;
	return 0;
}

/*
 * A marked fd copied with dup2/dup3 (how a shell's `< file` and dd hand
 * a file over as stdin) or dup is marked under its new number too. The
 * copy is made on entry, before the kernel checks the call; a failed call
 * leaves a mark that the next read of that fd clears.
 */
static __always_inline void watch_copy(long oldfd, long newfd)
{
	if ((!CONTENT_READ && !STREAM_CHECKS) || oldfd < 0 || newfd < 0 || oldfd == newfd)
		return;
	__u8 *from = fd_mark(oldfd, false);
	if (!from || !*from)
		return;
	__u8 copy = *from;
	__u8 *to = fd_mark(newfd, true);
	if (to)
		*to = copy;
}

SEC("tracepoint/syscalls/sys_enter_dup2")
int vigil_dup2(struct syscall_trace_enter *ctx)
{
	watch_copy((long)ctx->args[0], (long)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_dup3")
int vigil_dup3(struct syscall_trace_enter *ctx)
{
	watch_copy((long)ctx->args[0], (long)ctx->args[1]);
	return 0;
}

/* dup(oldfd): the new number is known on return; the old one waits in
 * the thread's READ_PENDING (dup_of set, not armed). */
SEC("tracepoint/syscalls/sys_enter_dup")
int vigil_dup(struct syscall_trace_enter *ctx)
{
	if (!CONTENT_READ && !STREAM_CHECKS)
		return 0;
	long oldfd = (long)ctx->args[0];
	__u8 *mark = fd_mark(oldfd, false);
	if (!mark || !*mark)
		return 0;
	struct read_pending *p = bpf_task_storage_get(&READ_PENDING, bpf_get_current_task_btf(), 0,
						      BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (p && !p->armed)
		p->dup_of = (__s32)oldfd + 1;
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_dup")
int vigil_dup_ret(struct syscall_trace_exit *ctx)
{
	if (!CONTENT_READ && !STREAM_CHECKS)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct read_pending *p = bpf_task_storage_get(&READ_PENDING, task, 0, 0);
	if (!p || !p->dup_of)
		return 0;
	long oldfd = p->dup_of - 1;
	p->dup_of = 0;
	watch_copy(oldfd, ctx->ret);
	return 0;
}

#define VIGIL_READ_HEAD 16

/* Whether the first bytes read start like a model format (a superset of
 * what the agent's sniff accepts: it decides). */
static __always_inline bool starts_like_model(const __u8 *b, long n, __u64 buf, long ret)
{
	if (n >= 4 && b[0] == 'G' && b[1] == 'G' && b[2] == 'U' && b[3] == 'F')
		return true;
	if (n >= 8 && b[4] == 'T' && b[5] == 'F' && b[6] == 'L' && b[7] == '3')
		return true;
	/* A pickle of protocol 2 to 5 (legacy torch.save). */
	if (n >= 2 && b[0] == 0x80 && b[1] >= 2 && b[1] <= 5)
		return true;
	/* safetensors: a little-endian header length under 2^32, then '{'. */
	if (n >= 9 && b[4] == 0 && b[5] == 0 && b[6] == 0 && b[7] == 0 && b[8] == '{')
		return true;
	/* ONNX ModelProto: ir_version (field 1, varint) first. */
	if (n >= 2 && b[0] == 0x08 && b[1] > 0 && b[1] < 0x20)
		return true;
	/* A zip whose first entry is torch.save's data.pkl (when the read
	 * holds the name; a short read of the local header goes to the agent). */
	if (n >= 4 && b[0] == 'P' && b[1] == 'K' && b[2] == 3 && b[3] == 4) {
		if (ret < 30)
			return true;
		__u16 name_len = 0;
		if (bpf_probe_read_user(&name_len, sizeof(name_len), (void *)(buf + 26)) != 0)
			return false;
		if (name_len < 8)
			return false;
		if (30 + (long)name_len > ret)
			return true;
		char tail[8];
		if (bpf_probe_read_user(tail, sizeof(tail), (void *)(buf + 30 + name_len - 8)) != 0)
			return false;
		return tail[0] == 'd' && tail[1] == 'a' && tail[2] == 't' && tail[3] == 'a' &&
		       tail[4] == '.' && tail[5] == 'p' && tail[6] == 'k' && tail[7] == 'l';
	}
	return false;
}

static __always_inline int on_read_exit(long ret)
{
	if (PENDING_READS == 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct read_pending *p = bpf_task_storage_get(&READ_PENDING, task, 0, 0);
	if (!p || !p->armed)
		return 0;
	__sync_fetch_and_add(&PENDING_READS, -1);
	p->armed = 0;
	__u64 buf = p->buf;
	long fd = p->fd;
	bpf_task_storage_delete(&READ_PENDING, task);
	if (ret <= 0) {
		/* Nothing read (an empty or failed read): the next read at
		 * offset 0 is the one to look at. */
		__u8 *mark = fd_mark(fd, false);
		if (mark)
			*mark = VIGIL_WATCH_READ | (VIGIL_READ_TRIES - 1);
		return 0;
	}
	__u8 head[VIGIL_READ_HEAD] = {};
	long n = ret < VIGIL_READ_HEAD ? ret : VIGIL_READ_HEAD;
	if (bpf_probe_read_user(head, n & (2 * VIGIL_READ_HEAD - 1), (void *)buf) != 0)
		return 0;
	/* A first read shorter than a format's magic and version (a reader
	 * taking safetensors' 8-byte length first) goes to the agent, which
	 * reads the head itself. */
	if (n >= VIGIL_READ_HEAD && !starts_like_model(head, n, buf, ret)) {
		count(VIGIL_COUNTER_FILTERED);
		return 0;
	}
	struct file *f = file_of_fd(fd);
	if (!f)
		return 0;
	__u32 zero = 0;
	struct vigil_file_map_event *ev = bpf_map_lookup_elem(&EVENT_SCRATCH, &zero);
	if (!ev)
		return 0;
	const unsigned char *name = BPF_CORE_READ(f, f_path.dentry, d_name.name);
	long nlen = bpf_probe_read_kernel_str(ev->name, VIGIL_NAME_MAX, name);
	if (nlen <= 0)
		return 0;
	ev->fd = (__s32)fd;
	ev->match = VIGIL_MATCH_CONTENT_READ;
	ev->name_len = (__u32)nlen;
	ev->prot = 0;
	ev->length = (__u64)ret;
	file_identity(f, &ev->dev, &ev->ino);
	ev->component_count = 0;
	ev->path_complete = 0;
	walk_path(f, ev);
	if (nlen > VIGIL_NAME_MAX)
		return 0;
	__u64 size = offsetof(struct vigil_file_map_event, name) + (__u32)nlen;
	fill_header(&ev->hdr, VIGIL_EVENT_FILE_MAP, size);
	emit(ev, size, BPF_RB_FORCE_WAKEUP);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int vigil_read(struct syscall_trace_enter *ctx)
{
	return on_read((long)ctx->args[0], ctx->args[1], -1);
}

SEC("tracepoint/syscalls/sys_exit_read")
int vigil_read_ret(struct syscall_trace_exit *ctx)
{
	return on_read_exit(ctx->ret);
}

/* pread64(fd, buf, count, pos): only a read at offset 0 counts. */
SEC("tracepoint/syscalls/sys_enter_pread64")
int vigil_pread(struct syscall_trace_enter *ctx)
{
	long long pos = (long long)ctx->args[3];
	if (pos != 0)
		return 0;
	return on_read((long)ctx->args[0], ctx->args[1], 0);
}

SEC("tracepoint/syscalls/sys_exit_pread64")
int vigil_pread_ret(struct syscall_trace_exit *ctx)
{
	return on_read_exit(ctx->ret);
}

/* A destination: family, port (host order), address. */
struct dns_peer {
	__u16 family;
	__u16 port;
	__u8 addr[16];
};

/*
 * Sockets connected to port 53, by (tgid << 32 | fd): a resolver connects
 * its UDP socket and then sends without an address. LRU: a socket closed
 * without a later connect cannot fill the map; a reused fd whose entry went
 * stale only sends a payload that the agent does not parse as a question.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct dns_peer);
} DNS_SOCKETS SEC(".maps");

#define DNS_PORT 53

/* The user's sockaddr, if it is an IPv4/IPv6 address (any port);
 * `faulted` says it could not be read (memory not faulted in yet). */
static __always_inline bool read_peer(const void *uaddr, struct dns_peer *peer, bool *faulted)
{
	*faulted = false;
	if (!uaddr)
		return false;
	__u16 head[2];
	long r = bpf_probe_read_user(head, sizeof(head), uaddr);
	if (r != 0) {
		*faulted = r == -EFAULT;
		return false;
	}
	if (head[0] != AF_INET && head[0] != AF_INET6)
		return false;
	peer->family = head[0];
	peer->port = __builtin_bswap16(head[1]);
	if (head[0] == AF_INET6)
		bpf_probe_read_user(peer->addr, 16, (const __u8 *)uaddr + 8);
	else
		bpf_probe_read_user(peer->addr, 4, (const __u8 *)uaddr + 4);
	return true;
}

/* The user's sockaddr, if it is an IPv4/IPv6 address on port 53. */
static __always_inline bool read_dns_peer(const void *uaddr, struct dns_peer *peer)
{
	bool faulted;
	return read_peer(uaddr, peer, &faulted) && peer->port == DNS_PORT;
}

static __always_inline __u64 socket_key(long fd)
{
	return (bpf_get_current_pid_tgid() & 0xFFFFFFFF00000000ULL) | (__u32)fd;
}

#define TLS_PORT 443
/* Sends looked at per stream: a first send too short to hold a
 * ClientHello (a lone record header, an empty send) passes to the next. */
#define VIGIL_SEND_TRIES 3
#define VIGIL_SEND_MIN 16

/*
 * Sockets connected to port 443 or 53 whose first send is awaited, by the
 * socket's struct file: the peer, for the record. Keyed by the open file,
 * not the fd, so a dup'd or inherited fd finds it; the fd is also marked
 * (VIGIL_WATCH_SEND), which is all a send looks at before finding it
 * here. LRU: a socket closed before it sent anything ages out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct dns_peer);
} STREAM_PEERS SEC(".maps");

/* The user's sockaddr, if it is an IPv4/IPv6 address on port 443 or 53;
 * `faulted` says it could not be read (memory not faulted in yet). */
static __always_inline bool read_stream_peer_or_fault(const void *uaddr, struct dns_peer *peer,
						      bool *faulted)
{
	return read_peer(uaddr, peer, faulted) &&
	       (peer->port == TLS_PORT || peer->port == DNS_PORT);
}

static __always_inline bool read_stream_peer(const void *uaddr, struct dns_peer *peer)
{
	bool faulted;
	return read_stream_peer_or_fault(uaddr, peer, &faulted);
}

/*
 * What a send or connect could not read on entry, its memory not yet
 * faulted in (an attacker's way to hide a hello or an address from a
 * probe read): read again when the syscall returns, the kernel having
 * faulted the page in meanwhile. PENDING_STREAMS counts the waiting, so
 * the returns of all other writes cost one load.
 */
#define VIGIL_RETRY_SEND 1
#define VIGIL_RETRY_CONNECT 2

struct stream_retry {
	__u64 ptr; /* the send's buffer, or connect's sockaddr */
	__u64 len;
	__s64 fd;
	struct dns_peer peer;
	__u32 kind; /* VIGIL_RETRY_*, 0: none */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct stream_retry);
} STREAM_RETRY SEC(".maps");

__u32 PENDING_STREAMS = 0;

static __always_inline void retry_on_return(__u32 kind, long fd, __u64 ptr, __u64 len,
					    struct dns_peer *peer)
{
	struct stream_retry *r = bpf_task_storage_get(&STREAM_RETRY, bpf_get_current_task_btf(), 0,
						      BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!r)
		return;
	if (!r->kind)
		__sync_fetch_and_add(&PENDING_STREAMS, 1);
	r->kind = kind;
	r->fd = fd;
	r->ptr = ptr;
	r->len = len;
	if (peer)
		r->peer = *peer;
}

/* Marks `fd` for its first send (STREAM_CHECKS on, not the agent). */
static __always_inline void watch_first_send(long fd, const void *uaddr)
{
	struct dns_peer peer = {};
	bool faulted = false;
	if (!STREAM_CHECKS || fd < 0)
		return;
	if (!read_stream_peer_or_fault(uaddr, &peer, &faulted)) {
		if (faulted)
			retry_on_return(VIGIL_RETRY_CONNECT, fd, (__u64)uaddr, 0, NULL);
		return;
	}
	struct file *f = file_of_fd(fd);
	__u8 *mark = fd_mark(fd, true);
	if (!f || !mark)
		return;
	__u64 key = (__u64)f;
	bpf_map_update_elem(&STREAM_PEERS, &key, &peer, BPF_ANY);
	*mark = VIGIL_WATCH_SEND | VIGIL_SEND_TRIES;
}

/* connect(): remember sockets connected to port 53, forget reconnected
 * ones; mark TCP streams to 443 and 53 for their first send. */
SEC("tracepoint/syscalls/sys_enter_connect")
int vigil_connect(struct syscall_trace_enter *ctx)
{
	long fd = (long)ctx->args[0];
	struct dns_peer peer = {};
	__u64 key = socket_key(fd);
	if (is_agent())
		return 0;
	if (read_dns_peer((const void *)ctx->args[1], &peer))
		bpf_map_update_elem(&DNS_SOCKETS, &key, &peer, BPF_ANY);
	else
		bpf_map_delete_elem(&DNS_SOCKETS, &key);
	watch_first_send(fd, (const void *)ctx->args[1]);
	return 0;
}

/* Whether `fd` awaits its first send (a cheap look before any buffer is
 * read: every write and send of the host passes here). */
static __always_inline bool stream_marked(long fd)
{
	if (!STREAM_CHECKS)
		return false;
	__u8 *mark = fd_mark(fd, false);
	return mark && (*mark & VIGIL_WATCH_SEND);
}

#define MSG_FASTOPEN 0x20000000

/*
 * A send of `len` bytes on `fd` begins: if it is the first real one on a
 * stream marked at connect (or `to`, the address of a MSG_FASTOPEN send,
 * which connects and sends at once, on 443), the record to fill with its
 * first bytes, else NULL. A
 * send under VIGIL_SEND_MIN bytes leaves the mark for the next one (up to
 * VIGIL_SEND_TRIES), so a hello cannot hide behind an empty send or a
 * lone record header. Whether the socket is TCP is not asked: a datagram
 * to 443 (QUIC) has no ClientHello in clear, which the agent does not
 * parse as one.
 */
static __always_inline struct vigil_stream_event *stream_start(long fd, __u64 len, const void *to)
{
	if (!STREAM_CHECKS || is_agent())
		return NULL;
	struct dns_peer peer = {};
	bool addressed = to && read_stream_peer(to, &peer) && peer.port == TLS_PORT;
	if (!addressed) {
		__u8 *mark = fd_mark(fd, false);
		if (!mark || !(*mark & VIGIL_WATCH_SEND))
			return NULL;
		if (len < VIGIL_SEND_MIN) {
			__u8 tries = *mark & VIGIL_WATCH_TRIES;
			*mark = tries <= 1 ? 0 : (VIGIL_WATCH_SEND | (tries - 1));
			return NULL;
		}
		*mark = 0;
		struct file *f = file_of_fd(fd);
		if (!f)
			return NULL;
		__u64 key = (__u64)f;
		struct dns_peer *known = bpf_map_lookup_elem(&STREAM_PEERS, &key);
		if (!known)
			return NULL;
		peer = *known;
		bpf_map_delete_elem(&STREAM_PEERS, &key);
	}
	__u32 zero = 0;
	struct vigil_stream_event *ev = bpf_map_lookup_elem(&EVENT_SCRATCH, &zero);
	if (!ev)
		return NULL;
	ev->family = peer.family;
	ev->dport = peer.port;
	__builtin_memcpy(ev->daddr, peer.addr, 16);
	return ev;
}

static __always_inline void stream_emit(struct vigil_stream_event *ev, __u32 n)
{
	if (n == 0 || n > VIGIL_STREAM_MAX)
		return;
	ev->payload_len = n;
	__u64 size = offsetof(struct vigil_stream_event, payload) + n;
	fill_header(&ev->hdr, VIGIL_EVENT_STREAM, size);
	emit(ev, size, BPF_RB_FORCE_WAKEUP);
}

/* The first send of a marked stream, `len` bytes at `buf` (`to`: a
 * sendto's address, or NULL): true if it was one. */
static __always_inline bool send_starts_stream(long fd, const void *buf, __u64 len, const void *to)
{
	struct vigil_stream_event *ev = stream_start(fd, len, to);
	if (!ev)
		return false;
	__u32 n = len < VIGIL_STREAM_MAX ? (__u32)len : VIGIL_STREAM_MAX;
	if (!buf)
		return true;
	if (bpf_probe_read_user(ev->payload, n & (2 * VIGIL_STREAM_MAX - 1), buf) != 0) {
		struct dns_peer peer = { .family = ev->family, .port = ev->dport };
		__builtin_memcpy(peer.addr, ev->daddr, 16);
		retry_on_return(VIGIL_RETRY_SEND, fd, (__u64)buf, len, &peer);
		return true;
	}
	stream_emit(ev, n);
	return true;
}

/* A send or connect returns: what its entry could not read, read now. */
static __always_inline int on_stream_return(void)
{
	if (PENDING_STREAMS == 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct stream_retry *r = bpf_task_storage_get(&STREAM_RETRY, task, 0, 0);
	if (!r || !r->kind)
		return 0;
	__sync_fetch_and_add(&PENDING_STREAMS, -1);
	__u32 kind = r->kind;
	r->kind = 0;
	if (kind == VIGIL_RETRY_CONNECT) {
		watch_first_send(r->fd, (const void *)r->ptr);
		return 0;
	}
	__u32 zero = 0;
	struct vigil_stream_event *ev = bpf_map_lookup_elem(&EVENT_SCRATCH, &zero);
	if (!ev)
		return 0;
	ev->family = r->peer.family;
	ev->dport = r->peer.port;
	__builtin_memcpy(ev->daddr, r->peer.addr, 16);
	__u32 n = r->len < VIGIL_STREAM_MAX ? (__u32)r->len : VIGIL_STREAM_MAX;
	if (bpf_probe_read_user(ev->payload, n & (2 * VIGIL_STREAM_MAX - 1), (const void *)r->ptr) != 0)
		return 0;
	stream_emit(ev, n);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_write")
int vigil_write_ret(void *ctx)
{
	return on_stream_return();
}

SEC("tracepoint/syscalls/sys_exit_sendto")
int vigil_sendto_ret(void *ctx)
{
	return on_stream_return();
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int vigil_sendmsg_ret(void *ctx)
{
	return on_stream_return();
}

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int vigil_sendmmsg_ret(void *ctx)
{
	return on_stream_return();
}

SEC("tracepoint/syscalls/sys_exit_connect")
int vigil_connect_ret(void *ctx)
{
	return on_stream_return();
}

SEC("tracepoint/syscalls/sys_enter_write")
int vigil_write(struct syscall_trace_enter *ctx)
{
	send_starts_stream((long)ctx->args[0], (const void *)ctx->args[1], ctx->args[2], NULL);
	return 0;
}

/* Where a send goes, if to port 53: its address, or the connected socket's. */
static __always_inline bool dns_destination(long fd, const void *uaddr, struct dns_peer *out)
{
	if (read_dns_peer(uaddr, out))
		return true;
	__u64 key = socket_key(fd);
	struct dns_peer *peer = bpf_map_lookup_elem(&DNS_SOCKETS, &key);
	if (!peer)
		return false;
	*out = *peer;
	return true;
}

/* A message to port 53: its first bytes go to the agent. */
static __always_inline int send_dns(struct dns_peer *peer, const void *buf, __u64 len)
{
	if (is_agent() || !buf || len == 0) {
		count(VIGIL_COUNTER_FILTERED);
		return 0;
	}
	__u32 zero = 0;
	struct vigil_dns_event *ev = bpf_map_lookup_elem(&EVENT_SCRATCH, &zero);
	if (!ev)
		return 0;
	__u32 n = len < VIGIL_DNS_MAX ? (__u32)len : VIGIL_DNS_MAX;
	if (bpf_probe_read_user(ev->payload, n, buf) != 0)
		return 0;
	ev->family = peer->family;
	ev->dport = peer->port;
	ev->payload_len = n;
	__builtin_memcpy(ev->daddr, peer->addr, 16);
	__u64 size = offsetof(struct vigil_dns_event, payload) + n;
	fill_header(&ev->hdr, VIGIL_EVENT_DNS, size);
	emit(ev, size, BPF_RB_FORCE_WAKEUP);
	return 0;
}

/* sendto(fd, buf, len, flags, addr, addrlen); send() is sendto without addr. */
SEC("tracepoint/syscalls/sys_enter_sendto")
int vigil_sendto(struct syscall_trace_enter *ctx)
{
	const void *to = (ctx->args[3] & MSG_FASTOPEN) ? (const void *)ctx->args[4] : NULL;
	if (send_starts_stream((long)ctx->args[0], (const void *)ctx->args[1], ctx->args[2], to))
		return 0;
	struct dns_peer peer = {};
	if (!dns_destination((long)ctx->args[0], (const void *)ctx->args[4], &peer))
		return 0;
	return send_dns(&peer, (const void *)ctx->args[1], ctx->args[2]);
}

struct user_iovec {
	void *iov_base;
	__u64 iov_len;
};

struct user_msghdr_head {
	void *msg_name;
	int msg_namelen;
	struct user_iovec *msg_iov;
};

/* A msghdr in user memory: its address, then (for port 53) its first buffer. */
static __always_inline int on_send_msghdr(long fd, const void *umsg, __u64 flags)
{
	struct user_msghdr_head m = {};
	if (bpf_probe_read_user(&m, sizeof(m), umsg) != 0)
		return 0;
	bool fastopen = flags & MSG_FASTOPEN;
	if (m.msg_iov && (fastopen || stream_marked(fd))) {
		/* The first buffer with bytes in it (an empty one may lead). */
		struct user_iovec v = {};
		for (int i = 0; i < 4; i++) {
			if (bpf_probe_read_user(&v, sizeof(v), m.msg_iov + i) != 0 || v.iov_len)
				break;
		}
		if (send_starts_stream(fd, v.iov_base, v.iov_len, fastopen ? m.msg_name : NULL))
			return 0;
	}
	struct dns_peer peer = {};
	if (!dns_destination(fd, m.msg_name, &peer) || !m.msg_iov)
		return 0;
	struct user_iovec iov = {};
	if (bpf_probe_read_user(&iov, sizeof(iov), m.msg_iov) != 0)
		return 0;
	return send_dns(&peer, iov.iov_base, iov.iov_len);
}

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int vigil_sendmsg(struct syscall_trace_enter *ctx)
{
	return on_send_msghdr((long)ctx->args[0], (const void *)ctx->args[1], ctx->args[2]);
}

/* sendmmsg: glibc sends the A and AAAA questions together; the first names the host. */
SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int vigil_sendmmsg(struct syscall_trace_enter *ctx)
{
	return on_send_msghdr((long)ctx->args[0], (const void *)ctx->args[1], ctx->args[3]);
}

/* writev(fd, iov, n): glibc sends a DNS question over TCP as two buffers
 * (length, message), and a TLS library may send a hello in pieces: the
 * first four buffers with bytes in them are captured one after another,
 * the first cut to 1 KiB, the second to 512 bytes, the others to 256. */
static __always_inline __u32 capture_iov(struct vigil_stream_event *ev, __u32 at,
					 struct user_iovec *v, __u32 cap)
{
	__u32 n = v->iov_len < cap ? (__u32)v->iov_len : cap;
	if (n == 0 || bpf_probe_read_user(ev->payload + (at & 2047), n & 1023, v->iov_base) != 0)
		return at;
	return at + (n & 1023);
}

SEC("tracepoint/syscalls/sys_enter_writev")
int vigil_writev(struct syscall_trace_enter *ctx)
{
	const struct user_iovec *iov = (const void *)ctx->args[1];
	__u64 count = ctx->args[2];
	if (!iov || count == 0 || !stream_marked((long)ctx->args[0]))
		return 0;
	struct user_iovec v[4] = {};
	__u32 got = 0;
	__u64 total = 0;
	for (int i = 0; i < 8 && i < count && got < 4; i++) {
		struct user_iovec one = {};
		if (bpf_probe_read_user(&one, sizeof(one), iov + i) != 0)
			break;
		if (one.iov_len == 0)
			continue;
		v[got & 3] = one;
		total += one.iov_len;
		got++;
	}
	struct vigil_stream_event *ev = stream_start((long)ctx->args[0], total, NULL);
	if (!ev)
		return 0;
	__u32 at = capture_iov(ev, 0, &v[0], 1023);
	at = capture_iov(ev, at, &v[1], 512);
	at = capture_iov(ev, at, &v[2], 256);
	at = capture_iov(ev, at, &v[3], 256);
	stream_emit(ev, at);
	return 0;
}
