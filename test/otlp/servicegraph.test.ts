import test from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { DataPointType, type MetricData } from '@opentelemetry/sdk-metrics';
import { SERVICE_GRAPH_BUCKETS, SERVICE_GRAPH_METRICS, ServiceGraph, VIRTUAL_NODE } from '../../src/otlp/servicegraph.js';
import type { SidelightSpan } from '../../src/receiver/span.js';

const agent = resourceFromAttributes({ 'service.name': 'sidelight' });
const svc = (name: string) => resourceFromAttributes({ 'service.name': name });
const curl = svc('curl');
const front = svc('front');
const back = svc('back');

let nextId = 1;
function span(kind: 'client' | 'server', ms: number, extra: Partial<SidelightSpan> = {}, attrs: SidelightSpan['attributes'] = {}): SidelightSpan {
  const start = 1_700_000_000_000_000_000n;
  return {
    kind,
    name: 'GET',
    startUnixNs: start,
    endUnixNs: start + BigInt(Math.round(ms * 1e6)),
    attributes: { 'http.request.method': 'GET', ...attrs },
    status: { code: 'unset' },
    process: { tgid: 1, tid: 1, comm: 'x', cgroupId: 0n },
    spanId: (nextId++).toString(16).padStart(16, '0'),
    ...extra,
  };
}

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_700_000_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

function metric(g: ServiceGraph, name: string): MetricData | undefined {
  return g.collect([1_700_000_100, 0])[0]?.scopeMetrics[0]!.metrics.find((m) => m.descriptor.name === name);
}

test('client and server ends pair by span id in either order; failed when either end failed', (t) => {
  const c = clock();
  const g = new ServiceGraph({ waitMs: 1000, maxPending: 100, maxEdges: 100 }, agent, c.now);
  // curl → front: client first
  const c1 = span('client', 4);
  g.onSpan(c1, curl);
  g.onSpan(span('server', 2, { parentSpanId: c1.spanId! }, { 'client.address': '127.0.0.1' }), front);
  // front → back: server ends first (the usual order), server fails
  const c2 = span('client', 30);
  g.onSpan(span('server', 20, { parentSpanId: c2.spanId!, status: { code: 'error' } }), back);
  t.is(g.pending, 1);
  g.onSpan(c2, front);
  // front → back again, fine
  const c3 = span('client', 3);
  g.onSpan(c3, front);
  g.onSpan(span('server', 1, { parentSpanId: c3.spanId! }), back);
  t.is(g.pending, 0);
  t.deepEqual(g.stats, { requests: 3, paired: 3, virtual: 0, pendingDropped: 0, overflowed: 0 });

  const total = metric(g, SERVICE_GRAPH_METRICS.total)!;
  t.is(total.dataPointType, DataPointType.SUM);
  t.deepEqual(
    total.dataPoints.map((p) => [p.attributes, p.value]),
    [
      [{ client: 'curl', server: 'front', connection_type: '' }, 1],
      [{ client: 'front', server: 'back', connection_type: '' }, 2],
    ],
  );
  const failed = metric(g, SERVICE_GRAPH_METRICS.failed)!;
  t.deepEqual(failed.dataPoints.map((p) => p.value), [0, 1]);
  const server = metric(g, SERVICE_GRAPH_METRICS.server)!;
  const v = server.dataPoints[1]!.value as { buckets: { boundaries: number[]; counts: number[] }; count: number; sum: number };
  t.deepEqual(v.buckets.boundaries, SERVICE_GRAPH_BUCKETS);
  t.is(v.count, 2);
  t.true(Math.abs(v.sum - 0.021) < 1e-12);
  // 0.001 → ≤0.002; 0.020 → ≤0.05
  t.deepEqual(v.buckets.counts, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const client = metric(g, SERVICE_GRAPH_METRICS.client)!;
  t.true(Math.abs((client.dataPoints[1]!.value as { sum: number }).sum - 0.033) < 1e-12);
  t.is(server.descriptor.unit, 's');
});

test('unpaired ends expire after waitMs into virtual-node edges; root server spans at once', (t) => {
  const c = clock();
  const g = new ServiceGraph({ waitMs: 1000, maxPending: 100, maxEdges: 100 }, agent, c.now);
  g.onSpan(span('client', 5, {}, { 'server.address': 'api.example.com' }), front);
  g.onSpan(span('client', 5, {}, { 'server.address': '10.0.0.9', 'sidelight.peer.service': 'payments' }), front);
  g.onSpan(span('server', 5, { parentSpanId: 'aaaaaaaaaaaaaaaa' }, { 'client.address': '10.1.1.1' }), back);
  g.onSpan(span('server', 5, {}, { 'client.address': '192.0.2.7' }), back); // root: at once
  t.is(g.snapshot().edges.length, 1);
  c.advance(999);
  g.sweep();
  t.is(g.pending, 3, 'not yet');
  c.advance(1);
  const m = g.snapshot();
  t.is(m.pending, 0);
  t.deepEqual(
    m.edges.map((e) => [e.client, e.server, e.connectionType, e.requests, e.clientMeanSeconds !== undefined, e.serverMeanSeconds !== undefined]),
    [
      ['10.1.1.1', 'back', VIRTUAL_NODE, 1, false, true],
      ['192.0.2.7', 'back', VIRTUAL_NODE, 1, false, true],
      ['front', 'api.example.com', VIRTUAL_NODE, 1, true, false],
      ['front', 'payments', VIRTUAL_NODE, 1, true, false],
    ],
  );
  t.is(g.stats.virtual, 4);
  // a virtual edge has no server-side histogram point when only the client was seen
  const server = metric(g, SERVICE_GRAPH_METRICS.server)!;
  t.is(server.dataPoints.length, 2);
});

test('DNS and non-request spans are not part of the graph', (t) => {
  const g = new ServiceGraph({ waitMs: 1000, maxPending: 100, maxEdges: 100 }, agent);
  const dns = span('client', 1, {}, {});
  delete dns.attributes['http.request.method'];
  dns.attributes['dns.question.name'] = 'x.test';
  g.onSpan(dns, front);
  t.is(g.pending, 0);
  t.deepEqual(g.collect([1, 0]), []);
});

test('edges past maxEdges go to one overflow series, counted; pending is bounded', (t) => {
  const c = clock();
  const g = new ServiceGraph({ waitMs: 1000, maxPending: 2, maxEdges: 2 }, agent, c.now);
  for (const name of ['a', 'b', 'c', 'd']) {
    g.onSpan(span('server', 1, {}, { 'client.address': name }), back);
  }
  const total = metric(g, SERVICE_GRAPH_METRICS.total)!;
  t.deepEqual(
    total.dataPoints.map((p) => [p.attributes, p.value]),
    [
      [{ client: 'a', server: 'back', connection_type: VIRTUAL_NODE }, 1],
      [{ client: 'b', server: 'back', connection_type: VIRTUAL_NODE }, 1],
      [{ 'otel.metric.overflow': true }, 2],
    ],
  );
  t.is(g.stats.overflowed, 2);
  g.onSpan(span('client', 1), front);
  g.onSpan(span('client', 1), front);
  g.onSpan(span('client', 1), front);
  t.is(g.pending, 2);
  t.is(g.stats.pendingDropped, 1);
});
