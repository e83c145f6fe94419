/**
 * The receiver's pure parts: OTLP/JSON ⇄ protobuf with the vendored protos (nothing lost,
 * 64-bit values exact, hex ids), batching by concatenation, partial-success checks, the
 * /proc/net/tcp address parser, and the token buckets.
 */
import test from 'ava';
import { decodeJson, decodeProto, encodeProto, encodeResponse, encodeStatus, retryDelayMs, toJson, SIGNAL_INFO } from '../../src/ingest/codec.js';
import { addAbsent, countItems, hasHopSpans, rejectInvalid, resources } from '../../src/ingest/model.js';
import { normalizeIp, parseProcAddress, Senders } from '../../src/ingest/senders.js';

const FULL = {
  resourceSpans: [
    {
      resource: { attributes: [{ key: 'service.name', value: { stringValue: 'a' } }], droppedAttributesCount: 1 },
      schemaUrl: 'https://opentelemetry.io/schemas/1.26.0',
      scopeSpans: [
        {
          scope: { name: 's', version: '1', attributes: [{ key: 'k', value: { boolValue: false } }] },
          spans: [
            {
              traceId: '5b8efff798038103d269b633813fc60c',
              spanId: 'eee19b7ec3c1b174',
              parentSpanId: 'eee19b7ec3c1b173',
              traceState: 'vendor=x',
              flags: 257,
              name: 'n',
              kind: 3,
              startTimeUnixNano: '18446744073709551615',
              endTimeUnixNano: '1700000000000000001',
              attributes: [
                { key: 'i', value: { intValue: '-9223372036854775808' } },
                { key: 'b', value: { bytesValue: 'AAEC/w==' } },
                { key: 'd', value: { doubleValue: 1.5 } },
              ],
              droppedAttributesCount: 2,
              events: [{ timeUnixNano: '1700000000000000000', name: 'e', attributes: [{ key: 'x', value: { stringValue: 'y' } }] }],
              links: [{ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceState: 't=1', flags: 1 }],
              status: { code: 2, message: 'boom' },
            },
          ],
          schemaUrl: 'https://opentelemetry.io/schemas/1.26.0',
        },
      ],
    },
  ],
};

test('OTLP/JSON → protobuf → OTLP/JSON keeps every field, 64-bit values exact, ids hex', (t) => {
  const bytes = encodeProto('traces', decodeJson('traces', JSON.stringify(FULL)));
  const back = JSON.parse(toJson(SIGNAL_INFO.traces.request, decodeProto('traces', bytes))) as unknown;
  t.deepEqual(back, FULL);
});

test('two encoded requests concatenated are one request with both resources (how batches are built)', (t) => {
  const a = encodeProto('traces', decodeJson('traces', JSON.stringify(FULL)));
  const b = encodeProto('traces', decodeJson('traces', JSON.stringify(FULL)));
  const m = decodeProto('traces', Buffer.concat([a, b]));
  t.is(countItems('traces', m), 2);
  t.is(resources('traces', m).length, 2);
});

test('bad input is named: not JSON, not an object, bad hex at its path, undecodable protobuf', (t) => {
  t.throws(() => decodeJson('logs', '{'), { message: /ExportLogsServiceRequest: invalid JSON/ });
  t.throws(() => decodeJson('logs', '[]'), { message: /JSON body must be an object/ });
  t.throws(() => decodeJson('traces', JSON.stringify({ resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: 'xyz' }] }] }] })), {
    message: 'resourceSpans[0].scopeSpans[0].spans[0].traceId: "xyz" is not a hex string',
  });
  t.throws(() => decodeProto('metrics', Buffer.from([0x0a, 0x05, 0x01])), { message: /ExportMetricsServiceRequest: undecodable protobuf/ });
});

test('rejectInvalid drops spans with bad ids and says which; log records may have no ids', (t) => {
  const m = decodeJson(
    'traces',
    JSON.stringify({
      resourceSpans: [{ scopeSpans: [{ spans: [{ traceId: '00000000000000000000000000000000', spanId: 'eee19b7ec3c1b174' }, { traceId: '5b8efff798038103d269b633813fc60c', spanId: 'ee' }, FULL.resourceSpans[0]!.scopeSpans[0]!.spans[0]] }] }],
    }),
  );
  t.deepEqual(rejectInvalid('traces', m), { rejected: 2, message: 'resourceSpans[0].scopeSpans[0].spans[0]: trace id is all zero (invalid) (and 1 more spans rejected)' });
  t.is(countItems('traces', m), 1);
  t.true(hasHopSpans(m));
  const l = decodeJson('logs', JSON.stringify({ resourceLogs: [{ scopeLogs: [{ logRecords: [{ body: { stringValue: 'x' } }, { traceId: 'abcd' }] }] }] }));
  t.deepEqual(rejectInvalid('logs', l), { rejected: 1, message: 'resourceLogs[0].scopeLogs[0].logRecords[1]: trace id must be empty or 16 bytes, got 2' });
});

test('addAbsent never overwrites; metrics count data points', (t) => {
  const r = { attributes: [{ key: 'service.name', value: { stringValue: 'mine' } }] };
  t.is(addAbsent(r, { 'service.name': 'other', 'k8s.pod.name': 'p', 'process.pid': 7 }), 2);
  t.deepEqual(r.attributes, [
    { key: 'service.name', value: { stringValue: 'mine' } },
    { key: 'k8s.pod.name', value: { stringValue: 'p' } },
    { key: 'process.pid', value: { intValue: 7 } },
  ]);
  const m = decodeJson('metrics', JSON.stringify({ resourceMetrics: [{ scopeMetrics: [{ metrics: [{ name: 'a', gauge: { dataPoints: [{ asInt: '1' }, { asInt: '2' }] } }, { name: 'b', histogram: { dataPoints: [{ count: '1' }] } }] }] }] }));
  t.is(countItems('metrics', m), 3);
});

test('responses: empty on success, partialSuccess otherwise; Status carries RetryInfo', (t) => {
  t.is(encodeResponse('traces', 0, '', false).length, 0);
  t.is(Buffer.from(encodeResponse('logs', 0, '', true)).toString(), '{}');
  t.is(Buffer.from(encodeResponse('metrics', 3, 'bad', true)).toString(), '{"partialSuccess":{"rejectedDataPoints":"3","errorMessage":"bad"}}');
  t.is(retryDelayMs(encodeStatus(14, 'full', 2500)), 2500);
  t.is(retryDelayMs(encodeStatus(3, 'bad')), undefined);
  t.deepEqual(JSON.parse(Buffer.from(encodeStatus(14, 'full', 1000, true)).toString()) as unknown, {
    code: 14,
    message: 'full',
    details: [{ '@type': 'type.googleapis.com/google.rpc.RetryInfo', retryDelay: '1.000s' }],
  });
});

test('/proc/net/tcp addresses: IPv4, IPv6, v4-mapped; peer address normalisation', (t) => {
  t.deepEqual(parseProcAddress('0100007F:1F90'), ['127.0.0.1', 8080]);
  t.deepEqual(parseProcAddress('00000000000000000000000001000000:0050'), ['::1', 80]);
  t.deepEqual(parseProcAddress('0000000000000000FFFF00000100007F:10E1'), ['127.0.0.1', 4321]);
  t.deepEqual(parseProcAddress('B80D0120000000000000000001000000:01BB'), ['2001:db8::1', 443]);
  t.is(parseProcAddress('nonsense'), undefined);
  t.is(normalizeIp('::ffff:10.1.2.3'), '10.1.2.3');
});

test('token buckets: one second of burst per sender, then a retry delay; the total bucket caps everyone', (t) => {
  const s = new Senders({ maxConnections: 16, maxSenders: 2, senderBytesPerSecond: 1000, totalBytesPerSecond: 1500 });
  t.is(s.admit('a', 800, 0), 0);
  t.is(s.admit('a', 800, 0), 600); // 200 left: 600 bytes at 1000/s
  t.is(s.admit('a', 800, 600), 0);
  t.true(s.admit('b', 800, 600) > 0, 'the total bucket is spent');
  t.is(s.stats.throttledSender, 1);
  t.is(s.stats.throttledTotal, 1);
  s.admit('c', 1, 5000);
  s.admit('d', 1, 5000);
  t.true(s.stats.sendersEvicted >= 1, 'bounded, counted');
  s.noteSdkSender(42, 0);
  t.true(s.isSdkSender(42, 1000));
  t.false(s.isSdkSender(42, 11 * 60_000), 'forgotten after its TTL');
});
