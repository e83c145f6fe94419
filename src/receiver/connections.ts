/**
 * connections.ts — the connection table: one entry per TCP socket seen by the kernel
 * probes, keyed by the kernel's struct sock address. Knows each connection's role
 * (accepted → server, connected → client, or inferred from the first bytes for sockets
 * that predate the agent), detects the protocol (HTTP/1, or HTTP/2 from the client
 * preface; a few early server chunks are kept and replayed, as HTTP/2 servers speak
 * first), and hands data to the protocol handler (http.ts, h2spans.ts). Owns the trace
 * registry (trace.ts) those handlers share, and the set of the agent's own endpoints
 * whose far end is ignored.
 *
 * Bounded by `maxConnections`: inserting past the bound evicts the oldest entry
 * (counted). Entries leave on close() or when idle longer than `idleMs` (sweep()).
 * Single-threaded: fed by the receiver in batch order.
 */
import type { MonotonicClock } from './clock.js';
import type { ConnInfo, KernelEvent } from './decode.js';
import { HttpConnection, newHttpStats, type HttpOptions, type HttpStats, type Role } from './http.js';
import { looksLikeHttp1 } from './http1.js';
import { looksLikeHttp2Preface } from './http2.js';
import { Http2Handler } from './h2spans.js';
import { Direction, EventType } from './layout.js';
import type { SidelightSpan } from './span.js';
import { TraceRegistry, type TraceStats } from './trace.js';

export interface ConnectionTableOptions {
  maxConnections: number;
  /** the agent's own pid: its connects mark endpoints whose far end is ignored */
  selfTgid?: number;
  /** called when a connection is first seen, so process metadata is read while the process lives */
  onNewConnection?: (ev: KernelEvent) => void;
  /** true for processes whose threads cannot identify a request (Go binaries) */
  threadsUntrusted?: (tgid: number) => boolean;
  /** true for worker-pool threads (Node's libuv pool) */
  isPoolThread?: (tgid: number, tid: number) => boolean;
  /** drop connections with no event for this long */
  idleMs: number;
  http: HttpOptions;
}

export interface ConnectionStats {
  opened: number;
  accepted: number;
  connected: number;
  failedConnects: number;
  closed: number;
  evicted: number;
  idleExpired: number;
  /** data chunks on connections whose protocol is not (yet) understood */
  unknownChunks: number;
  /** connections given up as not HTTP/1 */
  notHttp: number;
  /** connections whose peer is the agent itself (its own export traffic) */
  selfTraffic: number;
  http: HttpStats;
  trace: TraceStats;
}

type Protocol = 'unknown' | 'http1' | 'h2' | 'ignored';

/** Chunks we wait on a connection before giving up on recognising its protocol. */
const DETECT_CHUNKS = 8;
/** A first chunk shorter than this may be a split request line: not judged by itself. */
const SHORT_CHUNK = 16;
/** Early response-direction chunks kept per connection until its protocol is known. */
const MAX_EARLY = 4;
/** Bound of the set of the agent's own socket endpoints. */
const MAX_SELF_ENDPOINTS = 1024;
const EINPROGRESS = 115;

interface Conn {
  sock: bigint;
  info: ConnInfo;
  role: Role | undefined;
  protocol: Protocol;
  http: HttpConnection | undefined;
  h2: Http2Handler | undefined;
  /** response-direction chunks seen before the protocol was known (HTTP/2 servers speak first) */
  early: KernelEvent[];
  seenChunks: number;
  lastSeen: bigint;
}

export class ConnectionTable {
  private readonly conns = new Map<bigint, Conn>();
  /** "address:port" of the agent's own connected sockets (insertion-ordered, bounded) */
  private readonly selfEndpoints = new Map<string, true>();
  private readonly opts: ConnectionTableOptions;
  private readonly clock: MonotonicClock;
  private readonly emit: (s: SidelightSpan) => void;
  readonly traces: TraceRegistry;
  readonly stats: ConnectionStats;


  constructor(opts: ConnectionTableOptions, clock: MonotonicClock, emit: (s: SidelightSpan) => void) {
    this.opts = opts;
    this.clock = clock;
    this.emit = emit;
    this.traces = new TraceRegistry({
      maxLinks: opts.maxConnections,
      maxThreads: opts.maxConnections,
      ...(opts.threadsUntrusted ? { threadsUntrusted: opts.threadsUntrusted } : {}),
      ...(opts.isPoolThread ? { isPoolThread: opts.isPoolThread } : {}),
    });
    this.stats = {
      opened: 0,
      accepted: 0,
      connected: 0,
      failedConnects: 0,
      closed: 0,
      evicted: 0,
      idleExpired: 0,
      unknownChunks: 0,
      notHttp: 0,
      selfTraffic: 0,
      http: newHttpStats(),
      trace: this.traces.stats,
    };
  }

  get size(): number {
    return this.conns.size;
  }

  onEvent(ev: KernelEvent): void {
    switch (ev.type) {
      case EventType.Accept:
        this.stats.accepted++;
        this.open(ev, 'server');
        return;
      case EventType.Connect:
        if (this.opts.selfTgid !== undefined && ev.tgid === this.opts.selfTgid) {
          this.rememberSelf(`${ev.conn.local.address}:${ev.conn.local.port}`);
          return;
        }
        if (ev.ret < 0 && ev.ret !== -EINPROGRESS) {
          this.stats.failedConnects++;
          return;
        }
        this.stats.connected++;
        this.open(ev, 'client');
        return;
      case EventType.Close: {
        const c = this.conns.get(ev.sock);
        if (!c) return;
        (c.http ?? c.h2)?.onClose();
        this.conns.delete(ev.sock);
        this.stats.closed++;
        return;
      }
      case EventType.Data:
        this.onData(ev);
        return;
      default:
        return;
    }
  }

  private rememberSelf(endpoint: string): void {
    this.selfEndpoints.delete(endpoint);
    if (this.selfEndpoints.size >= MAX_SELF_ENDPOINTS) {
      const oldest = this.selfEndpoints.keys().next();
      if (!oldest.done) this.selfEndpoints.delete(oldest.value);
    }
    this.selfEndpoints.set(endpoint, true);
  }

  /** Expire connections idle for longer than idleMs. */
  sweep(): void {
    const cutoff = this.clock.nowMono() - BigInt(this.opts.idleMs) * 1_000_000n;
    for (const [sock, c] of this.conns) {
      if (c.lastSeen < cutoff) {
        (c.http ?? c.h2)?.onClose();
        this.conns.delete(sock);
        this.stats.idleExpired++;
      }
    }
  }

  private open(ev: KernelEvent, role: Role | undefined): Conn {
    const old = this.conns.get(ev.sock);
    if (old) {
      // the kernel reused the struct sock of a connection whose close we did not see
      (old.http ?? old.h2)?.onClose();
      this.conns.delete(ev.sock);
    }
    if (this.conns.size >= this.opts.maxConnections) {
      const oldest = this.conns.keys().next();
      if (!oldest.done) {
        {
          const gone = this.conns.get(oldest.value);
          (gone?.http ?? gone?.h2)?.onClose();
        }
        this.conns.delete(oldest.value);
        this.stats.evicted++;
      }
    }
    const c: Conn = {
      sock: ev.sock,
      info: ev.conn,
      role,
      protocol: 'unknown',
      http: undefined,
      h2: undefined,
      early: [],
      seenChunks: 0,
      lastSeen: ev.tsEnd,
    };
    this.conns.set(ev.sock, c);
    this.stats.opened++;
    this.opts.onNewConnection?.(ev);
    return c;
  }

  private onData(ev: KernelEvent): void {
    let c = this.conns.get(ev.sock);
    if (!c) c = this.open(ev, undefined); // a connection that predates the agent
    c.lastSeen = ev.tsEnd;
    // the 4-tuple of a connected socket is complete only after connect returns
    if (c.info.remote.port === 0) c.info = ev.conn;
    if (c.protocol === 'ignored') return;
    if (c.protocol === 'unknown' && !this.detect(c, ev)) return;
    if (c.h2) {
      c.h2.onData(ev);
      return;
    }
    c.http?.onData(ev);
    // started on a short chunk, but no request ever parsed: not HTTP after all
    if (c.http && c.http.requests === 0) this.countUndetected(c);
    if (c.http?.upgraded) {
      c.http.onClose();
      c.http = undefined;
      c.protocol = 'ignored';
    }
  }

  /** Decide role (if unknown) and protocol from the first bytes; true once it is HTTP/1. */
  private detect(c: Conn, ev: KernelEvent): boolean {
    if (this.selfEndpoints.has(`${c.info.remote.address}:${c.info.remote.port}`)) {
      c.protocol = 'ignored';
      this.stats.selfTraffic++;
      return false;
    }
    const ingress = ev.direction === Direction.Ingress;
    // HTTP/2 with prior knowledge: whoever sends the preface is the client
    if (looksLikeHttp2Preface(ev.data)) {
      c.role ??= ingress ? 'server' : 'client';
      if ((c.role === 'server') === ingress) {
        c.protocol = 'h2';
        c.h2 = new Http2Handler(c.role, c.info, this.opts.http, this.clock, this.stats.http, this.traces, this.emit);
        // the server's SETTINGS usually went out before the client's preface arrived
        for (const e of c.early) c.h2.onData(e);
        c.early = [];
        return true;
      }
    }
    const request = looksLikeHttp1(ev.data, 'request');
    if (c.role === undefined) {
      if (request) c.role = ingress ? 'server' : 'client';
      else if (looksLikeHttp1(ev.data, 'response')) c.role = ingress ? 'client' : 'server';
    }
    const requestDir = c.role !== undefined && (c.role === 'server') === ingress;
    // A short first chunk (a request line split by the sender) cannot be judged yet: let
    // the parser see it; it resynchronises by itself if this is not HTTP after all.
    if (c.role !== undefined && requestDir && (request || ev.data.length < SHORT_CHUNK)) {
      c.protocol = 'http1';
      c.http = new HttpConnection(c.role, c.info, this.opts.http, this.clock, this.stats.http, this.traces, this.emit);
      c.early = [];
      return true;
    }
    if (c.role !== undefined && !requestDir && c.early.length < MAX_EARLY) {
      // keep a copy: the payload is a view into the batch
      c.early.push({ ...ev, data: ev.data.slice() });
    }
    this.countUndetected(c);
    return false;
  }

  private countUndetected(c: Conn): void {
    this.stats.unknownChunks++;
    if (++c.seenChunks >= DETECT_CHUNKS) {
      c.protocol = 'ignored';
      c.http = undefined;
      c.early = [];
      this.stats.notHttp++;
    }
  }
}
