import test from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { DataPointType } from '@opentelemetry/sdk-metrics';
import { OtlpMetricExporter } from '../../src/otlp/metricexporter.js';
import { DURATION_BUCKETS, INSTRUMENTS, MetricExportLoop, MetricStore, OVERFLOW_ATTRIBUTE, recordSpan, WORKLOADS_PER_REQUEST } from '../../src/otlp/metrics.js';
import { startOtlpServer } from '../helpers/otlpserver.js';
import type { SidelightSpan } from '../../src/receiver/span.js';

const now: [number, number] = [1_700_000_000, 0];
const r1 = resourceFromAttributes({ 'service.name': 'a' });
const r2 = resourceFromAttributes({ 'service.name': 'b' });

function span(kind: 'server' | 'client', attrs: SidelightSpan['attributes'], ms: number): SidelightSpan {
  const start = 1_700_000_000_000_000_000n;
  return { kind, name: 'x', startUnixNs: start, endUnixNs: start + BigInt(ms * 1e6), attributes: attrs, status: { code: 'unset' }, process: { tgid: 1, tid: 1, comm: 'x', cgroupId: 0n } };
}

test('histograms per workload, instrument and attribute set, with semconv buckets, cumulative', (t) => {
  const m = new MetricStore({ maxWorkloads: 10, maxSeries: 100, maxDnsNamesPerWorkload: 10 });
  for (const ms of [1, 3, 7, 40, 40, 2000, 20_000]) recordSpan(m, span('server', { 'http.request.method': 'GET', 'http.response.status_code': 200, 'url.scheme': 'http', 'url.path': '/x', 'network.protocol.version': '1.1' }, ms), r1);
  recordSpan(m, span('client', { 'http.request.method': 'POST', 'http.response.status_code': 503, 'server.address': 'api', 'server.port': 80, 'error.type': '503', 'url.full': 'http://api/x' }, 12), r1);
  recordSpan(m, span('client', { 'dns.question.name': 'db.test', 'dns.question.type': 'A' }, 2), r2);
  const out = m.collect(now);
  t.is(out.length, 2);
  const a = out.find((x) => x.resource === r1)!;
  const metrics = a.scopeMetrics[0]!.metrics;
  t.deepEqual(metrics.map((x) => [x.descriptor.name, x.descriptor.unit]), [
    ['http.server.request.duration', 's'],
    ['http.client.request.duration', 's'],
  ]);
  const server = metrics[0]!;
  t.is(server.dataPointType, DataPointType.HISTOGRAM);
  const p = server.dataPoints[0]!;
  t.deepEqual(p.attributes, { 'http.request.method': 'GET', 'http.response.status_code': 200, 'url.scheme': 'http', 'network.protocol.version': '1.1' }, 'url.path is not a metric attribute');
  const v = p.value as { buckets: { boundaries: number[]; counts: number[] }; count: number; sum: number; min: number; max: number };
  t.deepEqual(v.buckets.boundaries, DURATION_BUCKETS);
  // 0.001, 0.003 → ≤0.005; 0.007 → ≤0.01; 0.04, 0.04 → ≤0.05; 2 → ≤2.5; 20 → +Inf
  t.deepEqual(v.buckets.counts, [2, 1, 0, 2, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
  t.is(v.count, 7);
  t.is(v.min, 0.001);
  t.is(v.max, 20);
  t.true(Math.abs(v.sum - 22.091) < 1e-9);
  t.deepEqual(metrics[1]!.dataPoints[0]!.attributes, { 'http.request.method': 'POST', 'http.response.status_code': 503, 'server.address': 'api', 'server.port': 80, 'error.type': '503' });
  const dns = out.find((x) => x.resource === r2)!.scopeMetrics[0]!.metrics[0]!;
  t.is(dns.descriptor.name, 'dns.lookup.duration');
  t.deepEqual(dns.dataPoints[0]!.attributes, { 'dns.question.name': 'db.test' });
  // cumulative: a second snapshot keeps counting
  recordSpan(m, span('client', { 'dns.question.name': 'db.test' }, 2), r2);
  const again = m.collect(now).find((x) => x.resource === r2)!.scopeMetrics[0]!.metrics[0]!.dataPoints[0]!.value as { count: number };
  t.is(again.count, 2);
});

test('series past the bound go to one overflow series, counted', (t) => {
  const m = new MetricStore({ maxWorkloads: 10, maxSeries: 16, maxDnsNamesPerWorkload: 1000 });
  for (let i = 0; i < 40; i++) m.record(r1, INSTRUMENTS.httpClient, { 'server.address': `h${i}` }, 0.01, now);
  const points = m.collect(now)[0]!.scopeMetrics[0]!.metrics[0]!.dataPoints;
  t.is(points.length, 17);
  const overflow = points.find((p) => p.attributes[OVERFLOW_ATTRIBUTE] === true)!;
  t.is((overflow.value as { count: number }).count, 24);
  t.is(m.stats.overflowed, 24);
});

test('distinct DNS names per workload are capped; the rest recorded as _OTHER', (t) => {
  const m = new MetricStore({ maxWorkloads: 10, maxSeries: 1000, maxDnsNamesPerWorkload: 3 });
  for (const n of ['a', 'b', 'c', 'd', 'e', 'a']) m.record(r1, INSTRUMENTS.dnsLookup, { 'dns.question.name': n }, 0.001, now);
  const names = m.collect(now)[0]!.scopeMetrics[0]!.metrics[0]!.dataPoints.map((p) => [p.attributes['dns.question.name'], (p.value as { count: number }).count]);
  t.deepEqual(names, [['a', 2], ['b', 1], ['c', 1], ['_OTHER', 2]]);
  t.is(m.stats.dnsNamesCapped, 2);
});

test('workloads are bounded: the longest idle is evicted, counted', (t) => {
  const m = new MetricStore({ maxWorkloads: 2, maxSeries: 10, maxDnsNamesPerWorkload: 10 });
  const r3 = resourceFromAttributes({ 'service.name': 'c' });
  m.record(r1, INSTRUMENTS.httpServer, {}, 0.1, now);
  m.record(r2, INSTRUMENTS.httpServer, {}, 0.1, now);
  m.record(r1, INSTRUMENTS.httpServer, {}, 0.1, now); // r1 used again: r2 is now the idlest
  m.record(r3, INSTRUMENTS.httpServer, {}, 0.1, now);
  t.deepEqual(m.collect(now).map((x) => x.resource.attributes['service.name']), ['a', 'c']);
  t.is(m.stats.workloadsEvicted, 1);
  t.is(m.stats.series, 2);
});

const at = (sec: number): [number, number] => [1_700_000_000 + sec, 0];
const pids = (out: ReturnType<MetricStore['collect']>) => out.map((x) => x.resource.attributes['process.pid']);

test('an idle workload (an exited process) is exported once more, then expired, counted', (t) => {
  const m = new MetricStore({ maxWorkloads: 100, maxSeries: 10, maxDnsNamesPerWorkload: 10, idleMs: 60_000 });
  const gone = resourceFromAttributes({ 'service.name': 'curl', 'process.pid': 101 });
  const alive = resourceFromAttributes({ 'service.name': 'nginx', 'process.pid': 7 });
  m.record(gone, INSTRUMENTS.httpClient, { 'server.port': 80 }, 0.01, at(0));
  m.record(alive, INSTRUMENTS.httpServer, {}, 0.01, at(0));
  t.deepEqual(pids(m.collect(at(30))), [101, 7], 'both exported while fresh');
  m.record(alive, INSTRUMENTS.httpServer, {}, 0.01, at(50));
  // 60 s after its last measurement: in this snapshot for the last time, with its full value
  const last = m.collect(at(60));
  t.deepEqual(pids(last), [101, 7]);
  t.is((last[0]!.scopeMetrics[0]!.metrics[0]!.dataPoints[0]!.value as { count: number }).count, 1);
  t.is(m.stats.workloadsExpired, 1);
  t.is(m.workloadCount, 1);
  t.is(m.stats.series, 1);
  t.deepEqual(pids(m.collect(at(70))), [7], 'gone from the next snapshot');
  t.is(m.stats.workloadsEvicted, 0, 'expiry is not an LRU eviction');
  // recording again after expiry starts a new cumulative series (new start time)
  m.record(gone, INSTRUMENTS.httpClient, { 'server.port': 80 }, 0.02, at(80));
  const again = m.collect(at(81)).find((x) => x.resource.attributes['process.pid'] === 101)!.scopeMetrics[0]!.metrics[0]!.dataPoints[0]!;
  t.deepEqual(again.startTime, at(80));
  t.is((again.value as { count: number }).count, 1);
});

test('churn: thousands of short-lived workloads stay within maxWorkloads and expire after their export', (t) => {
  const m = new MetricStore({ maxWorkloads: 64, maxSeries: 10, maxDnsNamesPerWorkload: 10, idleMs: 10_000 });
  let exported = 0;
  for (let pid = 1000; pid < 6000; pid++) {
    const sec = (pid - 1000) / 100; // 100 processes a second
    m.record(resourceFromAttributes({ 'service.name': 'curl', 'process.pid': pid }), INSTRUMENTS.httpClient, {}, 0.01, at(sec));
    t.true(m.workloadCount <= 64);
    if (pid % 100 === 0) exported += m.collect(at(sec)).length;
  }
  t.is(m.stats.workloadsEvicted, 5000 - 64, 'at 100/s with a 64 bound, LRU eviction does the bounding');
  t.true(exported > 0);
  m.collect(at(200));
  t.is(m.workloadCount, 0, 'all idle: all expired');
  t.is(m.stats.series, 0);
  t.is(m.stats.workloadsExpired + m.stats.workloadsEvicted, 5000);
});

test('workloads are keyed by resource attributes: a rebuilt Resource for the same process continues its series', (t) => {
  const m = new MetricStore({ maxWorkloads: 10, maxSeries: 10, maxDnsNamesPerWorkload: 10 });
  const first = resourceFromAttributes({ 'service.name': 'nginx', 'process.pid': 7 });
  const rebuilt = resourceFromAttributes({ 'process.pid': 7, 'service.name': 'nginx' }); // a new object, attributes in another order
  m.record(first, INSTRUMENTS.httpServer, {}, 0.01, now);
  m.record(rebuilt, INSTRUMENTS.httpServer, {}, 0.01, now);
  const out = m.collect(now);
  t.is(out.length, 1, 'one workload, not two conflicting cumulative streams');
  t.is(out[0]!.resource, rebuilt, 'exported under the latest Resource object');
  t.is((out[0]!.scopeMetrics[0]!.metrics[0]!.dataPoints[0]!.value as { count: number }).count, 2);
});

test('at the bound, eviction prefers a workload already exported since its last measurement', (t) => {
  const m = new MetricStore({ maxWorkloads: 3, maxSeries: 10, maxDnsNamesPerWorkload: 10 });
  const r = (pid: number) => resourceFromAttributes({ 'service.name': 'curl', 'process.pid': pid });
  m.record(r(1), INSTRUMENTS.httpClient, {}, 0.01, now);
  m.record(r(2), INSTRUMENTS.httpClient, {}, 0.01, now);
  m.collect(now); // 1 and 2 exported
  m.record(r(1), INSTRUMENTS.httpClient, {}, 0.01, now); // 1 measured again: not exported since
  m.record(r(3), INSTRUMENTS.httpClient, {}, 0.01, now);
  m.record(r(4), INSTRUMENTS.httpClient, {}, 0.01, now); // full: 2 is the longest idle and clean
  t.deepEqual(pids(m.collect(now)), [1, 3, 4]);
  // nothing clean left among them after new measurements: the longest idle goes, data and all
  for (const pid of [1, 3, 4]) m.record(r(pid), INSTRUMENTS.httpClient, {}, 0.01, now);
  m.record(r(5), INSTRUMENTS.httpClient, {}, 0.01, now);
  t.deepEqual(pids(m.collect(now)), [3, 4, 5]);
  t.is(m.stats.workloadsEvicted, 2);
});

test('the export loop sends many workloads per request (WORKLOADS_PER_REQUEST), each workload once per round', async (t) => {
  const srv = await startOtlpServer('http');
  const ex = new OtlpMetricExporter({ url: srv.metricsUrl, protocol: 'http/json', headers: {}, timeoutMs: 5000, compression: 'gzip', insecure: false });
  const m = new MetricStore({ maxWorkloads: 1000, maxSeries: 10, maxDnsNamesPerWorkload: 10 });
  const n = 2 * WORKLOADS_PER_REQUEST + 3;
  for (let pid = 1; pid <= n; pid++) m.record(resourceFromAttributes({ 'service.name': 'curl', 'process.pid': pid }), INSTRUMENTS.httpClient, {}, 0.01, [Math.floor(Date.now() / 1000), 0]);
  const loop = new MetricExportLoop(m, ex, 60_000);
  await loop.flush();
  await ex.shutdown();
  await srv.close();
  type Body = { resourceMetrics: Array<{ resource: { attributes: Array<{ key: string; value: { intValue?: string | number } }> } }> };
  const bodies = srv.requests.map((r) => JSON.parse(r.body.toString('utf8')) as Body);
  t.deepEqual(bodies.map((b) => b.resourceMetrics.length), [WORKLOADS_PER_REQUEST, WORKLOADS_PER_REQUEST, 3]);
  const seen = bodies.flatMap((b) => b.resourceMetrics.map((rm) => Number(rm.resource.attributes.find((a) => a.key === 'process.pid')!.value.intValue)));
  t.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i + 1));
  t.deepEqual(loop.stats, { exports: 3, failures: 0 });
});
