// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * floor.bpf.c — the benchmark's "hook floor" (issue 9): what ANY design hooking the generic
 * syscall tracepoints (tp_btf/sys_enter + tp_btf/sys_exit, as bpf/syscalls.bpf.c does) costs
 * per HTTP request on this machine, measured with kernel.bpf_stats run time. Not shipped.
 *
 * Two pairs of programs; bench/lib/floor.ts attaches one pair at a time:
 *  - floor_enter_empty / floor_exit_empty: `return 0` — the cost of the hook itself (the
 *    trampoline into a BPF program plus the kernel's bpf_stats accounting). Nothing cheaper
 *    can be attached there.
 *  - floor_enter_filter / floor_exit_filter: the least a real tracer must do — read the
 *    syscall number (the tracepoint argument at entry, regs->orig_ax at exit) and compare it
 *    against the socket syscalls bpf/syscalls.bpf.c keeps (same x86_64 list); a match is
 *    counted in floor_hits (per-CPU: [0] entries, [1] exits), which also keeps the compiler
 *    from dropping the compare.
 * No state besides floor_hits; built by bench/run into bench/.build/floor.bpf.o with the
 * Makefile's BPF flags. x86_64 syscall numbers only.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} floor_hits SEC(".maps");

/* the syscalls bpf/syscalls.bpf.c (sl_syscall_of) does not drop */
static __always_inline bool floor_is_socket_syscall(long id)
{
	switch (id) {
	case 0: case 1: case 3: case 19: case 20: case 42: case 43: case 44: case 45:
	case 46: case 47: case 288: case 299: case 307:
		return true;
	default:
		return false;
	}
}

static __always_inline void floor_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&floor_hits, &idx);

	if (v)
		*v += 1;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_enter_empty, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_exit_empty, struct pt_regs *regs, long ret)
{
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(floor_enter_filter, struct pt_regs *regs, long id)
{
	if (floor_is_socket_syscall(id))
		floor_count(0);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(floor_exit_filter, struct pt_regs *regs, long ret)
{
	if (floor_is_socket_syscall((long)regs->orig_ax))
		floor_count(1);
	return 0;
}
