// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * vigil enforcement programs, attached by the agent when a rule's action
 * asks for them (never at start).
 *
 * vigil_deny_gpu (cgroup/dev): attached to the cgroup v2 directory the agent
 * moves an offending process into; refuses every access to character
 * devices whose major is a GPU's (NVIDIA, DRM, AMD KFD, accel, found in
 * /proc/devices by the agent), and allows everything else.
 *
 * vigil_block_egress (cgroup_skb/egress): attached to the cgroup the agent
 * moves an offending process into; drops packets whose destination is in
 * BLOCKED_DESTINATIONS for that cgroup (IPv4 as ::ffff:a.b.c.d).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "vigil_event.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define VIGIL_GPU_MAJOR_SLOTS 16

const volatile __u32 GPU_MAJORS[VIGIL_GPU_MAJOR_SLOTS] = {};
const volatile __u32 GPU_MAJOR_COUNT = 0;

SEC("cgroup/dev")
int vigil_deny_gpu(struct bpf_cgroup_dev_ctx *ctx)
{
	__u32 type = ctx->access_type & 0xFFFF;
	if (type != BPF_DEVCG_DEV_CHAR)
		return 1;
	for (__u32 i = 0; i < VIGIL_GPU_MAJOR_SLOTS; i++) {
		if (i >= GPU_MAJOR_COUNT)
			break;
		if (ctx->major == GPU_MAJORS[i])
			return 0;
	}
	return 1;
}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct vigil_blocked_destination);
	__type(value, __u8);
} BLOCKED_DESTINATIONS SEC(".maps");

SEC("cgroup_skb/egress")
int vigil_block_egress(struct __sk_buff *skb)
{
	struct vigil_blocked_destination key = {};
	__u8 version = 0;
	if (bpf_skb_load_bytes(skb, 0, &version, 1) != 0)
		return 1;
	version >>= 4;
	if (version == 4) {
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		if (bpf_skb_load_bytes(skb, 16, &key.addr[12], 4) != 0)
			return 1;
	} else if (version == 6) {
		if (bpf_skb_load_bytes(skb, 24, key.addr, 16) != 0)
			return 1;
	} else {
		return 1;
	}
	key.cgroup_id = bpf_skb_cgroup_id(skb);
	return bpf_map_lookup_elem(&BLOCKED_DESTINATIONS, &key) ? 0 : 1;
}
