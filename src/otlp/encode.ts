/**
 * encode.ts — SidelightSpans straight to an OTLP protobuf ExportTraceServiceRequest, without
 * building ReadableSpans first. The output is byte for byte what
 * @opentelemetry/otlp-transformer's ProtobufTraceSerializer makes of the same spans after
 * convert.ts's toReadableSpan (same grouping: per Resource object in first-seen order, one
 * scope; same fields, same order, same omissions; test/otlp/encode.test.ts checks this).
 *
 * Why: on the export path the ReadableSpan objects, hex-id conversions and the transformer's
 * two passes (size estimate, then write) were a third of the agent's per-span CPU. Here one
 * pass writes into a buffer (lengths reserved and patched, content moved only when a
 * length needs more bytes than reserved), ids go from hex to bytes in place, and each
 * Resource is encoded once and reused (WeakMap keyed by the Resource object; ProcessCache
 * reuses one per process, so the cache holds what the process cache holds).
 *
 * The pipeline encodes each span as it is queued (encodeSpan, into shared 64 KiB slabs) and
 * assembles a request from those bytes when a batch is sent (assembleTraceRequest).
 *
 * Spans of one connection end carry one memo object (SidelightSpan.encodeMemo, see AttrMemo):
 * the attributes they repeat from the last span are copied as bytes, not encoded again.
 *
 * Owns the current slab (spans are written into it directly), the bounded caches of encoded
 * keys and fields, and the contents of the memos it is handed. Synchronous, main thread only.
 */
import { TraceState } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import type { SidelightSpan } from '../receiver/span.js';
import { ensureIds, SCOPE } from './convert.js';

/** What the pipeline queues: a span and the Resource of its process. */
export interface SpanWithResource {
  span: SidelightSpan;
  resource: Resource;
}

const MIN_I64 = -(2 ** 63);
const MAX_I64 = 2 ** 63;
const TWO64 = 1n << 64n;

/** proto SpanKind (the API's kind + 1) */
const KIND: Record<string, number> = { internal: 1, server: 2, client: 3 };

class Writer {
  buf: Buffer;
  /** over `buf`: setBigUint64 writes a bigint without the intermediate BigInts writeBigUInt64LE makes */
  dv: DataView;
  pos = 0;

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
    this.dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length);
  }

  /** bytes copied in as they are (one memcpy) */
  put(src: Uint8Array): void {
    this.ensure(src.length);
    this.buf.set(src, this.pos);
    this.pos += src.length;
  }

  /** start over in `buf` (the old one stays with whoever points into it) */
  over(buf: Buffer): void {
    this.buf = buf;
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.length);
    this.pos = 0;
  }

  /** start over in a fresh buffer of `size` bytes (the old one stays with whoever points into it) */
  reset(size: number): void {
    this.buf = Buffer.allocUnsafeSlow(size);
    this.dv = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.length);
    this.pos = 0;
  }

  ensure(n: number): void {
    const need = this.pos + n;
    if (need <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
    this.dv = new DataView(next.buffer, next.byteOffset, next.length);
  }

  byte(b: number): void {
    this.ensure(1);
    this.buf[this.pos++] = b;
  }

  /** unsigned 32-bit varint (tags, lengths, small counts) */
  varint32(v: number): void {
    this.ensure(5);
    const buf = this.buf;
    let p = this.pos;
    v >>>= 0;
    while (v > 0x7f) {
      buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[p++] = v;
    this.pos = p;
  }

  /** int64 varint of an integral number (two's complement when negative), as the transformer writes it */
  varint64(value: number): void {
    if (value >= 0 && value <= 0xffffffff) {
      this.varint32(value);
      return;
    }
    let low: number;
    let high: number;
    const abs = Math.abs(value);
    low = abs >>> 0;
    high = (abs / 0x100000000) >>> 0;
    if (value < 0) {
      low = ~low >>> 0;
      high = ~high >>> 0;
      low = (low + 1) >>> 0;
      if (low === 0) high = (high + 1) >>> 0;
    }
    this.ensure(10);
    const buf = this.buf;
    let p = this.pos;
    while (high > 0 || low > 0x7f) {
      buf[p++] = (low & 0x7f) | 0x80;
      low = ((low >>> 7) | (high << 25)) >>> 0;
      high >>>= 7;
    }
    buf[p++] = low & 0x7f;
    this.pos = p;
  }

  fixed32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v >>> 0, this.pos);
    this.pos += 4;
  }

  fixed64(v: bigint): void {
    this.ensure(8);
    this.dv.setBigUint64(this.pos, v, true);
    this.pos += 8;
  }

  double(v: number): void {
    this.ensure(8);
    this.buf.writeDoubleLE(v, this.pos);
    this.pos += 8;
  }

  /** length-delimited UTF-8 (lone surrogates become U+FFFD, as with TextEncoder) */
  string(s: string): void {
    const len = s.length;
    if (len < 128) {
      let ascii = true;
      for (let i = 0; i < len; i++) {
        if (s.charCodeAt(i) > 127) {
          ascii = false;
          break;
        }
      }
      if (ascii) {
        this.ensure(1 + len);
        const buf = this.buf;
        let p = this.pos;
        buf[p++] = len;
        for (let i = 0; i < len; i++) buf[p++] = s.charCodeAt(i);
        this.pos = p;
        return;
      }
    }
    const n = Buffer.byteLength(s, 'utf8');
    this.varint32(n);
    this.ensure(n);
    this.pos += this.buf.write(s, this.pos, n, 'utf8');
  }

  /** small pre-encoded bytes, copied in a loop (cheaper than Buffer.copy's native call for a few dozen bytes) */
  raw(b: Uint8Array): void {
    const n = b.length;
    this.ensure(n);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) buf[p++] = b[i]!;
    this.pos = p;
  }

  bytes(b: Uint8Array): void {
    this.varint32(b.length);
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }

  /** length-delimited bytes from hex, as the transformer's hexToBinary decodes it */
  hex(h: string): void {
    const n = h.length >>> 1;
    this.varint32(n);
    this.ensure(n);
    const buf = this.buf;
    let p = this.pos;
    for (let i = 0, o = 0; o < n; i += 2, o++) buf[p++] = (HEX_VALUE[h.charCodeAt(i) & 0xff]! << 4) | HEX_VALUE[h.charCodeAt(i + 1) & 0xff]!;
    this.pos = p;
  }

  /** reserve `reserve` bytes for a length; returns where */
  start(reserve: number): number {
    this.ensure(reserve);
    const at = this.pos;
    this.pos += reserve;
    return at;
  }

  /** write the length of everything after the reservation at `at`, moving the content if it needs another size */
  finish(at: number, reserve: number): void {
    const len = this.pos - at - reserve;
    const size = len < 0x80 ? 1 : len < 0x4000 ? 2 : len < 0x200000 ? 3 : len < 0x10000000 ? 4 : 5;
    if (size !== reserve) {
      if (size > reserve) this.ensure(size - reserve);
      this.buf.copyWithin(at + size, at + reserve, this.pos);
      this.pos += size - reserve;
    }
    const buf = this.buf;
    let v = len;
    let p = at;
    while (v > 0x7f) {
      buf[p++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    buf[p] = v;
  }
}

/** hexToBinary's digit value (no validation: other characters give what it gives) */
/** a hex digit's value by its char code (what the old branchy hexVal gave for non-digits: c - 55, masked) */
const HEX_VALUE = (() => {
  const t = new Uint8Array(256);
  for (let c = 0; c < 256; c++) t[c] = (c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c - 55) & 0x0f;
  return t;
})();

function writeAnyValue(w: Writer, value: unknown): void {
  const t = typeof value;
  if (t === 'string') {
    w.byte(0x0a); // string_value = 1
    w.string(value as string);
  } else if (t === 'boolean') {
    w.byte(0x10); // bool_value = 2
    w.byte(value ? 1 : 0);
  } else if (t === 'number') {
    const v = value as number;
    if (Number.isInteger(v) && v >= MIN_I64 && v < MAX_I64) {
      w.byte(0x18); // int_value = 3
      w.varint64(v);
    } else {
      w.byte(0x21); // double_value = 4
      w.double(v);
    }
  } else if (value instanceof Uint8Array) {
    w.byte(0x3a); // bytes_value = 7
    w.bytes(value);
  } else if (Array.isArray(value)) {
    w.byte(0x2a); // array_value = 5
    const at = w.start(1);
    for (const item of value) {
      w.byte(0x0a);
      const it = w.start(1);
      writeAnyValue(w, item);
      w.finish(it, 1);
    }
    w.finish(at, 1);
  } else if (t === 'object' && value !== null) {
    w.byte(0x32); // kvlist_value = 6
    const at = w.start(1);
    const obj = value as Record<string, unknown>;
    for (const k in obj) {
      if (!Object.prototype.hasOwnProperty.call(obj, k)) continue;
      w.byte(0x0a);
      const kv = w.start(1);
      writeKeyValue(w, k, obj[k]);
      w.finish(kv, 1);
    }
    w.finish(at, 1);
  }
  // anything else: an empty AnyValue, as the transformer writes it
}

/**
 * Attribute keys come from a small fixed set: each one's encoding (length + bytes) is kept, at
 * most KEY_CACHE_MAX keys (after that, new keys are encoded every time; counted).
 */
const KEY_CACHE_MAX = 4096;
const keyBytes = new Map<string, Uint8Array>();
export const keyCacheStats = { size: 0, full: 0 };

function writeKey(w: Writer, key: string): void {
  let b = keyBytes.get(key);
  if (b === undefined) {
    if (keyBytes.size >= KEY_CACHE_MAX) {
      keyCacheStats.full++;
      w.string(key);
      return;
    }
    const k = new Writer(key.length + 8);
    k.string(key);
    b = new Uint8Array(k.buf.subarray(0, k.pos));
    keyBytes.set(key, b);
    keyCacheStats.size = keyBytes.size;
  }
  w.raw(b);
}

function writeKeyValue(w: Writer, key: string, value: unknown): void {
  w.byte(0x0a); // key = 1
  writeKey(w, key);
  w.byte(0x12); // value = 2
  const at = w.start(1);
  writeAnyValue(w, value);
  w.finish(at, 1);
}

/** one KeyValue as a length-delimited field with the tag byte `tag` (field < 16) */
function writeAttribute(w: Writer, tag: number, key: string, value: unknown): void {
  w.byte(tag);
  const at = w.start(1);
  writeKeyValue(w, key, value);
  w.finish(at, 1);
}

/** repeated KeyValue with the tag byte of its field (field < 16) */
function writeAttributes(w: Writer, attrs: Record<string, unknown>, tag: number): void {
  for (const k in attrs) {
    if (!Object.prototype.hasOwnProperty.call(attrs, k)) continue;
    writeAttribute(w, tag, k, attrs[k]);
  }
}

/**
 * Span attributes whose values repeat (method, status, scheme, protocol version, addresses,
 * routes) are written from a cache of their whole encoded field: per key at most
 * KV_VALUES_PER_KEY distinct string/number/boolean values, after which the key counts as
 * varying (ports, paths, URLs) and is encoded each time. Bounded: at most KEY_CACHE_MAX keys and
 * KV_CACHE_BYTES encoded bytes (then new values are encoded each time).
 */
const KV_VALUES_PER_KEY = 64;
const KV_CACHE_BYTES = 1 << 20;
let kvCacheBytes = 0;
interface KeyValues {
  values: Map<string | number | boolean, Uint8Array>;
  varying: boolean;
}
const kvCache = new Map<string, KeyValues>();
/** fields written from the cache (hits) or encoded (misses), keys held, keys found varying, bytes held (of KV_CACHE_BYTES) */
export const kvCacheStats = { hits: 0, misses: 0, keys: 0, varyingKeys: 0, bytes: 0 };

/**
 * The attributes of the last span encoded from one source (a connection end): keys, values and
 * where each one's bytes end in `bytes`. Spans of one connection repeat most attributes in the
 * same order (the same method, status, endpoints, route, ...), so the next span's leading run
 * of equal keys and values (===) is copied from `bytes` at once, and only the rest is encoded
 * (and remembered). Exact: a span's attribute bytes are its fields' encodings in order, each a
 * function of its key and value alone. Bounded: MEMO_MAX_KEYS keys, MEMO_MAX_BYTES bytes.
 */
interface AttrMemo {
  n: number;
  keys: string[];
  values: unknown[];
  ends: number[];
  bytes: Uint8Array;
}
const MEMO_MAX_KEYS = 64;
const MEMO_MAX_BYTES = 4096;
/** attribute fields copied from a source's memo instead of being looked up or encoded */
export const memoStats = { fields: 0, spans: 0, whole: 0 };

function asMemo(o: object): AttrMemo {
  const m = o as Partial<AttrMemo>;
  if (m.keys === undefined) {
    m.n = 0;
    m.keys = [];
    m.values = [];
    m.ends = [];
    m.bytes = new Uint8Array(256);
  }
  return m as AttrMemo;
}

function writeSpanAttributesMemo(w: Writer, attrs: Record<string, unknown>, m: AttrMemo): void {
  memoStats.spans++;
  let i = 0;
  let matching = true;
  let ok = true; // false once the memo cannot hold this span's attributes
  for (const k in attrs) {
    if (!Object.prototype.hasOwnProperty.call(attrs, k)) continue;
    const v = attrs[k];
    if (matching) {
      // primitives only: an array could be the same object with other contents
      if (i < m.n && m.keys[i] === k && m.values[i] === v && typeof v !== 'object') {
        i++;
        continue;
      }
      matching = false;
      writeMemoRun(w, m, i); // the leading run that repeats: its bytes at once
    }
    const from = w.pos;
    writeSpanAttribute(w, k, v);
    if (ok) {
      if (i >= MEMO_MAX_KEYS) ok = false;
      else {
        const at = i > 0 ? m.ends[i - 1]! : 0;
        const end = at + (w.pos - from);
        if (end > MEMO_MAX_BYTES) ok = false;
        else {
          if (end > m.bytes.length) {
            const next = new Uint8Array(Math.min(MEMO_MAX_BYTES, Math.max(end, m.bytes.length * 2)));
            next.set(m.bytes.subarray(0, at));
            m.bytes = next;
          }
          m.bytes.set(w.buf.subarray(from, w.pos), at);
          m.keys[i] = k;
          m.values[i] = v;
          m.ends[i] = end;
          i++;
        }
      }
    }
  }
  if (matching) {
    // every key repeated: the whole run (or a prefix of it, when this span has fewer keys)
    writeMemoRun(w, m, i);
    if (i === m.n) memoStats.whole++;
  }
  m.n = ok ? i : 0;
  if (!ok) {
    m.keys.length = 0;
    m.values.length = 0;
    m.ends.length = 0;
  }
}

/** the memo's first `n` attribute fields, as bytes */
function writeMemoRun(w: Writer, m: AttrMemo, n: number): void {
  if (n === 0) return;
  w.put(m.bytes.subarray(0, m.ends[n - 1]!));
  memoStats.fields += n;
}

function writeSpanAttributes(w: Writer, attrs: Record<string, unknown>): void {
  for (const k in attrs) {
    if (!Object.prototype.hasOwnProperty.call(attrs, k)) continue;
    writeSpanAttribute(w, k, attrs[k]);
  }
}

/** one span attribute field, from the cache of encoded fields where it holds it */
function writeSpanAttribute(w: Writer, k: string, v: unknown): void {
  const t = typeof v;
  let kv = kvCache.get(k);
  if (kv === undefined && kvCache.size < KEY_CACHE_MAX) {
    kv = { values: new Map(), varying: false };
    kvCache.set(k, kv);
    kvCacheStats.keys = kvCache.size;
  }
  if (kv === undefined || kv.varying || (t !== 'string' && t !== 'number' && t !== 'boolean')) {
    kvCacheStats.misses++;
    writeAttribute(w, 0x4a, k, v); // attributes = 9
    return;
  }
  const pv = v as string | number | boolean;
  let b = kv.values.get(pv);
  if (b === undefined) {
    kvCacheStats.misses++;
    const from = w.pos;
    writeAttribute(w, 0x4a, k, v); // attributes = 9
    if (kv.values.size >= KV_VALUES_PER_KEY) {
      kv.varying = true;
      for (const b of kv.values.values()) kvCacheBytes -= b.length;
      kvCacheStats.bytes = kvCacheBytes;
      kv.values.clear();
      kvCacheStats.varyingKeys++;
    } else if (kvCacheBytes + (w.pos - from) <= KV_CACHE_BYTES) {
      kv.values.set(pv, Uint8Array.prototype.slice.call(w.buf, from, w.pos));
      kvCacheBytes += w.pos - from;
      kvCacheStats.bytes = kvCacheBytes;
    }
    return;
  }
  kvCacheStats.hits++;
  w.raw(b);
}

/** fixed64 of a Unix-ns time, as writeHrTimeAsFixed64 writes toReadableSpan's HrTime of it */
function writeTime(w: Writer, ns: bigint): void {
  if (ns >= 0n && ns < TWO64) {
    w.fixed64(ns);
    return;
  }
  // out of range (never from the receiver): the transformer's arithmetic on [s, ns], exactly
  const seconds = Number(ns / 1_000_000_000n);
  const nanos = Number(ns % 1_000_000_000n);
  const lowerS = seconds & 0xffff;
  const upperS = (seconds / 0x10000) >>> 0;
  const fromLower = lowerS * 1e9;
  const fromUpper = upperS * 1e9;
  const lowC = ((fromUpper & 0xffff) * 0x10000) >>> 0;
  const sum = (fromLower >>> 0) + lowC + nanos;
  const low = sum >>> 0;
  const high = (Math.floor(fromLower / 0x100000000) + ((fromUpper / 0x10000) >>> 0) + Math.floor(sum / 0x100000000)) >>> 0;
  w.fixed64((BigInt(high) << 32n) | BigInt(low));
}

function writeSpan(w: Writer, s: SidelightSpan): void {
  ensureIds(s);
  w.byte(0x0a); // trace_id = 1
  w.hex(s.traceId!);
  w.byte(0x12); // span_id = 2
  w.hex(s.spanId!);
  if (s.traceState !== undefined) {
    const ts = new TraceState(s.traceState).serialize();
    if (ts) {
      w.byte(0x1a); // trace_state = 3
      w.string(ts);
    }
  }
  if (s.parentSpanId) {
    w.byte(0x22); // parent_span_id = 4
    w.hex(s.parentSpanId);
  }
  w.byte(0x2a); // name = 5
  w.string(s.name);
  const kind = KIND[s.kind];
  if (kind !== undefined) {
    w.byte(0x30); // kind = 6
    w.byte(kind);
  }
  w.byte(0x39); // start_time_unix_nano = 7
  writeTime(w, s.startUnixNs);
  w.byte(0x41); // end_time_unix_nano = 8
  writeTime(w, s.endUnixNs >= s.startUnixNs ? s.endUnixNs : s.startUnixNs);
  if (s.encodeMemo !== undefined) writeSpanAttributesMemo(w, s.attributes, asMemo(s.encodeMemo)); // attributes = 9
  else writeSpanAttributes(w, s.attributes);
  w.byte(0x50); // dropped_attributes_count = 10
  w.byte(0);
  w.byte(0x60); // dropped_events_count = 12
  w.byte(0);
  w.byte(0x70); // dropped_links_count = 14
  w.byte(0);
  w.byte(0x7a); // status = 15
  const st = w.start(1);
  if (s.status.code === 'error') {
    if (s.status.message) {
      w.byte(0x12); // message = 2
      w.string(s.status.message);
    }
    w.byte(0x18); // code = 3: ERROR
    w.byte(2);
  } else {
    w.byte(0x18); // code = 3: UNSET
    w.byte(0);
  }
  w.finish(st, 1);
  w.byte(0x85); // flags = 16, fixed32: tag varint 0x85 0x01
  w.byte(0x01);
  w.fixed32(((s.traceFlags! & 0xff) | 0x100 | (s.parentSpanId ? 0x200 : 0)) >>> 0);
}

const resourceBytes = new WeakMap<Resource, Buffer>();

/** `resource = 1` of a ResourceSpans, tag included, encoded once per Resource object */
function encodedResource(r: Resource): Buffer {
  let b = resourceBytes.get(r);
  if (b) return b;
  const w = new Writer(256);
  w.byte(0x0a);
  const at = w.start(1);
  writeAttributes(w, r.attributes as Record<string, unknown>, 0x0a); // attributes = 1
  w.byte(0x10); // dropped_attributes_count = 2
  w.byte(0);
  w.finish(at, 1);
  b = Buffer.from(w.buf.subarray(0, w.pos));
  if (!r.asyncAttributesPending) resourceBytes.set(r, b); // attributes still settling: encode again next time
  return b;
}

/** `scope = 1` of ScopeSpans, tag included: the agent's one instrumentation scope */
const scopeBytes: Buffer = (() => {
  const w = new Writer(64);
  w.byte(0x0a);
  const at = w.start(1);
  w.byte(0x0a); // name = 1
  w.string(SCOPE.name);
  if (SCOPE.version) {
    w.byte(0x12); // version = 2
    w.string(SCOPE.version);
  }
  w.finish(at, 1);
  return Buffer.from(w.buf.subarray(0, w.pos));
})();

/**
 * One span already encoded as the `spans = 2` field of a ScopeSpans (tag, length, Span), with
 * the Resource it belongs to. The pipeline encodes each span when it is queued, so the queue
 * holds bytes, not span objects: those die young (no promotion to V8's old generation, no
 * marking of queued spans), and the queue's byte bound counts real bytes.
 */
export interface EncodedSpan {
  resource: Resource;
  /** a slab shared by many spans (kept alive by the items that point into it) */
  chunk: Buffer;
  off: number;
  len: number;
  /** the slab's use count, when encodeSpanTo made it: see releaseEncoded() */
  slab?: Slab | undefined;
}

/**
 * Spans are encoded straight into slabs (no scratch copy): a new slab when less than SLAB_MIN_FREE
 * bytes are left. A span larger than what is left grows the writer (the writer copies the slab
 * into a larger buffer, which becomes the slab: the spans already in the old one keep it);
 * after a slab grew past SLAB, the next span starts a new one.
 *
 * Slabs are reused: each counts the spans in it not yet released (releaseEncoded(), called by
 * the pipeline once a span's batch is done with, exported or dropped). A full slab whose count
 * is back to 0 goes to a free list (at most SLAB_POOL) that new slabs are taken from, so
 * steady export allocates none (before: 64 KiB of fresh memory per ~150 spans, freed only
 * when the GC found it). A span never released just keeps its slab out of the pool.
 */
const SLAB = 64 * 1024;
const SLAB_MIN_FREE = 4 * 1024;
const SLAB_POOL = 32;
class Slab {
  readonly buf: Buffer;
  /** spans in this slab not yet released */
  live = 0;
  /** still being written into */
  open = true;
  constructor(buf: Buffer) {
    this.buf = buf;
  }
}
const freeSlabs: Buffer[] = [];
/** slabs made and reused (the self-metrics' cache counters) */
export const slabStats = { made: 0, reused: 0 };
const slabWriter = new Writer(0);
let slab = new Slab(slabWriter.buf);

function newSlab(): void {
  closeSlab(slab);
  const reused = freeSlabs.pop();
  if (reused) slabStats.reused++;
  else slabStats.made++;
  slabWriter.over(reused ?? Buffer.allocUnsafeSlow(SLAB));
  slab = new Slab(slabWriter.buf);
}

function closeSlab(s: Slab): void {
  s.open = false;
  freeIfDone(s);
}

/** a full slab none of whose spans is queued any more goes to the free list (a grown one does not) */
function freeIfDone(s: Slab): void {
  if (s.live === 0 && !s.open && s.buf.length === SLAB && freeSlabs.length < SLAB_POOL) freeSlabs.push(s.buf);
}

/** The pipeline is done with `item` (its batch was exported or dropped): its slab may be reused. Idempotent. */
export function releaseEncoded(item: EncodedSpan): void {
  const s = item.slab;
  if (s === undefined) return;
  item.slab = undefined;
  s.live--;
  freeIfDone(s);
}

/** `span` as a `spans = 2` field (ids filled in place where missing, as toReadableSpan does). */
export function encodeSpan(span: SidelightSpan, resource: Resource): EncodedSpan {
  return encodeSpanTo(span, { resource, chunk: slabWriter.buf, off: 0, len: 0 });
}

/** encodeSpan() into `out` (its chunk, off, len and slab are set): the caller's own object, no other */
export function encodeSpanTo<T extends EncodedSpan>(span: SidelightSpan, out: T): T {
  const w = slabWriter;
  if (w.buf.length - w.pos < SLAB_MIN_FREE || w.buf.length > SLAB) newSlab();
  const off = w.pos;
  try {
    w.byte(0x12); // spans = 2
    const sp = w.start(2);
    writeSpan(w, span);
    w.finish(sp, 2);
  } catch (e) {
    w.pos = off; // what was written of this span is never referenced
    throw e;
  } finally {
    // grown past the slab's end: the grown copy is the slab from here on (the old one keeps its spans)
    if (w.buf !== slab.buf) {
      closeSlab(slab);
      slab = new Slab(w.buf);
    }
  }
  out.chunk = w.buf;
  out.off = off;
  out.len = w.pos - off;
  out.slab = slab;
  slab.live++;
  return out;
}

/**
 * A request buffer kept for the next request (assembleTraceRequest's `reuse`): an export body
 * is ~1 MiB at the default batch size, and a fresh one each time is fresh pages for the
 * kernel to fault in and for the GC to find (external memory). Buffers larger than
 * REUSE_MAX_BYTES are not kept.
 */
export interface RequestBuffer {
  buf?: Buffer;
}
const REUSE_MAX_BYTES = 8 << 20;
const requestWriter = new Writer(0);

/**
 * One ExportTraceServiceRequest from encoded spans: grouped per Resource object in first-seen
 * order (the transformer's Map grouping), one scope. Returns a fresh buffer the caller owns,
 * or, with `reuse`, a view of reuse.buf (made or grown to fit): valid until reuse is used again.
 */
export function assembleTraceRequest(items: readonly EncodedSpan[], reuse?: RequestBuffer): Uint8Array {
  const groups = new Map<Resource, EncodedSpan[]>();
  let total = 0;
  for (const it of items) {
    total += it.len;
    const g = groups.get(it.resource);
    if (g) g.push(it);
    else groups.set(it.resource, [it]);
  }
  const size = total + groups.size * 64 + 64;
  const w = reuse ? requestWriter : new Writer(size);
  if (reuse) w.over(reuse.buf !== undefined && reuse.buf.length >= size ? reuse.buf : Buffer.allocUnsafeSlow(size));
  for (const [resource, spans] of groups) {
    w.byte(0x0a); // resource_spans = 1
    const rs = w.start(3);
    w.put(encodedResource(resource));
    w.byte(0x12); // scope_spans = 2
    const ss = w.start(3);
    w.put(scopeBytes);
    // TypedArray set of a view: a memcpy without Buffer.copy's argument handling
    for (const s of spans) w.put(s.chunk.subarray(s.off, s.off + s.len));
    w.finish(ss, 3);
    const schemaUrl = resource.schemaUrl;
    if (schemaUrl) {
      w.byte(0x1a); // schema_url = 3
      w.string(schemaUrl);
    }
    w.finish(rs, 3);
  }
  const out = w.buf.subarray(0, w.pos);
  if (reuse) {
    reuse.buf = w.buf.length <= REUSE_MAX_BYTES ? w.buf : undefined;
    w.over(EMPTY_BUF); // the writer keeps no reference to a body in flight
  }
  return out;
}
const EMPTY_BUF = Buffer.alloc(0);

/**
 * One ExportTraceServiceRequest for `items` (ids filled in place where missing, as
 * toReadableSpan does). Returns a fresh buffer the caller owns.
 */
export function encodeTraceRequest(items: readonly SpanWithResource[]): Uint8Array {
  return assembleTraceRequest(items.map((i) => encodeSpan(i.span, i.resource)));
}
