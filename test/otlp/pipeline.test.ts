import test from 'ava';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes } from '@opentelemetry/resources';
import type { ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { toReadableSpan } from '../../src/otlp/convert.js';
import { assembleTraceRequest, slabStats } from '../../src/otlp/encode.js';
import { estimateSpanBytes, ExportPipeline } from '../../src/otlp/pipeline.js';
import { isRetryable, type ExportOutcome, type SpanSink } from '../../src/otlp/sinks.js';
import type { SidelightSpan } from '../../src/receiver/span.js';

/** A sink that records batches and answers as told (the real exporters are tested against a real Collector). */
class RecordingSink implements SpanSink {
  readonly name = 'recording';
  batches: ReadableSpan[][] = [];
  fail = false;
  delayMs = 0;
  async export(spans: ReadableSpan[]): Promise<ExportOutcome> {
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    this.batches.push(spans);
    return this.fail ? { ok: false, error: 'boom' } : { ok: true };
  }
  async shutdown(): Promise<void> {}
}

const resource = resourceFromAttributes({ 'service.name': 's' });

/** A sink that takes spans encoded when queued (as the OTLP sink over protobuf does). */
function encodedSink(exportEncoded: NonNullable<SpanSink['exportEncoded']>): SpanSink {
  return {
    name: 'encoded',
    preEncoded: true,
    async export() {
      return { ok: true };
    },
    exportEncoded,
    async shutdown() {},
  };
}
function span(i: number): SidelightSpan {
  return {
    kind: 'server',
    name: 'GET',
    startUnixNs: 1_700_000_000_000_000_000n + BigInt(i),
    endUnixNs: 1_700_000_000_001_000_000n + BigInt(i),
    attributes: { i },
    status: { code: 'unset' },
    process: { tgid: 1, tid: 1, comm: 'x', cgroupId: 0n },
  };
}

test('batches by size, then by time; every span exported once, converted faithfully', async (t) => {
  const sink = new RecordingSink();
  const p = new ExportPipeline({ maxSpans: 10, delayMs: 30, queueSpans: 100 }, sink);
  for (let i = 0; i < 25; i++) p.push(span(i), resource);
  await new Promise((r) => setTimeout(r, 150));
  t.deepEqual(sink.batches.map((b) => b.length), [10, 10, 5]);
  const all = sink.batches.flat();
  t.deepEqual(all.map((s) => s.attributes.i), Array.from({ length: 25 }, (_, i) => i));
  const s0 = all[0]!;
  t.deepEqual(s0.startTime, [1_700_000_000, 0]);
  t.deepEqual(s0.endTime, [1_700_000_000, 1_000_000]);
  t.deepEqual(s0.duration, [0, 1_000_000]);
  t.regex(s0.spanContext().traceId, /^[0-9a-f]{32}$/);
  t.regex(s0.spanContext().spanId, /^[0-9a-f]{16}$/);
  t.is(s0.resource, resource);
  t.is(p.stats.exported, 25);
  await p.shutdown(1000);
});

test('queue full: spans dropped and counted exactly', async (t) => {
  const sink = new RecordingSink();
  sink.delayMs = 50;
  const p = new ExportPipeline({ maxSpans: 5, delayMs: 1000, queueSpans: 20 }, sink);
  for (let i = 0; i < 100; i++) p.push(span(i), resource);
  await p.shutdown(2000);
  t.is(p.stats.received, 100);
  t.is(p.stats.exported + p.stats.droppedQueueFull, 100);
  t.true(p.stats.droppedQueueFull >= 75);
});

test('export failure: spans counted as dropped, error reported', async (t) => {
  const sink = new RecordingSink();
  sink.fail = true;
  const errors: string[] = [];
  const p = new ExportPipeline({ maxSpans: 4, delayMs: 10, queueSpans: 100 }, sink, (m) => errors.push(m));
  for (let i = 0; i < 6; i++) p.push(span(i), resource);
  await p.shutdown(1000);
  t.is(p.stats.droppedExportFailed, 6);
  t.is(p.stats.exported, 0);
  t.true(errors.some((e) => e.includes('boom')));
});

test('shutdown flushes what is queued', async (t) => {
  const sink = new RecordingSink();
  const p = new ExportPipeline({ maxSpans: 100, delayMs: 60_000, queueSpans: 1000 }, sink);
  for (let i = 0; i < 7; i++) p.push(span(i), resource);
  await p.shutdown(1000);
  t.is(p.stats.exported, 7);
});

/** A sink failing the first `failures` exports with the given retryability. */
class FlakySink extends RecordingSink {
  private readonly failures: number;
  private readonly retryable: boolean;
  constructor(failures: number, retryable: boolean) {
    super();
    this.failures = failures;
    this.retryable = retryable;
  }
  calls = 0;
  override async export(spans: ReadableSpan[]): Promise<ExportOutcome> {
    this.calls++;
    if (this.calls <= this.failures) return { ok: false, error: 'UNAVAILABLE', retryable: this.retryable };
    return super.export(spans);
  }
}

test('retryable failures are retried with backoff, then delivered', async (t) => {
  const sink = new FlakySink(3, true);
  const p = new ExportPipeline({ maxSpans: 10, delayMs: 5, queueSpans: 100, retryInitialMs: 10, retryMaxMs: 40 }, sink);
  for (let i = 0; i < 5; i++) p.push(span(i), resource);
  await new Promise((r) => setTimeout(r, 300));
  t.is(sink.calls, 4);
  t.is(p.stats.retries, 3);
  t.is(p.stats.exported, 5);
  t.is(p.stats.droppedExportFailed, 0);
  await p.shutdown(1000);
});

test('a non-retryable failure drops the batch at once, counted', async (t) => {
  const sink = new FlakySink(1, false);
  const p = new ExportPipeline({ maxSpans: 10, delayMs: 5, queueSpans: 100, retryInitialMs: 10 }, sink);
  for (let i = 0; i < 4; i++) p.push(span(i), resource);
  await new Promise((r) => setTimeout(r, 100));
  t.is(sink.calls, 1);
  t.is(p.stats.retries, 0);
  t.is(p.stats.droppedExportFailed, 4);
  await p.shutdown(1000);
});

test('retries give up after retryMaxElapsedMs; shutdown does not wait out a backoff', async (t) => {
  const sink = new FlakySink(1000, true);
  const p = new ExportPipeline({ maxSpans: 10, delayMs: 5, queueSpans: 100, retryInitialMs: 20, retryMaxMs: 20, retryMaxElapsedMs: 100 }, sink);
  for (let i = 0; i < 3; i++) p.push(span(i), resource);
  await new Promise((r) => setTimeout(r, 300));
  t.is(p.stats.droppedExportFailed, 3);
  t.true(p.stats.retries >= 3);
  const slow = new FlakySink(1000, true);
  const q = new ExportPipeline({ maxSpans: 10, delayMs: 5, queueSpans: 100, retryInitialMs: 60_000 }, slow);
  q.push(span(1), resource);
  await new Promise((r) => setTimeout(r, 50));
  const t0 = Date.now();
  await q.shutdown(5000);
  t.true(Date.now() - t0 < 2000, 'shutdown cut the 60 s backoff short');
  t.is(q.stats.droppedExportFailed, 1);
  await p.shutdown(100);
});

test('OTLP retry rules: gRPC and HTTP codes', (t) => {
  for (const c of [1, 4, 10, 11, 14, 15]) t.true(isRetryable('grpc', c), `grpc ${c}`);
  for (const c of [3, 5, 7, 8, 12, 13, 16]) t.false(isRetryable('grpc', c), `grpc ${c}`);
  for (const c of [429, 502, 503, 504]) t.true(isRetryable('http/protobuf', c), `http ${c}`);
  for (const c of [400, 401, 403, 404, 413, 500]) t.false(isRetryable('http/json', c), `http ${c}`);
  t.true(isRetryable('grpc', undefined), 'connection refused: no status');
});

test('queue bounded by estimated bytes too: spans past the byte bound dropped and counted by reason', async (t) => {
  const sink = new RecordingSink();
  sink.delayMs = 50;
  const one = estimateSpanBytes(span(0));
  t.true(one > 96 && one < 200, `a small span is estimated at ${one} bytes`);
  // room for 10 spans by bytes, 1000 by count; the first batch of 5 leaves the queue when its export starts
  const p = new ExportPipeline({ maxSpans: 5, delayMs: 1000, queueSpans: 1000, queueBytes: one * 10 }, sink);
  for (let i = 0; i < 30; i++) p.push(span(i), resource);
  t.is(p.depthBytes, p.depth * one, 'depthBytes tracks what is queued');
  t.true(p.depthBytes <= one * 10);
  await p.shutdown(2000);
  t.is(p.stats.droppedQueueFull, 0);
  t.is(p.stats.exported + p.stats.droppedQueueBytes, 30);
  t.is(p.stats.droppedQueueBytes, 30 - 15, 'one batch of 5 in flight, 10 queued by bytes');
  t.is(p.depthBytes, 0);
});

test('estimateSpanBytes grows with attributes', (t) => {
  const s = span(0);
  const base = estimateSpanBytes(s);
  s.attributes['url.full'] = 'x'.repeat(1000);
  t.is(estimateSpanBytes(s), base + 'url.full'.length + 4 + 1000);
});

test('maxInFlight: full batches go out concurrently, each span exactly once; a partial batch waits for the timer', async (t) => {
  class ConcurrentSink extends RecordingSink {
    running = 0;
    peak = 0;
    override async export(spans: ReadableSpan[]): Promise<ExportOutcome> {
      this.running++;
      this.peak = Math.max(this.peak, this.running);
      try {
        return await super.export(spans);
      } finally {
        this.running--;
      }
    }
  }
  const sink = new ConcurrentSink();
  sink.delayMs = 40;
  const p = new ExportPipeline({ maxSpans: 10, delayMs: 200, queueSpans: 1000, maxInFlight: 3 }, sink);
  const t0 = Date.now();
  for (let i = 0; i < 95; i++) p.push(span(i), resource);
  await new Promise((r) => setTimeout(r, 180));
  // 9 full batches, 3 at a time, 40 ms each: done in ~120 ms; the 5 left wait for delayMs
  t.is(sink.peak, 3);
  t.is(sink.batches.length, 9);
  await new Promise((r) => setTimeout(r, 150));
  t.is(sink.batches.length, 10);
  t.deepEqual(sink.batches.flat().map((s) => s.attributes.i as number).sort((a, b) => a - b), Array.from({ length: 95 }, (_, i) => i));
  t.is(p.stats.exported, 95);
  t.true(Date.now() - t0 < 1000);
  await p.shutdown(1000);
});

test('maxInFlight 1 (the default): one export at a time', async (t) => {
  let running = 0;
  let peak = 0;
  const sink = new RecordingSink();
  const orig = sink.export.bind(sink);
  sink.export = async (spans) => {
    peak = Math.max(peak, ++running);
    try {
      return await orig(spans);
    } finally {
      running--;
    }
  };
  sink.delayMs = 10;
  const p = new ExportPipeline({ maxSpans: 5, delayMs: 100, queueSpans: 1000 }, sink);
  for (let i = 0; i < 50; i++) p.push(span(i), resource);
  await p.shutdown(2000);
  t.is(peak, 1);
  t.is(p.stats.exported, 50);
});

test('maxBytes: a batch takes spans up to maxBytes of their encoding (at least one), in order, each once; a full byte budget sends at once', async (t) => {
  const batches: Array<Array<{ len: number }>> = [];
  const sink = encodedSink(async (items) => {
    batches.push(items.map((i) => ({ len: i.len })));
    return { ok: true };
  });
  // spans of very different sizes; one alone is larger than maxBytes
  const sizes = Array.from({ length: 60 }, (_, i) => (i === 17 ? 5000 : 20 + ((i * 37) % 400)));
  const p = new ExportPipeline({ maxSpans: 1000, maxBytes: 2048, delayMs: 10_000, queueSpans: 1000 }, sink);
  for (const [i, n] of sizes.entries()) {
    const s = span(i);
    s.attributes = { i, pad: 'p'.repeat(n) };
    p.push(s, resource);
  }
  // maxSpans is far off and the timer 10 s away: only the byte budget sends
  await new Promise((r) => setTimeout(r, 100));
  t.true(batches.length >= 5, `${batches.length} batches before the timer`);
  for (const b of batches) {
    const bytes = b.reduce((a, x) => a + x.len, 0);
    t.true(b.length === 1 || bytes <= 2048, `a batch of ${b.length} spans, ${bytes} bytes`);
  }
  t.true(batches.some((b) => b.length === 1 && b[0]!.len > 5000), 'the span larger than maxBytes went alone');
  await p.shutdown(1000);
  t.is(batches.flat().length, 60);
  t.is(p.stats.exported, 60);
});

test('encoded spans: slabs come back once their batch is done and are refilled; a batch waiting on a retry keeps its bytes; every request byte for byte the reference', async (t) => {
  const pushed: SidelightSpan[] = [];
  let next = 0;
  let attempts = 0;
  let mismatches = 0;
  const sink = encodedSink(async (items) => {
    attempts++;
    // while this batch waits, the pipeline encodes more spans (into free slabs)
    await new Promise((r) => setTimeout(r, 2));
    const want = ProtobufTraceSerializer.serializeRequest(pushed.slice(next, next + items.length).map((s) => toReadableSpan(s, resource)))!;
    if (!Buffer.from(assembleTraceRequest(items)).equals(Buffer.from(want))) mismatches++;
    // every 7th attempt fails retryably: the same items are sent again after the backoff
    if (attempts % 7 === 0) return { ok: false, retryable: true, code: 'UNAVAILABLE', error: 'try again' };
    next += items.length;
    return { ok: true };
  });
  const before = { ...slabStats };
  const p = new ExportPipeline({ maxSpans: 64, delayMs: 5, queueSpans: 100_000, maxInFlight: 1, retryInitialMs: 5, retryMaxMs: 10 }, sink);
  const N = 4000;
  for (let i = 0; i < N; i++) {
    const s = span(i);
    s.attributes = { i, pad: 'x'.repeat((i * 131) % 1500) };
    p.push(s, resource);
    pushed.push(s);
    if (i % 50 === 49) await new Promise((r) => setTimeout(r, 3));
  }
  for (let waited = 0; p.stats.exported < N && waited < 30_000; waited += 20) await new Promise((r) => setTimeout(r, 20));
  await p.shutdown(1000);
  t.is(p.stats.exported, N);
  t.is(next, N);
  t.is(mismatches, 0, 'every attempt, retries included, sent the bytes of its own spans');
  t.true(p.stats.retries > 0);
  const made = slabStats.made - before.made;
  const reused = slabStats.reused - before.reused;
  t.true(reused > made, `${made} slabs made, ${reused} reused`);
});
