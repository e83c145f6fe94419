/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * tls.bpf.h — TLS plaintext: uprobes/uretprobes on OpenSSL's SSL_read, SSL_write,
 * SSL_read_ex, SSL_write_ex (and SSL_free), in libssl.so.* or in executables that link
 * OpenSSL statically and export the symbols (Node).
 *
 * Why a header included into syscalls.bpf.c and not an object of its own: the plaintext
 * records must go to the same ring buffer (sl_events), use the same scratch, counters,
 * filters and connection read-out (sl_fill_header) as the syscall records, and the syscall
 * path must consult the TLS maps on every socket syscall (to learn SSL* → socket and to
 * silence ciphertext). Within one object all of that is plain C; across two objects it would
 * need pinned/reused maps and a second loader path in the agent. The programs here have bare
 * SEC("uprobe")/SEC("uretprobe"): they are not attached by attach(); userspace attaches them
 * per binary (src/receiver/tls.ts) — their names are TLS_PROGRAMS in src/receiver/layout.ts.
 *
 * How a plaintext record finds its connection:
 *  1. SSL_* entry stores {SSL*, buf, len ptr, ts} per thread (sl_tls_calls, keyed pid_tgid).
 *  2. A socket syscall on that thread while the call is active (the socket BIO of curl,
 *     python, nginx reads/writes the fd inside SSL_read/SSL_write) records its fd and sock
 *     in the call, and marks the sock as TLS (sl_tls_socks).
 *  3. Memory-BIO users (Node) do their socket I/O outside SSL_*: libuv read()s ciphertext,
 *     then calls SSL_read on the same thread. For processes that have made an SSL_* call
 *     (sl_tls_tgids) the last TCP read per thread is kept (sl_tls_lastread) and used when
 *     an SSL_read learned no socket and its SSL* is not mapped yet. An SSL_write of an
 *     unmapped SSL* (Node's first write on a connection, in the same cycle as the handshake)
 *     is kept whole (header + captured plaintext) per thread in sl_tls_pending and sent when
 *     the thread next writes to a TCP socket — the ciphertext of that very SSL_write, which
 *     Node writes out before it returns to its event loop — which also maps the SSL*.
 *  4. Return: the SSL* → socket mapping (sl_tls_ssl, keyed {SSL*, tgid}) is updated (2) or
 *     consulted; the plaintext goes out as SL_EV_DATA with syscall SL_SYS_SSL_READ/WRITE and
 *     the socket's connection fields. No socket known: dropped, counted (SL_CNT_TLS_NOSOCK).
 * Syscalls on a socket marked TLS are not reported (their bytes are ciphertext; counted in
 * SL_CNT_TLS_CIPHER, sockets outside the port filter included: TLS learning comes first). The handshake happens before the first SSL_read/SSL_write, so its
 * records do go out; userspace recognises TLS records and never parses them.
 * SSL_free forgets the SSL*; close() forgets the socket (struct sock addresses are reused).
 *
 * Bounds: every map is an LRU hash (oldest entries go first; a lost SSL* mapping is learned
 * again from the next nested syscall). A pending write replaced before it was sent is counted
 * in SL_CNT_TLS_NOSOCK. Requires sl_cfg, sl_counters, sl_scratch, sl_count,
 * sl_task_wanted, sl_sock_wanted, sl_fill_header, sl_want, sl_submit from syscalls.bpf.c.
 */
#ifndef SL_TLS_BPF_H
#define SL_TLS_BPF_H

/* An SSL_* call between its entry and its return, per thread. */
struct sl_tls_call {
	u64 ssl;
	u64 buf;
	u64 lenp; /* size_t *readbytes / *written of the _ex variants; 0 for SSL_read/SSL_write */
	u64 ts;
	u64 sk;   /* learned from a socket syscall inside the call; 0 if none */
	s32 fd;
	u8 sys;   /* SL_SYS_SSL_READ or SL_SYS_SSL_WRITE */
	u8 _pad[3];
};

struct sl_tls_key {
	u64 ssl;
	u32 tgid;
	u32 _pad;
};

struct sl_tls_sock {
	u64 sk;
	s32 fd;
	u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct sl_tls_call);
} sl_tls_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct sl_tls_key);
	__type(value, struct sl_tls_sock);
} sl_tls_ssl SEC(".maps");

/* Sockets that carry TLS: their syscall records are ciphertext and are not sent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, u8);
} sl_tls_socks SEC(".maps");

/* Processes that have called SSL_*: only they pay for the lookups below. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u8);
} sl_tls_tgids SEC(".maps");

/* Last TCP read per thread of a TLS process (memory-BIO users: Node). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct sl_tls_sock);
} sl_tls_lastread SEC(".maps");

/* An SSL_write whose socket is not known yet, per thread; ev.sock holds the SSL* meanwhile. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__type(key, u64);
	__type(value, struct sl_scratch);
} sl_tls_pending SEC(".maps");

/* Send the pending SSL_write of this thread on socket sk (fd), and map its SSL* to sk. */
static __always_inline void sl_tls_flush_pending(u64 pid_tgid, s32 fd, struct sock *sk)
{
	struct sl_scratch *p = bpf_map_lookup_elem(&sl_tls_pending, &pid_tgid);
	struct sl_tls_key key = {};
	struct sl_tls_sock conn = {};
	struct sl_scratch *s;
	u64 skey = (u64)sk;
	u32 len;
	u8 one = 1;

	if (!p)
		return;
	key.ssl = p->ev.sock;
	key.tgid = pid_tgid >> 32;
	conn.sk = skey;
	conn.fd = fd;
	bpf_map_update_elem(&sl_tls_ssl, &key, &conn, BPF_ANY);
	bpf_map_update_elem(&sl_tls_socks, &skey, &one, BPF_ANY);
	s = sl_sock_wanted(sk) ? sl_scratch_get() : NULL;
	if (s) {
		__builtin_memcpy(&s->ev, &p->ev, sizeof(s->ev));
		len = s->ev.cap_len;
		if (len > SL_MAX_CAPTURE)
			len = SL_MAX_CAPTURE;
		if (len && bpf_probe_read_kernel(s->data, len & (SL_MAX_CAPTURE * 2 - 1), p->data))
			len = 0;
		s->ev.cap_len = len;
		s->ev.sock = skey;
		s->ev.fd = fd;
		sl_fill_conn(&s->ev.conn, sk);
		sl_submit(s);
	}
	bpf_map_delete_elem(&sl_tls_pending, &pid_tgid);
}

/*
 * Called from sl_enter for a read/write-family syscall on a TCP socket, before the port filter
 * (the SSL* of a filtered socket must be mapped too, or it could be taken for the thread's
 * last wanted one). Returns true when the syscall must not be reported (TLS ciphertext).
 */
static __always_inline bool sl_tls_on_syscall(u64 pid_tgid, u8 sys, s32 fd, struct sock *sk)
{
	u32 tgid = pid_tgid >> 32;
	u64 key = (u64)sk;
	struct sl_tls_call *c;
	u8 one = 1;

	if (!bpf_map_lookup_elem(&sl_tls_tgids, &tgid))
		return false;
	c = bpf_map_lookup_elem(&sl_tls_calls, &pid_tgid);
	if (c) {
		c->sk = key;
		c->fd = fd;
		bpf_map_update_elem(&sl_tls_socks, &key, &one, BPF_ANY);
	} else if (!sl_is_egress(sys)) {
		struct sl_tls_sock last = { .sk = key, .fd = fd };

		bpf_map_update_elem(&sl_tls_lastread, &pid_tgid, &last, BPF_ANY);
	} else {
		sl_tls_flush_pending(pid_tgid, fd, sk);
	}
	if (!bpf_map_lookup_elem(&sl_tls_socks, &key))
		return false;
	sl_count(SL_CNT_TLS_CIPHER);
	return true;
}

/* close() of a TCP socket: a later socket at the same address is not TLS until proven. */
static __always_inline void sl_tls_on_close(struct sock *sk)
{
	u64 key = (u64)sk;

	bpf_map_delete_elem(&sl_tls_socks, &key);
}

static __always_inline int sl_tls_enter(void *ssl, void *buf, void *lenp, u8 sys)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	struct sl_tls_call c = {};
	u8 one = 1;

	if (tgid == sl_cfg.self_tgid || !sl_task_wanted(tgid))
		return 0;
	if (!bpf_map_lookup_elem(&sl_tls_tgids, &tgid))
		bpf_map_update_elem(&sl_tls_tgids, &tgid, &one, BPF_ANY);
	c.ssl = (u64)ssl;
	c.buf = (u64)buf;
	c.lenp = (u64)lenp;
	c.ts = bpf_ktime_get_ns();
	c.fd = -1;
	c.sys = sys;
	if (bpf_map_update_elem(&sl_tls_calls, &pid_tgid, &c, BPF_ANY))
		sl_count(SL_CNT_STASH_FULL);
	return 0;
}

static __always_inline int sl_tls_exit(int ret)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sl_tls_call *cp, c;
	struct sl_tls_key key = {};
	struct sl_tls_sock *known, conn = {};
	struct sl_scratch *s;
	u64 bytes;
	u32 want;
	u8 one = 1;

	cp = bpf_map_lookup_elem(&sl_tls_calls, &pid_tgid);
	if (!cp)
		return 0;
	c = *cp;
	bpf_map_delete_elem(&sl_tls_calls, &pid_tgid);

	key.ssl = c.ssl;
	key.tgid = pid_tgid >> 32;
	if (c.sk) {
		conn.sk = c.sk;
		conn.fd = c.fd;
		bpf_map_update_elem(&sl_tls_ssl, &key, &conn, BPF_ANY);
	} else if ((known = bpf_map_lookup_elem(&sl_tls_ssl, &key))) {
		conn = *known;
	} else if (c.sys == SL_SYS_SSL_READ && (known = bpf_map_lookup_elem(&sl_tls_lastread, &pid_tgid))) {
		conn = *known;
		bpf_map_update_elem(&sl_tls_ssl, &key, &conn, BPF_ANY);
		bpf_map_update_elem(&sl_tls_socks, &conn.sk, &one, BPF_ANY);
	}

	if (c.lenp) {
		size_t n = 0;

		if (ret != 1 || bpf_probe_read_user(&n, sizeof(n), (void *)c.lenp))
			return 0;
		bytes = n;
	} else {
		if (ret <= 0)
			return 0;
		bytes = (u64)ret;
	}
	if (bytes == 0)
		return 0;
	if (!conn.sk && c.sys == SL_SYS_SSL_WRITE) {
		/* memory BIO: keep it until this thread writes the ciphertext (see the header) */
		if (!(s = sl_scratch_get()))
			return 0;
		sl_fill_header(&s->ev, SL_EV_DATA, c.sys, pid_tgid, -1, NULL, c.ts, (s64)bytes);
		s->ev.proto = SL_IPPROTO_TCP;
		s->ev.sock = c.ssl;
		want = sl_want(bytes, &s->ev);
		if (want && bpf_probe_read_user(s->data, want & (SL_MAX_CAPTURE * 2 - 1), (void *)c.buf) == 0)
			s->ev.cap_len = want;
		if (bpf_map_lookup_elem(&sl_tls_pending, &pid_tgid))
			sl_count(SL_CNT_TLS_NOSOCK); /* the previous one never found its socket */
		bpf_map_update_elem(&sl_tls_pending, &pid_tgid, s, BPF_ANY);
		return 0;
	}
	if (!conn.sk) {
		sl_count(SL_CNT_TLS_NOSOCK);
		return 0;
	}
	if (!sl_sock_wanted((struct sock *)conn.sk) || !(s = sl_scratch_get()))
		return 0;
	sl_fill_header(&s->ev, SL_EV_DATA, c.sys, pid_tgid, conn.fd, (struct sock *)conn.sk, c.ts, (s64)bytes);
	s->ev.proto = SL_IPPROTO_TCP;
	want = sl_want(bytes, &s->ev);
	if (want) {
		if (bpf_probe_read_user(s->data, want & (SL_MAX_CAPTURE * 2 - 1), (void *)c.buf) == 0)
			s->ev.cap_len = want;
		else
			sl_count(SL_CNT_READ_FAIL);
	}
	sl_submit(s);
	return 0;
}

/* int SSL_read(SSL *ssl, void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(sl_ssl_read, void *ssl, void *buf, int num)
{
	return sl_tls_enter(ssl, buf, NULL, SL_SYS_SSL_READ);
}

/* int SSL_write(SSL *ssl, const void *buf, int num) */
SEC("uprobe")
int BPF_KPROBE(sl_ssl_write, void *ssl, void *buf, int num)
{
	return sl_tls_enter(ssl, buf, NULL, SL_SYS_SSL_WRITE);
}

/* int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes) */
SEC("uprobe")
int BPF_KPROBE(sl_ssl_read_ex, void *ssl, void *buf, size_t num, size_t *readbytes)
{
	return sl_tls_enter(ssl, buf, readbytes, SL_SYS_SSL_READ);
}

/* int SSL_write_ex(SSL *ssl, const void *buf, size_t num, size_t *written) */
SEC("uprobe")
int BPF_KPROBE(sl_ssl_write_ex, void *ssl, void *buf, size_t num, size_t *written)
{
	return sl_tls_enter(ssl, buf, written, SL_SYS_SSL_WRITE);
}

/* One return probe serves all four: the entry stashed what the return needs. All four
 * return int: only the low 32 bits of the return register are theirs. */
SEC("uretprobe")
int BPF_KRETPROBE(sl_ssl_ret, long ret)
{
	return sl_tls_exit((int)ret);
}

/* void SSL_free(SSL *ssl) */
SEC("uprobe")
int BPF_KPROBE(sl_ssl_free, void *ssl)
{
	struct sl_tls_key key = { .ssl = (u64)ssl, .tgid = bpf_get_current_pid_tgid() >> 32 };

	bpf_map_delete_elem(&sl_tls_ssl, &key);
	return 0;
}

#endif /* SL_TLS_BPF_H */
