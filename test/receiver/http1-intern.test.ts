import test from 'ava';
import { Http1Parser, internStats, type Http1Event, type HttpHead } from '../../src/receiver/http1.js';
import { rngUnit } from '../helpers/hostile.js';

function heads(events: Http1Event[]): HttpHead[] {
  return events.filter((e): e is Extract<Http1Event, { type: 'head' }> => e.type === 'head').map((e) => e.head);
}

test('header names and values from the string table are exactly the bytes sent (names lower-cased), message after message', (t) => {
  const r = rngUnit(7);
  const p = new Http1Parser({ kind: 'request' });
  const names = ['Host', 'HOST', 'host', 'X-A', 'x-a', 'X-B', 'Content-Type', 'content-type', 'X-Long-' + 'n'.repeat(60)];
  const values = ['127.0.0.1:8080', '127.0.0.1:8081', 'a', 'b', '', 'caf\xe9', 'caf\xe8', 'v'.repeat(47), 'v'.repeat(48), 'v'.repeat(49), 'w'.repeat(200)];
  const methods = ['GET', 'GOT', 'POST', 'PATCH', 'X'];
  const hits0 = internStats.hits;
  for (let m = 0; m < 3000; m++) {
    const hs: Array<[string, string]> = [];
    const n = 1 + Math.floor(r() * 6);
    for (let i = 0; i < n; i++) {
      // random strings too, so slots are taken over by other strings again and again
      const name = r() < 0.8 ? names[Math.floor(r() * names.length)]! : `X-${Math.floor(r() * 5000)}`;
      const value = r() < 0.8 ? values[Math.floor(r() * values.length)]! : `${Math.floor(r() * 100000)}`;
      hs.push([name, value]);
    }
    const method = methods[Math.floor(r() * methods.length)]!;
    const text = `${method} /${m} HTTP/1.1\r\n${hs.map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
    const got = heads(p.push({ data: new Uint8Array(Buffer.from(text, 'latin1')), length: text.length, tsStart: 1n, tsEnd: 2n }));
    if (got.length !== 1) {
      t.fail(`message ${m}: ${got.length} heads`);
      return;
    }
    const h = got[0]!;
    const want = hs.map(([k, v]) => [k.toLowerCase(), v]);
    if (h.method !== method || JSON.stringify(h.headers) !== JSON.stringify(want)) {
      t.deepEqual({ method: h.method, headers: h.headers }, { method, headers: want }, `message ${m}`);
      return;
    }
  }
  t.true(internStats.hits - hits0 > 1000, 'the string table was used');
});

test('credential header values are decoded as they are', (t) => {
  const p = new Http1Parser({ kind: 'request' });
  const text = 'GET / HTTP/1.1\r\nAuthorization: Bearer abc\r\nCookie: a=b\r\n\r\n';
  for (let i = 0; i < 2; i++) {
    const [h] = heads(p.push({ data: new Uint8Array(Buffer.from(text, 'latin1')), length: text.length, tsStart: 1n, tsEnd: 2n }));
    t.deepEqual(h?.headers, [
      ['authorization', 'Bearer abc'],
      ['cookie', 'a=b'],
    ]);
  }
});
