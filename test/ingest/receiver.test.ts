/**
 * The OTLP receiver on the wire, with real peers: the real Collector's otlp_grpc and
 * otlp_http exporters as senders and the real Collector as the downstream sink (everything
 * compared byte for byte in its JSON output), fetch for OTLP/HTTP (protobuf, JSON, gzip,
 * errors) and a grpc-js client for OTLP/gRPC (errors, RetryInfo).
 */
import { gzipSync } from 'node:zlib';
import test from 'ava';
import { Client, credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { ProcessCache } from '../../src/enrich/process.js';
import { decodeJson, encodeProto, retryDelayMs, SIGNAL_INFO, type Signal } from '../../src/ingest/codec.js';
import { OtlpReceiver } from '../../src/ingest/receiver.js';
import { Senders } from '../../src/ingest/senders.js';
import type { ReceiverOptions, TracesExport } from '../../src/config.js';
import { collectorBinary } from '../helpers/collector.js';
import { need } from '../helpers/kernel.js';
import { logsOf, metricsOf, senderConfig, sinkConfig, spansOf, startOtelcol } from '../helpers/otelcol.js';
import { freePort } from '../helpers/servers.js';

const NO_COLLECTOR = collectorBinary() ? undefined : '.tools/otelcol missing (bash scripts/collector.sh)';

const ATTRS = [
  { key: 'http.request.method', value: { stringValue: 'GET' } },
  { key: 'http.response.status_code', value: { intValue: '200' } },
  { key: 'big.int', value: { intValue: '9007199254740993' } },
  { key: 'ratio', value: { doubleValue: 0.25 } },
  { key: 'ok', value: { boolValue: true } },
  { key: 'list', value: { arrayValue: { values: [{ stringValue: 'a' }, { intValue: '2' }] } } },
  { key: 'map', value: { kvlistValue: { values: [{ key: 'inner', value: { stringValue: 'x' } }] } } },
  { key: 'blob', value: { bytesValue: 'AAEC/w==' } },
];

function traces(tag: string, extra: object = {}): Record<string, unknown> {
  return {
    resourceSpans: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: `svc-${tag}` } }, { key: 'process.pid', value: { intValue: '4242' } }] },
        scopeSpans: [
          {
            scope: { name: 'test-scope', version: '1.2.3' },
            spans: [
              {
                traceId: '5b8efff798038103d269b633813fc60c',
                spanId: 'eee19b7ec3c1b174',
                parentSpanId: 'eee19b7ec3c1b173',
                name: `GET /${tag}`,
                kind: 2,
                startTimeUnixNano: '1700000000123456789',
                endTimeUnixNano: '1700000000987654321',
                attributes: ATTRS,
                status: { code: 1 },
                ...extra,
              },
            ],
          },
        ],
      },
    ],
  };
}

function logs(tag: string): Record<string, unknown> {
  return {
    resourceLogs: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: `svc-${tag}` } }] },
        scopeLogs: [
          {
            logRecords: [
              {
                timeUnixNano: '1700000001000000001',
                observedTimeUnixNano: '1700000001000000002',
                severityNumber: 9,
                severityText: 'INFO',
                body: { stringValue: `hello ${tag}` },
                attributes: ATTRS,
                traceId: '5b8efff798038103d269b633813fc60c',
                spanId: 'eee19b7ec3c1b174',
              },
            ],
          },
        ],
      },
    ],
  };
}

function metrics(tag: string): Record<string, unknown> {
  return {
    resourceMetrics: [
      {
        resource: { attributes: [{ key: 'service.name', value: { stringValue: `svc-${tag}` } }] },
        scopeMetrics: [
          {
            metrics: [
              {
                name: `requests.${tag}`,
                unit: '1',
                sum: {
                  aggregationTemporality: 2,
                  isMonotonic: true,
                  dataPoints: [{ asInt: '7', startTimeUnixNano: '1700000000000000000', timeUnixNano: '1700000002000000000', attributes: ATTRS.slice(0, 2) }],
                },
              },
            ],
          },
        ],
      },
    ],
  };
}

function options(o: Partial<ReceiverOptions> = {}): ReceiverOptions {
  return {
    enabled: true,
    grpcAddress: '127.0.0.1:0',
    httpAddress: '127.0.0.1:0',
    maxRequestBytes: 4 << 20,
    queueBytes: 32 << 20,
    senderBytesPerSecond: 0,
    totalBytesPerSecond: 0,
    maxSenders: 64,
    tls: { certFile: '', keyFile: '' },
    dedup: true,
    ...o,
  };
}

function target(url: string, protocol: TracesExport['protocol'] = 'grpc'): TracesExport {
  return { url, protocol, headers: {}, timeoutMs: 5000, compression: 'gzip', insecure: false };
}

async function startReceiver(o: Partial<ReceiverOptions>, targets: Partial<Record<Signal, TracesExport | null>>): Promise<OtlpReceiver> {
  const processes = new ProcessCache({ maxProcesses: 64 });
  const senders = new Senders({ maxConnections: 64, maxSenders: 64, senderBytesPerSecond: o.senderBytesPerSecond ?? 0, totalBytesPerSecond: 0 }, processes);
  const r = new OtlpReceiver(options(o), targets, { delayMs: 50, retry: { initialMs: 100, maxMs: 500, maxElapsedMs: 30_000 } }, senders);
  await r.start();
  return r;
}

const post = (url: string, body: Uint8Array | string, headers: Record<string, string>): Promise<Response> =>
  fetch(url, { method: 'POST', body: typeof body === 'string' ? body : Buffer.from(body), headers });

for (const exporter of ['otlp_grpc', 'otlp_http'] as const) {
  test.serial(`the real Collector's ${exporter} exporter sends to Sidelight; traces, metrics and logs reach the real Collector intact and enriched`, async (t) => {
    if (!need(t, NO_COLLECTOR)) return;
    const sink = await startOtelcol(sinkConfig);
    const viaHttp = exporter === 'otlp_http';
    const recv = await startReceiver({}, {
      traces: target(viaHttp ? `http://127.0.0.1:${sink.httpPort}/v1/traces` : `http://127.0.0.1:${sink.grpcPort}`, viaHttp ? 'http/protobuf' : 'grpc'),
      metrics: target(viaHttp ? `http://127.0.0.1:${sink.httpPort}/v1/metrics` : `http://127.0.0.1:${sink.grpcPort}`, viaHttp ? 'http/json' : 'grpc'),
      logs: target(viaHttp ? `http://127.0.0.1:${sink.httpPort}/v1/logs` : `http://127.0.0.1:${sink.grpcPort}`, viaHttp ? 'http/protobuf' : 'grpc'),
    });
    const a = recv.addresses;
    const sender = await startOtelcol(senderConfig(exporter, viaHttp ? `http://${a.http}` : a.grpc!));
    try {
      const tag = exporter;
      for (const [path, body] of [['/v1/traces', traces(tag)], ['/v1/logs', logs(tag)], ['/v1/metrics', metrics(tag)]] as const) {
        const r = await post(`http://127.0.0.1:${sender.httpPort}${path}`, JSON.stringify(body), { 'content-type': 'application/json' });
        t.is(r.status, 200, `${path} to the sender collector`);
      }
      const spans = await sink.waitFor('traces.jsonl', (l) => {
        const s = spansOf(l).filter((x) => x.span['name'] === `GET /${tag}`);
        return s.length > 0 ? s : undefined;
      });
      const gotLogs = await sink.waitFor('logs.jsonl', (l) => {
        const s = logsOf(l);
        return s.length > 0 ? s : undefined;
      });
      const gotMetrics = await sink.waitFor('metrics.jsonl', (l) => {
        const s = metricsOf(l);
        return s.length > 0 ? s : undefined;
      });
      t.is(spans.length, 1, 'each span once');
      const { span, resource } = spans[0]!;
      const sent = (traces(tag)['resourceSpans'] as { scopeSpans: { spans: Record<string, unknown>[] }[] }[])[0]!.scopeSpans[0]!.spans[0]!;
      for (const k of ['traceId', 'spanId', 'parentSpanId', 'name', 'kind', 'startTimeUnixNano', 'endTimeUnixNano', 'attributes', 'status']) t.deepEqual(span[k], sent[k], k);
      // the sender's own resource attributes are kept, never overwritten
      t.deepEqual(resource['service.name'], { stringValue: `svc-${tag}` });
      t.deepEqual(resource['process.pid'], { intValue: '4242' });
      // enriched from the sending socket's process (the sender Collector, on this node)
      t.deepEqual(resource['process.executable.name'], { stringValue: 'otelcol-sidelight' });
      t.is(gotLogs.length, 1);
      const sentLog = (logs(tag)['resourceLogs'] as { scopeLogs: { logRecords: Record<string, unknown>[] }[] }[])[0]!.scopeLogs[0]!.logRecords[0]!;
      for (const k of Object.keys(sentLog)) t.deepEqual(gotLogs[0]!.log[k], sentLog[k], `log ${k}`);
      t.deepEqual(gotLogs[0]!.resource['process.pid'], { intValue: String(sender.pid) });
      t.is(gotMetrics.length, 1);
      const sentMetric = (metrics(tag)['resourceMetrics'] as { scopeMetrics: { metrics: Record<string, unknown>[] }[] }[])[0]!.scopeMetrics[0]!.metrics[0]!;
      t.deepEqual(gotMetrics[0]!.metric['sum'], sentMetric['sum']);
      const st = recv.forwarder.stats();
      t.is(st.traces.forwarded, 1);
      t.is(st.logs.forwarded, 1);
      t.is(st.metrics.forwarded, 1);
    } finally {
      await sender.stop();
      await recv.stop(2000);
      await sink.stop();
    }
  });
}

test('OTLP/HTTP: protobuf, JSON and gzip succeed; bad ids are a partial success; bad data 400; wrong type 415; unknown path 404; too big 413', async (t) => {
  if (!need(t, NO_COLLECTOR)) return;
  const sink = await startOtelcol(sinkConfig);
  const recv = await startReceiver({ maxRequestBytes: 64 * 1024 }, { traces: target(`http://127.0.0.1:${sink.grpcPort}`) });
  const base = `http://${recv.addresses.http}`;
  try {
    const proto = encodeProto('traces', decodeJson('traces', JSON.stringify(traces('proto'))));
    let r = await post(`${base}/v1/traces`, proto, { 'content-type': 'application/x-protobuf' });
    t.is(r.status, 200);
    t.is(r.headers.get('content-type'), 'application/x-protobuf');
    t.is((await r.arrayBuffer()).byteLength, 0, 'full success: an empty ExportTraceServiceResponse');

    r = await post(`${base}/v1/traces`, gzipSync(proto), { 'content-type': 'application/x-protobuf', 'content-encoding': 'gzip' });
    t.is(r.status, 200);
    r = await post(`${base}/v1/traces`, JSON.stringify(traces('json')), { 'content-type': 'application/json' });
    t.is(r.status, 200);
    t.deepEqual(await r.json(), {});

    const bad = traces('bad', { traceId: '0102' });
    (bad['resourceSpans'] as { scopeSpans: { spans: unknown[] }[] }[])[0]!.scopeSpans[0]!.spans.push(
      (traces('good')['resourceSpans'] as { scopeSpans: { spans: unknown[] }[] }[])[0]!.scopeSpans[0]!.spans[0],
    );
    r = await post(`${base}/v1/traces`, JSON.stringify(bad), { 'content-type': 'application/json' });
    t.is(r.status, 200);
    t.deepEqual(await r.json(), {
      partialSuccess: { rejectedSpans: '1', errorMessage: 'resourceSpans[0].scopeSpans[0].spans[0]: trace id must be 16 bytes, got 2' },
    });

    r = await post(`${base}/v1/traces`, Buffer.from([0x0a, 0xff, 0xff]), { 'content-type': 'application/x-protobuf' });
    t.is(r.status, 400);
    r = await post(`${base}/v1/traces`, '{"resourceSpans": [', { 'content-type': 'application/json' });
    t.is(r.status, 400);
    t.regex(((await r.json()) as { message: string }).message, /invalid JSON/);
    r = await post(`${base}/v1/traces`, JSON.stringify(traces('x', { spanId: 'zz' })), { 'content-type': 'application/json' });
    t.is(r.status, 400);
    t.regex(((await r.json()) as { message: string }).message, /spans\[0\]\.spanId: "zz" is not a hex string/);
    r = await post(`${base}/v1/traces`, Buffer.from('x'), { 'content-type': 'text/plain' });
    t.is(r.status, 415);
    r = await post(`${base}/v1/profiles`, proto, { 'content-type': 'application/x-protobuf' });
    t.is(r.status, 404);
    r = await post(`${base}/v1/traces`, Buffer.alloc(100 * 1024), { 'content-type': 'application/x-protobuf' });
    t.is(r.status, 413);
    // a gzip bomb is cut at the limit, after decompression
    r = await post(`${base}/v1/traces`, gzipSync(Buffer.alloc(1 << 20)), { 'content-type': 'application/x-protobuf', 'content-encoding': 'gzip' });
    t.is(r.status, 413);

    const got = await sink.waitFor('traces.jsonl', (l) => {
      const s = spansOf(l);
      return s.length >= 4 ? s : undefined;
    });
    t.deepEqual(got.map((s) => s.span['name']).sort(), ['GET /good', 'GET /json', 'GET /proto', 'GET /proto']);
    t.is(recv.stats.rejectedItems, 1);
    t.true(recv.stats.invalid >= 3);
    t.true(recv.stats.tooLarge >= 2);
  } finally {
    await recv.stop(2000);
    await sink.stop();
  }
});

function grpcCall(addr: string, signal: Signal, body: Uint8Array): Promise<{ err: ServiceError | null; res?: Buffer }> {
  const c = new Client(addr, credentials.createInsecure());
  return new Promise((resolve) =>
    c.makeUnaryRequest(
      SIGNAL_INFO[signal].grpcPath,
      (b: Uint8Array) => Buffer.from(b),
      (b: Buffer) => b,
      body,
      new Metadata(),
      (err: ServiceError | null, res?: Buffer) => {
        c.close();
        resolve({ err, ...(res ? { res } : {}) });
      },
    ),
  );
}

test('OTLP/gRPC: success, InvalidArgument for undecodable data, ResourceExhausted over maxRequestBytes', async (t) => {
  const port = await freePort(); // nothing listens: forwarding fails retryably, the answers do not depend on it
  const recv = await startReceiver({ maxRequestBytes: 16 * 1024 }, { traces: target(`http://127.0.0.1:${port}`) });
  try {
    const addr = recv.addresses.grpc!;
    const ok = await grpcCall(addr, 'traces', encodeProto('traces', decodeJson('traces', JSON.stringify(traces('g')))));
    t.is(ok.err, null);
    t.is(ok.res?.length, 0);
    const bad = await grpcCall(addr, 'logs', Buffer.from([0x0a, 0xff, 0xff]));
    t.is(bad.err?.code, status.INVALID_ARGUMENT);
    const big = await grpcCall(addr, 'metrics', Buffer.alloc(32 * 1024));
    t.is(big.err?.code, status.RESOURCE_EXHAUSTED);
  } finally {
    await recv.stop(200);
  }
});

test('a full forward queue answers 503 + Retry-After and Unavailable + RetryInfo; a sender over its rate gets 429', async (t) => {
  const port = await freePort(); // downstream down: everything stays queued
  const recv = await startReceiver({ queueBytes: 65536 }, { traces: target(`http://127.0.0.1:${port}`) });
  try {
    const base = `http://${recv.addresses.http}`;
    const fat = traces('fat', { attributes: [{ key: 'pad', value: { stringValue: 'x'.repeat(20_000) } }] });
    const codes: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 6; i++) {
      last = await post(`${base}/v1/traces`, JSON.stringify(fat), { 'content-type': 'application/json' });
      codes.push(last.status);
    }
    t.deepEqual(codes.slice(0, 3), [200, 200, 200]);
    t.is(codes.at(-1), 503);
    t.is(last!.headers.get('retry-after'), '1');
    const grpc = await grpcCall(recv.addresses.grpc!, 'traces', encodeProto('traces', decodeJson('traces', JSON.stringify(fat))));
    t.is(grpc.err?.code, status.UNAVAILABLE);
    const details = grpc.err?.metadata.get('grpc-status-details-bin')[0];
    t.true(details instanceof Buffer);
    t.is(retryDelayMs(details as Buffer), 1000);
    t.true(recv.stats.queueFull >= 2);
    t.true(recv.forwarder.stats().traces.refusedQueueFull >= 2);
  } finally {
    await recv.stop(200);
  }

  const limited = await startReceiver({ senderBytesPerSecond: 30_000 }, { traces: target(`http://127.0.0.1:${port}`) });
  try {
    const base = `http://${limited.addresses.http}`;
    const body = JSON.stringify(traces('rate', { attributes: [{ key: 'pad', value: { stringValue: 'x'.repeat(10_000) } }] }));
    // ten ~10 kB requests at once against 30 kB/s: the bucket cannot refill in between, however
    // slow the machine (sent one by one, a loaded machine refilled it and no 429 came)
    const responses = await Promise.all(Array.from({ length: 10 }, () => post(`${base}/v1/traces`, body, { 'content-type': 'application/json' })));
    const codes = responses.map((r) => r.status);
    const throttled = responses.find((r) => r.status === 429);
    t.true(codes.includes(200), `some accepted: ${codes.join(',')}`);
    t.truthy(throttled, `some throttled: ${codes.join(',')}`);
    t.truthy(throttled?.headers.get('retry-after'));
    t.true(codes.every((c) => c === 200 || c === 429), codes.join(','));
    t.true(limited.senders.stats.throttledSender >= 1);
  } finally {
    await limited.stop(200);
  }
});

test.serial("the real Collector's otlp_http exporter gets 503 while Sidelight's queue is full, retries, and every span arrives once", async (t) => {
  if (!need(t, NO_COLLECTOR)) return;
  const sinkPorts = { grpc: await freePort(), http: await freePort() };
  // the downstream is not up yet: what Sidelight accepts stays queued, the rest is refused
  const recv = await startReceiver({ queueBytes: 65536 }, { traces: target(`http://127.0.0.1:${sinkPorts.grpc}`) });
  const sender = await startOtelcol(senderConfig('otlp_http', `http://${recv.addresses.http}`));
  let sink: Awaited<ReturnType<typeof startOtelcol>> | undefined;
  try {
    const names: string[] = [];
    for (let i = 0; i < 6; i++) {
      const name = `retry-${i}`;
      names.push(`GET /${name}`);
      const body = traces(name, { spanId: `00000000000000${(0x10 + i).toString(16)}`, attributes: [{ key: 'pad', value: { stringValue: 'x'.repeat(20_000) } }] });
      const r = await post(`http://127.0.0.1:${sender.httpPort}/v1/traces`, JSON.stringify(body), { 'content-type': 'application/json' });
      t.is(r.status, 200);
    }
    const end = Date.now() + 20_000;
    while (recv.stats.queueFull === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
    t.true(recv.stats.queueFull >= 1, 'the sender was told to retry');
    sink = await startOtelcol(sinkConfig, sinkPorts);
    const got = await sink.waitFor(
      'traces.jsonl',
      (l) => {
        const s = spansOf(l).map((x) => String(x.span['name']));
        return names.every((n) => s.includes(n)) ? s : undefined;
      },
      60_000,
    );
    await new Promise((r) => setTimeout(r, 1000));
    const final = spansOf(await sink.lines('traces.jsonl')).map((x) => String(x.span['name']));
    t.true(got.length <= final.length);
    t.deepEqual([...final].sort(), [...names].sort(), 'each span exactly once');
  } finally {
    await sender.stop();
    await recv.stop(2000);
    await sink?.stop();
  }
});

test('TLS: the real Collector sends over otlp_grpc with TLS (its CA file) and curl over HTTPS; plaintext is refused', async (t) => {
  if (!need(t, NO_COLLECTOR)) return;
  const { execFileSync, execFile } = await import('node:child_process');
  const { mkdtempSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(`${tmpdir()}/sl-tls-`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  const sink = await startOtelcol(sinkConfig);
  const recv = await startReceiver({ tls: { certFile: `${dir}/cert.pem`, keyFile: `${dir}/key.pem` } }, { traces: target(`http://127.0.0.1:${sink.grpcPort}`) });
  const sender = await startOtelcol(senderConfig('otlp_grpc', `https://${recv.addresses.grpc}`, { tls: { ca_file: `${dir}/cert.pem` } }));
  try {
    const r = await post(`http://127.0.0.1:${sender.httpPort}/v1/traces`, JSON.stringify(traces('tls-grpc')), { 'content-type': 'application/json' });
    t.is(r.status, 200);
    const code = await new Promise<string>((resolve) =>
      execFile(
        'curl',
        ['-sS', '--cacert', `${dir}/cert.pem`, '-o', '/dev/null', '-w', '%{http_code}', '-H', 'content-type: application/json', '--data-binary', JSON.stringify(traces('tls-http')), `https://${recv.addresses.http}/v1/traces`],
        (_e, out, err) => resolve(`${out}${err}`),
      ),
    );
    t.is(code, '200');
    await t.throwsAsync(() => post(`http://${recv.addresses.http}/v1/traces`, JSON.stringify(traces('plain')), { 'content-type': 'application/json' }));
    const spans = await sink.waitFor('traces.jsonl', (l) => {
      const s = spansOf(l).map((x) => String(x.span['name']));
      return s.includes('GET /tls-grpc') && s.includes('GET /tls-http') ? s : undefined;
    });
    t.false(spans.includes('GET /plain'));
  } finally {
    await sender.stop();
    await recv.stop(1000);
    await sink.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
