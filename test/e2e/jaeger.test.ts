/**
 * Sidelight's traces in a real trace viewer, and the Collector recipe (otel-collector.yaml) run
 * for real. A multi-hop chain on this node — curl → frontend (Node http, calls inventory with
 * fetch) → inventory (python3 http.server) — is traced by `bin/sidelight run` (restricted to
 * the chain's ports) and exported:
 *  1. straight to Jaeger v2 (built from the Go module proxy, scripts/jaeger.sh) over OTLP/gRPC;
 *  2. through the real Collector (.tools/otelcol) running otel-collector.yaml unchanged, its
 *     exporters pointed by environment at the same Jaeger, at a Collector standing for Tempo,
 *     and at a Collector standing for the hosted vendor that accepts only the right bearer
 *     token; k8sattributes watches the fake API server (test/helpers/fakek8s.ts, the real
 *     list/watch protocol) through a kubeconfig.
 * Assertions are on what Jaeger's HTTP query API returns (the trace tree: kinds, services,
 * parent ids), and on what the stand-ins wrote. With SIDELIGHT_TRACE_JSON=FILE the direct
 * trace is also written there (scripts/trace-screenshot.sh renders it for the README).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { repoRoot } from '../../src/paths.js';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector, type RunningCollector } from '../helpers/collector.js';
import { FakeK8s, pod } from '../helpers/fakek8s.js';
import { jaegerBinary, startJaeger, tag, traceTree, treeShape, type JaegerTrace, type RunningJaeger } from '../helpers/jaeger.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { metricsOf, sinkConfig, spansOf, startOtelcol, type Otelcol } from '../helpers/otelcol.js';
import { curl, freePort, NODE, waitForPort } from '../helpers/servers.js';
import { makeCert, type Cert } from '../helpers/tlsservers.js';

const execFileP = promisify(execFile);
const RECIPE = join(repoRoot(), 'otel-collector.yaml');
const unavailable =
  kernelUnavailable() ??
  (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)') ??
  (jaegerBinary() ? undefined : 'jaeger not built (bash scripts/jaeger.sh)');

// The two "pods" of the chain, as the API server knows them. frontend is found by its
// k8s.pod.uid, inventory by its k8s.pod.ip (both put on the resource by Sidelight, here from
// the processes' own OTEL_RESOURCE_ATTRIBUTES, as a pod's downward-API env would).
const NS = 'shop';
const FRONTEND = { uid: '3f9c1a52-7d6e-4b8a-9c0d-1e2f3a4b5c6d', name: 'frontend-6b7c8d9f5-x2x9z', rs: 'frontend-6b7c8d9f5', rsUid: 'a1a1a1a1-0000-4000-8000-000000000001' };
const INVENTORY = { uid: '8e7d6c5b-4a39-4281-b7c6-d5e4f3a2b1c0', name: 'inventory-5f4d3c2b1-qq7rs', rs: 'inventory-5f4d3c2b1', rsUid: 'a1a1a1a1-0000-4000-8000-000000000002', ip: '10.42.0.7' };
const VENDOR_TOKEN = 'sl-test-vendor-token-4f1c';

const children: ChildProcess[] = [];
let frontendPort = 0;
let inventoryPort = 0;
let jaeger: RunningJaeger | undefined;

const PY_INVENTORY = `
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        body = b'in stock: ' + self.path.encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
`;
const NODE_FRONTEND = (port: number, inv: number): string => `
require('node:http').createServer(async (req, res) => {
  const id = req.url.split('/').pop();
  const r = await fetch('http://127.0.0.1:${inv}/inventory/' + id);
  const t = await r.text();
  res.setHeader('content-length', Buffer.byteLength(t));
  res.end(t);
}).listen(${port}, '127.0.0.1');`;

async function startPeer(cmd: string, args: string[], port: number, env: NodeJS.ProcessEnv): Promise<void> {
  const p = spawn(cmd, args, { stdio: 'ignore', env: { ...process.env, ...env } });
  children.push(p);
  await waitForPort(port);
}

test.before(async () => {
  if (unavailable) return;
  jaeger = await startJaeger();
  [frontendPort, inventoryPort] = [await freePort(), await freePort()];
  await startPeer('python3', ['-c', PY_INVENTORY, String(inventoryPort)], inventoryPort, {
    OTEL_SERVICE_NAME: 'inventory',
    OTEL_RESOURCE_ATTRIBUTES: `k8s.pod.ip=${INVENTORY.ip}`,
  });
  await startPeer(NODE, ['-e', NODE_FRONTEND(frontendPort, inventoryPort)], frontendPort, {
    OTEL_SERVICE_NAME: 'frontend',
    // service.version as the app itself reports it: the pod label must not overwrite it
    OTEL_RESOURCE_ATTRIBUTES: `k8s.pod.uid=${FRONTEND.uid},service.version=2.0.0-observed`,
  });
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await jaeger?.stop();
});

/** A Sidelight config file tracing only these ports. */
function onlyPorts(dir: string, ...ports: number[]): string {
  const f = join(dir, 'sidelight.yaml');
  writeFileSync(f, `filter:\n  ports:\n    include: [${ports.join(', ')}]\n`);
  return f;
}

/** Polls Jaeger until the trace holding the server span of /checkout/<id> has `n` spans. */
async function waitForTrace(j: RunningJaeger, id: string, n: number, timeoutMs = 30_000): Promise<JaegerTrace> {
  const end = Date.now() + timeoutMs;
  let last: JaegerTrace | undefined;
  for (;;) {
    for (const t of await j.traces('frontend', 50)) {
      if (t.spans.some((s) => tag(s, 'url.path') === `/checkout/${id}`)) last = t;
    }
    if (last && last.spans.length >= n) {
      // the trace read by id (the API a viewer uses), not the search result
      const byId = await j.trace(last.traceID);
      if (byId && byId.spans.length >= n) return byId;
    }
    if (Date.now() > end) {
      throw new Error(`no ${n}-span trace for /checkout/${id} in Jaeger after ${timeoutMs} ms; last: ${JSON.stringify(last && treeShape(traceTree(last)))}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The expected tree, asserted through the API: kinds, services, parents, one trace id. */
function assertChain(t: import('ava').ExecutionContext, tr: JaegerTrace, id: string): void {
  const roots = traceTree(tr);
  const shape = treeShape(roots, (n) => `${n.service} ${n.kind}`);
  t.deepEqual(shape, ['curl client', '  frontend server', '    frontend client', '      inventory server'], `trace tree:\n${treeShape(roots).join('\n')}`);
  t.is(tr.spans.length, 4, 'exactly the four spans of the chain');
  const [curlSpan, feServer, feClient, invServer] = [roots[0]!, roots[0]!.children[0]!, roots[0]!.children[0]!.children[0]!, roots[0]!.children[0]!.children[0]!.children[0]!];
  t.deepEqual(curlSpan.span.references ?? [], [], 'curl starts the trace');
  const parentOf = (n: typeof feServer): string | undefined => n.span.references?.find((r) => r.refType === 'CHILD_OF')?.spanID;
  t.is(parentOf(feServer), curlSpan.span.spanID, 'frontend server ← curl client');
  t.is(parentOf(feClient), feServer.span.spanID, 'frontend client ← frontend server');
  t.is(parentOf(invServer), feClient.span.spanID, 'inventory server ← frontend client');
  t.true(tr.spans.every((s) => s.traceID === tr.traceID), 'one trace id');
  t.is(tag(feServer.span, 'url.path'), `/checkout/${id}`);
  t.is(tag(invServer.span, 'url.path'), `/inventory/${id}`);
  t.is(tag(curlSpan.span, 'url.full'), `http://127.0.0.1:${frontendPort}/checkout/${id}`);
  t.is(tag(feClient.span, 'url.full'), `http://127.0.0.1:${inventoryPort}/inventory/${id}`);
  for (const n of [feServer, invServer]) t.is(tag(n.span, 'http.response.status_code'), 200);
  // children lie inside their parents in time (one clock on one node). Starts: exactly, by
  // causality (a request is read after its write began). Ends: both are read at syscall exit on
  // two CPUs, and a client can return from reading the last response bytes a few µs before the
  // server returns from writing them, so a server's end may pass its client's by that much.
  const END_SLACK_US = 100;
  for (const [p, c] of [[curlSpan, feServer], [feServer, feClient], [feClient, invServer]] as const) {
    const [pEnd, cEnd] = [p.span.startTime + p.span.duration, c.span.startTime + c.span.duration];
    t.true(c.span.startTime >= p.span.startTime, `${c.service} ${c.kind} starts within ${p.service} ${p.kind}: ${c.span.startTime} vs ${p.span.startTime} µs`);
    t.true(cEnd <= pEnd + END_SLACK_US, `${c.service} ${c.kind} ends within ${p.service} ${p.kind}: ${cEnd} vs ${pEnd} µs`);
  }
}

test.serial('Jaeger, straight from Sidelight over OTLP/gRPC: one trace, the exact tree, read through its API', async (t) => {
  if (!need(t, unavailable)) return;
  const j = jaeger!;
  const dir = mkdtempSync(join(tmpdir(), 'sl-jaeger-'));
  let agent: AgentProcess | undefined;
  let tr: JaegerTrace | undefined;
  let code: number | null = null;
  try {
    agent = await startAgentProcess(
      { OTEL_EXPORTER_OTLP_ENDPOINT: j.otlpGrpc, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
      ['--config', onlyPorts(dir, frontendPort, inventoryPort)],
    );
    t.is(await curl([`http://127.0.0.1:${frontendPort}/checkout/direct`]), 'in stock: /inventory/direct');
    tr = await waitForTrace(j, 'direct', 4);
  } finally {
    code = (await agent?.stop()) ?? null;
    rmSync(dir, { recursive: true, force: true });
  }
  t.is(code, 0, agent?.output());
  assertChain(t, tr, 'direct');
  const services = await j.services();
  for (const s of ['curl', 'frontend', 'inventory']) t.true(services.includes(s), `service ${s} in /api/services: ${JSON.stringify(services)}`);
  const proc = tr.processes[tr.spans.find((s) => tag(s, 'url.path') === '/checkout/direct')!.processID]!;
  const ptag = (k: string): unknown => proc.tags.find((x) => x.key === k)?.value;
  t.is(ptag('telemetry.distro.name'), 'sidelight');
  t.is(ptag('k8s.pod.uid'), FRONTEND.uid, 'the process resource reaches Jaeger as process tags');
  // the viewer's page is served (the Go module build carries Jaeger's placeholder UI)
  const page = await fetch(`${j.queryUrl}/`);
  t.is(page.status, 200);
  if (process.env.SIDELIGHT_TRACE_JSON) writeFileSync(process.env.SIDELIGHT_TRACE_JSON, JSON.stringify({ data: [tr] }, null, 2));
});

/** The recipe's environment for this test: every endpoint local. */
function recipeEnv(p: { grpc: number; http: number; health: number }, j: RunningJaeger, tempo: RunningCollector, vendorHttp: number, kubeconfig: string): NodeJS.ProcessEnv {
  return {
    OTLP_GRPC_LISTEN: `127.0.0.1:${p.grpc}`,
    OTLP_HTTP_LISTEN: `127.0.0.1:${p.http}`,
    HEALTH_CHECK_LISTEN: `127.0.0.1:${p.health}`,
    JAEGER_OTLP_ENDPOINT: new URL(j.otlpGrpc).host,
    TEMPO_OTLP_ENDPOINT: tempo.httpEndpoint,
    VENDOR_OTLP_ENDPOINT: `http://127.0.0.1:${vendorHttp}`,
    VENDOR_AUTHORIZATION: `Bearer ${VENDOR_TOKEN}`,
    K8S_AUTH_TYPE: 'kubeConfig',
    KUBECONFIG: kubeconfig,
    // client-go's streaming list (a watch with sendInitialEvents, ended by a bookmark) is not
    // spoken by the fake API server; this client-go feature gate makes the informer use the
    // classic list + watch, which the fake implements. Real API servers speak both.
    KUBE_FEATURE_WatchListClient: 'false',
  };
}

/**
 * HTTPS in front of the fake API server: the Go client (client-go, in k8s_attributes) sends a
 * kubeconfig's bearer token only over TLS, and the fake speaks plain HTTP. Streams each
 * response (watches are long-lived).
 */
async function tlsFront(target: string, cert: Cert): Promise<{ url: string; close(): Promise<void> }> {
  const srv = createHttpsServer({ cert: readFileSync(cert.cert), key: readFileSync(cert.key) }, (req, res) => {
    const up = httpRequest(`${target}${req.url ?? '/'}`, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => (srv.closeAllConnections(), srv.close(() => r()))),
  };
}

/** The vendor stand-in: OTLP/HTTP that only accepts `Authorization: Bearer VENDOR_TOKEN`. */
function vendorConfig(grpcPort: number, httpPort: number, dir: string): object {
  const sink = sinkConfig(grpcPort, httpPort, dir) as { receivers: { otlp: { protocols: { http: Record<string, unknown> } } }; service: Record<string, unknown> };
  sink.receivers.otlp.protocols.http.auth = { authenticator: 'bearertokenauth' };
  return { ...sink, extensions: { bearertokenauth: { token: VENDOR_TOKEN } }, service: { ...sink.service, extensions: ['bearertokenauth'] } };
}

test.serial('the Collector recipe (otel-collector.yaml) validates, then carries the trace and metrics to Jaeger, Tempo and the vendor, with k8s metadata added', async (t) => {
  if (!need(t, unavailable)) return;
  const j = jaeger!;
  const bin = collectorBinary()!;
  const dir = mkdtempSync(join(tmpdir(), 'sl-recipe-'));
  const k8s = await FakeK8s.start();
  // Deployment pods as the API server has them: owned by a ReplicaSet named
  // <deployment>-<pod-template-hash>, with that hash as a label (k8s_attributes derives
  // k8s.deployment.name from the two, without watching ReplicaSets).
  const hash = (rs: string): string => rs.split('-').pop()!;
  k8s.apply(pod({ namespace: NS, name: FRONTEND.name, uid: FRONTEND.uid, ip: '10.42.0.5', labels: { 'app.kubernetes.io/name': 'frontend', 'app.kubernetes.io/version': '1.0.0', 'pod-template-hash': hash(FRONTEND.rs) }, owner: { kind: 'ReplicaSet', name: FRONTEND.rs, uid: FRONTEND.rsUid } }));
  k8s.apply(pod({ namespace: NS, name: INVENTORY.name, uid: INVENTORY.uid, ip: INVENTORY.ip, labels: { 'app.kubernetes.io/name': 'inventory', 'app.kubernetes.io/version': '3.1.0', 'pod-template-hash': hash(INVENTORY.rs) }, owner: { kind: 'ReplicaSet', name: INVENTORY.rs, uid: INVENTORY.rsUid } }));
  const cert = await makeCert();
  const front = await tlsFront(k8s.url, cert);
  const kubeconfig = join(dir, 'kubeconfig');
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      `clusters: [{name: fake, cluster: {server: "${front.url}", certificate-authority: "${cert.cert}"}}]`,
      `users: [{name: otelcol, user: {token: "${k8s.token}"}}]`,
      'contexts: [{name: fake, context: {cluster: fake, user: otelcol}}]',
      'current-context: fake',
      '',
    ].join('\n'),
  );
  let tempo: RunningCollector | undefined;
  let vendor: Otelcol | undefined;
  let recipe: ChildProcess | undefined;
  let recipeOut = '';
  let agent: AgentProcess | undefined;
  let code: number | null = null;
  let tr: JaegerTrace | undefined;
  let unauthorized = 0;
  let validateNoVendor: { code: number; out: string } = { code: 0, out: '' };
  let tempoSpans: Awaited<ReturnType<RunningCollector['spans']>> = [];
  let vendorSpans: ReturnType<typeof spansOf> = [];
  let vendorMetrics: ReturnType<typeof metricsOf> = [];
  try {
    tempo = await startCollector();
    vendor = await startOtelcol(vendorConfig);
    const ports = { grpc: await freePort(), http: await freePort(), health: await freePort() };
    const env = { ...process.env, ...recipeEnv(ports, j, tempo, vendor.httpPort, kubeconfig) };
    // 1. the real Collector validates the file as it is, with its environment
    await execFileP(bin, ['validate', '--config', RECIPE], { env });
    // ... and refuses it, naming the exporter, when the vendor's endpoint is not set
    await execFileP(bin, ['validate', '--config', RECIPE], { env: { ...env, VENDOR_OTLP_ENDPOINT: '' } }).then(
      () => (validateNoVendor = { code: 0, out: '' }),
      (e: { code?: number; stderr?: string; stdout?: string }) => (validateNoVendor = { code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }),
    );
    // 2. run it unchanged. The one test-only override: the Collector's own metrics endpoint
    // (fixed port 8888 by default) is off, so collectors side by side on this machine never collide.
    recipe = spawn(bin, ['--config', RECIPE, '--set=service.telemetry.metrics.level=none'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    recipe.stdout!.on('data', (d: Buffer) => (recipeOut = (recipeOut + d.toString()).slice(-65536)));
    recipe.stderr!.on('data', (d: Buffer) => (recipeOut = (recipeOut + d.toString()).slice(-65536)));
    await waitForPort(ports.grpc, 30_000).catch((e: Error) => {
      throw new Error(`${e.message}\nrecipe collector output:\n${recipeOut}`);
    });
    agent = await startAgentProcess(
      { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${ports.grpc}`, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc', OTEL_METRIC_EXPORT_INTERVAL: '500' },
      ['--config', onlyPorts(dir, frontendPort, inventoryPort)],
    );
    t.is(await curl([`http://127.0.0.1:${frontendPort}/checkout/via-collector`]), 'in stock: /inventory/via-collector');
    tr = await waitForTrace(j, 'via-collector', 4);
    const ids = new Set(tr.spans.map((s) => s.spanID));
    tempoSpans = (await tempo.waitForSpans((all) => all.filter((s) => s.traceId === tr!.traceID).length >= 4, 20_000)).filter((s) => s.traceId === tr!.traceID);
    vendorSpans = await vendor.waitFor('traces.jsonl', (l) => {
      const mine = spansOf(l).filter((s) => ids.has(String(s.span.spanId)));
      return mine.length >= 4 ? mine : undefined;
    });
    vendorMetrics = await vendor.waitFor('metrics.jsonl', (l) => {
      const m = metricsOf(l).filter((x) => x.metric.name === 'http.server.request.duration' && (x.resource['service.name'] as { stringValue?: string } | undefined)?.stringValue === 'frontend');
      return m.length > 0 ? m : undefined;
    });
    // the vendor stand-in really enforces the token: the same request without it is refused
    const r = await fetch(`http://127.0.0.1:${vendor.httpPort}/v1/traces`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    unauthorized = r.status;
  } finally {
    code = (await agent?.stop()) ?? null;
    if (recipe && recipe.exitCode === null) {
      const exited = new Promise((r) => recipe!.once('close', r));
      recipe.kill('SIGTERM');
      const k = setTimeout(() => recipe!.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(k);
    }
    await vendor?.stop();
    await tempo?.stop();
    await front.close();
    await k8s.close();
    cert.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
  t.is(code, 0, agent?.output());
  t.not(validateNoVendor.code, 0, 'validate fails without VENDOR_OTLP_ENDPOINT');
  t.regex(validateNoVendor.out, /otlp_http\/vendor/, validateNoVendor.out);

  // Jaeger: the same tree as straight from Sidelight
  assertChain(t, tr, 'via-collector');
  // k8sattributes enriched each workload from the API server, matching on the resource's
  // k8s.pod.uid (frontend) and k8s.pod.ip (inventory), and kept what Sidelight observed
  const res = (svc: string): Record<string, unknown> => {
    const s = tr!.spans.find((x) => tr!.processes[x.processID]!.serviceName === svc && tag(x, 'span.kind') === 'server')!;
    return Object.fromEntries(tr!.processes[s.processID]!.tags.map((x) => [x.key, x.value]));
  };
  const fe = res('frontend');
  t.is(fe['k8s.pod.name'], FRONTEND.name);
  t.is(fe['k8s.namespace.name'], NS);
  t.is(fe['k8s.deployment.name'], 'frontend');
  t.is(fe['app.kubernetes.io/name'], 'frontend');
  t.is(fe['app.kubernetes.io/version'], '1.0.0');
  t.is(fe['service.version'], '2.0.0-observed', 'what the app reported is not overwritten');
  const inv = res('inventory');
  t.is(inv['k8s.pod.uid'], INVENTORY.uid, 'found by k8s.pod.ip');
  t.is(inv['k8s.pod.name'], INVENTORY.name);
  t.is(inv['k8s.deployment.name'], 'inventory');
  t.is(inv['k8s.pod.ip'], INVENTORY.ip);
  const curlRes = Object.fromEntries(tr.processes[tr.spans.find((x) => tag(x, 'span.kind') === 'client' && !x.references?.length)!.processID]!.tags.map((x) => [x.key, x.value]));
  t.is(curlRes['k8s.pod.name'], undefined, 'curl has no pod identity: nothing attached to it (no connection-IP fallback)');
  t.true(k8s.count('GET', '/api/v1/pods') >= 1, 'k8sattributes listed pods from the API server');

  // Tempo stand-in: the same four spans, same ids and parents
  t.deepEqual(tempoSpans.map((s) => s.spanId).sort(), tr.spans.map((s) => s.spanID).sort());
  t.is(tempoSpans.find((s) => s.resource['service.name'] === 'frontend' && s.kind === 2)?.resource['k8s.deployment.name'], 'frontend');
  // vendor stand-in: spans and metrics arrived, so the bearer token did; without it, 401
  t.is(vendorSpans.length, 4);
  t.is(unauthorized, 401);
  t.true(vendorMetrics.some((m) => (m.resource['k8s.deployment.name'] as { stringValue?: string } | undefined)?.stringValue === 'frontend'), 'metrics enriched too');
});
