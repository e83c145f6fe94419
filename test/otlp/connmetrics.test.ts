import test from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { DataPointType } from '@opentelemetry/sdk-metrics';
import { CONN_INSTRUMENTS, ConnMetricStore } from '../../src/otlp/connmetrics.js';
import type { TcpFact } from '../../src/receiver/tcpconn.js';

const proc = { tgid: 1, tid: 1, comm: 'x', cgroupId: 0n };
const r1 = resourceFromAttributes({ 'service.name': 'a' });
const conn = (peer: string, port = 80) => ({ family: 4 as const, local: { address: '10.0.0.1', port: 5555 }, remote: { address: peer, port }, netns: 1 });
const closed = (peer: string, over: Partial<Extract<TcpFact, { kind: 'closed' }>> = {}): TcpFact => ({
  kind: 'closed', process: proc, role: 'client', conn: conn(peer), bytesSent: 100, bytesReceived: 2000, durationSeconds: 0.2, rttSeconds: 0.0004, retransmits: 1, ...over,
});

function points(m: ConnMetricStore, name: string) {
  const md = m.collect([1, 0])[0]!.scopeMetrics[0]!.metrics.find((x) => x.descriptor.name === name)!;
  return md;
}

test('sums and histograms per peer, exact values', (t) => {
  const m = new ConnMetricStore({ maxWorkloads: 10, maxSeries: 100 });
  m.record(closed('10.0.0.2'), r1);
  m.record(closed('10.0.0.2', { bytesSent: 50, rttSeconds: undefined, retransmits: 0 }), r1);
  m.record({ kind: 'failed', process: proc, conn: conn('10.0.0.3', 81), errno: 'ECONNREFUSED' }, r1);
  m.record({ kind: 'opened', process: proc, role: 'client', conn: conn('10.0.0.2') }, r1);
  const bytes = points(m, CONN_INSTRUMENTS.bytes.name);
  t.is(bytes.dataPointType, DataPointType.SUM);
  t.is(bytes.descriptor.unit, 'By');
  t.deepEqual(bytes.dataPoints.map((p) => [p.attributes['network.io.direction'], p.value]), [['transmit', 150], ['receive', 4000]]);
  t.deepEqual(bytes.dataPoints[0]!.attributes, { 'sidelight.tcp.role': 'client', 'network.peer.address': '10.0.0.2', 'server.port': 80, 'network.io.direction': 'transmit' });
  t.deepEqual(points(m, CONN_INSTRUMENTS.failures.name).dataPoints.map((p) => [p.attributes, p.value]), [
    [{ 'network.peer.address': '10.0.0.3', 'server.port': 81, 'error.type': 'ECONNREFUSED' }, 1],
  ]);
  t.deepEqual(points(m, CONN_INSTRUMENTS.retransmits.name).dataPoints.map((p) => p.value), [1]);
  const rtt = points(m, CONN_INSTRUMENTS.rtt.name).dataPoints[0]!.value as { count: number; sum: number; buckets: { counts: number[] } };
  t.is(rtt.count, 1, 'no RTT sample: not recorded');
  t.deepEqual(rtt.buckets.counts, [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
  const dur = points(m, CONN_INSTRUMENTS.duration.name).dataPoints[0]!.value as { count: number; sum: number };
  t.is(dur.count, 2);
  t.true(Math.abs(dur.sum - 0.4) < 1e-12);
  t.deepEqual(points(m, CONN_INSTRUMENTS.opened.name).dataPoints.map((p) => p.value), [1]);
});

test('series past maxSeries go to one overflow series per instrument, counted', (t) => {
  const m = new ConnMetricStore({ maxWorkloads: 10, maxSeries: 2 });
  for (const peer of ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4']) m.record({ kind: 'opened', process: proc, role: 'server', conn: conn(peer) }, r1);
  const opened = points(m, CONN_INSTRUMENTS.opened.name);
  t.deepEqual(opened.dataPoints.map((p) => [p.attributes['network.peer.address'] ?? p.attributes['otel.metric.overflow'], p.value]), [
    ['10.0.0.1', 1],
    ['10.0.0.2', 1],
    [true, 2],
  ]);
  t.is(m.stats.overflowed, 2);
  t.is(m.stats.series, 3);
});

test('workloads past maxWorkloads: the longest idle is evicted with its series', (t) => {
  const m = new ConnMetricStore({ maxWorkloads: 1, maxSeries: 10 });
  m.record({ kind: 'opened', process: proc, role: 'server', conn: conn('10.0.0.1') }, r1);
  m.record({ kind: 'opened', process: proc, role: 'server', conn: conn('10.0.0.1') }, resourceFromAttributes({ 'service.name': 'b' }));
  t.is(m.collect([1, 0]).length, 1);
  t.is(m.stats.workloadsEvicted, 1);
  t.is(m.stats.series, 1);
});

test('a workload with no fact for idleMs is exported once more, then expired, counted', (t) => {
  let clock = 1_700_000_000_000;
  const m = new ConnMetricStore({ maxWorkloads: 10, maxSeries: 10, idleMs: 60_000, nowMs: () => clock });
  const gone = resourceFromAttributes({ 'service.name': 'curl', 'process.pid': 101 });
  const alive = resourceFromAttributes({ 'service.name': 'nginx', 'process.pid': 7 });
  m.record({ kind: 'opened', process: proc, role: 'client', conn: conn('10.0.0.1') }, gone);
  m.record({ kind: 'opened', process: proc, role: 'server', conn: conn('10.0.0.2') }, alive);
  const hr = (ms: number): [number, number] => [Math.floor(ms / 1000), (ms % 1000) * 1e6];
  t.is(m.collect(hr(clock + 30_000)).length, 2);
  clock += 50_000;
  m.record({ kind: 'opened', process: proc, role: 'server', conn: conn('10.0.0.2') }, resourceFromAttributes({ 'process.pid': 7, 'service.name': 'nginx' }));
  t.is(m.workloadCount, 2, 'a rebuilt Resource with the same attributes is the same workload');
  const last = m.collect(hr(clock + 10_000));
  t.deepEqual(last.map((x) => x.resource.attributes['process.pid']), [101, 7], 'the idle one is in its last snapshot');
  t.is(m.stats.workloadsExpired, 1);
  t.is(m.workloadCount, 1);
  t.deepEqual(m.collect(hr(clock + 11_000)).map((x) => x.resource.attributes['process.pid']), [7]);
  t.is(m.stats.series, 1);
  t.is(m.stats.workloadsEvicted, 0);
});
