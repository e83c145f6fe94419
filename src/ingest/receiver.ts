/**
 * receiver.ts — Sidelight's OTLP receiver, where a node-level Collector agent would stand:
 * gRPC (the trace/metrics/logs Export services) and HTTP (/v1/traces, /v1/metrics, /v1/logs;
 * protobuf or JSON; gzip bodies), optional TLS. Each request is decoded, checked (unusable
 * items rejected as a partial success), admitted by the per-sender and total rate limits,
 * enriched with the sender's workload identity (senders.ts; never overwriting), re-encoded
 * and queued for forwarding (forward.ts). Answers like the Collector's OTLP receiver:
 * success / partial success; InvalidArgument or 400 for undecodable data; Unavailable or
 * 503 with RetryInfo / Retry-After when the forward queue is full; ResourceExhausted or 429
 * with a retry delay when a rate limit is hit; ResourceExhausted or 413 over
 * `maxRequestBytes`.
 *
 * Lifetime: start() binds both servers (throws naming the address when it cannot), stop()
 * closes them and flushes the forward queue. Main thread; every refusal is counted.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { gunzip } from 'node:zlib';
import { Metadata, Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall, type ServiceDefinition } from '@grpc/grpc-js';
import type { ReceiverOptions, TracesExport } from '../config.js';
import { parseHostPort } from '../health.js';
import type { ReceiverSelfStats } from '../otlp/selfmetrics.js';
import {
  decodeJson,
  decodeProto,
  encodeProto,
  encodeResponse,
  encodeStatus,
  InvalidRequestError,
  SIGNAL_INFO,
  SIGNALS,
  messageType,
  type OtlpMessage,
  type Signal,
} from './codec.js';
import { Forwarder } from './forward.js';
import { addAbsent, countItems, hasHopSpans, rejectInvalid, resources, stringAttribute } from './model.js';
import { Senders, type Sender } from './senders.js';

export interface ReceiverStats {
  requests: number;
  invalid: number;
  tooLarge: number;
  unsupported: number;
  throttled: number;
  queueFull: number;
  rejectedItems: number;
  enrichedResources: number;
  received: Record<Signal, number>;
}

/** What handle() decided; the transports turn it into their own status. */
type Answer =
  | { kind: 'ok'; rejected: number; message: string }
  | { kind: 'invalid'; message: string }
  | { kind: 'full'; retryAfterMs: number; message: string }
  | { kind: 'throttled'; retryAfterMs: number; message: string };

const QUEUE_FULL_RETRY_MS = 1000;

export class OtlpReceiver {
  private readonly opts: ReceiverOptions;
  readonly forwarder: Forwarder;
  readonly senders: Senders;
  private grpc: Server | undefined;
  private http: HttpServer | undefined;
  private grpcPort = 0;
  private httpPort = 0;
  private readonly onError: (msg: string) => void;
  readonly stats: ReceiverStats = {
    requests: 0,
    invalid: 0,
    tooLarge: 0,
    unsupported: 0,
    throttled: 0,
    queueFull: 0,
    rejectedItems: 0,
    enrichedResources: 0,
    received: { traces: 0, metrics: 0, logs: 0 },
  };

  constructor(
    opts: ReceiverOptions,
    targets: Partial<Record<Signal, TracesExport | null>>,
    forward: { delayMs: number; retry?: { initialMs: number; maxMs: number; maxElapsedMs: number } },
    senders: Senders,
    onError: (msg: string) => void = () => {},
  ) {
    this.opts = opts;
    this.onError = onError;
    this.senders = senders;
    this.forwarder = new Forwarder(
      {
        queueBytes: opts.queueBytes,
        maxBatchBytes: Math.max(opts.maxRequestBytes, 1 << 20),
        delayMs: forward.delayMs,
        ...(forward.retry ? { retryInitialMs: forward.retry.initialMs, retryMaxMs: forward.retry.maxMs, retryMaxElapsedMs: forward.retry.maxElapsedMs } : {}),
      },
      targets,
      onError,
    );
  }

  /** Bound addresses, `host:port` (resolves port 0); undefined for a server that is off. */
  get addresses(): { grpc?: string; http?: string } {
    const g = parseHostPort(this.opts.grpcAddress);
    const h = parseHostPort(this.opts.httpAddress);
    const fmt = (host: string, port: number): string => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`);
    return {
      ...(this.grpc && g ? { grpc: fmt(g.host, this.grpcPort) } : {}),
      ...(this.http && h ? { http: fmt(h.host, this.httpPort) } : {}),
    };
  }

  async start(): Promise<void> {
    // load the vendored protos now: a broken install fails the start, not every request with a 400
    try {
      for (const sig of SIGNALS) messageType(SIGNAL_INFO[sig].request);
    } catch (e) {
      throw new Error(`receiver: cannot load the OTLP protos (proto/ in the install): ${(e as Error).message}`);
    }
    const tls = this.opts.tls.certFile !== '' ? { cert: readFileSync(this.opts.tls.certFile), key: readFileSync(this.opts.tls.keyFile) } : undefined;
    if (this.opts.grpcAddress !== '') await this.startGrpc(tls);
    if (this.opts.httpAddress !== '') await this.startHttp(tls);
  }

  // ------------------------------------------------------------------------------ core

  private handle(signal: Signal, msg: OtlpMessage, size: number, peerAddress: string, peerPort: number, localPort: number): Answer {
    let sender: Sender;
    try {
      sender = this.senders.identify(peerAddress, peerPort, localPort);
    } catch (e) {
      this.onError(`receiver: identifying ${peerAddress}:${peerPort}: ${(e as Error).message}`);
      sender = { key: peerAddress, attributes: {} };
    }
    const wait = this.senders.admit(sender.key, size);
    if (wait > 0) {
      this.stats.throttled++;
      return { kind: 'throttled', retryAfterMs: wait, message: `rate limit for sender ${sender.key} exceeded; retry in ${wait} ms` };
    }
    if (!this.forwarder.hasRoom(size)) {
      this.stats.queueFull++;
      this.forwarder.refused(signal, countItems(signal, msg));
      return { kind: 'full', retryAfterMs: QUEUE_FULL_RETRY_MS, message: 'sidelight forward queue is full; retry later' };
    }
    const { rejected, message } = rejectInvalid(signal, msg);
    this.stats.rejectedItems += rejected;
    const items = countItems(signal, msg);
    this.stats.received[signal] += items;
    if (items === 0) return { kind: 'ok', rejected, message };
    for (const r of resources(signal, msg)) {
      let added = addAbsent(r, sender.attributes);
      const uid = stringAttribute(r, 'k8s.pod.uid');
      const ip = stringAttribute(r, 'k8s.pod.ip');
      if (uid !== undefined || ip !== undefined) added += addAbsent(r, this.senders.podByResource(uid, ip));
      if (added > 0) this.stats.enrichedResources++;
    }
    if (signal === 'traces' && sender.pid !== undefined && hasHopSpans(msg)) this.senders.noteSdkSender(sender.pid);
    const bytes = encodeProto(signal, msg);
    if (!this.forwarder.offer(signal, bytes, items)) {
      this.stats.queueFull++;
      return { kind: 'full', retryAfterMs: QUEUE_FULL_RETRY_MS, message: 'sidelight forward queue is full; retry later' };
    }
    return { kind: 'ok', rejected, message };
  }

  // ------------------------------------------------------------------------------ gRPC

  private async startGrpc(tls: { cert: Buffer; key: Buffer } | undefined): Promise<void> {
    const hp = parseHostPort(this.opts.grpcAddress);
    if (!hp) throw new Error(`receiver.grpcAddress: invalid address ${JSON.stringify(this.opts.grpcAddress)}`);
    const server = new Server({
      'grpc.max_receive_message_length': this.opts.maxRequestBytes,
    });
    const raw = (b: Buffer): Buffer => b;
    for (const signal of SIGNALS) {
      const info = SIGNAL_INFO[signal];
      const def: ServiceDefinition = {
        Export: {
          path: info.grpcPath,
          requestStream: false,
          responseStream: false,
          requestSerialize: raw,
          requestDeserialize: raw,
          responseSerialize: raw,
          responseDeserialize: raw,
          originalName: 'Export',
        },
      };
      server.addService(def, {
        Export: (call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>) => this.onGrpc(signal, call, cb),
      });
    }
    const host = hp.host.includes(':') ? `[${hp.host}]` : hp.host;
    const creds = tls ? ServerCredentials.createSsl(null, [{ cert_chain: tls.cert, private_key: tls.key }]) : ServerCredentials.createInsecure();
    this.grpcPort = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`${host}:${hp.port}`, creds, (err, port) =>
        err ? reject(new Error(`receiver: cannot listen for OTLP/gRPC on ${this.opts.grpcAddress}: ${err.message}`)) : resolve(port),
      ),
    );
    this.grpc = server;
  }

  private onGrpc(signal: Signal, call: ServerUnaryCall<Buffer, Buffer>, cb: sendUnaryData<Buffer>): void {
    this.stats.requests++;
    const body = call.request;
    const [addr, port] = splitPeer(call.getPeer());
    let answer: Answer;
    try {
      answer = this.handle(signal, decodeProto(signal, body), body.length, addr, port, this.grpcPort);
    } catch (e) {
      if (!(e instanceof InvalidRequestError)) this.onError(`receiver: ${signal} from ${addr}: ${(e as Error).message}`);
      this.stats.invalid++;
      answer = { kind: 'invalid', message: (e as Error).message };
    }
    switch (answer.kind) {
      case 'ok':
        cb(null, Buffer.from(encodeResponse(signal, answer.rejected, answer.message, false)));
        return;
      case 'invalid':
        cb({ code: status.INVALID_ARGUMENT, details: answer.message });
        return;
      case 'full':
      case 'throttled': {
        const code = answer.kind === 'full' ? status.UNAVAILABLE : status.RESOURCE_EXHAUSTED;
        const md = new Metadata();
        md.set('grpc-status-details-bin', Buffer.from(encodeStatus(code, answer.message, answer.retryAfterMs)));
        cb({ code, details: answer.message, metadata: md });
      }
    }
  }

  // ------------------------------------------------------------------------------ HTTP

  private async startHttp(tls: { cert: Buffer; key: Buffer } | undefined): Promise<void> {
    const hp = parseHostPort(this.opts.httpAddress);
    if (!hp) throw new Error(`receiver.httpAddress: invalid address ${JSON.stringify(this.opts.httpAddress)}`);
    const handler = (req: IncomingMessage, res: ServerResponse): void => this.onHttp(req, res);
    const server = tls ? createHttpsServer({ cert: tls.cert, key: tls.key }, handler) : createHttpServer(handler);
    server.keepAliveTimeout = 30_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new Error(`receiver: cannot listen for OTLP/HTTP on ${this.opts.httpAddress}: ${e.message}`)));
      server.listen(hp.port, hp.host, () => resolve());
    });
    server.on('error', (e) => this.onError(`receiver http: ${e.message}`));
    this.httpPort = (server.address() as AddressInfo).port;
    this.http = server;
  }

  private onHttp(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0];
    const signal = SIGNALS.find((s) => SIGNAL_INFO[s].httpPath === path);
    const ctype = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const json = ctype === 'application/json';
    const reply = (code: number, body: Uint8Array, headers: Record<string, string> = {}): void => {
      if (res.headersSent) return;
      res.writeHead(code, { 'content-type': json ? 'application/json' : 'application/x-protobuf', 'content-length': String(body.length), ...headers });
      res.end(body);
    };
    const fail = (code: number, grpcCode: number, message: string, headers: Record<string, string> = {}, retryAfterMs?: number): void => {
      reply(code, encodeStatus(grpcCode, message, retryAfterMs, json), headers);
      if (code === 413 || code === 400) req.resume();
    };
    if (!signal) {
      this.stats.unsupported++;
      fail(404, status.UNIMPLEMENTED, `unknown path ${JSON.stringify(path)}: use /v1/traces, /v1/metrics or /v1/logs`);
      req.resume();
      return;
    }
    if (req.method !== 'POST') {
      this.stats.unsupported++;
      fail(405, status.UNIMPLEMENTED, `${req.method ?? ''} ${path}: only POST is allowed`, { allow: 'POST' });
      req.resume();
      return;
    }
    if (ctype !== 'application/x-protobuf' && !json) {
      this.stats.unsupported++;
      fail(415, status.INVALID_ARGUMENT, `content-type ${JSON.stringify(ctype)} is not supported: use application/x-protobuf or application/json`);
      req.resume();
      return;
    }
    const enc = (req.headers['content-encoding'] ?? 'identity').toLowerCase();
    if (enc !== 'gzip' && enc !== 'identity') {
      this.stats.unsupported++;
      fail(400, status.INVALID_ARGUMENT, `content-encoding ${JSON.stringify(enc)} is not supported: use gzip or none`);
      return;
    }
    this.stats.requests++;
    const max = this.opts.maxRequestBytes;
    const tooLarge = (): void => {
      this.stats.tooLarge++;
      fail(413, status.RESOURCE_EXHAUSTED, `request body larger than ${max} bytes (receiver.maxRequestBytes)`, { connection: 'close' });
    };
    if (Number(req.headers['content-length'] ?? 0) > max) {
      tooLarge();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (d: Buffer) => {
      if (over) return;
      size += d.length;
      if (size > max) {
        over = true;
        tooLarge();
        return;
      }
      chunks.push(d);
    });
    req.on('error', () => {});
    req.on('end', () => {
      if (over) return;
      const raw = Buffer.concat(chunks);
      const go = (body: Buffer): void => {
        let answer: Answer;
        try {
          const msg = json ? decodeJson(signal, body.toString('utf8')) : decodeProto(signal, body);
          answer = this.handle(signal, msg, body.length, req.socket.remoteAddress ?? '', req.socket.remotePort ?? 0, this.httpPort);
        } catch (e) {
          if (!(e instanceof InvalidRequestError)) this.onError(`receiver: ${signal} from ${req.socket.remoteAddress ?? '?'}: ${(e as Error).message}`);
          this.stats.invalid++;
          answer = { kind: 'invalid', message: (e as Error).message };
        }
        switch (answer.kind) {
          case 'ok':
            reply(200, encodeResponse(signal, answer.rejected, answer.message, json));
            return;
          case 'invalid':
            fail(400, status.INVALID_ARGUMENT, answer.message);
            return;
          case 'full':
          case 'throttled':
            fail(
              answer.kind === 'full' ? 503 : 429,
              answer.kind === 'full' ? status.UNAVAILABLE : status.RESOURCE_EXHAUSTED,
              answer.message,
              { 'retry-after': String(Math.max(1, Math.ceil(answer.retryAfterMs / 1000))) },
              answer.retryAfterMs,
            );
        }
      };
      if (enc !== 'gzip') return go(raw);
      gunzip(raw, { maxOutputLength: max }, (err, out) => {
        if (!err) return go(out);
        if ((err as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') return tooLarge();
        this.stats.invalid++;
        fail(400, status.INVALID_ARGUMENT, `gzip body cannot be decompressed: ${err.message}`);
      });
    });
  }

  /** Counters for self-telemetry (otlp/selfmetrics.ts); deduplication is counted by the agent (receiver/sdkdetect.ts). */
  selfStats(): Omit<ReceiverSelfStats, 'deduplicated'> {
    const f = this.forwarder.stats();
    const signals: ReceiverSelfStats['signals'] = {};
    for (const s of SIGNALS) {
      const v = f[s];
      signals[s] = {
        received: this.stats.received[s],
        forwarded: v.forwarded,
        queueFull: v.refusedQueueFull,
        exportFailed: v.droppedExportFailed,
        noEndpoint: v.droppedNoEndpoint,
        rejectedByBackend: v.rejectedDownstream,
      };
    }
    return {
      signals,
      refusedRequests: { invalid: this.stats.invalid, too_large: this.stats.tooLarge, rate_limited: this.stats.throttled, queue_full: this.stats.queueFull, unsupported: this.stats.unsupported },
      queueBytes: this.forwarder.queuedBytes,
    };
  }

  snapshot(): Record<string, unknown> {
    return { ...this.stats, addresses: this.addresses, senders: { ...this.senders.stats }, forward: { queuedBytes: this.forwarder.queuedBytes, ...this.forwarder.stats() } };
  }

  /** Stops accepting, then flushes the forward queue within deadlineMs. */
  async stop(deadlineMs: number): Promise<void> {
    const g = this.grpc;
    this.grpc = undefined;
    if (g) {
      const t = setTimeout(() => g.forceShutdown(), 2000);
      await new Promise<void>((r) => g.tryShutdown(() => r()));
      clearTimeout(t);
    }
    const h = this.http;
    this.http = undefined;
    if (h) {
      const closed = new Promise<void>((r) => h.close(() => r()));
      h.closeIdleConnections();
      const t = setTimeout(() => h.closeAllConnections(), 2000);
      await closed;
      clearTimeout(t);
    }
    await this.forwarder.shutdown(deadlineMs);
  }
}

/** grpc-js peer strings: "127.0.0.1:5555", "[::1]:5555", "ipv4:1.2.3.4:5". */
export function splitPeer(peer: string): [string, number] {
  const p = peer.replace(/^ipv[46]:/, '');
  const m = /^\[(.*)\]:(\d+)$/.exec(p) ?? /^(.*):(\d+)$/.exec(p);
  return m ? [m[1]!, Number(m[2])] : [p, 0];
}
