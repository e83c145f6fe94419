// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * inject.bpf.c — opt-in W3C traceparent injection into outgoing plaintext HTTP/1 requests
 * (http.inject.enabled). Its own object (build/inject.bpf.o), loaded only when enabled.
 *
 * Three programs:
 *  - sl_inject_sockops (cgroup sockops, attached to one cgroup v2 directory): every client
 *    socket of that cgroup reaching ESTABLISHED, to a port in sl_inject_ports (or any port
 *    when any_port), joins the sockhash sl_inject_socks. Only those sockets are ever touched.
 *  - sl_inject_msg (sk_msg verdict on sl_inject_socks; runs inside the sending syscall, in
 *    the sender's context): when the message starts an HTTP/1 request whose whole head is in
 *    the message (and in the first SL_INJ_SCAN bytes) and carries no traceparent, insert
 *    "traceparent: 00-<trace>-<span>-<flags>\r\n" right after the request line
 *    (bpf_msg_push_data) and report the ids (struct sl_inject_event) in sl_inject_events.
 *    Anything else passes untouched and is counted (enum sl_inj_counter). Never drops.
 *  - sl_inject_sys_exit (tp_btf/sys_exit; tasks of the cgroup in sl_inject_cgroup): the
 *    "current request" of each thread. A read of an HTTP/1 request head on a TCP socket
 *    records {socket, its traceparent's trace id and flags if valid} for the thread
 *    (sl_inject_threads); the thread's write on that socket (the response) forgets it. A second request read by the thread while one is recorded
 *    makes the context ambiguous (a new trace is injected then, never a guessed one).
 *
 * Ids: the span id is always new (bpf_get_prandom_u32). The trace id is the thread's
 * request's (its traceparent's, or one generated when the request was read without one,
 * reported then as a CONTEXT record so its SERVER span adopts it), else new. Every record
 * goes to the ring buffer sl_inject_events and to the last-SL_INJ_SLOTS slots of its
 * (thread, ports, type) in sl_inject_slots, which userspace reads when the ring is late.
 * Userspace (src/receiver/inject.ts) gives the CLIENT span exactly the injected ids.
 *
 * Lifetime: sockets leave the sockhash when they close; unloading the object (agent stop)
 * detaches everything and the sockets' original proto ops are restored by the kernel.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "sidelight.h"
#include "inject.h"
#include "sock.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SL_SK_PASS 1
#define SL_INJ_BUF (SL_INJ_SCAN * 2) /* 2x so masked index + small constant stays inside */
#define SL_INJ_MASK (SL_INJ_BUF - 1)

const volatile struct sl_inject_config sl_inject_cfg = {};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, u64); /* socket cookie */
	__type(value, u64);
} sl_inject_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u16);
	__type(value, u8);
} sl_inject_ports SEC(".maps");

/* One entry: the cgroup whose tasks' server requests become thread contexts. */
struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} sl_inject_cgroup SEC(".maps");

/* Processes whose threads do not identify a request (Go: goroutines move between threads),
 * written by userspace as it learns them (agent: ProcessCache's Go detection). Their reads
 * record no thread context and their requests get a new trace id: never another request's. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u32);
	__type(value, u8);
} sl_inject_untrusted SEC(".maps");

static __always_inline bool sl_threads_untrusted(u64 pid_tgid)
{
	u32 tgid = pid_tgid >> 32;

	return bpf_map_lookup_elem(&sl_inject_untrusted, &tgid) != NULL;
}

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} sl_inject_events SEC(".maps");

/* The last records per (thread, connection, type): see inject.h. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct sl_inj_key);
	__type(value, struct sl_inj_slots);
} sl_inject_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SL_INJ_CNT__MAX);
	__type(key, u32);
	__type(value, u64);
} sl_inject_counters SEC(".maps");

enum sl_ctx_state {
	SL_CTX_PLAIN = 0,     /* request without (valid) traceparent; no trace id chosen yet */
	SL_CTX_HEADER = 1,    /* trace id from the request's traceparent */
	SL_CTX_OWN = 2,       /* trace id generated here for the request's calls */
	SL_CTX_AMBIGUOUS = 3, /* several requests in flight on the thread */
};

struct sl_thread_ctx {
	u64 sock;       /* struct sock of the server connection the request came on */
	char trace[32]; /* lowercase hex; valid for HEADER and OWN */
	char flags[2];
	u8 state;       /* enum sl_ctx_state */
	u8 _pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64); /* pid_tgid */
	__type(value, struct sl_thread_ctx);
} sl_inject_threads SEC(".maps");

struct sl_inj_scratch {
	u8 buf[SL_INJ_BUF];
	struct sl_inject_event ev;
	char hdr[SL_INJ_HDR_LEN + 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct sl_inj_scratch);
} sl_inject_scratch SEC(".maps");

static __always_inline void sl_inj_count(u32 idx)
{
	u64 *v = bpf_map_lookup_elem(&sl_inject_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct sl_inj_scratch *sl_inj_scratch(void)
{
	u32 zero = 0;

	return bpf_map_lookup_elem(&sl_inject_scratch, &zero);
}

/* State of one pass over a request head (bpf_loop callback context). */
struct sl_head_scan {
	const u8 *buf;  /* scratch copy of the message */
	u32 n;          /* bytes in buf */
	u32 line_end;   /* offset just past the request line's CRLF; 0 until found */
	u32 ls;         /* start of the current header line */
	u32 tp_value;   /* offset just past "traceparent:", 0 if absent */
	u8 complete;    /* the empty line ending the head was seen */
	u8 bad;         /* not an HTTP/1 request line, or a bare LF */
	u8 _pad[6];
};

static __always_inline u8 sl_at(const u8 *buf, u64 i)
{
	return buf[i & SL_INJ_MASK];
}

/* "traceparent:" (any case) at buf[i] */
static __always_inline bool sl_tp_name_at(const u8 *buf, u64 i)
{
	const char name[] = "traceparent:";

#pragma unroll
	for (int k = 0; k < 12; k++) {
		u8 c = sl_at(buf, i + k);

		if (k < 11 && c >= 'A' && c <= 'Z')
			c |= 0x20;
		if (c != (u8)name[k])
			return false;
	}
	return true;
}

static long sl_head_step(u64 i, void *arg)
{
	struct sl_head_scan *s = arg;
	u8 c;

	if (i >= s->n)
		return 1;
	c = sl_at(s->buf, i);
	if (!s->line_end) {
		if (c != '\n')
			return 0;
		/* the request line must end with " HTTP/1.x\r\n" */
		if (i < 10 || sl_at(s->buf, i - 1) != '\r' || sl_at(s->buf, i - 10) != ' ' ||
		    sl_at(s->buf, i - 9) != 'H' || sl_at(s->buf, i - 8) != 'T' ||
		    sl_at(s->buf, i - 7) != 'T' || sl_at(s->buf, i - 6) != 'P' ||
		    sl_at(s->buf, i - 5) != '/' || sl_at(s->buf, i - 4) != '1' ||
		    sl_at(s->buf, i - 3) != '.') {
			s->bad = 1;
			return 1;
		}
		s->line_end = i + 1;
		s->ls = i + 1;
		return 0;
	}
	if (i == s->ls) {
		if (c == '\r') {
			if (i + 1 < s->n && sl_at(s->buf, i + 1) == '\n')
				s->complete = 1;
			else if (i + 1 < s->n)
				s->bad = 1;
			return 1;
		}
		if ((c | 0x20) == 't' && i + 12 <= s->n && sl_tp_name_at(s->buf, i))
			s->tp_value = i + 12;
	}
	if (c == '\n') {
		if (i == 0 || sl_at(s->buf, i - 1) != '\r') {
			s->bad = 1; /* bare LF: leave such messages alone */
			return 1;
		}
		s->ls = i + 1;
	}
	return 0;
}

/* buf starts with an HTTP method token (A-Z, 3..16 chars) and a space */
static __always_inline bool sl_starts_request(const u8 *buf, u32 n)
{
	for (int k = 0; k < 17; k++) {
		u8 c = buf[k];

		if (k >= n)
			return false;
		if (c == ' ')
			return k >= 3;
		if (c < 'A' || c > 'Z')
			return false;
	}
	return false;
}

static __always_inline bool sl_is_lower_hex(u8 c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/*
 * Parse the traceparent value at buf[off] (after optional spaces): version 00 only, ids
 * lowercase hex and not all zero. Copies the trace id and the flags into ctx.
 */
static __always_inline bool sl_parse_tp(const u8 *buf, u32 off, u32 n, struct sl_thread_ctx *ctx)
{
	bool nonzero = false;

	if (sl_at(buf, off) == ' ')
		off++;
	if (sl_at(buf, off) == ' ')
		off++;
	if (off + SL_INJ_TP_LEN > n)
		return false;
	if (sl_at(buf, off) != '0' || sl_at(buf, off + 1) != '0' || sl_at(buf, off + 2) != '-' ||
	    sl_at(buf, off + 35) != '-' || sl_at(buf, off + 52) != '-')
		return false;
#pragma unroll
	for (int k = 0; k < 32; k++) {
		u8 c = sl_at(buf, off + 3 + k);

		if (!sl_is_lower_hex(c))
			return false;
		nonzero |= c != '0';
		ctx->trace[k] = c;
	}
	if (!nonzero)
		return false;
	nonzero = false;
#pragma unroll
	for (int k = 0; k < 16; k++) {
		u8 c = sl_at(buf, off + 36 + k);

		if (!sl_is_lower_hex(c))
			return false;
		nonzero |= c != '0';
	}
	ctx->flags[0] = sl_at(buf, off + 53);
	ctx->flags[1] = sl_at(buf, off + 54);
	return nonzero && sl_is_lower_hex(ctx->flags[0]) && sl_is_lower_hex(ctx->flags[1]);
}

static __always_inline void sl_hex_random(char *dst, int bytes)
{
	const char digits[] = "0123456789abcdef";

	for (int k = 0; k < bytes; k += 4) {
		u32 r = bpf_get_prandom_u32();

		if (k == 0)
			r |= 1; /* never all zero */
#pragma unroll
		for (int j = 0; j < 8; j++)
			dst[k * 2 + j] = digits[(r >> (j * 4)) & 0xf];
	}
}

/* Keep ev in its (thread, connection, type) slots. */
static __always_inline void sl_inj_keep(const struct sl_inject_event *ev)
{
	struct sl_inj_key key = {
		.tid = ev->tid,
		.lport = ev->lport,
		.rport = ev->rport,
		.type = ev->type,
	};
	struct sl_inj_slots *slots = bpf_map_lookup_elem(&sl_inject_slots, &key);

	if (!slots) {
		struct sl_inj_scratch *s = sl_inj_scratch();

		/* a zeroed value from scratch: too big for the stack */
		if (!s)
			return;
		__builtin_memset(s->buf, 0, sizeof(struct sl_inj_slots));
		bpf_map_update_elem(&sl_inject_slots, &key, s->buf, BPF_NOEXIST);
		slots = bpf_map_lookup_elem(&sl_inject_slots, &key);
		if (!slots)
			return;
	}
	__builtin_memcpy(&slots->ev[slots->next & (SL_INJ_SLOTS - 1)], ev, sizeof(*ev));
	slots->next++;
}

/* Fill the header of s->ev (traceparent already set) and send it. */
static __always_inline void sl_inj_event(struct sl_inj_scratch *s, u8 type, u64 pid_tgid, struct sock *sk, u8 source)
{
	s->ev.type = type;
	s->ev.source = source;
	s->ev._pad0[0] = 0;
	s->ev._pad0[1] = 0;
	s->ev.tgid = pid_tgid >> 32;
	s->ev.tid = (u32)pid_tgid;
	s->ev.lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	s->ev.rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	s->ev.sock = (u64)sk;
	s->ev.ts = bpf_ktime_get_ns();
	if (type != SL_INJ_EV_INJECTED)
		s->ev.server_sock = 0;
	sl_inj_keep(&s->ev);
	if (bpf_ringbuf_output(&sl_inject_events, &s->ev, sizeof(s->ev), BPF_RB_FORCE_WAKEUP))
		sl_inj_count(SL_INJ_CNT_RINGBUF_FULL);
}

/* ---------------------------------------------------------------- thread contexts */

/* A read of `len` bytes at user address `ubuf` on sk: record a new request on this thread. */
static __always_inline void sl_ctx_on_read(u64 pid_tgid, struct sock *sk, const void *ubuf, u64 len)
{
	struct sl_inj_scratch *s = sl_inj_scratch();
	struct sl_head_scan scan = {};
	struct sl_thread_ctx ctx = {}, *old;
	u32 n = len > SL_INJ_SCAN ? SL_INJ_SCAN : (u32)len;

	if (!s || n < 16 || sl_threads_untrusted(pid_tgid) || bpf_probe_read_user(s->buf, n & (SL_INJ_SCAN * 2 - 1), ubuf))
		return;
	if (!sl_starts_request(s->buf, n))
		return;
	scan.buf = s->buf;
	scan.n = n;
	bpf_loop(SL_INJ_SCAN, sl_head_step, &scan, 0);
	if (scan.bad || !scan.line_end)
		return;
	ctx.sock = (u64)sk;
	ctx.state = SL_CTX_PLAIN;
	if (scan.tp_value && sl_parse_tp(s->buf, scan.tp_value, n, &ctx))
		ctx.state = SL_CTX_HEADER;
	old = bpf_map_lookup_elem(&sl_inject_threads, &pid_tgid);
	if (old && (old->sock != (u64)sk || old->state == SL_CTX_AMBIGUOUS)) {
		ctx.state = SL_CTX_AMBIGUOUS;
		sl_inj_count(SL_INJ_CNT_CTX_AMBIGUOUS);
	}
	if (ctx.state == SL_CTX_PLAIN) {
		/* choose the request's trace id now and tell userspace, so its SERVER span has it
		 * before any of its children is emitted */
		char *v = s->ev.traceparent;

		sl_hex_random(ctx.trace, 16);
		ctx.flags[0] = '0';
		ctx.flags[1] = '1';
		ctx.state = SL_CTX_OWN;
		__builtin_memset(v, '0', SL_INJ_TP_LEN);
		v[2] = '-';
		__builtin_memcpy(v + 3, ctx.trace, 32);
		v[35] = '-';
		v[52] = '-';
		v[54] = '1';
		v[55] = 0;
		sl_inj_event(s, SL_INJ_EV_CONTEXT, pid_tgid, sk, 0);
	}
	bpf_map_update_elem(&sl_inject_threads, &pid_tgid, &ctx, BPF_ANY);
	sl_inj_count(SL_INJ_CNT_CTX);
}

static __always_inline const void *sl_first_iov_base(const struct iovec *iov, u64 *len)
{
	struct iovec iv;

	if (!iov || bpf_probe_read_user(&iv, sizeof(iv), iov))
		return NULL;
	if (iv.iov_len < *len)
		*len = iv.iov_len;
	return iv.iov_base;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sl_inject_sys_exit, struct pt_regs *regs, long ret)
{
	long id = regs->orig_ax;
	u64 pid_tgid, len = (u64)ret;
	const void *ubuf = NULL;
	struct sl_thread_ctx *tc;
	struct sock *sk;
	bool ingress;

	switch (id) {
	case 0:  /* read */
	case 45: /* recvfrom */
	case 19: /* readv */
	case 47: /* recvmsg */
		ingress = true;
		break;
	case 1:  /* write */
	case 20: /* writev */
	case 44: /* sendto */
	case 46: /* sendmsg */
		ingress = false;
		break;
	default:
		return 0;
	}
	if (ret <= 0)
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	if ((u32)(pid_tgid >> 32) == sl_inject_cfg.self_tgid)
		return 0;
	if (!ingress) {
		/* the response (or anything) written on the request's connection ends the context */
		tc = bpf_map_lookup_elem(&sl_inject_threads, &pid_tgid);
		if (!tc)
			return 0;
		sk = sl_fd_to_tcp_sock((int)regs->di);
		if (sk && tc->sock == (u64)sk)
			bpf_map_delete_elem(&sl_inject_threads, &pid_tgid);
		return 0;
	}
	if (bpf_current_task_under_cgroup(&sl_inject_cgroup, 0) != 1)
		return 0;
	sk = sl_fd_to_tcp_sock((int)regs->di);
	if (!sk)
		return 0;
	switch (id) {
	case 0:
	case 45:
		ubuf = (const void *)regs->si;
		break;
	case 19:
		ubuf = sl_first_iov_base((const struct iovec *)regs->si, &len);
		break;
	default: {
		struct user_msghdr mh;

		if (bpf_probe_read_user(&mh, sizeof(mh), (void *)regs->si))
			return 0;
		ubuf = sl_first_iov_base(mh.msg_iov, &len);
	}
	}
	if (ubuf)
		sl_ctx_on_read(pid_tgid, sk, ubuf, len);
	return 0;
}

/* ---------------------------------------------------------------- client sockets */

SEC("sockops")
int sl_inject_sockops(struct bpf_sock_ops *skops)
{
	u64 cookie;
	u16 rport;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != SL_AF_INET && skops->family != SL_AF_INET6)
		return 1;
	rport = (u16)bpf_ntohl(skops->remote_port);
	if (!sl_inject_cfg.any_port && !bpf_map_lookup_elem(&sl_inject_ports, &rport))
		return 1;
	cookie = bpf_get_socket_cookie(skops);
	if (bpf_sock_hash_update(skops, &sl_inject_socks, &cookie, BPF_NOEXIST))
		sl_inj_count(SL_INJ_CNT_SOCKS_FULL);
	return 1;
}

/* ---------------------------------------------------------------- injection */

/* Choose the ids; build "traceparent: <value>\r\n" in s->hdr and the event's value and source. */
static __always_inline void sl_choose_ids(struct sl_inj_scratch *s, u64 pid_tgid)
{
	struct sl_thread_ctx *ctx = bpf_map_lookup_elem(&sl_inject_threads, &pid_tgid);
	const char name[] = "traceparent: ";
	char *v = s->ev.traceparent;

	s->ev.source = SL_INJ_SRC_NEW;
	s->ev.server_sock = 0;
	v[0] = '0';
	v[1] = '0';
	v[2] = '-';
	v[53] = '0';
	v[54] = '1';
	if (ctx && ctx->state != SL_CTX_AMBIGUOUS && !sl_threads_untrusted(pid_tgid)) {
		if (ctx->state == SL_CTX_PLAIN) {
			sl_hex_random(ctx->trace, 16);
			ctx->flags[0] = '0';
			ctx->flags[1] = '1';
			ctx->state = SL_CTX_OWN;
		}
		__builtin_memcpy(v + 3, ctx->trace, 32);
		v[53] = ctx->flags[0];
		v[54] = ctx->flags[1];
		s->ev.source = ctx->state == SL_CTX_HEADER ? SL_INJ_SRC_HEADER : SL_INJ_SRC_THREAD;
		s->ev.server_sock = ctx->sock;
	} else {
		sl_hex_random(v + 3, 16);
	}
	v[35] = '-';
	sl_hex_random(v + 36, 8);
	v[52] = '-';
	v[55] = 0;
	__builtin_memcpy(s->hdr, name, 13);
	__builtin_memcpy(s->hdr + 13, v, SL_INJ_TP_LEN);
	s->hdr[68] = '\r';
	s->hdr[69] = '\n';
}

static __always_inline int sl_inject(struct sk_msg_md *msg)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sl_head_scan scan = {};
	struct sl_inj_scratch *s;
	struct tcp_sock *tp;
	u8 *data, *end;
	u32 n, at;

	if ((u32)(pid_tgid >> 32) == sl_inject_cfg.self_tgid || msg->size < 16)
		return SL_SK_PASS;
	n = msg->size > SL_INJ_SCAN ? SL_INJ_SCAN : msg->size;
	if (bpf_msg_pull_data(msg, 0, n, 0))
		return SL_SK_PASS;
	data = msg->data;
	end = msg->data_end;
	if (data + 16 > end)
		return SL_SK_PASS;
	if (end - data < n)
		n = end - data;
	s = sl_inj_scratch();
	if (!s || bpf_probe_read_kernel(s->buf, n & (SL_INJ_SCAN * 2 - 1), data))
		return SL_SK_PASS;
	if (!sl_starts_request(s->buf, n)) {
		sl_inj_count(SL_INJ_CNT_NOT_REQUEST);
		return SL_SK_PASS;
	}
	scan.buf = s->buf;
	scan.n = n;
	bpf_loop(SL_INJ_SCAN, sl_head_step, &scan, 0);
	if (scan.bad || !scan.line_end) {
		sl_inj_count(scan.line_end ? SL_INJ_CNT_INCOMPLETE : SL_INJ_CNT_NOT_REQUEST);
		return SL_SK_PASS;
	}
	if (scan.tp_value) {
		sl_inj_count(SL_INJ_CNT_HAS_TP);
		return SL_SK_PASS;
	}
	if (!scan.complete) {
		sl_inj_count(SL_INJ_CNT_INCOMPLETE);
		return SL_SK_PASS;
	}
	tp = msg->sk ? bpf_skc_to_tcp_sock(msg->sk) : NULL;
	if (!tp)
		return SL_SK_PASS;

	sl_choose_ids(s, pid_tgid);
	at = scan.line_end;
	if (at > SL_INJ_SCAN)
		return SL_SK_PASS;
	if (bpf_msg_push_data(msg, at, SL_INJ_HDR_LEN, 0)) {
		sl_inj_count(SL_INJ_CNT_PUSH_FAIL);
		return SL_SK_PASS;
	}
	if (bpf_msg_pull_data(msg, at, at + SL_INJ_HDR_LEN, 0))
		goto undo;
	data = msg->data;
	end = msg->data_end;
	if (data + SL_INJ_HDR_LEN > end)
		goto undo;
	__builtin_memcpy(data, s->hdr, SL_INJ_HDR_LEN);
	sl_inj_count(SL_INJ_CNT_INJECTED);
	sl_inj_event(s, SL_INJ_EV_INJECTED, pid_tgid, (struct sock *)tp, s->ev.source);
	return SL_SK_PASS;
undo:
	bpf_msg_pop_data(msg, at, SL_INJ_HDR_LEN, 0);
	sl_inj_count(SL_INJ_CNT_PUSH_FAIL);
	return SL_SK_PASS;
}

SEC("sk_msg")
int sl_inject_msg(struct sk_msg_md *msg)
{
	return sl_inject(msg);
}
