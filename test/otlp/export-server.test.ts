/**
 * The export path against a scripted OTLP server (test/helpers/otlpserver.ts, real grpc-js and
 * node:http servers): every gRPC code and the HTTP statuses classified by the OTLP retry
 * rules, RetryInfo / Retry-After used as the next delay, partial success counted and logged
 * once, gzip on by default, metric exports through the same transport.
 */
import test from 'ava';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AggregationTemporality, DataPointType } from '@opentelemetry/sdk-metrics';
import { ValueType } from '@opentelemetry/api';
import { ExportResultCode } from '@opentelemetry/core';
import { ExportPipeline } from '../../src/otlp/pipeline.js';
import { OtlpMetricExporter } from '../../src/otlp/metricexporter.js';
import { OtlpSink, type ExportOutcome, type TracesExportConfig } from '../../src/otlp/sinks.js';
import { toReadableSpan } from '../../src/otlp/convert.js';
import { parseRetryAfter, retryDelayFromStatus } from '../../src/otlp/rpcstatus.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { encodeStatus, makeTestCert, startOtlpServer, type Answer } from '../helpers/otlpserver.js';

const resource = resourceFromAttributes({ 'service.name': 'export-test' });
function span(i: number): SidelightSpan {
  return {
    kind: 'server',
    name: 'GET /x',
    startUnixNs: 1_700_000_000_000_000_000n + BigInt(i),
    endUnixNs: 1_700_000_000_002_000_000n + BigInt(i),
    attributes: { 'http.request.method': 'GET', i },
    status: { code: 'unset' },
    process: { tgid: 1, tid: 1, comm: 'x', cgroupId: 0n },
  };
}

function cfg(url: string, protocol: TracesExportConfig['protocol'], extra: Partial<TracesExportConfig> = {}): TracesExportConfig {
  return { url, protocol, headers: { 'x-tenant': 'a' }, timeoutMs: 5000, compression: 'gzip', insecure: false, ...extra };
}

const GRPC_NAMES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];
/** OTLP spec, "OTLP/gRPC Throttling" / "Failures": the retryable codes */
const GRPC_RETRYABLE = new Set(['CANCELLED', 'DEADLINE_EXCEEDED', 'ABORTED', 'OUT_OF_RANGE', 'UNAVAILABLE', 'DATA_LOSS']);

test('rpcstatus: RetryInfo decoded from a google.rpc.Status; Retry-After seconds and HTTP-date', (t) => {
  t.is(retryDelayFromStatus(encodeStatus(14, 'x', 1500)), 1500);
  t.is(retryDelayFromStatus(encodeStatus(14, 'x', 250)), 250);
  t.is(retryDelayFromStatus(encodeStatus(14, 'x')), undefined);
  t.is(retryDelayFromStatus(Buffer.from([0x1a, 0xff, 0x01])), undefined, 'truncated input: undefined, no throw');
  t.is(parseRetryAfter('3'), 3000);
  t.is(parseRetryAfter(new Date(10_000 + 7000).toUTCString(), 10_000), 7000);
  t.is(parseRetryAfter('soon'), undefined);
});

test('gRPC: every status code classified by the OTLP rules; RESOURCE_EXHAUSTED retryable only with RetryInfo', async (t) => {
  const codes = Array.from({ length: 16 }, (_, i) => i + 1);
  const script: Answer[] = [...codes.map((c) => ({ grpcCode: c })), { grpcCode: 8, retryDelayMs: 700 }, {}];
  const n = script.length; // the server consumes the script
  const srv = await startOtlpServer('grpc', script);
  const sink = new OtlpSink(cfg(srv.url, 'grpc'));
  const got: Array<{ code?: string; retryable?: boolean; retryAfterMs?: number }> = [];
  try {
    for (let i = 0; i < n; i++) {
      const o = await sink.export([toReadableSpan(span(i), resource)]);
      got.push({ code: o.code, retryable: o.ok ? undefined : o.retryable, ...(o.retryAfterMs !== undefined ? { retryAfterMs: o.retryAfterMs } : {}) });
    }
  } finally {
    await sink.shutdown();
    await srv.close();
  }
  const want = [
    ...codes.map((c) => ({ code: GRPC_NAMES[c], retryable: GRPC_RETRYABLE.has(GRPC_NAMES[c]!) })),
    { code: 'RESOURCE_EXHAUSTED', retryable: true, retryAfterMs: 700 },
    { code: 'OK', retryable: undefined },
  ];
  t.deepEqual(got, want);
  t.is(srv.requests.length, n, 'one request per export: no hidden retries below ours');
  t.is(srv.requests[0]!.headers['x-tenant'], 'a', 'configured headers sent as metadata');
  t.regex(srv.requests[0]!.headers['user-agent'] ?? '', /^sidelight\//);
});

test('HTTP: statuses classified by the OTLP rules; Retry-After read; gzip by default', async (t) => {
  const statuses = [400, 401, 403, 404, 408, 413, 429, 500, 501, 502, 503, 504];
  const script: Answer[] = [...statuses.map((s) => ({ httpStatus: s, message: `status ${s}` })), { httpStatus: 503, retryDelayMs: 4000 }, { httpStatus: 429, retryAfter: new Date(Date.now() + 60_000).toUTCString() }, {}];
  const n = script.length; // the server consumes the script
  const srv = await startOtlpServer('http', script);
  const sink = new OtlpSink(cfg(srv.url, 'http/protobuf'));
  const got: Array<{ code?: string; retryable?: boolean }> = [];
  const after: Array<number | undefined> = [];
  const errors: string[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const o = await sink.export([toReadableSpan(span(i), resource)]);
      got.push({ code: o.code, retryable: o.ok ? undefined : o.retryable });
      after.push(o.retryAfterMs);
      if (o.error) errors.push(o.error);
    }
  } finally {
    await sink.shutdown();
    await srv.close();
  }
  const retryable = new Set([429, 502, 503, 504]);
  t.deepEqual(got, [...statuses.map((s) => ({ code: `HTTP ${s}`, retryable: retryable.has(s) })), { code: 'HTTP 503', retryable: true }, { code: 'HTTP 429', retryable: true }, { code: 'OK', retryable: undefined }]);
  t.is(after[statuses.length], 4000);
  t.true(after[statuses.length + 1]! > 55_000 && after[statuses.length + 1]! <= 60_000, `HTTP-date Retry-After: ${after[statuses.length + 1]}`);
  t.is(errors[0], 'HTTP 400: status 400', 'the google.rpc.Status message of the error body');
  t.is(srv.requests.length, n);
  t.is(srv.requests[0]!.headers['content-encoding'], 'gzip');
  t.is(srv.requests[0]!.headers['content-type'], 'application/x-protobuf');
  t.is(srv.requests[0]!.headers['x-tenant'], 'a');
});

test('connection refused is retryable (no status)', async (t) => {
  const srv = await startOtlpServer('http');
  const url = srv.url;
  await srv.close();
  const sink = new OtlpSink(cfg(url, 'http/protobuf'));
  const o = await sink.export([toReadableSpan(span(0), resource)]);
  await sink.shutdown();
  t.false(o.ok);
  t.true(o.retryable);
  t.is(o.code, 'ECONNREFUSED');
});

for (const [protocol, server] of [['grpc', 'grpc'], ['http/protobuf', 'http']] as const) {
  test(`${protocol}: the server's retry delay is the next delay (not the backoff), and the batch is delivered`, async (t) => {
    const delay = protocol === 'grpc' ? 400 : 1000;
    const srv = await startOtlpServer(server, [protocol === 'grpc' ? { grpcCode: 14, retryDelayMs: delay } : { httpStatus: 503, retryDelayMs: delay }]);
    const p = new ExportPipeline({ maxSpans: 10, delayMs: 10, queueSpans: 100, retryInitialMs: 8000, retryMaxMs: 20_000 }, new OtlpSink(cfg(srv.url, protocol)));
    for (let i = 0; i < 3; i++) p.push(span(i), resource);
    const deadline = Date.now() + 8000;
    while (p.stats.exported < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
    await p.shutdown(1000);
    await srv.close();
    t.is(srv.requests.length, 2);
    const gap = srv.requests[1]!.at - srv.requests[0]!.at;
    t.true(gap >= delay - 30 && gap < delay + 1500, `retried after ${gap} ms (server asked ${delay}, backoff would be ~8000)`);
    t.like(p.stats, { exported: 3, retries: 1, retriesServerDelay: 1, exportErrors: 1, droppedExportFailed: 0 });
    t.deepEqual(p.stats.errorsByCode, protocol === 'grpc' ? { UNAVAILABLE: 1 } : { 'HTTP 503': 1 });
    t.is(p.latency.count, 2);
  });

  test(`${protocol}: a non-retryable answer drops the batch at once, counted exactly`, async (t) => {
    const srv = await startOtlpServer(server, [protocol === 'grpc' ? { grpcCode: 3 } : { httpStatus: 400 }]);
    const errors: string[] = [];
    const p = new ExportPipeline({ maxSpans: 4, delayMs: 10, queueSpans: 100, retryInitialMs: 10 }, new OtlpSink(cfg(srv.url, protocol)), (m) => errors.push(m));
    for (let i = 0; i < 7; i++) p.push(span(i), resource);
    await new Promise((r) => setTimeout(r, 300));
    await p.shutdown(2000);
    await srv.close();
    t.is(srv.requests.length, 2, 'two batches, no retry');
    t.like(p.stats, { received: 7, exported: 3, droppedExportFailed: 4, retries: 0 });
    t.is(errors.length, 1);
  });
}

for (const [protocol, server] of [['grpc', 'grpc'], ['http/protobuf', 'http'], ['http/json', 'http']] as const) {
  test(`${protocol}: partial success counted exactly, logged once per interval`, async (t) => {
    const srv = await startOtlpServer(server, [{ partial: { rejected: 2, message: 'spans too old' } }, { partial: { rejected: 1, message: 'spans too old' } }, {}]);
    const logs: string[] = [];
    const p = new ExportPipeline({ maxSpans: 3, delayMs: 10, queueSpans: 100 }, new OtlpSink(cfg(srv.url, protocol)), (m) => logs.push(m));
    for (let i = 0; i < 9; i++) p.push(span(i), resource);
    const deadline = Date.now() + 5000;
    while (p.stats.batches < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await p.shutdown(2000);
    await srv.close();
    t.is(srv.requests.length, 3);
    t.like(p.stats, { exported: 9, rejected: 3, partialSuccesses: 2, exportErrors: 0 });
    t.deepEqual(logs, [`export to otlp ${protocol} ${srv.url}: partial success, 2 spans rejected: spans too old`]);
    if (protocol === 'http/json') {
      const body = JSON.parse(srv.requests[0]!.body.toString('utf8')) as { resourceSpans: Array<{ scopeSpans: Array<{ spans: unknown[] }> }> };
      t.is(body.resourceSpans[0]!.scopeSpans[0]!.spans.length, 3, 'OTLP JSON request body');
    }
  });
}

for (const [protocol, server] of [['grpc', 'grpc'], ['http/protobuf', 'http']] as const) {
  test(`${protocol}: metric exports go through the same transport; partial success and failures counted`, async (t) => {
    const srv = await startOtlpServer(server, [{ partial: { rejected: 4, message: 'bad points' } }, protocol === 'grpc' ? { grpcCode: 14 } : { httpStatus: 503 }, {}]);
    const logs: string[] = [];
    const ex = new OtlpMetricExporter(cfg(srv.metricsUrl, protocol), (m) => logs.push(m));
    const rm = {
      resource,
      scopeMetrics: [
        {
          scope: { name: 'test' },
          metrics: [
            {
              descriptor: { name: 'm', description: '', unit: '1', valueType: ValueType.DOUBLE },
              aggregationTemporality: AggregationTemporality.CUMULATIVE,
              dataPointType: DataPointType.SUM as const,
              isMonotonic: true,
              dataPoints: [{ startTime: [1, 0] as [number, number], endTime: [2, 0] as [number, number], attributes: {}, value: 3 }],
            },
          ],
        },
      ],
    };
    const codes: ExportResultCode[] = [];
    for (let i = 0; i < 3; i++) codes.push((await new Promise<{ code: ExportResultCode }>((r) => ex.export(rm, r))).code);
    await ex.shutdown();
    await srv.close();
    t.deepEqual(codes, [ExportResultCode.SUCCESS, ExportResultCode.FAILED, ExportResultCode.SUCCESS]);
    t.deepEqual(ex.stats, { exports: 2, failures: 1, errorsByCode: protocol === 'grpc' ? { UNAVAILABLE: 1 } : { 'HTTP 503': 1 }, rejectedDataPoints: 4, partialSuccesses: 1 });
    t.deepEqual(logs, ['metric export: partial success, 4 data points rejected: bad points']);
    t.true(srv.requests.every((r) => r.path.includes('etrics')), 'sent to the metrics service / path');
  });
}

for (const [protocol, server] of [['grpc', 'grpc'], ['http/protobuf', 'http']] as const) {
  test(`${protocol} over TLS: the configured CA certificate is used; without it the server is not trusted`, async (t) => {
    const cert = makeTestCert();
    const srv = await startOtlpServer(server, [], cert);
    const trusted = new OtlpSink(cfg(srv.url, protocol, { certificate: cert.certFile }));
    const untrusted = new OtlpSink(cfg(srv.url, protocol));
    let ok: ExportOutcome | undefined;
    let bad: ExportOutcome | undefined;
    try {
      ok = await trusted.export([toReadableSpan(span(0), resource)]);
      bad = await untrusted.export([toReadableSpan(span(1), resource)]);
    } finally {
      await trusted.shutdown();
      await untrusted.shutdown();
      await srv.close();
      cert.remove();
    }
    t.true(srv.url.startsWith('https://'));
    t.deepEqual(ok, { ok: true, code: 'OK' });
    t.false(bad!.ok, 'a self-signed server without its CA configured is refused');
    t.is(srv.requests.length, 1, 'only the trusted client got through');
  });
}

test('credentials in the endpoint URL never reach log lines', async (t) => {
  const srv = await startOtlpServer('http', [{ httpStatus: 400 }]);
  const u = new URL(srv.url);
  u.username = 'user';
  u.password = 's3cret';
  u.search = '?token=abc';
  const logs: string[] = [];
  const p = new ExportPipeline({ maxSpans: 1, delayMs: 10, queueSpans: 16 }, new OtlpSink(cfg(u.href, 'http/protobuf')), (m) => logs.push(m));
  p.push(span(0), resource);
  await new Promise((r) => setTimeout(r, 200));
  await p.shutdown(1000);
  await srv.close();
  t.is(logs.length, 1);
  t.false(/s3cret|abc|user/.test(logs[0]!), logs[0]);
  t.regex(logs[0]!, /\*\*\*:\*\*\*@127\.0\.0\.1/);
  t.is(srv.requests[0]!.headers['authorization'], `Basic ${Buffer.from('user:s3cret').toString('base64')}`, 'URL credentials still used for the request');
});
