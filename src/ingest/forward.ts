/**
 * forward.ts — sends received (enriched) OTLP requests on to the configured endpoint, as
 * they are: no conversion, so every attribute, id, timestamp and field the sender set
 * arrives unchanged. One lane per signal (traces, metrics, logs), each with its own
 * endpoint (export.traces / metrics / logs) and one request in flight; all lanes share one
 * byte budget (`queueBytes`): an offer beyond it is refused (the receiver answers
 * Unavailable / 503 with a retry delay), counted. Queued requests of one signal are sent as
 * one batch by concatenating their protobuf encodings (protobuf merges repeated fields, so
 * the concatenation is the request with all their resources), up to `maxBatchBytes`, at
 * least every `delayMs`. Failures follow the OTLP retry rules (isRetryable in
 * otlp/sinks.ts; RetryInfo / Retry-After honoured) with exponential backoff and jitter
 * until `retryMaxElapsedMs`; then the batch is dropped, counted.
 *
 * Lifetime: created at agent start, shutdown() flushes within a deadline. Timers unref'd.
 * Main thread.
 */
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { gzipSync } from 'node:zlib';
import { Client, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import type { TracesExport } from '../config.js';
import { isRetryable } from '../otlp/sinks.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';
import { decodeProto, decodeResponse, retryDelayMs, SIGNAL_INFO, SIGNALS, toJson, type Signal } from './codec.js';

export interface ForwardOptions {
  /** bytes queued over all signals; beyond it offers are refused */
  queueBytes: number;
  /** largest batch sent at once, bytes */
  maxBatchBytes: number;
  /** longest wait before a partial batch is sent, ms */
  delayMs: number;
  retryInitialMs?: number;
  retryMaxMs?: number;
  retryMaxElapsedMs?: number;
}

export interface SignalStats {
  /** requests accepted into the queue */
  queued: number;
  /** items (spans, data points, log records) accepted into the queue */
  items: number;
  /** items the endpoint accepted */
  forwarded: number;
  /** items refused because the queue was full (the sender was told to retry) */
  refusedQueueFull: number;
  /** items dropped after a non-retryable failure or retries exhausted */
  droppedExportFailed: number;
  /** items the endpoint rejected in a partial success */
  rejectedDownstream: number;
  /** items dropped because no endpoint is configured for the signal */
  droppedNoEndpoint: number;
  exportErrors: number;
  retries: number;
  batches: number;
  lastError?: string;
}

interface Entry {
  bytes: Uint8Array;
  items: number;
}

interface Outcome {
  ok: boolean;
  error?: string;
  retryable?: boolean;
  retryAfterMs?: number;
  rejected?: number;
}

const USER_AGENT = `${AGENT_NAME}/${AGENT_VERSION}`;

/** One endpoint for one signal over the configured protocol. */
class Transport {
  private readonly c: TracesExport;
  private readonly signal: Signal;
  private client: Client | undefined;
  private readonly ca: Buffer | undefined;
  /** mutual-TLS client identity (export clientCertificate / clientKey), https:// only */
  private readonly identity: { cert: Buffer; key: Buffer } | undefined;

  constructor(c: TracesExport, signal: Signal) {
    this.c = c;
    this.signal = signal;
    this.ca = c.certificate ? readFileSync(c.certificate) : undefined;
    this.identity = c.clientCertificate && c.clientKey && c.url.startsWith('https://') ? { cert: readFileSync(c.clientCertificate), key: readFileSync(c.clientKey) } : undefined;
  }

  get name(): string {
    return `otlp ${this.c.protocol} ${this.c.url}`;
  }

  send(body: Uint8Array): Promise<Outcome> {
    return this.c.protocol === 'grpc' ? this.grpc(body) : this.http(body);
  }

  private grpc(body: Uint8Array): Promise<Outcome> {
    if (!this.client) {
      const u = new URL(this.c.url);
      const secure = u.protocol === 'https:' && !this.c.insecure;
      this.client = new Client(u.host, secure ? credentials.createSsl(this.ca ?? null, this.identity?.key ?? null, this.identity?.cert ?? null) : credentials.createInsecure(), {
        'grpc.primary_user_agent': USER_AGENT,
        ...(this.c.compression === 'gzip' ? { 'grpc.default_compression_algorithm': 2 } : {}),
        'grpc.max_send_message_length': -1,
      });
    }
    const md = new Metadata();
    for (const [k, v] of Object.entries(this.c.headers)) md.set(k, v);
    const path = SIGNAL_INFO[this.signal].grpcPath;
    return new Promise((resolve) => {
      this.client!.makeUnaryRequest(
        path,
        (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength),
        (b: Buffer) => b,
        body,
        md,
        { deadline: Date.now() + this.c.timeoutMs },
        (err: ServiceError | null, res?: Buffer) => {
          if (err) {
            const details = err.metadata?.get('grpc-status-details-bin')[0];
            const after = details instanceof Buffer ? retryDelayMs(details) : undefined;
            // RESOURCE_EXHAUSTED is retryable only with RetryInfo (OTLP spec)
            const retryable = isRetryable('grpc', err.code) || (err.code === 8 && after !== undefined);
            resolve({ ok: false, error: `grpc ${err.code}: ${err.details}`, retryable, ...(after !== undefined ? { retryAfterMs: after } : {}) });
            return;
          }
          try {
            resolve({ ok: true, rejected: decodeResponse(this.signal, res ?? Buffer.alloc(0), false).rejected });
          } catch {
            resolve({ ok: true });
          }
        },
      );
    });
  }

  private http(protoBody: Uint8Array): Promise<Outcome> {
    const json = this.c.protocol === 'http/json';
    let body: Buffer = json ? Buffer.from(toJson(SIGNAL_INFO[this.signal].request, decodeProto(this.signal, protoBody))) : Buffer.from(protoBody);
    const headers: Record<string, string> = {
      ...this.c.headers,
      'content-type': json ? 'application/json' : 'application/x-protobuf',
      'user-agent': USER_AGENT,
    };
    if (this.c.compression === 'gzip') {
      body = gzipSync(body);
      headers['content-encoding'] = 'gzip';
    }
    const u = new URL(this.c.url);
    const req = u.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve) => {
      const r = req(
        u,
        { method: 'POST', headers, timeout: this.c.timeoutMs, ...(this.ca ? { ca: this.ca } : {}), ...(this.identity ?? {}), ...(this.c.insecure ? { rejectUnauthorized: false } : {}) },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (d: Buffer) => {
            if ((size += d.length) <= 1 << 20) chunks.push(d);
          });
          res.on('end', () => {
            const status = res.statusCode ?? 0;
            const data = Buffer.concat(chunks);
            if (status >= 200 && status < 300) {
              try {
                resolve({ ok: true, rejected: decodeResponse(this.signal, data, json).rejected });
              } catch {
                resolve({ ok: true });
              }
              return;
            }
            const ra = res.headers['retry-after'];
            const secs = ra !== undefined && /^\d+$/.test(ra) ? Number(ra) * 1000 : undefined;
            resolve({ ok: false, error: `http ${status}`, retryable: isRetryable(this.c.protocol, status), ...(secs !== undefined ? { retryAfterMs: secs } : {}) });
          });
          res.on('error', (e) => resolve({ ok: false, error: e.message, retryable: true }));
        },
      );
      r.on('timeout', () => r.destroy(new Error(`timeout after ${this.c.timeoutMs} ms`)));
      r.on('error', (e) => resolve({ ok: false, error: e.message, retryable: true }));
      r.end(body);
    });
  }

  close(): void {
    this.client?.close();
  }
}

class Lane {
  readonly stats: SignalStats = {
    queued: 0,
    items: 0,
    forwarded: 0,
    refusedQueueFull: 0,
    droppedExportFailed: 0,
    rejectedDownstream: 0,
    droppedNoEndpoint: 0,
    exportErrors: 0,
    retries: 0,
    batches: 0,
  };
  queue: Entry[] = [];
  timer: NodeJS.Timeout | undefined;
  inFlight: Promise<void> | undefined;
  wake: (() => void) | undefined;
  readonly transport: Transport | undefined;

  constructor(transport: Transport | undefined) {
    this.transport = transport;
  }
}

export class Forwarder {
  private readonly opts: ForwardOptions;
  private readonly lanes: Record<Signal, Lane>;
  private readonly onError: (msg: string) => void;
  private bytes = 0;
  private closed = false;

  constructor(opts: ForwardOptions, targets: Partial<Record<Signal, TracesExport | null>>, onError: (msg: string) => void = () => {}) {
    this.opts = opts;
    this.onError = onError;
    const lane = (s: Signal): Lane => {
      const t = targets[s];
      return new Lane(t ? new Transport(t, s) : undefined);
    };
    this.lanes = { traces: lane('traces'), metrics: lane('metrics'), logs: lane('logs') };
  }

  /** Bytes waiting, over all signals. */
  get queuedBytes(): number {
    return this.bytes;
  }

  /** Whether a request of `size` bytes would be taken now. */
  hasRoom(size: number): boolean {
    return !this.closed && this.bytes + size <= this.opts.queueBytes;
  }

  /** Counts items refused before offer() (the caller saw hasRoom() false). */
  refused(signal: Signal, items: number): void {
    this.lanes[signal].stats.refusedQueueFull += items;
  }

  /** Queues one encoded request. false: the queue is full (nothing kept; the sender should retry). */
  offer(signal: Signal, bytes: Uint8Array, items: number): boolean {
    const l = this.lanes[signal];
    if (!l.transport) {
      l.stats.droppedNoEndpoint += items;
      return true;
    }
    if (!this.hasRoom(bytes.length)) {
      l.stats.refusedQueueFull += items;
      return false;
    }
    this.bytes += bytes.length;
    l.queue.push({ bytes, items });
    l.stats.queued++;
    l.stats.items += items;
    if (this.laneBytes(l) >= this.opts.maxBatchBytes) this.kick(l);
    else this.schedule(l);
    return true;
  }

  private laneBytes(l: Lane): number {
    return l.queue.reduce((a, e) => a + e.bytes.length, 0);
  }

  private schedule(l: Lane): void {
    if (l.timer || this.closed || l.queue.length === 0) return;
    l.timer = setTimeout(() => {
      l.timer = undefined;
      this.kick(l);
    }, this.opts.delayMs);
    l.timer.unref();
  }

  private kick(l: Lane): void {
    if (l.inFlight || l.queue.length === 0) return;
    l.inFlight = this.drain(l).finally(() => {
      l.inFlight = undefined;
      if (this.laneBytes(l) >= this.opts.maxBatchBytes) this.kick(l);
      else this.schedule(l);
    });
  }

  /** Takes queued requests up to maxBatchBytes (at least one). */
  private take(l: Lane): Entry[] {
    let size = 0;
    let n = 0;
    while (n < l.queue.length && (n === 0 || size + l.queue[n]!.bytes.length <= this.opts.maxBatchBytes)) size += l.queue[n++]!.bytes.length;
    return l.queue.splice(0, n);
  }

  private async drain(l: Lane): Promise<void> {
    const t = l.transport!;
    while (l.queue.length > 0) {
      const batch = this.take(l);
      const body = batch.length === 1 ? batch[0]!.bytes : Buffer.concat(batch.map((e) => e.bytes));
      const items = batch.reduce((a, e) => a + e.items, 0);
      l.stats.batches++;
      const started = Date.now();
      let delay = this.opts.retryInitialMs ?? 1000;
      try {
        for (;;) {
          const out = await t.send(body);
          if (out.ok) {
            const rejected = Math.min(out.rejected ?? 0, items);
            l.stats.forwarded += items - rejected;
            l.stats.rejectedDownstream += rejected;
            break;
          }
          l.stats.exportErrors++;
          l.stats.lastError = out.error;
          const wait = Math.max(out.retryAfterMs ?? 0, delay * (0.8 + Math.random() * 0.4));
          if (!out.retryable || this.closed || Date.now() - started + wait > (this.opts.retryMaxElapsedMs ?? 300_000)) {
            l.stats.droppedExportFailed += items;
            this.onError(`forward to ${t.name} failed: ${out.error ?? 'unknown error'} (${items} ${SIGNAL_INFO[this.signalOf(l)].itemName} dropped${out.retryable ? ', retries exhausted' : ''})`);
            break;
          }
          l.stats.retries++;
          await new Promise<void>((resolve) => {
            const tm = setTimeout(resolve, wait);
            l.wake = () => {
              clearTimeout(tm);
              resolve();
            };
          });
          l.wake = undefined;
          delay = Math.min(delay * 2, this.opts.retryMaxMs ?? 30_000);
        }
      } finally {
        this.bytes -= body.length;
      }
      if (this.laneBytes(l) < this.opts.maxBatchBytes && !this.closed) return;
    }
  }

  private signalOf(l: Lane): Signal {
    return SIGNALS.find((s) => this.lanes[s] === l) ?? 'traces';
  }

  stats(): Record<Signal, SignalStats & { depth: number }> {
    const out = {} as Record<Signal, SignalStats & { depth: number }>;
    for (const s of SIGNALS) out[s] = { depth: this.lanes[s].queue.length, ...this.lanes[s].stats };
    return out;
  }

  /** Sends what is queued (bounded by deadlineMs), then closes the connections. */
  async shutdown(deadlineMs: number): Promise<void> {
    this.closed = true;
    const flushes = SIGNALS.map(async (s) => {
      const l = this.lanes[s];
      l.wake?.();
      if (l.timer) clearTimeout(l.timer);
      l.timer = undefined;
      if (l.inFlight) await l.inFlight;
      if (l.queue.length > 0 && l.transport) await this.drain(l);
    });
    let timeout: NodeJS.Timeout | undefined;
    const expired = new Promise<'timeout'>((r) => (timeout = setTimeout(() => r('timeout'), deadlineMs)));
    const r = await Promise.race([Promise.all(flushes).then(() => 'done' as const), expired]);
    clearTimeout(timeout);
    if (r === 'timeout') {
      for (const s of SIGNALS) {
        const l = this.lanes[s];
        for (const e of l.queue) l.stats.droppedExportFailed += e.items;
        l.queue = [];
      }
      this.onError(`receiver shutdown: forwarding did not finish within ${deadlineMs} ms`);
    }
    for (const s of SIGNALS) this.lanes[s].transport?.close();
  }
}
