/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The few kernel types the sensors read, declared with
 * preserve_access_index so every field access is a CO-RE relocation that
 * the loader resolves against the running kernel's BTF: offsets here are
 * never trusted, only field names.
 */
#ifndef VIGIL_KERNEL_TYPES_H
#define VIGIL_KERNEL_TYPES_H

#include <linux/types.h>

#define __core __attribute__((preserve_access_index))

struct ns_common {
	unsigned int inum;
} __core;

struct mnt_namespace {
	struct ns_common ns;
} __core;

struct nsproxy {
	struct mnt_namespace *mnt_ns;
} __core;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
} __core;

struct qstr {
	const unsigned char *name;
} __core;

struct dentry {
	struct qstr d_name;
	struct dentry *d_parent;
} __core;

struct vfsmount {
	struct dentry *mnt_root;
} __core;

/* The kernel's mount, around the vfsmount a path points at. */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} __core;

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} __core;

struct super_block {
	__u32 s_dev; /* dev_t */
} __core;

struct inode {
	unsigned short i_mode; /* umode_t */
	unsigned long i_ino;
	long long i_size; /* loff_t */
	struct super_block *i_sb;
} __core;

/* The inode's change time, by kernel version (CO-RE picks the one that
 * exists): split fields since 6.11, a hidden timespec64 in 6.6-6.10, a
 * plain one before. */
struct timespec64 {
	long long tv_sec;
	long tv_nsec;
} __core;

struct inode___ctime_split {
	long long i_ctime_sec;
	unsigned int i_ctime_nsec;
} __core;

struct inode___ctime_hidden {
	struct timespec64 __i_ctime;
} __core;

struct inode___ctime_plain {
	struct timespec64 i_ctime;
} __core;

struct file {
	unsigned int f_mode; /* fmode_t */
	long long f_pos;     /* loff_t */
	struct path f_path;
	struct inode *f_inode;
} __core;

/* io_uring's open requests, as prepared (the path already copied in). */
struct filename {
	const char *name;
} __core;

struct open_how {
	__u64 flags;
} __core;

struct io_open {
	int dfd;
	__u32 file_slot;
	struct filename *filename;
	struct open_how how;
} __core;

struct io_cmd_data {
	struct file *file;
} __core;

struct io_kiocb {
	struct io_cmd_data cmd;
	__u8 opcode;
} __core;

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __core;

struct files_struct {
	struct fdtable *fdt;
} __core;

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct mm_struct *mm;
	struct nsproxy *nsproxy;
	struct files_struct *files;
} __core;

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
} __core;

struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	__u32 __data_loc_filename;
	int pid;
	int old_pid;
} __core;

struct syscall_trace_enter {
	struct trace_entry ent;
	int nr;
	unsigned long args[6];
} __core;

struct syscall_trace_exit {
	struct trace_entry ent;
	int nr;
	long ret;
} __core;

struct trace_event_raw_inet_sock_set_state {
	struct trace_entry ent;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} __core;

struct trace_event_raw_io_uring_submit_req {
	struct trace_entry ent;
	void *ctx;
	void *req;
	__u64 user_data;
	__u8 opcode;
} __core;

struct trace_event_raw_io_uring_complete {
	struct trace_entry ent;
	void *ctx;
	void *req;
	__u64 user_data;
	int res;
} __core;

#endif /* VIGIL_KERNEL_TYPES_H */
