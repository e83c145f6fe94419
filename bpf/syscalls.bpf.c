// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * syscalls.bpf.c — TCP traffic as the processes see it, from the raw syscall tracepoints.
 *
 * Hooks tp_btf/sys_enter and tp_btf/sys_exit (BTF-typed raw tracepoints: no tracefs, no
 * kprobes, no fentry; the syscall registers are read with direct loads, not helper calls,
 * which matters because every syscall of the machine passes through here). Every syscall of the machine passes through
 * here, so the first thing each program does is drop syscalls it does not care about
 * (a switch on the syscall number), then the agent itself (only its connects pass, so
 * userspace can recognise the far end of its own export traffic) and the pid/cgroup filters.
 *
 * Enter: for socket syscalls on a TCP fd (or a UDP fd talking to a DNS port: see
 * sl_dns_ports), remember {syscall, fd, sock, user pointers}
 * in sl_inflight keyed by pid_tgid. Exit: look it up, delete it, and emit one record
 * to the sl_events ring buffer: header (struct sl_event) + the first capture_bytes of
 * the payload, copied from per-CPU scratch. close() emits at entry. Receives (read, readv,
 * recvfrom, recvmsg, recvmmsg) have no entry side: their exit filters and emits from the
 * registers alone (sl_exit_ingress), so one that returns no data costs a switch and a
 * compare, and their ts_start is their ts_end.
 *
 * Wakeups are batched: a record wakes the reader only when wakeup_bytes are pending;
 * otherwise the reader's poll timeout bounds the latency.
 * Every loss is counted in sl_counters (enum sl_counter).
 *
 * TLS plaintext: uprobes on OpenSSL, in tls.bpf.h (included below; see why there).
 *
 * x86_64 syscall numbers only (the object is built with -D__TARGET_ARCH_x86).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "sidelight.h"
#include "sock.bpf.h"

/* errno values reported to userspace as a reset of the connection (see sl_exit) */
#define SL_EPIPE 32
#define SL_ECONNRESET 104

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
	u64 arg1;  /* buf, iovec*, msghdr* or mmsghdr* */
	u64 arg2;  /* count or iovcnt */
	u64 arg5;  /* sendto dest_addr / recvfrom src_addr */
	s32 fd;
	u8 sys;    /* enum sl_syscall */
	u8 proto;  /* IPPROTO_TCP or IPPROTO_UDP */
	u8 _pad[2];
};

/*
 * Per thread (task local storage): its syscall in flight, sys 0 when none. A few loads per
 * access instead of an LRU hash update, lookup and delete per send; an entry lives and dies
 * with its thread, so nothing can be left behind. Bounded by the threads of traced processes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
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

/* UDP is traced only to/from these remote ports (DNS); empty: no UDP at all. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, u16);
	__type(value, u8);
} sl_dns_ports SEC(".maps");

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
	       sys == SL_SYS_SENDMSG || sys == SL_SYS_SENDMMSG || sys == SL_SYS_SSL_WRITE;
}

/* Receives of payload: everything they need is known at exit (the registers still hold the
 * arguments), so they skip the entry side and the in-flight map, and cost nothing when they
 * return no data (EAGAIN on non-blocking sockets, EOF). */
static __always_inline bool sl_is_ingress_data(u8 sys)
{
	return sys == SL_SYS_READ || sys == SL_SYS_READV || sys == SL_SYS_RECVFROM ||
	       sys == SL_SYS_RECVMSG || sys == SL_SYS_RECVMMSG;
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

/* sl_ports_wanted without counting (the pickup iterator filters sockets, not syscalls) */
static __always_inline bool sl_ports_pass(u16 lport, u16 rport)
{
	bool listed;

	if (sl_cfg.port_mode == SL_MODE_OFF)
		return true;
	listed = bpf_map_lookup_elem(&sl_port_filter, &lport) != NULL ||
		 bpf_map_lookup_elem(&sl_port_filter, &rport) != NULL;
	return sl_cfg.port_mode == SL_MODE_INCLUDE ? listed : !listed;
}

/* true when traffic between these two ports passes the port filter (either port listed) */
static __always_inline bool sl_ports_wanted(u16 lport, u16 rport)
{
	if (sl_ports_pass(lport, rport))
		return true;
	sl_count(SL_CNT_FILTERED);
	return false;
}

/* true when the socket passes the port filter (local or remote port listed) */
static __always_inline bool sl_sock_wanted(struct sock *sk)
{
	if (sl_cfg.port_mode == SL_MODE_OFF)
		return true;
	return sl_ports_wanted(sl_sock_lport(sk), sl_sock_rport(sk));
}

/*
 * Wake the reader only when this record makes the pending data cross wakeup_bytes. Forcing a
 * wakeup on every record above the threshold (while the reader is busy or paused) queues an
 * irq_work per record, and raising it writes the APIC: a VM exit on virtual machines, which
 * measured as most of a record's cost. Two CPUs crossing at once may both skip it; the reader's
 * poll interval is the backstop.
 */
static __always_inline u64 sl_wakeup_flags(u32 size)
{
	u64 avail = bpf_ringbuf_query(&sl_events, BPF_RB_AVAIL_DATA);

	return avail < sl_cfg.wakeup_bytes && avail + size >= sl_cfg.wakeup_bytes ?
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
	ev->proto = 0;
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
		struct task_struct *leader = bpf_rdonly_cast(bpf_get_current_task_btf()->group_leader,
							     bpf_core_type_id_kernel(struct task_struct));

		/* direct loads (comm is NUL-padded, TASK_COMM_LEN = sizeof(ev->comm)) */
		__builtin_memcpy(ev->comm, leader->comm, sizeof(ev->comm));
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
	if (bpf_ringbuf_output(&sl_events, s, sizeof(struct sl_event) + len,
			       sl_wakeup_flags(sizeof(struct sl_event) + len)))
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

/*
 * HTTP/2 sockets (struct sock address -> 1): marked when the client connection preface is
 * written or read on them, dropped on close (LRU-bounded: a socket closed without close(),
 * e.g. at process exit, ages out). Their payload is captured up to SL_MAX_CAPTURE, so that the
 * frame headers that follow a long DATA frame in one write are still seen.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, u8);
} sl_h2_socks SEC(".maps");

/* "PRI * HT", the first 8 octets of the HTTP/2 client preface, as a little-endian u64 */
#define SL_H2_PREFACE_LE 0x5448202a20495250ULL

static __always_inline void sl_h2_note(const struct sl_scratch *s, u32 got)
{
	u64 head;
	u8 one = 1;

	if (s->ev.proto != SL_IPPROTO_TCP || got < 8)
		return;
	__builtin_memcpy(&head, s->data, sizeof(head));
	if (head == SL_H2_PREFACE_LE)
		bpf_map_update_elem(&sl_h2_socks, &s->ev.sock, &one, BPF_ANY);
}

static __always_inline bool sl_is_dns_port(u16 port)
{
	return port && bpf_map_lookup_elem(&sl_dns_ports, &port) != NULL;
}

/* Payload bytes to capture; DNS messages (UDP, or TCP to a DNS port) whole, up to SL_MAX_CAPTURE. */
static __always_inline u32 sl_want(u64 bytes, const struct sl_event *ev)
{
	u32 want = sl_cfg.capture_bytes;

	if (ev->proto == SL_IPPROTO_UDP || (ev->type == SL_EV_DATA && sl_is_dns_port(ev->conn.dport)))
		want = SL_MAX_CAPTURE;
	else if (ev->type == SL_EV_DATA && bpf_map_lookup_elem(&sl_h2_socks, &ev->sock))
		want = SL_MAX_CAPTURE;

	if (want > SL_MAX_CAPTURE)
		want = SL_MAX_CAPTURE;
	return bytes < want ? (u32)bytes : want;
}

/*
 * Should this UDP syscall be traced? Connected sockets: by their remote port. Unconnected
 * ones: sends by their destination (read now); receives are decided at exit, when the
 * kernel has written the source address.
 */
static __always_inline bool sl_udp_wanted(struct sock *sk, u8 sys, const struct pt_regs *regs, u16 *port)
{
	u16 rport = sl_sock_rport(sk);
	struct {
		u16 family;
		u16 port_be;
	} sa = {};
	void *name = NULL;

	*port = rport;
	if (rport)
		return sl_is_dns_port(rport);
	switch (sys) {
	case SL_SYS_SENDTO:
		name = (void *)regs->r8;
		break;
	case SL_SYS_SENDMSG:
	case SL_SYS_SENDMMSG: {
		struct user_msghdr msg;

		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)regs->si))
			return false;
		name = msg.msg_name;
		break;
	}
	case SL_SYS_RECVFROM:
	case SL_SYS_RECVMSG:
	case SL_SYS_RECVMMSG:
		return true;
	default:
		return false;
	}
	if (!name || bpf_probe_read_user(&sa, sizeof(sa), name))
		return false;
	*port = __builtin_bswap16(sa.port_be);
	return sl_is_dns_port(*port);
}

/* The port filter for a DNS datagram: its local port or the DNS port it talks to (for an
 * unconnected socket, the datagram's destination, not the socket's unset peer). A receive on
 * an unconnected socket (port 0: the source is known only at exit) passes; userspace pairs
 * it with a query it saw, or counts it unmatched. */
static __always_inline bool sl_udp_port_wanted(struct sock *sk, u16 port)
{
	if (sl_cfg.port_mode == SL_MODE_OFF || port == 0)
		return true;
	return sl_ports_wanted(sl_sock_lport(sk), port);
}

/* One event for one message of sendmsg/recvmsg/sendmmsg/recvmmsg. */
static __always_inline void sl_emit_msg(const struct sl_inflight *f, u64 pid_tgid, struct sock *sk,
					const struct user_msghdr *msg, u64 bytes)
{
	struct sl_scratch *s = sl_scratch_get();
	u32 want;

	if (!s || bytes == 0)
		return;
	sl_fill_header(&s->ev, SL_EV_DATA, f->sys, pid_tgid, f->fd, sk, f->ts, (s64)bytes);
	s->ev.proto = f->proto;
	if (f->proto == SL_IPPROTO_UDP && s->ev.conn.dport == 0 &&
	    !sl_is_dns_port(sl_read_peer_sockaddr(&s->ev.conn, msg->msg_name)))
		return;
	want = sl_want(bytes, &s->ev);
	if (want) {
		u32 got = sl_copy_iov(s->data, msg->msg_iov, msg->msg_iovlen, want);

		if (got == 0)
			sl_count(SL_CNT_READ_FAIL);
		sl_h2_note(s, got);
		s->ev.cap_len = got;
	}
	sl_submit(s);
}

/* One event for read/write/readv/writev/sendto/recvfrom. */
static __always_inline void sl_emit_buf(const struct sl_inflight *f, u64 pid_tgid, struct sock *sk, u64 bytes)
{
	struct sl_scratch *s = sl_scratch_get();
	u32 want, got = 0;

	if (!s)
		return;
	sl_fill_header(&s->ev, SL_EV_DATA, f->sys, pid_tgid, f->fd, sk, f->ts, (s64)bytes);
	s->ev.proto = f->proto;
	if (f->proto == SL_IPPROTO_UDP && s->ev.conn.dport == 0 &&
	    !sl_is_dns_port(sl_read_peer_sockaddr(&s->ev.conn, (void *)f->arg5)))
		return;
	want = sl_want(bytes, &s->ev);
	if (want) {
		if (f->sys == SL_SYS_READV || f->sys == SL_SYS_WRITEV)
			got = sl_copy_iov(s->data, (const struct iovec *)f->arg1, f->arg2, want);
		else if (bpf_probe_read_user(s->data, want & (SL_MAX_CAPTURE * 2 - 1), (void *)f->arg1) == 0)
			got = want;
		if (got == 0)
			sl_count(SL_CNT_READ_FAIL);
	}
	sl_h2_note(s, got);
	s->ev.cap_len = got;
	sl_submit(s);
}

/*
 * Once per process (and again if its pid is reused): an SL_EV_PROC record with the
 * executable's name and a prefix of the environment, read now, while the process lives.
 * Sent on a process's first TCP connect/accept or first DNS datagram.
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

/* TLS plaintext (uprobes on SSL_*), sharing this object's maps: see the file's header */
#include "tls.bpf.h"
/* one summary per TCP connection (tp_btf/inet_sock_set_state): see that file's header */
#include "tcp.bpf.h"
/* pickup of connections that predate the agent (iter/tcp): see that file's header */
#include "iter.bpf.h"

static __always_inline int sl_enter(const struct pt_regs *regs, u8 sys)
{
	u64 pid_tgid;
	struct sl_inflight f = {};
	struct sock *sk = NULL;
	int fd;

	if (sl_is_ingress_data(sys))
		return 0; /* handled at exit alone (sl_exit_ingress) */
	pid_tgid = bpf_get_current_pid_tgid();
	if ((u32)(pid_tgid >> 32) == sl_cfg.self_tgid) {
		/* the agent never traces itself, but reports its own connects so userspace can
		 * ignore the other end of them (its export to a local Collector), and its closes,
		 * so it stops ignoring that endpoint once the port can be reused */
		if (sys != SL_SYS_CONNECT && sys != SL_SYS_CLOSE)
			return 0;
	} else if (!sl_task_wanted(pid_tgid >> 32)) {
		return 0;
	}
	fd = (int)regs->di;

	if (sys == SL_SYS_ACCEPT || sys == SL_SYS_ACCEPT4) {
		/* the new socket is known at exit */
	} else {
		sk = sl_fd_to_inet_sock(fd, &f.proto);
		if (!sk)
			return 0;
		if (f.proto == SL_IPPROTO_UDP) {
			u16 port = 0;

			/* UDP: only DNS datagrams; no connection lifecycle */
			if (sys == SL_SYS_CLOSE || sys == SL_SYS_CONNECT || !sl_udp_wanted(sk, sys, regs, &port) ||
			    !sl_udp_port_wanted(sk, port))
				return 0;
		} else if (sys == SL_SYS_CLOSE) {
			struct sl_scratch *s;

			sl_tls_on_close(sk);
			{
				u64 key = (u64)sk;

				bpf_map_delete_elem(&sl_h2_socks, &key);
			}
			if (!sl_sock_wanted(sk) || !(s = sl_scratch_get()))
				return 0;
			sl_fill_header(&s->ev, SL_EV_CLOSE, sys, pid_tgid, fd, sk, bpf_ktime_get_ns(), 0);
			s->ev.proto = SL_IPPROTO_TCP;
			sl_submit(s);
			return 0;
		}
		/* TLS: learn SSL* -> socket (before the port filter: an SSL* on a filtered socket
		 * must not be taken for another); a TLS socket's bytes are ciphertext, not reported */
		if (f.proto == SL_IPPROTO_TCP && sys != SL_SYS_CONNECT &&
		    sl_tls_on_syscall(pid_tgid, sys, fd, sk))
			return 0;
		/* connect: the remote port is not set yet; filter at exit. UDP: filtered above */
		if (f.proto == SL_IPPROTO_TCP && sys != SL_SYS_CONNECT && !sl_sock_wanted(sk))
			return 0;
	}
	f.ts = bpf_ktime_get_ns();
	f.sk = (u64)sk;
	f.fd = fd;
	f.sys = sys;
	f.arg1 = regs->si;
	f.arg2 = regs->dx;
	f.arg5 = regs->r8;
	{
		struct sl_inflight *fp = bpf_task_storage_get(&sl_inflight, bpf_get_current_task_btf(), 0,
							      BPF_LOCAL_STORAGE_GET_F_CREATE);

		if (fp)
			*fp = f;
		else
			sl_count(SL_CNT_STASH_FULL);
	}
	return 0;
}

static __always_inline int sl_exit_data(const struct sl_inflight *f, u64 pid_tgid, s64 ret);

/*
 * Exit of a receive (sl_is_ingress_data): filter and describe it now, from the registers.
 * The syscall's start time is not known (no entry record): ts_start = ts_end. This also sees
 * a receive that was already blocked when the probes were attached (a connection picked up
 * at start, waiting for its next request).
 */
static __always_inline int sl_exit_ingress(const struct pt_regs *regs, u8 sys, s64 ret)
{
	u64 pid_tgid;
	struct sl_inflight f = {};
	struct sock *sk;

	if (ret <= 0 && ret != -SL_ECONNRESET)
		return 0; /* EAGAIN, EOF, other errors: nothing received */
	pid_tgid = bpf_get_current_pid_tgid();
	if ((u32)(pid_tgid >> 32) == sl_cfg.self_tgid || !sl_task_wanted(pid_tgid >> 32))
		return 0;
	f.fd = (int)regs->di;
	sk = sl_fd_to_inet_sock(f.fd, &f.proto);
	if (!sk)
		return 0;
	if (f.proto == SL_IPPROTO_UDP) {
		u16 port = 0;

		if (!sl_udp_wanted(sk, sys, regs, &port) || !sl_udp_port_wanted(sk, port))
			return 0;
	} else {
		/* TLS: learn SSL* -> socket first (see sl_enter) */
		if (sl_tls_on_syscall(pid_tgid, sys, f.fd, sk))
			return 0;
		if (!sl_sock_wanted(sk))
			return 0;
	}
	f.ts = bpf_ktime_get_ns();
	f.sk = (u64)sk;
	f.sys = sys;
	f.arg1 = regs->si;
	f.arg2 = regs->dx;
	f.arg5 = regs->r8;
	return sl_exit_data(&f, pid_tgid, ret);
}

static __always_inline int sl_exit(u8 sys, s64 ret)
{
	u64 pid_tgid;
	struct sl_inflight *fp, f;
	struct sl_scratch *s;
	struct sock *sk;

	fp = bpf_task_storage_get(&sl_inflight, bpf_get_current_task_btf(), 0, 0);
	if (!fp || !fp->sys)
		return 0;
	if (fp->sys != sys) {
		fp->sys = 0; /* an entry whose exit was never seen: not this syscall's */
		return 0;
	}
	f = *fp;
	fp->sys = 0;
	pid_tgid = bpf_get_current_pid_tgid();

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
		s->ev.proto = SL_IPPROTO_TCP;
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
		s->ev.proto = SL_IPPROTO_TCP;
		sl_submit(s);
		return 0;
	default:
		break;
	}
	return sl_exit_data(&f, pid_tgid, ret);
}

/* The DATA record(s) of a send or receive that returned `ret`. */
static __always_inline int sl_exit_data(const struct sl_inflight *f, u64 pid_tgid, s64 ret)
{
	struct sl_scratch *s;
	struct sock *sk;

	if ((ret == -SL_ECONNRESET || ret == -SL_EPIPE) && f->proto == SL_IPPROTO_TCP) {
		/* the peer reset the connection: a DATA event without payload, ret < 0, so that
		 * userspace ends the requests left unanswered with error.type connection_reset */
		if (!(s = sl_scratch_get()))
			return 0;
		sl_fill_header(&s->ev, SL_EV_DATA, f->sys, pid_tgid, f->fd, (struct sock *)f->sk, f->ts, ret);
		s->ev.proto = SL_IPPROTO_TCP;
		sl_submit(s);
		return 0;
	}
	if (ret <= 0)
		return 0; /* EAGAIN, EOF, other errors: nothing transferred */
	sk = (struct sock *)f->sk;
	/* a process that only resolves names never connects over TCP: describe it here */
	if (f->proto == SL_IPPROTO_UDP)
		sl_describe_process(pid_tgid);
	switch (f->sys) {
	case SL_SYS_SENDMMSG:
	case SL_SYS_RECVMMSG: {
		/* ret counts messages: one event per message, up to SL_MAX_MMSG */
		if (ret > SL_MAX_MMSG)
			sl_count(SL_CNT_MMSG_PARTIAL);
		for (int i = 0; i < SL_MAX_MMSG; i++) {
			struct mmsghdr mh;

			if (i >= ret || bpf_probe_read_user(&mh, sizeof(mh), &((struct mmsghdr *)f->arg1)[i]))
				break;
			sl_emit_msg(f, pid_tgid, sk, &mh.msg_hdr, mh.msg_len);
		}
		return 0;
	}
	case SL_SYS_SENDMSG:
	case SL_SYS_RECVMSG: {
		struct user_msghdr mh = {};

		if (bpf_probe_read_user(&mh, sizeof(mh), (void *)f->arg1))
			sl_count(SL_CNT_READ_FAIL);
		sl_emit_msg(f, pid_tgid, sk, &mh, (u64)ret);
		return 0;
	}
	default:
		sl_emit_buf(f, pid_tgid, sk, (u64)ret);
		return 0;
	}
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sl_sys_enter, struct pt_regs *regs, long id)
{
	u8 sys = sl_syscall_of(id);

	return sys ? sl_enter(regs, sys) : 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sl_sys_exit, struct pt_regs *regs, long ret)
{
	u8 sys = sl_syscall_of((long)regs->orig_ax);

	if (!sys)
		return 0;
	if (sl_is_ingress_data(sys))
		return sl_exit_ingress(regs, sys, ret);
	return sl_exit(sys, ret);
}
