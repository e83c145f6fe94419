import test from 'ava';
import { Http1Parser, headCacheStats, type Http1Event } from '../../src/receiver/http1.js';
import { rngUnit } from '../helpers/hostile.js';

function chunk(text: string, ts = 2n): { data: Uint8Array; length: number; tsStart: bigint; tsEnd: bigint } {
  return { data: new Uint8Array(Buffer.from(text, 'latin1')), length: text.length, tsStart: ts - 1n, tsEnd: ts };
}

/** events with the parse's own objects replaced by their content (heads from the table are other objects) */
function plain(events: Http1Event[]): unknown {
  return JSON.parse(JSON.stringify(events, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)));
}

test('a head seen before gives the same events as parsing it: requests and responses, message after message', (t) => {
  const r = rngUnit(11);
  const reqHeads = [
    'GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n',
    'GET /a?b=c HTTP/1.1\r\nHost: x\r\nUser-Agent: wrk\r\n\r\n',
    'POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n',
    'POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n',
    'GET /u HTTP/1.0\nHost: y\n\n',
  ];
  const reqBodies = ['', '', 'abc', '3\r\nabc\r\n0\r\n\r\n', ''];
  const respHeads = [
    'HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\n\r\n',
    'HTTP/1.1 204 No Content\r\nServer: nginx\r\n\r\n',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n',
    'HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n',
  ];
  const respBodies = ['ok', '', '2\r\nok\r\n0\r\n\r\n', ''];
  const hits0 = headCacheStats.hits;
  // two connections' parsers (the two ends of one connection see the same bytes) and a
  // reference pair fed one byte at a time, which never takes a head from the table
  const ends = [0, 1].map(() => {
    const methods: string[] = [];
    return { methods, req: new Http1Parser({ kind: 'request' }), resp: new Http1Parser({ kind: 'response', requestMethod: () => methods.shift() }) };
  });
  const refMethods: string[] = [];
  const ref = { req: new Http1Parser({ kind: 'request' }), resp: new Http1Parser({ kind: 'response', requestMethod: () => refMethods.shift() }) };
  const byteAtATime = (p: Http1Parser, text: string, ts: bigint): Http1Event[] => {
    const out: Http1Event[] = [];
    for (let i = 0; i < text.length; i++) out.push(...p.push(chunk(text[i]!, ts)));
    return out;
  };
  for (let m = 0; m < 400; m++) {
    const q = Math.floor(r() * reqHeads.length);
    const a = Math.floor(r() * respHeads.length);
    const req = reqHeads[q]! + reqBodies[q]!;
    const resp = respHeads[a]! + respBodies[a]!;
    const method = req.slice(0, req.indexOf(' '));
    const ts = BigInt(m + 2);
    refMethods.push(method);
    const want = [plain(byteAtATime(ref.req, req, ts)), plain(byteAtATime(ref.resp, resp, ts))];
    for (const e of ends) {
      e.methods.push(method);
      const got = [plain(e.req.push(chunk(req, ts))), plain(e.resp.push(chunk(resp, ts)))];
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        t.deepEqual(got, want, `message ${m}`);
        return;
      }
    }
  }
  t.true(headCacheStats.hits - hits0 > 1000, `heads were taken from the table (${headCacheStats.hits - hits0} times)`);
  t.is(ends[0]!.req.stats.messages, 400);
  t.is(ends[1]!.resp.stats.messages, 400);
});

test('a kept response head still follows the request method: no body after HEAD, a body after GET', (t) => {
  const head = 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n';
  const methods = ['HEAD', 'GET', 'HEAD'];
  const p = new Http1Parser({ kind: 'response', requestMethod: () => methods.shift() });
  const a = p.push(chunk(head));
  t.deepEqual(a.map((e) => e.type), ['head', 'end']);
  t.is((a[1] as Extract<Http1Event, { type: 'end' }>).bodyBytes, 0, 'HEAD: no body');
  const hits0 = headCacheStats.hits;
  const b = p.push(chunk(head));
  t.is(headCacheStats.hits, hits0 + 1, 'the head came from the table');
  t.deepEqual(b.map((e) => e.type), ['head'], 'GET: the body follows');
  const body = p.push(chunk('hello'));
  t.deepEqual(body.map((e) => e.type), ['end']);
  t.is((body[0] as Extract<Http1Event, { type: 'end' }>).bodyBytes, 5);
  const c = p.push(chunk(head));
  t.is(headCacheStats.hits, hits0 + 2);
  t.deepEqual(c.map((e) => e.type), ['head', 'end']);
  t.is((c[1] as Extract<Http1Event, { type: 'end' }>).bodyBytes, 0, 'HEAD again: no body');
});

test('heads with credential headers, or cut over two chunks, are never kept; a changed byte misses', (t) => {
  const p = new Http1Parser({ kind: 'request' });
  const secret = 'GET / HTTP/1.1\r\nHost: s\r\nAuthorization: Bearer abc\r\n\r\n';
  const stores0 = headCacheStats.stores;
  p.push(chunk(secret));
  p.push(chunk(secret));
  t.is(headCacheStats.stores, stores0, 'a head with Authorization is not kept');
  const cookie = 'GET / HTTP/1.1\r\nHost: s\r\ncookie: a=b\r\n\r\n';
  p.push(chunk(cookie));
  t.is(headCacheStats.stores, stores0, 'nor one with Cookie');
  const split = 'GET /split HTTP/1.1\r\nHost: s\r\n\r\n';
  p.push(chunk(split.slice(0, 10)));
  p.push(chunk(split.slice(10)));
  t.is(headCacheStats.stores, stores0, 'nor one that came in two chunks');
  const h1 = 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n';
  p.push(chunk(h1));
  t.is(headCacheStats.stores, stores0 + 1);
  const hits0 = headCacheStats.hits;
  const ev = p.push(chunk(h1.replace('Host: a', 'Host: b')));
  t.is(headCacheStats.hits, hits0, 'one byte differs: parsed');
  t.deepEqual((ev[0] as Extract<Http1Event, { type: 'head' }>).head.headers, [['host', 'b']]);
});

test('parsers with their own limits do not share the table', (t) => {
  const head = 'GET /limits HTTP/1.1\r\nHost: a\r\nX-1: 1\r\nX-2: 2\r\n\r\n';
  new Http1Parser({ kind: 'request' }).push(chunk(head));
  const hits0 = headCacheStats.hits;
  const p = new Http1Parser({ kind: 'request', maxHeaders: 1 });
  const [e] = p.push(chunk(head));
  t.is(headCacheStats.hits, hits0);
  const h = (e as Extract<Http1Event, { type: 'head' }>).head;
  t.deepEqual(h.headers, [['host', 'a']]);
  t.true(h.headTruncated);
});
