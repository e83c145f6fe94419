/**
 * pipeline.ts — micro-benchmark: spans per second through the agent's user-space path with a
 * sink that discards, no kernel. Synthetic ring-buffer batches, laid out byte for byte as the
 * kernel writes them (test/helpers/events.ts), carry keep-alive HTTP/1.1 traffic like the
 * benchmark's (wrk → nginx `return 200`): per request four records (client write, server read,
 * server write, client read), hence one SERVER and one CLIENT span. The path is the agent's
 * (src/agent.ts onBatch/onFinishedSpan): decodeBatch → ConnectionTable (HTTP/1 parsing,
 * pairing) → ensureIds + ProcessCache.resource → ExportPipeline (batches of 512, the config
 * default) → SpanSink. Variants, each for SECONDS on one thread:
 *   receiver       spans counted when the connection table emits them (no pipeline)
 *   null           + ExportPipeline → a sink that discards the batch of spans (SpanSink.exportSpans)
 *   protobuf       + the OTLP protobuf encoding the OTLP sink uses for gRPC and HTTP/protobuf:
 *                    each span encoded when queued, the request assembled per batch
 *                    (src/otlp/encode.ts, byte for byte the otlp-transformer's), bytes discarded
 *   protobuf+gzip  + gzip of those bytes (export.compression: gzip; the default is none), discarded
 * Prints one JSON object on stdout.
 *
 *   node --import tsx bench/micro/pipeline.ts SECONDS
 */
import { gzipSync } from 'node:zlib';
import type { Resource } from '@opentelemetry/resources';
import { ProcessCache } from '../../src/enrich/process.js';
import { ensureIds } from '../../src/otlp/convert.js';
import { assembleTraceRequest, type EncodedSpan } from '../../src/otlp/encode.js';
import { ExportPipeline } from '../../src/otlp/pipeline.js';
import type { ExportOutcome, SpanSink } from '../../src/otlp/sinks.js';
import { MonotonicClock } from '../../src/receiver/clock.js';
import { ConnectionTable } from '../../src/receiver/connections.js';
import { decodeBatch, type DecodeStats } from '../../src/receiver/decode.js';
import { Direction, EventType } from '../../src/receiver/layout.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { batch, encodeEvent, type FakeEvent } from '../../test/helpers/events.js';

const seconds = Number(process.argv[2] ?? 3);
const CONNS = 32;
const REQUESTS_PER_BATCH = 256;
const SERVER_PORT = 8080;
// two live processes, so ProcessCache reads real /proc entries (once, then cached)
const SERVER_PID = process.pid;
const CLIENT_PID = process.ppid;

const REQUEST = 'GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n';
const RESPONSE =
  'HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 23 Nov 2025 18:00:00 GMT\r\n' +
  'Content-Type: application/octet-stream\r\nContent-Length: 9\r\nConnection: keep-alive\r\n\r\nnginx ok\n';

function conn(i: number): { server: FakeEvent; client: FakeEvent } {
  const cport = 40000 + i;
  return {
    server: { tgid: SERVER_PID, comm: 'nginx', sock: 0x100000n + BigInt(i), sport: SERVER_PORT, dport: cport },
    client: { tgid: CLIENT_PID, comm: 'wrk', sock: 0x200000n + BigInt(i), sport: cport, dport: SERVER_PORT },
  };
}

function setupBatch(): ArrayBuffer {
  const evs: FakeEvent[] = [];
  for (let i = 0; i < CONNS; i++) {
    const c = conn(i);
    evs.push({ ...c.client, type: EventType.Connect, ret: 0, tsStart: 100n, tsEnd: 110n });
    evs.push({ ...c.server, type: EventType.Accept, ret: 10 + i, tsStart: 105n, tsEnd: 120n });
  }
  return batch(evs.map(encodeEvent));
}

function trafficBatch(): ArrayBuffer {
  const recs: Uint8Array[] = [];
  let ts = 1_000_000n;
  for (let r = 0; r < REQUESTS_PER_BATCH; r++) {
    const c = conn(r % CONNS);
    const t = (): bigint => (ts += 1_000n);
    recs.push(encodeEvent({ ...c.client, direction: Direction.Egress, syscall: 2, tsStart: t(), tsEnd: t(), data: REQUEST }));
    recs.push(encodeEvent({ ...c.server, direction: Direction.Ingress, syscall: 1, tsStart: t(), tsEnd: t(), data: REQUEST }));
    recs.push(encodeEvent({ ...c.server, direction: Direction.Egress, syscall: 2, tsStart: t(), tsEnd: t(), data: RESPONSE }));
    recs.push(encodeEvent({ ...c.client, direction: Direction.Ingress, syscall: 1, tsStart: t(), tsEnd: t(), data: RESPONSE }));
  }
  return batch(recs);
}

class Sink implements SpanSink {
  readonly name: string;
  bytes = 0;
  private readonly mode: 'null' | 'protobuf' | 'protobuf+gzip';
  /** as the OTLP sink over protobuf: the pipeline encodes each span when it is queued */
  readonly preEncoded: boolean;
  constructor(mode: 'null' | 'protobuf' | 'protobuf+gzip') {
    this.mode = mode;
    this.name = mode;
    this.preEncoded = mode !== 'null';
  }
  async export(): Promise<ExportOutcome> {
    return { ok: false, error: 'the pipeline should call exportSpans or exportEncoded' };
  }
  async exportSpans(): Promise<ExportOutcome> {
    return { ok: true };
  }
  async exportEncoded(items: readonly EncodedSpan[]): Promise<ExportOutcome> {
    const buf = assembleTraceRequest(items);
    this.bytes += this.mode === 'protobuf+gzip' ? gzipSync(buf).length : buf.length;
    return { ok: true };
  }
  async shutdown(): Promise<void> {}
}

type Variant = 'receiver' | 'null' | 'protobuf' | 'protobuf+gzip';

async function run(variant: Variant): Promise<Record<string, number | string>> {
  const clock = new MonotonicClock();
  const processes = new ProcessCache({ maxProcesses: 8192 });
  const sink = variant === 'receiver' ? undefined : new Sink(variant);
  const pipeline = sink ? new ExportPipeline({ maxSpans: 512, delayMs: 1000, queueSpans: 8192 }, sink) : undefined;
  let emitted = 0;
  const onSpan = (s: SidelightSpan): void => {
    emitted++;
    ensureIds(s);
    const resource: Resource = processes.resource(s.process);
    pipeline?.push(s, resource);
  };
  const table = new ConnectionTable(
    {
      maxConnections: 65536,
      selfTgid: 1,
      onNewConnection: (ev) => processes.info({ tgid: ev.tgid, tid: ev.tid, comm: ev.comm, cgroupId: ev.cgroupId }),
      idleMs: 300_000,
      http: { captureQuery: false, maxPending: 64 },
    },
    clock,
    onSpan,
  );
  const stats: DecodeStats = { records: 0, malformed: 0 };
  decodeBatch(setupBatch(), (ev) => table.onEvent(ev), stats);
  const traffic = trafficBatch();
  const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
  // warm-up (JIT), then measure
  for (let i = 0; i < 50; i++) {
    decodeBatch(traffic, (ev) => table.onEvent(ev), stats);
    await tick();
  }
  const e0 = emitted;
  const x0 = pipeline?.stats.exported ?? 0;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(Math.round(seconds * 1e9));
  let batches = 0;
  while (process.hrtime.bigint() < end) {
    decodeBatch(traffic, (ev) => table.onEvent(ev), stats);
    batches++;
    await tick();
  }
  if (pipeline) await pipeline.shutdown(10_000);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  const spans = pipeline ? pipeline.stats.exported - x0 : emitted - e0;
  const cpuUs = cpu.user + cpu.system;
  return {
    variant,
    seconds: secs,
    records: batches * REQUESTS_PER_BATCH * 4,
    spans,
    spansPerSec: spans / secs,
    cpuUsPerSpan: cpuUs / spans,
    recordsPerSec: (batches * REQUESTS_PER_BATCH * 4) / secs,
    droppedQueueFull: pipeline?.stats.droppedQueueFull ?? 0,
    malformed: stats.malformed,
    bytesPerSpan: sink && sink.bytes > 0 ? sink.bytes / spans : 0,
    spansPerRequest: (emitted - e0) / (batches * REQUESTS_PER_BATCH),
  };
}

const out: Record<string, unknown> = {};
for (const v of ['receiver', 'null', 'protobuf', 'protobuf+gzip'] as const) out[v] = await run(v);
process.stdout.write(`${JSON.stringify(out)}\n`);
