/**
 * decode.ts — turns one batch from the addon (repeated [u32 LE length][struct sl_event +
 * payload]) into KernelEvent objects. Payloads are views into the batch ArrayBuffer,
 * not copies: a consumer that keeps bytes beyond the call must copy them.
 *
 * Malformed records (short, unknown type, cap_len past the record) are counted in
 * DecodeStats and skipped, never thrown. Module state: fixed-size caches of decoded comm
 * strings, sl_conn objects and repeated u64 ids (DECODE_CACHE_SLOTS slots each, hits/misses
 * in decodeCacheStats), so equal raw bytes give back the same value without allocating;
 * events may share those values and must not modify them. Main thread only.
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

/** struct sl_conn at `base` (also used by the pickup records, pickup.ts). */
export function decodeConn(bytes: Uint8Array, dv: DataView, base: number): ConnInfo {
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

// ---- per-event decode caches ---------------------------------------------------------------
// Every event carries its thread's comm, its socket's sl_conn and 64-bit ids that repeat from
// event to event; decoding them afresh (strings, objects, BigInts) was most of the receiver's
// allocation. Each cache is a fixed array of slots (direct-mapped by a hash of the raw bytes,
// a colliding entry replaces the old one), compared word by word against the raw bytes, so a
// hit is exactly what decoding would give. The values handed out are shared between events:
// ConnInfo objects and strings are never modified by consumers. Module state, main thread.

/** slots per cache (a power of two): bound of each cache */
export const DECODE_CACHE_SLOTS = 256;
const SLOT_MASK = DECODE_CACHE_SLOTS - 1;
/** words of struct sl_conn compared (44 bytes: addresses, ports, family, netns; not the tail padding) */
const CONN_WORDS = 11;
const COMM_WORDS = SL_COMM_LEN / 4;

/** hits and misses of the decode caches (self-telemetry, benchmarks) */
export const decodeCacheStats = { hits: 0, misses: 0 };

const connRaw = new Uint32Array(DECODE_CACHE_SLOTS * CONN_WORDS);
const connVal: (ConnInfo | undefined)[] = new Array<ConnInfo | undefined>(DECODE_CACHE_SLOTS).fill(undefined);
const commRaw = new Uint32Array(DECODE_CACHE_SLOTS * COMM_WORDS);
const commVal: (string | undefined)[] = new Array<string | undefined>(DECODE_CACHE_SLOTS).fill(undefined);
const u64Raw = new Uint32Array(DECODE_CACHE_SLOTS * 2);
const u64Val: bigint[] = new Array<bigint>(DECODE_CACHE_SLOTS).fill(0n);

function mix(h: number, w: number): number {
  return Math.imul(h ^ w, 0x9e3779b1) ^ (h >>> 15);
}

/**
 * The value of the `words` 32-bit words at `off`, from slot array `vals` (raw copies in
 * `raw`), decoding with `decode` on a miss. `decode` is a module-level function (no closure
 * per call: this runs per event).
 */
function cachedWords<T>(
  bytes: Uint8Array,
  dv: DataView,
  off: number,
  words: number,
  raw: Uint32Array,
  vals: (T | undefined)[],
  decode: (bytes: Uint8Array, dv: DataView, off: number) => T,
): T {
  let h = 0;
  for (let i = 0; i < words; i++) h = mix(h, dv.getUint32(off + 4 * i, true));
  const slot = (h ^ (h >>> 16)) & SLOT_MASK;
  const at = slot * words;
  const hit = vals[slot];
  if (hit !== undefined) {
    let same = true;
    for (let i = 0; i < words; i++) {
      if (raw[at + i] !== dv.getUint32(off + 4 * i, true)) {
        same = false;
        break;
      }
    }
    if (same) {
      decodeCacheStats.hits++;
      return hit;
    }
  }
  decodeCacheStats.misses++;
  for (let i = 0; i < words; i++) raw[at + i] = dv.getUint32(off + 4 * i, true);
  const v = decode(bytes, dv, off);
  vals[slot] = v;
  return v;
}

const decodeCommAt = (bytes: Uint8Array, _dv: DataView, off: number): string => decodeComm(bytes, off);

function cachedConn(bytes: Uint8Array, dv: DataView, base: number): ConnInfo {
  return cachedWords(bytes, dv, base, CONN_WORDS, connRaw, connVal, decodeConn);
}

function cachedComm(bytes: Uint8Array, dv: DataView, off: number): string {
  return cachedWords(bytes, dv, off, COMM_WORDS, commRaw, commVal, decodeCommAt);
}

/** a u64 that repeats (socket pointer, cgroup id): the same BigInt value, allocated once */
function cachedU64(dv: DataView, off: number): bigint {
  const lo = dv.getUint32(off, true);
  const hi = dv.getUint32(off + 4, true);
  if (lo === 0 && hi === 0) return 0n;
  const h = mix(mix(0, lo), hi);
  const slot = (h ^ (h >>> 16)) & SLOT_MASK;
  if (u64Raw[2 * slot] === lo && u64Raw[2 * slot + 1] === hi && u64Val[slot] !== 0n) {
    decodeCacheStats.hits++;
    return u64Val[slot]!;
  }
  decodeCacheStats.misses++;
  const v = dv.getBigUint64(off, true);
  u64Raw[2 * slot] = lo;
  u64Raw[2 * slot + 1] = hi;
  u64Val[slot] = v;
  return v;
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
    sock: cachedU64(dv, off + EVENT.sock),
    cgroupId: cachedU64(dv, off + EVENT.cgroup_id),
    tsStart: dv.getBigUint64(off + EVENT.ts_start, true),
    tsEnd: dv.getBigUint64(off + EVENT.ts_end, true),
    // s64 without a BigInt: hi * 2^32 is exact, the one addition rounds as Number(BigInt) does
    ret: dv.getInt32(off + EVENT.ret + 4, true) * 0x100000000 + dv.getUint32(off + EVENT.ret, true),
    comm: cachedComm(bytes, dv, off + EVENT.comm),
    conn: cachedConn(bytes, dv, off + EVENT.conn),
    data: bytes.subarray(off + EVENT.size, off + EVENT.size + capLen),
  };
}

/**
 * Decode the first `length` bytes of a batch (all of it by default) from byte offset `from`
 * (a record boundary); calls `onEvent` for each well-formed record. With `shouldYield` (asked
 * every 64 records) it may stop early and returns the offset to resume from; it returns
 * `length` once the batch is done.
 */
export function decodeBatchFrom(
  batch: ArrayBuffer,
  onEvent: (e: KernelEvent) => void,
  stats: DecodeStats,
  from = 0,
  shouldYield?: () => boolean,
  length = batch.byteLength,
): number {
  const bytes = new Uint8Array(batch, 0, length);
  const dv = new DataView(batch, 0, length);
  let off = from;
  let n = 0;
  while (off + 4 <= bytes.length) {
    if (shouldYield && (++n & 63) === 0 && shouldYield()) return off;
    const len = dv.getUint32(off, true);
    off += 4;
    if (len > bytes.length - off) {
      stats.malformed++;
      return bytes.length;
    }
    stats.records++;
    const ev = decodeEvent(bytes, dv, off, len);
    if (ev) onEvent(ev);
    else stats.malformed++;
    off += len;
  }
  if (off !== bytes.length) stats.malformed++;
  return bytes.length;
}

/** Decode a whole batch (its first `length` bytes); calls `onEvent` for each well-formed record. */
export function decodeBatch(batch: ArrayBuffer, onEvent: (e: KernelEvent) => void, stats: DecodeStats, length = batch.byteLength): void {
  decodeBatchFrom(batch, onEvent, stats, 0, undefined, length);
}
