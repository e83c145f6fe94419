/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inject.h — the contract between bpf/inject.bpf.c (traceparent injection, opt-in) and
 * src/receiver/inject.ts (which must match every constant and offset here; the sizes are
 * pinned by _Static_assert below and by test/receiver/inject.test.ts).
 *
 * Only types and constants: no maps, no helpers. Explicit padding (-Wpadded -Werror).
 */
#ifndef SIDELIGHT_INJECT_H
#define SIDELIGHT_INJECT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#ifdef __cplusplus
#define SL_INJ_STATIC_ASSERT static_assert
#else
#define SL_INJ_STATIC_ASSERT _Static_assert
#endif

/* Bytes of an outgoing message (and of an incoming request) looked at; power of two. */
#define SL_INJ_SCAN 1024
/* The header inserted after the request line: "traceparent: 00-<32>-<16>-<2>\r\n". */
#define SL_INJ_HDR_LEN 70
/* Length of the traceparent value "00-<32 hex>-<16 hex>-<2 hex>". */
#define SL_INJ_TP_LEN 55

/* Record types in the sl_inject_events ring buffer. */
enum sl_inj_event_type {
	SL_INJ_EV_INJECTED = 1, /* a traceparent was inserted into an outgoing request */
	SL_INJ_EV_CONTEXT = 2,  /* a thread read a request without traceparent: the trace id its calls get */
};

/* Where the injected trace id came from (sl_inject_event.source). */
enum sl_inj_source {
	SL_INJ_SRC_NEW = 0,     /* no request being served on the thread (or several): a new trace */
	SL_INJ_SRC_HEADER = 1,  /* the traceparent of the request the thread is serving */
	SL_INJ_SRC_THREAD = 2,  /* generated for the request the thread is serving (it had none) */
};

/* Per-CPU counters (map sl_inject_counters): src/receiver/inject.ts INJECT_COUNTER_NAMES. */
enum sl_inj_counter {
	SL_INJ_CNT_INJECTED = 0,      /* headers inserted */
	SL_INJ_CNT_NOT_REQUEST = 1,   /* messages that do not start an HTTP/1 request (bodies, other protocols) */
	SL_INJ_CNT_HAS_TP = 2,        /* requests already carrying traceparent: untouched */
	SL_INJ_CNT_INCOMPLETE = 3,    /* request head not complete within the message / SL_INJ_SCAN */
	SL_INJ_CNT_PUSH_FAIL = 4,     /* bpf_msg_push_data/pull_data failed: not injected */
	SL_INJ_CNT_RINGBUF_FULL = 5,  /* injected, but the record was lost (span ids will not match) */
	SL_INJ_CNT_SOCKS_FULL = 6,    /* client sockets not added to sl_inject_socks */
	SL_INJ_CNT_CTX = 7,           /* server requests recorded as a thread's context */
	SL_INJ_CNT_CTX_AMBIGUOUS = 8, /* a thread read a request while another was in flight on it */
	SL_INJ_CNT__MAX = 10,
};

/*
 * INJECTED: one injection, so userspace gives the CLIENT span exactly these ids; sock, ports
 * and ts are the client connection's and the sending syscall's.
 * CONTEXT: the trace id chosen for a server request read without traceparent (the SERVER
 * span adopts it); sock and ports are the server connection's, ts just after the read;
 * traceparent holds "00-<trace id>-0000000000000000-<flags>".
 */
struct sl_inject_event {
	__u8 type;          /* enum sl_inj_event_type; must be first */
	__u8 source;        /* enum sl_inj_source (INJECTED) */
	__u8 _pad0[2];
	__u32 tgid;
	__u32 tid;
	__u16 lport;        /* local port, host order */
	__u16 rport;        /* remote port, host order */
	__u64 sock;         /* kernel address of the struct sock (= sl_event.sock) */
	__u64 ts;           /* CLOCK_MONOTONIC ns */
	__u64 server_sock;  /* INJECTED: the server connection whose request gave the context, 0 if none */
	char traceparent[56]; /* NUL-terminated */
};
SL_INJ_STATIC_ASSERT(sizeof(struct sl_inject_event) == 96, "sl_inject_event size");

/*
 * The last SL_INJ_SLOTS records of each (thread, connection, type) are also kept in the map
 * sl_inject_slots, written before the syscall returns: userspace reads them when it meets
 * the request in the syscall records, so a record the ring buffer delivers late is not lost.
 */
#define SL_INJ_SLOTS 4

struct sl_inj_key {
	__u32 tid;
	__u16 lport;
	__u16 rport;
	__u8 type;          /* enum sl_inj_event_type */
	__u8 _pad[3];
};
SL_INJ_STATIC_ASSERT(sizeof(struct sl_inj_key) == 12, "sl_inj_key size");

struct sl_inj_slots {
	struct sl_inject_event ev[SL_INJ_SLOTS]; /* ev[next % SL_INJ_SLOTS] is written next */
	__u32 next;
	__u32 _pad;
};
SL_INJ_STATIC_ASSERT(sizeof(struct sl_inj_slots) == 392, "sl_inj_slots size");

/* .rodata of inject.bpf.o: written between open and load. */
struct sl_inject_config {
	__u32 self_tgid;  /* the agent: never injected */
	__u8 any_port;    /* 1: every remote port; 0: only ports in sl_inject_ports */
	__u8 _pad0[3];
};
SL_INJ_STATIC_ASSERT(sizeof(struct sl_inject_config) == 8, "sl_inject_config size");

#endif /* SIDELIGHT_INJECT_H */
