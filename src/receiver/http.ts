/**
 * http.ts — HTTP/1.x request assembly for one TCP connection: two streaming parsers (one
 * per direction), a bounded queue of requests waiting for their responses (pipelining),
 * and the SERVER/CLIENT span built when a response completes. A request that never gets a
 * response still ends as a span, with error.type: `timeout` after requestTimeoutMs
 * (expire(), driven by the connection table), `connection_reset` / `connection_closed` /
 * `_OTHER` (eviction) when its connection goes away (onClose()). A request answered by
 * `101 Switching Protocols` to `Upgrade: h2c` is not a span here: it is handed over
 * (takeH2cHandoff()) to become stream 1 of the HTTP/2 connection.
 *
 * Owned by the connection table (connections.ts): one instance per connection, created
 * when the connection is recognised as HTTP/1, dropped on close or eviction.
 * Single-threaded; never throws on traffic (the parsers report errors as events).
 */
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_CLIENT_PORT,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_HTTP_ROUTE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
  ATTR_URL_QUERY,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';
import type { MonotonicClock } from './clock.js';
import type { ConnInfo, KernelEvent } from './decode.js';
import { Http1Parser, type Chunk, type Http1Event, type HttpHead } from './http1.js';
import { h2cUpgrade, type H2cUpgrade, type Http2Stats } from './http2.js';
import { Direction } from './layout.js';
import type { RouteTemplater } from './routes.js';
import type { AttrValue, ProcessRef, SidelightSpan } from './span.js';
import { Fifo } from './fifo.js';
import { addConnAttributes, exportedQuery, setMethod, withIds } from './spanbuild.js';
import type { TraceCtx, TraceRegistry, Tuple } from './trace.js';

export type Role = 'server' | 'client';

export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** Why a connection went away, as error.type of the requests it left unanswered. */
export type CloseReason = 'connection_closed' | 'connection_reset' | '_OTHER';

/** An HTTP/1 request upgraded to h2c (101): stream 1 of the HTTP/2 connection that follows. */
export interface H2cHandoff {
  upgrade: H2cUpgrade;
  start: bigint;
  process: ProcessRef;
  ctx: TraceCtx;
  requestBodyBytes: number;
}

export interface HttpOptions {
  /** export url.query (off by default: query strings can carry secrets) */
  captureQuery: boolean;
  /** with captureQuery: query keys (lowercased) whose values are exported as REDACTED */
  redactQueryKeys?: ReadonlySet<string>;
  /** requests waiting for a response on one connection */
  maxPending: number;
  /** a request with no response head after this long ends with error.type timeout, ms (default 30000) */
  requestTimeoutMs?: number;
  /** http.route for SERVER spans (routes.ts); absent: no route */
  routes?: RouteTemplater;
}

/** Counters of the HTTP layer; exported as self-telemetry. */
export interface HttpStats {
  spans: number;
  parseErrors: number;
  /** responses with no request waiting (connection seen from its middle) */
  unmatchedResponses: number;
  /** requests dropped because maxPending were already waiting */
  pendingOverflow: number;
  /** requests still waiting when their connection closed or was evicted (each ends as an error span) */
  unanswered: number;
  /** requests ended with error.type timeout (no response head within requestTimeoutMs) */
  timeouts: number;
  /** responses that arrived after their request had been ended by the timeout */
  lateResponses: number;
  /** HTTP/1 connections switched to HTTP/2 by an h2c Upgrade */
  h2cUpgrades: number;
  /** HTTP/2 decoder counters of the connections that ended, summed (http2.ts Http2Stats) */
  h2: Http2Stats;
}

export function newHttpStats(): HttpStats {
  return {
    spans: 0, parseErrors: 0, unmatchedResponses: 0, pendingOverflow: 0, unanswered: 0, timeouts: 0, lateResponses: 0, h2cUpgrades: 0,
    h2: { frames: 0, streams: 0, desyncs: 0, resyncs: 0, midstream: 0, hpackErrors: 0, overflow: 0, framingLost: 0, framingResyncs: 0, protocolErrors: 0, errors: 0, skippedBytes: 0 },
  };
}

interface Pending {
  head: HttpHead;
  /** span start, CLOCK_MONOTONIC ns */
  start: bigint;
  process: ProcessRef;
  requestEnded: boolean;
  response?: HttpHead;
  /** when the response's head began to be written or read (its first syscall's start) */
  responseStart?: bigint;
  /** trace identity, assigned when the request started */
  ctx: TraceCtx;
  /** the request head's first and last syscalls: start of one, end of the other (injection claims) */
  headFrom: bigint;
  headTo: bigint;
  /** request body octets, once the request ended */
  requestBodyBytes?: number;
  /** already ended as a timeout span: its late response is consumed silently */
  expired: boolean;
}

export class HttpConnection {
  readonly role: Role;
  private readonly info: ConnInfo;
  private readonly opts: HttpOptions;
  private readonly clock: MonotonicClock;
  private readonly emit: (s: SidelightSpan) => void;
  private readonly stats: HttpStats;
  private readonly req: Http1Parser;
  private readonly resp: Http1Parser;
  private readonly pending = new Fifo<Pending>();
  /** head of the response message in progress (1xx heads are not paired) */
  private respHead: HttpHead | undefined;
  private lastProcess: ProcessRef | undefined;
  /** final response heads parsed (requestMethod asked) but not yet handled */
  private ahead = 0;
  /** request heads parsed on this connection */
  requests = 0;
  /** set when a 101 answered an h2c Upgrade: the connection continues as HTTP/2 */
  private h2c: H2cHandoff | undefined;

  private readonly traces: TraceRegistry;
  /** tid of the event being processed (the thread that wrote the bytes now parsed) */
  private currentTid = 0;
  private tupleMemo: Tuple | undefined;
  /** the last Host value parsed on this connection and its result (buildSpan) */
  private lastHostValue: string | undefined;
  private lastHost: { host: string; port?: number } | undefined;
  /** the encoder's scratch for this connection end's spans (SidelightSpan.encodeMemo) */
  private readonly encodeMemo: object = {};

  constructor(
    role: Role,
    info: ConnInfo,
    opts: HttpOptions,
    clock: MonotonicClock,
    stats: HttpStats,
    traces: TraceRegistry,
    emit: (s: SidelightSpan) => void,
  ) {
    this.role = role;
    this.info = info;
    this.traces = traces;
    this.opts = opts;
    this.clock = clock;
    this.stats = stats;
    this.emit = emit;
    this.req = new Http1Parser({ kind: 'request' });
    // The parser asks for the request method while it parses, before this class has seen
    // the earlier responses of the same push(): `ahead` counts those final response heads.
    this.resp = new Http1Parser({
      kind: 'response',
      requestMethod: () => this.pending.at(this.ahead++)?.head.method,
    });
  }

  /** true when `ev` carries request bytes for this connection's role */
  isRequestDirection(direction: number): boolean {
    return (this.role === 'server') === (direction === Direction.Ingress);
  }

  get upgraded(): boolean {
    return this.req.upgraded || this.resp.upgraded;
  }

  /** The h2c upgrade accepted on this connection, once (the caller switches to HTTP/2). */
  takeH2cHandoff(): H2cHandoff | undefined {
    const h = this.h2c;
    this.h2c = undefined;
    return h;
  }

  /** requests waiting for (the end of) a response */
  get pendingCount(): number {
    return this.pending.length;
  }

  private get timeoutNs(): bigint {
    return BigInt(this.opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS) * 1_000_000n;
  }

  /**
   * End, as error spans with error.type `timeout`, requests that have had no response head
   * for requestTimeoutMs (the span ends at start + timeout). They stay queued (marked) so a
   * late response still pairs with the right request and is then consumed silently.
   */
  expire(nowMono: bigint): void {
    const limit = this.timeoutNs;
    for (let i = 0; i < this.pending.length; i++) {
      const p = this.pending.at(i)!;
      if (p.expired || p.response || nowMono - p.start < limit) continue;
      p.expired = true;
      this.stats.timeouts++;
      this.endUnanswered(p, p.start + limit, 'timeout');
    }
  }

  private endUnanswered(p: Pending, endMono: bigint, errorType: string): void {
    if (this.role === 'server') this.traces.dropActive(p.ctx, p.process.tgid, p.process.tid);
    this.emit(this.buildSpan(p, undefined, endMono, errorType));
  }

  onData(ev: KernelEvent): void {
    const chunk: Chunk = { data: ev.data, length: ev.ret, tsStart: ev.tsStart, tsEnd: ev.tsEnd };
    // the same thread as the last chunk (keep-alive): its ProcessRef again (spans only read it)
    const last = this.lastProcess;
    const proc: ProcessRef =
      last !== undefined && last.tid === ev.tid && last.tgid === ev.tgid && last.comm === ev.comm && last.cgroupId === ev.cgroupId
        ? last
        : { tgid: ev.tgid, tid: ev.tid, comm: ev.comm, cgroupId: ev.cgroupId };
    this.lastProcess = proc;
    this.currentTid = ev.tid;
    if (this.isRequestDirection(ev.direction)) {
      // a new request ends a response that had no determinable end
      if (!this.req.inMessage && this.resp.openEnded) this.onResponseEvents(this.resp.finish('peer'));
      this.onRequestEvents(this.req.push(chunk), proc);
    } else {
      if (!this.resp.inMessage && this.req.openEnded) this.onRequestEvents(this.req.finish('peer'), proc);
      this.onResponseEvents(this.resp.push(chunk));
    }
  }

  /**
   * The connection closed (or was reset, or was evicted) at `endMono`: end messages in
   * progress (at their last byte); requests left without a response end as error spans
   * with error.type `reason`.
   */
  onClose(reason: CloseReason = 'connection_closed', endMono: bigint = this.clock.nowMono()): void {
    if (this.req.inMessage && this.lastProcess) this.onRequestEvents(this.req.finish('close'), this.lastProcess);
    if (this.resp.inMessage) this.onResponseEvents(this.resp.finish('close'));
    for (let i = 0; i < this.pending.length; i++) {
      const p = this.pending.at(i)!;
      if (p.expired) continue;
      this.stats.unanswered++;
      this.endUnanswered(p, endMono > p.start ? endMono : p.start, reason);
    }
    if (this.role === 'server') {
      this.traces.serverClosed(this.tuple());
    } else {
      this.traces.clientClosed(this.tuple());
    }
    this.pending.clear();
  }

  /** the connection's tuple: one object (info never changes), so trace.ts's link-key memo holds */
  private tuple(): Tuple {
    return (this.tupleMemo ??= {
      localAddr: this.info.local.address,
      localPort: this.info.local.port,
      remoteAddr: this.info.remote.address,
      remotePort: this.info.remote.port,
      netns: this.info.netns,
    });
  }

  private onRequestEvents(events: Http1Event[], proc: ProcessRef): void {
    for (const e of events) {
      if (e.type === 'head') {
        this.requests++;
        if (this.pending.length >= this.opts.maxPending) {
          const dropped = this.pending.shift();
          if (dropped && this.role === 'server') this.traces.dropActive(dropped.ctx, dropped.process.tgid, dropped.process.tid);
          this.stats.pendingOverflow++;
        }
        const ctx =
          this.role === 'server'
            ? this.traces.serverStart(this.tuple(), proc.tgid, proc.tid, header(e.head, 'traceparent'), header(e.head, 'tracestate'))
            : this.traces.clientStart(this.tuple(), proc.tgid, proc.tid, header(e.head, 'traceparent'));
        // server: the request arrived when the read returned; client: when the write began
        this.pending.push({
          head: e.head,
          start: this.role === 'server' ? e.ts : e.tsStart,
          process: proc,
          requestEnded: false,
          ctx,
          expired: false,
          headFrom: e.tsStart,
          headTo: e.ts,
        });
        this.claimInjection(ctx, proc.tid, e.tsStart, e.ts, undefined);
      } else if (e.type === 'end') {
        let p: Pending | undefined;
        for (let i = 0; i < this.pending.length && p === undefined; i++) {
          const x = this.pending.at(i)!;
          if (!x.requestEnded) p = x;
        }
        if (p) {
          p.requestEnded = true;
          p.requestBodyBytes = e.bodyBytes;
        }
      } else {
        this.stats.parseErrors++;
      }
    }
  }

  private onResponseEvents(events: Http1Event[]): void {
    for (const e of events) {
      if (e.type === 'head') {
        this.respHead = e.head;
        const status = e.head.status ?? 0;
        if (status < 100 || status >= 200) this.ahead = Math.max(0, this.ahead - 1);
        if (status >= 100 && status < 200 && status !== 101) continue; // informational
        const p = this.pending.at(0);
        if (p) {
          p.response = e.head;
          p.responseStart = e.tsStart;
        } else this.stats.unmatchedResponses++;
      } else if (e.type === 'end') {
        const head = this.respHead;
        this.respHead = undefined;
        const status = head?.status ?? 0;
        if (status >= 100 && status < 200 && status !== 101) continue;
        const p = this.pending.at(0);
        if (!p || !p.response || p.response !== head) continue;
        this.pending.shift();
        if (p.expired) {
          this.stats.lateResponses++;
          continue;
        }
        if (status === 101 && !this.h2c) {
          const upgrade = h2cUpgrade(p.head, p.response);
          if (upgrade) {
            // the upgraded request is stream 1 of the HTTP/2 connection: its span comes from there
            this.stats.h2cUpgrades++;
            this.h2c = { upgrade, start: p.start, process: p.process, ctx: p.ctx, requestBodyBytes: p.requestBodyBytes ?? 0 };
            continue;
          }
        }
        if (this.role === 'server') this.traces.serverEnd(p.ctx, p.process.tgid, p.process.tid, this.currentTid || p.process.tid);
        this.emit(this.buildSpan(p, p.response, e.ts, undefined, e.bodyBytes));
      } else {
        this.stats.parseErrors++;
      }
    }
  }

  /**
   * traceparent injection (inject.ts): take the ids the kernel chose for this request, if any.
   * `until`: undefined when the request starts; at its span, when its response began (a
   * server's kernel-chosen trace id was stamped before then), or its end without one.
   */
  private claimInjection(ctx: TraceCtx, tid: number, from: bigint, to: bigint, until: bigint | undefined): void {
    const inj = this.traces.injections;
    if (!inj) return;
    const { local, remote } = this.info;
    if (this.role === 'server') inj.claimServer(ctx, tid, local.port, remote.port, from, to, until);
    else inj.claimClient(ctx, tid, local.port, remote.port, from, to);
  }

  /** `resp` undefined: the request got no response; `errorType` says why */
  private buildSpan(p: Pending, resp: HttpHead | undefined, endMono: bigint, errorType?: string, responseBodyBytes?: number): SidelightSpan {
    // the kernel's record of an injection may arrive after the request's own bytes
    this.claimInjection(p.ctx, p.process.tid, p.headFrom, p.headTo, resp ? (p.responseStart ?? endMono) : endMono);
    const attrs: Record<string, AttrValue> = {};
    const name = setMethod(attrs, p.head.method ?? '');
    const status = resp?.status ?? 0;
    if (resp) attrs[ATTR_HTTP_RESPONSE_STATUS_CODE] = status;
    attrs[ATTR_NETWORK_PROTOCOL_VERSION] = p.head.version;
    addConnAttributes(attrs, this.info);

    const target = parseTarget(p.head.target ?? '');
    const hostValue = header(p.head, 'host') ?? target.authority;
    // keep-alive requests on one connection carry the same Host: parse it once per value
    if (hostValue !== this.lastHostValue) {
      this.lastHostValue = hostValue;
      this.lastHost = parseHost(hostValue);
    }
    const host = this.lastHost;
    const isError = errorType !== undefined || (this.role === 'server' ? status >= 500 : status >= 400);

    if (this.role === 'server') {
      attrs[ATTR_URL_SCHEME] = 'http';
      attrs[ATTR_URL_PATH] = target.path;
      const route = this.opts.routes?.route(target.path);
      if (route !== undefined) attrs[ATTR_HTTP_ROUTE] = route;
      const q = exportedQuery(target.query, this.opts.captureQuery, this.opts.redactQueryKeys);
      if (q !== undefined) attrs[ATTR_URL_QUERY] = q;
      attrs[ATTR_SERVER_ADDRESS] = host?.host ?? this.info.local.address;
      attrs[ATTR_SERVER_PORT] = host?.port ?? this.info.local.port;
      attrs[ATTR_CLIENT_ADDRESS] = this.info.remote.address;
      attrs[ATTR_CLIENT_PORT] = this.info.remote.port;
      const ua = header(p.head, 'user-agent');
      if (ua !== undefined) attrs[ATTR_USER_AGENT_ORIGINAL] = ua;
    } else {
      const serverHost = host?.host ?? this.info.remote.address;
      const serverPort = host?.port ?? this.info.remote.port;
      attrs[ATTR_SERVER_ADDRESS] = serverHost;
      attrs[ATTR_SERVER_PORT] = serverPort;
      const authority = formatAuthority(serverHost, serverPort, 80);
      const q = exportedQuery(target.query, this.opts.captureQuery, this.opts.redactQueryKeys);
      attrs[ATTR_URL_FULL] = `http://${authority}${target.path}${q !== undefined ? `?${q}` : ''}`;
    }
    if (isError) attrs[ATTR_ERROR_TYPE] = errorType ?? String(status);

    this.stats.spans++;
    const bodySize: { request?: number; response?: number } = {};
    if (p.requestBodyBytes !== undefined) bodySize.request = p.requestBodyBytes;
    if (responseBodyBytes !== undefined) bodySize.response = responseBodyBytes;
    return withIds(
      {
        // the id fields first, in the literal: set by withIds, the span keeps one shape
        traceId: '',
        spanId: '',
        traceFlags: 0,
        bodySize,
        kind: this.role,
        name,
        startUnixNs: this.clock.toUnixNs(p.start),
        endUnixNs: this.clock.toUnixNs(endMono),
        attributes: attrs,
        status: isError ? STATUS_ERROR : STATUS_UNSET,
        process: p.process,
        encodeMemo: this.encodeMemo,
      },
      p.ctx,
      p.start,
    );
  }
}

/** shared, never mutated: one status object per span was a measurable share of the allocations */
const STATUS_ERROR: SidelightSpan['status'] = Object.freeze({ code: 'error' });
const STATUS_UNSET: SidelightSpan['status'] = Object.freeze({ code: 'unset' });

function header(h: HttpHead, name: string): string | undefined {
  for (const [k, v] of h.headers) if (k === name) return v;
  return undefined;
}

export interface Target {
  path: string;
  query?: string;
  authority?: string;
}

/** Split a request-target (origin-, absolute-, authority- or asterisk-form). */
export function parseTarget(target: string): Target {
  let rest = target;
  let authority: string | undefined;
  // origin-form (nearly every request) cannot match the absolute-form pattern: no regex run
  const abs = target.charCodeAt(0) === 0x2f ? null : /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/([^/?#]*)(.*)$/.exec(target);
  if (abs) {
    authority = (abs[1] ?? '').replace(/^.*@/, ''); // never keep userinfo
    rest = abs[2] || '/';
  } else if (!target.startsWith('/') && target !== '*') {
    return { path: '', authority: target }; // authority-form (CONNECT)
  }
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash);
  const q = rest.indexOf('?');
  const t: Target = q >= 0 ? { path: rest.slice(0, q), query: rest.slice(q + 1) } : { path: rest };
  if (authority !== undefined) t.authority = authority;
  return t;
}

/** Parse a Host header value: `name`, `name:port`, `[v6]`, `[v6]:port`. */
export function parseHost(value: string | undefined): { host: string; port?: number } | undefined {
  if (!value) return undefined;
  const m = /^(\[[^\]]*\]|[^:]*)(?::(\d{1,5}))?$/.exec(value.trim());
  if (!m || !m[1]) return undefined;
  const host = m[1].startsWith('[') ? m[1].slice(1, -1) : m[1];
  const port = m[2] !== undefined ? Number(m[2]) : undefined;
  if (port !== undefined && port > 65535) return { host };
  return port !== undefined ? { host, port } : { host };
}

function formatAuthority(host: string, port: number, defaultPort: number): string {
  const h = host.includes(':') ? `[${host}]` : host;
  return port === defaultPort ? h : `${h}:${port}`;
}
