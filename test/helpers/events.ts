/**
 * events.ts (test helper) — builds ring-buffer batches byte for byte as the kernel side
 * lays them out (struct sl_event + payload, framed by the addon's [u32 len] prefix), so
 * decode and assembly can be tested on exact inputs without a kernel.
 */
import { CONN, EVENT, EventType, Direction } from '../../src/receiver/layout.js';

export interface FakeEvent {
  type?: number;
  direction?: number;
  syscall?: number;
  proto?: number;
  tgid?: number;
  tid?: number;
  fd?: number;
  sock?: bigint;
  cgroupId?: bigint;
  tsStart?: bigint;
  tsEnd?: bigint;
  ret?: number;
  comm?: string;
  family?: 2 | 10;
  saddr?: number[];
  daddr?: number[];
  sport?: number;
  dport?: number;
  netns?: number;
  data?: Uint8Array | string;
}

export function encodeEvent(e: FakeEvent): Uint8Array {
  const data = typeof e.data === 'string' ? new TextEncoder().encode(e.data) : (e.data ?? new Uint8Array());
  const buf = new Uint8Array(EVENT.size + data.length);
  const dv = new DataView(buf.buffer);
  dv.setUint8(EVENT.type, e.type ?? EventType.Data);
  dv.setUint8(EVENT.direction, e.direction ?? Direction.Ingress);
  dv.setUint8(EVENT.syscall, e.syscall ?? 1);
  dv.setUint8(EVENT.proto, e.proto ?? 6);
  dv.setUint32(EVENT.tgid, e.tgid ?? 100, true);
  dv.setUint32(EVENT.tid, e.tid ?? e.tgid ?? 100, true);
  dv.setInt32(EVENT.fd, e.fd ?? 5, true);
  dv.setBigUint64(EVENT.sock, e.sock ?? 0xffff0000n, true);
  dv.setBigUint64(EVENT.cgroup_id, e.cgroupId ?? 1n, true);
  dv.setBigUint64(EVENT.ts_start, e.tsStart ?? 1_000n, true);
  dv.setBigUint64(EVENT.ts_end, e.tsEnd ?? e.tsStart ?? 2_000n, true);
  dv.setBigInt64(EVENT.ret, BigInt(e.ret ?? data.length), true);
  dv.setUint32(EVENT.cap_len, data.length, true);
  buf.set(new TextEncoder().encode((e.comm ?? 'proc').slice(0, 15)), EVENT.comm);
  const c = EVENT.conn;
  dv.setUint16(c + CONN.family, e.family ?? 2, true);
  buf.set(e.saddr ?? [127, 0, 0, 1], c + CONN.saddr);
  buf.set(e.daddr ?? [127, 0, 0, 1], c + CONN.daddr);
  dv.setUint16(c + CONN.sport, e.sport ?? 8080, true);
  dv.setUint16(c + CONN.dport, e.dport ?? 40000, true);
  dv.setUint32(c + CONN.netns, e.netns ?? 4026531840, true);
  buf.set(data, EVENT.size);
  return buf;
}

/** Frame records as the addon does: [u32 LE length][record] ... */
export function batch(records: Uint8Array[]): ArrayBuffer {
  const total = records.reduce((n, r) => n + 4 + r.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  let off = 0;
  for (const r of records) {
    dv.setUint32(off, r.length, true);
    out.set(r, off + 4);
    off += 4 + r.length;
  }
  return out.buffer;
}
