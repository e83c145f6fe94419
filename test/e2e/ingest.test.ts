/**
 * End to end: the agent (in this process, real BPF) with its OTLP receiver on, exporting to
 * the real Collector. Real SDK apps — Node (@opentelemetry/sdk-node) and Python
 * (opentelemetry-sdk from PyPI, venv from scripts/pysdk.sh) — export over gRPC and over HTTP
 * to the receiver, configured only by OTEL_EXPORTER_OTLP_*, while making one request to an
 * uninstrumented python http.server that Sidelight sees with eBPF. In the Collector's output:
 * the SDK span arrives intact and enriched with the sender's process; the eBPF SERVER span of
 * the request is its child in the same trace; Sidelight's own CLIENT span for the SDK's hop
 * is suppressed, so the hop is there once.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { Agent } from '../../src/agent.js';
import { loadConfig } from '../../src/config.js';
import { selfMetrics } from '../../src/otlp/selfmetrics.js';
import { repoRoot } from '../../src/paths.js';
import { startAgentProcess } from '../helpers/agentproc.js';
import { collectorBinary } from '../helpers/collector.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { logsOf, metricsOf, sinkConfig, spansOf, startOtelcol, type Otelcol } from '../helpers/otelcol.js';
import { freePort, startPythonServer, type RunningServer } from '../helpers/servers.js';

const run = promisify(execFile);
const PYTHON = join(repoRoot(), '.tools', 'pysdk', 'bin', 'python');
const FIXTURES = join(repoRoot(), 'test', 'fixtures', 'ingest');
const unavailable =
  kernelUnavailable() ??
  (collectorBinary() ? undefined : '.tools/otelcol missing (bash scripts/collector.sh)') ??
  (existsSync(PYTHON) ? undefined : '.tools/pysdk missing (bash scripts/pysdk.sh)');

let agent: Agent | undefined;
let sink: Otelcol | undefined;
let upstream: RunningServer | undefined;
let grpcPort = 0;
let httpPort = 0;

test.before(async () => {
  if (unavailable) return;
  sink = await startOtelcol(sinkConfig);
  upstream = await startPythonServer();
  grpcPort = await freePort();
  httpPort = await freePort();
  const config = loadConfig({
    env: {
      SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sink.grpcPort}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
    },
  });
  config.capture.pollIntervalMs = 20;
  config.export.batch.delayMs = 100;
  config.filter.ports.include = [upstream.port];
  config.receiver = { ...config.receiver, enabled: true, grpcAddress: `127.0.0.1:${grpcPort}`, httpAddress: `127.0.0.1:${httpPort}` };
  agent = new Agent(config);
  await agent.start();
});

test.after.always(async () => {
  await agent?.stop();
  await upstream?.stop();
  await sink?.stop();
});

interface Printed {
  pid: number;
  traceId: string;
  spanId: string;
}

const CASES = [
  { lang: 'node', protocol: 'grpc' },
  { lang: 'node', protocol: 'http/protobuf' },
  { lang: 'python', protocol: 'grpc' },
  { lang: 'python', protocol: 'http/protobuf' },
] as const;

for (const { lang, protocol } of CASES) {
  test.serial(`${lang} SDK over ${protocol}: its span arrives intact and enriched, the eBPF server span joins its trace, no duplicate hop`, async (t) => {
    if (!need(t, unavailable)) return;
    const tag = `${lang}-${protocol.replace('/', '-')}`;
    const env = {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_'))),
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${protocol === 'grpc' ? grpcPort : httpPort}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
      OTEL_SERVICE_NAME: `app-${tag}`,
      OTEL_BSP_SCHEDULE_DELAY: '100',
      TARGET_URL: `http://127.0.0.1:${upstream!.port}/hop-${tag}`,
    };
    const [cmd, args] = lang === 'node' ? [process.execPath, [join(FIXTURES, 'sdk-app.mjs')]] : [PYTHON, [join(FIXTURES, 'sdk_app.py')]];
    const { stdout } = await run(cmd, args, { env, cwd: repoRoot(), timeout: 60_000 });
    const printed = JSON.parse(stdout.trim().split('\n').at(-1)!) as Printed;

    const path = `/hop-${tag}`;
    const all = await sink!.waitFor('traces.jsonl', (l) => {
      const s = spansOf(l);
      const sdk = s.find((x) => x.span['spanId'] === printed.spanId);
      const server = s.find((x) => x.span['kind'] === 2 && JSON.stringify(x.span['attributes'] ?? []).includes(path));
      return sdk && server ? s : undefined;
    });
    // give a duplicate time to show up before counting
    await new Promise((r) => setTimeout(r, 1500));
    const final = spansOf(await sink!.lines('traces.jsonl'));
    t.true(final.length >= all.length);

    const sdk = final.filter((x) => x.span['spanId'] === printed.spanId);
    t.is(sdk.length, 1, 'the SDK span once');
    const s = sdk[0]!;
    t.is(s.span['traceId'], printed.traceId);
    t.is(s.span['name'], 'sdk-client');
    t.is(s.span['kind'], 3);
    const attrs = Object.fromEntries((s.span['attributes'] as { key: string; value: unknown }[]).map((kv) => [kv.key, kv.value]));
    t.deepEqual(attrs['app.attr'], { stringValue: lang });
    t.deepEqual(attrs['app.n'], { intValue: '42' });
    t.deepEqual(attrs['app.ok'], { boolValue: true });
    // the sender's resource is kept; Sidelight adds the workload identity of the sending process
    t.deepEqual(s.resource['service.name'], { stringValue: `app-${tag}` });
    t.deepEqual(s.resource['process.pid'], { intValue: String(printed.pid) });
    t.truthy(s.resource['telemetry.sdk.language']);
    t.truthy(s.resource['process.executable.name']);

    // the uninstrumented server's eBPF span is the SDK span's child: one trace
    const servers = final.filter((x) => x.span['kind'] === 2 && JSON.stringify(x.span['attributes'] ?? []).includes(path));
    t.is(servers.length, 1, 'one SERVER span for the hop');
    t.is(servers[0]!.span['traceId'], printed.traceId);
    t.is(servers[0]!.span['parentSpanId'], printed.spanId);

    // Sidelight's own CLIENT span for the same hop (from the SDK app's pid) is suppressed
    const clients = final.filter((x) => x.span['kind'] === 3 && JSON.stringify(x.span['attributes'] ?? []).includes(String(upstream!.port)));
    t.deepEqual(
      clients.filter((x) => x.span['spanId'] !== printed.spanId).map((x) => x.span['name']),
      [],
      'no eBPF duplicate of the SDK CLIENT span',
    );
    const st = agent!.stats()['receiver'] as { dedupSuppressed: number };
    t.true(st.dedupSuppressed >= 1);
    if (lang === 'node') {
      // the SDK's logs and metrics came the same way: logs as logs, in the span's context
      const log = await sink!.waitFor('logs.jsonl', (l) => logsOf(l).find((x) => x.log['spanId'] === printed.spanId));
      t.is(log.log['traceId'], printed.traceId);
      t.deepEqual(log.log['body'], { stringValue: 'hop done' });
      t.is(log.log['severityNumber'], 9);
      t.deepEqual(log.resource['service.name'], { stringValue: `app-${tag}` });
      t.deepEqual(log.resource['process.pid'], { intValue: String(printed.pid) });
      const metric = await sink!.waitFor('metrics.jsonl', (l) =>
        metricsOf(l).find((x) => x.metric['name'] === 'app.hops' && JSON.stringify(x.resource['service.name']) === JSON.stringify({ stringValue: `app-${tag}` })),
      );
      // a JS counter is a double sum
      const point = (metric.metric['sum'] as { dataPoints: { asDouble?: number; attributes: unknown }[] }).dataPoints[0]!;
      t.is(point.asDouble, 1);
      t.deepEqual(point.attributes, [{ key: 'app.attr', value: { stringValue: 'node' } }]);
    }
    // the same counters in self-telemetry
    const self = selfMetrics(agent!.selfSnapshot());
    const value = (name: string, attrs: Record<string, string> = {}) =>
      self.find((m) => m.name === name)?.points.find((p) => Object.entries(attrs).every(([k, v]) => p.attributes[k] === v))?.value ?? -1;
    t.true(value('sidelight.receiver.items', { signal: 'traces' }) >= 2);
    t.true(value('sidelight.receiver.forwarded', { signal: 'traces' }) >= 1);
    t.true(value('sidelight.spans.deduplicated') >= 1);
  });
}

test.serial('bin/sidelight run with SIDELIGHT_RECEIVER_* serves OTLP on those addresses, reports them in /healthz, and exits 0', async (t) => {
  if (!need(t, unavailable)) return;
  const [g, h] = [await freePort(), await freePort()];
  const a = await startAgentProcess({
    SIDELIGHT_RECEIVER_ENABLED: 'true',
    SIDELIGHT_RECEIVER_GRPC_ADDR: `127.0.0.1:${g}`,
    SIDELIGHT_RECEIVER_HTTP_ADDR: `127.0.0.1:${h}`,
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${sink!.grpcPort}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc',
  });
  let code: number | null = null;
  try {
    const r = await fetch(`http://127.0.0.1:${h}/v1/logs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ resourceLogs: [{ resource: { attributes: [{ key: 'service.name', value: { stringValue: 'cli-check' } }] }, scopeLogs: [{ logRecords: [{ body: { stringValue: 'via the cli' } }] }] }] }),
    });
    t.is(r.status, 200);
    const health = (await (await fetch(`${a.healthUrl}/healthz`)).json()) as { receiver: { addresses: { grpc: string; http: string }; received: { logs: number } } };
    t.deepEqual(health.receiver.addresses, { grpc: `127.0.0.1:${g}`, http: `127.0.0.1:${h}` });
    t.is(health.receiver.received.logs, 1);
    const log = await sink!.waitFor('logs.jsonl', (l) => logsOf(l).find((x) => JSON.stringify(x.log['body']) === JSON.stringify({ stringValue: 'via the cli' })));
    t.deepEqual(log.resource['service.name'], { stringValue: 'cli-check' });
  } finally {
    code = await a.stop();
  }
  t.is(code, 0, a.output());
});
