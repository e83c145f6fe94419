/**
 * inject.ts — the userspace half of traceparent injection (bpf/inject.bpf.c, opt-in through
 * http.inject.enabled): the record layout of the sl_inject_events ring buffer, and the
 * tracker that gives spans exactly the ids the kernel put on the wire.
 *
 * Two kinds of records (bpf/inject.h, which this file must match):
 *  - INJECTED: a traceparent was inserted into a request written by thread `tid` on the
 *    connection with ports lport → rport, during the write syscall (ts). The CLIENT span of
 *    that request must carry these trace and span ids, or the callee's SERVER span would
 *    point at a span that does not exist.
 *  - CONTEXT: a server request without traceparent was read by `tid` on lport ← rport; the
 *    kernel chose the trace id its calls will carry. The SERVER span adopts it.
 * Records come from their own ring buffer (always woken at once), in no fixed order with the
 * syscall records of the same requests. A record matches by thread, ports and time; if it
 * has not been delivered it is read from the kernel's slots map (written before it is sent).
 * A CLIENT request claims its INJECTED record (stamped inside its write syscall) when it
 * starts, else waits for it (applied on arrival) until its span is emitted, the last claim.
 * A SERVER request claims its CONTEXT record (stamped after its read, maybe much after: the
 * thread can be held up between the two programs on sys_exit) lazily, when the first of
 * its descendants needs the trace id, bounded by that descendant's start (claimServer).
 *
 * InjectTracker: records waiting to be claimed and CLIENT requests waiting for records, keyed
 * by thread and ports, each bounded by maxRecords (oldest dropped and counted) and aged out
 * after maxAgeNs. Single-threaded (the agent's main thread).
 */
import { closeSync, openSync } from 'node:fs';
import { wrapNative, type NativeBinding, type NativeObject } from '../native.js';
import { bpfObjectPath } from '../paths.js';
import { leU16, leU32, readLeU64 } from './layout.js';
import { parseTraceparent, type TraceCtx } from './trace.js';

/** struct sl_inject_event (bpf/inject.h) */
export const INJECT_EVENT = {
  size: 96,
  type: 0,
  source: 1,
  tgid: 4,
  tid: 8,
  lport: 12,
  rport: 14,
  sock: 16,
  ts: 24,
  serverSock: 32,
  traceparent: 40,
  traceparentLen: 56,
} as const;

/** struct sl_inject_config (bpf/inject.h): the object's .rodata */
export const INJECT_CONFIG_SIZE = 8;

export const InjectEventType = { Injected: 1, Context: 2 } as const;
export const InjectSource = { New: 0, Header: 1, Thread: 2 } as const;

/** enum sl_inj_counter order (bpf/inject.h) */
export const INJECT_COUNTER_NAMES = [
  'injected',
  'notRequest',
  'hasTraceparent',
  'incomplete',
  'pushFailed',
  'ringbufFull',
  'socketsNotAdded',
  'contexts',
  'contextsAmbiguous',
] as const;
/** SL_INJ_CNT__MAX: slots of the per-CPU counter map */
export const INJECT_COUNTERS = 10;

/** Names in build/inject.bpf.o. */
export const INJECT_NAMES = {
  object: 'inject.bpf.o',
  ringbuf: 'sl_inject_events',
  counters: 'sl_inject_counters',
  ports: 'sl_inject_ports',
  cgroup: 'sl_inject_cgroup',
  socks: 'sl_inject_socks',
  sockops: 'sl_inject_sockops',
  msg: 'sl_inject_msg',
  slots: 'sl_inject_slots',
  sysExit: 'sl_inject_sys_exit',
  untrusted: 'sl_inject_untrusted',
} as const;

/** SL_INJ_SLOTS and struct sl_inj_key (bpf/inject.h) */
export const INJECT_SLOTS = 4;
export function injectSlotKey(type: number, tid: number, lport: number, rport: number): Uint8Array {
  const b = new Uint8Array(12);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, tid, true);
  dv.setUint16(4, lport, true);
  dv.setUint16(6, rport, true);
  dv.setUint8(8, type);
  return b;
}

export function encodeInjectConfig(selfTgid: number, anyPort: boolean): Uint8Array {
  const b = new Uint8Array(INJECT_CONFIG_SIZE);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, selfTgid, true);
  dv.setUint8(4, anyPort ? 1 : 0);
  return b;
}

export interface InjectRecord {
  type: number;
  source: number;
  tgid: number;
  tid: number;
  lport: number;
  rport: number;
  sock: bigint;
  ts: bigint;
  serverSock: bigint;
  traceId: string;
  /** zero for CONTEXT records */
  spanId: string;
  flags: number;
}

/** One ring-buffer record; undefined (counted by the caller) when malformed. */
export function decodeInjectRecord(rec: Uint8Array): InjectRecord | undefined {
  if (rec.length < INJECT_EVENT.size) return undefined;
  const dv = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  const type = dv.getUint8(INJECT_EVENT.type);
  if (type !== InjectEventType.Injected && type !== InjectEventType.Context) return undefined;
  const raw = rec.subarray(INJECT_EVENT.traceparent, INJECT_EVENT.traceparent + INJECT_EVENT.traceparentLen);
  const nul = raw.indexOf(0);
  const text = Buffer.from(raw.subarray(0, nul < 0 ? raw.length : nul)).toString('latin1');
  let traceId: string;
  let spanId: string;
  let flags: number;
  if (type === InjectEventType.Context) {
    const m = /^00-([0-9a-f]{32})-0{16}-([0-9a-f]{2})$/.exec(text);
    if (!m || /^0+$/.test(m[1]!)) return undefined;
    traceId = m[1]!;
    spanId = '';
    flags = parseInt(m[2]!, 16);
  } else {
    const tp = parseTraceparent(text);
    if (!tp) return undefined;
    traceId = tp.traceId;
    spanId = tp.parentId;
    flags = tp.flags;
  }
  return {
    type,
    source: dv.getUint8(INJECT_EVENT.source),
    tgid: dv.getUint32(INJECT_EVENT.tgid, true),
    tid: dv.getUint32(INJECT_EVENT.tid, true),
    lport: dv.getUint16(INJECT_EVENT.lport, true),
    rport: dv.getUint16(INJECT_EVENT.rport, true),
    sock: dv.getBigUint64(INJECT_EVENT.sock, true),
    ts: dv.getBigUint64(INJECT_EVENT.ts, true),
    serverSock: dv.getBigUint64(INJECT_EVENT.serverSock, true),
    traceId,
    spanId,
    flags,
  };
}

export interface InjectStats {
  records: number;
  malformed: number;
  /** CLIENT spans given the injected ids */
  clientsMatched: number;
  /** SERVER spans that took the trace id chosen in the kernel */
  serversAdopted: number;
  /** of the kernel's choices taken, those stamped over 1 ms after their read (held up in between) */
  contextsLate: number;
  /** CLIENT spans whose thread parent is in another trace than the injected one: no parent */
  parentMismatch: number;
  /** records never claimed (aged out or pushed out by the bound) */
  unclaimed: number;
  /** requests that stopped waiting for a record because of the bound */
  waitersDropped: number;
  /** records found in the kernel's slots map because the ring buffer had not delivered them yet */
  pulled: number;
  /** processes marked in the kernel as having untrusted threads (Go), and marks that failed */
  untrustedProcesses: number;
  untrustedNotMarked: number;
}

export interface InjectTrackerOptions {
  /** records waiting to be claimed, all kinds */
  maxRecords: number;
  /** a record not claimed after this long is dropped (counted unclaimed) */
  maxAgeNs: bigint;
  /**
   * The kernel's last records of (type, thread, ports) (map sl_inject_slots), read when a
   * claim finds none: the ring buffer may deliver a record after the syscall records of its
   * request, the map has it before the syscall returns.
   */
  pull?: (type: number, tid: number, localPort: number, remotePort: number) => Uint8Array[];
  /** http.inject.ports: CLIENT requests to other ports are never injected, so never looked up */
  clientPorts?: ReadonlySet<number>;
}

/** Bound of the set of records already claimed (duplicates from the ring and the map). */
const MAX_CONSUMED = 8192;

/** A CONTEXT record stamped this long after its read is counted `contextsLate` (held up between the programs). */
const CONTEXT_LATE_NS = 1_000_000n;

/** A request that asked for its record before the record arrived. */
interface Waiter {
  ctx: TraceCtx;
  key: string;
  from: bigint;
  to: bigint;
}

export class InjectTracker {
  private readonly opts: InjectTrackerOptions;
  /** key `${type}|${tid}|${lport}|${rport}` → records in arrival order */
  private readonly waiting = new Map<string, InjectRecord[]>();
  private count = 0;
  /** requests whose record has not arrived yet: key → FIFO; and ctx → its entry */
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly waiterOf = new Map<TraceCtx, Waiter>();
  /** requests that made their first claim (the next one is their last) */
  private readonly asked = new WeakSet<TraceCtx>();
  /** `${key}|${ts}` of records claimed, so the same record coming twice is applied once */
  private readonly consumed = new Set<string>();
  readonly stats: InjectStats = { records: 0, malformed: 0, clientsMatched: 0, serversAdopted: 0, contextsLate: 0, parentMismatch: 0, unclaimed: 0, waitersDropped: 0, pulled: 0, untrustedProcesses: 0, untrustedNotMarked: 0 };

  constructor(opts: InjectTrackerOptions) {
    this.opts = opts;
  }

  /** records waiting to be claimed */
  get size(): number {
    return this.count;
  }

  /** requests waiting for their record */
  get waiterCount(): number {
    return this.waiterOf.size;
  }

  /** One ring-buffer record (bytes valid only during the call). */
  onRecord(bytes: Uint8Array): void {
    const r = decodeInjectRecord(bytes);
    if (!r) {
      this.stats.malformed++;
      return;
    }
    this.ingest(r);
  }

  private ingest(r: InjectRecord): void {
    const key = `${r.type}|${r.tid}|${r.lport}|${r.rport}`;
    if (this.consumed.has(`${key}|${r.ts}`) || this.waiting.get(key)?.some((x) => x.ts === r.ts)) return;
    this.stats.records++;
    // a request already asked for it: apply now (before any of its children is emitted)
    const ws = this.waiters.get(key);
    const wi = ws ? ws.findIndex((w) => r.ts >= w.from && r.ts <= w.to) : -1;
    if (ws && wi >= 0) {
      const w = ws[wi]!;
      this.unwait(w);
      this.markConsumed(key, r);
      this.apply(w.ctx, r);
      return;
    }
    const q = this.waiting.get(key);
    if (q) q.push(r);
    else this.waiting.set(key, [r]);
    this.count++;
    while (this.count > this.opts.maxRecords) this.dropOldest();
  }

  private dropOldest(): void {
    const first = this.waiting.entries().next();
    if (first.done) return;
    const [key, q] = first.value;
    q.shift();
    this.count--;
    this.stats.unclaimed++;
    if (q.length === 0) this.waiting.delete(key);
  }

  /** Drop records older than maxAgeNs before `now` (CLOCK_MONOTONIC ns). */
  sweep(now: bigint): void {
    for (const [key, q] of this.waiting) {
      while (q.length > 0 && now - q[0]!.ts > this.opts.maxAgeNs) {
        q.shift();
        this.count--;
        this.stats.unclaimed++;
      }
      if (q.length === 0) this.waiting.delete(key);
    }
    for (const w of [...this.waiterOf.values()]) if (now - w.to > this.opts.maxAgeNs) this.unwait(w);
  }

  /** Remove and return the earliest record of `key` stamped within [from, to]. */
  private take(key: string, from: bigint, to: bigint): InjectRecord | undefined {
    const q = this.waiting.get(key);
    if (!q) return undefined;
    let i = -1;
    for (let j = 0; j < q.length; j++) {
      const ts = q[j]!.ts;
      if (ts >= from && ts <= to && (i < 0 || ts < q[i]!.ts)) i = j;
    }
    if (i < 0) return undefined;
    const [r] = q.splice(i, 1);
    this.count--;
    if (q.length === 0) this.waiting.delete(key);
    if (r) this.markConsumed(key, r);
    return r;
  }

  private markConsumed(key: string, r: InjectRecord): void {
    this.consumed.add(`${key}|${r.ts}`);
    if (this.consumed.size > MAX_CONSUMED) {
      const oldest = this.consumed.values().next();
      if (!oldest.done) this.consumed.delete(oldest.value);
    }
  }

  private wait(w: Waiter): void {
    const q = this.waiters.get(w.key);
    if (q) q.push(w);
    else this.waiters.set(w.key, [w]);
    this.waiterOf.set(w.ctx, w);
    while (this.waiterOf.size > this.opts.maxRecords) {
      const oldest = this.waiterOf.values().next();
      if (oldest.done) break;
      this.unwait(oldest.value);
      this.stats.waitersDropped++;
    }
  }

  private unwait(w: Waiter): void {
    this.waiterOf.delete(w.ctx);
    const q = this.waiters.get(w.key);
    if (!q) return;
    const i = q.indexOf(w);
    if (i >= 0) q.splice(i, 1);
    if (q.length === 0) this.waiters.delete(w.key);
  }

  private apply(ctx: TraceCtx, r: InjectRecord): void {
    if (r.type === InjectEventType.Context) {
      if (!ctx.remote && ctx.adoptTraceId(r.traceId)) this.stats.serversAdopted++;
    } else if (!ctx.injected && !ctx.remote) {
      applyInjection(ctx, r.traceId, r.spanId, r.flags, r.ts, this.stats);
    }
  }

  /**
   * The earliest record of (type, tid, ports) stamped within [from, to]: from those delivered,
   * else from the kernel's slots map (the ring may deliver it later).
   */
  private find(type: number, key: string, tid: number, localPort: number, remotePort: number, from: bigint, to: bigint): InjectRecord | undefined {
    let r = this.take(key, from, to);
    if (!r && this.opts.pull) {
      for (const bytes of this.opts.pull(type, tid, localPort, remotePort)) {
        const p = decodeInjectRecord(bytes);
        if (p && p.type === type && p.tid === tid && p.lport === localPort && p.rport === remotePort) this.ingest(p);
      }
      r = this.take(key, from, to);
      if (r) this.stats.pulled++;
    }
    return r;
  }

  /**
   * A CLIENT request: called when it starts and again when its span is emitted. The first
   * call waits for a record not yet arrived (applied when it comes); the second is the last
   * chance. The record is stamped inside the write, so within [from, to] exactly.
   */
  private claim(type: number, ctx: TraceCtx, tid: number, localPort: number, remotePort: number, from: bigint, to: bigint): void {
    const last = this.asked.has(ctx);
    this.asked.add(ctx);
    const w = this.waiterOf.get(ctx);
    if (w) this.unwait(w);
    const key = `${type}|${tid}|${localPort}|${remotePort}`;
    const r = this.find(type, key, tid, localPort, remotePort, from, to);
    if (r) this.apply(ctx, r);
    else if (!last) this.wait({ ctx, key, from, to });
  }

  /**
   * A SERVER request read by `tid` on localPort ← remotePort, its head read between from and
   * to: if the kernel chose its calls' trace id (a CONTEXT record), the request takes it
   * (when it is a root), before anything fixes or adopts its trace id.
   *
   * The record is stamped on the sys_exit of the head's first read by a program that runs
   * after the one recording the read (attached later), but the two can be far apart: an
   * interrupt, preemption on a preemptible kernel, the host stalling a VM's vCPU (most likely
   * what once defeated a 2 ms slack here in CI, on a PREEMPT_NONE guest). No slack after the
   * read is safe, and a wide one could take the next request's record. What bounds it exactly
   * is causality: it is stamped before the thread goes on, so before anything the request
   * causes starts. So the claim is lazy: `ctx.settle` takes the earliest record in
   * [from, bound], called with the start of each descendant that resolves or adopts a trace
   * id (TraceCtx.settleAncestors), and at the request's span with `until` (when its response
   * began: the next request on the connection is read after that). The bound is the earliest
   * one given, so the window stays exact when the record is delivered later still.
   */
  claimServer(ctx: TraceCtx, tid: number, localPort: number, remotePort: number, from: bigint, to: bigint, until?: bigint): void {
    if (ctx.remote) return;
    if (until === undefined) {
      if (ctx.settle) return;
      const key = `${InjectEventType.Context}|${tid}|${localPort}|${remotePort}`;
      // the earliest bound seen: a later one could let in the next request's record
      let limit: bigint | undefined;
      ctx.settle = (bound: bigint): void => {
        if (limit === undefined || bound < limit) limit = bound;
        const r = this.find(InjectEventType.Context, key, tid, localPort, remotePort, from, limit);
        if (!r) return;
        ctx.settle = undefined;
        if (r.ts - to > CONTEXT_LATE_NS) this.stats.contextsLate++;
        this.apply(ctx, r);
      };
      return;
    }
    ctx.settle?.(until > to ? until : to);
    ctx.settle = undefined;
  }

  /**
   * A CLIENT request written by `tid` on localPort → remotePort, its head's write between from
   * and to: if Sidelight injected a traceparent into it, the span takes those ids. Its
   * parent (the request its thread serves) stays only if it is in the same trace (or, a
   * root, adopts it); else the span has no parent (counted).
   */
  claimClient(ctx: TraceCtx, tid: number, localPort: number, remotePort: number, from: bigint, to: bigint): boolean {
    if (this.opts.clientPorts?.size && !this.opts.clientPorts.has(remotePort)) return false;
    if (!ctx.injected && !ctx.remote) this.claim(InjectEventType.Injected, ctx, tid, localPort, remotePort, from, to);
    return ctx.injected !== undefined;
  }
}

/**
 * Give `ctx` the injected ids (stamped at `ts`, inside its write); keep its parent only when
 * the trees agree. Its ancestors take the kernel's choice for them first: it was stamped
 * before this write.
 */
export function applyInjection(ctx: TraceCtx, traceId: string, spanId: string, flags: number, ts: bigint, stats: InjectStats): void {
  ctx.spanId = spanId;
  ctx.injected = { traceId, flags };
  stats.clientsMatched++;
  if (!ctx.parent) return;
  ctx.settleAncestors(ts);
  if (!ctx.parent.adoptTraceId(traceId)) {
    ctx.parent = undefined;
    stats.parentMismatch++;
  }
}

export interface InjectionOptions {
  /** the agent's pid: never injected */
  selfTgid: number;
  /** absolute path of the cgroup v2 directory (cgroup2 mount + http.inject.cgroup) */
  cgroupPath: string;
  /** remote ports; empty: every port */
  ports: number[];
  /** poll timeout of the record ring (records always wake the reader at once) */
  pollIntervalMs: number;
  onError: (err: Error) => void;
}

/**
 * The loaded inject.bpf.o: opened, configured, attached (tracepoint by SEC(), sockops on the
 * cgroup, sk_msg on the sockhash) and polled into an InjectTracker. close() detaches
 * everything; the kernel restores the sockets' own send path.
 */
export class Injection {
  readonly tracker: InjectTracker;
  private readonly obj: NativeObject;
  private sweep: NodeJS.Timeout | undefined;
  private readonly untrusted = new Set<number>();

  private constructor(obj: NativeObject, tracker: InjectTracker) {
    this.obj = obj;
    this.tracker = tracker;
  }

  static start(native: NativeBinding, o: InjectionOptions): Injection {
    const rodata = encodeInjectConfig(o.selfTgid, o.ports.length === 0);
    const obj = wrapNative(() => native.open(bpfObjectPath(INJECT_NAMES.object), rodata, {}));
    const tracker = new InjectTracker({
      maxRecords: 16384,
      maxAgeNs: 30_000_000_000n,
      clientPorts: new Set(o.ports),
      pull: (type, tid, lport, rport) => {
        const slots = obj.mapLookup(INJECT_NAMES.slots, injectSlotKey(type, tid, lport, rport))?.[0];
        if (!slots) return [];
        const out: Uint8Array[] = [];
        for (let i = 0; i < INJECT_SLOTS; i++) out.push(slots.subarray(i * INJECT_EVENT.size, (i + 1) * INJECT_EVENT.size));
        return out;
      },
    });
    const inj = new Injection(obj, tracker);
    try {
      const counters = obj.mapInfo(INJECT_NAMES.counters).maxEntries;
      if (counters !== INJECT_COUNTERS) throw new Error(`${INJECT_NAMES.object}: ${counters} counters, inject.ts knows ${INJECT_COUNTERS}: rebuild (make setup)`);
      for (const p of o.ports) obj.mapUpdate(INJECT_NAMES.ports, leU16(p), Uint8Array.of(1));
      let fd: number;
      try {
        fd = openSync(o.cgroupPath, 'r');
      } catch (e) {
        throw new Error(`http.inject.cgroup: ${o.cgroupPath}: ${(e as Error).message}`, { cause: e });
      }
      try {
        wrapNative(() => obj.mapUpdate(INJECT_NAMES.cgroup, leU32(0), leU32(fd)));
      } finally {
        closeSync(fd);
      }
      const failed = obj.attach([INJECT_NAMES.sockops, INJECT_NAMES.msg]).filter((r) => !r.ok);
      if (failed.length > 0) throw new Error(`inject: attach failed: ${failed.map((r) => `${r.name}: ${r.error}`).join('; ')}`);
      wrapNative(() => obj.attachSockMap(INJECT_NAMES.msg, INJECT_NAMES.socks));
      wrapNative(() => obj.attachCgroup(INJECT_NAMES.sockops, o.cgroupPath));
      obj.start(INJECT_NAMES.ringbuf, o.pollIntervalMs, 1 << 20, (batch) => inj.onBatch(batch), o.onError);
    } catch (e) {
      obj.close();
      throw e;
    }
    inj.sweep = setInterval(() => tracker.sweep(process.hrtime.bigint()), 5000);
    inj.sweep.unref();
    return inj;
  }

  private onBatch(batch: ArrayBuffer): void {
    const bytes = new Uint8Array(batch);
    const dv = new DataView(batch);
    for (let off = 0; off + 4 <= bytes.length; ) {
      const len = dv.getUint32(off, true);
      if (off + 4 + len > bytes.length) {
        this.tracker.stats.malformed++;
        return;
      }
      this.tracker.onRecord(bytes.subarray(off + 4, off + 4 + len));
      off += 4 + len;
    }
  }

  /**
   * A process whose threads do not identify a request (a Go binary): its requests get a new
   * trace id and its reads record no thread context (bounded LRU map in the kernel).
   */
  markUntrusted(tgid: number): void {
    if (this.untrusted.has(tgid)) return;
    this.untrusted.add(tgid);
    if (this.untrusted.size > 4096) this.untrusted.delete(this.untrusted.values().next().value!);
    try {
      this.obj.mapUpdate(INJECT_NAMES.untrusted, leU32(tgid), Uint8Array.of(1));
      this.tracker.stats.untrustedProcesses++;
    } catch {
      this.tracker.stats.untrustedNotMarked++;
    }
  }

  /** Kernel counters (enum sl_inj_counter) summed over CPUs, and the tracker's. */
  stats(): Record<string, number> {
    const out: Record<string, number> = {};
    INJECT_COUNTER_NAMES.forEach((name, i) => {
      let sum = 0n;
      for (const v of this.obj.mapLookup(INJECT_NAMES.counters, leU32(i)) ?? []) sum += readLeU64(v);
      out[name] = Number(sum);
    });
    return { ...out, ...this.tracker.stats, waiting: this.tracker.size, waiters: this.tracker.waiterCount };
  }

  close(): void {
    if (this.sweep) clearInterval(this.sweep);
    this.obj.stop();
    this.obj.close();
  }
}
