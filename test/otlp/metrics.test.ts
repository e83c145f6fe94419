import test from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { DataPointType } from '@opentelemetry/sdk-metrics';
import { DURATION_BUCKETS, INSTRUMENTS, MetricStore, OVERFLOW_ATTRIBUTE, recordSpan } from '../../src/otlp/metrics.js';
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
