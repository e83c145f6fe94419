/**
 * h2spans.ts — HTTP/2 (h2c) and gRPC request assembly for one TCP connection: feeds both
 * directions to an Http2Connection (http2.ts), keeps per-stream state, and emits one
 * SERVER or CLIENT span per stream when the server's END_STREAM (or a RST_STREAM) ends it.
 *
 * gRPC (content-type application/grpc*): span name `pkg.Service/Method`, rpc.system.name
 * `grpc`, rpc.method, rpc.status_code (the code name, from trailers or Trailers-Only),
 * errors per the semconv gRPC table. Plain HTTP/2: the HTTP semconv, version `2`.
 * Trace context as for HTTP/1 (trace.ts): traceparent/tracestate headers (gRPC metadata),
 * both ends on this node, the serving thread.
 *
 * Owned by the connection table; one per connection; streams bounded by the parser
 * (maxStreams) and here by the same bound. Single-threaded.
 */
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_CLIENT_PORT,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_RPC_METHOD,
  ATTR_RPC_STATUS_CODE,
  ATTR_RPC_SYSTEM_NAME,
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
import { grpcCallStatus, grpcMethod, grpcStatusFromReset, isGrpc, isGrpcError, type Headers } from './grpc.js';
import type { HttpOptions, HttpStats, Role } from './http.js';
import { parseHost, parseTarget } from './http.js';
import { Http2Connection, type H2Event } from './http2.js';
import { Direction } from './layout.js';
import type { AttrValue, ProcessRef, SidelightSpan } from './span.js';
import { connAttributes, setMethod, spanIds } from './spanbuild.js';
import type { TraceCtx, TraceRegistry, Tuple } from './trace.js';

const MAX_STREAMS = 1000;

interface Stream {
  request: Headers;
  start: bigint;
  process: ProcessRef;
  ctx: TraceCtx;
  response?: Headers;
  responseEndStream: boolean;
  trailers?: Headers;
}

function get(h: Headers | undefined, name: string): string | undefined {
  if (!h) return undefined;
  for (const [k, v] of h) if (k === name) return v;
  return undefined;
}

export class Http2Handler {
  readonly role: Role;
  private readonly info: ConnInfo;
  private readonly opts: HttpOptions;
  private readonly clock: MonotonicClock;
  private readonly stats: HttpStats;
  private readonly traces: TraceRegistry;
  private readonly emit: (s: SidelightSpan) => void;
  private readonly h2 = new Http2Connection({ maxStreams: MAX_STREAMS });
  private readonly streams = new Map<number, Stream>();
  private currentTid = 0;

  constructor(role: Role, info: ConnInfo, opts: HttpOptions, clock: MonotonicClock, stats: HttpStats, traces: TraceRegistry, emit: (s: SidelightSpan) => void) {
    this.role = role;
    this.info = info;
    this.opts = opts;
    this.clock = clock;
    this.stats = stats;
    this.traces = traces;
    this.emit = emit;
  }

  private tuple(): Tuple {
    return {
      localAddr: this.info.local.address,
      localPort: this.info.local.port,
      remoteAddr: this.info.remote.address,
      remotePort: this.info.remote.port,
      netns: this.info.netns,
    };
  }

  onData(ev: KernelEvent): void {
    const chunk = { data: ev.data, length: ev.ret, tsStart: ev.tsStart, tsEnd: ev.tsEnd };
    const proc: ProcessRef = { tgid: ev.tgid, tid: ev.tid, comm: ev.comm, cgroupId: ev.cgroupId };
    this.currentTid = ev.tid;
    const fromClient = (this.role === 'server') === (ev.direction === Direction.Ingress);
    const events = fromClient ? this.h2.pushClient(chunk) : this.h2.pushServer(chunk);
    for (const e of events) this.onEvent(e, proc);
  }

  private onEvent(e: H2Event, proc: ProcessRef): void {
    switch (e.type) {
      case 'request': {
        if (this.streams.size >= MAX_STREAMS) {
          this.stats.pendingOverflow++;
          return;
        }
        const headers = e.headers;
        const ctx =
          this.role === 'server'
            ? this.traces.serverStart(this.tuple(), proc.tgid, proc.tid, get(headers, 'traceparent'), get(headers, 'tracestate'))
            : this.traces.clientStart(this.tuple(), proc.tgid, proc.tid, get(headers, 'traceparent'));
        this.streams.set(e.streamId, {
          request: headers,
          start: this.role === 'server' ? e.ts : e.tsStart,
          process: proc,
          ctx,
          responseEndStream: false,
        });
        return;
      }
      case 'response': {
        const st = this.streams.get(e.streamId);
        if (!st) {
          this.stats.unmatchedResponses++;
          return;
        }
        if (e.informational) return;
        st.response = e.headers;
        st.responseEndStream = e.endStream;
        return;
      }
      case 'trailers': {
        const st = this.streams.get(e.streamId);
        if (st && e.from === 'server') st.trailers = e.headers;
        return;
      }
      case 'end': {
        if (e.from !== 'server') return;
        this.finish(e.streamId, e.ts, undefined);
        return;
      }
      case 'reset':
        this.finish(e.streamId, e.ts, e.code);
        return;
      case 'error':
        this.stats.parseErrors++;
        return;
      default:
        return;
    }
  }

  /** The connection closed: streams without an end are counted as unanswered. */
  onClose(): void {
    this.stats.unanswered += this.streams.size;
    for (const st of this.streams.values()) if (this.role === 'server') this.traces.dropActive(st.ctx, st.process.tgid, st.process.tid);
    this.streams.clear();
    if (this.role === 'server') this.traces.serverClosed(this.tuple());
    else this.traces.clientClosed(this.tuple());
  }

  private finish(streamId: number, endMono: bigint, resetCode: number | undefined): void {
    const st = this.streams.get(streamId);
    if (!st) return;
    this.streams.delete(streamId);
    if (this.role === 'server') this.traces.serverEnd(st.ctx, st.process.tgid, st.process.tid, this.currentTid || st.process.tid);
    this.stats.spans++;
    this.emit(this.buildSpan(st, endMono, resetCode));
  }

  private buildSpan(st: Stream, endMono: bigint, resetCode: number | undefined): SidelightSpan {
    const req = st.request;
    const attrs: Record<string, AttrValue> = { [ATTR_NETWORK_PROTOCOL_VERSION]: '2', ...connAttributes(this.info) };
    const authority = parseHost(get(req, ':authority'));
    const serverAddress = this.role === 'server' ? (authority?.host ?? this.info.local.address) : (authority?.host ?? this.info.remote.address);
    const serverPort = this.role === 'server' ? (authority?.port ?? this.info.local.port) : (authority?.port ?? this.info.remote.port);
    attrs[ATTR_SERVER_ADDRESS] = serverAddress;
    attrs[ATTR_SERVER_PORT] = serverPort;
    if (this.role === 'server') {
      attrs[ATTR_CLIENT_ADDRESS] = this.info.remote.address;
      attrs[ATTR_CLIENT_PORT] = this.info.remote.port;
    }
    const path = get(req, ':path') ?? '';
    let name: string;
    let error: string | undefined;

    if (isGrpc(req)) {
      const m = grpcMethod(path);
      attrs[ATTR_RPC_SYSTEM_NAME] = 'grpc';
      if (m) attrs[ATTR_RPC_METHOD] = m.rpcMethod;
      name = m?.rpcMethod ?? 'grpc';
      const status = resetCode !== undefined ? grpcStatusFromReset(resetCode) : grpcCallStatus(st.response, st.responseEndStream, st.trailers);
      if (status) {
        attrs[ATTR_RPC_STATUS_CODE] = status.name;
        if (isGrpcError(status.code, this.role)) error = status.name;
      }
    } else {
      name = setMethod(attrs, get(req, ':method') ?? '');
      const target = parseTarget(path);
      const scheme = get(req, ':scheme') ?? 'http';
      if (this.role === 'server') {
        attrs[ATTR_URL_SCHEME] = scheme;
        attrs[ATTR_URL_PATH] = target.path;
        if (this.opts.captureQuery && target.query !== undefined) attrs[ATTR_URL_QUERY] = target.query;
        const ua = get(req, 'user-agent');
        if (ua !== undefined) attrs[ATTR_USER_AGENT_ORIGINAL] = ua;
      } else {
        const host = serverAddress.includes(':') ? `[${serverAddress}]` : serverAddress;
        const query = this.opts.captureQuery && target.query !== undefined ? `?${target.query}` : '';
        attrs[ATTR_URL_FULL] = `${scheme}://${host}:${serverPort}${target.path}${query}`;
      }
      const status = Number(get(st.response, ':status') ?? 0);
      if (status) attrs[ATTR_HTTP_RESPONSE_STATUS_CODE] = status;
      if (resetCode !== undefined) error = 'stream_reset';
      else if (status >= (this.role === 'server' ? 500 : 400)) error = String(status);
    }
    if (error !== undefined) attrs[ATTR_ERROR_TYPE] = error;
    return {
      ...spanIds(st.ctx),
      kind: this.role,
      name,
      startUnixNs: this.clock.toUnixNs(st.start),
      endUnixNs: this.clock.toUnixNs(endMono),
      attributes: attrs,
      status: error !== undefined ? { code: 'error' } : { code: 'unset' },
      process: st.process,
    };
  }
}
