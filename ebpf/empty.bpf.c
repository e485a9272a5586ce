// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * Baseline for the sensor benchmarks: programs that do nothing, on exactly
 * the hooks the sensors use. The cost of any syscall tracepoint (every
 * syscall of every task takes the slow path) shows up here; what the
 * sensors add on top is their own work.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tracepoint/sched/sched_process_exec")
int empty_exec(void *ctx) { return 0; }

SEC("tracepoint/sched/sched_process_exit")
int empty_exit(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_openat")
int empty_openat(void *ctx) { return 0; }

SEC("tracepoint/sock/inet_sock_set_state")
int empty_inet_state(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_mmap")
int empty_mmap(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_openat2")
int empty_openat2(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_open")
int empty_open(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_creat")
int empty_creat(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_openat")
int empty_openat_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_openat2")
int empty_openat2_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_open")
int empty_open_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_creat")
int empty_creat_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_connect")
int empty_connect(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_sendto")
int empty_sendto(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int empty_sendmsg(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_sendmmsg")
int empty_sendmmsg(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_read")
int empty_read(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_read")
int empty_read_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_pread64")
int empty_pread(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_pread64")
int empty_pread_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_dup")
int empty_dup(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_dup")
int empty_dup_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_dup2")
int empty_dup2(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_dup3")
int empty_dup3(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_write")
int empty_write(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_enter_writev")
int empty_writev(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_write")
int empty_write_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_sendto")
int empty_sendto_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int empty_sendmsg_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_sendmmsg")
int empty_sendmmsg_ret(void *ctx) { return 0; }

SEC("tracepoint/syscalls/sys_exit_connect")
int empty_connect_ret(void *ctx) { return 0; }
