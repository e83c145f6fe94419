/**
 * End to end through a real OpenTelemetry Collector (built with ocb, scripts/collector.sh):
 * `bin/sidelight run` exports over OTLP gRPC, HTTP/protobuf and HTTP/JSON, selected by the
 * standard OTEL_EXPORTER_OTLP_* variables; assertions on what the Collector wrote.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { collectorBinary, startCollector, type CollectorHistogramPoint, type CollectorSpan } from '../helpers/collector.js';
import { startAgentProcess } from '../helpers/agentproc.js';
import { loadedNames, progIdsHeldBy, stillLoaded } from '../helpers/bpf.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, freePort, startPythonServer } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

/** A config file that traces only these ports, so other traffic on the machine cannot interfere. */
function onlyPorts(...ports: number[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'sl-ports-'));
  writeFileSync(join(dir, 'c.yaml'), `filter:\n  ports:\n    include: [${ports.join(', ')}]\n`);
  return join(dir, 'c.yaml');
}

const cases = [
  { protocol: 'grpc', endpoint: (c: { grpcEndpoint: string }) => c.grpcEndpoint },
  { protocol: 'http/protobuf', endpoint: (c: { httpEndpoint: string }) => c.httpEndpoint },
  { protocol: 'http/json', endpoint: (c: { httpEndpoint: string }) => c.httpEndpoint },
] as const;

for (const { protocol, endpoint } of cases) {
  test.serial(`spans reach a real Collector over OTLP ${protocol}`, async (t) => {
    if (!need(t, unavailable)) return;
    const collector = await startCollector();
    const srv = await startPythonServer();
    let held = new Set<number>();
    let code: number | null = null;
    const agent = await startAgentProcess(
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: endpoint(collector),
        OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
        OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=ci',
      },
      // this server, and the collector's ports: its own export must still not show up
      ['--config', onlyPorts(srv.port, ...[collector.grpcEndpoint, collector.httpEndpoint].map((u) => Number(new URL(u).port)))],
    );
    try {
      const r = await fetch(`${agent.healthUrl}/healthz`);
      t.is(r.status, 200);
      held = progIdsHeldBy(agent.pid);
      t.deepEqual(
        loadedNames(held),
        ['sl_iter_tcp', 'sl_ssl_free', 'sl_ssl_read', 'sl_ssl_read_ex', 'sl_ssl_ret', 'sl_ssl_write', 'sl_ssl_write_ex', 'sl_sys_enter', 'sl_sys_exit', 'sl_tcp_state'],
        'every program (syscalls, TLS uprobes, TCP state, the pickup iterator) loaded and held by the agent',
      );
      await curl([`http://127.0.0.1:${srv.port}/hello.txt`]);
      const isOurs = (s: CollectorSpan): boolean =>
        s.attributes['server.port'] === srv.port && (s.kind === 2 || s.kind === 3);
      const spans = await collector.waitForSpans((all) => all.filter(isOurs).length >= 2, 20_000);
      const server = spans.find((s) => isOurs(s) && s.kind === 2)!; // SPAN_KIND_SERVER
      const client = spans.find((s) => isOurs(s) && s.kind === 3)!; // SPAN_KIND_CLIENT
      t.truthy(server, 'server span exported');
      t.truthy(client, 'client span exported');
      t.is(server.name, 'GET');
      t.is(server.attributes['url.path'], '/hello.txt');
      t.is(server.attributes['http.response.status_code'], 200);
      t.regex(String(server.resource['service.name']), /^python3/);
      t.is(server.resource['process.pid'], srv.pid);
      t.is(server.resource['telemetry.distro.name'], 'sidelight');
      t.is(server.resource['deployment.environment.name'], 'ci');
      t.truthy(server.resource['host.name']);
      t.is(client.resource['service.name'], 'curl');
      t.is(client.attributes['url.full'], `http://127.0.0.1:${srv.port}/hello.txt`);
      t.regex(server.traceId, /^[0-9a-f]{32}$/);
      t.regex(server.spanId, /^[0-9a-f]{16}$/);
      t.true(BigInt(server.endTimeUnixNano) > BigInt(server.startTimeUnixNano));
      // the agent's own export traffic never becomes a span (no feedback loop)
      const collectorPorts = [collector.grpcEndpoint, collector.httpEndpoint].map((u) => Number(new URL(u).port));
      t.false(
        spans.some((s) => collectorPorts.includes(Number(s.attributes['server.port']))),
        'no spans of our own export to this collector',
      );
      t.is(agent.stdout(), '', 'with an endpoint, spans are exported, not printed');
    } finally {
      // cleanup before any assertion below can throw
      code = await agent.stop();
      await srv.stop();
      await collector.stop();
    }
    t.is(code, 0, `agent exits 0 on SIGTERM:\n${agent.output()}`);
    t.deepEqual(await stillLoaded(held), [], 'nothing left loaded or attached after exit');
  });
}

test.serial('with no endpoint, run prints one readable line per span', async (t) => {
  if (!need(t, kernelUnavailable())) return;
  const srv = await startPythonServer();
  const agent = await startAgentProcess({});
  let code: number | null = null;
  try {
    await curl([`http://127.0.0.1:${srv.port}/hello.txt`]);
    const end = Date.now() + 10_000;
    const ours = (): string[] => agent.stdout().split('\n').filter((l) => l.includes('/hello.txt'));
    while (Date.now() < end && ours().length < 2) await new Promise((r) => setTimeout(r, 100));
    const lines = ours();
    t.true(lines.some((l) => /SERVER .*python3.* GET \/hello\.txt 200 /.test(l)), agent.stdout());
    t.true(lines.some((l) => /CLIENT .*curl.* GET http:\/\/127\.0\.0\.1:\d+\/hello\.txt 200 /.test(l)), agent.stdout());
  } finally {
    code = await agent.stop();
    await srv.stop();
  }
  t.is(code, 0);
});

test.serial('request metrics reach the real Collector per workload: HTTP server/client and dns.lookup.duration', async (t) => {
  if (!need(t, unavailable)) return;
  const collector = await startCollector();
  const srv = await startPythonServer();
  const dnsPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sl-metrics-'));
  const cfg = join(dir, 'sidelight.yaml');
  writeFileSync(cfg, `dns:\n  ports: [53, ${dnsPort}]\nfilter:\n  ports:\n    include: [${srv.port}, ${dnsPort}]\n`);
  const dnsmasq = spawn('dnsmasq', ['--no-daemon', `--port=${dnsPort}`, '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts', `--pid-file=${dir}/d.pid`, '--user=root', '--host-record=m.sl.test,10.9.9.9', '--local=/sl.test/'], { stdio: 'ignore' });
  const agent = await startAgentProcess(
    { OTEL_EXPORTER_OTLP_ENDPOINT: collector.httpEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_METRIC_EXPORT_INTERVAL: '500' },
    ['--config', cfg],
  );
  let got: CollectorHistogramPoint[] = [];
  try {
    await curl([`http://127.0.0.1:${srv.port}/hello.txt`]);
    await curl([`http://127.0.0.1:${srv.port}/missing`]).catch(() => '');
    for (let i = 0; i < 20; i++) {
      if (execFileSync('dig', ['@127.0.0.1', '-p', String(dnsPort), '+short', '+time=1', '+tries=1', 'm.sl.test'], { encoding: 'utf8' }).trim() === '10.9.9.9') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const has = (m: CollectorHistogramPoint[], name: string, pred: (p: CollectorHistogramPoint) => boolean = () => true) => m.some((p) => p.name === name && pred(p));
    got = await collector.waitForMetrics(
      (m) =>
        has(m, 'http.server.request.duration', (p) => p.attributes['http.response.status_code'] === 404) &&
        has(m, 'http.client.request.duration') &&
        has(m, 'dns.lookup.duration', (p) => p.attributes['dns.question.name'] === 'm.sl.test'),
      20_000,
    );
  } finally {
    await agent.stop();
    dnsmasq.kill('SIGKILL');
    await srv.stop();
    await collector.stop();
  }
  const last = (name: string, pred: (p: CollectorHistogramPoint) => boolean) => got.filter((p) => p.name === name && pred(p)).at(-1)!;
  const ok = last('http.server.request.duration', (p) => p.attributes['http.response.status_code'] === 200 && String(p.resource['service.name']).startsWith('python3'));
  t.is(ok.unit, 's');
  t.is(ok.count, 1);
  t.deepEqual(ok.explicitBounds, [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]);
  t.deepEqual(ok.attributes, { 'http.request.method': 'GET', 'http.response.status_code': 200, 'http.route': '/hello.txt', 'url.scheme': 'http', 'network.protocol.version': '1.1' });
  t.is(ok.resource['telemetry.distro.name'], 'sidelight');
  const client = last('http.client.request.duration', (p) => p.resource['service.name'] === 'curl' && p.attributes['http.response.status_code'] === 404);
  t.is(client.attributes['error.type'], '404');
  t.is(client.attributes['server.port'], srv.port);
  const dns = last('dns.lookup.duration', (p) => p.attributes['dns.question.name'] === 'm.sl.test');
  t.is(dns.resource['service.name'], 'dig');
  t.is(dns.count, 1);
  t.true(dns.sum > 0 && dns.sum < 1);
});

test.serial('the Collector down at first: spans queued meanwhile are delivered once it is up (gRPC, retried)', async (t) => {
  if (!need(t, unavailable)) return;
  const [grpc, http] = [await freePort(), await freePort()];
  const srv = await startPythonServer();
  // trace only this test's server, whatever else runs on the machine
  const agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${grpc}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, ['--config', onlyPorts(srv.port)]);
  let collector: Awaited<ReturnType<typeof startCollector>> | undefined;
  let code: number | null = null;
  let stats: { export: { exported: number; retries: number; droppedExportFailed: number } } | undefined;
  try {
    for (let i = 0; i < 5; i++) await curl([`http://127.0.0.1:${srv.port}/hello.txt?n=${i}`]);
    await new Promise((r) => setTimeout(r, 2500)); // a batch fails and waits to be retried
    collector = await startCollector({ ports: { grpc, http } });
    const spans = await collector.waitForSpans((s) => s.filter((x) => x.attributes['server.port'] === srv.port).length >= 10, 30_000);
    t.is(spans.filter((x) => x.attributes['server.port'] === srv.port && x.kind === 2).length, 5);
    stats = (await (await fetch(`${agent.healthUrl}/healthz`)).json()) as typeof stats;
  } finally {
    code = await agent.stop();
    await srv.stop();
    await collector?.stop();
  }
  t.is(code, 0);
  t.true(stats!.export.retries >= 1, 'the export was retried');
  t.is(stats!.export.droppedExportFailed, 0, 'nothing was lost');
});
