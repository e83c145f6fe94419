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
 * A stream that never ends still becomes a span, with error.type: `timeout` when no response
 * HEADERS came within requestTimeoutMs (expire()); on connection close/reset/eviction
 * (onClose()) `connection_closed` / `connection_reset` / `_OTHER` — for gRPC the status the
 * library reports instead: UNAVAILABLE on the client, CANCELLED on the server. A gRPC stream
 * reset with CANCEL once its grpc-timeout has passed is DEADLINE_EXCEEDED. A connection
 * upgraded from HTTP/1 (h2c, 101) starts with the upgraded request as stream 1 (H2cHandoff).
 * A stream open when the server direction lost its framing (capture gap over a frame header)
 * may have ended unseen: if it is still open at close or timeout it ends with no status and
 * no error.type (unknown, not guessed).
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
  ATTR_HTTP_ROUTE,
  ATTR_URL_QUERY,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';
import type { MonotonicClock } from './clock.js';
import type { ConnInfo, KernelEvent } from './decode.js';
import {
  GRPC_CANCELLED,
  GRPC_DEADLINE_EXCEEDED,
  GRPC_UNAVAILABLE,
  grpcCallStatus,
  grpcMethod,
  grpcStatusFromReset,
  grpcStatusName,
  grpcTimeoutNs,
  isGrpc,
  isGrpcError,
  type GrpcStatus,
  type Headers,
} from './grpc.js';
import { DEFAULT_REQUEST_TIMEOUT_MS, type CloseReason, type H2cHandoff, type HttpOptions, type HttpStats, type Role } from './http.js';
import { parseHost, parseTarget } from './http.js';
import { Http2Connection, type H2Event, type Http2Stats } from './http2.js';
import { Direction } from './layout.js';
import type { AttrValue, ProcessRef, SidelightSpan } from './span.js';
import { connAttributes, exportedQuery, setMethod, withIds } from './spanbuild.js';
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
  /** DATA payload octets from the client / the server */
  requestBytes: number;
  responseBytes: number;
  clientEnded: boolean;
  /** the server direction lost its framing while this stream was open: its end may be hidden */
  endHidden: boolean;
}

/** HTTP/2 RST_STREAM error code CANCEL */
const H2_CANCEL = 0x8;
/** a CANCEL this close to the grpc-timeout (fraction of it) counts as the deadline passing */
const DEADLINE_SLACK = 0.9;

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
  private readonly h2: Http2Connection;
  private readonly streams = new Map<number, Stream>();
  private currentTid = 0;

  constructor(
    role: Role,
    info: ConnInfo,
    opts: HttpOptions,
    clock: MonotonicClock,
    stats: HttpStats,
    traces: TraceRegistry,
    emit: (s: SidelightSpan) => void,
    upgraded?: H2cHandoff,
  ) {
    this.h2 = new Http2Connection({ maxStreams: MAX_STREAMS, ...(upgraded ? { upgrade: upgraded.upgrade } : {}) });
    if (upgraded) {
      // h2c: the HTTP/1 request answered by 101 is stream 1, half-closed by the client
      this.streams.set(1, {
        request: upgraded.upgrade.requestHeaders,
        start: upgraded.start,
        process: upgraded.process,
        ctx: upgraded.ctx,
        responseEndStream: false,
        requestBytes: upgraded.requestBodyBytes,
        responseBytes: 0,
        clientEnded: true,
        endHidden: false,
      });
    }
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
          requestBytes: 0,
          responseBytes: 0,
          clientEnded: e.endStream,
          endHidden: false,
        });
        return;
      }
      case 'data': {
        const st = this.streams.get(e.streamId);
        if (!st) return;
        if (e.from === 'client') st.requestBytes += e.bytes;
        else st.responseBytes += e.bytes;
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
        if (e.from !== 'server') {
          const st = this.streams.get(e.streamId);
          if (st) st.clientEnded = true;
          return;
        }
        this.finish(e.streamId, e.ts, undefined);
        return;
      }
      case 'reset':
        this.finish(e.streamId, e.ts, e.code);
        return;
      case 'error':
        this.stats.parseErrors++;
        // framing lost (or a protocol error) on the server direction: an end may go unseen
        if (e.from === 'server' && this.h2.stopped('server')) for (const st of this.streams.values()) st.endHidden = true;
        return;
      default:
        return;
    }
  }

  /** open streams */
  get pendingCount(): number {
    return this.streams.size;
  }

  /** End streams with no response HEADERS for requestTimeoutMs: error.type `timeout`. */
  expire(nowMono: bigint): void {
    const limit = BigInt(this.opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS) * 1_000_000n;
    for (const [id, st] of this.streams) {
      if (st.response || nowMono - st.start < limit) continue;
      this.streams.delete(id);
      this.stats.timeouts++;
      this.endUnanswered(st, st.start + limit, 'timeout');
    }
  }

  private endUnanswered(st: Stream, endMono: bigint, reason: string): void {
    if (this.role === 'server') this.traces.dropActive(st.ctx, st.process.tgid, st.process.tid);
    this.stats.spans++;
    this.emit(this.buildSpan(st, endMono, undefined, reason));
  }

  /** The connection closed (reset, evicted) at `endMono`: streams without an end become error spans. */
  onClose(reason: CloseReason = 'connection_closed', endMono: bigint = this.clock.nowMono()): void {
    // the decoder's counters join the agent's (/healthz http.h2) when the connection ends
    const c = this.h2.stats;
    const sum = this.stats.h2;
    for (const k of Object.keys(sum) as (keyof Http2Stats)[]) sum[k] += c[k];
    this.stats.unanswered += this.streams.size;
    const open = [...this.streams.values()];
    this.streams.clear();
    for (const st of open) this.endUnanswered(st, endMono > st.start ? endMono : st.start, reason);
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

  /**
   * gRPC status of a call ended by RST_STREAM: a CANCEL once the grpc-timeout has passed is
   * DEADLINE_EXCEEDED (the client cancels at its deadline; grpc-go servers reset too).
   */
  private resetStatus(st: Stream, code: number, endMono: bigint): GrpcStatus {
    if (code === H2_CANCEL) {
      const timeout = grpcTimeoutNs(get(st.request, 'grpc-timeout'));
      if (timeout !== undefined && Number(endMono - st.start) >= Number(timeout) * DEADLINE_SLACK) {
        return { code: GRPC_DEADLINE_EXCEEDED, name: grpcStatusName(GRPC_DEADLINE_EXCEEDED) };
      }
    }
    return grpcStatusFromReset(code);
  }

  /** `unanswered`: the stream never ended (timeout or connection gone), the reason */
  private buildSpan(st: Stream, endMono: bigint, resetCode: number | undefined, unanswered?: string): SidelightSpan {
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
      let status =
        resetCode !== undefined ? this.resetStatus(st, resetCode, endMono) : grpcCallStatus(st.response, st.responseEndStream, st.trailers);
      // endHidden: the server's bytes were not all seen, the call may have ended unseen: status unknown
      if (!status && unanswered !== undefined && !st.endHidden && unanswered !== 'timeout') {
        // the connection went away mid-call: what the gRPC libraries report then
        const code = this.role === 'client' ? GRPC_UNAVAILABLE : GRPC_CANCELLED;
        status = { code, name: grpcStatusName(code) };
      }
      if (status) {
        attrs[ATTR_RPC_STATUS_CODE] = status.name;
        if (isGrpcError(status.code, this.role)) error = status.name;
      } else if (unanswered !== undefined && !st.endHidden) {
        error = unanswered;
      }
    } else {
      name = setMethod(attrs, get(req, ':method') ?? '');
      const target = parseTarget(path);
      const scheme = get(req, ':scheme') ?? 'http';
      if (this.role === 'server') {
        attrs[ATTR_URL_SCHEME] = scheme;
        attrs[ATTR_URL_PATH] = target.path;
        const route = this.opts.routes?.route(target.path);
        if (route !== undefined) attrs[ATTR_HTTP_ROUTE] = route;
        const q = exportedQuery(target.query, this.opts.captureQuery, this.opts.redactQueryKeys);
        if (q !== undefined) attrs[ATTR_URL_QUERY] = q;
        const ua = get(req, 'user-agent');
        if (ua !== undefined) attrs[ATTR_USER_AGENT_ORIGINAL] = ua;
      } else {
        const host = serverAddress.includes(':') ? `[${serverAddress}]` : serverAddress;
        const q = exportedQuery(target.query, this.opts.captureQuery, this.opts.redactQueryKeys);
        attrs[ATTR_URL_FULL] = `${scheme}://${host}:${serverPort}${target.path}${q !== undefined ? `?${q}` : ''}`;
      }
      const status = Number(get(st.response, ':status') ?? 0);
      if (status) attrs[ATTR_HTTP_RESPONSE_STATUS_CODE] = status;
      if (unanswered !== undefined) error = st.endHidden ? undefined : unanswered;
      else if (resetCode !== undefined) error = 'stream_reset';
      else if (status >= (this.role === 'server' ? 500 : 400)) error = String(status);
    }
    if (error !== undefined) attrs[ATTR_ERROR_TYPE] = error;
    const bodySize: { request?: number; response?: number } = {};
    if (st.clientEnded) bodySize.request = st.requestBytes;
    if (unanswered === undefined && resetCode === undefined) bodySize.response = st.responseBytes;
    return withIds(
      {
        bodySize,
        kind: this.role,
        name,
        startUnixNs: this.clock.toUnixNs(st.start),
        endUnixNs: this.clock.toUnixNs(endMono),
        attributes: attrs,
        status: error !== undefined ? { code: 'error' } : { code: 'unset' },
        process: st.process,
      },
      st.ctx,
      st.start,
    );
  }
}
