/**
 * HTTP/2 depth through the connection table with synthetic kernel events: h2c Upgrade (the
 * 101'd HTTP/1 request becomes stream 1), streams left open on close (gRPC UNAVAILABLE /
 * CANCELLED, plain HTTP/2 connection_closed), the request timeout, grpc-timeout →
 * DEADLINE_EXCEEDED, DATA byte counts. The real-peer versions are in test/e2e.
 */
import test from 'ava';
import { Buffer } from 'node:buffer';
import { MonotonicClock } from '../../src/receiver/clock.js';
import { ConnectionTable, type ConnectionTableOptions } from '../../src/receiver/connections.js';
import { decodeBatch } from '../../src/receiver/decode.js';
import { grpcTimeoutNs } from '../../src/receiver/grpc.js';
import { Direction, EventType } from '../../src/receiver/layout.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { batch, encodeEvent, type FakeEvent } from '../helpers/events.js';

const OPTS: ConnectionTableOptions = { maxConnections: 100, idleMs: 60_000, http: { captureQuery: false, maxPending: 16, requestTimeoutMs: 1000 } };

function harness() {
  const clock = new MonotonicClock();
  const spans: SidelightSpan[] = [];
  const table = new ConnectionTable(OPTS, clock, (s) => spans.push(s));
  const feed = (...evs: FakeEvent[]): void => decodeBatch(batch(evs.map(encodeEvent)), (e) => table.onEvent(e), { records: 0, malformed: 0 });
  return { clock, spans, table, feed };
}

const server = { sport: 8080, dport: 40000, saddr: [127, 0, 0, 1], daddr: [127, 0, 0, 2], sock: 0x1000n };
const client = { sport: 40000, dport: 8080, saddr: [127, 0, 0, 2], daddr: [127, 0, 0, 1], sock: 0x2000n };
const IN = Direction.Ingress;
const OUT = Direction.Egress;

const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
const cat = (...parts: Array<Uint8Array | number[]>): Uint8Array => new Uint8Array(parts.flatMap((p) => [...p]));
function frame(type: number, flags: number, sid: number, payload: Uint8Array | number[] = []): Uint8Array {
  const n = payload.length;
  return cat([(n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff, type, flags, (sid >>> 24) & 0x7f, (sid >> 16) & 0xff, (sid >> 8) & 0xff, sid & 0xff], payload);
}
const str = (s: string): number[] => [s.length, ...bytes(s)]; // names/values < 127 octets here
const hb = (fields: Array<[string, string]>): number[] => fields.flatMap(([n, v]) => [0x00, ...str(n), ...str(v)]);
const PREFACE = bytes('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const SETTINGS = frame(4, 0, 0);
const DATA = 0;
const HEADERS = 1;
const RST = 3;
const END_STREAM = 1;
const END_HEADERS = 4;

const grpcReq = (path: string, extra: Array<[string, string]> = []): Array<[string, string]> => [
  [':method', 'POST'], [':scheme', 'http'], [':path', path], [':authority', '127.0.0.1:8080'], ['content-type', 'application/grpc'], ['te', 'trailers'], ...extra,
];

test('grpc-timeout values', (t) => {
  t.is(grpcTimeoutNs('300m'), 300_000_000n);
  t.is(grpcTimeoutNs('299999u'), 299_999_000n);
  t.is(grpcTimeoutNs('1H'), 3_600_000_000_000n);
  t.is(grpcTimeoutNs('123456789n'), undefined, 'at most 8 digits');
  t.is(grpcTimeoutNs('5x'), undefined);
  t.is(grpcTimeoutNs(undefined), undefined);
});

test('h2c Upgrade: the HTTP/1 request answered by 101 becomes HTTP/2 stream 1; later streams follow', (t) => {
  const h = harness();
  const req = 'GET /up HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nUser-Agent: curl/8\r\n\r\n';
  const resp101 = 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n';
  h.feed(
    { ...server, type: EventType.Accept },
    { ...server, direction: IN, data: req, tsEnd: 100n },
    // the 101 and the server preface in one write
    { ...server, direction: OUT, data: cat(bytes(resp101), SETTINGS), tsEnd: 200n },
    { ...server, direction: IN, data: cat(PREFACE, SETTINGS), tsEnd: 300n },
    { ...server, direction: OUT, data: cat(frame(HEADERS, END_HEADERS, 1, hb([[':status', '200']])), frame(DATA, END_STREAM, 1, bytes('hello'))), tsEnd: 400n },
  );
  t.is(h.spans.length, 1, 'no span for the 101 itself');
  const s = h.spans[0]!;
  t.is(s.kind, 'server');
  t.like(s.attributes, { 'http.request.method': 'GET', 'url.path': '/up', 'http.response.status_code': 200, 'network.protocol.version': '2', 'user_agent.original': 'curl/8' });
  t.is(s.attributes['error.type'], undefined);
  t.is(s.startUnixNs, h.clock.toUnixNs(100n));
  t.is(s.endUnixNs, h.clock.toUnixNs(400n));
  t.deepEqual(s.bodySize, { request: 0, response: 5 });
  t.is(h.table.stats.http.h2cUpgrades, 1);
  // stream 3 on the upgraded connection
  h.feed(
    { ...server, direction: IN, data: frame(HEADERS, END_HEADERS | END_STREAM, 3, hb([[':method', 'GET'], [':scheme', 'http'], [':path', '/next'], [':authority', 'a']])), tsEnd: 500n },
    { ...server, direction: OUT, data: frame(HEADERS, END_HEADERS | END_STREAM, 3, hb([[':status', '404']])), tsEnd: 600n },
  );
  t.is(h.spans.length, 2);
  t.like(h.spans[1]!.attributes, { 'url.path': '/next', 'http.response.status_code': 404, 'network.protocol.version': '2' });
});

test('a 101 to a websocket upgrade is still an HTTP/1 span and the connection is left alone', (t) => {
  const h = harness();
  h.feed(
    { ...server, type: EventType.Accept },
    { ...server, direction: IN, data: 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n' },
    { ...server, direction: OUT, data: 'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n' },
    { ...server, direction: OUT, data: cat([0x81, 0x02], bytes('hi')) },
  );
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.attributes['http.response.status_code'], 101);
  t.is(h.table.stats.http.h2cUpgrades, 0);
});

test('gRPC calls open when the connection closes: UNAVAILABLE on the client; timeout when left open', (t) => {
  const h = harness();
  h.feed(
    { ...client, type: EventType.Connect },
    { ...client, direction: OUT, data: cat(PREFACE, SETTINGS, frame(HEADERS, END_HEADERS, 1, hb(grpcReq('/pkg.Svc/Slow'))), frame(DATA, END_STREAM, 1, [0, 0, 0, 0, 2, 1, 2])), tsStart: 10n, tsEnd: 20n },
    { ...client, type: EventType.Close, tsEnd: 5_000n },
  );
  t.is(h.spans.length, 1);
  t.like(h.spans[0]!.attributes, { 'rpc.method': 'pkg.Svc/Slow', 'rpc.status_code': 'UNAVAILABLE', 'error.type': 'UNAVAILABLE' });
  t.is(h.spans[0]!.endUnixNs, h.clock.toUnixNs(5_000n));
  t.deepEqual(h.spans[0]!.bodySize, { request: 7 });

  // server side of a call that never gets a response: the timeout
  h.feed(
    { ...server, type: EventType.Accept },
    { ...server, direction: IN, data: cat(PREFACE, SETTINGS, frame(HEADERS, END_HEADERS, 1, hb(grpcReq('/pkg.Svc/Hang')))), tsEnd: 1_000n },
  );
  h.clock.nowMono = () => 1_000n + 999_000_000n;
  h.table.expireRequests();
  t.is(h.spans.length, 1, 'not yet');
  h.clock.nowMono = () => 1_000n + 1_000_000_000n;
  h.table.expireRequests();
  t.is(h.spans.length, 2);
  t.like(h.spans[1]!.attributes, { 'rpc.method': 'pkg.Svc/Hang', 'error.type': 'timeout' });
  t.is(h.spans[1]!.attributes['rpc.status_code'], undefined);
  t.is(h.spans[1]!.status.code, 'error');
  h.feed({ ...server, type: EventType.Close });
  t.is(h.spans.length, 2, 'the timed-out stream is not ended again at close');
});

test('a CANCEL past the grpc-timeout is DEADLINE_EXCEEDED; before it, CANCELLED', (t) => {
  const h = harness();
  const open = (sid: number, path: string, ts: bigint): FakeEvent => ({
    ...server, direction: IN, data: frame(HEADERS, END_HEADERS, sid, hb(grpcReq(path, [['grpc-timeout', '300m']]))), tsEnd: ts,
  });
  h.feed({ ...server, type: EventType.Accept }, { ...server, direction: IN, data: cat(PREFACE, SETTINGS), tsEnd: 1n });
  h.feed(open(1, '/p.S/Late', 1_000n), { ...server, direction: IN, data: frame(RST, 0, 1, [0, 0, 0, 8]), tsEnd: 1_000n + 300_000_000n });
  h.feed(open(3, '/p.S/Early', 2_000n), { ...server, direction: IN, data: frame(RST, 0, 3, [0, 0, 0, 8]), tsEnd: 2_000n + 10_000_000n });
  t.is(h.spans.length, 2);
  t.like(h.spans[0]!.attributes, { 'rpc.method': 'p.S/Late', 'rpc.status_code': 'DEADLINE_EXCEEDED', 'error.type': 'DEADLINE_EXCEEDED' });
  t.like(h.spans[1]!.attributes, { 'rpc.method': 'p.S/Early', 'rpc.status_code': 'CANCELLED' });
  t.is(h.spans[1]!.attributes['error.type'], undefined, 'CANCELLED is no server error');
});

test('plain HTTP/2 stream open at close: connection_closed; after an ECONNRESET: connection_reset', (t) => {
  const h = harness();
  h.feed(
    { ...client, type: EventType.Connect },
    { ...client, direction: OUT, data: cat(PREFACE, SETTINGS, frame(HEADERS, END_HEADERS | END_STREAM, 1, hb([[':method', 'GET'], [':scheme', 'http'], [':path', '/x'], [':authority', 'a:1']]))) },
    { ...client, direction: IN, data: '', ret: -104 },
    { ...client, type: EventType.Close },
  );
  t.is(h.spans.length, 1);
  t.is(h.spans[0]!.attributes['error.type'], 'connection_reset');
  t.is(h.spans[0]!.attributes['http.response.status_code'], undefined);
  t.is(h.spans[0]!.status.code, 'error');
});

test('framing lost in a capture gap is found again at a chunk that starts with a frame header; HPACK trusted only for new entries', async (t) => {
  const { Http2Connection } = await import('../../src/receiver/http2.js');
  const conn = new Http2Connection();
  let n = 0;
  const ch = (data: Uint8Array, length = data.length) => ({ data, length, tsStart: BigInt(++n), tsEnd: BigInt(n) });
  const req = frame(HEADERS, END_HEADERS | END_STREAM, 1, hb([[':method', 'GET'], [':scheme', 'http'], [':path', '/a'], [':authority', 'a']]));
  const req3 = frame(HEADERS, END_HEADERS | END_STREAM, 3, hb([[':method', 'GET'], [':scheme', 'http'], [':path', '/b'], [':authority', 'a']]));
  conn.pushClient(ch(cat(PREFACE, SETTINGS, req, req3)));
  // response 1 inserts "x-old: 1" (literal with incremental indexing) → dynamic index 62
  const resp1 = frame(HEADERS, END_HEADERS, 1, [0x88, 0x40, ...str('x-old'), ...str('1')]);
  const data1 = frame(DATA, 0, 1, new Uint8Array(3000));
  const end1 = frame(DATA, END_STREAM, 1, [1, 2]);
  const write1 = cat(SETTINGS, resp1, data1, end1);
  // captured: SETTINGS, resp1 and 500 octets of data1; the header of end1 is in the gap
  const ev1 = conn.pushServer(ch(write1.subarray(0, 9 + resp1.length + 500), write1.length));
  t.deepEqual(ev1.map((e) => e.type), ['response', 'data', 'error']);
  t.true(conn.stopped('server'));
  // a chunk that starts mid-payload (implausible header: length 0x787878) is skipped
  t.deepEqual(conn.pushServer(ch(new Uint8Array(100).fill(0x78))), []);
  t.is(conn.stats.framingResyncs, 0);
  // a chunk starting with a frame header: framing is back. Response 3 refers to index 62,
  // an entry from before the gap (the gap may have changed the table): not decoded
  const resp3 = frame(HEADERS, END_HEADERS | END_STREAM, 3, [0x88, 0xbe]);
  const ev2 = conn.pushServer(ch(resp3));
  t.is(conn.stats.framingResyncs, 1);
  t.false(conn.stopped('server'));
  t.deepEqual(ev2.map((e) => e.type), ['error', 'end'], 'desynced: no response event, the end still counts');
  t.true(conn.desynced('server'));
  // a block that starts with a size update to 0 makes the table exact again
  conn.pushClient(ch(frame(HEADERS, END_HEADERS | END_STREAM, 5, hb([[':method', 'GET'], [':scheme', 'http'], [':path', '/c'], [':authority', 'a']]))));
  const resp5 = frame(HEADERS, END_HEADERS | END_STREAM, 5, [0x20, 0x88, 0x40, ...str('x-new'), ...str('2')]);
  const ev3 = conn.pushServer(ch(resp5));
  t.deepEqual(ev3.map((e) => e.type), ['response', 'end']);
  t.false(conn.desynced('server'));
});

test('after a resync, blocks referring only to static entries and to entries inserted since are decoded', async (t) => {
  const { Http2Connection } = await import('../../src/receiver/http2.js');
  const conn = new Http2Connection();
  let n = 0;
  const ch = (data: Uint8Array, length = data.length) => ({ data, length, tsStart: BigInt(++n), tsEnd: BigInt(n) });
  const get = (sid: number) => frame(HEADERS, END_HEADERS | END_STREAM, sid, hb([[':method', 'GET'], [':scheme', 'http'], [':path', '/'], [':authority', 'a']]));
  conn.pushClient(ch(cat(PREFACE, SETTINGS, get(1), get(3), get(5))));
  const w = cat(SETTINGS, frame(HEADERS, END_HEADERS, 1, [0x88]), frame(DATA, 0, 1, new Uint8Array(2000)), frame(DATA, END_STREAM, 1, []));
  conn.pushServer(ch(w.subarray(0, 100), w.length));
  t.true(conn.stopped('server'));
  // literal with indexing after the resync: trusted; then indexed reference to it: trusted
  const ev = conn.pushServer(ch(cat(frame(HEADERS, END_HEADERS | END_STREAM, 3, [0x88, 0x40, ...str('x-a'), ...str('1')]), frame(HEADERS, END_HEADERS | END_STREAM, 5, [0x88, 0xbe]))));
  t.deepEqual(ev.filter((e) => e.type === 'response').map((e) => (e as { headers: Array<[string, string]> }).headers), [
    [[':status', '200'], ['x-a', '1']],
    [[':status', '200'], ['x-a', '1']],
  ]);
  t.false(conn.desynced('server'));
});

test('the decoder counters of an ended HTTP/2 connection are summed into the table stats (/healthz http.h2)', (t) => {
  const h = harness();
  // a valid exchange start, then a HEADERS block whose HPACK refers to a dynamic entry that
  // was never inserted: the client direction desyncs
  h.feed(
    { ...client, type: EventType.Connect },
    { ...client, direction: OUT, data: cat(PREFACE, SETTINGS, frame(HEADERS, END_HEADERS | END_STREAM, 1, hb([[':method', 'GET'], [':scheme', 'http'], [':path', '/a'], [':authority', 'a:1']]))) },
    { ...client, direction: OUT, data: frame(HEADERS, END_HEADERS | END_STREAM, 3, [0xbe]) },
  );
  t.is(h.table.stats.http.h2.frames, 0, 'counted only when the connection ends');
  h.feed({ ...client, type: EventType.Close });
  const s = h.table.stats.http.h2;
  t.true(s.frames >= 3, `frames ${s.frames}`);
  t.is(s.streams, 2);
  t.true(s.desyncs + s.hpackErrors >= 1, `desyncs ${s.desyncs}, hpackErrors ${s.hpackErrors}`);
});
