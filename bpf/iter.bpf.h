/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * iter.bpf.h — SEC("iter/tcp") sl_iter_tcp: the pickup of TCP connections that were open
 * before the agent started (or restarted). Userspace runs it once after attach (the addon's
 * runIter(): a bpf_link + bpf_iter_create + read to EOF); it is never attached by its SEC().
 *
 * The kernel's TCP iterator (net/ipv4/tcp_ipv4.c, bpf_iter_tcp_batch) visits every socket of
 * every network namespace: first the listening hash, then the established hash (which also
 * holds TIME_WAIT and request sockets: skipped here, bpf_skc_to_tcp_sock() gives NULL for
 * them). Listeners are remembered in sl_iter_listen {netns, port}; a later connected socket
 * whose local port has a listener in its netns is the accepted child of that listener
 * (SL_PICK_SERVER), any other is a client (it connected out). That relies on listeners coming
 * first, which the iterator guarantees (TCP_SEQ_STATE_LISTENING before ..._ESTABLISHED).
 *
 * Each connected socket it reports also gets an entry in sl_tcp_open (sl_pickup_summary), so
 * that its TCP summary is reported when it closes (tcp.bpf.h).
 *
 * Output: struct sl_pickup records (bpf/sidelight.h) through bpf_seq_write, for sockets whose
 * ports pass the port filter (sl_ports_pass: not counted as filtered syscalls) and listeners
 * the table could not hold (SL_PICK_LISTEN_LOST, so userspace knows roles are unsure).
 *
 * Bounds: sl_iter_listen (plain hash, 4096 listeners) is filled once per run and not cleared:
 * run the iterator once per loaded object (the agent does). Requires sl_ports_pass and
 * sl_fill_conn from syscalls.bpf.c / sock.bpf.h, sl_tcp_open and sl_tcp_base from tcp.bpf.h.
 */
#ifndef SL_ITER_BPF_H
#define SL_ITER_BPF_H

#define SL_ITER_TCP_CLOSE 7
#define SL_ITER_TCP_LISTEN 10

struct sl_listen_key {
	u32 netns;
	u16 port;
	u16 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct sl_listen_key);
	__type(value, u8);
} sl_iter_listen SEC(".maps");

/*
 * So that a picked-up connection gets its summary at CLOSE (tcp.bpf.h): an sl_tcp_open entry
 * flagged SL_TCP_F_PICKED (no process: userspace attributes it by sock) and its counters now,
 * in sl_tcp_base. Not over an entry the connection already has (it reached SYN_SENT or
 * SYN_RECV after the probes attached). A full table is counted, as at SYN_SENT.
 */
static __always_inline void sl_pickup_summary(struct sock *sk, struct tcp_sock *tp, u8 role)
{
	struct sl_tcp_open o = {};
	struct sl_tcp_base b = {};
	u64 key = (u64)sk;

	if (bpf_map_lookup_elem(&sl_tcp_open, &key))
		return;
	o.ts = bpf_ktime_get_ns();
	o.role = role;
	o.flags = SL_TCP_F_PICKED;
	b.bytes_sent = sl_tcp_bytes_sent(tp);
	b.bytes_received = sl_tcp_bytes_received(sk, tp);
	b.total_retrans = BPF_CORE_READ(tp, total_retrans);
	b.segs_out = BPF_CORE_READ(tp, segs_out);
	b.segs_in = BPF_CORE_READ(tp, segs_in);
	if (bpf_map_update_elem(&sl_tcp_base, &key, &b, BPF_ANY)) {
		sl_count(SL_CNT_TCP_TABLE_FULL);
		return;
	}
	if (bpf_map_update_elem(&sl_tcp_open, &key, &o, BPF_NOEXIST)) {
		bpf_map_delete_elem(&sl_tcp_base, &key);
		sl_count(SL_CNT_TCP_TABLE_FULL);
	}
}

static __always_inline int sl_pickup_sock(struct seq_file *seq, struct sock_common *skc)
{
	struct sl_listen_key key = {};
	struct sl_pickup rec = {};
	struct tcp_sock *tp;
	struct sock *sk;
	u8 state, one = 1;

	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0; /* TIME_WAIT or a request socket: no syscall will carry data on it */
	sk = (struct sock *)tp;
	state = skc->skc_state;
	if (state == SL_ITER_TCP_CLOSE)
		return 0;
	sl_fill_conn(&rec.conn, sk);
	rec.sock = (u64)sk;
	rec.state = state;
	rec.uid = BPF_CORE_READ(sk, sk_uid.val);
	key.netns = rec.conn.netns;
	key.port = rec.conn.sport;
	if (state == SL_ITER_TCP_LISTEN) {
		rec.flags = SL_PICK_LISTENER;
		if (bpf_map_update_elem(&sl_iter_listen, &key, &one, BPF_ANY))
			rec.flags |= SL_PICK_LISTEN_LOST;
		else if (!sl_ports_pass(rec.conn.sport, 0))
			return 0;
	} else {
		if (!sl_ports_pass(rec.conn.sport, rec.conn.dport))
			return 0;
		if (bpf_map_lookup_elem(&sl_iter_listen, &key))
			rec.flags = SL_PICK_SERVER;
		sl_pickup_summary(sk, tp, rec.flags & SL_PICK_SERVER ? SL_TCP_SERVER : SL_TCP_CLIENT);
	}
	bpf_seq_write(seq, &rec, sizeof(rec));
	return 0;
}

SEC("iter/tcp")
int sl_iter_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;

	if (!skc)
		return 0;
	return sl_pickup_sock(ctx->meta->seq, skc);
}

#endif /* SL_ITER_BPF_H */
