/**
 * otlpserver.ts (test helper) — a scripted OTLP endpoint: a real gRPC server (@grpc/grpc-js,
 * the trace and metrics Export methods) or a real HTTP server (node:http, /v1/traces and
 * /v1/metrics) that answers each request with the next scripted Answer (then OK): a gRPC
 * status (with `google.rpc.RetryInfo` in `grpc-status-details-bin` when asked), an HTTP
 * status (with `Retry-After` when asked), or a success carrying a partial_success.
 *
 * Records every request (time, path, decompressed body, headers). One server per call;
 * close() stops it. The protobuf it writes (google.rpc.Status, RetryInfo, Export*Response)
 * is encoded by hand here, independently of the agent's decoder.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type RequestListener, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { Metadata, Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';

export interface Answer {
  /** gRPC: a non-OK status code */
  grpcCode?: number;
  /** HTTP: a non-2xx status */
  httpStatus?: number;
  /** gRPC: RetryInfo.retry_delay in ms; HTTP: a Retry-After header value (seconds) */
  retryDelayMs?: number;
  /** HTTP: a literal Retry-After value (e.g. an HTTP-date) */
  retryAfter?: string;
  /** success with partial_success */
  partial?: { rejected: number; message: string };
  /** error message (gRPC details / HTTP google.rpc.Status message) */
  message?: string;
}

export interface RecordedRequest {
  at: number;
  path: string;
  body: Buffer;
  headers: Record<string, string>;
}

export interface OtlpTestServer {
  /** base URL: gRPC `http://127.0.0.1:P`; HTTP traces `http://127.0.0.1:P/v1/traces` */
  url: string;
  metricsUrl: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

// --- hand-rolled protobuf writer -------------------------------------------------------
function varint(n: bigint): Buffer {
  const out: number[] = [];
  let v = BigInt.asUintN(64, n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return Buffer.from(out);
}
const tag = (no: number, wt: number): Buffer => varint(BigInt((no << 3) | wt));
const fVarint = (no: number, v: number | bigint): Buffer => Buffer.concat([tag(no, 0), varint(BigInt(v))]);
const fBytes = (no: number, b: Buffer | string): Buffer => {
  const buf = typeof b === 'string' ? Buffer.from(b, 'utf8') : b;
  return Buffer.concat([tag(no, 2), varint(BigInt(buf.length)), buf]);
};

/** google.rpc.Status { code, message, details: [Any(RetryInfo)] } */
export function encodeStatus(code: number, message: string, retryDelayMs?: number): Buffer {
  const parts = [fVarint(1, code), fBytes(2, message)];
  if (retryDelayMs !== undefined) {
    const seconds = Math.floor(retryDelayMs / 1000);
    const nanos = Math.round((retryDelayMs % 1000) * 1e6);
    const duration = Buffer.concat([fVarint(1, seconds), ...(nanos ? [fVarint(2, nanos)] : [])]);
    const retryInfo = fBytes(1, duration);
    const any = Buffer.concat([fBytes(1, 'type.googleapis.com/google.rpc.RetryInfo'), fBytes(2, retryInfo)]);
    parts.push(fBytes(3, any));
  }
  return Buffer.concat(parts);
}

/** Export{Trace,Metrics}ServiceResponse { partial_success { rejected = 1; error_message = 2 } } (same layout for both) */
export function encodeExportResponse(partial?: { rejected: number; message: string }): Buffer {
  if (!partial) return Buffer.alloc(0);
  return fBytes(1, Buffer.concat([fVarint(1, partial.rejected), fBytes(2, partial.message)]));
}

// --- servers ---------------------------------------------------------------------------
const TRACE_PATH = '/opentelemetry.proto.collector.trace.v1.TraceService/Export';
const METRICS_PATH = '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export';

/** A self-signed certificate for 127.0.0.1 / localhost (openssl), usable as its own CA. */
export interface TestCert {
  key: Buffer;
  cert: Buffer;
  /** the certificate as a PEM file (for `certificate` / OTEL_EXPORTER_OTLP_CERTIFICATE) */
  certFile: string;
  /** the private key as a PEM file (for `clientKey` when used as a client identity) */
  keyFile: string;
  remove(): void;
}

export function makeTestCert(): TestCert {
  const dir = mkdtempSync(join(tmpdir(), 'sl-cert-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost', '-addext', 'basicConstraints=critical,CA:TRUE'], { stdio: 'ignore' });
  return { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')), certFile: join(dir, 'cert.pem'), keyFile: join(dir, 'key.pem'), remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * `tls`: serve https with this certificate. `clientCa` (with tls): mutual TLS, a client must
 * present a certificate signed by this CA or the handshake fails.
 */
export async function startOtlpServer(protocol: 'grpc' | 'http', script: Answer[] = [], tls?: TestCert, clientCa?: Buffer): Promise<OtlpTestServer> {
  return protocol === 'grpc' ? startGrpc(script, tls, clientCa) : startHttp(script, tls, clientCa);
}

async function startGrpc(script: Answer[], tls?: TestCert, clientCa?: Buffer): Promise<OtlpTestServer> {
  const requests: RecordedRequest[] = [];
  const server = new Server();
  const identity = (b: Buffer): Buffer => b;
  const handler = (path: string) => (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(call.metadata.getMap())) headers[k] = String(v);
    requests.push({ at: Date.now(), path, body: call.request, headers });
    const a = script.shift();
    if (!a || a.grpcCode === undefined) return cb(null, encodeExportResponse(a?.partial));
    const md = new Metadata();
    if (a.retryDelayMs !== undefined) md.set('grpc-status-details-bin', encodeStatus(a.grpcCode, a.message ?? 'scripted', a.retryDelayMs));
    cb({ code: a.grpcCode, details: a.message ?? 'scripted', metadata: md }, null);
  };
  const def = (path: string) => ({ path, requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity });
  server.addService({ Export: def(TRACE_PATH) }, { Export: handler(TRACE_PATH) });
  server.addService({ ExportMetrics: def(METRICS_PATH) }, { ExportMetrics: handler(METRICS_PATH) });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', tls ? ServerCredentials.createSsl(clientCa ?? null, [{ private_key: tls.key, cert_chain: tls.cert }], clientCa !== undefined) : ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const scheme = tls ? 'https' : 'http';
  return {
    url: `${scheme}://127.0.0.1:${port}`,
    metricsUrl: `${scheme}://127.0.0.1:${port}`,
    requests,
    close: () => new Promise<void>((r) => server.tryShutdown(() => r())),
  };
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) parts.push(c);
  const raw = Buffer.concat(parts);
  return req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
}

async function startHttp(script: Answer[], tls?: TestCert, clientCa?: Buffer): Promise<OtlpTestServer> {
  const requests: RecordedRequest[] = [];
  const listener: RequestListener = (req, res) => {
    void readAll(req).then((body) => {
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers)) headers[k] = String(v);
      requests.push({ at: Date.now(), path: req.url ?? '', body, headers });
      const json = String(req.headers['content-type']).includes('json');
      const a = script.shift();
      if (!a || a.httpStatus === undefined) {
        const out = json
          ? Buffer.from(a?.partial ? JSON.stringify({ partialSuccess: { rejectedSpans: String(a.partial.rejected), rejectedDataPoints: String(a.partial.rejected), errorMessage: a.partial.message } }) : '{}')
          : encodeExportResponse(a?.partial);
        res.writeHead(200, { 'content-type': json ? 'application/json' : 'application/x-protobuf', 'content-length': out.length });
        res.end(out);
        return;
      }
      const h: Record<string, string> = { 'content-type': json ? 'application/json' : 'application/x-protobuf' };
      if (a.retryAfter !== undefined) h['retry-after'] = a.retryAfter;
      else if (a.retryDelayMs !== undefined) h['retry-after'] = String(Math.round(a.retryDelayMs / 1000));
      const out = json ? Buffer.from(JSON.stringify({ code: 14, message: a.message ?? 'scripted' })) : encodeStatus(14, a.message ?? 'scripted');
      res.writeHead(a.httpStatus, { ...h, 'content-length': out.length });
      res.end(out);
    });
  };
  const server: HttpServer = tls ? createHttpsServer({ key: tls.key, cert: tls.cert, ...(clientCa ? { ca: clientCa, requestCert: true, rejectUnauthorized: true } : {}) }, listener) : createServer(listener);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  const scheme = tls ? 'https' : 'http';
  return {
    url: `${scheme}://127.0.0.1:${port}/v1/traces`,
    metricsUrl: `${scheme}://127.0.0.1:${port}/v1/metrics`,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
