/**
 * sinks.ts — where finished spans go: an OTLP endpoint (gRPC, HTTP/protobuf or HTTP/JSON;
 * protobuf encoded by encode.ts, JSON serialised by @opentelemetry/otlp-transformer, sent by
 * transport.ts) for the pipeline, and
 * the one-line text form of a span the terminal view prints.
 *
 * A sink is created once at start and shut down once at exit. export() resolves, never
 * rejects: failures come back as an outcome the pipeline counts.
 */
import { readFileSync } from 'node:fs';
import { credentials, Metadata } from '@grpc/grpc-js';
import { CompressionAlgorithm } from '@opentelemetry/otlp-exporter-base';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import {
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_NETWORK_PEER_ADDRESS,
  ATTR_NETWORK_PEER_PORT,
  ATTR_URL_FULL,
  ATTR_URL_PATH,
} from '@opentelemetry/semantic-conventions';
import type { SidelightSpan } from '../receiver/span.js';
import { assembleTraceRequest, type EncodedSpan, type RequestBuffer, type SpanWithResource } from './encode.js';
import { createTransport, displayUrl, isRetryableGrpc, isRetryableHttp, USER_AGENT, type OtlpTransport, type TransportConfig } from './transport.js';

/** Where and how spans are exported: the transport's settings. */
export type TracesExportConfig = TransportConfig;

export interface ExportOutcome {
  ok: boolean;
  error?: string;
  /** worth trying again (OTLP retry rules); false for rejected data */
  retryable?: boolean;
  /** bounded outcome label for counters: `OK`, a gRPC status name, `HTTP 503`, `ECONNREFUSED` */
  code?: string;
  /** the server asked to wait this long before retrying (RetryInfo / Retry-After), ms */
  retryAfterMs?: number;
  /** partial success: spans the server accepted the request but rejected */
  rejected?: number;
  /** partial success: the server's explanation */
  rejectMessage?: string;
}

/**
 * Per the OTLP spec; a failure without a status (connection refused, reset) is retryable.
 * gRPC RESOURCE_EXHAUSTED is retryable only with RetryInfo, which transport.ts checks.
 */
export function isRetryable(protocol: TracesExportConfig['protocol'], code: unknown): boolean {
  if (typeof code !== 'number') return true;
  return protocol === 'grpc' ? isRetryableGrpc(code, false) : isRetryableHttp(code);
}

export interface SpanSink {
  readonly name: string;
  export(spans: ReadableSpan[]): Promise<ExportOutcome>;
  /**
   * Optional: the same batch as the receiver's spans with their resources, for a sink that
   * encodes them itself (encode.ts) instead of from ReadableSpans. The pipeline prefers it.
   */
  exportSpans?(items: readonly SpanWithResource[]): Promise<ExportOutcome>;
  /** true: the pipeline encodes each span when it is queued (encode.ts) and sends exportEncoded() */
  readonly preEncoded?: boolean;
  exportEncoded?(items: readonly EncodedSpan[]): Promise<ExportOutcome>;
  shutdown(): Promise<void>;
}

/** Constructor options for the OpenTelemetry JS OTLP exporters (metrics.ts uses them), from our config. */
export function exporterOptions(c: TracesExportConfig) {
  const compression = c.compression === 'gzip' ? CompressionAlgorithm.GZIP : CompressionAlgorithm.NONE;
  const ca = c.certificate ? readFileSync(c.certificate) : undefined;
  const metadata = new Metadata();
  for (const [k, v] of Object.entries(c.headers)) metadata.set(k, v);
  const secure = c.url.startsWith('https://') && !c.insecure;
  return {
    grpc: {
      url: c.url,
      metadata,
      compression,
      timeoutMillis: c.timeoutMs,
      userAgent: USER_AGENT,
      credentials: secure ? credentials.createSsl(ca ?? null) : credentials.createInsecure(),
    },
    http: {
      url: c.url,
      headers: c.headers,
      compression,
      timeoutMillis: c.timeoutMs,
      userAgent: USER_AGENT,
      ...(ca ? { httpAgentOptions: { ca } } : {}),
    },
  };
}

/** ExportTraceServiceResponse.partial_success from a response body (protobuf or JSON). */
export function tracePartialSuccess(protocol: TracesExportConfig['protocol'], body: Uint8Array | undefined): { rejected: number; message: string } | undefined {
  if (!body || body.length === 0) return undefined;
  try {
    const r = (protocol === 'http/json' ? JsonTraceSerializer : ProtobufTraceSerializer).deserializeResponse(body);
    const p = r.partialSuccess;
    if (!p) return undefined;
    const rejected = Number(p.rejectedSpans ?? 0);
    const message = p.errorMessage ?? '';
    return rejected > 0 || message !== '' ? { rejected, message } : undefined;
  } catch {
    return undefined; // a response we cannot read still means the data was accepted
  }
}

/**
 * Spans to an OTLP endpoint: protobuf (gRPC, HTTP) assembled from spans the pipeline encoded
 * when it queued them (encode.ts, byte for byte what @opentelemetry/otlp-transformer makes),
 * JSON serialised by otlp-transformer; sent by our transport (transport.ts), the answer
 * turned into an ExportOutcome. No retries here: the pipeline owns them.
 */
/** request buffers kept between exports (each up to a request's size, ~1 MiB by default) */
const MAX_SPARE_BODIES = 2;

export class OtlpSink implements SpanSink {
  readonly name: string;
  private readonly transport: OtlpTransport;
  private readonly protocol: TracesExportConfig['protocol'];
  /** protobuf (gRPC, HTTP): spans are encoded as they are queued; JSON goes through ReadableSpans */
  readonly preEncoded: boolean;
  /** request buffers free for the next exportEncoded (one is taken per export in flight) */
  private readonly spareBodies: RequestBuffer[] = [];

  constructor(c: TracesExportConfig, transport: OtlpTransport = createTransport(c, 'traces')) {
    this.name = `otlp ${c.protocol} ${displayUrl(c.url)}`;
    this.transport = transport;
    this.protocol = c.protocol;
    this.preEncoded = c.protocol !== 'http/json';
  }

  async export(spans: ReadableSpan[]): Promise<ExportOutcome> {
    let body: Uint8Array | undefined;
    try {
      body = (this.protocol === 'http/json' ? JsonTraceSerializer : ProtobufTraceSerializer).serializeRequest(spans);
    } catch (e) {
      return { ok: false, retryable: false, code: 'SERIALIZE_ERROR', error: `serialize: ${(e as Error).message}` };
    }
    return this.send(body);
  }

  /** protobuf only: a request assembled from spans encoded when they were queued */
  async exportEncoded(items: readonly EncodedSpan[]): Promise<ExportOutcome> {
    if (!this.preEncoded) return { ok: false, retryable: false, code: 'SERIALIZE_ERROR', error: `serialize: ${this.protocol} takes no encoded spans` };
    let body: Uint8Array;
    // a request buffer is reused only where the transport is done with it at its answer
    const reuse = this.transport.bodyFreeOnAnswer === true ? (this.spareBodies.pop() ?? {}) : undefined;
    try {
      body = assembleTraceRequest(items, reuse);
    } catch (e) {
      if (reuse) this.spareBodies.push(reuse);
      return { ok: false, retryable: false, code: 'SERIALIZE_ERROR', error: `serialize: ${(e as Error).message}` };
    }
    try {
      return await this.send(body);
    } finally {
      if (reuse && this.spareBodies.length < MAX_SPARE_BODIES) this.spareBodies.push(reuse);
    }
  }

  private async send(body: Uint8Array | undefined): Promise<ExportOutcome> {
    if (!body) return { ok: false, retryable: false, code: 'SERIALIZE_ERROR', error: 'serialize: nothing to send' };
    const r = await this.transport.send(body);
    if (!r.ok) {
      return { ok: false, retryable: r.retryable, code: r.code, ...(r.error ? { error: r.error } : {}), ...(r.retryAfterMs !== undefined ? { retryAfterMs: r.retryAfterMs } : {}) };
    }
    const partial = tracePartialSuccess(this.protocol, r.body);
    return { ok: true, code: 'OK', ...(partial ? { rejected: partial.rejected, rejectMessage: partial.message } : {}) };
  }

  async shutdown(): Promise<void> {
    await this.transport.shutdown();
  }
}

function ms(ns: bigint): string {
  const v = Number(ns) / 1e6;
  return v >= 100 ? `${v.toFixed(0)}ms` : `${v.toFixed(2)}ms`;
}

/** One readable line per span, for people watching a terminal. */
export function formatSpanLine(s: SidelightSpan, serviceName: string): string {
  const a = s.attributes;
  const when = new Date(Number(s.startUnixNs / 1_000_000n)).toISOString().slice(11, 23);
  const kind = s.kind.toUpperCase().padEnd(6);
  const method = String(a[ATTR_HTTP_REQUEST_METHOD] ?? s.name);
  const what = a[ATTR_URL_FULL] ?? a[ATTR_URL_PATH] ?? '';
  const status = a[ATTR_HTTP_RESPONSE_STATUS_CODE] ?? '';
  const peer = a[ATTR_NETWORK_PEER_ADDRESS] !== undefined ? `${String(a[ATTR_NETWORK_PEER_ADDRESS])}:${String(a[ATTR_NETWORK_PEER_PORT])}` : '';
  const err = s.status.code === 'error' ? ' ERROR' : '';
  return (
    `${when} ${kind} ${serviceName} (pid ${s.process.tgid}) ${method} ${String(what)} ${String(status)}${err} ` +
    `${ms(s.endUnixNs - s.startUnixNs)} peer=${peer} trace=${s.traceId ?? '-'} span=${s.spanId ?? '-'}`
  );
}

