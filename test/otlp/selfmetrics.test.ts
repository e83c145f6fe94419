/**
 * Self-telemetry (selfmetrics.ts): a known snapshot rendered as Prometheus text (golden
 * lines) and exported as OTLP (through OtlpMetricExporter to a scripted OTLP/HTTP JSON
 * server: names, kinds, values and the agent's resource read back from the request body).
 */
import test, { type ExecutionContext } from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { OtlpMetricExporter } from '../../src/otlp/metricexporter.js';
import { EXPORT_LATENCY_BUCKETS } from '../../src/otlp/pipeline.js';
import { DROP_REASONS, renderPrometheus, selfMetrics, SelfMetricsLoop, type SelfSnapshot } from '../../src/otlp/selfmetrics.js';
import { startOtlpServer } from '../helpers/otlpserver.js';

/** one line of Prometheus text, present exactly */
function hasLine(t: ExecutionContext, lines: string[], line: string): void {
  t.true(lines.includes(line), `missing: ${line}`);
}

function snapshot(): SelfSnapshot {
  const counts = new Array<number>(EXPORT_LATENCY_BUCKETS.length + 1).fill(0);
  counts[0] = 2; // <= 5 ms
  counts[3] = 1; // <= 50 ms
  return {
    kernel: { events: 1000, ringbuf_full: 7, inflight_full: 1, read_fail: 2 },
    probes: [
      { name: 'sl_sys_enter', runTimeNs: 2_500_000_000, runCount: 40 },
      { name: 'sl_sys_exit', runTimeNs: 500_000, runCount: 41 },
    ],
    eventsReceived: 993,
    malformedEvents: 3,
    spansCreated: 120,
    parserGaveUp: 4,
    pendingOverflow: 5,
    connections: 9,
    traces: {
      stats: {
        received: 120, exported: 100, droppedQueueFull: 6, droppedQueueBytes: 2, droppedExportFailed: 8, rejected: 3, partialSuccesses: 1,
        exportErrors: 5, errorsByCode: { UNAVAILABLE: 4, 'HTTP "x"\n': 1 }, retries: 4, retriesServerDelay: 1, batches: 7,
      },
      depth: 4,
      depthBytes: 800,
      latency: { count: 3, sum: 0.06, counts },
    },
    metrics: { exports: 2, failures: 1, errorsByCode: { DEADLINE_EXCEEDED: 1 }, rejectedDataPoints: 11, partialSuccesses: 1 },
  };
}

test('Prometheus text: names, types, labels (escaped), drops by every reason, cumulative histogram buckets', (t) => {
  const text = renderPrometheus(selfMetrics(snapshot()));
  const has = (line: string): boolean => t.true(text.split('\n').includes(line), `missing: ${line}`);
  has('# TYPE sidelight_drops counter');
  has('sidelight_events_received_total 993');
  has('sidelight_kernel_events_total 1000');
  has('sidelight_spans_created_total 120');
  has('sidelight_spans_exported_total 100');
  has('sidelight_drops_total{reason="ringbuf_full"} 7');
  has('sidelight_drops_total{reason="inflight_full"} 1');
  has('sidelight_drops_total{reason="capture_read_failed"} 2');
  has('sidelight_drops_total{reason="malformed_event"} 3');
  has('sidelight_drops_total{reason="parser_gave_up"} 4');
  has('sidelight_drops_total{reason="pending_overflow"} 5');
  has('sidelight_drops_total{reason="queue_full"} 6');
  has('sidelight_drops_total{reason="queue_bytes_full"} 2');
  has('sidelight_drops_total{reason="export_failed"} 8');
  has('sidelight_drops_total{reason="rejected_by_backend"} 3');
  t.is(text.split('\n').filter((l) => l.startsWith('sidelight_drops_total')).length, DROP_REASONS.length);
  has('# TYPE sidelight_export_queue_spans gauge');
  has('sidelight_export_queue_spans 4');
  has('sidelight_export_queue_bytes 800');
  has('sidelight_export_errors_total{signal="traces",code="UNAVAILABLE"} 4');
  has('sidelight_export_errors_total{signal="traces",code="HTTP \\"x\\"\\n"} 1');
  has('sidelight_export_errors_total{signal="metrics",code="DEADLINE_EXCEEDED"} 1');
  has('sidelight_export_partial_success_rejected_total{signal="metrics"} 11');
  has('sidelight_bpf_probe_run_time_seconds_total{probe="sl_sys_enter"} 2.5');
  has('sidelight_bpf_probe_runs_total{probe="sl_sys_exit"} 41');
  has('sidelight_connections_active 9');
  has('# TYPE sidelight_export_duration_seconds histogram');
  has('sidelight_export_duration_seconds_bucket{signal="traces",le="0.005"} 2');
  has('sidelight_export_duration_seconds_bucket{signal="traces",le="0.025"} 2');
  has('sidelight_export_duration_seconds_bucket{signal="traces",le="0.05"} 3');
  has('sidelight_export_duration_seconds_bucket{signal="traces",le="+Inf"} 3');
  has('sidelight_export_duration_seconds_sum{signal="traces"} 0.06');
  has('sidelight_export_duration_seconds_count{signal="traces"} 3');
});

test('OTLP: the same metrics under the agent resource, through the metric exporter', async (t) => {
  const srv = await startOtlpServer('http');
  const ex = new OtlpMetricExporter({ url: srv.metricsUrl, protocol: 'http/json', headers: {}, timeoutMs: 5000, compression: 'gzip', insecure: false });
  const loop = new SelfMetricsLoop(snapshot, resourceFromAttributes({ 'service.name': 'sidelight', 'host.name': 'h1' }), ex, 60_000);
  await loop.flush();
  await ex.shutdown();
  await srv.close();
  t.is(srv.requests.length, 1);
  type Dp = { asDouble?: number; attributes?: Array<{ key: string; value: { stringValue?: string } }>; count?: string | number; bucketCounts?: Array<string | number> };
  type M = { name: string; unit: string; sum?: { isMonotonic: boolean; dataPoints: Dp[]; aggregationTemporality: number }; gauge?: { dataPoints: Dp[] }; histogram?: { dataPoints: Dp[] } };
  const body = JSON.parse(srv.requests[0]!.body.toString('utf8')) as { resourceMetrics: Array<{ resource: { attributes: Array<{ key: string; value: { stringValue?: string } }> }; scopeMetrics: Array<{ scope: { name: string }; metrics: M[] }> }> };
  t.is(body.resourceMetrics.length, 1);
  const rm = body.resourceMetrics[0]!;
  t.deepEqual(rm.resource.attributes.find((a) => a.key === 'service.name')?.value, { stringValue: 'sidelight' });
  const metrics = new Map(rm.scopeMetrics[0]!.metrics.map((m) => [m.name, m]));
  t.is(rm.scopeMetrics[0]!.scope.name, 'sidelight');
  const drops = metrics.get('sidelight.drops')!;
  t.true(drops.sum!.isMonotonic);
  t.is(drops.sum!.aggregationTemporality, 2, 'cumulative');
  const byReason = Object.fromEntries(drops.sum!.dataPoints.map((d) => [d.attributes![0]!.value.stringValue, d.asDouble ?? 0]));
  t.deepEqual(byReason, { ringbuf_full: 7, inflight_full: 1, capture_read_failed: 2, malformed_event: 3, parser_gave_up: 4, pending_overflow: 5, queue_full: 6, queue_bytes_full: 2, export_failed: 8, rejected_by_backend: 3 });
  t.is(metrics.get('sidelight.export.queue.size')!.gauge!.dataPoints[0]!.asDouble, 4);
  t.is(metrics.get('sidelight.spans.exported')!.sum!.dataPoints[0]!.asDouble, 100);
  t.is(metrics.get('sidelight.bpf.probe.run_time')!.unit, 's');
  t.is(Number(metrics.get('sidelight.export.duration')!.histogram!.dataPoints[0]!.count), 3);
  t.deepEqual(loop.stats, { exports: 1, failures: 0 });
});

test('Prometheus text: workload metric stores (held, dropped by reason) and the agent memory', (t) => {
  const text = renderPrometheus(
    selfMetrics({
      ...snapshot(),
      workloadMetrics: { requests: { workloads: 64, evicted: 900, expired: 36 }, tcp: { workloads: 12, evicted: 0, expired: 5 } },
      memory: { rss: 150_000_000, heapUsed: 30_000_000, heapTotal: 60_000_000 },
    }),
  );
  const lines = text.split('\n');
  for (const line of [
    '# TYPE sidelight_metrics_workloads gauge',
    'sidelight_metrics_workloads{store="requests"} 64',
    'sidelight_metrics_workloads{store="tcp"} 12',
    'sidelight_metrics_workloads_dropped_total{store="requests",reason="evicted"} 900',
    'sidelight_metrics_workloads_dropped_total{store="requests",reason="expired"} 36',
    'sidelight_metrics_workloads_dropped_total{store="tcp",reason="expired"} 5',
    'process_resident_memory_bytes 150000000',
    'sidelight_memory_heap_used_bytes 30000000',
    'sidelight_memory_heap_size_bytes 60000000',
  ])
    hasLine(t, lines, line);
  t.false(renderPrometheus(selfMetrics(snapshot())).includes('sidelight_metrics_workloads'), 'absent when metrics are not exported');
});

test('Prometheus text: the per-event caches, lookups by cache and outcome, entries, bypasses and bytes held', (t) => {
  const text = renderPrometheus(
    selfMetrics({
      ...snapshot(),
      caches: { decode: { hits: 90, misses: 10 }, httpIntern: { hits: 7, misses: 3 }, httpHeads: { hits: 11, misses: 4, stores: 2 }, otlpKeys: { size: 14, full: 2 }, otlpAttributes: { hits: 500, misses: 40, bytes: 4096 }, otlpMemo: { hits: 30, misses: 6, fields: 300 }, otlpSlabs: { hits: 70, misses: 5 } },
    }),
  );
  const lines = text.split('\n');
  for (const line of [
    '# TYPE sidelight_cache_lookups counter',
    'sidelight_cache_lookups_total{cache="decode",outcome="hit"} 90',
    'sidelight_cache_lookups_total{cache="decode",outcome="miss"} 10',
    'sidelight_cache_lookups_total{cache="http_intern",outcome="hit"} 7',
    'sidelight_cache_lookups_total{cache="http_intern",outcome="miss"} 3',
    'sidelight_cache_lookups_total{cache="http_heads",outcome="hit"} 11',
    'sidelight_cache_lookups_total{cache="http_heads",outcome="miss"} 4',
    'sidelight_cache_lookups_total{cache="otlp_attributes",outcome="hit"} 500',
    'sidelight_cache_lookups_total{cache="otlp_attributes",outcome="miss"} 40',
    'sidelight_cache_lookups_total{cache="otlp_memo",outcome="hit"} 30',
    'sidelight_cache_lookups_total{cache="otlp_memo",outcome="miss"} 6',
    'sidelight_cache_lookups_total{cache="otlp_slabs",outcome="hit"} 70',
    'sidelight_cache_lookups_total{cache="otlp_slabs",outcome="miss"} 5',
    'sidelight_cache_entries{cache="otlp_keys"} 14',
    'sidelight_cache_bypassed_total{cache="otlp_keys"} 2',
    'sidelight_cache_size_bytes{cache="otlp_attributes"} 4096',
  ])
    hasLine(t, lines, line);
  t.false(renderPrometheus(selfMetrics(snapshot())).includes('sidelight_cache_'), 'absent from snapshots without caches');
});
