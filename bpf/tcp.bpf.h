/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * tcp.bpf.h — one summary record per TCP connection, from tp_btf/inet_sock_set_state (a
 * BTF-typed raw tracepoint: struct sock * directly, no tracefs, no kprobes).
 *
 *  - new state SYN_SENT (tcp_v4/v6_connect, in the connecting process's context): remember
 *    {now, the process (tgid, tid, cgroup, comm), client} in sl_tcp_open, keyed by sock —
 *    unless the process is the agent or filtered out by the pid/cgroup filters.
 *  - new state SYN_RECV (the child socket of a listener, in softirq): remember {now, server};
 *    the process is not known here: userspace attributes it by sock from the ACCEPT event.
 *  - new state CLOSE (from anything but LISTEN): take the entry out and, if the socket passes
 *    the port filter, emit SL_EV_TCP with the 4-tuple and struct sl_tcp_summary read from
 *    struct tcp_sock (CO-RE): payload bytes sent/received, srtt, retransmits, segments, sk_err and
 *    the state left (SYN_SENT → CLOSE is a failed connect; sk_err says why).
 * A CLOSE without an entry (a filtered or the agent's own connect, or an entry the full table
 * could not take) is counted, not reported. Connections open before the agent started get
 * their entry from the pickup (iter.bpf.h): flagged SL_TCP_F_PICKED, with their counters at
 * that moment in sl_tcp_base, so that their summary counts only what passed since.
 *
 * Why a header included into syscalls.bpf.c (as tls.bpf.h is) and not an object of its own:
 * the records go to the same ring buffer, in order with the syscall records of the same
 * connection, and use the same filters and counters; a second object would need shared
 * (pinned or reused) maps and a second loader path in the agent for no gain. The record is
 * built on the stack, not in sl_scratch: this program also runs in softirq context, which
 * can interrupt a syscall program that is using the per-CPU scratch.
 *
 * Bounds: sl_tcp_open is a plain hash (not LRU, so a full table is seen and counted, and an
 * open connection is never silently forgotten); entries are deleted at CLOSE.
 * Requires sl_cfg, sl_count, sl_task_wanted, sl_port_filter, sl_wakeup_flags, sl_events and
 * sl_fill_conn from syscalls.bpf.c / sock.bpf.h.
 */
#ifndef SL_TCP_BPF_H
#define SL_TCP_BPF_H

#define SL_TCP_SYN_SENT 2
#define SL_TCP_SYN_RECV 3
#define SL_TCP_CLOSE 7
#define SL_TCP_LISTEN 10

/* A connection between SYN_SENT/SYN_RECV and CLOSE. */
struct sl_tcp_open {
	u64 ts;
	u64 cgroup_id;
	u32 tgid;
	u32 tid;
	char comm[SL_COMM_LEN];
	u8 role;
	u8 flags; /* SL_TCP_F_* */
	u8 _pad[6];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct sl_tcp_open);
} sl_tcp_open SEC(".maps");

/* A picked-up connection's counters at the pickup (bpf/iter.bpf.h), subtracted at CLOSE so its
 * summary counts what passed while the agent watched. Entries only for picked-up sockets
 * (allocated as needed), deleted at CLOSE; bounded like sl_tcp_open. */
struct sl_tcp_base {
	u64 bytes_sent;
	u64 bytes_received;
	u32 total_retrans;
	u32 segs_out;
	u32 segs_in;
	u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct sl_tcp_base);
} sl_tcp_base SEC(".maps");

/* a counter's growth since `base` (0 if it went backwards) */
static __always_inline u64 sl_since(u64 now, u64 base)
{
	return now > base ? now - base : 0;
}

/* payload bytes sent, retransmissions not counted again */
static __always_inline u64 sl_tcp_bytes_sent(struct tcp_sock *tp)
{
	return BPF_CORE_READ(tp, bytes_sent) - BPF_CORE_READ(tp, bytes_retrans);
}

/* payload bytes received in order: bytes_received counts the FIN's sequence number (SOCK_DONE:
 * a FIN was received) */
static __always_inline u64 sl_tcp_bytes_received(struct sock *sk, struct tcp_sock *tp)
{
	u64 n = BPF_CORE_READ(tp, bytes_received);

	if (n && (BPF_CORE_READ(sk, __sk_common.skc_flags) & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))))
		n--;
	return n;
}

/* The record: header + summary, contiguous as userspace reads it. */
struct sl_tcp_record {
	struct sl_event ev;
	struct sl_tcp_summary sum;
};

static __always_inline void sl_tcp_remember(struct sock *sk, u8 role)
{
	struct sl_tcp_open o = {};
	u64 key = (u64)sk;

	o.ts = bpf_ktime_get_ns();
	o.role = role;
	if (role == SL_TCP_CLIENT) {
		u64 pid_tgid = bpf_get_current_pid_tgid();
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();

		if ((u32)(pid_tgid >> 32) == sl_cfg.self_tgid || !sl_task_wanted(pid_tgid >> 32))
			return;
		o.tgid = pid_tgid >> 32;
		o.tid = (u32)pid_tgid;
		o.cgroup_id = bpf_get_current_cgroup_id();
		if (BPF_CORE_READ_STR_INTO(&o.comm, task, group_leader, comm) < 0)
			bpf_get_current_comm(o.comm, sizeof(o.comm));
	}
	if (bpf_map_update_elem(&sl_tcp_open, &key, &o, BPF_ANY))
		sl_count(SL_CNT_TCP_TABLE_FULL);
}

/* sl_sock_wanted() on given ports (the socket's own local port is gone at CLOSE) */
static __always_inline bool sl_tcp_ports_wanted(u16 lport, u16 rport)
{
	bool listed;

	if (sl_cfg.port_mode == SL_MODE_OFF)
		return true;
	listed = bpf_map_lookup_elem(&sl_port_filter, &lport) != NULL ||
		 bpf_map_lookup_elem(&sl_port_filter, &rport) != NULL;
	if (sl_cfg.port_mode == SL_MODE_INCLUDE ? listed : !listed)
		return true;
	sl_count(SL_CNT_FILTERED);
	return false;
}

static __always_inline void sl_tcp_closed(struct sock *sk, int oldstate)
{
	struct sl_tcp_record r = {};
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	u64 key = (u64)sk;
	struct sl_tcp_open *o = bpf_map_lookup_elem(&sl_tcp_open, &key);

	if (!o) {
		sl_count(SL_CNT_TCP_UNTRACKED);
		return;
	}
	r.ev.type = SL_EV_TCP;
	r.ev.proto = SL_IPPROTO_TCP;
	r.ev.tgid = o->tgid;
	r.ev.tid = o->tid;
	r.ev.fd = -1;
	r.ev.sock = key;
	r.ev.cgroup_id = o->cgroup_id;
	r.ev.ts_start = o->ts;
	r.ev.ts_end = bpf_ktime_get_ns();
	r.ev.cap_len = sizeof(struct sl_tcp_summary);
	__builtin_memcpy(r.ev.comm, o->comm, sizeof(r.ev.comm));
	r.sum.open_ns = o->ts;
	r.sum.role = o->role;
	r.sum.flags = o->flags;
	bpf_map_delete_elem(&sl_tcp_open, &key);
	sl_fill_conn(&r.ev.conn, sk);
	/* tcp_set_state(CLOSE) releases the port (inet_put_port zeroes inet_num) before the
	 * tracepoint fires; inet_sport still holds it */
	r.ev.conn.sport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	if (!sl_tcp_ports_wanted(r.ev.conn.sport, r.ev.conn.dport))
		return;
	r.sum.bytes_sent = sl_tcp_bytes_sent(tp);
	r.sum.bytes_received = sl_tcp_bytes_received(sk, tp);
	r.sum.srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	r.sum.total_retrans = BPF_CORE_READ(tp, total_retrans);
	r.sum.segs_out = BPF_CORE_READ(tp, segs_out);
	r.sum.segs_in = BPF_CORE_READ(tp, segs_in);
	r.sum.old_state = (u8)oldstate;
	r.sum.sk_err = (u16)BPF_CORE_READ(sk, sk_err);
	if (r.sum.flags & SL_TCP_F_PICKED) {
		struct sl_tcp_base *b = bpf_map_lookup_elem(&sl_tcp_base, &key);

		if (b) {
			r.sum.bytes_sent = sl_since(r.sum.bytes_sent, b->bytes_sent);
			r.sum.bytes_received = sl_since(r.sum.bytes_received, b->bytes_received);
			r.sum.total_retrans = sl_since(r.sum.total_retrans, b->total_retrans);
			r.sum.segs_out = sl_since(r.sum.segs_out, b->segs_out);
			r.sum.segs_in = sl_since(r.sum.segs_in, b->segs_in);
			bpf_map_delete_elem(&sl_tcp_base, &key);
		}
	}
	if (bpf_ringbuf_output(&sl_events, &r, sizeof(r), sl_wakeup_flags(sizeof(r))))
		sl_count(SL_CNT_RINGBUF_FULL);
	else
		sl_count(SL_CNT_EVENTS);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(sl_tcp_state, struct sock *sk, int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != SL_IPPROTO_TCP)
		return 0;
	if (newstate == SL_TCP_SYN_SENT)
		sl_tcp_remember(sk, SL_TCP_CLIENT);
	else if (newstate == SL_TCP_SYN_RECV)
		sl_tcp_remember(sk, SL_TCP_SERVER);
	else if (newstate == SL_TCP_CLOSE && oldstate != SL_TCP_LISTEN)
		sl_tcp_closed(sk, oldstate);
	return 0;
}

#endif /* SL_TCP_BPF_H */
