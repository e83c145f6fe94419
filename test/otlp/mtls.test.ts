/**
 * Mutual TLS for OTLP export: a real grpc-js / node:https server that requires a client
 * certificate signed by a test CA (test/helpers/otlpserver.ts, certificates made by openssl).
 * The config comes from loadConfig with the OTEL_EXPORTER_OTLP_[<SIGNAL>_]CLIENT_CERTIFICATE /
 * _CLIENT_KEY variables, so this checks the whole path: per-signal variables apply to their own
 * signal only, and the transport presents the identity they name.
 */
import test from 'ava';
import { loadConfig } from '../../src/config.js';
import { Forwarder } from '../../src/ingest/forward.js';
import { createTransport, type SendResult, type TransportConfig } from '../../src/otlp/transport.js';
import { makeTestCert, startOtlpServer } from '../helpers/otlpserver.js';

async function sendOnce(c: TransportConfig | null, signal: 'traces' | 'metrics'): Promise<SendResult> {
  if (!c) throw new Error(`no ${signal} exporter configured`);
  const tr = createTransport(c, signal);
  try {
    return await tr.send(new Uint8Array(0)); // an empty Export*ServiceRequest is valid protobuf
  } finally {
    await tr.shutdown();
  }
}

for (const [protocol, server] of [['grpc', 'grpc'], ['http/protobuf', 'http']] as const) {
  test(`${protocol} mTLS: per-signal client certificate applies to traces only; the generic one to every signal`, async (t) => {
    const serverCert = makeTestCert();
    const clientCert = makeTestCert();
    const srv = await startOtlpServer(server, [], serverCert, clientCert.cert);
    const base = { OTEL_EXPORTER_OTLP_ENDPOINT: new URL(srv.url).origin, OTEL_EXPORTER_OTLP_PROTOCOL: protocol, OTEL_EXPORTER_OTLP_CERTIFICATE: serverCert.certFile, OTEL_EXPORTER_OTLP_TIMEOUT: '5000' };
    let perSignal: { traces: SendResult; metrics: SendResult; requests: number } | undefined;
    let generic: { traces: SendResult; metrics: SendResult; requests: number } | undefined;
    try {
      const c1 = loadConfig({ env: { ...base, OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE: clientCert.certFile, OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY: clientCert.keyFile } });
      const traces = await sendOnce(c1.export.traces, 'traces');
      const metrics = await sendOnce(c1.export.metrics, 'metrics');
      perSignal = { traces, metrics, requests: srv.requests.length };
      const c2 = loadConfig({ env: { ...base, OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: clientCert.certFile, OTEL_EXPORTER_OTLP_CLIENT_KEY: clientCert.keyFile } });
      const traces2 = await sendOnce(c2.export.traces, 'traces');
      const metrics2 = await sendOnce(c2.export.metrics, 'metrics');
      generic = { traces: traces2, metrics: metrics2, requests: srv.requests.length };
    } finally {
      await srv.close();
      serverCert.remove();
      clientCert.remove();
    }
    t.true(srv.url.startsWith('https://'));
    t.like(perSignal!.traces, { ok: true, code: 'OK' }, JSON.stringify(perSignal!.traces));
    t.false(perSignal!.metrics.ok, `metrics has no client certificate and must be refused: ${JSON.stringify(perSignal!.metrics)}`);
    t.is(perSignal!.requests, 1, 'only the traces request got through');
    t.like(generic!.traces, { ok: true, code: 'OK' });
    t.like(generic!.metrics, { ok: true, code: 'OK' }, JSON.stringify(generic!.metrics));
    t.is(generic!.requests, 3);
    t.deepEqual(
      srv.requests.map((r) => r.path.includes('etric') ? 'metrics' : 'traces'),
      ['traces', 'traces', 'metrics'],
    );
  });
}

test('receiver forwarding (src/ingest/forward.ts) presents the per-signal client certificate of its lane only', async (t) => {
  const serverCert = makeTestCert();
  const clientCert = makeTestCert();
  const srv = await startOtlpServer('http', [], serverCert, clientCert.cert);
  const c = loadConfig({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: new URL(srv.url).origin,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_EXPORTER_OTLP_CERTIFICATE: serverCert.certFile,
      OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE: clientCert.certFile,
      OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY: clientCert.keyFile,
    },
  });
  const errors: string[] = [];
  const fwd = new Forwarder({ queueBytes: 1 << 20, maxBatchBytes: 1 << 20, delayMs: 10, retryInitialMs: 10, retryMaxMs: 20, retryMaxElapsedMs: 100 }, { traces: c.export.traces, logs: c.export.logs }, (m) => errors.push(m));
  let stats: ReturnType<Forwarder['stats']> | undefined;
  try {
    fwd.offer('logs', new Uint8Array(0), 1);
    fwd.offer('traces', new Uint8Array(0), 1);
    const until = Date.now() + 10_000;
    for (;;) {
      stats = fwd.stats();
      if ((stats.logs.forwarded > 0 && stats.traces.droppedExportFailed > 0) || Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    await fwd.shutdown(1000);
    await srv.close();
    serverCert.remove();
    clientCert.remove();
  }
  t.is(stats!.logs.forwarded, 1, JSON.stringify(stats));
  t.is(stats!.traces.forwarded, 0, 'traces have no client certificate: refused by the server');
  t.is(stats!.traces.droppedExportFailed, 1, JSON.stringify(stats));
  t.deepEqual(srv.requests.map((r) => r.path), ['/v1/logs']);
});
