/**
 * Body-size histograms: http.{server,client}.{request,response}.body.size from the byte counts
 * the receiver puts on finished HTTP spans (unit By, the SDK's default explicit buckets).
 */
import test from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BODY_SIZE_BUCKETS, MetricStore, recordSpan } from '../../src/otlp/metrics.js';
import type { SidelightSpan } from '../../src/receiver/span.js';

const now: [number, number] = [1_700_000_000, 0];
const res = resourceFromAttributes({ 'service.name': 'a' });

function span(kind: 'server' | 'client', attrs: SidelightSpan['attributes'], bodySize?: SidelightSpan['bodySize']): SidelightSpan {
  const start = 1_700_000_000_000_000_000n;
  return {
    kind, name: 'x', startUnixNs: start, endUnixNs: start + 1_000_000n, attributes: attrs, status: { code: 'unset' },
    process: { tgid: 1, tid: 1, comm: 'x', cgroupId: 0n }, ...(bodySize ? { bodySize } : {}),
  };
}

type Hist = { buckets: { boundaries: number[]; counts: number[] }; count: number; sum: number };

test('body sizes per direction and side, with the duration attributes; absent sizes not recorded', (t) => {
  const m = new MetricStore({ maxWorkloads: 10, maxSeries: 100, maxDnsNamesPerWorkload: 10 });
  const sAttrs = { 'http.request.method': 'POST', 'http.response.status_code': 200, 'url.scheme': 'http', 'network.protocol.version': '1.1' };
  recordSpan(m, span('server', sAttrs, { request: 1234, response: 2 }), res);
  recordSpan(m, span('server', sAttrs, { request: 0, response: 20_000 }), res);
  recordSpan(m, span('client', { 'http.request.method': 'GET', 'server.address': 'a', 'server.port': 80, 'error.type': 'timeout' }, { request: 0 }), res);
  recordSpan(m, span('client', { 'http.request.method': 'GET', 'server.address': 'a', 'server.port': 80 }), res);
  recordSpan(m, span('client', { 'rpc.system.name': 'grpc', 'rpc.method': 'a.B/C' }, { request: 5, response: 5 }), res);
  const metrics = m.collect(now)[0]!.scopeMetrics[0]!.metrics;
  const by = (name: string) => metrics.find((x) => x.descriptor.name === name);
  t.deepEqual(metrics.map((x) => x.descriptor.name).sort(), [
    'http.client.request.body.size', 'http.client.request.duration', 'http.server.request.body.size', 'http.server.request.duration',
    'http.server.response.body.size', 'rpc.client.call.duration',
  ]);
  const req = by('http.server.request.body.size')!;
  t.is(req.descriptor.unit, 'By');
  t.deepEqual(req.dataPoints[0]!.attributes, sAttrs);
  const rv = req.dataPoints[0]!.value as Hist;
  t.deepEqual(rv.buckets.boundaries, BODY_SIZE_BUCKETS);
  t.is(rv.count, 2);
  t.is(rv.sum, 1234);
  // 0 → ≤0; 1234 → ≤2500
  t.deepEqual(rv.buckets.counts, [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
  const resp = by('http.server.response.body.size')!.dataPoints[0]!.value as Hist;
  t.is(resp.sum, 20_002);
  t.is(resp.buckets.counts.at(-1), 1, '20000 → +Inf');
  const creq = by('http.client.request.body.size')!;
  t.is((creq.dataPoints[0]!.value as Hist).count, 1, 'the span without sizes records none');
  t.is(creq.dataPoints[0]!.attributes['error.type'], 'timeout');
  t.is(by('http.client.response.body.size'), undefined, 'no response, no response size');
});
