/**
 * DNS spans from exact event sequences built with real DNS messages (dns-packet):
 * matching by id and question, several in flight, rcodes, CNAME chains, TC bit, timeouts,
 * TCP framing split across syscalls, partial captures, and thread parenting.
 */
import test from 'ava';
import dnsPacket from 'dns-packet';
import { MonotonicClock } from '../../src/receiver/clock.js';
import { decodeBatch } from '../../src/receiver/decode.js';
import { decodeDns, DnsTracker } from '../../src/receiver/dns.js';
import { Direction, EventType } from '../../src/receiver/layout.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { TraceRegistry } from '../../src/receiver/trace.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';

const UDP = 17;
const TCP = 6;
const OUT = Direction.Egress;
const IN = Direction.Ingress;
const sock = { sock: 0x77n, tgid: 500, tid: 501, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 53], sport: 40000, dport: 53 };

function harness(timeoutMs = 5000, poolThreads: number[] = []) {
  const spans: SidelightSpan[] = [];
  const clock = new MonotonicClock();
  const traces = new TraceRegistry({ maxLinks: 100, maxThreads: 100, isPoolThread: (_tgid, tid) => poolThreads.includes(tid) });
  const dns = new DnsTracker({ ports: [53], timeoutMs, maxPending: 100 }, clock, traces, (s) => spans.push(s));
  const feed = (...evs: FakeEvent[]): void =>
    decodeBatch(batch(evs.map(encodeEvent)), (e) => (dns.claims(e) ? dns.onEvent(e) : undefined), { records: 0, malformed: 0 });
  return { spans, dns, feed, clock, traces };
}

const query = (id: number, name: string, type: 'A' | 'AAAA' | 'TXT' = 'A'): Buffer =>
  dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });

function answer(id: number, name: string, opts: { type?: 'A' | 'AAAA'; rcode?: number; tc?: boolean; answers?: dnsPacket.Answer[] } = {}): Buffer {
  const type = opts.type ?? 'A';
  return dnsPacket.encode({
    type: 'response',
    id,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (opts.tc ? dnsPacket.TRUNCATED_RESPONSE : 0) | (opts.rcode ?? 0),
    questions: [{ type, name }],
    answers: opts.answers ?? [],
  });
}

test('a query and its answer become one CLIENT span with the DNS attributes', (t) => {
  const h = harness();
  h.feed(
    { ...sock, proto: UDP, direction: OUT, tsStart: 1000n, tsEnd: 1100n, data: query(7, 'api.example.com') },
    {
      ...sock,
      proto: UDP,
      direction: IN,
      tsStart: 1200n,
      tsEnd: 9000n,
      data: answer(7, 'api.example.com', {
        answers: [
          { type: 'CNAME', name: 'api.example.com', data: 'lb.example.net' },
          { type: 'A', name: 'lb.example.net', data: '10.0.0.7' },
          { type: 'A', name: 'lb.example.net', data: '10.0.0.8' },
        ],
      }),
    },
  );
  t.is(h.spans.length, 1);
  const s = h.spans[0]!;
  t.is(s.kind, 'client');
  t.is(s.name, 'DNS A api.example.com');
  t.is(s.endUnixNs - s.startUnixNs, 8000n);
  t.deepEqual(s.attributes, {
    'dns.question.name': 'api.example.com',
    'dns.question.type': 'A',
    'dns.response_code': 'NOERROR',
    'dns.answers': ['10.0.0.7', '10.0.0.8'],
    'sidelight.dns.cnames': ['lb.example.net'],
    'network.transport': 'udp',
    'network.type': 'ipv4',
    'server.address': '127.0.0.53',
    'server.port': 53,
    'network.peer.address': '127.0.0.53',
    'network.peer.port': 53,
  });
  t.deepEqual(s.status, { code: 'unset' });
  t.regex(s.traceId!, /^[0-9a-f]{32}$/);
});

test('A and AAAA in flight together (glibc) are matched by id and type, answers in any order', (t) => {
  const h = harness();
  h.feed(
    { ...sock, proto: UDP, direction: OUT, data: query(11, 'h.test', 'A') },
    { ...sock, proto: UDP, direction: OUT, data: query(12, 'h.test', 'AAAA') },
    { ...sock, proto: UDP, direction: IN, data: answer(12, 'h.test', { type: 'AAAA', answers: [{ type: 'AAAA', name: 'h.test', data: '2001:db8::1' }] }) },
    { ...sock, proto: UDP, direction: IN, data: answer(11, 'h.test', { answers: [{ type: 'A', name: 'h.test', data: '192.0.2.1' }] }) },
  );
  t.deepEqual(h.spans.map((s) => [s.name, s.attributes['dns.answers']]), [
    ['DNS AAAA h.test', ['2001:db8::1']],
    ['DNS A h.test', ['192.0.2.1']],
  ]);
});

test('response codes become error.type; NOERROR is no error', (t) => {
  const h = harness();
  const cases: Array<[number, string]> = [[3, 'NXDOMAIN'], [2, 'SERVFAIL'], [5, 'REFUSED']];
  cases.forEach(([rcode], i) => h.feed({ ...sock, proto: UDP, direction: OUT, data: query(100 + i, `n${i}.test`) }, { ...sock, proto: UDP, direction: IN, data: answer(100 + i, `n${i}.test`, { rcode }) }));
  t.deepEqual(h.spans.map((s) => [s.attributes['error.type'], s.attributes['dns.response_code'], s.status.code]), cases.map(([, n]) => [n, n, 'error']));
});

test('a query never answered ends as a timeout span after timeoutMs', async (t) => {
  const h = harness(200);
  const now = h.clock.nowMono();
  h.feed({ ...sock, proto: UDP, direction: OUT, tsStart: now, tsEnd: now, data: query(9, 'slow.test') });
  h.dns.sweep();
  t.is(h.spans.length, 0, 'not yet');
  await new Promise((r) => setTimeout(r, 300));
  h.dns.sweep();
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.attributes['error.type'], 'timeout');
  t.is(h.spans[0]!.endUnixNs - h.spans[0]!.startUnixNs, 200_000_000n);
  t.is(h.dns.stats.timeouts, 1);
  t.is(h.dns.size, 0);
});

test('TC bit is kept; the TCP retry is its own span, framed messages split across syscalls', (t) => {
  const h = harness();
  h.feed({ ...sock, proto: UDP, direction: OUT, data: query(21, 'big.test', 'A') }, { ...sock, proto: UDP, direction: IN, data: answer(21, 'big.test', { tc: true }) });
  t.true(h.spans[0]!.attributes['sidelight.dns.truncated'] as boolean);
  const tcp = { ...sock, sock: 0x99n, proto: TCP, sport: 40001 };
  const q = query(22, 'big.test');
  const a = answer(22, 'big.test', { answers: Array.from({ length: 40 }, (_, i) => ({ type: 'A' as const, name: 'big.test', data: `10.1.0.${i}` })) });
  const framed = (m: Buffer): Buffer => Buffer.concat([Buffer.from([m.length >> 8, m.length & 0xff]), m]);
  const fa = framed(a);
  h.feed(
    { ...tcp, direction: OUT, data: framed(q) },
    { ...tcp, direction: IN, data: fa.subarray(0, 2) }, // glibc reads the length first
    { ...tcp, direction: IN, data: fa.subarray(2, 100) },
    { ...tcp, direction: IN, data: fa.subarray(100) },
  );
  t.is(h.spans.length, 2);
  t.is(h.spans[1]!.attributes['network.transport'], 'tcp');
  t.is((h.spans[1]!.attributes['dns.answers'] as string[]).length, 40);
});

test('an answer cut by the capture keeps its question and rcode, counted as partial', (t) => {
  const h = harness();
  const a = answer(31, 'cut.test', { answers: Array.from({ length: 20 }, (_, i) => ({ type: 'A' as const, name: 'cut.test', data: `10.2.0.${i}` })) });
  h.feed({ ...sock, proto: UDP, direction: OUT, data: query(31, 'cut.test') }, { ...sock, proto: UDP, direction: IN, ret: a.length, data: a.subarray(0, 60) });
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.attributes['dns.response_code'], 'NOERROR');
  t.is(h.dns.stats.partialAnswers, 1);
});

test('junk and unmatched answers are counted, never thrown', (t) => {
  const h = harness();
  t.notThrows(() => h.feed({ ...sock, proto: UDP, direction: IN, data: Buffer.from('not dns at all, really') }, { ...sock, proto: UDP, direction: IN, data: answer(5, 'x.test') }));
  t.is(h.dns.stats.parseErrors, 1);
  t.is(h.dns.stats.unmatchedResponses, 1);
  for (let i = 0; i < 2000; i++) {
    const junk = Buffer.alloc(12 + (i % 300));
    for (let j = 0; j < junk.length; j++) junk[j] = (i * 31 + j * 17) & 0xff;
    t.notThrows(() => decodeDns(junk));
  }
  // a compression pointer to itself must not loop
  const loop = Buffer.from([0, 1, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
  t.notThrows(() => decodeDns(loop));
});

test('the pending table is bounded, the oldest dropped and counted', (t) => {
  const spans: SidelightSpan[] = [];
  const dns = new DnsTracker({ ports: [53], timeoutMs: 5000, maxPending: 16 }, new MonotonicClock(), new TraceRegistry({ maxLinks: 10, maxThreads: 10 }), (s) => spans.push(s));
  decodeBatch(batch(Array.from({ length: 40 }, (_, i) => encodeEvent({ ...sock, proto: UDP, direction: OUT, data: query(i, `q${i}.test`) }))), (e) => dns.onEvent(e), { records: 0, malformed: 0 });
  t.is(dns.size, 16);
  t.is(dns.stats.pendingEvicted, 24);
});

test('a lookup made by a thread serving a request is its child', (t) => {
  const h = harness();
  const ctx = h.traces.serverStart({ localAddr: '127.0.0.1', localPort: 80, remoteAddr: '127.0.0.1', remotePort: 5000, netns: 1 }, 500, 501, undefined, undefined);
  h.feed({ ...sock, proto: UDP, direction: OUT, data: query(41, 'db.test') }, { ...sock, proto: UDP, direction: IN, data: answer(41, 'db.test') });
  const ids = ctx.resolve();
  t.is(h.spans[0]!.parentSpanId, ids.spanId);
  t.is(h.spans[0]!.traceId, ids.traceId);
});

test('TCP on a DNS port is claimed; TCP elsewhere and closes of other sockets are not', (t) => {
  const h = harness();
  const dec = (e: FakeEvent) => {
    let out: boolean | undefined;
    decodeBatch(batch([encodeEvent(e)]), (ev) => (out = h.dns.claims(ev)), { records: 0, malformed: 0 });
    return out;
  };
  t.true(dec({ ...sock, proto: TCP, dport: 53 }));
  t.false(dec({ ...sock, proto: TCP, dport: 8080 }));
  t.true(dec({ ...sock, proto: UDP, dport: 53 }));
  t.true(dec({ ...sock, proto: TCP, dport: 53, type: EventType.Close }));
});

test('a lookup on a worker-pool thread is the child of the one request its process serves; none when two', (t) => {
  const h = harness(5000, [777]);
  const tuple = (port: number) => ({ localAddr: '127.0.0.1', localPort: 80, remoteAddr: '127.0.0.1', remotePort: port, netns: 1 });
  const ctx = h.traces.serverStart(tuple(5001), 500, 500, undefined, undefined); // served by the main thread
  h.feed({ ...sock, tid: 777, proto: UDP, direction: OUT, data: query(51, 'pool.test') }, { ...sock, tid: 777, proto: UDP, direction: IN, data: answer(51, 'pool.test') });
  t.is(h.spans[0]!.parentSpanId, ctx.resolve().spanId);
  t.is(h.traces.stats.poolParented, 1);
  // a thread that is not a pool thread gets nothing from the process-wide rule
  h.feed({ ...sock, tid: 778, proto: UDP, direction: OUT, data: query(52, 'other.test') }, { ...sock, tid: 778, proto: UDP, direction: IN, data: answer(52, 'other.test') });
  t.is(h.spans[1]!.parentSpanId, undefined);
  // two requests in flight: ambiguous, no parent
  h.traces.serverStart(tuple(5002), 500, 500, undefined, undefined);
  h.feed({ ...sock, tid: 777, proto: UDP, direction: OUT, data: query(53, 'pool2.test') }, { ...sock, tid: 777, proto: UDP, direction: IN, data: answer(53, 'pool2.test') });
  t.is(h.spans[2]!.parentSpanId, undefined);
  t.is(h.traces.stats.ambiguous, 1);
});
