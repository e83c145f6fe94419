/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sidelight.h — the contract between the eBPF programs (the .bpf.c files), the addon (native/)
 * and the TypeScript decoder (src/receiver/layout.ts).
 *
 * Only types and constants live here: no BPF helpers, no maps. Every struct has explicit
 * padding (the BPF build uses -Wpadded -Werror) and a _Static_assert on its size.
 * If you change a struct or a constant, change src/receiver/layout.ts to match; the test
 * test/receiver/layout.test.ts compares both (the addon reports sizes/offsets from here).
 */
#ifndef SIDELIGHT_H
#define SIDELIGHT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#ifdef __cplusplus
#define SL_STATIC_ASSERT static_assert
#else
#define SL_STATIC_ASSERT _Static_assert
#endif

/* Largest capture per syscall; cfg.capture_bytes must be <= this. Power of two. */
#define SL_MAX_CAPTURE 4096
#define SL_COMM_LEN 16
/* Most iovecs read per readv/writev/sendmsg/recvmsg. */
#define SL_MAX_IOV 32
/* Most messages reported per sendmmsg/recvmmsg (glibc sends A and AAAA queries in one). */
#define SL_MAX_MMSG 4

/* Event types: src/receiver/layout.ts EventType must match. */
enum sl_event_type {
	SL_EV_DATA = 1,    /* bytes read or written on a TCP socket */
	SL_EV_CONNECT = 2, /* connect() returned (ret 0, -EINPROGRESS or an error) */
	SL_EV_ACCEPT = 3,  /* accept()/accept4() returned a new socket */
	SL_EV_CLOSE = 4,   /* close() of a TCP socket fd */
	SL_EV_PROC = 5,    /* first connect/accept/DNS datagram of a process: exe name + environment prefix */
	SL_EV_TCP = 6,     /* a TCP connection reached CLOSE: struct sl_tcp_summary follows (bpf/tcp.bpf.h) */
};

/*
 * Payload of SL_EV_PROC: who the process is, read in its own context so it survives the
 * process exiting before userspace can read /proc. exe is the executable's file name,
 * NUL-padded; env is a prefix of its environment block (NUL-separated KEY=VALUE), of
 * cap_len - SL_EXE_LEN bytes. Userspace parses only the OTEL_* variables out of it.
 */
#define SL_EXE_LEN 64
#define SL_ENV_MAX (SL_MAX_CAPTURE - SL_EXE_LEN)

enum sl_direction {
	SL_DIR_INGRESS = 0, /* the process read these bytes */
	SL_DIR_EGRESS = 1,  /* the process wrote these bytes */
};

/* Which syscall produced the event (for diagnostics and DNS/mmsg handling). */
enum sl_syscall {
	SL_SYS_READ = 1,
	SL_SYS_WRITE,
	SL_SYS_READV,
	SL_SYS_WRITEV,
	SL_SYS_SENDTO,
	SL_SYS_RECVFROM,
	SL_SYS_SENDMSG,
	SL_SYS_RECVMSG,
	SL_SYS_SENDMMSG,
	SL_SYS_RECVMMSG,
	SL_SYS_CONNECT,
	SL_SYS_ACCEPT,
	SL_SYS_ACCEPT4,
	SL_SYS_CLOSE,
	SL_SYS_SSL_READ,  /* TLS plaintext returned by SSL_read/SSL_read_ex (bpf/tls.bpf.h) */
	SL_SYS_SSL_WRITE, /* TLS plaintext passed to SSL_write/SSL_write_ex */
};

/* Per-CPU counters (map sl_counters): src/receiver/layout.ts COUNTER_NAMES must match. */
enum sl_counter {
	SL_CNT_EVENTS = 0,        /* events written to the ring buffer */
	SL_CNT_RINGBUF_FULL = 1,  /* events lost: ring buffer full */
	SL_CNT_STASH_FULL = 2,    /* syscalls not traced: in-flight table full */
	SL_CNT_READ_FAIL = 3,     /* user memory could not be read (event sent without data) */
	SL_CNT_MMSG_PARTIAL = 4,  /* sendmmsg/recvmmsg messages past SL_MAX_MMSG not captured */
	SL_CNT_FILTERED = 5,      /* socket syscalls skipped by the pid/cgroup/port filters */
	SL_CNT_PROCS = 6,         /* process records (SL_EV_PROC) sent */
	SL_CNT_TLS_CIPHER = 7,    /* syscalls on TLS sockets not reported: ciphertext (plaintext comes from SSL_*) */
	SL_CNT_TLS_NOSOCK = 8,    /* SSL_read/SSL_write plaintext dropped: its socket was never learned */
	SL_CNT_TCP_UNTRACKED = 9, /* TCP closes not summarised: opened before the agent, filtered, or the agent's own */
	SL_CNT_TCP_TABLE_FULL = 10, /* TCP opens not recorded: sl_tcp_open full (their close is untracked) */
	SL_CNT__MAX = 16,
};

/* Roles in sl_tcp_summary.role */
#define SL_TCP_CLIENT 1
#define SL_TCP_SERVER 2
/* sl_tcp_summary.flags: the connection was open before the agent started (the iter/tcp pickup
 * remembered it, bpf/iter.bpf.h): open_ns is the pickup's time, the byte, retransmit and
 * segment counts are what passed since then, and the header names no process */
#define SL_TCP_F_PICKED 1

/*
 * Payload of SL_EV_TCP (cap_len = sizeof): the kernel's totals for one TCP connection, read
 * from struct tcp_sock when it enters TCP_CLOSE. The header's tgid/tid/comm/cgroup_id are
 * the connecting process for clients (recorded at SYN_SENT, in its context) and 0 for
 * accepted connections (userspace attributes those by sock, from the ACCEPT event).
 */
struct sl_tcp_summary {
	__u64 bytes_sent;     /* payload bytes sent, retransmissions not counted again */
	__u64 bytes_received; /* payload bytes received in order (the peer's FIN not counted) */
	__u64 open_ns;        /* CLOCK_MONOTONIC ns at SYN_SENT (client) or SYN_RECV (server) */
	__u32 srtt_us;        /* smoothed RTT in microseconds; 0: no sample */
	__u32 total_retrans;  /* segments retransmitted */
	__u32 segs_out;
	__u32 segs_in;
	__u8 role;            /* SL_TCP_CLIENT or SL_TCP_SERVER */
	__u8 old_state;       /* state left for CLOSE: SYN_SENT (2) means the connect failed */
	__u16 sk_err;         /* sk->sk_err at close: errno of a failed connect, or 0 */
	__u8 flags;           /* SL_TCP_F_* */
	__u8 _pad[3];
};
SL_STATIC_ASSERT(sizeof(struct sl_tcp_summary) == 48, "sl_tcp_summary size");

/*
 * UDP is traced only for datagrams whose remote port is listed in the sl_dns_ports map
 * (DNS); TCP is traced on every port (DNS over TCP included).
 */

/* Filter actions (values of sl_pid_filter, sl_cgroup_filter, sl_port_filter). */
#define SL_FILTER_INCLUDE 1
#define SL_FILTER_EXCLUDE 2

/* The connection a socket belongs to, as the kernel sees it at event time. */
struct sl_conn {
	__u8 saddr[16];  /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16];  /* remote address */
	__u16 sport;     /* local port, host order */
	__u16 dport;     /* remote port, host order */
	__u16 family;    /* AF_INET (2) or AF_INET6 (10) */
	__u16 _pad0;
	__u32 netns;     /* network namespace inode number */
	__u32 _pad1;
};
SL_STATIC_ASSERT(sizeof(struct sl_conn) == 48, "sl_conn size");

/*
 * Pickup of connections that predate the agent (bpf/iter.bpf.h, SEC("iter/tcp") sl_iter_tcp):
 * one run walks every TCP socket of every network namespace once and writes one struct
 * sl_pickup per socket it reports, back to back, with bpf_seq_write (the addon's runIter()
 * returns them as one buffer; src/receiver/pickup.ts decodes them). Reported: every socket
 * that can still carry data (any full-socket state but LISTEN and CLOSE) whose ports pass the
 * port filter, and LISTEN sockets whose local port passes it (or that could not be
 * remembered: SL_PICK_LISTEN_LOST). src/receiver/layout.ts PICKUP must match.
 */
#define SL_PICK_SERVER 1      /* its local port has a LISTEN socket in the same netns: accepted child */
#define SL_PICK_LISTENER 2    /* a LISTEN socket (no connection) */
#define SL_PICK_LISTEN_LOST 4 /* a LISTEN socket the listener table could not hold: roles are unsure */

struct sl_pickup {
	__u64 sock;          /* kernel address of struct sock, as sl_event.sock */
	struct sl_conn conn; /* 4-tuple, family, netns inode */
	__u32 uid;           /* socket owner uid */
	__u8 state;          /* TCP state (TCP_ESTABLISHED 1, ..., TCP_LISTEN 10) */
	__u8 flags;          /* SL_PICK_* */
	__u16 _pad;
};
SL_STATIC_ASSERT(sizeof(struct sl_pickup) == 64, "sl_pickup size");

/* Header of every ring buffer record; SL_EV_DATA records are followed by cap_len bytes. */
struct sl_event {
	__u8 type;        /* enum sl_event_type; must be first */
	__u8 direction;   /* enum sl_direction (SL_EV_DATA only) */
	__u8 syscall;     /* enum sl_syscall */
	__u8 proto;       /* IPPROTO_TCP (6) or IPPROTO_UDP (17); 0 for SL_EV_PROC */
	__u32 tgid;       /* process id */
	__u32 tid;        /* thread id */
	__s32 fd;
	__u64 sock;       /* kernel address of struct sock: an opaque connection id */
	__u64 cgroup_id;  /* cgroup v2 id of the task */
	__u64 ts_start;   /* CLOCK_MONOTONIC ns at syscall entry */
	__u64 ts_end;     /* CLOCK_MONOTONIC ns at syscall exit */
	__s64 ret;        /* bytes transferred, new fd (accept) or -errno */
	__u32 cap_len;    /* bytes of payload that follow this header */
	__u32 _pad1;
	char comm[SL_COMM_LEN];  /* the process's (thread group leader's) comm */
	struct sl_conn conn;
};
SL_STATIC_ASSERT(sizeof(struct sl_event) == 128, "sl_event size");

/*
 * Read-only configuration (.rodata holds exactly one `const volatile struct sl_config`).
 * Written by userspace between open and load (src/receiver/layout.ts encodeConfig).
 */
struct sl_config {
	__u32 self_tgid;        /* the agent: never traced */
	__u32 capture_bytes;    /* payload bytes captured per syscall, <= SL_MAX_CAPTURE */
	__u32 wakeup_bytes;     /* wake the reader when this much data is pending */
	__u8 pid_mode;          /* 0: no pid filter; 1: only pids marked INCLUDE; 2: skip pids marked EXCLUDE */
	__u8 cgroup_mode;       /* same, for cgroup ids */
	__u8 port_mode;         /* same, for local or remote ports */
	__u8 _pad0;
};
SL_STATIC_ASSERT(sizeof(struct sl_config) == 16, "sl_config size");

#define SL_MODE_OFF 0
#define SL_MODE_INCLUDE 1
#define SL_MODE_EXCLUDE 2

#endif /* SIDELIGHT_H */
