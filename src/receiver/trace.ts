/**
 * trace.ts — how Sidelight builds traces out of single requests.
 *
 * Every request gets a TraceCtx when it starts (span id assigned then). Its trace id and
 * parent are resolved only when its span is emitted, by following `parent` references, so
 * links that arrive late (the kernel may report a server's read before the client's
 * write returns) still land. Three sources of parents, strongest first:
 *
 *  1. W3C `traceparent` on an incoming request: the SERVER span joins the caller's trace
 *     as a child of the caller's span (sampled flag kept, `tracestate` carried). Invalid
 *     headers are ignored, per W3C (wrong length, non-hex, all-zero ids, version ff).
 *  2. Both ends on this node: a CLIENT request and the SERVER request on the other end of
 *     the same TCP connection (matched by the 4-tuple, and the network namespace for
 *     loopback addresses) — the server span becomes the child of the client span. Each
 *     request on a keep-alive connection is matched in order, so reuse by requests of
 *     different traces never merges them.
 *  3. In-process: a CLIENT request written by thread T while exactly one SERVER request is
 *     being served on T (read by T, response not yet written) is its child. Not applied
 *     (no parent, counted) when several are active on T, when the process is a Go binary
 *     (goroutines move between threads), or when the process has been seen answering a
 *     request on another thread than the one that read it (thread migration).
 *     A lookup made on a worker-pool thread (Node's libuv pool: `libuv-worker`) on behalf of
 *     a request is its child only when the process is serving exactly one request then.
 *
 * Otherwise the span starts a new trace (random trace id, flags sampled|random).
 * With traceparent injection on (inject.ts, `injections`), a CLIENT span takes the ids the
 * kernel put on the wire, and a root SERVER span adopts the trace id the kernel chose for it
 * (adoptTraceId), before anything of its trace is emitted: a descendant resolving its ids
 * first lets its ancestors settle the kernel's choice (settleAncestors).
 * TraceRegistry is shared by all connections of the receiver; single-threaded. The link
 * table and the per-thread table are bounded, with counters.
 */
import { randomFillSync } from 'node:crypto';

/** W3C trace-flags bits */
export const FLAG_SAMPLED = 0x01;
export const FLAG_RANDOM = 0x02;

export interface TraceParent {
  traceId: string;
  parentId: string;
  flags: number;
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;

/** Parse a `traceparent` header; undefined when invalid (then it must be ignored). */
export function parseTraceparent(value: string | undefined): TraceParent | undefined {
  if (!value) return undefined;
  const parts = value.trim().split('-');
  if (parts.length < 4) return undefined;
  const [version, traceId, parentId, flags] = parts as [string, string, string, string];
  if (!/^[0-9a-f]{2}$/.test(version) || version === 'ff') return undefined;
  if (version === '00' && parts.length !== 4) return undefined;
  if (!HEX32.test(traceId) || !HEX16.test(parentId) || !/^[0-9a-f]{2}$/.test(flags)) return undefined;
  if (/^0+$/.test(traceId) || /^0+$/.test(parentId)) return undefined;
  return { traceId, parentId, flags: parseInt(flags, 16) };
}

export function formatTraceparent(traceId: string, spanId: string, flags: number): string {
  return `00-${traceId}-${spanId}-${(flags & 0xff).toString(16).padStart(2, '0')}`;
}

const pool = Buffer.alloc(4096);
let poolOff = pool.length;
/** `pool` as hex, made once per refill: an id is a slice of it (one toString per ~300 ids, not per id) */
let poolHex = '';

/** Random bytes from a CSPRNG as lowercase hex, never all zero. */
export function randomId(bytes: 8 | 16): string {
  for (;;) {
    if (poolOff + bytes > pool.length) {
      randomFillSync(pool);
      poolHex = pool.toString('hex');
      poolOff = 0;
    }
    const from = poolOff;
    poolOff += bytes;
    for (let i = from; i < poolOff; i++) if (pool[i] !== 0) return poolHex.slice(2 * from, 2 * poolOff);
  }
}

/** The trace identity of one request, created when the request starts. */
export class TraceCtx {
  /** replaced only by an injected traceparent's span id (applyInjection in inject.ts) */
  spanId = randomId(8);
  /** own trace id, used when there is no parent (a root may adopt an injected one); drawn when first needed */
  private rootId: string | undefined;
  private get rootTraceId(): string {
    return (this.rootId ??= randomId(16));
  }
  private set rootTraceId(id: string) {
    this.rootId = id;
  }
  /** a parent on this node (resolved at emission) */
  parent: TraceCtx | undefined;
  /** a remote parent from an incoming traceparent (wins over `parent`) */
  remote: TraceParent | undefined;
  tracestate: string | undefined;
  /** trace id and flags of the traceparent Sidelight injected into this (client) request */
  injected: { traceId: string; flags: number } | undefined;
  /** true once resolve() ran (the span was emitted): its trace id can no longer change */
  resolved = false;
  /** how the parent was found, for self-telemetry and tests */
  source: 'root' | 'traceparent' | 'link' | 'thread' | 'pool' = 'root';
  /**
   * Set while this (server) request may still take the trace id the kernel chose for it
   * (inject.ts claimServer): takes it if the kernel's record was stamped before `boundNs`,
   * and then unsets itself. Called whenever something needs this request's trace id.
   */
  settle: ((boundNs: bigint) => void) | undefined = undefined;

  /**
   * Before a descendant that started at `startNs` (CLOCK_MONOTONIC) fixes or adopts the trace
   * id: the ancestors still waiting for the kernel's choice take it now. Anything a request
   * causes starts after the read of its head returned, so after the kernel stamped its
   * choice: `startNs` bounds the record exactly, however late it is delivered.
   */
  settleAncestors(startNs: bigint): void {
    for (let c = this.parent, depth = 0; c !== undefined && depth < 64; c = c.parent, depth++) {
      c.settle?.(startNs);
      if (c.remote || c.injected) break;
    }
  }

  /**
   * A root request (no traceparent, no parent, not yet emitted) takes `traceId` as its trace
   * id: the one Sidelight injected into a call it made. True when this request's trace id
   * now is `traceId` (adopted, or already equal).
   */
  adoptTraceId(traceId: string): boolean {
    const top = this.top();
    if (top.remote) return top.remote.traceId === traceId;
    if (top.injected) return top.injected.traceId === traceId;
    if (top.rootTraceId === traceId) return true;
    if (top.resolved || top.adopted) return false;
    top.rootTraceId = traceId;
    top.adopted = true;
    return true;
  }

  private adopted = false;

  /** the end of the `parent` chain (bounded depth) */
  private top(): TraceCtx {
    let top: TraceCtx = this;
    for (let depth = 0; depth < 64 && !top.remote && !top.injected && top.parent; depth++) top = top.parent;
    return top;
  }

  /**
   * Resolve ids now; follows `parent` references (bounded depth). `startNs`: when the
   * request started (CLOCK_MONOTONIC), to settle its ancestors first (settleAncestors).
   */
  resolve(startNs?: bigint): { traceId: string; spanId: string; parentSpanId: string | undefined; flags: number; tracestate: string | undefined } {
    if (startNs !== undefined && this.parent) this.settleAncestors(startNs);
    this.resolved = true;
    // one shape, absent fields undefined (no spreads: this runs once per span)
    const tracestate = this.tracestate;
    if (this.remote) {
      return { traceId: this.remote.traceId, spanId: this.spanId, parentSpanId: this.remote.parentId, flags: this.remote.flags, tracestate };
    }
    if (this.injected) {
      return { traceId: this.injected.traceId, spanId: this.spanId, parentSpanId: this.parent?.spanId, flags: this.injected.flags, tracestate };
    }
    if (this.parent) {
      const top = this.parent.top();
      top.resolved = true;
      const root = top.remote
        ? { traceId: top.remote.traceId, flags: top.remote.flags }
        : top.injected
          ? top.injected
          : { traceId: top.rootTraceId, flags: FLAG_SAMPLED | FLAG_RANDOM };
      return { traceId: root.traceId, spanId: this.spanId, parentSpanId: this.parent.spanId, flags: root.flags, tracestate };
    }
    return { traceId: this.rootTraceId, spanId: this.spanId, parentSpanId: undefined, flags: FLAG_SAMPLED | FLAG_RANDOM, tracestate };
  }
}

export interface TraceStats {
  /** server spans that joined a caller's trace through traceparent */
  fromTraceparent: number;
  invalidTraceparent: number;
  /** server spans linked to a client span of this node (both ends seen) */
  linked: number;
  /** client spans parented to the server request active on their thread */
  threadParented: number;
  /** lookups on a worker-pool thread parented to the one request their process served */
  poolParented: number;
  /** client spans left without parent because several requests were active on the thread */
  ambiguous: number;
  /** client spans left without parent because the process's threads cannot be trusted */
  untrustedThreads: number;
  linkTableEvicted: number;
}

/** traceparent injection (inject.ts InjectTracker): ids the kernel chose for requests. */
export interface InjectionClaims {
  claimServer(ctx: TraceCtx, tid: number, localPort: number, remotePort: number, from: bigint, to: bigint, until?: bigint): void;
  claimClient(ctx: TraceCtx, tid: number, localPort: number, remotePort: number, from: bigint, to: bigint): boolean;
}

export interface TraceRegistryOptions {
  /** bound of client requests waiting for their server end (link table) */
  maxLinks: number;
  /** bound of threads tracked with active server requests */
  maxThreads: number;
  /** is this process a Go binary (or otherwise unfit for thread-based parenting)? */
  threadsUntrusted?: (tgid: number) => boolean;
  /** is this thread a worker-pool thread (Node's libuv pool)? asked only when needed */
  isPoolThread?: (tgid: number, tid: number) => boolean;
}

/** One side's view of a TCP connection, as the link key needs it. */
export interface Tuple {
  localAddr: string;
  localPort: number;
  remoteAddr: string;
  remotePort: number;
  netns: number;
  /** memo of linkKey() for this tuple's own end as client / as server (filled here; a caller may reuse one tuple per connection) */
  keyAsClient?: string;
  keyAsServer?: string;
}

/**
 * Unmatched requests kept per connection. The race these queues cover (one end reported
 * before the other) spans one or two requests; a connection whose other end is on another
 * node would otherwise grow its queue with every keep-alive request.
 */
const MAX_PER_CONNECTION = 8;

/** A loopback address: it names a different endpoint in every network namespace. */
export function isLoopback(addr: string): boolean {
  return addr.startsWith('127.') || addr === '::1';
}

function dropFrom(m: Map<number, TraceCtx[]>, key: number, ctx: TraceCtx): void {
  const list = m.get(key);
  if (!list) return;
  const i = list.indexOf(ctx);
  if (i === 0) list.shift();
  else if (i > 0) list.splice(i, 1);
  if (list.length === 0) m.delete(key);
}

/**
 * One number for (process, thread): thread ids are below 2^22 (PID_MAX_LIMIT), so the key is
 * exact (below 2^44). A thread id reused by another process (ids wrap at pid_max, 32768 on
 * small machines) is not the thread whose request may still be listed as active.
 */
function threadKey(tgid: number, tid: number): number {
  return tgid * 4194304 + tid;
}

/** Key of a connection as the client sees it: client endpoint → server endpoint. */
function linkKey(client: string, clientPort: number, server: string, serverPort: number, netns: number): string {
  const ns = isLoopback(client) || isLoopback(server) ? `${netns}|` : '';
  return `${ns}${client}:${clientPort}>${server}:${serverPort}`;
}

export class TraceRegistry {
  private readonly opts: TraceRegistryOptions;
  /** client requests not yet matched with their server end: key → FIFO */
  private readonly links = new Map<string, TraceCtx[]>();
  /** server requests seen before their client end: key (as the client sees it) → FIFO */
  private readonly pendingServers = new Map<string, TraceCtx[]>();
  private linkCount = 0;
  /** server requests being served, per thread (threadKey: a reused thread id is another thread) */
  private readonly active = new Map<number, TraceCtx[]>();
  /** the same, per process (for work handed to a worker pool) */
  private readonly activeByProcess = new Map<number, TraceCtx[]>();
  /** processes seen answering on another thread than the one that read the request */
  private readonly migrating = new Set<number>();
  /** set by the agent when traceparent injection is on */
  injections: InjectionClaims | undefined;
  readonly stats: TraceStats = {
    fromTraceparent: 0,
    invalidTraceparent: 0,
    linked: 0,
    threadParented: 0,
    poolParented: 0,
    ambiguous: 0,
    untrustedThreads: 0,
    linkTableEvicted: 0,
  };

  constructor(opts: TraceRegistryOptions) {
    this.opts = opts;
  }

  /**
   * A server request started (its head was read by thread `tid` of `tgid`).
   * `traceparent`/`tracestate` are the request's headers, if any.
   */
  serverStart(t: Tuple, tgid: number, tid: number, traceparent: string | undefined, tracestate: string | undefined): TraceCtx {
    const ctx = new TraceCtx();
    // one entry of the connection's FIFO per request, whatever wins, so keep-alive stays aligned
    const key = this.serverKey(t);
    const client = this.shift(this.links, key);
    if (client) this.linkCount--;
    const tp = parseTraceparent(traceparent);
    if (tp) {
      ctx.remote = tp;
      ctx.source = 'traceparent';
      if (tracestate !== undefined) ctx.tracestate = tracestate;
      this.stats.fromTraceparent++;
    } else {
      if (traceparent !== undefined) this.stats.invalidTraceparent++;
      if (client) {
        ctx.parent = client;
        ctx.source = 'link';
        this.stats.linked++;
      }
    }
    if (!client) {
      // the client end may still come (its write can be reported after our read)
      const q = this.pendingServers.get(key);
      if (!q) this.pendingServers.set(key, [ctx]);
      else if (q.push(ctx) > MAX_PER_CONNECTION) q.shift();
      while (this.pendingServers.size > this.opts.maxLinks) {
        const oldest = this.pendingServers.keys().next();
        if (oldest.done) break;
        this.pendingServers.delete(oldest.value);
        this.stats.linkTableEvicted++;
      }
    }
    this.pushActive(this.active, threadKey(tgid, tid), ctx);
    this.pushActive(this.activeByProcess, tgid, ctx);
    return ctx;
  }

  private shift(m: Map<string, TraceCtx[]>, key: string): TraceCtx | undefined {
    const q = m.get(key);
    const v = q?.shift();
    if (q && q.length === 0) m.delete(key);
    return v;
  }

  private serverKey(t: Tuple): string {
    return (t.keyAsServer ??= linkKey(t.remoteAddr, t.remotePort, t.localAddr, t.localPort, t.netns));
  }

  private clientKey(t: Tuple): string {
    return (t.keyAsClient ??= linkKey(t.localAddr, t.localPort, t.remoteAddr, t.remotePort, t.netns));
  }

  /** The server request's response was written by thread `tid`: it is no longer active. */
  serverEnd(ctx: TraceCtx, tgid: number, readTid: number, writeTid: number): void {
    if (readTid !== writeTid) this.migrating.add(tgid);
    this.dropActive(ctx, tgid, readTid);
  }

  /**
   * Work done by thread `tid` of `tgid` that is not an HTTP client request (a DNS lookup):
   * the child of the server request active on that thread, under the same rules.
   */
  threadChild(tgid: number, tid: number): TraceCtx {
    const ctx = new TraceCtx();
    if (this.active.get(threadKey(tgid, tid))?.length) {
      this.parentByThread(ctx, tgid, tid);
      return ctx;
    }
    // a pool thread working for its process: unambiguous only with one request in flight
    const inProcess = this.activeByProcess.get(tgid);
    if (inProcess?.length && this.opts.isPoolThread?.(tgid, tid)) {
      if (this.migrating.has(tgid) || this.opts.threadsUntrusted?.(tgid)) this.stats.untrustedThreads++;
      else if (inProcess.length > 1) this.stats.ambiguous++;
      else {
        ctx.parent = inProcess[0];
        ctx.source = 'pool';
        this.stats.poolParented++;
      }
    }
    return ctx;
  }

  private parentByThread(ctx: TraceCtx, tgid: number, tid: number): void {
    const list = this.active.get(threadKey(tgid, tid));
    if (!list || list.length === 0) return;
    if (this.migrating.has(tgid) || this.opts.threadsUntrusted?.(tgid)) {
      this.stats.untrustedThreads++;
    } else if (list.length > 1) {
      this.stats.ambiguous++;
    } else {
      ctx.parent = list[0];
      ctx.source = 'thread';
      this.stats.threadParented++;
    }
  }

  /** A client request started (its head was written by thread `tid` of `tgid`). */
  clientStart(t: Tuple, tgid: number, tid: number, outgoingTraceparent: string | undefined): TraceCtx {
    const ctx = new TraceCtx();
    const tp = parseTraceparent(outgoingTraceparent);
    if (tp) {
      // the process propagates context itself (an SDK): join its trace under its span
      ctx.remote = tp;
      ctx.source = 'traceparent';
    } else {
      this.parentByThread(ctx, tgid, tid);
    }
    // the server end on this node may have been seen first; else wait for it
    const key = this.clientKey(t);
    const server = this.shift(this.pendingServers, key);
    if (server) {
      if (!server.remote && !server.parent) {
        server.parent = ctx;
        server.source = 'link';
        this.stats.linked++;
      }
    } else {
      const q = this.links.get(key);
      this.linkCount++;
      if (!q) this.links.set(key, [ctx]);
      else if (q.push(ctx) > MAX_PER_CONNECTION) {
        q.shift(); // the other end is not on this node, or lags far behind
        this.linkCount--;
      }
      while (this.linkCount > this.opts.maxLinks) {
        const oldest = this.links.keys().next();
        if (oldest.done) break;
        this.linkCount -= this.links.get(oldest.value)?.length ?? 0;
        this.links.delete(oldest.value);
        this.stats.linkTableEvicted++;
      }
    }
    return ctx;
  }

  /** The client's connection closed: its unmatched requests will never be linked. */
  clientClosed(t: Tuple): void {
    const key = this.clientKey(t);
    this.linkCount -= this.links.get(key)?.length ?? 0;
    this.links.delete(key);
  }

  /** The server's connection closed. */
  serverClosed(t: Tuple): void {
    this.pendingServers.delete(this.serverKey(t));
  }

  /** Forget a server request that ended, or never will (connection closed/evicted). */
  dropActive(ctx: TraceCtx, tgid: number, readTid: number): void {
    dropFrom(this.active, threadKey(tgid, readTid), ctx);
    dropFrom(this.activeByProcess, tgid, ctx);
  }

  get sizes(): { links: number; pendingServers: number; threads: number } {
    return { links: this.linkCount, pendingServers: this.pendingServers.size, threads: this.active.size };
  }

  private pushActive(m: Map<number, TraceCtx[]>, key: number, ctx: TraceCtx): void {
    const list = m.get(key);
    if (list) {
      list.push(ctx);
      if (list.length > 1024) list.shift(); // bounded: more in flight is ambiguous anyway
      return;
    }
    if (m.size >= this.opts.maxThreads) {
      const oldest = m.keys().next();
      if (!oldest.done) m.delete(oldest.value);
    }
    m.set(key, [ctx]);
  }
}
