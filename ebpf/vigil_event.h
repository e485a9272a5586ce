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
#define VIGIL_EVENT_NET 4
#define VIGIL_EVENT_FILE_MAP 5
#define VIGIL_EVENT_DNS 6
#define VIGIL_EVENT_STREAM 7

#define VIGIL_COMM_LEN 16
/* Longest path the kernel accepts, NUL included. */
#define VIGIL_PATH_MAX 4096
/* argv bytes captured at exec (NUL-separated). */
#define VIGIL_ARGS_MAX 1024
/* Longest file name (one path component), NUL included. */
#define VIGIL_NAME_MAX 256
/* A library's path, walked up from its dentry: at most this many
 * components (innermost first), each cut to this many bytes. */
#define VIGIL_PATH_COMPONENTS 16
#define VIGIL_COMPONENT_MAX 128

/* Counter slots of the per-CPU "COUNTERS" array. */
#define VIGIL_COUNTER_EMITTED 0
#define VIGIL_COUNTER_FILTERED 1
#define VIGIL_COUNTER_DROPPED 2
/* Matched opens lost from the in-flight table (evicted) before their
 * syscall returned: they never became records. */
#define VIGIL_COUNTER_EVICTED 3
#define VIGIL_COUNTER_SLOTS 4

/* Path filter table. */
#define VIGIL_FILTER_SLOTS 32
#define VIGIL_FILTER_UNUSED 0
#define VIGIL_FILTER_SUFFIX 1
#define VIGIL_FILTER_PREFIX 2
/* Matched against the file name of an executable mapping, not a path. */
#define VIGIL_FILTER_BASENAME_PREFIX 3
/* What a filter entry says a matching path is. */
#define VIGIL_MATCH_MODEL_FILE 1
#define VIGIL_MATCH_GPU_DEVICE 2
#define VIGIL_MATCH_AI_RUNTIME 3
/* A large read-only mapping of a file from its start, whatever its name:
 * user space checks its content (weights loaded with mmap under a name that
 * says nothing, such as cache.dat). */
#define VIGIL_MATCH_LARGE_MAPPING 4
/* A file read with read() or pread64() at offset 0 whose first bytes start
 * like a model format, whatever its name (FILE_MAP record, prot 0, length
 * the bytes read): user space checks its content. */
#define VIGIL_MATCH_CONTENT_READ 5
/* An executable mapping of a file whose name is not an AI runtime's: user
 * space checks its ELF content (dynamic symbols, soname). Sent until user
 * space judges the file version plain (LIBRARY_VERDICTS). */
#define VIGIL_MATCH_EXEC_BY_CONTENT 6

/* DNS message bytes captured from a send to port 53. */
#define VIGIL_DNS_MAX 256
/* First bytes captured of a TCP stream to port 443 (TLS ClientHello) or
 * 53 (DNS over TCP). */
#define VIGIL_STREAM_MAX 2048

/* TCP ports whose connects and listens leave the kernel. */
#define VIGIL_PORT_SLOTS 16
#define VIGIL_NET_CONNECT 1
#define VIGIL_NET_LISTEN 2

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

/* How a file was opened: what vigil_open_event.ret means. */
/* An open syscall: ret is an fd or -errno. */
#define VIGIL_OPEN_SYSCALL 0
/* IORING_OP_OPENAT/OPENAT2: ret is the completion's result, an fd or -errno. */
#define VIGIL_OPEN_IO_URING 1
/* The same into a fixed-file slot: ret is 0 or -errno, never an fd. */
#define VIGIL_OPEN_IO_URING_FIXED 2
/* An io_uring open sent at submission, with no room left to wait for its
 * completion: the result is not known (ret is 0). */
#define VIGIL_OPEN_IO_URING_SUBMITTED 3

/* Sent when the open returns, with its result. */
struct vigil_open_event {
	struct vigil_event_header hdr;
	__s32 dfd;        /* directory fd a relative path is resolved against */
	__u32 flags;      /* open flags */
	__u32 match;      /* VIGIL_MATCH_* of the filter entry that kept it */
	__u32 path_len;   /* bytes of path[], NUL included */
	__s32 ret;        /* the result: an fd, or -errno (see origin) */
	__u32 origin;     /* VIGIL_OPEN_* */
	/* The opened file, read from the fd table when the open returned: the
	 * kernel's dev_t of its superblock and its inode number (0, 0 when
	 * not known: a failed open, a fixed-file slot, an untracked request).
	 * User space checks that the file it reads is this one. */
	__u64 dev;
	__u64 ino;
	char path[VIGIL_PATH_MAX];
};

/* A TCP connect (SYN sent) or listen on a port of the port table. */
struct vigil_net_event {
	struct vigil_event_header hdr;
	__u16 family; /* AF_INET or AF_INET6 */
	__u16 op;     /* VIGIL_NET_* */
	__u16 sport;  /* host byte order */
	__u16 dport;
	__u8 saddr[16]; /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
};

/*
 * A file mapped: executable with a name that matched the table (a library
 * loaded; match AI_RUNTIME), or read-only from offset 0 over at least
 * LARGE_MAPPING_MIN bytes (match LARGE_MAPPING).
 */
struct vigil_file_map_event {
	struct vigil_event_header hdr;
	__s32 fd;
	__u32 match;
	__u32 name_len; /* bytes of name[], NUL included */
	__u32 prot;     /* PROT_* of the mapping */
	__u64 length;   /* bytes mapped */
	__u64 dev;      /* the file: superblock dev_t (kernel encoding) */
	__u64 ino;      /* and inode number; 0 when unknown */
	/* The file's path as components from the file up to the root of the
	 * process's mount tree (innermost first); complete when the walk
	 * reached the root within the slots. */
	__u32 component_count;
	__u32 path_complete;
	char components[VIGIL_PATH_COMPONENTS][VIGIL_COMPONENT_MAX];
	char name[VIGIL_NAME_MAX];
};

/*
 * What user space found in an executable file mapped under a name that
 * says nothing, by file version (inode and change time): the kernel keeps
 * the mappings of a PLAIN version to itself and sends all others (not yet
 * judged, or an AI_RUNTIME). Written by user space only.
 */
#define VIGIL_LIBRARY_PLAIN 2
#define VIGIL_LIBRARY_AI_RUNTIME 3

struct vigil_library_key {
	__u64 ino;
	__u32 dev; /* the superblock's dev_t, as the kernel keeps it */
	__u32 pad;
};

struct vigil_library_verdict {
	__s64 ctime_sec; /* the inode's change time when judged */
	__u32 ctime_nsec;
	__u32 state; /* VIGIL_LIBRARY_* */
};

/*
 * A message sent to port 53 (a DNS question, UDP or TCP): to the address
 * in sendto/sendmsg, or on a socket connected to port 53. The agent reads
 * the question name from the payload.
 */
struct vigil_dns_event {
	struct vigil_event_header hdr;
	__u16 family;      /* AF_INET or AF_INET6 */
	__u16 dport;       /* host byte order: 53 */
	__u32 payload_len; /* bytes of payload[] */
	__u8 daddr[16];    /* IPv4 in the first 4 bytes */
	__u8 payload[VIGIL_DNS_MAX];
};

/*
 * The first bytes a process wrote (write, writev, send, sendmsg) on a TCP
 * socket it connected to port 443 or 53: a TLS ClientHello, whose server
 * name the agent reads, or a DNS question over TCP. Same head as
 * vigil_dns_event, a longer payload.
 */
struct vigil_stream_event {
	struct vigil_event_header hdr;
	__u16 family;      /* AF_INET or AF_INET6 */
	__u16 dport;       /* host byte order */
	__u32 payload_len; /* bytes of payload[] */
	__u8 daddr[16];    /* IPv4 in the first 4 bytes */
	__u8 payload[VIGIL_STREAM_MAX];
};

/*
 * A destination the agent blocks for one cgroup (block_egress): the
 * cgroup v2 id and the address, IPv4 mapped as ::ffff:a.b.c.d.
 */
struct vigil_blocked_destination {
	__u64 cgroup_id;
	__u8 addr[16];
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
