import test from 'ava';
import { ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import { toReadableSpan } from '../../src/otlp/convert.js';
import { assembleTraceRequest, encodeSpan, encodeTraceRequest, kvCacheStats, memoStats, type RequestBuffer, type SpanWithResource } from '../../src/otlp/encode.js';
import type { AttrValue, SidelightSpan } from '../../src/receiver/span.js';
import { rngUnit } from '../helpers/hostile.js';

/** The reference: what the OpenTelemetry transformer makes of the same spans. */
function reference(items: SpanWithResource[]): Buffer {
  const b = ProtobufTraceSerializer.serializeRequest(items.map((i) => toReadableSpan(i.span, i.resource)));
  if (!b) throw new Error('reference serializer returned nothing');
  return Buffer.from(b);
}

function span(i: number, over: Partial<SidelightSpan> = {}): SidelightSpan {
  return {
    kind: 'server',
    name: 'GET',
    startUnixNs: 1_764_000_000_123_456_789n + BigInt(i) * 1000n,
    endUnixNs: 1_764_000_000_124_456_789n + BigInt(i) * 1000n,
    attributes: { 'http.request.method': 'GET', 'http.response.status_code': 200, 'url.path': `/p/${i}` },
    status: { code: 'unset' },
    process: { tgid: 1, tid: 1, comm: 'x', cgroupId: 0n },
    traceId: '0af7651916cd43dd8448eb211c80319c',
    spanId: 'b7ad6b7169203331',
    traceFlags: 1,
    ...over,
  };
}

const r1 = resourceFromAttributes({ 'service.name': 'nginx', 'process.pid': 42, 'host.name': 'h' });
const r2 = resourceFromAttributes({ 'service.name': 'wrk', 'telemetry.distro.name': 'sidelight', 'k8s.pod.name': 'pöd-ü' }, { schemaUrl: 'https://opentelemetry.io/schemas/1.30.0' });

test('byte for byte the transformer’s encoding: kinds, parents, status, tracestate, flags', (t) => {
  const items: SpanWithResource[] = [
    { span: span(0), resource: r1 },
    { span: span(1, { kind: 'client', parentSpanId: '00f067aa0ba902b7', traceFlags: 3 }), resource: r2 },
    { span: span(2, { kind: 'internal', status: { code: 'error', message: 'boom' } }), resource: r1 },
    { span: span(3, { status: { code: 'error' }, traceState: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' }), resource: r2 },
    { span: span(4, { traceFlags: 0, endUnixNs: 1n }), resource: r1 }, // end before start: clamped
    { span: span(5, { name: 'ünïcödé ' + 'x'.repeat(300) }), resource: r2 },
  ];
  t.deepEqual(Buffer.from(encodeTraceRequest(items)), reference(items));
});

test('byte for byte: every attribute value type and length class', (t) => {
  const attrs: Record<string, AttrValue> = {
    s: 'v',
    empty: '',
    long: 'y'.repeat(200),
    longer: 'z'.repeat(20_000), // 3-byte length varints, nested
    utf8: 'grüße \u{1F600}',
    lone: 'a\uD800b', // a lone surrogate: U+FFFD either way
    int0: 0,
    int: 8080,
    neg: -1,
    negBig: -(2 ** 40),
    big: 2 ** 40,
    huge: 2 ** 60,
    dbl: 1.5,
    nan: Number.NaN,
    inf: Number.POSITIVE_INFINITY,
    t: true,
    f: false,
    arr: ['a', 'bb', ''],
    none: [],
  };
  const items = [{ span: span(0, { attributes: attrs }), resource: r1 }];
  t.deepEqual(Buffer.from(encodeTraceRequest(items)), reference(items));
});

test('byte for byte: spans grouped per resource in first-seen order, big batch', (t) => {
  const resources: Resource[] = Array.from({ length: 7 }, (_, i) => resourceFromAttributes({ 'service.name': `svc-${i}`, 'process.pid': i }));
  const items: SpanWithResource[] = [];
  for (let i = 0; i < 600; i++) {
    const s = span(i, {
      kind: i % 2 ? 'client' : 'server',
      attributes: { 'url.full': `http://127.0.0.1:8080/${'q'.repeat(i % 150)}`, 'server.port': 8080, n: i },
    });
    delete s.traceId;
    delete s.spanId;
    delete s.traceFlags; // filled by the encoder, as toReadableSpan fills them
    items.push({ span: s, resource: resources[(i * 5) % 7]! });
  }
  const mine = Buffer.from(encodeTraceRequest(items));
  t.truthy(items.every((i) => /^[0-9a-f]{32}$/.test(i.span.traceId!) && /^[0-9a-f]{16}$/.test(i.span.spanId!)));
  t.deepEqual(mine, reference(items));
  // the resource encoding is cached: a second request is identical and independent of the first
  const again = encodeTraceRequest(items);
  t.deepEqual(Buffer.from(again), mine);
  t.not(again.buffer, mine.buffer);
});

test('an empty batch encodes to an empty request, as the transformer does', (t) => {
  t.deepEqual(Buffer.from(encodeTraceRequest([])), reference([]));
});

test('cached attribute fields: repeated values written from the cache, a key with many values turns varying; bytes unchanged', (t) => {
  const hits = kvCacheStats.hits;
  const varying = kvCacheStats.varyingKeys;
  // 'test.repeat' takes 3 values over and over (cached), 'test.vary' a new value per span (varying after 64)
  const items: SpanWithResource[] = [];
  for (let i = 0; i < 200; i++) {
    items.push({ span: span(i, { attributes: { 'test.repeat': ['a', 'bb', 'ccc'][i % 3]!, 'test.vary': `v${i}`, 'test.num': i % 2, 'test.bool': i % 2 === 0, 'test.arr': ['x', String(i)] } }), resource: i % 2 ? r1 : r2 });
  }
  t.deepEqual(Buffer.from(encodeTraceRequest(items)), reference(items));
  t.deepEqual(Buffer.from(encodeTraceRequest(items)), reference(items), 'again, now mostly from the cache');
  t.true(kvCacheStats.hits - hits >= 2 * 200 * 3 - 3 * 8, `hits ${kvCacheStats.hits - hits}`);
  t.is(kvCacheStats.varyingKeys - varying, 1, 'test.vary only');
  t.true(kvCacheStats.bytes > 0 && kvCacheStats.bytes <= 1 << 20);
});

test('byte for byte: spans encoded one by one into shared slabs, sizes from a few bytes to past a slab (growth and new slabs), assembled later', (t) => {
  const r1 = resourceFromAttributes({ 'service.name': 'slab' });
  const items: SpanWithResource[] = [];
  const sizes = [10, 3000, 5000, 70_000, 20, 4000, 150_000, 1, 60_000, 3900, 4100, 9];
  for (let round = 0; round < 3; round++) {
    for (const [i, n] of sizes.entries()) items.push({ span: span(round * 100 + i, { attributes: { 'url.full': `http://h/${'s'.repeat(n)}` } }), resource: r1 });
  }
  // each span as the pipeline queues it (encoded now, assembled when the batch goes)
  const encoded = items.map((i) => encodeSpan(i.span, i.resource));
  t.deepEqual(Buffer.from(assembleTraceRequest(encoded)), reference(items));
});

test('byte for byte: requests assembled into a reused buffer, smaller and larger than the last (it grows, then is reused), two buffers in turn', (t) => {
  const reuse: RequestBuffer = {};
  const other: RequestBuffer = {};
  let grew = 0;
  let reused = 0;
  for (const [k, n] of [200, 5, 3000, 1, 3000, 40, 9000, 7].entries()) {
    const items: SpanWithResource[] = [];
    for (let i = 0; i < n; i++) items.push({ span: span(k * 10_000 + i, { attributes: { 'url.path': `/r/${k}/${i}`, 'x.pad': 'p'.repeat(i % 97) } }), resource: i % 3 === 0 ? r2 : r1 });
    const into = k % 3 === 2 ? other : reuse;
    const before = into.buf;
    const body = assembleTraceRequest(items.map((i) => encodeSpan(i.span, i.resource)), into);
    if (before === undefined || into.buf !== before) grew++;
    else reused++;
    t.is(body.buffer, into.buf!.buffer, 'a view of the kept buffer');
    t.deepEqual(Buffer.from(body), reference(items), `request ${k} (${n} spans)`);
  }
  t.true(reused >= 3 && grew >= 2, `${reused} reused, ${grew} made or grown`);
  // without `reuse`: bytes of its own every time
  const items = [{ span: span(1), resource: r1 }];
  const a = assembleTraceRequest(items.map((i) => encodeSpan(i.span, i.resource)));
  const b = assembleTraceRequest(items.map((i) => encodeSpan(i.span, i.resource)));
  const copy = Buffer.from(b);
  a.fill(0);
  t.deepEqual(Buffer.from(b), copy);
});

test('byte for byte: spans of one source share an attribute memo; repeats, changes at any position, more and fewer keys, arrays, big values, many keys', (t) => {
  const r = rngUnit(5);
  const memos = [{}, {}, {}];
  const shared = ['a', 'b'];
  const keys = ['http.request.method', 'http.response.status_code', 'network.peer.address', 'network.peer.port', 'url.path', 'user_agent.original', 'x.bool', 'x.arr', 'x.big', 'x.float'];
  const values: AttrValue[][] = [['GET', 'POST'], [200, 404, 500], ['127.0.0.1', '::1'], [40000, 40001, 0], ['/', '/a', '/p/1', `/${'l'.repeat(3000)}`], ['curl/8', 'wrk'], [true, false], [shared, ['x']], ['s', 'B'.repeat(5000)], [1.5, -0, Number.NaN]];
  const before = memoStats.fields;
  const copy = (e: { chunk: Buffer; off: number; len: number }): Buffer => Buffer.from(e.chunk.subarray(e.off, e.off + e.len));
  for (let i = 0; i < 600; i++) {
    const attributes: Record<string, AttrValue> = {};
    const n = r() < 0.9 ? 6 : Math.floor(r() * keys.length) + 1;
    for (let k = 0; k < n; k++) {
      const vs = values[k]!;
      // mostly the first value (repeats), sometimes another
      attributes[keys[k]!] = r() < 0.8 ? vs[0]! : vs[Math.floor(r() * vs.length)]!;
    }
    if (i % 50 === 7) for (let k = 0; k < 80; k++) attributes[`many.${k}`] = k; // past the memo's key bound
    if (i % 3 === 0) shared.push(String(i)); // the same array object, other contents
    const s = span(i, { attributes });
    const plain = copy(encodeSpan(s, r1));
    const memo = copy(encodeSpan({ ...s, encodeMemo: memos[i % 3]! }, r1));
    if (!plain.equals(memo)) {
      t.deepEqual(memo, plain, `span ${i}`);
      return;
    }
  }
  // the same array object in every span, its contents changed in between
  const arrMemo = {};
  for (let i = 0; i < 5; i++) {
    shared.push(`n${i}`);
    const s = span(i, { attributes: { 'http.request.method': 'GET', 'x.arr': shared } });
    t.deepEqual(copy(encodeSpan({ ...s, encodeMemo: arrMemo }, r1)), copy(encodeSpan(s, r1)), `array span ${i}`);
  }
  t.true(memoStats.fields - before > 1500, `fields from the memo: ${memoStats.fields - before}`);
  // and the plain path is the transformer's (the tests above): one more check of a memo'd run against it
  const items = Array.from({ length: 20 }, (_, i) => ({ span: span(i % 4), resource: r1 }));
  const m = {};
  const encoded = items.map((it) => encodeSpan({ ...it.span, encodeMemo: m }, it.resource));
  t.deepEqual(Buffer.from(assembleTraceRequest(encoded)), reference(items));
});
