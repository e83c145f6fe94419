/**
 * selfmetrics.ts — the agent's own telemetry (`sidelight.*`, documented in docs/metrics.md):
 * events in, spans out, drops by reason, export queue depth, export latency and errors,
 * per-probe BPF run time. Built on demand from a snapshot of the agent's counters (nothing is
 * recorded twice), and rendered two ways: Prometheus text for GET /metrics on the health
 * server, and one OTLP ResourceMetrics under the agent's own Resource, exported every
 * metrics interval by SelfMetricsLoop beside the workload metrics.
 *
 * Pure apart from the loop's timer (unref'd); main thread only. Cardinality is bounded by
 * construction: label values come from fixed lists (drop reasons, probe names, signals) or
 * from the outcome codes transport.ts produces (gRPC status names, HTTP statuses, errno
 * names).
 */
import { ValueType, type Attributes, type HrTime } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import type { Resource } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType, type MetricData, type PushMetricExporter, type ResourceMetrics } from '@opentelemetry/sdk-metrics';
import type { PickupStats } from '../receiver/pickup.js';
import { AGENT_NAME, AGENT_VERSION } from '../version.js';
import { hrTime } from './convert.js';
import type { MetricExporterStats } from './metricexporter.js';
import { EXPORT_LATENCY_BUCKETS, type LatencyHistogram, type PipelineStats } from './pipeline.js';

/** What the agent knows about itself at one instant. */
export interface SelfSnapshot {
  /** BPF counters summed over CPUs (layout.ts COUNTER_NAMES) */
  kernel: Record<string, number>;
  /** per-program run time and runs (needs kernel.bpf_stats_enabled, which the agent turns on) */
  probes: { name: string; runTimeNs: number; runCount: number }[];
  /** ring-buffer records decoded */
  eventsReceived: number;
  /** ring-buffer records that could not be decoded */
  malformedEvents: number;
  /** spans assembled (before export) */
  spansCreated: number;
  /** streams/messages a protocol parser gave up on (HTTP/1 parse errors, HTTP/2 desyncs and protocol errors, DNS parse errors and TCP desyncs) */
  parserGaveUp: number;
  /** requests not tracked because a connection already had limits.pendingPerConnection waiting */
  pendingOverflow: number;
  /** connections in the table */
  connections: number;
  /** the traces pipeline; null when traces are not exported */
  traces: { stats: PipelineStats; depth: number; depthBytes: number; latency: LatencyHistogram } | null;
  /** the metrics exporter; null when metrics are not exported */
  metrics: MetricExporterStats | null;
  /** the OTLP receiver (src/ingest/); absent when it is off */
  receiver?: ReceiverSelfStats;
  /** SDK detection and de-duplication; absent in snapshots made without it */
  sdk?: SdkSelfStats;
  /** the iter/tcp pickup of connections open before the agent started; absent in snapshots made without it */
  pickup?: PickupSelfStats;
  /** the per-workload metric stores (otlp/metrics.ts `requests`, otlp/connmetrics.ts `tcp`); absent when metrics are not exported */
  workloadMetrics?: Record<'requests' | 'tcp', WorkloadMetricsSelfStats>;
  /** the agent process's memory (process.memoryUsage()); absent in snapshots made without it */
  memory?: { rss: number; heapUsed: number; heapTotal: number };
  /** the bounded caches on the per-event path; absent in snapshots made without them */
  caches?: CacheSelfStats;
}

/** The per-event caches (decode.ts, http1.ts, encode.ts): lookups by outcome, and what they hold. */
export interface CacheSelfStats {
  decode: { hits: number; misses: number };
  httpIntern: { hits: number; misses: number };
  /** whole HTTP/1 heads taken from the table of parsed heads, looked up and not found, and kept */
  httpHeads: { hits: number; misses: number; stores: number };
  /** attribute keys' encodings: held, and keys encoded without the cache once it was full */
  otlpKeys: { size: number; full: number };
  /** whole span attribute fields: written from the cache or encoded, and the bytes held */
  otlpAttributes: { hits: number; misses: number; bytes: number };
  /** per-connection attribute memos: spans whose attributes all came from it (hits) or not (misses), fields copied */
  otlpMemo: { hits: number; misses: number; fields: number };
  /** encoder slabs: hits reused from the free list, misses newly allocated */
  otlpSlabs: { hits: number; misses: number };
}

/** One per-workload metric store: workloads held, and dropped by reason. */
export interface WorkloadMetricsSelfStats {
  workloads: number;
  /** dropped because the store held maxWorkloads (their series ended early) */
  evicted: number;
  /** dropped after the idle time without measurements (exited processes), after a last export */
  expired: number;
}

/** The pickup at start: the counts of receiver/pickup.ts PickupStats exported here. */
export type PickupSelfStats = Pick<PickupStats, 'listeners' | 'seen' | 'seededServer' | 'seededClient' | 'skippedKnown' | 'skippedClosing' | 'skippedRoleUnsure' | 'skippedTableFull' | 'failed'>;

/** Every outcome of a connected socket found by the pickup, each an `outcome` value of sidelight.pickup.sockets. */
export const PICKUP_OUTCOMES = ['seeded_server', 'seeded_client', 'already_known', 'closing', 'role_unsure', 'table_full'] as const;

/** What the OTLP receiver reports to self-telemetry (counts of items: spans, data points, log records). */
export interface ReceiverSelfStats {
  /** per signal: items accepted, forwarded, and lost by reason */
  signals: Record<string, { received: number; forwarded: number; queueFull: number; exportFailed: number; noEndpoint: number; rejectedByBackend: number }>;
  /** requests refused whole, by reason (invalid, too_large, rate_limited, queue_full) */
  refusedRequests: Record<string, number>;
  queueBytes: number;
}

/** SDK-instrumented processes (receiver/sdkdetect.ts). */
export interface SdkSelfStats {
  /** eBPF spans dropped because their process sends the same hops through its SDK (either source) */
  deduplicated: number;
  /** processes currently known to export their own traces */
  processes: number;
}

export type SelfMetricKind = 'counter' | 'gauge' | 'histogram';

export interface SelfPoint {
  attributes: Record<string, string>;
  value: number;
  /** histograms only */
  histogram?: { count: number; sum: number; counts: number[]; bounds: number[] };
}

export interface SelfMetric {
  /** OTLP name, sidelight.* */
  name: string;
  /** Prometheus name (units and _total as the OpenMetrics conventions have them) */
  prom: string;
  description: string;
  unit: string;
  kind: SelfMetricKind;
  points: SelfPoint[];
}

/** Every drop reason, each a `reason` value of sidelight.drops (always present, 0 or more). */
export const DROP_REASONS = [
  'ringbuf_full',
  'inflight_full',
  'capture_read_failed',
  'malformed_event',
  'parser_gave_up',
  'pending_overflow',
  'queue_full',
  'queue_bytes_full',
  'export_failed',
  'rejected_by_backend',
] as const;

const p = (value: number, attributes: Record<string, string> = {}): SelfPoint => ({ attributes, value });

/** The self-telemetry metrics for one snapshot. */
export function selfMetrics(s: SelfSnapshot): SelfMetric[] {
  const t = s.traces?.stats;
  const drops: Record<(typeof DROP_REASONS)[number], number> = {
    ringbuf_full: s.kernel['ringbuf_full'] ?? 0,
    inflight_full: s.kernel['inflight_full'] ?? 0,
    capture_read_failed: s.kernel['read_fail'] ?? 0,
    malformed_event: s.malformedEvents,
    parser_gave_up: s.parserGaveUp,
    pending_overflow: s.pendingOverflow,
    queue_full: t?.droppedQueueFull ?? 0,
    queue_bytes_full: t?.droppedQueueBytes ?? 0,
    export_failed: t?.droppedExportFailed ?? 0,
    rejected_by_backend: t?.rejected ?? 0,
  };
  const errors: SelfPoint[] = [];
  for (const [code, n] of Object.entries(t?.errorsByCode ?? {})) errors.push(p(n, { signal: 'traces', code }));
  for (const [code, n] of Object.entries(s.metrics?.errorsByCode ?? {})) errors.push(p(n, { signal: 'metrics', code }));
  const out: SelfMetric[] = [
    { name: 'sidelight.kernel.events', prom: 'sidelight_kernel_events_total', description: 'Events the eBPF probes wrote to the ring buffer.', unit: '{event}', kind: 'counter', points: [p(s.kernel['events'] ?? 0)] },
    { name: 'sidelight.events.received', prom: 'sidelight_events_received_total', description: 'Ring-buffer records the agent decoded.', unit: '{event}', kind: 'counter', points: [p(s.eventsReceived)] },
    { name: 'sidelight.spans.created', prom: 'sidelight_spans_created_total', description: 'Spans assembled from observed traffic.', unit: '{span}', kind: 'counter', points: [p(s.spansCreated)] },
    { name: 'sidelight.spans.exported', prom: 'sidelight_spans_exported_total', description: 'Spans accepted by the OTLP endpoint (including any it then reported as rejected).', unit: '{span}', kind: 'counter', points: [p(t?.exported ?? 0)] },
    { name: 'sidelight.drops', prom: 'sidelight_drops_total', description: 'Events, requests or spans lost, by reason.', unit: '{item}', kind: 'counter', points: DROP_REASONS.map((r) => p(drops[r], { reason: r })) },
    { name: 'sidelight.export.queue.size', prom: 'sidelight_export_queue_spans', description: 'Spans waiting in the export queue.', unit: '{span}', kind: 'gauge', points: [p(s.traces?.depth ?? 0)] },
    { name: 'sidelight.export.queue.bytes', prom: 'sidelight_export_queue_bytes', description: 'Estimated size of the spans waiting in the export queue.', unit: 'By', kind: 'gauge', points: [p(s.traces?.depthBytes ?? 0)] },
    { name: 'sidelight.export.errors', prom: 'sidelight_export_errors_total', description: 'Failed export attempts, by signal and outcome code.', unit: '{error}', kind: 'counter', points: errors },
    { name: 'sidelight.export.retries', prom: 'sidelight_export_retries_total', description: 'Span export attempts that were retries.', unit: '{retry}', kind: 'counter', points: [p(t?.retries ?? 0)] },
    { name: 'sidelight.export.partial_success.rejected', prom: 'sidelight_export_partial_success_rejected_total', description: 'Items the OTLP endpoint rejected in partial-success responses, by signal.', unit: '{item}', kind: 'counter', points: [p(t?.rejected ?? 0, { signal: 'traces' }), p(s.metrics?.rejectedDataPoints ?? 0, { signal: 'metrics' })] },
    { name: 'sidelight.connections.active', prom: 'sidelight_connections_active', description: 'Connections tracked by the agent.', unit: '{connection}', kind: 'gauge', points: [p(s.connections)] },
    { name: 'sidelight.bpf.probe.run_time', prom: 'sidelight_bpf_probe_run_time_seconds_total', description: 'CPU time spent in each eBPF program.', unit: 's', kind: 'counter', points: s.probes.map((x) => p(x.runTimeNs / 1e9, { probe: x.name })) },
    { name: 'sidelight.bpf.probe.runs', prom: 'sidelight_bpf_probe_runs_total', description: 'Runs of each eBPF program.', unit: '{run}', kind: 'counter', points: s.probes.map((x) => p(x.runCount, { probe: x.name })) },
  ];
  const r = s.receiver;
  if (r) {
    const sig = Object.entries(r.signals);
    out.push(
      { name: 'sidelight.receiver.items', prom: 'sidelight_receiver_items_total', description: 'Items (spans, data points, log records) the OTLP receiver accepted from apps, by signal.', unit: '{item}', kind: 'counter', points: sig.map(([signal, v]) => p(v.received, { signal })) },
      { name: 'sidelight.receiver.forwarded', prom: 'sidelight_receiver_forwarded_total', description: 'Received items the OTLP endpoint accepted, by signal.', unit: '{item}', kind: 'counter', points: sig.map(([signal, v]) => p(v.forwarded, { signal })) },
      {
        name: 'sidelight.receiver.drops',
        prom: 'sidelight_receiver_drops_total',
        description: 'Received items refused (the sender was told to retry) or lost, by signal and reason.',
        unit: '{item}',
        kind: 'counter',
        points: sig.flatMap(([signal, v]) => [
          p(v.queueFull, { signal, reason: 'queue_full' }),
          p(v.exportFailed, { signal, reason: 'export_failed' }),
          p(v.noEndpoint, { signal, reason: 'no_endpoint' }),
          p(v.rejectedByBackend, { signal, reason: 'rejected_by_backend' }),
        ]),
      },
      { name: 'sidelight.receiver.refused_requests', prom: 'sidelight_receiver_refused_requests_total', description: 'Requests the OTLP receiver refused whole, by reason.', unit: '{request}', kind: 'counter', points: Object.entries(r.refusedRequests).map(([reason, n]) => p(n, { reason })) },
      { name: 'sidelight.receiver.queue.bytes', prom: 'sidelight_receiver_queue_bytes', description: 'Bytes of received requests waiting to be forwarded.', unit: 'By', kind: 'gauge', points: [p(r.queueBytes)] },
    );
  }
  if (s.sdk) {
    out.push(
      { name: 'sidelight.spans.deduplicated', prom: 'sidelight_spans_deduplicated_total', description: 'eBPF spans dropped because their process sends the same hops through its SDK (seen exporting traces, or through the OTLP receiver).', unit: '{span}', kind: 'counter', points: [p(s.sdk.deduplicated)] },
      { name: 'sidelight.sdk.processes', prom: 'sidelight_sdk_processes', description: 'Processes known to export their own traces (SDK-instrumented).', unit: '{process}', kind: 'gauge', points: [p(s.sdk.processes)] },
    );
  }
  const k = s.pickup;
  if (k) {
    const outcomes: Record<(typeof PICKUP_OUTCOMES)[number], number> = {
      seeded_server: k.seededServer,
      seeded_client: k.seededClient,
      already_known: k.skippedKnown,
      closing: k.skippedClosing,
      role_unsure: k.skippedRoleUnsure,
      table_full: k.skippedTableFull,
    };
    out.push(
      { name: 'sidelight.pickup.sockets', prom: 'sidelight_pickup_sockets_total', description: 'Connected TCP sockets open before the agent started, found by the pickup at start, by outcome.', unit: '{socket}', kind: 'counter', points: PICKUP_OUTCOMES.map((o) => p(outcomes[o], { outcome: o })) },
      { name: 'sidelight.pickup.listeners', prom: 'sidelight_pickup_listeners_total', description: 'Listening TCP sockets found by the pickup at start (on wanted ports).', unit: '{socket}', kind: 'counter', points: [p(k.listeners)] },
      { name: 'sidelight.pickup.failures', prom: 'sidelight_pickup_failures_total', description: 'Pickup runs that failed (roles then come from the first bytes).', unit: '{run}', kind: 'counter', points: [p(k.failed)] },
    );
  }
  const c = s.caches;
  if (c) {
    const lookups: Array<[string, { hits: number; misses: number }]> = [
      ['decode', c.decode],
      ['http_intern', c.httpIntern],
      ['http_heads', c.httpHeads],
      ['otlp_attributes', c.otlpAttributes],
      ['otlp_memo', c.otlpMemo],
      ['otlp_slabs', c.otlpSlabs],
    ];
    out.push(
      {
        name: 'sidelight.cache.lookups',
        prom: 'sidelight_cache_lookups_total',
        description: 'Lookups in the bounded per-event caches (decoded strings, HTTP/1 header strings, parsed HTTP/1 heads, encoded span attribute fields, per-connection attribute memos; otlp_slabs: a 64 KiB encoding slab reused or newly allocated), by cache and outcome.',
        unit: '{lookup}',
        kind: 'counter',
        points: lookups.flatMap(([cache, l]) => [p(l.hits, { cache, outcome: 'hit' }), p(l.misses, { cache, outcome: 'miss' })]),
      },
      { name: 'sidelight.cache.entries', prom: 'sidelight_cache_entries', description: 'Attribute keys whose encoding is cached (bounded).', unit: '{entry}', kind: 'gauge', points: [p(c.otlpKeys.size, { cache: 'otlp_keys' })] },
      { name: 'sidelight.cache.bypassed', prom: 'sidelight_cache_bypassed_total', description: 'Attribute keys encoded without the cache because it was full.', unit: '{key}', kind: 'counter', points: [p(c.otlpKeys.full, { cache: 'otlp_keys' })] },
      { name: 'sidelight.cache.size', prom: 'sidelight_cache_size_bytes', description: 'Bytes held by the encoded span attribute cache (bounded at 1 MiB).', unit: 'By', kind: 'gauge', points: [p(c.otlpAttributes.bytes, { cache: 'otlp_attributes' })] },
    );
  }
  const w = s.workloadMetrics;
  if (w) {
    const stores = Object.entries(w);
    out.push(
      { name: 'sidelight.metrics.workloads', prom: 'sidelight_metrics_workloads', description: 'Workloads (resources) whose metric series the agent holds, by store.', unit: '{workload}', kind: 'gauge', points: stores.map(([store, v]) => p(v.workloads, { store })) },
      {
        name: 'sidelight.metrics.workloads.dropped',
        prom: 'sidelight_metrics_workloads_dropped_total',
        description: 'Workloads whose metric series were dropped, by store and reason (evicted: the bound was reached; expired: idle, after a last export).',
        unit: '{workload}',
        kind: 'counter',
        points: stores.flatMap(([store, v]) => [p(v.evicted, { store, reason: 'evicted' }), p(v.expired, { store, reason: 'expired' })]),
      },
    );
  }
  if (s.memory) {
    out.push(
      { name: 'process.memory.usage', prom: 'process_resident_memory_bytes', description: 'Resident memory of the agent process.', unit: 'By', kind: 'gauge', points: [p(s.memory.rss)] },
      { name: 'sidelight.memory.heap.used', prom: 'sidelight_memory_heap_used_bytes', description: 'V8 heap in use (live objects and garbage not yet collected).', unit: 'By', kind: 'gauge', points: [p(s.memory.heapUsed)] },
      { name: 'sidelight.memory.heap.size', prom: 'sidelight_memory_heap_size_bytes', description: 'V8 heap reserved (old and young generations; the young one is capped by --max-semi-space-size).', unit: 'By', kind: 'gauge', points: [p(s.memory.heapTotal)] },
    );
  }
  if (s.traces) {
    const l = s.traces.latency;
    out.push({
      name: 'sidelight.export.duration',
      prom: 'sidelight_export_duration_seconds',
      description: 'Duration of span export attempts.',
      unit: 's',
      kind: 'histogram',
      points: [{ attributes: { signal: 'traces' }, value: l.sum, histogram: { count: l.count, sum: l.sum, counts: [...l.counts], bounds: EXPORT_LATENCY_BUCKETS } }],
    });
  }
  return out;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labels(a: Record<string, string>, extra?: [string, string]): string {
  const parts = Object.entries(a).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  if (extra) parts.push(`${extra[0]}="${extra[1]}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function num(v: number): string {
  return Number.isFinite(v) ? String(v) : v > 0 ? '+Inf' : v < 0 ? '-Inf' : 'NaN';
}

/** Prometheus text exposition format 0.0.4. */
export function renderPrometheus(metrics: SelfMetric[]): string {
  let out = '';
  for (const m of metrics) {
    const base = m.kind === 'counter' ? m.prom.replace(/_total$/, '') : m.prom;
    out += `# HELP ${base} ${m.description}\n# TYPE ${base} ${m.kind}\n`;
    for (const pt of m.points) {
      if (m.kind !== 'histogram' || !pt.histogram) {
        out += `${m.prom}${labels(pt.attributes)} ${num(pt.value)}\n`;
        continue;
      }
      const h = pt.histogram;
      let cum = 0;
      h.bounds.forEach((b, i) => {
        cum += h.counts[i]!;
        out += `${base}_bucket${labels(pt.attributes, ['le', String(b)])} ${cum}\n`;
      });
      out += `${base}_bucket${labels(pt.attributes, ['le', '+Inf'])} ${h.count}\n`;
      out += `${base}_sum${labels(pt.attributes)} ${num(h.sum)}\n${base}_count${labels(pt.attributes)} ${h.count}\n`;
    }
  }
  return out;
}

/** One ResourceMetrics (cumulative since `start`) under the agent's own resource. */
export function toResourceMetrics(metrics: SelfMetric[], resource: Resource, start: HrTime, now: HrTime): ResourceMetrics {
  const data: MetricData[] = metrics.map((m): MetricData => {
    const descriptor = { name: m.name, description: m.description, unit: m.unit, valueType: ValueType.DOUBLE };
    if (m.kind === 'histogram') {
      return {
        descriptor,
        aggregationTemporality: AggregationTemporality.CUMULATIVE,
        dataPointType: DataPointType.HISTOGRAM,
        dataPoints: m.points.map((pt) => ({
          startTime: start,
          endTime: now,
          attributes: pt.attributes as Attributes,
          value: { buckets: { boundaries: pt.histogram!.bounds, counts: pt.histogram!.counts }, sum: pt.histogram!.sum, count: pt.histogram!.count },
        })),
      };
    }
    const dataPoints = m.points.map((pt) => ({ startTime: start, endTime: now, attributes: pt.attributes as Attributes, value: pt.value }));
    return m.kind === 'counter'
      ? { descriptor, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.SUM, isMonotonic: true, dataPoints }
      : { descriptor, aggregationTemporality: AggregationTemporality.CUMULATIVE, dataPointType: DataPointType.GAUGE, dataPoints };
  });
  return { resource, scopeMetrics: [{ scope: { name: AGENT_NAME, version: AGENT_VERSION }, metrics: data }] };
}

/** Exports the self-telemetry every intervalMs (and once at shutdown); one round at a time. */
export class SelfMetricsLoop {
  private readonly snapshot: () => SelfSnapshot;
  private readonly resource: Resource;
  private readonly exporter: PushMetricExporter;
  private readonly intervalMs: number;
  private readonly onError: (m: string) => void;
  private readonly start = hrTime(BigInt(Date.now()) * 1_000_000n);
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  readonly stats = { exports: 0, failures: 0 };

  constructor(snapshot: () => SelfSnapshot, resource: Resource, exporter: PushMetricExporter, intervalMs: number, onError: (m: string) => void = () => {}) {
    this.snapshot = snapshot;
    this.resource = resource;
    this.exporter = exporter;
    this.intervalMs = intervalMs;
    this.onError = onError;
  }

  begin(): void {
    this.timer = setInterval(() => void this.flush(), this.intervalMs);
    this.timer.unref();
  }

  flush(): Promise<void> {
    this.running ??= (async () => {
      const now = hrTime(BigInt(Date.now()) * 1_000_000n);
      const rm = toResourceMetrics(selfMetrics(this.snapshot()), this.resource, this.start, now);
      const r = await new Promise<{ code: ExportResultCode; error?: Error }>((resolve) => this.exporter.export(rm, resolve));
      if (r.code === ExportResultCode.SUCCESS) this.stats.exports++;
      else {
        this.stats.failures++;
        this.onError(`self-telemetry export failed: ${r.error?.message ?? 'unknown error'}`);
      }
    })().finally(() => (this.running = undefined));
    return this.running;
  }

  /** One last export within deadlineMs; the exporter is shut down by its owner. */
  async shutdown(deadlineMs: number): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await Promise.race([this.flush(), new Promise((r) => setTimeout(r, deadlineMs).unref())]);
  }
}
