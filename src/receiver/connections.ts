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
 * An HTTP/1 connection whose `Upgrade: h2c` request is answered by 101 continues as HTTP/2
 * (the upgraded request is stream 1). Requests left unanswered end as error spans: on close
 * (`connection_reset` when a read/write on the socket failed with ECONNRESET/EPIPE, else
 * `connection_closed`), on eviction or idle expiry (`_OTHER`), or after the request timeout
 * (expireRequests(), called periodically).
 *
 * TLS: a connection whose first bytes are a TLS record is not parsed from its syscall bytes;
 * once plaintext arrives from the SSL_* uprobes (syscall ssl_read/ssl_write, tls.ts) only
 * that is parsed, and its spans get url.scheme https.
 *
 * Connections that predate the agent are seeded at start by the iter/tcp pickup (pickup.ts,
 * seed()) with their role from the kernel, so their first bytes need not say it. Until a
 * seeded connection sees a request, chunks in its response direction are the tail of a
 * response in flight when the agent started: skipped without counting towards giving up on
 * the connection (up to PICKUP_TAIL_CHUNKS), so a long response does not get the
 * keep-alive connection ignored before its next request.
 *
 * Bounded by `maxConnections`: inserting past the bound evicts the oldest entry
 * (counted). Entries leave on close() or when idle longer than `idleMs` (sweep()).
 * Single-threaded: fed by the receiver in batch order.
 */
import type { MonotonicClock } from './clock.js';
import type { ConnInfo, KernelEvent } from './decode.js';
import { HttpConnection, newHttpStats, type CloseReason, type HttpOptions, type HttpStats, type Role } from './http.js';
import { looksLikeHttp1 } from './http1.js';
import { looksLikeHttp2Preface } from './http2.js';
import { Http2Handler } from './h2spans.js';
import { Direction, EventType, SYS_SSL_READ, SYS_SSL_WRITE } from './layout.js';
import { looksLikeTlsRecord } from './tls.js';
import type { SidelightSpan } from './span.js';
import { isLoopback, TraceRegistry, type TraceStats } from './trace.js';

export interface ConnectionTableOptions {
  maxConnections: number;
  /** the agent's own pid: its connects mark endpoints whose far end is ignored */
  selfTgid?: number;
  /** called when a connection is first seen, so process metadata is read while the process lives */
  onNewConnection?: (ev: KernelEvent) => void;
  /** a data event on a connection seeded by the pickup before its first bytes were parsed: the process that owns it */
  onPickedData?: (ev: KernelEvent) => void;
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
  /** connections seeded by the pickup of pre-existing sockets (seed()) */
  pickedUp: number;
  /** response-direction chunks skipped on seeded connections before their first request */
  pickupTailChunks: number;
  accepted: number;
  connected: number;
  failedConnects: number;
  closed: number;
  evicted: number;
  /** entries replaced because the kernel reused their socket before their close was seen */
  replaced: number;
  idleExpired: number;
  /** data chunks on connections whose protocol is not (yet) understood */
  unknownChunks: number;
  /** connections given up as not HTTP/1 */
  notHttp: number;
  /** connections whose peer is the agent itself (its own export traffic) */
  selfTraffic: number;
  /** connections carrying TLS plaintext (SSL_read/SSL_write uprobes) */
  tlsConnections: number;
  /** TLS plaintext chunks */
  tlsPlaintextChunks: number;
  /** connections whose first bytes were a TLS record (ciphertext): parsed only from plaintext */
  tlsCiphertextConnections: number;
  /** ciphertext chunks dropped (the handshake, or any the kernel side did not filter) */
  tlsCiphertextChunks: number;
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
/** Response-direction chunks a seeded connection may skip before its first request. */
const PICKUP_TAIL_CHUNKS = 4096;
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
  /** a read or write on the socket failed with ECONNRESET / EPIPE */
  reset: boolean;
  /** 'plaintext': fed by the SSL_* uprobes only; 'ciphertext': TLS records seen, no plaintext yet */
  tls: 'none' | 'ciphertext' | 'plaintext';
  /** any data seen yet (a TLS connection is recognised by its first bytes) */
  dataSeen: boolean;
  /** seeded by the pickup (seed()): the role is the kernel's, no event opened it */
  picked: boolean;
  /** response-direction chunks skipped while picked and before the first request */
  tailChunks: number;
}

/** A connection with nothing seen on it yet: opened by an event, or seeded by the pickup (`picked`). */
function newConn(sock: bigint, info: ConnInfo, role: Role | undefined, lastSeen: bigint, picked: boolean): Conn {
  return { sock, info, role, protocol: 'unknown', http: undefined, h2: undefined, early: [], seenChunks: 0, lastSeen, reset: false, tls: 'none', dataSeen: false, picked, tailChunks: 0 };
}

/** What seed() did with one pre-existing socket. */
export type SeedOutcome = 'seeded' | 'role_set' | 'known' | 'table_full';

const ECONNRESET = 104;
const EPIPE = 32;

/**
 * Key of one of the agent's own endpoints as the far end sees it. A loopback address names a
 * different endpoint in every network namespace (a test's or a pod's 127.0.0.1:port is not the
 * agent's): the namespace is part of the key then. Other addresses are unique on the node.
 */
function selfKey(address: string, port: number, netns: number): string {
  return isLoopback(address) ? `${netns}|${address}:${port}` : `${address}:${port}`;
}

/** End the protocol handler of a connection that is going away. */
function closeHandler(c: Conn | undefined, reason: CloseReason, endMono?: bigint): void {
  (c?.http ?? c?.h2)?.onClose(c?.reset && reason === 'connection_closed' ? 'connection_reset' : reason, endMono);
}

export class ConnectionTable {
  private readonly conns = new Map<bigint, Conn>();
  /**
   * The agent's own connected sockets' endpoints (selfKey) → the socket (insertion-ordered,
   * bounded): the far end of a connection from there is the agent's own traffic. Forgotten
   * when the agent closes the socket: the port is then free for any process to reuse.
   */
  private readonly selfEndpoints = new Map<string, bigint>();
  /** the same, socket → endpoint */
  private readonly selfSocks = new Map<bigint, string>();
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
      pickedUp: 0,
      pickupTailChunks: 0,
      accepted: 0,
      connected: 0,
      failedConnects: 0,
      closed: 0,
      evicted: 0,
      replaced: 0,
      idleExpired: 0,
      unknownChunks: 0,
      notHttp: 0,
      selfTraffic: 0,
      tlsConnections: 0,
      tlsPlaintextChunks: 0,
      tlsCiphertextConnections: 0,
      tlsCiphertextChunks: 0,
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
        if (ev.tgid === this.opts.selfTgid) {
          this.rememberSelf(selfKey(ev.conn.local.address, ev.conn.local.port, ev.conn.netns), ev.sock);
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
        if (ev.tgid === this.opts.selfTgid) {
          this.forgetSelf(ev.sock);
          return;
        }
        const c = this.conns.get(ev.sock);
        if (!c) return;
        closeHandler(c, 'connection_closed', ev.tsEnd);
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

  private rememberSelf(endpoint: string, sock: bigint): void {
    // a socket address or an endpoint seen before (its close was missed): drop the old pairing
    this.forgetSelf(sock);
    const before = this.selfEndpoints.get(endpoint);
    if (before !== undefined) this.selfSocks.delete(before);
    this.selfEndpoints.delete(endpoint);
    if (this.selfEndpoints.size >= MAX_SELF_ENDPOINTS) {
      const oldest = this.selfEndpoints.entries().next();
      if (!oldest.done) {
        this.selfEndpoints.delete(oldest.value[0]);
        this.selfSocks.delete(oldest.value[1]);
      }
    }
    this.selfEndpoints.set(endpoint, sock);
    this.selfSocks.set(sock, endpoint);
  }

  private forgetSelf(sock: bigint): void {
    const endpoint = this.selfSocks.get(sock);
    if (endpoint === undefined) return;
    this.selfSocks.delete(sock);
    if (this.selfEndpoints.get(endpoint) === sock) this.selfEndpoints.delete(endpoint);
  }

  /** End requests (HTTP/1) and streams (HTTP/2) unanswered for longer than the request timeout. */
  expireRequests(): void {
    const now = this.clock.nowMono();
    for (const c of this.conns.values()) {
      const h = c.http ?? c.h2;
      if (h && h.pendingCount > 0) h.expire(now);
    }
  }

  /** Expire connections idle for longer than idleMs. */
  sweep(): void {
    const cutoff = this.clock.nowMono() - BigInt(this.opts.idleMs) * 1_000_000n;
    for (const [sock, c] of this.conns) {
      if (c.lastSeen < cutoff) {
        closeHandler(c, '_OTHER');
        this.conns.delete(sock);
        this.stats.idleExpired++;
      }
    }
  }

  /**
   * Seed a connection that was open before the agent started (the iter/tcp pickup), with
   * the role the kernel gives it. An entry already opened by an event keeps its role, or
   * takes this one if its bytes did not tell yet ('role_set'); with the table full nothing
   * is evicted for a connection that may stay idle ('table_full').
   */
  seed(sock: bigint, info: ConnInfo, role: Role, nowMono: bigint): SeedOutcome {
    const old = this.conns.get(sock);
    if (old) {
      if (old.role !== undefined) return 'known';
      old.role = role;
      old.picked = true;
      this.stats.pickedUp++;
      return 'role_set';
    }
    if (this.conns.size >= this.opts.maxConnections) return 'table_full';
    this.conns.set(sock, newConn(sock, info, role, nowMono, true));
    this.stats.pickedUp++;
    return 'seeded';
  }

  private open(ev: KernelEvent, role: Role | undefined): Conn {
    const old = this.conns.get(ev.sock);
    if (old?.picked && !old.dataSeen) {
      // seeded by the pickup, and the accept/connect of the same socket was still queued
      this.conns.delete(ev.sock);
    } else if (old) {
      // the kernel reused the struct sock of a connection whose close we did not see
      closeHandler(old, 'connection_closed', ev.tsStart);
      this.conns.delete(ev.sock);
      this.stats.replaced++;
    }
    if (this.conns.size >= this.opts.maxConnections) {
      const oldest = this.conns.keys().next();
      if (!oldest.done) {
        closeHandler(this.conns.get(oldest.value), '_OTHER');
        this.conns.delete(oldest.value);
        this.stats.evicted++;
      }
    }
    const c = newConn(ev.sock, ev.conn, role, ev.tsEnd, false);
    this.conns.set(ev.sock, c);
    this.stats.opened++;
    this.opts.onNewConnection?.(ev);
    return c;
  }

  private onData(ev: KernelEvent): void {
    if (ev.ret < 0) {
      // a failed read/write, reported only for ECONNRESET / EPIPE: the peer reset the connection
      const failed = this.conns.get(ev.sock);
      if (failed && (ev.ret === -ECONNRESET || ev.ret === -EPIPE)) failed.reset = true;
      return;
    }
    let c = this.conns.get(ev.sock);
    if (!c) c = this.open(ev, undefined); // a connection that predates the agent (and the pickup)
    else if (c.picked && !c.dataSeen) {
      // its process, first seen now
      this.opts.onNewConnection?.(ev);
      this.opts.onPickedData?.(ev);
    }
    c.lastSeen = ev.tsEnd;
    // the 4-tuple of a connected socket is complete only after connect returns
    if (c.info.remote.port === 0) c.info = ev.conn;
    if (!this.tlsGate(c, ev)) return;
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
      const h2c = c.http.takeH2cHandoff();
      const responseDir = !c.http.isRequestDirection(ev.direction);
      if (h2c && c.role !== undefined) {
        // h2c: the connection (same tuple, same trace links) goes on as HTTP/2; the 101 head
        // came in this chunk and the server's preface may follow it here
        c.http = undefined;
        c.protocol = 'h2';
        c.h2 = new Http2Handler(c.role, c.info, this.opts.http, this.clock, this.stats.http, this.traces, this.emitFor(c), h2c);
        if (responseDir) c.h2.onData(ev);
      } else {
        c.http.onClose();
        c.http = undefined;
        c.protocol = 'ignored';
      }
    }
  }

  /**
   * TLS: plaintext from the SSL_* uprobes feeds the parsers; syscall bytes of a TLS
   * connection (the handshake before the first SSL_* call, or ciphertext the kernel did
   * not filter) never do. The first plaintext chunk starts detection afresh. False: drop ev.
   */
  private tlsGate(c: Conn, ev: KernelEvent): boolean {
    const first = !c.dataSeen;
    c.dataSeen = true;
    if (ev.syscall === SYS_SSL_READ || ev.syscall === SYS_SSL_WRITE) {
      this.stats.tlsPlaintextChunks++;
      if (c.tls !== 'plaintext') {
        if (c.tls === 'none') closeHandler(c, 'connection_closed', ev.tsStart);
        c.tls = 'plaintext';
        c.protocol = 'unknown';
        c.http = undefined;
        c.h2 = undefined;
        c.early = [];
        c.seenChunks = 0;
        this.stats.tlsConnections++;
      }
      return true;
    }
    if (c.tls === 'none' && first && looksLikeTlsRecord(ev.data)) {
      c.tls = 'ciphertext';
      this.stats.tlsCiphertextConnections++;
    }
    if (c.tls === 'none') return true;
    this.stats.tlsCiphertextChunks++;
    return false;
  }

  /** Spans of a TLS connection: url.scheme https (the HTTP/1 handler builds them as http). */
  private readonly emitTls = (s: SidelightSpan): void => {
    const a = s.attributes;
    if (a['url.scheme'] !== undefined) a['url.scheme'] = 'https';
    const full = a['url.full'];
    if (typeof full === 'string' && full.startsWith('http://')) {
      a['url.full'] = `https://${full.slice(7)}`.replace(/^(https:\/\/[^/]*):443(?=\/|$)/, '$1');
    }
    this.emit(s);
  };

  private emitFor(c: Conn): (s: SidelightSpan) => void {
    return c.tls === 'plaintext' ? this.emitTls : this.emit;
  }

  /** Decide role (if unknown) and protocol from the first bytes; true once it is HTTP/1. */
  private detect(c: Conn, ev: KernelEvent): boolean {
    if (this.selfEndpoints.size > 0 && this.selfEndpoints.has(selfKey(c.info.remote.address, c.info.remote.port, c.info.netns))) {
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
        c.h2 = new Http2Handler(c.role, c.info, this.opts.http, this.clock, this.stats.http, this.traces, this.emitFor(c));
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
    if (c.picked && !requestDir && c.tailChunks < PICKUP_TAIL_CHUNKS) {
      // the rest of a response that was in flight when the agent started
      c.tailChunks++;
      this.stats.pickupTailChunks++;
      return false;
    }
    // A short first chunk (a request line split by the sender) cannot be judged yet: let
    // the parser see it; it resynchronises by itself if this is not HTTP after all.
    if (c.role !== undefined && requestDir && (request || ev.data.length < SHORT_CHUNK)) {
      c.protocol = 'http1';
      c.http = new HttpConnection(c.role, c.info, this.opts.http, this.clock, this.stats.http, this.traces, this.emitFor(c));
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
