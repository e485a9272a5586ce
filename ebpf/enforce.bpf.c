// SPDX-License-Identifier: GPL-2.0-only OR Apache-2.0
/*
 * vigil enforcement programs, attached by the agent when a rule's action
 * asks for them (never at start).
 *
 * vigil_deny_gpu (cgroup/dev): attached to the cgroup v2 directory the agent
 * moves an offending process into; refuses every access to character
 * devices whose major is a GPU's (NVIDIA, DRM, AMD KFD, accel, found in
 * /proc/devices by the agent), and allows everything else.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

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
