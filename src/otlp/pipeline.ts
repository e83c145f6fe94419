/**
 * pipeline.ts — the bounded queue between the receiver and an OTLP sink: spans are
 * queued (at most `queueSpans`; beyond that dropped and counted), sent in batches of
 * `maxSpans` at least every `delayMs`, one export in flight at a time. A batch whose export
 * fails retryably (OTLP rules, see sinks.ts) is tried again with exponential backoff and
 * jitter until `retryMaxElapsedMs`; meanwhile new spans wait in the bounded queue. A
 * non-retryable failure, or running out of time, drops the batch, counted.
 *
 * Lifetime: created at agent start; shutdown() flushes within a deadline, then stops the
 * sink. Timers are unref'd. Single-threaded (main thread).
 */
import type { Resource } from '@opentelemetry/resources';
import type { SidelightSpan } from '../receiver/span.js';
import { toReadableSpan } from './convert.js';
import type { SpanSink } from './sinks.js';

export interface PipelineOptions {
  maxSpans: number;
  delayMs: number;
  queueSpans: number;
  /** first retry delay, ms (default 1000) */
  retryInitialMs?: number;
  /** longest retry delay, ms (default 30000) */
  retryMaxMs?: number;
  /** give a batch up after retrying this long, ms (default 300000) */
  retryMaxElapsedMs?: number;
}

export interface PipelineStats {
  received: number;
  exported: number;
  droppedQueueFull: number;
  droppedExportFailed: number;
  exportErrors: number;
  retries: number;
  batches: number;
  lastError?: string;
}

interface Item {
  span: SidelightSpan;
  resource: Resource;
}

export class ExportPipeline {
  private readonly opts: PipelineOptions;
  private readonly sink: SpanSink;
  private queue: Item[] = [];
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  private closed = false;
  private readonly onError: (msg: string) => void;
  readonly stats: PipelineStats = {
    received: 0,
    exported: 0,
    droppedQueueFull: 0,
    droppedExportFailed: 0,
    exportErrors: 0,
    retries: 0,
    batches: 0,
  };
  /** wakes a retry wait early (shutdown) */
  private wake: (() => void) | undefined;

  constructor(opts: PipelineOptions, sink: SpanSink, onError: (msg: string) => void = () => {}) {
    this.opts = opts;
    this.sink = sink;
    this.onError = onError;
  }

  get depth(): number {
    return this.queue.length;
  }

  push(span: SidelightSpan, resource: Resource): void {
    this.stats.received++;
    if (this.closed || this.queue.length >= this.opts.queueSpans) {
      this.stats.droppedQueueFull++;
      return;
    }
    this.queue.push({ span, resource });
    if (this.queue.length >= this.opts.maxSpans) this.kick();
    else this.schedule();
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

  /** Start sending if nothing is in flight. */
  private kick(): void {
    if (this.inFlight || this.queue.length === 0) return;
    this.inFlight = this.drain().finally(() => {
      this.inFlight = undefined;
      if (this.queue.length >= this.opts.maxSpans) this.kick();
      else this.schedule();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.opts.maxSpans);
      this.stats.batches++;
      const spans = batch.map((i) => toReadableSpan(i.span, i.resource));
      const started = Date.now();
      let delay = this.opts.retryInitialMs ?? 1000;
      for (;;) {
        const out = await this.sink.export(spans);
        if (out.ok) {
          this.stats.exported += batch.length;
          break;
        }
        this.stats.exportErrors++;
        this.stats.lastError = out.error;
        const wait = delay * (0.8 + Math.random() * 0.4);
        if (!out.retryable || this.closed || Date.now() - started + wait > (this.opts.retryMaxElapsedMs ?? 300_000)) {
          this.stats.droppedExportFailed += batch.length;
          this.onError(`export to ${this.sink.name} failed: ${out.error ?? 'unknown error'} (${batch.length} spans dropped${out.retryable ? ', retries exhausted' : ''})`);
          break;
        }
        this.stats.retries++;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, wait);
          this.wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
        this.wake = undefined;
        delay = Math.min(delay * 2, this.opts.retryMaxMs ?? 30_000);
      }
      if (this.queue.length < this.opts.maxSpans && !this.closed) return;
    }
  }

  /** Send everything queued (bounded by deadlineMs), then shut the sink down. */
  async shutdown(deadlineMs: number): Promise<void> {
    this.closed = true;
    this.wake?.(); // a retry wait ends now: one last attempt, then drop
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const flush = (async () => {
      if (this.inFlight) await this.inFlight;
      if (this.queue.length > 0) await this.drain();
    })();
    let timeout: NodeJS.Timeout | undefined;
    const expired = new Promise<'timeout'>((r) => (timeout = setTimeout(() => r('timeout'), deadlineMs)));
    const r = await Promise.race([flush.then(() => 'done' as const), expired]);
    clearTimeout(timeout);
    if (r === 'timeout') {
      this.stats.droppedExportFailed += this.queue.length;
      this.queue = [];
      this.onError(`shutdown: flush did not finish within ${deadlineMs} ms`);
    }
    await Promise.race([this.sink.shutdown(), new Promise((r) => setTimeout(r, 2000).unref())]);
  }
}
