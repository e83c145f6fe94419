/**
 * pipeline.ts — the bounded queue between the receiver and an OTLP sink: spans are
 * queued (at most `queueSpans` spans and `queueBytes` estimated bytes; beyond either, new
 * spans are dropped and counted by which bound), sent in batches of `maxSpans` spans or
 * `maxBytes` bytes (whichever comes first; at least one span) at least every
 * `delayMs`, up to `maxInFlight` exports at once (each sender takes the next batch from the
 * queue; against a backend with latency, one at a time caps the rate at batch / round trip).
 * A batch whose export fails retryably (OTLP
 * rules, see transport.ts) is tried again after the delay the server asked for (gRPC
 * RetryInfo, HTTP Retry-After; capped at `retryMaxMs`) or else with exponential backoff and
 * jitter, until `retryMaxElapsedMs`; meanwhile new spans wait in the bounded queue. A
 * non-retryable failure, or running out of time, drops the batch, counted. Partial success
 * (the server accepted the request but rejected some spans) is counted and logged at most
 * once per `logIntervalMs`. A sink that takes encoded spans (the OTLP sink over protobuf:
 * `preEncoded`) has each span encoded when it is queued (encode.ts), so the queue holds bytes
 * and span objects die young; its byte bound then counts encoded bytes. A sink with
 * exportSpans() gets the queued spans as they are; any other gets them converted to
 * ReadableSpans once per batch.
 *
 * Lifetime: created at agent start; shutdown() flushes within a deadline, then stops the
 * sink. Timers are unref'd. Single-threaded (main thread).
 */
import { emptyResource, type Resource } from '@opentelemetry/resources';
import type { SidelightSpan } from '../receiver/span.js';
import { toReadableSpan } from './convert.js';
import { encodeSpanTo, releaseEncoded, type EncodedSpan } from './encode.js';
import type { SpanSink } from './sinks.js';

export interface PipelineOptions {
  maxSpans: number;
  /** bytes of queued spans (encoded, or estimated) per batch; a batch takes at least one span (default: no bound) */
  maxBytes?: number;
  delayMs: number;
  queueSpans: number;
  /** exports sent at once, each with its own batch and retries (default 1) */
  maxInFlight?: number;
  /** first retry delay, ms (default 1000) */
  retryInitialMs?: number;
  /** longest retry delay, ms (default 30000) */
  retryMaxMs?: number;
  /** give a batch up after retrying this long, ms (default 300000) */
  retryMaxElapsedMs?: number;
  /** estimated bytes queued before new spans are dropped (default: unbounded) */
  queueBytes?: number;
  /** at most one partial-success log line per this many ms (default 10000) */
  logIntervalMs?: number;
}

/** Upper bounds (seconds) of the export latency histogram. */
export const EXPORT_LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface LatencyHistogram {
  count: number;
  /** seconds */
  sum: number;
  /** one per bucket bound, plus +Inf; not cumulative */
  counts: number[];
}

export interface PipelineStats {
  received: number;
  /** spans the server accepted (partially rejected spans included: see `rejected`) */
  exported: number;
  /** dropped at push: the span bound (`queueSpans`) was reached, or the pipeline was closed */
  droppedQueueFull: number;
  /** dropped at push: the byte bound (`queueBytes`) was reached */
  droppedQueueBytes: number;
  /** dropped after a permanent failure, running out of retry time, or the shutdown deadline */
  droppedExportFailed: number;
  /** spans the server reported as rejected in a partial success */
  rejected: number;
  /** responses that carried a partial success */
  partialSuccesses: number;
  exportErrors: number;
  /** failed export attempts by outcome code (`UNAVAILABLE`, `HTTP 503`, `ECONNREFUSED`, ...) */
  errorsByCode: Record<string, number>;
  retries: number;
  /** retries whose delay came from the server (RetryInfo / Retry-After) */
  retriesServerDelay: number;
  batches: number;
  lastError?: string;
}

/** A queued span: encoded (`span` undefined, chunk/off/len set) or as it is (`len` 0). */
interface Item extends EncodedSpan {
  span: SidelightSpan | undefined;
  bytes: number;
}

const NO_BYTES = Buffer.alloc(0);
/**
 * Items of finished batches kept for the next spans (bounded): a queued span waits for its
 * batch long enough (~0.1–1 s) to outlive a young-generation GC or two, so fresh items were
 * promoted and then collected by full GCs; reused ones stay put.
 */
const FREE_ITEMS_MAX = 8192;
const NO_RESOURCE = emptyResource();

/**
 * A cheap size estimate of a span once encoded (OTLP protobuf is close to this): fixed
 * fields plus attribute keys and values. Counts the characters, not UTF-8 bytes.
 */
export function estimateSpanBytes(s: SidelightSpan): number {
  let n = 96 + s.name.length + (s.status.message?.length ?? 0);
  for (const k in s.attributes) {
    const v = s.attributes[k];
    n += k.length + 4 + (typeof v === 'string' ? v.length : Array.isArray(v) ? 8 * v.length : 9);
  }
  return n;
}

export class ExportPipeline {
  private readonly opts: PipelineOptions;
  private readonly sink: SpanSink;
  private queue: Item[] = [];
  private readonly freeItems: Item[] = [];
  private queuedBytes = 0;
  private lastPartialLog = -Infinity;
  private partialSuppressed = 0;
  private timer: NodeJS.Timeout | undefined;
  /** exports running now (at most maxInFlight) */
  private readonly inFlight = new Set<Promise<void>>();
  private closed = false;
  private readonly onError: (msg: string) => void;
  readonly stats: PipelineStats = {
    received: 0,
    exported: 0,
    droppedQueueFull: 0,
    droppedQueueBytes: 0,
    droppedExportFailed: 0,
    rejected: 0,
    partialSuccesses: 0,
    exportErrors: 0,
    errorsByCode: {},
    retries: 0,
    retriesServerDelay: 0,
    batches: 0,
  };
  /** duration of every export attempt, successful or not */
  readonly latency: LatencyHistogram = { count: 0, sum: 0, counts: new Array<number>(EXPORT_LATENCY_BUCKETS.length + 1).fill(0) };
  /** wake retry waits early (shutdown) */
  private readonly wakers = new Set<() => void>();

  constructor(opts: PipelineOptions, sink: SpanSink, onError: (msg: string) => void = () => {}) {
    this.opts = opts;
    this.sink = sink;
    this.onError = onError;
  }

  /** spans waiting (not counting a batch being exported) */
  get depth(): number {
    return this.queue.length;
  }

  /** estimated bytes of the spans waiting */
  get depthBytes(): number {
    return this.queuedBytes;
  }

  push(span: SidelightSpan, resource: Resource): void {
    this.stats.received++;
    if (this.closed || this.queue.length >= this.opts.queueSpans) {
      this.stats.droppedQueueFull++;
      return;
    }
    let item: Item;
    if (this.sink.preEncoded) {
      const free = this.freeItems.pop();
      if (free) {
        item = free;
        item.resource = resource;
      } else item = { span: undefined, resource, chunk: NO_BYTES, off: 0, len: 0, slab: undefined, bytes: 0 };
      try {
        encodeSpanTo(span, item);
      } catch (err) {
        this.recycle(item);
        this.stats.droppedExportFailed++;
        this.stats.lastError = `serialize: ${(err as Error).message}`;
        this.logLimited(`export to ${this.sink.name}: a span could not be encoded and was dropped: ${(err as Error).message}`);
        return;
      }
      item.bytes = item.len;
    } else {
      item = { span, resource, chunk: NO_BYTES, off: 0, len: 0, slab: undefined, bytes: estimateSpanBytes(span) };
    }
    if (this.opts.queueBytes !== undefined && this.queuedBytes + item.bytes > this.opts.queueBytes) {
      this.stats.droppedQueueBytes++;
      this.recycle(item);
      return;
    }
    this.queuedBytes += item.bytes;
    this.queue.push(item);
    if (this.batchReady()) this.kick();
    else this.schedule();
  }

  /** a full batch waits (maxSpans spans, or maxBytes bytes) */
  private batchReady(): boolean {
    return this.queue.length >= this.opts.maxSpans || (this.opts.maxBytes !== undefined && this.queuedBytes >= this.opts.maxBytes);
  }

  /** how many of the oldest queued spans make the next batch: up to maxSpans and maxBytes, at least one */
  private batchLength(): number {
    const n = Math.min(this.queue.length, this.opts.maxSpans);
    const max = this.opts.maxBytes;
    if (max === undefined || this.queuedBytes <= max) return n;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      bytes += this.queue[i]!.bytes;
      if (bytes > max) return Math.max(1, i);
    }
    return n;
  }

  /** Arm the batch timer if spans are waiting and it is not armed. */
  private schedule(): void {
    if (this.timer || this.closed || this.queue.length === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick();
    }, this.opts.delayMs);
    this.timer.unref();
  }

  /**
   * Start senders: one if none runs (a partial batch, on the timer), more while full batches
   * wait and fewer than maxInFlight run. Each sender takes batches from the shared queue.
   */
  private kick(): void {
    const max = this.opts.maxInFlight ?? 1;
    while (this.inFlight.size < max && this.queue.length > 0) {
      if (this.inFlight.size > 0 && !this.batchReady()) break;
      const p: Promise<void> = this.drain().finally(() => {
        this.inFlight.delete(p);
        if (this.batchReady()) this.kick();
        else this.schedule();
      });
      this.inFlight.add(p);
    }
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.batchLength());
      for (const i of batch) this.queuedBytes -= i.bytes;
      this.stats.batches++;
      // encoded spans go to exportEncoded; a sink that encodes SidelightSpans itself gets them as
      // they are; others get ReadableSpans (once per batch)
      const encoded = this.sink.preEncoded === true;
      const native = !encoded && this.sink.exportSpans !== undefined;
      const asSpans = native ? batch.map((i) => ({ span: i.span!, resource: i.resource })) : [];
      const spans = encoded || native ? [] : batch.map((i) => toReadableSpan(i.span!, i.resource));
      const started = Date.now();
      const maxDelay = this.opts.retryMaxMs ?? 30_000;
      let delay = this.opts.retryInitialMs ?? 1000;
      for (;;) {
        const t0 = performance.now();
        const out = encoded ? await this.sink.exportEncoded!(batch) : native ? await this.sink.exportSpans!(asSpans) : await this.sink.export(spans);
        this.observeLatency((performance.now() - t0) / 1000);
        if (out.ok) {
          this.stats.exported += batch.length;
          if (out.rejected !== undefined || out.rejectMessage) this.onPartialSuccess(out.rejected ?? 0, out.rejectMessage ?? '');
          break;
        }
        this.stats.exportErrors++;
        const code = out.code ?? 'ERROR';
        this.stats.errorsByCode[code] = (this.stats.errorsByCode[code] ?? 0) + 1;
        this.stats.lastError = out.error;
        const serverDelay = out.retryAfterMs !== undefined;
        const wait = serverDelay ? Math.min(out.retryAfterMs!, maxDelay) : delay * (0.8 + Math.random() * 0.4);
        if (!out.retryable || this.closed || Date.now() - started + wait > (this.opts.retryMaxElapsedMs ?? 300_000)) {
          this.stats.droppedExportFailed += batch.length;
          this.onError(`export to ${this.sink.name} failed: ${out.error ?? 'unknown error'} (${batch.length} spans dropped${out.retryable ? ', retries exhausted' : ''})`);
          break;
        }
        this.stats.retries++;
        if (serverDelay) this.stats.retriesServerDelay++;
        await new Promise<void>((resolve) => {
          const wake = (): void => {
            clearTimeout(t);
            this.wakers.delete(wake);
            resolve();
          };
          const t = setTimeout(wake, wait);
          this.wakers.add(wake);
        });
        delay = Math.min(delay * 2, maxDelay);
      }
      // exported or dropped: nothing reads these spans' bytes again (their slabs may be reused)
      for (const i of batch) this.recycle(i);
      if (!this.batchReady() && !this.closed) return;
    }
  }

  /** `item` is done with: its slab may be reused, and the item itself (no reference kept in it) */
  private recycle(item: Item): void {
    releaseEncoded(item);
    item.span = undefined;
    item.chunk = NO_BYTES;
    item.resource = NO_RESOURCE;
    if (this.sink.preEncoded === true && this.freeItems.length < FREE_ITEMS_MAX) this.freeItems.push(item);
  }

  private observeLatency(seconds: number): void {
    const h = this.latency;
    h.count++;
    h.sum += seconds;
    let i = 0;
    while (i < EXPORT_LATENCY_BUCKETS.length && seconds > EXPORT_LATENCY_BUCKETS[i]!) i++;
    h.counts[i]!++;
  }

  private lastLimitedLog = -Infinity;

  /** an error line at most once per logIntervalMs */
  private logLimited(msg: string): void {
    const now = Date.now();
    if (now - this.lastLimitedLog < (this.opts.logIntervalMs ?? 10_000)) return;
    this.lastLimitedLog = now;
    this.onError(msg);
  }

  private onPartialSuccess(rejected: number, message: string): void {
    this.stats.partialSuccesses++;
    this.stats.rejected += rejected;
    const now = Date.now();
    if (now - this.lastPartialLog < (this.opts.logIntervalMs ?? 10_000)) {
      this.partialSuppressed++;
      return;
    }
    const more = this.partialSuppressed > 0 ? ` (${this.partialSuppressed} similar responses not logged)` : '';
    this.lastPartialLog = now;
    this.partialSuppressed = 0;
    this.onError(`export to ${this.sink.name}: partial success, ${rejected} spans rejected: ${message || 'no reason given'}${more}`);
  }

  /** Send everything queued (bounded by deadlineMs), then shut the sink down. */
  async shutdown(deadlineMs: number): Promise<void> {
    this.closed = true;
    for (const wake of [...this.wakers]) wake(); // retry waits end now: one last attempt, then drop
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const flush = (async () => {
      await Promise.all([...this.inFlight]);
      if (this.queue.length > 0) await this.drain();
    })();
    let timeout: NodeJS.Timeout | undefined;
    const expired = new Promise<'timeout'>((r) => (timeout = setTimeout(() => r('timeout'), deadlineMs)));
    const r = await Promise.race([flush.then(() => 'done' as const), expired]);
    clearTimeout(timeout);
    if (r === 'timeout') {
      this.stats.droppedExportFailed += this.queue.length;
      this.queue = [];
      this.queuedBytes = 0;
      this.onError(`shutdown: flush did not finish within ${deadlineMs} ms`);
    }
    await Promise.race([this.sink.shutdown(), new Promise((r) => setTimeout(r, 2000).unref())]);
  }
}
