/**
 * sdkdetect.ts: which CLIENT spans are OTLP trace exports (table of spans as the HTTP/1,
 * HTTP/2, gRPC and TLS paths build them), and the registry: marking by traffic and by the
 * receiver, TTL, bound with eviction, never suppressing DNS spans, counters; and the
 * self-metrics it feeds with the receiver off.
 */
import test from 'ava';
import { isHopSpan, isTraceExport, OTLP_TRACE_EXPORT_METHOD, SdkProcesses } from '../../src/receiver/sdkdetect.js';
import { selfMetrics } from '../../src/otlp/selfmetrics.js';
import type { AttrValue, SidelightSpan, SpanKindName } from '../../src/receiver/span.js';
import { emptySelfSnapshot } from '../helpers/selfsnapshot.js';

function span(kind: SpanKindName, attributes: Record<string, AttrValue>, tgid = 100, name = 'x'): SidelightSpan {
  return { kind, name, startUnixNs: 1n, endUnixNs: 2n, attributes, status: { code: 'unset' }, process: { tgid, tid: tgid, comm: 'app', cgroupId: 0n } };
}

const EXPORTS: [string, SidelightSpan, boolean][] = [
  ['OTLP/HTTP, HTTP/1 client', span('client', { 'http.request.method': 'POST', 'url.full': 'http://collector:4318/v1/traces' }), true],
  ['OTLP/HTTP over TLS', span('client', { 'http.request.method': 'POST', 'url.full': 'https://otel.example.com/v1/traces' }), true],
  ['a path prefix', span('client', { 'http.request.method': 'POST', 'url.full': 'http://gw:80/otlp/v1/traces' }), true],
  ['query string kept', span('client', { 'http.request.method': 'POST', 'url.full': 'http://c:4318/v1/traces?x=1' }), true],
  ['IPv6 host', span('client', { 'http.request.method': 'POST', 'url.full': 'http://[::1]:4318/v1/traces' }), true],
  ['url.path only', span('client', { 'http.request.method': 'POST', 'url.path': '/v1/traces' }), true],
  ['gRPC TraceService/Export (plaintext or TLS alike)', span('client', { 'rpc.system.name': 'grpc', 'rpc.method': OTLP_TRACE_EXPORT_METHOD }), true],
  ['gRPC metrics export', span('client', { 'rpc.system.name': 'grpc', 'rpc.method': 'opentelemetry.proto.collector.metrics.v1.MetricsService/Export' }), false],
  ['OTLP/HTTP metrics', span('client', { 'http.request.method': 'POST', 'url.full': 'http://c:4318/v1/metrics' }), false],
  ['GET of the same path', span('client', { 'http.request.method': 'GET', 'url.full': 'http://c:4318/v1/traces' }), false],
  ['a longer last segment', span('client', { 'http.request.method': 'POST', 'url.full': 'http://c:4318/v1/tracesx' }), false],
  ['/v1/traces in the host only', span('client', { 'http.request.method': 'POST', 'url.full': 'http://v1/traces.example/' }), false],
  ['the Collector receiving it (SERVER)', span('server', { 'http.request.method': 'POST', 'url.path': '/v1/traces' }), false],
  ['no url at all', span('client', { 'http.request.method': 'POST' }), false],
];

for (const [name, s, want] of EXPORTS) {
  test(`isTraceExport: ${name} → ${want}`, (t) => {
    t.is(isTraceExport(s), want);
  });
}

test('isHopSpan: SERVER and CLIENT, never DNS lookups or internal spans', (t) => {
  t.true(isHopSpan(span('server', {})));
  t.true(isHopSpan(span('client', { 'url.full': 'http://b/' })));
  t.false(isHopSpan(span('client', { 'dns.question.name': 'a.example' }, 1, 'DNS A a.example')));
  t.false(isHopSpan(span('client', {}, 1, 'DNS AAAA b.example')));
  t.false(isHopSpan(span('internal', {})));
});

test('a trace export in traffic marks its process: its SERVER/CLIENT spans are suppressed, DNS spans and other processes are not', (t) => {
  const r = new SdkProcesses({ maxProcesses: 16, ttlMs: 60_000 });
  const before = span('server', { 'url.path': '/b/1' }, 7);
  t.false(r.suppress(before, 1000), 'not known before its first export');
  t.true(r.observe(span('client', { 'http.request.method': 'POST', 'url.full': 'http://127.0.0.1:4318/v1/traces' }, 7), 1000));
  t.false(r.observe(span('client', { 'http.request.method': 'POST', 'url.full': 'http://127.0.0.1:8080/orders' }, 8), 1000));
  t.true(r.suppress(span('server', { 'url.path': '/b/2' }, 7), 2000));
  t.true(r.suppress(span('client', { 'url.full': 'http://c/c/2' }, 7), 2000));
  t.false(r.suppress(span('client', { 'dns.question.name': 'c.example' }, 7, 'DNS A c.example'), 2000), 'DNS spans are never an SDK duplicate');
  t.false(r.suppress(span('server', { 'url.path': '/x' }, 8), 2000), 'another process');
  t.deepEqual(r.stats, { processes: 1, exportsSeen: 1, markedTraffic: 1, markedReceiver: 0, evicted: 0, expired: 0, deduplicated: 2 });
});

test('an entry lapses ttlMs after the last export; each export refreshes it', (t) => {
  const r = new SdkProcesses({ maxProcesses: 16, ttlMs: 10_000 });
  r.note(5, 'traffic', 0);
  r.note(5, 'traffic', 8_000);
  t.true(r.isSdk(5, 17_000), 'refreshed at 8 s');
  t.false(r.isSdk(5, 18_001), 'forgotten 10 s after the last export');
  t.is(r.stats.expired, 1);
  t.is(r.size, 0);
  t.is(r.stats.markedTraffic, 1, 'a refresh is not a new mark');
  r.note(6, 'traffic', 20_000);
  r.note(7, 'traffic', 25_000);
  r.sweep(31_000);
  t.false(r.isSdk(6, 31_000));
  t.true(r.isSdk(7, 31_000));
  t.is(r.stats.expired, 2);
  t.is(r.stats.processes, 1);
});

test('bounded: the least recently marked process is evicted, counted', (t) => {
  const r = new SdkProcesses({ maxProcesses: 2, ttlMs: 60_000 });
  r.note(1, 'traffic', 0);
  r.note(2, 'traffic', 1);
  r.note(1, 'traffic', 2); // 2 is now the least recent
  r.note(3, 'traffic', 3);
  t.is(r.size, 2);
  t.is(r.stats.evicted, 1);
  t.true(r.isSdk(1, 4));
  t.false(r.isSdk(2, 4));
  t.true(r.isSdk(3, 4));
});

test('the receiver is the second source: a sender it knows is recorded here with its source', (t) => {
  const asked: number[] = [];
  const r = new SdkProcesses({ maxProcesses: 16, ttlMs: 60_000, receiverLookup: (tgid) => (asked.push(tgid), tgid === 42) });
  t.true(r.suppress(span('client', { 'url.full': 'http://up/' }, 42), 0));
  t.false(r.suppress(span('client', { 'url.full': 'http://up/' }, 43), 0));
  t.true(r.isSdk(42, 1));
  t.deepEqual(asked, [42, 43], 'asked once for 42: then known here');
  t.is(r.stats.markedReceiver, 1);
  t.is(r.stats.markedTraffic, 0);
  t.is(r.stats.deduplicated, 1);
});

test('bad options are refused with the key named', (t) => {
  t.throws(() => new SdkProcesses({ maxProcesses: 0, ttlMs: 1 }), { message: /sdk\.maxProcesses: 0/ });
  t.throws(() => new SdkProcesses({ maxProcesses: 1, ttlMs: Number.NaN }), { message: /sdk\.ttlMs/ });
});

test('self-metrics: sidelight.spans.deduplicated and sidelight.sdk.processes come from the registry, receiver or not', (t) => {
  const snap = emptySelfSnapshot({ sdk: { deduplicated: 17, processes: 2 } });
  const m = selfMetrics(snap);
  t.deepEqual(m.find((x) => x.name === 'sidelight.spans.deduplicated')?.points.map((p) => p.value), [17]);
  t.deepEqual(m.find((x) => x.name === 'sidelight.sdk.processes')?.points.map((p) => p.value), [2]);
  t.falsy(m.find((x) => x.name === 'sidelight.receiver.items'), 'no receiver metrics without the receiver');
});
