/**
 * layout.ts — the TypeScript mirror of bpf/sidelight.h: event struct offsets, enums,
 * counter names, the encoder of the read-only BPF config (struct sl_config), and the
 * little-endian encoders of BPF map keys and values.
 *
 * Owns no state. If bpf/sidelight.h changes, change this file; test/receiver/layout.test.ts
 * compares these numbers with the ones the addon compiles from the header.
 */

export const EventType = {
  Data: 1,
  Connect: 2,
  Accept: 3,
  Close: 4,
  /** payload: SL_EXE_LEN bytes of executable name, then a prefix of the environment block */
  Proc: 5,
  /** payload: struct sl_tcp_summary (TCP_SUMMARY), one per connection reaching CLOSE (bpf/tcp.bpf.h) */
  Tcp: 6,
} as const;
export type EventType = (typeof EventType)[keyof typeof EventType];

export const Direction = { Ingress: 0, Egress: 1 } as const;
export type Direction = (typeof Direction)[keyof typeof Direction];

/** enum sl_syscall, index = value. */
export const SYSCALL_NAMES = [
  '', 'read', 'write', 'readv', 'writev', 'sendto', 'recvfrom', 'sendmsg', 'recvmsg',
  'sendmmsg', 'recvmmsg', 'connect', 'accept', 'accept4', 'close', 'ssl_read', 'ssl_write',
] as const;

/** enum sl_syscall values of TLS plaintext events (uprobes on SSL_read/SSL_write, bpf/tls.bpf.h). */
export const SYS_SSL_READ = 15;
export const SYS_SSL_WRITE = 16;

/** enum sl_counter, index = value; names are exported as the `reason`/`counter` attribute. */
export const COUNTER_NAMES = [
  'events', 'ringbuf_full', 'inflight_full', 'read_fail', 'mmsg_partial', 'filtered', 'procs',
  'tls_ciphertext_skipped', 'tls_no_socket', 'tcp_untracked', 'tcp_table_full',
] as const;
export const SL_CNT_MAX = 16;

export const SL_MAX_CAPTURE = 4096;
export const SL_COMM_LEN = 16;
export const SL_EXE_LEN = 64;
export const SL_MAX_IOV = 32;
export const SL_MAX_MMSG = 4;

/** struct sl_conn (48 bytes) */
export const CONN = {
  size: 48,
  saddr: 0,
  daddr: 16,
  sport: 32,
  dport: 34,
  family: 36,
  netns: 40,
} as const;

/** struct sl_event (128 bytes); payload follows for Data events. */
export const EVENT = {
  size: 128,
  type: 0,
  direction: 1,
  syscall: 2,
  proto: 3,
  tgid: 4,
  tid: 8,
  fd: 12,
  sock: 16,
  cgroup_id: 24,
  ts_start: 32,
  ts_end: 40,
  ret: 48,
  cap_len: 56,
  comm: 64,
  conn: 80,
} as const;

/** struct sl_tcp_summary (48 bytes), the payload of Tcp events */
export const TCP_SUMMARY = {
  size: 48,
  bytes_sent: 0,
  bytes_received: 8,
  open_ns: 16,
  srtt_us: 24,
  total_retrans: 28,
  segs_out: 32,
  segs_in: 36,
  role: 40,
  old_state: 41,
  sk_err: 42,
  flags: 44,
} as const;

/** struct sl_pickup (64 bytes): one socket reported by the iter/tcp pickup (bpf/iter.bpf.h) */
export const PICKUP = {
  size: 64,
  sock: 0,
  conn: 8,
  uid: 56,
  state: 60,
  flags: 61,
} as const;

/** sl_pickup.flags (SL_PICK_*) */
export const PickFlag = { Server: 1, Listener: 2, ListenLost: 4 } as const;

/** sl_tcp_summary.role */
export const TcpRole = { Client: 1, Server: 2 } as const;

/** sl_tcp_summary.flags (SL_TCP_F_*) */
export const TcpFlag = { Picked: 1 } as const;

/** struct sl_config (16 bytes) */
export const CONFIG = {
  size: 16,
  self_tgid: 0,
  capture_bytes: 4,
  wakeup_bytes: 8,
  pid_mode: 12,
  cgroup_mode: 13,
  port_mode: 14,
} as const;

export const FilterMode = { Off: 0, Include: 1, Exclude: 2 } as const;
export type FilterMode = (typeof FilterMode)[keyof typeof FilterMode];
export const FILTER_INCLUDE = 1;
export const FILTER_EXCLUDE = 2;

export interface BpfConfig {
  selfTgid: number;
  captureBytes: number;
  wakeupBytes: number;
  pidMode: FilterMode;
  cgroupMode: FilterMode;
  portMode: FilterMode;
}

/** Encode struct sl_config for the .rodata section. */
export function encodeConfig(c: BpfConfig): Uint8Array {
  const buf = new Uint8Array(CONFIG.size);
  const dv = new DataView(buf.buffer);
  dv.setUint32(CONFIG.self_tgid, c.selfTgid, true);
  dv.setUint32(CONFIG.capture_bytes, c.captureBytes, true);
  dv.setUint32(CONFIG.wakeup_bytes, c.wakeupBytes, true);
  dv.setUint8(CONFIG.pid_mode, c.pidMode);
  dv.setUint8(CONFIG.cgroup_mode, c.cgroupMode);
  dv.setUint8(CONFIG.port_mode, c.portMode);
  return buf;
}

/** Names of the BPF object's maps and programs that userspace refers to. */
export const BPF_NAMES = {
  object: 'syscalls.bpf.o',
  ringbuf: 'sl_events',
  counters: 'sl_counters',
  inflight: 'sl_inflight',
  pidFilter: 'sl_pid_filter',
  cgroupFilter: 'sl_cgroup_filter',
  portFilter: 'sl_port_filter',
  dnsPorts: 'sl_dns_ports',
} as const;

/**
 * The TLS programs of bpf/tls.bpf.h: bare uprobes attached per binary (src/receiver/tls.ts),
 * never by attach() (pass them as its `skip`). `ret` serves every SSL_* function's return.
 */
export const TLS_PROGRAMS = {
  read: 'sl_ssl_read',
  write: 'sl_ssl_write',
  readEx: 'sl_ssl_read_ex',
  writeEx: 'sl_ssl_write_ex',
  ret: 'sl_ssl_ret',
  free: 'sl_ssl_free',
} as const;
export const TLS_PROGRAM_NAMES: string[] = Object.values(TLS_PROGRAMS);

/** The iterator programs (bpf/iter.bpf.h): run once with runIter(), never by attach() (pass them as its `skip`). */
export const ITER_PROGRAMS = { tcp: 'sl_iter_tcp' } as const;
export const ITER_PROGRAM_NAMES: string[] = Object.values(ITER_PROGRAMS);

/** BPF map keys and values are host byte order (little-endian on x86_64). */
export function leU16(n: number): Uint8Array {
  const b = new Uint8Array(2);
  new DataView(b.buffer).setUint16(0, n, true);
  return b;
}

export function leU32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
}

export function leU64(n: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, n, true);
  return b;
}

export function readLeU64(b: Uint8Array): bigint {
  return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(0, true);
}
