import test from 'ava';
import { MonotonicClock } from '../../src/receiver/clock.js';
import { ConnectionTable, type ConnectionTableOptions } from '../../src/receiver/connections.js';
import { decodeBatch } from '../../src/receiver/decode.js';
import { Direction, EventType } from '../../src/receiver/layout.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';

const OPTS: ConnectionTableOptions = { maxConnections: 100, idleMs: 60_000, http: { captureQuery: false, maxPending: 16 } };

function harness(opts: Partial<ConnectionTableOptions> = {}) {
  const clock = new MonotonicClock();
  const spans: SidelightSpan[] = [];
  const table = new ConnectionTable({ ...OPTS, ...opts }, clock, (s) => spans.push(s));
  const feed = (...evs: FakeEvent[]): void =>
    decodeBatch(batch(evs.map(encodeEvent)), (e) => table.onEvent(e), { records: 0, malformed: 0 });
  return { clock, spans, table, feed };
}

const server = { sport: 8080, dport: 40000, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 2], sock: 0x1000n };
const client = { sport: 40000, dport: 8080, saddr: [127, 0, 0, 2], daddr: [127, 0, 0, 1], sock: 0x2000n };
const IN = Direction.Ingress;
const OUT = Direction.Egress;
const resp200 = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello';

test('server: accept, request, response → one SERVER span with semconv attributes', (t) => {
  const h = harness();
  h.feed(
    { ...server, type: EventType.Accept, tsStart: 10n, tsEnd: 20n, ret: 5 },
    { ...server, direction: IN, tsStart: 30n, tsEnd: 1_000n, data: 'GET /users/7?token=secret HTTP/1.1\r\nHost: api.example:8080\r\nUser-Agent: curl/8\r\n\r\n' },
    { ...server, direction: OUT, tsStart: 5_000n, tsEnd: 6_000n, data: resp200 },
  );
  t.is(h.spans.length, 1);
  const s = h.spans[0]!;
  t.is(s.kind, 'server');
  t.is(s.name, 'GET');
  t.is(s.startUnixNs, h.clock.toUnixNs(1_000n));
  t.is(s.endUnixNs, h.clock.toUnixNs(6_000n));
  t.deepEqual(s.status, { code: 'unset' });
  t.like(s.attributes, {
    'http.request.method': 'GET',
    'url.path': '/users/7',
    'url.scheme': 'http',
    'http.response.status_code': 200,
    'server.address': 'api.example',
    'server.port': 8080,
    'client.address': '127.0.0.2',
    'client.port': 40000,
    'network.peer.address': '127.0.0.2',
    'network.protocol.version': '1.1',
    'user_agent.original': 'curl/8',
  });
  t.false('url.query' in s.attributes, 'query strings are off by default');
  t.is(h.table.stats.accepted, 1);
});

test('client: connect, request, response → CLIENT span with url.full and server.*', (t) => {
  const h = harness();
  h.feed(
    { ...client, type: EventType.Connect, ret: -115 },
    { ...client, direction: OUT, tsStart: 100n, tsEnd: 150n, data: 'POST /v1/items?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 2\r\n\r\nhi' },
    { ...client, direction: IN, tsStart: 160n, tsEnd: 900n, data: 'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n' },
  );
  t.is(h.spans.length, 1);
  const s = h.spans[0]!;
  t.is(s.kind, 'client');
  t.is(s.name, 'POST');
  t.is(s.startUnixNs, h.clock.toUnixNs(100n));
  t.is(s.endUnixNs, h.clock.toUnixNs(900n));
  t.like(s.attributes, {
    'http.request.method': 'POST',
    'url.full': 'http://127.0.0.1:8080/v1/items',
    'server.address': '127.0.0.1',
    'server.port': 8080,
    'http.response.status_code': 404,
    'error.type': '404',
  });
  t.deepEqual(s.status, { code: 'error' });
});

test('captureQuery on: url.query on servers, query kept in url.full on clients', (t) => {
  const h = harness({ http: { captureQuery: true, maxPending: 16 } });
  h.feed(
    { ...server, direction: IN, data: 'GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n' },
    { ...server, direction: OUT, data: resp200 },
    { ...client, direction: OUT, data: 'GET /q?z=9 HTTP/1.1\r\nHost: svc\r\n\r\n' },
    { ...client, direction: IN, data: resp200 },
  );
  t.is(h.spans[0]!.attributes['url.query'], 'b=c');
  t.is(h.spans[1]!.attributes['url.full'], 'http://svc:8080/q?z=9');
});

test('keep-alive: 300 requests on one connection, split across syscalls', (t) => {
  const h = harness();
  h.feed({ ...server, type: EventType.Accept });
  for (let i = 0; i < 300; i++) {
    const req = `GET /item/${i} HTTP/1.1\r\nHost: h\r\n\r\n`;
    const cut = (i % (req.length - 1)) + 1;
    h.feed(
      { ...server, direction: IN, data: req.slice(0, cut), tsEnd: BigInt(i * 100 + 1) },
      { ...server, direction: IN, data: req.slice(cut), tsEnd: BigInt(i * 100 + 2) },
      { ...server, direction: OUT, data: 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n', tsEnd: BigInt(i * 100 + 3) },
      { ...server, direction: OUT, data: 'abc', tsEnd: BigInt(i * 100 + 4) },
    );
  }
  t.is(h.spans.length, 300);
  h.spans.forEach((s, i) => {
    t.is(s.attributes['url.path'], `/item/${i}`);
    t.is(s.endUnixNs - s.startUnixNs, 3n);
  });
});

test('pipelined requests are answered in order', (t) => {
  const h = harness();
  h.feed(
    { ...server, direction: IN, data: 'GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\nHEAD /3 HTTP/1.1\r\nHost: h\r\n\r\n' },
    { ...server, direction: OUT, data: `${resp200}HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n` },
  );
  t.deepEqual(h.spans.map((s) => [s.attributes['url.path'], s.attributes['http.response.status_code']]), [
    ['/1', 200],
    ['/2', 500],
    ['/3', 200],
  ]);
  t.deepEqual(h.spans[1]!.status, { code: 'error' });
  t.is(h.spans[1]!.attributes['error.type'], '500');
});

test('a connection that predates the agent: role inferred from the first bytes', (t) => {
  const h = harness();
  h.feed(
    { ...client, direction: OUT, data: 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n' },
    { ...client, direction: IN, data: resp200 },
  );
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.kind, 'client');
});

test('unknown methods become _OTHER with the original kept', (t) => {
  const h = harness();
  h.feed({ ...server, direction: IN, data: 'PURGE /c HTTP/1.1\r\nHost: a\r\n\r\n' }, { ...server, direction: OUT, data: resp200 });
  t.is(h.spans[0]!.name, 'HTTP');
  t.is(h.spans[0]!.attributes['http.request.method'], '_OTHER');
  t.is(h.spans[0]!.attributes['http.request.method_original'], 'PURGE');
});

test('non-HTTP traffic is ignored and counted, never a span', (t) => {
  const h = harness();
  for (let i = 0; i < 10; i++) h.feed({ ...server, direction: i % 2 ? OUT : IN, data: Uint8Array.from([0x05, 1, 0, i, 0, 0xff]) });
  t.is(h.spans.length, 0);
  t.is(h.table.stats.notHttp, 1);
  t.true(h.table.stats.unknownChunks >= 8);
});

test('close with a request unanswered ends it as an error span; close removes the connection', (t) => {
  const h = harness();
  h.feed({ ...server, type: EventType.Accept }, { ...server, direction: IN, data: 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', tsEnd: 100n });
  t.is(h.table.size, 1);
  h.feed({ ...server, type: EventType.Close, tsEnd: 500n });
  t.is(h.table.size, 0);
  t.is(h.table.stats.http.unanswered, 1);
  t.is(h.spans.length, 1);
  const s = h.spans[0]!;
  t.is(s.attributes['error.type'], 'connection_closed');
  t.is(s.attributes['http.response.status_code'], undefined);
  t.is(s.status.code, 'error');
  t.is(s.endUnixNs - s.startUnixNs, 400n);
});

test('a reset (ECONNRESET on a read) makes unanswered requests connection_reset', (t) => {
  const h = harness();
  h.feed(
    { ...client, type: EventType.Connect },
    { ...client, direction: OUT, data: 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc', tsStart: 10n, tsEnd: 20n },
    { ...client, direction: IN, data: '', ret: -104, tsEnd: 60n },
    { ...client, type: EventType.Close, tsEnd: 70n },
  );
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.attributes['error.type'], 'connection_reset');
  t.is(h.spans[0]!.kind, 'client');
  t.deepEqual(h.spans[0]!.bodySize, { request: 3 });
});

test('a request with no response within the timeout ends with error.type timeout; its late response is consumed', (t) => {
  const h = harness({ http: { captureQuery: false, maxPending: 8, requestTimeoutMs: 1 } });
  h.feed({ ...server, type: EventType.Accept }, { ...server, direction: IN, data: 'GET /slow HTTP/1.1\r\nHost: a\r\n\r\n', tsEnd: 1_000n });
  h.clock.nowMono = () => 1_000n + 2_000_000n;
  h.table.expireRequests();
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.attributes['error.type'], 'timeout');
  t.is(h.spans[0]!.endUnixNs - h.spans[0]!.startUnixNs, 1_000_000n);
  h.feed({ ...server, direction: OUT, data: 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n' });
  h.feed({ ...server, direction: IN, data: 'GET /next HTTP/1.1\r\nHost: a\r\n\r\n' }, { ...server, direction: OUT, data: 'HTTP/1.1 204 No Content\r\n\r\n' });
  t.is(h.spans.length, 2);
  t.is(h.spans[1]!.attributes['url.path'], '/next');
  t.is(h.table.stats.http.lateResponses, 1);
  h.feed({ ...server, type: EventType.Close });
  t.is(h.spans.length, 2, 'the timed-out request is not ended twice');
});

test('close-delimited response ends at close', (t) => {
  const h = harness();
  h.feed(
    { ...server, type: EventType.Accept },
    { ...server, direction: IN, data: 'GET / HTTP/1.0\r\n\r\n', tsEnd: 10n },
    { ...server, direction: OUT, data: 'HTTP/1.0 200 OK\r\n\r\nbody...', tsEnd: 20n },
    { ...server, direction: OUT, data: 'more', tsEnd: 30n },
    { ...server, type: EventType.Close, tsEnd: 40n },
  );
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.attributes['network.protocol.version'], '1.0');
  t.is(h.spans[0]!.endUnixNs, h.clock.toUnixNs(30n));
});

test('failed connects are counted, not tracked', (t) => {
  const h = harness();
  h.feed({ ...client, type: EventType.Connect, ret: -111 });
  t.is(h.table.stats.failedConnects, 1);
  t.is(h.table.size, 0);
});

test('the table is bounded: the oldest connection is evicted and counted', (t) => {
  const h = harness({ maxConnections: 10 });
  for (let i = 0; i < 25; i++) h.feed({ ...server, sock: BigInt(0x5000 + i), type: EventType.Accept });
  t.is(h.table.size, 10);
  t.is(h.table.stats.evicted, 15);
});

test('pending requests per connection are bounded', (t) => {
  const h = harness({ http: { captureQuery: false, maxPending: 4 } });
  for (let i = 0; i < 10; i++) h.feed({ ...server, direction: IN, data: `GET /${i} HTTP/1.1\r\nHost: a\r\n\r\n` });
  t.is(h.table.stats.http.pendingOverflow, 6);
});

test("the far end of the agent's own connections is ignored (no export feedback loop)", (t) => {
  const { spans, table, feed } = harness({ selfTgid: 777 });
  // the agent connects from 127.0.0.1:50000 to a collector on :4318
  feed({ type: EventType.Connect, tgid: 777, saddr: [127, 0, 0, 1], sport: 50000, daddr: [127, 0, 0, 1], dport: 4318, sock: 0x9n });
  // the collector's side of that connection
  const coll = { tgid: 900, sock: 0xan, saddr: [127, 0, 0, 1], sport: 4318, daddr: [127, 0, 0, 1], dport: 50000 };
  feed(
    { ...coll, direction: IN, data: 'POST /v1/traces HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\n\r\n' },
    { ...coll, direction: OUT, data: 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n' },
  );
  t.is(spans.length, 0);
  t.is(table.stats.selfTraffic, 1);
  t.is(table.stats.connected, 0, 'the agent itself is not a tracked client');
});

test("once the agent closes its socket, another process reusing that port is traced again (loopback reuses ports at once)", (t) => {
  const { spans, table, feed } = harness({ selfTgid: 777 });
  const agentSock = { tgid: 777, saddr: [127, 0, 0, 1], sport: 50000, daddr: [127, 0, 0, 1], dport: 8080, sock: 0x9n };
  // the agent probes a server on :8080 from port 50000, then closes that socket
  feed({ type: EventType.Connect, ...agentSock });
  // another connect of the agent from elsewhere, and a close of a socket it never reported: no effect
  feed({ type: EventType.Connect, ...agentSock, sport: 50001, sock: 0x19n }, { type: EventType.Close, ...agentSock, sock: 0x29n });
  feed({ type: EventType.Close, ...agentSock });
  // a client process now connects from the same port 50000 to the same server
  const srv = { tgid: 900, sock: 0xan, saddr: [127, 0, 0, 1], sport: 8080, daddr: [127, 0, 0, 1], dport: 50000 };
  feed(
    { type: EventType.Accept, ...srv },
    { ...srv, direction: IN, data: 'GET /x HTTP/1.1\r\nHost: s\r\n\r\n' },
    { ...srv, direction: OUT, data: resp200 },
  );
  t.is(spans.length, 1, 'the server span of the new connection');
  t.is(table.stats.selfTraffic, 0);
  // the agent's other socket (port 50001) is still its own
  const srv2 = { ...srv, sock: 0xbn, dport: 50001 };
  feed({ ...srv2, direction: IN, data: 'GET /y HTTP/1.1\r\nHost: s\r\n\r\n' }, { ...srv2, direction: OUT, data: resp200 });
  t.is(spans.length, 1);
  t.is(table.stats.selfTraffic, 1);
});

test("the agent's loopback endpoint is its own only in its network namespace: the same 127.0.0.1:port in another is traced", (t) => {
  const { spans, table, feed } = harness({ selfTgid: 777 });
  // the agent (host namespace) keeps a connection to a local Collector open from 127.0.0.1:50000
  feed({ type: EventType.Connect, tgid: 777, saddr: [127, 0, 0, 1], sport: 50000, daddr: [127, 0, 0, 1], dport: 4317, sock: 0x9n, netns: 1 });
  // in a pod's namespace a client happens to connect from 127.0.0.1:50000 too
  const pod = { tgid: 900, sock: 0xan, saddr: [127, 0, 0, 1], sport: 8080, daddr: [127, 0, 0, 1], dport: 50000, netns: 2 };
  feed({ ...pod, direction: IN, data: 'GET /x HTTP/1.1\r\nHost: s\r\n\r\n' }, { ...pod, direction: OUT, data: resp200 });
  t.is(spans.length, 1);
  t.is(table.stats.selfTraffic, 0);
  // the Collector's side, in the agent's namespace, is still ignored
  const coll = { ...pod, tgid: 901, sock: 0xbn, sport: 4317, netns: 1 };
  feed({ ...coll, direction: IN, data: 'POST /v1/traces HTTP/1.1\r\nHost: c\r\nContent-Length: 0\r\n\r\n' }, { ...coll, direction: OUT, data: resp200 });
  t.is(spans.length, 1);
  t.is(table.stats.selfTraffic, 1);
});

test('exportedQuery: off unless captured; configured keys (case-insensitive, percent-decoded) REDACTED, others kept', async (t) => {
  const { exportedQuery } = await import('../../src/receiver/spanbuild.js');
  const keys = new Set(['token', 'x-goog-signature']);
  t.is(exportedQuery('token=abc&page=2', false, keys), undefined);
  t.is(exportedQuery(undefined, true, keys), undefined);
  t.is(exportedQuery('token=abc&page=2', true, keys), 'token=REDACTED&page=2');
  t.is(exportedQuery('TOKEN=abc&X-Goog-Signature=s1&X%2DGoog%2DSignature=s2&flag&a=b=c', true, keys), 'TOKEN=REDACTED&X-Goog-Signature=REDACTED&X%2DGoog%2DSignature=REDACTED&flag&a=b=c');
  t.is(exportedQuery('token', true, keys), 'token=REDACTED');
  t.is(exportedQuery('%E0%A4%A=1&token=x', true, keys), '%E0%A4%A=1&token=REDACTED', 'a malformed escape is kept as is');
  t.is(exportedQuery('token=abc', true, new Set()), 'token=abc');
});
