// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * syscalls.bpf.c — TCP traffic as the processes see it, from the raw syscall tracepoints.
 *
 * Hooks raw_tp/sys_enter and raw_tp/sys_exit (no tracefs, no kprobes: works where
 * kprobes and fentry are unavailable). Every syscall of the machine passes through
 * here, so the first thing each program does is drop syscalls it does not care about
 * (a switch on the syscall number), then the agent itself (only its connects pass, so
 * userspace can recognise the far end of its own export traffic) and the pid/cgroup filters.
 *
 * Enter: for socket syscalls on a TCP fd, remember {syscall, fd, sock, user pointers}
 * in sl_inflight keyed by pid_tgid. Exit: look it up, delete it, and emit one record
 * to the sl_events ring buffer: header (struct sl_event) + the first capture_bytes of
 * the payload, copied from per-CPU scratch. close() emits at entry.
 *
 * Wakeups are batched: a record wakes the reader only when wakeup_bytes are pending;
 * otherwise the reader's poll timeout bounds the latency.
 * Every loss is counted in sl_counters (enum sl_counter).
 *
 * x86_64 syscall numbers only (the object is built with -D__TARGET_ARCH_x86).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "sidelight.h"
#include "sock.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The only variable in .rodata: userspace writes it between open and load. */
const volatile struct sl_config sl_cfg = {
	.capture_bytes = 512,
	.wakeup_bytes = 256 * 1024,
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} sl_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_CNT__MAX);
	__type(key, u32);
	__type(value, u64);
} sl_counters SEC(".maps");

/* A syscall between its entry and its exit. */
struct sl_inflight {
	u64 ts;
	u64 sk;
	u64 arg1; /* buf, iovec*, msghdr* or mmsghdr* */
	u64 arg2; /* count or iovcnt */
	s32 fd;
	u8 sys;   /* enum sl_syscall */
	u8 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct sl_inflight);
} sl_inflight SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, u8);
} sl_pid_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u64);
	__type(value, u8);
} sl_cgroup_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u16);
	__type(value, u8);
} sl_port_filter SEC(".maps");

/* Processes already described to userspace (SL_EV_PROC): tgid -> start time (pid reuse). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u64);
} sl_procs SEC(".maps");

struct sl_scratch {
	struct sl_event ev;
	u8 data[SL_MAX_CAPTURE * 2]; /* 2x so the verifier can bound off + len */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct sl_scratch);
} sl_scratch SEC(".maps");

static __always_inline void sl_count(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&sl_counters, &idx);

	if (v)
		*v += 1;
}

/* x86_64 syscall number -> enum sl_syscall, 0 for syscalls we ignore. */
static __always_inline u8 sl_syscall_of(long id)
{
	switch (id) {
	case 0: return SL_SYS_READ;
	case 1: return SL_SYS_WRITE;
	case 3: return SL_SYS_CLOSE;
	case 19: return SL_SYS_READV;
	case 20: return SL_SYS_WRITEV;
	case 42: return SL_SYS_CONNECT;
	case 43: return SL_SYS_ACCEPT;
	case 44: return SL_SYS_SENDTO;
	case 45: return SL_SYS_RECVFROM;
	case 46: return SL_SYS_SENDMSG;
	case 47: return SL_SYS_RECVMSG;
	case 288: return SL_SYS_ACCEPT4;
	case 299: return SL_SYS_RECVMMSG;
	case 307: return SL_SYS_SENDMMSG;
	default: return 0;
	}
}

static __always_inline bool sl_is_egress(u8 sys)
{
	return sys == SL_SYS_WRITE || sys == SL_SYS_WRITEV || sys == SL_SYS_SENDTO ||
	       sys == SL_SYS_SENDMSG || sys == SL_SYS_SENDMMSG;
}

/* true when the current task passes the pid and cgroup filters */
static __always_inline bool sl_task_wanted(u32 tgid)
{
	u8 *act;

	if (sl_cfg.pid_mode != SL_MODE_OFF) {
		act = bpf_map_lookup_elem(&sl_pid_filter, &tgid);
		if (sl_cfg.pid_mode == SL_MODE_INCLUDE ? !act : act != NULL)
			goto skip;
	}
	if (sl_cfg.cgroup_mode != SL_MODE_OFF) {
		u64 cg = bpf_get_current_cgroup_id();

		act = bpf_map_lookup_elem(&sl_cgroup_filter, &cg);
		if (sl_cfg.cgroup_mode == SL_MODE_INCLUDE ? !act : act != NULL)
			goto skip;
	}
	return true;
skip:
	sl_count(SL_CNT_FILTERED);
	return false;
}

/* true when the socket passes the port filter (local or remote port listed) */
static __always_inline bool sl_sock_wanted(struct sock *sk)
{
	u16 lport, rport;
	bool listed;

	if (sl_cfg.port_mode == SL_MODE_OFF)
		return true;
	lport = sl_sock_lport(sk);
	rport = sl_sock_rport(sk);
	listed = bpf_map_lookup_elem(&sl_port_filter, &lport) != NULL ||
		 bpf_map_lookup_elem(&sl_port_filter, &rport) != NULL;
	if (sl_cfg.port_mode == SL_MODE_INCLUDE ? listed : !listed)
		return true;
	sl_count(SL_CNT_FILTERED);
	return false;
}

static __always_inline u64 sl_wakeup_flags(void)
{
	return bpf_ringbuf_query(&sl_events, BPF_RB_AVAIL_DATA) >= sl_cfg.wakeup_bytes ?
		       BPF_RB_FORCE_WAKEUP :
		       BPF_RB_NO_WAKEUP;
}

static __always_inline struct sl_scratch *sl_scratch_get(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&sl_scratch, &zero);
}

/* Fill the common header fields of ev for the current task. */
static __always_inline void sl_fill_header(struct sl_event *ev, u8 type, u8 sys, u64 pid_tgid,
					   s32 fd, struct sock *sk, u64 ts_start, s64 ret)
{
	ev->type = type;
	ev->direction = sl_is_egress(sys) ? SL_DIR_EGRESS : SL_DIR_INGRESS;
	ev->syscall = sys;
	ev->_pad0 = 0;
	ev->tgid = pid_tgid >> 32;
	ev->tid = (u32)pid_tgid;
	ev->fd = fd;
	ev->sock = (u64)sk;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->ts_start = ts_start;
	ev->ts_end = bpf_ktime_get_ns();
	ev->ret = ret;
	ev->cap_len = 0;
	ev->_pad1 = 0;
	{
		/* the process's name (its main thread's comm), not the calling thread's: threads
		 * rename themselves (MainThread, isc-net-0000) and the process may be gone before
		 * userspace can read /proc */
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();

		if (BPF_CORE_READ_STR_INTO(&ev->comm, task, group_leader, comm) < 0)
			bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	}
	if (sk)
		sl_fill_conn(&ev->conn, sk);
	else
		__builtin_memset(&ev->conn, 0, sizeof(ev->conn));
}

static __always_inline void sl_submit(struct sl_scratch *s)
{
	u32 len = s->ev.cap_len;

	if (len > SL_MAX_CAPTURE)
		len = SL_MAX_CAPTURE;
	if (bpf_ringbuf_output(&sl_events, s, sizeof(struct sl_event) + len, sl_wakeup_flags()))
		sl_count(SL_CNT_RINGBUF_FULL);
	else
		sl_count(SL_CNT_EVENTS);
}

/* Copy up to `want` bytes spread over a user iovec array into dst. Returns bytes copied. */
static __always_inline u32 sl_copy_iov(u8 *dst, const struct iovec *iov, u64 iovcnt, u32 want)
{
	u32 off = 0;

	/* a bounded loop (not unrolled): writev of a chunked HTTP response easily has 9+ iovecs */
	for (int i = 0; i < SL_MAX_IOV; i++) {
		struct iovec iv;
		u64 n;

		if (i >= iovcnt || off >= want)
			break;
		if (bpf_probe_read_user(&iv, sizeof(iv), &iov[i]))
			break;
		n = iv.iov_len;
		if (n > want - off)
			n = want - off;
		if (n > SL_MAX_CAPTURE)
			n = SL_MAX_CAPTURE;
		off &= SL_MAX_CAPTURE - 1;
		if (bpf_probe_read_user(dst + off, n, iv.iov_base))
			break;
		off += n;
	}
	return off;
}

/* Capture the payload of a data syscall into s->data; sets cap_len. */
static __always_inline void sl_capture(struct sl_scratch *s, const struct sl_inflight *f, u64 bytes)
{
	u32 want = sl_cfg.capture_bytes;
	u32 got = 0;

	if (want > SL_MAX_CAPTURE)
		want = SL_MAX_CAPTURE;
	if (bytes < want)
		want = bytes;
	if (want == 0)
		return;

	switch (f->sys) {
	case SL_SYS_READ:
	case SL_SYS_WRITE:
	case SL_SYS_SENDTO:
	case SL_SYS_RECVFROM:
		if (bpf_probe_read_user(s->data, want & (SL_MAX_CAPTURE * 2 - 1), (void *)f->arg1) == 0)
			got = want;
		break;
	case SL_SYS_READV:
	case SL_SYS_WRITEV:
		got = sl_copy_iov(s->data, (const struct iovec *)f->arg1, f->arg2, want);
		break;
	case SL_SYS_SENDMSG:
	case SL_SYS_RECVMSG:
	case SL_SYS_SENDMMSG:
	case SL_SYS_RECVMMSG: {
		/* for mmsg, arg1 points at mmsghdr[0], whose first member is the msghdr */
		struct user_msghdr msg;

		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)f->arg1) == 0)
			got = sl_copy_iov(s->data, msg.msg_iov, msg.msg_iovlen, want);
		break;
	}
	default:
		break;
	}
	if (got == 0)
		sl_count(SL_CNT_READ_FAIL);
	s->ev.cap_len = got;
}

/*
 * Once per process (and again if its pid is reused): an SL_EV_PROC record with the
 * executable's name and a prefix of the environment, read now, while the process lives.
 */
static __always_inline void sl_describe_process(u64 pid_tgid)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	u32 tgid = pid_tgid >> 32;
	u64 start = BPF_CORE_READ(task, group_leader, start_time);
	u64 *seen = bpf_map_lookup_elem(&sl_procs, &tgid);
	struct sl_scratch *s;
	struct mm_struct *mm;
	const unsigned char *name;
	u64 env_start, env_end, env_len;

	if (seen && *seen == start)
		return;
	bpf_map_update_elem(&sl_procs, &tgid, &start, BPF_ANY);
	s = sl_scratch_get();
	if (!s)
		return;
	sl_fill_header(&s->ev, SL_EV_PROC, 0, pid_tgid, -1, NULL, start, 0);
	__builtin_memset(s->data, 0, SL_EXE_LEN);
	mm = BPF_CORE_READ(task, mm);
	if (!mm)
		return;
	name = BPF_CORE_READ(mm, exe_file, f_path.dentry, d_name.name);
	if (name)
		bpf_probe_read_kernel_str(s->data, SL_EXE_LEN, name);
	env_start = BPF_CORE_READ(mm, env_start);
	env_end = BPF_CORE_READ(mm, env_end);
	env_len = env_end > env_start ? env_end - env_start : 0;
	if (env_len > SL_ENV_MAX)
		env_len = SL_ENV_MAX;
	if (env_len && bpf_probe_read_user(s->data + SL_EXE_LEN, env_len & (SL_MAX_CAPTURE - 1), (void *)env_start))
		env_len = 0;
	s->ev.cap_len = SL_EXE_LEN + env_len;
	sl_count(SL_CNT_PROCS);
	sl_submit(s);
}

static __always_inline int sl_enter(struct bpf_raw_tracepoint_args *ctx, u8 sys)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	struct sl_inflight f = {};
	struct sock *sk = NULL;
	int fd;

	if ((u32)(pid_tgid >> 32) == sl_cfg.self_tgid) {
		/* the agent never traces itself, but reports its own connects so userspace can
		 * ignore the other end of them (its export to a local Collector) */
		if (sys != SL_SYS_CONNECT)
			return 0;
	} else if (!sl_task_wanted(pid_tgid >> 32)) {
		return 0;
	}
	fd = (int)BPF_CORE_READ(regs, di);

	if (sys == SL_SYS_ACCEPT || sys == SL_SYS_ACCEPT4) {
		/* the new socket is known at exit */
	} else {
		sk = sl_fd_to_tcp_sock(fd);
		if (!sk)
			return 0;
		if (sys == SL_SYS_CLOSE) {
			struct sl_scratch *s;

			if (!sl_sock_wanted(sk) || !(s = sl_scratch_get()))
				return 0;
			sl_fill_header(&s->ev, SL_EV_CLOSE, sys, pid_tgid, fd, sk, bpf_ktime_get_ns(), 0);
			sl_submit(s);
			return 0;
		}
		/* connect: the remote port is not set yet; filter at exit */
		if (sys != SL_SYS_CONNECT && !sl_sock_wanted(sk))
			return 0;
	}
	f.ts = bpf_ktime_get_ns();
	f.sk = (u64)sk;
	f.fd = fd;
	f.sys = sys;
	f.arg1 = BPF_CORE_READ(regs, si);
	f.arg2 = BPF_CORE_READ(regs, dx);
	if (bpf_map_update_elem(&sl_inflight, &pid_tgid, &f, BPF_ANY))
		sl_count(SL_CNT_STASH_FULL);
	return 0;
}

static __always_inline int sl_exit(s64 ret)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sl_inflight *fp, f;
	struct sl_scratch *s;
	struct sock *sk;
	u64 bytes;

	fp = bpf_map_lookup_elem(&sl_inflight, &pid_tgid);
	if (!fp)
		return 0;
	f = *fp;
	bpf_map_delete_elem(&sl_inflight, &pid_tgid);

	switch (f.sys) {
	case SL_SYS_ACCEPT:
	case SL_SYS_ACCEPT4:
		if (ret < 0)
			return 0;
		sk = sl_fd_to_tcp_sock((int)ret);
		if (!sk || !sl_sock_wanted(sk))
			return 0;
		sl_describe_process(pid_tgid);
		if (!(s = sl_scratch_get()))
			return 0;
		sl_fill_header(&s->ev, SL_EV_ACCEPT, f.sys, pid_tgid, (s32)ret, sk, f.ts, ret);
		sl_submit(s);
		return 0;
	case SL_SYS_CONNECT:
		sk = (struct sock *)f.sk;
		if (!sl_sock_wanted(sk))
			return 0;
		if ((u32)(pid_tgid >> 32) != sl_cfg.self_tgid)
			sl_describe_process(pid_tgid);
		if (!(s = sl_scratch_get()))
			return 0;
		sl_fill_header(&s->ev, SL_EV_CONNECT, f.sys, pid_tgid, f.fd, sk, f.ts, ret);
		sl_submit(s);
		return 0;
	default:
		break;
	}

	if (ret <= 0)
		return 0; /* EAGAIN, EOF, errors: nothing transferred */
	bytes = ret;
	if (f.sys == SL_SYS_SENDMMSG || f.sys == SL_SYS_RECVMMSG) {
		/* ret counts messages; report the first one's bytes */
		u32 len = 0;

		if (ret > 1)
			sl_count(SL_CNT_MMSG_PARTIAL);
		bpf_probe_read_user(&len, sizeof(len), &((struct mmsghdr *)f.arg1)->msg_len);
		bytes = len;
		if (bytes == 0)
			return 0;
	}
	s = sl_scratch_get();
	if (!s)
		return 0;
	sk = (struct sock *)f.sk;
	sl_fill_header(&s->ev, SL_EV_DATA, f.sys, pid_tgid, f.fd, sk, f.ts, (s64)bytes);
	sl_capture(s, &f, bytes);
	sl_submit(s);
	return 0;
}

SEC("raw_tp/sys_enter")
int sl_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	u8 sys = sl_syscall_of((long)ctx->args[1]);

	return sys ? sl_enter(ctx, sys) : 0;
}

SEC("raw_tp/sys_exit")
int sl_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];

	if (!sl_syscall_of((long)BPF_CORE_READ(regs, orig_ax)))
		return 0;
	return sl_exit((s64)ctx->args[1]);
}
