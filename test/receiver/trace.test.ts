/**
 * Trace building on exact event sequences: traceparent, both ends on one node (in either
 * report order), thread-based parenting and where it must refuse, keep-alive reuse.
 */
import test from 'ava';
import { MonotonicClock } from '../../src/receiver/clock.js';
import { ConnectionTable } from '../../src/receiver/connections.js';
import { decodeBatch } from '../../src/receiver/decode.js';
import { Direction, EventType } from '../../src/receiver/layout.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { FLAG_RANDOM, FLAG_SAMPLED, formatTraceparent, parseTraceparent } from '../../src/receiver/trace.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';

const IN = Direction.Ingress;
const OUT = Direction.Egress;
const RESP = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';

function harness(untrusted: (tgid: number) => boolean = () => false) {
  const spans: SidelightSpan[] = [];
  const table = new ConnectionTable(
    { maxConnections: 1000, idleMs: 60_000, http: { captureQuery: false, maxPending: 16 }, threadsUntrusted: untrusted },
    new MonotonicClock(),
    (s) => spans.push(s),
  );
  const feed = (...evs: FakeEvent[]): void => decodeBatch(batch(evs.map(encodeEvent)), (e) => table.onEvent(e), { records: 0, malformed: 0 });
  const byPath = (path: string, kind: string): SidelightSpan => {
    const s = spans.find((x) => x.kind === kind && (x.attributes['url.path'] === path || String(x.attributes['url.full']).endsWith(path)));
    if (!s) throw new Error(`no ${kind} span for ${path}`);
    return s;
  };
  return { spans, table, feed, byPath };
}

/** The two ends of one loopback connection: client port cp → server port sp. */
function conn(cp: number, sp: number, sockBase: bigint, tgidClient = 100, tgidServer = 200) {
  const client = { sock: sockBase, tgid: tgidClient, tid: tgidClient, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 1], sport: cp, dport: sp };
  const server = { sock: sockBase + 1n, tgid: tgidServer, tid: tgidServer, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 1], sport: sp, dport: cp };
  return { client, server };
}

const req = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;

test('traceparent parsing follows W3C', (t) => {
  const ok = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
  t.deepEqual(parseTraceparent(ok), { traceId: '4bf92f3577b34da6a3ce929d0e0e4736', parentId: '00f067aa0ba902b7', flags: 1 });
  t.truthy(parseTraceparent('cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future-stuff'), 'a higher version may append fields');
  for (const bad of [
    '',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7',
    '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
    '00-00000000000000000000000000000000-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01',
    'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra',
    '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01',
  ]) {
    t.is(parseTraceparent(bad), undefined, bad);
  }
  t.is(formatTraceparent('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 3), '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03');
});

test('an incoming traceparent makes the server span a child of the caller, flags and tracestate kept', (t) => {
  const h = harness();
  const { server } = conn(40000, 8080, 0x10n);
  h.feed(
    { ...server, type: EventType.Accept },
    { ...server, direction: IN, data: req('/a', 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\r\ntracestate: vendor=x\r\n') },
    { ...server, direction: OUT, data: RESP },
  );
  const s = h.byPath('/a', 'server');
  t.is(s.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  t.is(s.parentSpanId, '00f067aa0ba902b7');
  t.is(s.traceFlags, 0, 'not sampled by the caller: flag kept');
  t.is(s.traceState, 'vendor=x');
  t.regex(s.spanId!, /^[0-9a-f]{16}$/);
  t.is(h.table.stats.trace.fromTraceparent, 1);
});

test('an invalid traceparent is ignored: a new trace starts, counted', (t) => {
  const h = harness();
  const { server } = conn(40000, 8080, 0x10n);
  h.feed({ ...server, direction: IN, data: req('/a', 'traceparent: 00-00000000000000000000000000000000-00f067aa0ba902b7-01\r\n') }, { ...server, direction: OUT, data: RESP });
  const s = h.byPath('/a', 'server');
  t.is(s.parentSpanId, undefined);
  t.not(s.traceId, '00000000000000000000000000000000');
  t.is(s.traceFlags, FLAG_SAMPLED | FLAG_RANDOM, 'a trace we start: sampled and random-trace-id');
  t.is(h.table.stats.trace.invalidTraceparent, 1);
});

for (const order of ['client reported first', 'server reported first'] as const) {
  test(`both ends on this node are one trace (${order})`, (t) => {
    const h = harness();
    const { client, server } = conn(40001, 8080, 0x20n);
    const c = { ...client, direction: OUT, data: req('/both') };
    const s = { ...server, direction: IN, data: req('/both') };
    if (order === 'client reported first') h.feed(c, s);
    else h.feed(s, c);
    h.feed({ ...server, direction: OUT, data: RESP }, { ...client, direction: IN, data: RESP });
    const cs = h.byPath('/both', 'client');
    const ss = h.byPath('/both', 'server');
    t.is(ss.traceId, cs.traceId);
    t.is(ss.parentSpanId, cs.spanId);
    t.is(cs.parentSpanId, undefined);
    t.is(h.table.stats.trace.linked, 1);
  });
}

test('keep-alive reuse by requests of different traces never merges them', (t) => {
  const h = harness();
  const { client, server } = conn(40002, 8080, 0x30n);
  for (const path of ['/one', '/two', '/three']) {
    h.feed(
      { ...client, direction: OUT, data: req(path) },
      { ...server, direction: IN, data: req(path) },
      { ...server, direction: OUT, data: RESP },
      { ...client, direction: IN, data: RESP },
    );
  }
  const traces = ['/one', '/two', '/three'].map((p) => h.byPath(p, 'server').traceId);
  t.is(new Set(traces).size, 3);
  for (const p of ['/one', '/two', '/three']) t.is(h.byPath(p, 'server').parentSpanId, h.byPath(p, 'client').spanId);
});

test('thread per request: a call made by the serving thread is a child of its request; the chain is one trace', (t) => {
  const h = harness();
  // curl(100) → A(200): threads 201 and 202 each serve one request and call B(300)
  const up1 = conn(41001, 8000, 0x100n, 100, 200);
  const up2 = conn(41002, 8000, 0x110n, 101, 200);
  const down1 = conn(42001, 9000, 0x200n, 200, 300);
  const down2 = conn(42002, 9000, 0x210n, 200, 300);
  h.feed(
    { ...up1.client, direction: OUT, data: req('/a/1') },
    { ...up2.client, direction: OUT, data: req('/a/2') },
    { ...up1.server, tid: 201, direction: IN, data: req('/a/1') },
    { ...up2.server, tid: 202, direction: IN, data: req('/a/2') },
    // each thread calls B while serving its own request (interleaved)
    { ...down2.client, tid: 202, direction: OUT, data: req('/b/2') },
    { ...down1.client, tid: 201, direction: OUT, data: req('/b/1') },
    { ...down1.server, direction: IN, data: req('/b/1') },
    { ...down2.server, direction: IN, data: req('/b/2') },
    { ...down1.server, direction: OUT, data: RESP },
    { ...down2.server, direction: OUT, data: RESP },
    { ...down1.client, tid: 201, direction: IN, data: RESP },
    { ...down2.client, tid: 202, direction: IN, data: RESP },
    { ...up1.server, tid: 201, direction: OUT, data: RESP },
    { ...up2.server, tid: 202, direction: OUT, data: RESP },
    { ...up1.client, direction: IN, data: RESP },
    { ...up2.client, direction: IN, data: RESP },
  );
  t.is(h.spans.length, 8);
  for (const n of ['1', '2']) {
    const curl = h.byPath(`/a/${n}`, 'client');
    const a = h.byPath(`/a/${n}`, 'server');
    const aOut = h.byPath(`/b/${n}`, 'client');
    const b = h.byPath(`/b/${n}`, 'server');
    t.is(curl.parentSpanId, undefined);
    t.is(a.parentSpanId, curl.spanId);
    t.is(aOut.parentSpanId, a.spanId);
    t.is(b.parentSpanId, aOut.spanId);
    t.deepEqual(new Set([curl.traceId, a.traceId, aOut.traceId, b.traceId]).size, 1);
  }
  t.not(h.byPath('/a/1', 'server').traceId, h.byPath('/a/2', 'server').traceId);
  t.is(h.table.stats.trace.threadParented, 2);
});

test('two requests active on one thread: the call gets no parent (never a wrong one), counted', (t) => {
  const h = harness();
  const up1 = conn(41001, 8000, 0x100n, 100, 200);
  const up2 = conn(41002, 8000, 0x110n, 101, 200);
  const down = conn(42001, 9000, 0x200n, 200, 300);
  h.feed(
    { ...up1.server, direction: IN, data: req('/a/1') },
    { ...up2.server, direction: IN, data: req('/a/2') },
    { ...down.client, direction: OUT, data: req('/b/x') },
    { ...down.client, direction: IN, data: RESP },
  );
  t.is(h.byPath('/b/x', 'client').parentSpanId, undefined);
  t.is(h.table.stats.trace.ambiguous, 1);
});

test('a thread id reused by another process is another thread: its call is not the child of a request left active', (t) => {
  const h = harness();
  // process 200's thread 250 read a request and died before answering (no close() seen)
  const up = conn(41001, 8000, 0x100n, 100, 200);
  h.feed({ ...up.server, tid: 250, direction: IN, data: req('/a/dead') });
  // ids wrapped: process 400's thread is 250 too, and makes a call
  const down = conn(42001, 9000, 0x200n, 400, 300);
  h.feed({ ...down.client, tid: 250, direction: OUT, data: req('/b/other') }, { ...down.client, tid: 250, direction: IN, data: RESP });
  t.is(h.byPath('/b/other', 'client').parentSpanId, undefined);
  t.is(h.table.stats.trace.threadParented, 0);
});

test('no thread-based parent in a Go binary, nor in a process seen migrating requests between threads', (t) => {
  const go = harness((tgid) => tgid === 200);
  const up = conn(41001, 8000, 0x100n, 100, 200);
  const down = conn(42001, 9000, 0x200n, 200, 300);
  go.feed({ ...up.server, direction: IN, data: req('/a') }, { ...down.client, direction: OUT, data: req('/b') }, { ...down.client, direction: IN, data: RESP });
  t.is(go.byPath('/b', 'client').parentSpanId, undefined);
  t.is(go.table.stats.trace.untrustedThreads, 1);

  const mig = harness();
  // a first request read on thread 201 and answered on thread 202: threads migrate here
  mig.feed({ ...up.server, tid: 201, direction: IN, data: req('/first') }, { ...up.server, tid: 202, direction: OUT, data: RESP });
  mig.feed({ ...up.server, tid: 201, direction: IN, data: req('/second') }, { ...down.client, tid: 201, direction: OUT, data: req('/b') }, { ...down.client, tid: 201, direction: IN, data: RESP });
  t.is(mig.byPath('/b', 'client').parentSpanId, undefined);
  t.is(mig.table.stats.trace.untrustedThreads, 1);
});

test('an outgoing request that already carries traceparent (an SDK) joins that trace', (t) => {
  const h = harness();
  const down = conn(42001, 9000, 0x200n, 200, 300);
  h.feed(
    { ...down.client, direction: OUT, data: req('/b', 'traceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n') },
    { ...down.server, direction: IN, data: req('/b', 'traceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n') },
    { ...down.server, direction: OUT, data: RESP },
    { ...down.client, direction: IN, data: RESP },
  );
  t.is(h.byPath('/b', 'client').traceId, '11111111111111111111111111111111');
  t.is(h.byPath('/b', 'server').traceId, '11111111111111111111111111111111');
  t.is(h.byPath('/b', 'server').parentSpanId, '2222222222222222');
});

test('link tables stay bounded when the other end is never seen', (t) => {
  const h = harness();
  const { client } = conn(43000, 80, 0x300n);
  for (let i = 0; i < 500; i++) h.feed({ ...client, direction: OUT, data: req(`/r${i}`) }, { ...client, direction: IN, data: RESP });
  t.is(h.spans.length, 500);
  t.true(h.table.traces.sizes.links <= 8);
  h.feed({ ...client, type: EventType.Close });
  t.is(h.table.traces.sizes.links, 0);
});
