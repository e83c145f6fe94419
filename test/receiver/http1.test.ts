import test from 'ava';
import {
  Http1Parser,
  looksLikeHttp1,
  type Chunk,
  type Http1Event,
  type Http1ParserOptions,
  type HttpHead,
} from '../../src/receiver/http1.js';
import { fuzzIterations } from '../helpers/fuzz.js';

/** generated/mutated inputs per fuzz test: 1000 in CI, a million with `make fuzz` */
const FUZZ_N = fuzzIterations(1000);

// ---- helpers -----------------------------------------------------------------------------

const bytes = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));
const tsS = (i: number): bigint => BigInt(1000 + i * 10);
const tsE = (i: number): bigint => tsS(i) + 5n;

/** chunk number i (timestamps derived from i); `length` > data.length makes a capture gap */
function chunk(i: number, data: string | Uint8Array, length?: number): Chunk {
  const d = typeof data === 'string' ? bytes(data) : data;
  return { data: d, length: length ?? d.length, tsStart: tsS(i), tsEnd: tsE(i) };
}

function feed(p: Http1Parser, parts: Array<string | Uint8Array>): Http1Event[] {
  const out: Http1Event[] = [];
  parts.forEach((d, i) => out.push(...p.push(chunk(i, d))));
  return out;
}

function req(opts: Partial<Http1ParserOptions> = {}): Http1Parser {
  return new Http1Parser({ kind: 'request', ...opts });
}

function resp(methods: Array<string | undefined> = [], opts: Partial<Http1ParserOptions> = {}): { p: Http1Parser; calls: () => number } {
  let n = 0;
  const p = new Http1Parser({
    kind: 'response',
    requestMethod: () => methods[n++],
    ...opts,
  });
  return { p, calls: () => n };
}

function reqHead(method: string, target: string, headers: Array<[string, string]>, extra: Partial<HttpHead> = {}): HttpHead {
  return { kind: 'request', version: '1.1', headers, headTruncated: false, method, target, ...extra };
}

function respHead(status: number, reason: string, headers: Array<[string, string]>, extra: Partial<HttpHead> = {}): HttpHead {
  return { kind: 'response', version: '1.1', headers, headTruncated: false, status, reason, ...extra };
}

const headEv = (head: HttpHead, i: number): Http1Event => ({ type: 'head', head, ts: tsE(i), tsStart: tsS(i) });
const endEv = (i: number | bigint, bodyBytes: number, framing: 'none' | 'length' | 'chunked' | 'close' | 'unknown'): Http1Event => ({
  type: 'end',
  ts: typeof i === 'bigint' ? i : tsE(i),
  bodyBytes,
  framing,
});

/** deterministic PRNG (mulberry32) */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** structural invariants every event sequence must satisfy */
function checkInvariants(t: { true: (v: boolean, m?: string) => void }, events: Http1Event[], p: Http1Parser): void {
  let open = false;
  let heads = 0;
  let errors = 0;
  for (const e of events) {
    if (e.type === 'head') {
      t.true(!open, 'head while a message is open');
      open = true;
      heads++;
    } else if (e.type === 'end') {
      t.true(open, 'end without head');
      open = false;
      t.true(Number.isSafeInteger(e.bodyBytes) && e.bodyBytes >= 0, 'bodyBytes sane');
    } else {
      t.true(!open, 'error while a message is open (its end must come first)');
      t.true(e.reason !== 'internal parser error', 'no internal fault (a bug caught by the safety net)');
      errors++;
    }
  }
  t.true(open === p.inMessage, 'inMessage matches event stream');
  t.true(p.stats.messages === heads, 'stats.messages');
  t.true(p.stats.errors === errors, 'stats.errors');
  t.true(!p.openEnded || p.inMessage, 'openEnded implies inMessage');
}

// ---- basics ------------------------------------------------------------------------------

const GET = 'GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent:  t/1 \r\n\r\n';
const GET_HEADERS: Array<[string, string]> = [
  ['host', 'example.com'],
  ['user-agent', 't/1'],
];
const POST = 'POST /submit HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello world';
const POST_HEADERS: Array<[string, string]> = [
  ['host', 'example.com'],
  ['content-length', '11'],
];

test('simple GET', (t) => {
  const p = req();
  t.deepEqual(p.push(chunk(0, GET)), [headEv(reqHead('GET', '/a?x=1', GET_HEADERS), 0), endEv(0, 0, 'none')]);
  t.false(p.inMessage);
  t.false(p.openEnded);
  t.deepEqual(p.stats, { messages: 1, errors: 0, skippedBytes: 0, truncatedHeads: 0 });
});

test('keep-alive: 200 requests on one parser', (t) => {
  const p = req();
  const events: Http1Event[] = [];
  for (let i = 0; i < 200; i++) {
    const body = i % 2 === 0 ? '' : 'x'.repeat(i);
    const m = body ? `PUT /k/${i} HTTP/1.1\r\nContent-Length: ${body.length}\r\n\r\n${body}` : `GET /k/${i} HTTP/1.1\r\nHost: h\r\n\r\n`;
    events.push(...p.push(chunk(i, m)));
  }
  t.is(events.length, 400);
  for (let i = 0; i < 200; i++) {
    const h = events[2 * i]!;
    const e = events[2 * i + 1]!;
    if (h.type !== 'head' || e.type !== 'end') return t.fail(`message ${i}`);
    t.is(h.head.target, `/k/${i}`);
    t.is(h.head.method, i % 2 === 0 ? 'GET' : 'PUT');
    t.is(h.ts, tsE(i));
    t.deepEqual(e, endEv(i, i % 2 === 0 ? 0 : i, i % 2 === 0 ? 'none' : 'length'));
  }
  t.deepEqual(p.stats, { messages: 200, errors: 0, skippedBytes: 0, truncatedHeads: 0 });
});

test('pipelined requests in one chunk', (t) => {
  const p = req();
  const events = p.push(chunk(0, GET + POST + 'DELETE /x HTTP/1.1\r\n\r\n'));
  t.deepEqual(events, [
    headEv(reqHead('GET', '/a?x=1', GET_HEADERS), 0),
    endEv(0, 0, 'none'),
    headEv(reqHead('POST', '/submit', POST_HEADERS), 0),
    endEv(0, 11, 'length'),
    headEv(reqHead('DELETE', '/x', []), 0),
    endEv(0, 0, 'none'),
  ]);
});

test('request stream split at every byte offset (2 chunks)', (t) => {
  const stream = GET + POST;
  const r2Start = GET.length;
  for (let k = 1; k < stream.length; k++) {
    const p = req();
    const events = feed(p, [stream.slice(0, k), stream.slice(k)]);
    const at = (byte: number): number => (byte < k ? 0 : 1);
    t.deepEqual(
      events,
      [
        headEv(reqHead('GET', '/a?x=1', GET_HEADERS), 0),
        endEv(at(r2Start - 1), 0, 'none'),
        headEv(reqHead('POST', '/submit', POST_HEADERS), at(r2Start)),
        endEv(1, 11, 'length'),
      ],
      `split at ${k}`,
    );
    t.false(p.inMessage);
  }
});

test('one byte per chunk', (t) => {
  const stream = GET + POST;
  const p = req();
  const events = feed(p, stream.split(''));
  t.deepEqual(events, [
    headEv(reqHead('GET', '/a?x=1', GET_HEADERS), 0),
    endEv(GET.length - 1, 0, 'none'),
    headEv(reqHead('POST', '/submit', POST_HEADERS), GET.length),
    endEv(stream.length - 1, 11, 'length'),
  ]);
  t.deepEqual(p.stats, { messages: 2, errors: 0, skippedBytes: 0, truncatedHeads: 0 });
});

test('content-length body split over chunks', (t) => {
  const p = req();
  const events = feed(p, ['POST /u HTTP/1.1\r\nContent-Length: 10\r\n\r\nab', 'cdef', 'ghi', 'jGET / HTTP/1.1\r\n\r\n']);
  t.deepEqual(events, [
    headEv(reqHead('POST', '/u', [['content-length', '10']]), 0),
    endEv(3, 10, 'length'),
    headEv(reqHead('GET', '/', []), 3),
    endEv(3, 0, 'none'),
  ]);
});

test('chunked request body', (t) => {
  const p = req();
  const events = feed(p, ['POST /c HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n', '0\r\n\r\n']);
  t.deepEqual(events, [
    headEv(reqHead('POST', '/c', [['transfer-encoding', 'gzip, chunked']]), 0),
    endEv(1, 3, 'chunked'),
  ]);
});

// ---- responses ---------------------------------------------------------------------------

const CHUNKED =
  'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n' +
  '5;name=val\r\nhello\r\n6 ; x="q;r"\r\n world\r\n00A\r\n0123456789\r\n0;last\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n';
const CHUNKED_HEAD = respHead(200, 'OK', [
  ['transfer-encoding', 'chunked'],
  ['content-type', 'text/plain'],
]);
const NOTFOUND = 'HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnop';
const NOTFOUND_HEAD = respHead(404, 'Not Found', [['content-length', '3']]);

test('chunked response with extensions and trailers', (t) => {
  const { p, calls } = resp(['GET', 'GET']);
  t.deepEqual(p.push(chunk(0, CHUNKED + NOTFOUND)), [
    headEv(CHUNKED_HEAD, 0),
    endEv(0, 21, 'chunked'),
    headEv(NOTFOUND_HEAD, 0),
    endEv(0, 3, 'length'),
  ]);
  t.is(calls(), 2);
});

test('chunked response split at every byte offset (2 chunks)', (t) => {
  const stream = CHUNKED + NOTFOUND;
  const s2 = CHUNKED.length;
  for (let k = 1; k < stream.length; k++) {
    const { p } = resp();
    const events = feed(p, [stream.slice(0, k), stream.slice(k)]);
    const at = (byte: number): number => (byte < k ? 0 : 1);
    t.deepEqual(
      events,
      [headEv(CHUNKED_HEAD, 0), endEv(at(s2 - 1), 21, 'chunked'), headEv(NOTFOUND_HEAD, at(s2)), endEv(1, 3, 'length')],
      `split at ${k}`,
    );
  }
});

test('chunked response one byte per chunk', (t) => {
  const { p } = resp();
  const events = feed(p, (CHUNKED + NOTFOUND).split(''));
  t.deepEqual(events, [
    headEv(CHUNKED_HEAD, 0),
    endEv(CHUNKED.length - 1, 21, 'chunked'),
    headEv(NOTFOUND_HEAD, CHUNKED.length),
    endEv(CHUNKED.length + NOTFOUND.length - 1, 3, 'length'),
  ]);
});

test('HEAD response with Content-Length has no body', (t) => {
  const { p, calls } = resp(['HEAD', 'GET']);
  const events = p.push(chunk(0, 'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n' + 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi'));
  t.deepEqual(events, [
    headEv(respHead(200, 'OK', [['content-length', '1234']]), 0),
    endEv(0, 0, 'none'),
    headEv(respHead(200, 'OK', [['content-length', '2']]), 0),
    endEv(0, 2, 'length'),
  ]);
  t.is(calls(), 2);
});

for (const status of [204, 304]) {
  test(`${status} response has no body even with framing headers`, (t) => {
    const { p } = resp(['GET', 'GET']);
    const events = p.push(
      chunk(0, `HTTP/1.1 ${status} X\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n` + NOTFOUND),
    );
    t.deepEqual(events, [
      headEv(respHead(status, 'X', [['content-length', '50'], ['transfer-encoding', 'chunked']]), 0),
      endEv(0, 0, 'none'),
      headEv(NOTFOUND_HEAD, 0),
      endEv(0, 3, 'length'),
    ]);
  });
}

test('100-continue then 200: 1xx is its own message, requestMethod called once', (t) => {
  const { p, calls } = resp(['POST']);
  const events = feed(p, ['HTTP/1.1 100 Continue\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok']);
  t.deepEqual(events, [
    headEv(respHead(100, 'Continue', []), 0),
    endEv(0, 0, 'none'),
    headEv(respHead(200, 'OK', [['content-length', '2']]), 1),
    endEv(1, 2, 'length'),
  ]);
  t.is(calls(), 1);
  // 103 Early Hints and 100 in one chunk with the final response
  const r2 = resp(['GET']);
  const ev2 = r2.p.push(chunk(0, 'HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n' + NOTFOUND));
  t.deepEqual(ev2.map((e) => (e.type === 'head' ? e.head.status : e.type)), [103, 'end', 100, 'end', 404, 'end']);
  t.is(r2.calls(), 1);
});

test('101 upgrade: end, then all further bytes ignored', (t) => {
  const { p, calls } = resp(['GET']);
  const up = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';
  const ws = '\x81\x05hello';
  const frame2 = '\x82\x7e\x00\x10garbage';
  const events = feed(p, [up + ws, frame2, NOTFOUND]);
  t.deepEqual(events, [
    headEv(respHead(101, 'Switching Protocols', [['upgrade', 'websocket'], ['connection', 'Upgrade']]), 0),
    endEv(0, 0, 'none'),
  ]);
  t.true(p.upgraded);
  t.false(p.inMessage);
  t.is(calls(), 0); // 101 is a 1xx: requestMethod is not consulted
  t.deepEqual(p.stats, { messages: 1, errors: 0, skippedBytes: ws.length + frame2.length + NOTFOUND.length, truncatedHeads: 0 });
  t.deepEqual(p.push(chunk(9, 'x', 100000)), []);
  t.is(p.stats.skippedBytes, ws.length + frame2.length + NOTFOUND.length + 100000);
  t.deepEqual(p.finish('close'), []);
});

test('CONNECT 2xx response makes a tunnel; CONNECT request resyncs silently', (t) => {
  const { p } = resp(['CONNECT']);
  const events = p.push(chunk(0, 'HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01\x00\x05hello'));
  t.deepEqual(events, [headEv(respHead(200, 'Connection established', []), 0), endEv(0, 0, 'none')]);
  t.true(p.upgraded);

  const q = req();
  const tls = '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03';
  const ev = feed(q, ['CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n', tls, 'GET / HTTP/1.1\r\n\r\n']);
  t.deepEqual(ev, [
    headEv(reqHead('CONNECT', 'example.com:443', [['host', 'example.com:443']]), 0),
    endEv(0, 0, 'none'),
    headEv(reqHead('GET', '/', []), 2),
    endEv(2, 0, 'none'),
  ]);
  t.deepEqual(q.stats, { messages: 2, errors: 0, skippedBytes: tls.length, truncatedHeads: 0 });
  t.false(q.upgraded);
});

test('upgrade request: following frames skipped silently', (t) => {
  const q = req();
  const ev = feed(q, [
    'GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n',
    '\x81\x85\x00\x00\x00\x00hello',
  ]);
  t.is(ev.length, 2);
  t.deepEqual(ev[1], endEv(0, 0, 'none'));
  t.is(q.stats.errors, 0);
  t.is(q.stats.skippedBytes, 11);
});

test('close-delimited response ends with finish("close")', (t) => {
  const { p } = resp(['GET']);
  const events = feed(p, ['HTTP/1.0 200 OK\r\nServer: x\r\n\r\nabc', 'defgh', '']);
  t.deepEqual(events, [headEv(respHead(200, 'OK', [['server', 'x']], { version: '1.0' }), 0)]);
  t.true(p.inMessage);
  t.true(p.openEnded);
  t.deepEqual(p.push(chunk(3, 'ij', 1000)), []); // gaps count as body too
  t.deepEqual(p.finish('close'), [endEv(3, 3 + 5 + 1000, 'close')]);
  t.false(p.inMessage);
  t.false(p.openEnded);
  t.deepEqual(p.finish('close'), []);
  // explicit ts wins
  const r2 = resp();
  r2.p.push(chunk(0, 'HTTP/1.1 200 OK\r\n\r\nabc'));
  t.deepEqual(r2.p.finish('close', 77n), [endEv(77n, 3, 'close')]);
});

test('response with Transfer-Encoding not ending in chunked is close-delimited', (t) => {
  const { p } = resp();
  t.is(p.push(chunk(0, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\nContent-Length: 3\r\n\r\nabcdef')).length, 1);
  t.true(p.openEnded);
  t.deepEqual(p.finish('close'), [endEv(0, 6, 'close')]);
});

test('truncated head via capture gap, then finish("peer"), then resync', (t) => {
  const { p, calls } = resp(['GET', 'GET']);
  const head = 'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5000\r\nSet-Cookie: abc';
  const events = p.push(chunk(0, head, 6000));
  t.deepEqual(events, [
    headEv(
      respHead(
        200,
        'OK',
        [
          ['content-type', 'text/html'],
          ['content-length', '5000'],
        ],
        { headTruncated: true },
      ),
      0,
    ),
  ]);
  t.true(p.inMessage);
  t.true(p.openEnded);
  t.is(calls(), 1);
  // body continuation is swallowed (even if it looks like a response: the end is unknown)
  t.deepEqual(p.push(chunk(1, 'more body bytes')), []);
  t.deepEqual(p.push(chunk(2, NOTFOUND)), []);
  t.deepEqual(p.finish('peer', 555n), [endEv(555n, 0, 'unknown')]);
  t.false(p.openEnded);
  // after finish: chunks that do not start with a status line are skipped
  t.deepEqual(p.push(chunk(3, 'tail of the old body')), []);
  t.deepEqual(p.push(chunk(4, NOTFOUND)), [headEv(NOTFOUND_HEAD, 4), endEv(4, 3, 'length')]);
  t.deepEqual(p.stats, { messages: 2, errors: 0, skippedBytes: 'tail of the old body'.length, truncatedHeads: 1 });
});

test('capture gap inside the request line keeps what was seen', (t) => {
  const p = req();
  const line = 'GET /very/long/path?q=' + 'a'.repeat(100);
  t.deepEqual(p.push(chunk(0, line, 900)), [
    headEv({ kind: 'request', version: '', headers: [], headTruncated: true, method: 'GET', target: line.slice(4) }, 0),
  ]);
  t.true(p.openEnded);
  const r = resp(['GET']);
  t.deepEqual(r.p.push(chunk(0, 'HTTP/1.1 20', 50)), [
    headEv({ kind: 'response', version: '1.1', headers: [], headTruncated: true }, 0),
  ]);
  t.is(r.calls(), 1); // status unknown: treated as a final response
});

test('gap exactly at a message boundary skips the unknown bytes', (t) => {
  const p = req();
  t.deepEqual(p.push(chunk(0, GET, GET.length + 40)), [headEv(reqHead('GET', '/a?x=1', GET_HEADERS), 0), endEv(0, 0, 'none')]);
  t.false(p.inMessage);
  t.is(p.stats.skippedBytes, 40);
  t.is(p.push(chunk(1, 'GET / HTTP/1.1\r\n\r\n')).length, 2);
});

test('content-length body largely uncaptured still ends at the right chunk', (t) => {
  const p = req();
  const head = 'POST /big HTTP/1.1\r\nContent-Length: 100000\r\n\r\n';
  const e0 = p.push(chunk(0, head + 'x'.repeat(512 - head.length), head.length + 60000));
  t.deepEqual(e0, [headEv(reqHead('POST', '/big', [['content-length', '100000']]), 0)]);
  t.false(p.openEnded);
  t.deepEqual(p.push(chunk(1, 'y'.repeat(512), 39999)), []);
  t.true(p.inMessage);
  // the last body byte is the first byte of chunk 2, followed by the next request
  const next = 'GET /n HTTP/1.1\r\n\r\n';
  t.deepEqual(p.push(chunk(2, 'z' + next)), [endEv(2, 100000, 'length'), headEv(reqHead('GET', '/n', []), 2), endEv(2, 0, 'none')]);
});

test('gap inside chunk data is counted; gap hitting chunk framing makes the message open-ended', (t) => {
  const { p } = resp();
  const head = 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n';
  // chunk of 0x100 bytes: 10 captured, the rest inside the gap, then the CRLF + last chunk captured
  t.is(p.push(chunk(0, head + '100\r\n' + 'a'.repeat(10), head.length + 5 + 256)).length, 1);
  t.false(p.openEnded);
  t.deepEqual(p.push(chunk(1, '\r\n0\r\n\r\n')), [endEv(1, 256, 'chunked')]);
  // now a gap that covers the end of the data and the next chunk-size line
  t.is(p.push(chunk(2, head + '4\r\nabcd', head.length + 100)).length, 1);
  t.true(p.openEnded);
  t.deepEqual(p.push(chunk(3, '0\r\n\r\n')), []);
  t.deepEqual(p.finish('peer'), [endEv(3, 4, 'unknown')]);
});

test('unknown method FOO and HTTP/1.0', (t) => {
  const p = req();
  t.deepEqual(p.push(chunk(0, 'FOO /bar HTTP/1.0\r\nX-A: 1\r\n\r\n' + 'M-SEARCH * HTTP/1.1\r\n\r\n' + 'get /lower HTTP/1.1\r\n\r\n')), [
    headEv(reqHead('FOO', '/bar', [['x-a', '1']], { version: '1.0' }), 0),
    endEv(0, 0, 'none'),
    headEv(reqHead('M-SEARCH', '*', []), 0),
    endEv(0, 0, 'none'),
    headEv(reqHead('get', '/lower', []), 0),
    endEv(0, 0, 'none'),
  ]);
});

test('bare LF line endings and empty reason', (t) => {
  const p = req();
  t.deepEqual(p.push(chunk(0, 'POST /lf HTTP/1.1\nHost: h\nContent-Length: 2\n\nok')), [
    headEv(reqHead('POST', '/lf', [['host', 'h'], ['content-length', '2']]), 0),
    endEv(0, 2, 'length'),
  ]);
  const { p: r } = resp();
  t.deepEqual(r.push(chunk(0, 'HTTP/1.1 200\nContent-Length: 0\n\n' + 'HTTP/1.1 500 \r\n\r\n')), [
    headEv(respHead(200, '', [['content-length', '0']]), 0),
    endEv(0, 0, 'length'),
    headEv(respHead(500, '', []), 0),
  ]);
});

test('leading empty lines before a request are tolerated', (t) => {
  const p = req();
  const ev = feed(p, ['POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n', '\r\nGET /b HTTP/1.1\r\n\r\n']);
  t.is(ev.length, 4);
  t.is(p.stats.errors, 0);
});

test('obs-fold continuation is joined', (t) => {
  const p = req();
  t.deepEqual(p.push(chunk(0, 'GET / HTTP/1.1\r\nX-Long: a\r\n  b c \r\n\tmore\r\n\r\n')), [
    headEv(reqHead('GET', '/', [['x-long', 'a b c more']]), 0),
    endEv(0, 0, 'none'),
  ]);
});

// ---- errors and recovery -----------------------------------------------------------------

const MALFORMED: Array<[string, 'request' | 'response', string, string]> = [
  ['not http at all', 'request', 'hello world\r\n\r\n', 'invalid start line'],
  ['HTTP/2 preface', 'request', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'invalid start line'],
  ['missing version', 'request', 'GET /\r\n\r\n', 'invalid start line'],
  ['two spaces', 'request', 'GET  / HTTP/1.1\r\n\r\n', 'invalid start line'],
  ['lower-case version', 'request', 'GET / http/1.1\r\n\r\n', 'invalid start line'],
  ['tls record', 'request', '\x16\x03\x01\x00\xa5\x01\x00', 'invalid start line'],
  ['status 2 digits', 'response', 'HTTP/1.1 20 OK\r\n\r\n', 'invalid start line'],
  ['status 099', 'response', 'HTTP/1.1 099 X\r\n\r\n', 'invalid start line'],
  ['response on request parser', 'request', 'HTTP/1.1 200 OK\r\n\r\n', 'invalid start line'],
  ['request on response parser', 'response', 'GET / HTTP/1.1\r\n\r\n', 'invalid start line'],
  ['header without colon', 'request', 'GET / HTTP/1.1\r\nHostExampleCom\r\n\r\n', 'header line without colon'],
  ['space in header name', 'request', 'GET / HTTP/1.1\r\nHost example.com\r\n\r\n', 'invalid header name'],
  ['space before colon', 'request', 'GET / HTTP/1.1\r\nHost : example.com\r\n\r\n', 'invalid header name'],
  ['empty header name', 'response', 'HTTP/1.1 200 OK\r\n: x\r\n\r\n', 'empty header name'],
  ['request TE not chunked', 'request', 'POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n', 'request transfer-encoding does not end in chunked'],
];

for (const [name, kind, input, reason] of MALFORMED) {
  test(`malformed: ${name} → error, then recovery`, (t) => {
    const p = new Http1Parser({ kind, requestMethod: () => 'GET' });
    t.deepEqual(p.push(chunk(0, input)), [{ type: 'error', reason }]);
    t.is(p.stats.skippedBytes, input.length);
    t.false(p.inMessage);
    // still skipping: a chunk that does not start with a valid start line
    const valid = kind === 'request' ? 'GET /ok HTTP/1.1\r\n\r\n' : 'HTTP/1.1 204 No Content\r\n\r\n';
    t.deepEqual(p.push(chunk(1, 'junk ' + valid)), []);
    t.is(p.stats.skippedBytes, input.length + 5 + valid.length);
    const ev = p.push(chunk(2, valid));
    t.is(ev.length, 2);
    t.is(ev[0]?.type, 'head');
    t.deepEqual(ev[1], endEv(2, 0, 'none'));
    t.is(p.stats.errors, 1);
  });
}

const BAD_CL: Array<[string, string]> = [
  ['abc', 'Content-Length: abc\r\n'],
  ['negative', 'Content-Length: -1\r\n'],
  ['plus sign', 'Content-Length: +5\r\n'],
  ['inner space', 'Content-Length: 1 2\r\n'],
  ['differing list', 'Content-Length: 5, 6\r\n'],
  ['empty', 'Content-Length:\r\n'],
  ['hex', 'Content-Length: 0x10\r\n'],
  ['too large', 'Content-Length: 99999999999999999999\r\n'],
  ['conflicting headers', 'Content-Length: 5\r\nContent-Length: 6\r\n'],
];

for (const [name, hdr] of BAD_CL) {
  test(`invalid Content-Length (${name}) → error`, (t) => {
    const p = req();
    const ev = p.push(chunk(0, `POST / HTTP/1.1\r\n${hdr}\r\nhello`));
    t.is(ev.length, 1);
    t.is(ev[0]?.type, 'error');
    t.regex(ev[0]?.type === 'error' ? ev[0].reason : '', /content-length/);
    t.is(p.stats.errors, 1);
    t.false(p.inMessage);
  });
}

test('identical repeated Content-Length is accepted', (t) => {
  const p = req();
  t.deepEqual(p.push(chunk(0, 'POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 005\r\n\r\nhello')), [
    headEv(reqHead('POST', '/', [['content-length', '5, 5'], ['content-length', '005']]), 0),
    endEv(0, 5, 'length'),
  ]);
});

test('error inside body framing ends the message first', (t) => {
  const { p } = resp();
  const ev = feed(p, ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n', 'zz\r\n']);
  t.deepEqual(ev, [
    headEv(respHead(200, 'OK', [['transfer-encoding', 'chunked']]), 0),
    endEv(0, 3, 'unknown'),
    { type: 'error', reason: 'invalid chunk size' },
  ]);
  t.is(p.stats.skippedBytes, 4);
  // missing CRLF after chunk data
  const r2 = resp();
  const ev2 = r2.p.push(chunk(0, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n'));
  t.deepEqual(ev2.slice(1), [endEv(0, 3, 'unknown'), { type: 'error', reason: 'missing CRLF after chunk data' }]);
  // absurd chunk size
  const r3 = resp();
  const ev3 = r3.p.push(chunk(0, 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n'));
  t.deepEqual(ev3.slice(1), [endEv(0, 0, 'unknown'), { type: 'error', reason: 'chunk size too large' }]);
});

test('first chunk of a connection seen mid-stream → error, resync at next start line', (t) => {
  const { p } = resp(['GET']);
  const ev = feed(p, ['dy of a response we joined late', 'more', NOTFOUND]);
  t.deepEqual(ev, [{ type: 'error', reason: 'invalid start line' }, headEv(NOTFOUND_HEAD, 2), endEv(2, 3, 'length')]);
  t.deepEqual(p.stats, { messages: 1, errors: 1, skippedBytes: 31 + 4, truncatedHeads: 0 });
});

test('garbage after a complete message in the same chunk → error', (t) => {
  const p = req();
  const ev = p.push(chunk(0, GET + '\x00\x01\x02'));
  t.deepEqual(ev, [headEv(reqHead('GET', '/a?x=1', GET_HEADERS), 0), endEv(0, 0, 'none'), { type: 'error', reason: 'invalid start line' }]);
  t.is(p.stats.skippedBytes, 3);
});

// ---- limits ------------------------------------------------------------------------------

test('maxHeaders: extra headers dropped, framing still honoured', (t) => {
  const p = req({ maxHeaders: 3 });
  const m = 'POST /h HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nContent-Length: 4\r\n\r\nbody';
  t.deepEqual(p.push(chunk(0, m + 'GET / HTTP/1.1\r\n\r\n')), [
    headEv(reqHead('POST', '/h', [['a', '1'], ['b', '2'], ['c', '3']], { headTruncated: true }), 0),
    endEv(0, 4, 'length'),
    headEv(reqHead('GET', '/', []), 0),
    endEv(0, 0, 'none'),
  ]);
  t.is(p.stats.truncatedHeads, 1);
});

test('maxHeadBytes: head emitted truncated at the limit, framing still honoured, stays in sync', (t) => {
  const p = req({ maxHeadBytes: 64 });
  const big = 'X-Big: ' + 'v'.repeat(200) + '\r\n';
  const m = 'POST /limit HTTP/1.1\r\nHost: h\r\n' + big + 'Content-Length: 3\r\n\r\nabc';
  const events = feed(p, [m.slice(0, 40), m.slice(40, 150), m.slice(150)]);
  t.deepEqual(events, [
    // the head crossed 64 bytes inside chunk 1; its ts is still the first chunk's
    headEv(reqHead('POST', '/limit', [['host', 'h']], { headTruncated: true }), 0),
    endEv(2, 3, 'length'),
  ]);
  t.true(p.bufferedBytes <= 128);
  t.deepEqual(p.push(chunk(3, 'GET / HTTP/1.1\r\n\r\n')).length, 2);
  t.is(p.stats.truncatedHeads, 1);
});

test('maxHeadBytes: oversized framing header line → framing unknown', (t) => {
  const p = req({ maxHeadBytes: 32 });
  const m = 'POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ' + 'gzip, '.repeat(10) + 'chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n';
  const ev = p.push(chunk(0, m));
  t.deepEqual(ev, [headEv(reqHead('POST', '/x', [['host', 'h']], { headTruncated: true }), 0)]);
  t.true(p.openEnded);
  t.deepEqual(p.finish('peer', 1n), [endEv(1n, 0, 'unknown')]);
});

test('maxHeadBytes: a head that never ends stays bounded', (t) => {
  const p = req({ maxHeadBytes: 1024 });
  const ev = p.push(chunk(0, 'GET / HTTP/1.1\r\n'));
  t.deepEqual(ev, []);
  let heads = 0;
  for (let i = 1; i < 500; i++) {
    for (const e of p.push(chunk(i, `X-H-${i}: ${'z'.repeat(100)}\r\n`))) if (e.type === 'head') heads++;
    t.true(p.bufferedBytes <= 2048);
  }
  t.is(heads, 1);
  t.true(p.inMessage);
  t.false(p.openEnded);
  t.deepEqual(p.finish('close', 9n), [endEv(9n, 0, 'unknown')]);
});

test('a start line longer than maxHeadBytes', (t) => {
  const p = req({ maxHeadBytes: 32 });
  const target = '/' + 'p'.repeat(100);
  const ev = p.push(chunk(0, `GET ${target} HTTP/1.1\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n`));
  t.deepEqual(ev, [
    headEv({ kind: 'request', version: '', headers: [], headTruncated: true, method: 'GET', target: target.slice(0, 32 - 4) }, 0),
    endEv(0, 2, 'length'),
    headEv(reqHead('GET', '/', []), 0),
    endEv(0, 0, 'none'),
  ]);
});

test('finish semantics', (t) => {
  const p = req();
  t.deepEqual(p.finish('peer'), []);
  t.deepEqual(p.push(chunk(0, 'GET /partial HTTP/1.1\r\nHo')), []);
  t.false(p.inMessage);
  t.deepEqual(p.finish('peer'), []); // a partial head is not a message yet: untouched
  t.deepEqual(p.push(chunk(1, 'st: h\r\n\r\n')), [headEv(reqHead('GET', '/partial', [['host', 'h']]), 0), endEv(1, 0, 'none')]);
  t.deepEqual(p.push(chunk(2, 'GET /x HTTP/1.1\r\n')), []);
  t.deepEqual(p.finish('close'), []); // dropped
  t.is(p.stats.skippedBytes, 17);
  // finish of a Content-Length body cut short reports its declared framing and bytes so far
  const q = req();
  q.push(chunk(0, 'PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc'));
  t.deepEqual(q.finish('close'), [endEv(0, 3, 'length')]);
});

// ---- sniffing ----------------------------------------------------------------------------

const SNIFF: Array<[string, 'request' | 'response', boolean]> = [
  ['GET / HTTP/1.1\r\n', 'request', true],
  ['FOO /x HTTP/1.0\n', 'request', true],
  ['GET /only-a-prefix-of-a-long-url', 'request', true],
  ['GET /', 'request', true],
  ['GET ', 'request', false],
  ['GET', 'request', false],
  ['CONNECT host:443 HTTP/1.1\r\n', 'request', true],
  ['GET / HTTP/2.0\r\n', 'request', false],
  ['GET / HTTP/1.1 extra\r\n', 'request', false],
  ['GET /a b HTTP/1.1\r\n', 'request', false],
  ['PRI * HTTP/2.0\r\n', 'request', false],
  ['HTTP/1.1 200 OK\r\n', 'request', false],
  ['HTTP/1.1 200 OK\r\n', 'response', true],
  ['HTTP/1.0 404\r\n', 'response', true],
  ['HTTP/1.1', 'response', true],
  ['HTTP/1.', 'response', false],
  ['HTTP/2 200\r\n', 'response', false],
  ['HTTP/1.1 2000 OK\r\n', 'response', false],
  ['\x16\x03\x01', 'response', false],
  ['', 'request', false],
  ['\r\nGET / HTTP/1.1\r\n', 'request', false],
];

for (const [input, kind, expected] of SNIFF) {
  test(`looksLikeHttp1(${JSON.stringify(input)}, ${kind}) = ${expected}`, (t) => {
    t.is(looksLikeHttp1(bytes(input), kind), expected);
  });
}

// ---- robustness --------------------------------------------------------------------------

test('binary garbage: 1000 seeded iterations never throw, state bounded, invariants hold', (t) => {
  const r = rng(0x5eed);
  let nonEmpty = 0;
  for (let it = 0; it < 1000; it++) {
    const kind = r() < 0.5 ? 'request' : 'response';
    const maxHeadBytes = r() < 0.5 ? 64 + Math.floor(r() * 512) : 16384;
    const p = new Http1Parser({ kind, maxHeadBytes, maxHeaders: 1 + Math.floor(r() * 10), requestMethod: () => (r() < 0.1 ? 'HEAD' : r() < 0.1 ? 'CONNECT' : 'GET') });
    const events: Http1Event[] = [];
    const nChunks = 1 + Math.floor(r() * 20);
    for (let c = 0; c < nChunks; c++) {
      const n = Math.floor(r() * 600);
      const data = new Uint8Array(n);
      // mostly random bytes; sometimes biased to ASCII / HTTP-ish tokens to get deeper
      const mode = r();
      for (let i = 0; i < n; i++) {
        if (mode < 0.5) data[i] = Math.floor(r() * 256);
        else data[i] = ' \r\n:0123456789abcdefABCDEF;/HTTP.1GETx'.charCodeAt(Math.floor(r() * 39));
      }
      if (mode > 0.8 && n > 20) data.set(bytes(kind === 'request' ? 'GET / HTTP/1.1\r\n' : 'HTTP/1.1 200 OK\r\n'));
      const length = r() < 0.3 ? n + Math.floor(r() * 5000) : n;
      const ch: Chunk = { data, length, tsStart: BigInt(c * 2), tsEnd: BigInt(c * 2 + 1) };
      events.push(...p.push(ch));
      if (r() < 0.1) events.push(...p.finish(r() < 0.5 ? 'peer' : 'close'));
      t.true(p.bufferedBytes <= 2 * maxHeadBytes, 'bounded buffer');
    }
    if (events.length > 0) nonEmpty++;
    checkInvariants(t, events, p);
  }
  t.true(nonEmpty > 500);
});

test('mutated valid traffic with random splits and gaps: never throws, invariants hold', (t) => {
  const r = rng(42);
  const reqStream = GET + POST + 'POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n';
  const respStream = CHUNKED + NOTFOUND + 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n';
  for (let it = 0; it < FUZZ_N; it++) {
    const kind = it % 2 === 0 ? 'request' : 'response';
    const src = bytes(kind === 'request' ? reqStream : respStream).slice();
    const flips = Math.floor(r() * 4);
    for (let f = 0; f < flips; f++) src[Math.floor(r() * src.length)] = Math.floor(r() * 256);
    const p = new Http1Parser({ kind, maxHeadBytes: r() < 0.3 ? 40 : 16384, requestMethod: () => 'GET' });
    const events: Http1Event[] = [];
    let pos = 0;
    let c = 0;
    while (pos < src.length) {
      const n = 1 + Math.floor(r() * 80);
      const captured = r() < 0.15 ? Math.floor(r() * n) : n;
      const end = Math.min(src.length, pos + n);
      events.push(...p.push({ data: src.subarray(pos, Math.min(end, pos + captured)), length: end - pos, tsStart: BigInt(c), tsEnd: BigInt(c) }));
      if (p.openEnded && r() < 0.5) events.push(...p.finish('peer'));
      pos = end;
      c++;
    }
    events.push(...p.finish('close'));
    t.false(p.inMessage);
    checkInvariants(t, events, p);
  }
});

test('random splits without gaps give the same events as one chunk', (t) => {
  const r = rng(7);
  const streams: Array<['request' | 'response', string]> = [
    ['request', GET + POST + 'POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' + 'FOO /f HTTP/1.0\n\n'],
    ['response', CHUNKED + NOTFOUND + 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n' + 'HTTP/1.1 200 OK\r\n\r\ntail'],
  ];
  const strip = (evs: Http1Event[]): unknown[] => evs.map((e) => (e.type === 'error' ? e : e.type === 'head' ? e.head : { b: e.bodyBytes, f: e.framing }));
  for (const [kind, s] of streams) {
    const whole = new Http1Parser({ kind, requestMethod: () => 'GET' });
    const expected = strip([...whole.push(chunk(0, s)), ...whole.finish('close')]);
    for (let it = 0; it < 300; it++) {
      const p = new Http1Parser({ kind, requestMethod: () => 'GET' });
      const parts: string[] = [];
      let pos = 0;
      while (pos < s.length) {
        const n = 1 + Math.floor(r() * 30);
        parts.push(s.slice(pos, pos + n));
        pos += n;
      }
      t.deepEqual(strip([...feed(p, parts), ...p.finish('close')]), expected);
    }
  }
});

test('malformed chunk inputs never throw', (t) => {
  const p = req();
  const weird = [
    { data: new Uint8Array(0), length: 0, tsStart: 0n, tsEnd: 0n },
    { data: bytes('GET'), length: -5, tsStart: 0n, tsEnd: 0n },
    { data: bytes(' / HTTP/1.1\r\n\r\n'), length: Number.NaN, tsStart: 0n, tsEnd: 0n },
    { data: bytes('x'), length: 0.5, tsStart: 1n, tsEnd: 1n },
  ];
  const events: Http1Event[] = [];
  for (const w of weird) {
    t.notThrows(() => {
      events.push(...p.push(w as Chunk));
    });
  }
  t.deepEqual(events.map((e) => e.type), ['head', 'end']);
  t.notThrows(() => p.push({ data: null, length: 3, tsStart: 0n, tsEnd: 0n } as unknown as Chunk));
  t.notThrows(() => p.finish('close'));
  const throwing = new Http1Parser({
    kind: 'response',
    requestMethod: () => {
      throw new Error('boom');
    },
  });
  t.deepEqual(throwing.push(chunk(0, 'HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx')).length, 2);
});
