/**
 * transport.ts — sends one serialized OTLP export request (traces, metrics or logs) over gRPC
 * (@grpc/grpc-js, a raw unary call) or HTTP (node:http/https) and classifies the answer by
 * the OTLP rules: success (with the response body, for partial success), retryable (with the
 * server's requested delay: gRPC `google.rpc.RetryInfo`, HTTP `Retry-After`) or permanent.
 *
 * Why our own transport: the OpenTelemetry JS exporters retry HTTP internally (a second,
 * hidden retry loop under ours), do not retry gRPC at all, drop RetryInfo and keep partial
 * success to a diag log line. Serialization stays with @opentelemetry/otlp-transformer.
 *
 * One transport per signal, created at start; one request at a time is the caller's rule
 * (the pipeline), but concurrent sends are safe. send() never rejects. shutdown() closes the
 * gRPC channel / HTTP keep-alive agent. TLS files (CA bundle, mutual-TLS client certificate
 * and key) are read once, at creation.
 */
import { request as httpRequest, Agent as HttpAgent, type IncomingMessage } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { gunzip, gzip } from 'node:zlib';
import { Client, credentials, Metadata, status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';
import { messageFromStatus, parseRetryAfter, retryDelayFromStatus } from './rpcstatus.js';

const gzipAsync = promisify(gzip);
const gunzipAsync = promisify(gunzip);

export type OtlpSignal = 'traces' | 'metrics' | 'logs';

/** Where and how one signal is exported (config.ts `TracesExport` has this shape). */
export interface TransportConfig {
  url: string;
  protocol: 'grpc' | 'http/protobuf' | 'http/json';
  headers: Record<string, string>;
  timeoutMs: number;
  compression: 'gzip' | 'none';
  insecure: boolean;
  certificate?: string;
  /** PEM client certificate (chain) for mutual TLS; used only together with clientKey, on https:// */
  clientCertificate?: string;
  /** PEM private key of clientCertificate */
  clientKey?: string;
}

export interface SendResult {
  ok: boolean;
  /** permanent failures are false; only meaningful when !ok */
  retryable: boolean;
  /** short, bounded-cardinality outcome: `OK`, a gRPC status name, `HTTP 503`, or a socket error code (`ECONNREFUSED`) */
  code: string;
  /** human-readable failure reason */
  error?: string;
  /** delay the server asked for (RetryInfo / Retry-After), ms */
  retryAfterMs?: number;
  /** response body on success (an Export*ServiceResponse) */
  body?: Uint8Array;
}

export interface OtlpTransport {
  send(body: Uint8Array): Promise<SendResult>;
  /**
   * true: once send() has resolved, nothing reads `body` any more, so the caller may reuse it
   * (gRPC: grpc-js frames a copy of the message; HTTP with gzip: the compressed copy is sent).
   * Plain HTTP writes `body` itself, and the answer can come before the write ended.
   */
  readonly bodyFreeOnAnswer?: boolean;
  shutdown(): Promise<void>;
}

export const USER_AGENT = `${AGENT_NAME}/${AGENT_VERSION}`;
const GRPC_PATH: Record<OtlpSignal, string> = {
  traces: '/opentelemetry.proto.collector.trace.v1.TraceService/Export',
  metrics: '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export',
  logs: '/opentelemetry.proto.collector.logs.v1.LogsService/Export',
};
/** gRPC codes the OTLP spec calls retryable; RESOURCE_EXHAUSTED only with RetryInfo. */
const GRPC_RETRYABLE = new Set([1, 4, 10, 11, 14, 15]);
const HTTP_RETRYABLE = new Set([429, 502, 503, 504]);
/** Longest response body read (partial-success text); the rest is discarded. */
const MAX_RESPONSE_BYTES = 1 << 20;

const GRPC_NAMES = new Map<number, string>(Object.entries(GrpcStatus).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]));

export function grpcCodeName(code: number): string {
  return GRPC_NAMES.get(code) ?? `CODE_${code}`;
}

export function isRetryableGrpc(code: number, hasRetryInfo: boolean): boolean {
  return GRPC_RETRYABLE.has(code) || (code === GrpcStatus.RESOURCE_EXHAUSTED && hasRetryInfo);
}

export function isRetryableHttp(status: number): boolean {
  return HTTP_RETRYABLE.has(status);
}

/** The URL as it may appear in logs: user, password and query values masked. */
export function displayUrl(s: string): string {
  let url: URL;
  try {
    url = new URL(s);
  } catch {
    return s;
  }
  if (!url.username && !url.password && !url.search) return s; // as configured
  if (url.username) url.username = '***';
  if (url.password) url.password = '***';
  for (const k of [...url.searchParams.keys()]) url.searchParams.set(k, '***');
  return url.href.replace(/%2A%2A%2A/g, '***');
}

export function createTransport(c: TransportConfig, signal: OtlpSignal): OtlpTransport {
  return c.protocol === 'grpc' ? new GrpcTransport(c, signal) : new HttpTransport(c);
}

function caOf(c: TransportConfig): Buffer | undefined {
  return c.certificate ? readFileSync(c.certificate) : undefined;
}

/** The mutual-TLS client identity (both files), read once at creation like the CA. */
function clientIdentityOf(c: TransportConfig): { cert: Buffer; key: Buffer } | undefined {
  return c.clientCertificate && c.clientKey ? { cert: readFileSync(c.clientCertificate), key: readFileSync(c.clientKey) } : undefined;
}

class GrpcTransport implements OtlpTransport {
  readonly bodyFreeOnAnswer = true;
  private readonly client: Client;
  private readonly path: string;
  private readonly metadata: Metadata;
  private readonly timeoutMs: number;

  constructor(c: TransportConfig, signal: OtlpSignal) {
    const u = new URL(c.url);
    const secure = u.protocol === 'https:' && !c.insecure;
    const port = u.port || (u.protocol === 'https:' ? '443' : '80');
    const id = secure ? clientIdentityOf(c) : undefined;
    this.client = new Client(`${u.hostname}:${port}`, secure ? credentials.createSsl(caOf(c) ?? null, id?.key ?? null, id?.cert ?? null) : credentials.createInsecure(), {
      'grpc.default_compression_algorithm': c.compression === 'gzip' ? 2 : 0,
      'grpc.primary_user_agent': USER_AGENT,
    });
    this.path = GRPC_PATH[signal];
    this.metadata = new Metadata();
    for (const [k, v] of Object.entries(c.headers)) this.metadata.set(k.toLowerCase(), v);
    this.timeoutMs = c.timeoutMs;
  }

  send(body: Uint8Array): Promise<SendResult> {
    return new Promise((resolve) => {
      try {
        this.client.makeUnaryRequest(
          this.path,
          (b: Buffer) => b,
          (b: Buffer) => b,
          Buffer.from(body.buffer, body.byteOffset, body.byteLength),
          this.metadata.clone(),
          { deadline: Date.now() + this.timeoutMs },
          (err: ServiceError | null, resp?: Buffer) => {
            if (!err) return resolve({ ok: true, retryable: false, code: 'OK', ...(resp ? { body: resp } : {}) });
            const details = err.metadata?.get('grpc-status-details-bin')[0];
            const retryAfterMs = Buffer.isBuffer(details) ? retryDelayFromStatus(details) : undefined;
            resolve({
              ok: false,
              retryable: isRetryableGrpc(err.code, retryAfterMs !== undefined),
              code: grpcCodeName(err.code),
              error: `${grpcCodeName(err.code)}: ${err.details || err.message}`,
              ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
            });
          },
        );
      } catch (e) {
        resolve({ ok: false, retryable: false, code: 'CLIENT_ERROR', error: (e as Error).message });
      }
    });
  }

  async shutdown(): Promise<void> {
    this.client.close();
  }
}

class HttpTransport implements OtlpTransport {
  private readonly url: URL;
  private readonly headers: Record<string, string>;
  private readonly gzip: boolean;
  readonly bodyFreeOnAnswer: boolean;
  private readonly timeoutMs: number;
  private readonly agent: HttpAgent | HttpsAgent;
  private readonly https: boolean;

  constructor(c: TransportConfig) {
    this.url = new URL(c.url);
    this.https = this.url.protocol === 'https:';
    const ca = caOf(c);
    const id = this.https ? clientIdentityOf(c) : undefined;
    this.agent = this.https ? new HttpsAgent({ keepAlive: true, maxSockets: 2, ...(ca ? { ca } : {}), ...(id ?? {}) }) : new HttpAgent({ keepAlive: true, maxSockets: 2 });
    this.gzip = c.compression === 'gzip';
    this.bodyFreeOnAnswer = this.gzip;
    this.timeoutMs = c.timeoutMs;
    this.headers = {
      ...c.headers,
      'content-type': c.protocol === 'http/json' ? 'application/json' : 'application/x-protobuf',
      'user-agent': USER_AGENT,
      ...(this.gzip ? { 'content-encoding': 'gzip' } : {}),
    };
  }

  async send(body: Uint8Array): Promise<SendResult> {
    let payload: Buffer;
    try {
      payload = this.gzip ? await gzipAsync(body) : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
    } catch (e) {
      return { ok: false, retryable: false, code: 'CLIENT_ERROR', error: `gzip: ${(e as Error).message}` };
    }
    return new Promise((resolve) => {
      const req = (this.https ? httpsRequest : httpRequest)(
        this.url,
        { method: 'POST', agent: this.agent, headers: { ...this.headers, 'content-length': String(payload.length) }, signal: AbortSignal.timeout(this.timeoutMs) },
        (res) => {
          readBody(res).then(
            (data) => resolve(classifyHttp(res, data)),
            (e: Error) => resolve({ ok: false, retryable: true, code: 'RESPONSE_ERROR', error: `reading response: ${e.message}` }),
          );
        },
      );
      req.on('error', (e: NodeJS.ErrnoException) => {
        const timeout = e.name === 'AbortError' || e.name === 'TimeoutError';
        resolve({
          ok: false,
          retryable: true,
          code: timeout ? 'TIMEOUT' : (e.code ?? 'NETWORK_ERROR'),
          error: timeout ? `no response within ${this.timeoutMs} ms` : e.message,
        });
      });
      req.end(payload);
    });
  }

  async shutdown(): Promise<void> {
    this.agent.destroy();
  }
}

async function readBody(res: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    if (n < MAX_RESPONSE_BYTES) parts.push(chunk);
    n += chunk.length;
  }
  const raw = Buffer.concat(parts);
  return res.headers['content-encoding'] === 'gzip' ? gunzipAsync(raw) : raw;
}

/** An OTLP/HTTP error body is a google.rpc.Status (protobuf or JSON): its message, if any. */
function errorMessage(res: IncomingMessage, data: Buffer): string {
  if (data.length === 0) return '';
  if (String(res.headers['content-type'] ?? '').includes('json')) {
    try {
      const j = JSON.parse(data.toString('utf8')) as { message?: unknown };
      return typeof j.message === 'string' ? j.message : data.toString('utf8').slice(0, 200);
    } catch {
      return data.toString('utf8').slice(0, 200);
    }
  }
  if (String(res.headers['content-type'] ?? '').includes('protobuf')) {
    return messageFromStatus(data) ?? '';
  }
  return data.toString('utf8').slice(0, 200);
}

function classifyHttp(res: IncomingMessage, data: Buffer): SendResult {
  const status = res.statusCode ?? 0;
  if (status >= 200 && status < 300) return { ok: true, retryable: false, code: 'OK', body: data };
  const header = res.headers['retry-after'];
  let retryAfterMs = parseRetryAfter(Array.isArray(header) ? header[0] : header);
  if (retryAfterMs === undefined && String(res.headers['content-type'] ?? '').includes('protobuf')) retryAfterMs = retryDelayFromStatus(data);
  const msg = errorMessage(res, data);
  return {
    ok: false,
    retryable: isRetryableHttp(status),
    code: `HTTP ${status}`,
    error: `HTTP ${status}${msg ? `: ${msg}` : ''}`,
    ...(retryAfterMs !== undefined ? { retryAfterMs } : {}),
  };
}
