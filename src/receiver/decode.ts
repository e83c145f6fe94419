/**
 * decode.ts — turns one batch from the addon (repeated [u32 LE length][struct sl_event +
 * payload]) into KernelEvent objects. Payloads are views into the batch ArrayBuffer,
 * not copies: a consumer that keeps bytes beyond the call must copy them.
 *
 * Pure functions; malformed records (short, unknown type, cap_len past the record) are
 * counted in DecodeStats and skipped, never thrown.
 */
import { CONN, EVENT, EventType, SL_COMM_LEN, SL_MAX_CAPTURE } from './layout.js';

export interface Endpoint {
  address: string;
  port: number;
}

export interface ConnInfo {
  family: 4 | 6;
  local: Endpoint;
  remote: Endpoint;
  netns: number;
}

export interface KernelEvent {
  type: number;
  direction: number;
  syscall: number;
  /** IPPROTO_TCP (6) or IPPROTO_UDP (17) */
  proto: number;
  tgid: number;
  tid: number;
  fd: number;
  sock: bigint;
  cgroupId: bigint;
  tsStart: bigint;
  tsEnd: bigint;
  /** bytes transferred, new fd or -errno */
  ret: number;
  comm: string;
  conn: ConnInfo;
  /** captured payload (prefix of `ret` bytes for data events) */
  data: Uint8Array;
}

export interface DecodeStats {
  records: number;
  malformed: number;
}

function ipv4(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** RFC 5952 text form; IPv4-mapped addresses (::ffff:a.b.c.d) become plain IPv4. */
export function formatIPv6(b: Uint8Array, off: number): string {
  let mapped = true;
  for (let i = 0; i < 10; i++) if (b[off + i] !== 0) mapped = false;
  if (mapped && b[off + 10] === 0xff && b[off + 11] === 0xff) return ipv4(b, off + 12);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[off + i] ?? 0) << 8) | (b[off + i + 1] ?? 0));
  // longest run of >= 2 zero groups
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

function decodeConn(bytes: Uint8Array, dv: DataView, base: number): ConnInfo {
  const family = dv.getUint16(base + CONN.family, true);
  const v4 = family === 2;
  const local = v4 ? ipv4(bytes, base + CONN.saddr) : formatIPv6(bytes, base + CONN.saddr);
  const remote = v4 ? ipv4(bytes, base + CONN.daddr) : formatIPv6(bytes, base + CONN.daddr);
  return {
    family: v4 || !local.includes(':') ? 4 : 6,
    local: { address: local, port: dv.getUint16(base + CONN.sport, true) },
    remote: { address: remote, port: dv.getUint16(base + CONN.dport, true) },
    netns: dv.getUint32(base + CONN.netns, true),
  };
}

function decodeComm(bytes: Uint8Array, off: number): string {
  let end = off;
  while (end < off + SL_COMM_LEN && bytes[end] !== 0) end++;
  return String.fromCharCode.apply(null, bytes.subarray(off, end) as unknown as number[]);
}

/** Decode one record that starts at `off` and is `len` bytes long; undefined if malformed. */
export function decodeEvent(bytes: Uint8Array, dv: DataView, off: number, len: number): KernelEvent | undefined {
  if (len < EVENT.size) return undefined;
  const type = dv.getUint8(off + EVENT.type);
  if (type < EventType.Data || type > EventType.Tcp) return undefined;
  const capLen = dv.getUint32(off + EVENT.cap_len, true);
  if (capLen > SL_MAX_CAPTURE || EVENT.size + capLen > len) return undefined;
  return {
    type,
    direction: dv.getUint8(off + EVENT.direction),
    syscall: dv.getUint8(off + EVENT.syscall),
    proto: dv.getUint8(off + EVENT.proto),
    tgid: dv.getUint32(off + EVENT.tgid, true),
    tid: dv.getUint32(off + EVENT.tid, true),
    fd: dv.getInt32(off + EVENT.fd, true),
    sock: dv.getBigUint64(off + EVENT.sock, true),
    cgroupId: dv.getBigUint64(off + EVENT.cgroup_id, true),
    tsStart: dv.getBigUint64(off + EVENT.ts_start, true),
    tsEnd: dv.getBigUint64(off + EVENT.ts_end, true),
    ret: Number(dv.getBigInt64(off + EVENT.ret, true)),
    comm: decodeComm(bytes, off + EVENT.comm),
    conn: decodeConn(bytes, dv, off + EVENT.conn),
    data: bytes.subarray(off + EVENT.size, off + EVENT.size + capLen),
  };
}

/** Decode a whole batch; calls `onEvent` for each well-formed record. */
export function decodeBatch(batch: ArrayBuffer, onEvent: (e: KernelEvent) => void, stats: DecodeStats): void {
  const bytes = new Uint8Array(batch);
  const dv = new DataView(batch);
  let off = 0;
  while (off + 4 <= bytes.length) {
    const len = dv.getUint32(off, true);
    off += 4;
    if (len > bytes.length - off) {
      stats.malformed++;
      return;
    }
    stats.records++;
    const ev = decodeEvent(bytes, dv, off, len);
    if (ev) onEvent(ev);
    else stats.malformed++;
    off += len;
  }
  if (off !== bytes.length) stats.malformed++;
}
