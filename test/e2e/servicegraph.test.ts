/**
 * End to end: the service graph, http.route and `sidelight map` on a real two-service chain,
 * curl → front (Node http, calls back with fetch) → back (python http.server), each with
 * OTEL_SERVICE_NAME, traced by `bin/sidelight run` exporting to a real Collector. Known
 * traffic: three requests that succeed and one that fails at both hops, so every counter
 * and histogram count is exact.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import test from 'ava';
import { collectorBinary, startCollector, type CollectorHistogramPoint, type CollectorSumPoint } from '../helpers/collector.js';
import { SIDELIGHT_BIN, startAgentProcess } from '../helpers/agentproc.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, freePort, NODE, startPythonServer, waitForPort } from '../helpers/servers.js';

const execFileP = promisify(execFile);
const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

const FRONT = (port: number, back: number): string => `
require('node:http').createServer(async (req, res) => {
  const path = req.url.startsWith('/users/') ? '/hello.txt' : '/nope';
  const r = await fetch('http://127.0.0.1:${back}' + path);
  const t = await r.text();
  res.statusCode = r.ok ? 200 : 502;
  res.setHeader('content-length', Buffer.byteLength(t));
  res.end(t);
}).listen(${port}, '127.0.0.1');`;

/** The last exported value of each series (cumulative: the last one is the total). */
function last<T extends { name: string; attributes: Record<string, unknown> }>(points: T[], name: string): Map<string, T> {
  const out = new Map<string, T>();
  for (const p of points) if (p.name === name) out.set(`${String(p.attributes['client'])}->${String(p.attributes['server'])}`, p);
  return out;
}

test.serial('service graph metrics, http.route and `sidelight map` for curl → front → back', async (t) => {
  if (!need(t, unavailable)) return;
  const collector = await startCollector();
  const back = await startPythonServer({ OTEL_SERVICE_NAME: 'back' });
  const frontPort = await freePort();
  const front: ChildProcess = spawn(NODE, ['-e', FRONT(frontPort, back.port)], { env: { ...process.env, OTEL_SERVICE_NAME: 'front' }, stdio: 'ignore' });
  const dir = mkdtempSync(join(tmpdir(), 'sl-graph-'));
  const cfg = join(dir, 'c.yaml');
  writeFileSync(cfg, `filter:\n  ports:\n    include: [${frontPort}, ${back.port}]\nexport:\n  serviceGraph:\n    waitMs: 500\n`);
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  let sums: CollectorSumPoint[] = [];
  let hists: CollectorHistogramPoint[] = [];
  const outputs: Record<string, string> = {};
  try {
    await waitForPort(frontPort);
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_METRIC_EXPORT_INTERVAL: '500' }, ['--config', cfg]);
    for (const p of ['/users/1', '/users/22', '/users/333', '/missing/4']) await curl(['-o', '/dev/null', `http://127.0.0.1:${frontPort}${p}`]);
    const want = (s: CollectorSumPoint[]): boolean => {
      const total = last(s, 'traces_service_graph_request_total');
      return total.get('curl->front')?.value === 4 && total.get('front->back')?.value === 4;
    };
    const deadline = Date.now() + 20_000;
    while (!want((sums = await collector.sums())) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    await new Promise((r) => setTimeout(r, 1200)); // one more export: histograms of the same round
    sums = await collector.sums();
    hists = await collector.metrics();
    const address = new URL(agent.healthUrl).host;
    for (const format of ['text', 'dot', 'mermaid']) {
      outputs[format] = (await execFileP(SIDELIGHT_BIN, ['map', '--address', address, '--format', format])).stdout;
    }
  } finally {
    front.kill('SIGKILL');
    await back.stop();
    await agent?.stop();
    await collector.stop();
  }

  const total = last(sums, 'traces_service_graph_request_total');
  const failed = last(sums, 'traces_service_graph_request_failed_total');
  t.deepEqual([...total.keys()].sort(), ['curl->front', 'front->back'], 'exactly the two edges of the chain');
  for (const edge of ['curl->front', 'front->back']) {
    t.is(total.get(edge)!.value, 4, `${edge} requests`);
    t.is(failed.get(edge)!.value, 1, `${edge} failed`);
    t.true(total.get(edge)!.monotonic);
    t.is(total.get(edge)!.attributes['connection_type'], '');
    t.is(total.get(edge)!.resource['service.name'], 'sidelight');
    t.is(total.get(edge)!.resource['host.name'], hostname());
    for (const name of ['traces_service_graph_request_client_seconds', 'traces_service_graph_request_server_seconds']) {
      const h = last(hists, name).get(edge);
      t.is(h?.count, 4, `${name} ${edge}`);
      t.is(h?.unit, 's');
      t.true((h?.sum ?? 0) > 0);
    }
  }
  // http.route from the path heuristic, as a metric attribute (url.path never is)
  const routes = (service: string): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const p of last(
      hists.filter((h) => h.name === 'http.server.request.duration' && h.resource['service.name'] === service).map((h) => ({ ...h, attributes: { client: h.attributes['http.route'], server: h.attributes['http.response.status_code'] } })),
      'http.server.request.duration',
    ).values()) {
      out[`${String(p.attributes['client'])} ${String(p.attributes['server'])}`] = p.count;
    }
    return out;
  };
  t.deepEqual(routes('front'), { '/users/{id} 200': 3, '/missing/{id} 502': 1 });
  t.deepEqual(routes('back'), { '/hello.txt 200': 3, '/nope 404': 1 });

  const text = outputs['text']!.split('\n').filter(Boolean);
  t.is(text.length, 2, outputs['text']);
  t.regex(text[0]!, /^curl -> front\s+requests=4\s+failed=1\s+client=\d+\.\d\dms\s+server=\d+\.\d\dms$/);
  t.regex(text[1]!, /^front -> back\s+requests=4\s+failed=1\s+client=\d+\.\d\dms\s+server=\d+\.\d\dms$/);
  t.is(
    outputs['dot'],
    'digraph sidelight {\n  rankdir=LR;\n  node [shape=box];\n' +
      '  "curl" -> "front" [label="4 req, 1 failed", color=red];\n' +
      '  "front" -> "back" [label="4 req, 1 failed", color=red];\n}\n',
  );
  t.is(outputs['mermaid'], 'flowchart LR\n  n0["curl"] -->|"4 req, 1 failed"| n1["front"]\n  n1 -->|"4 req, 1 failed"| n2["back"]\n');
});

test.serial('`sidelight map` says plainly when no agent is listening', async (t) => {
  if (!need(t, unavailable)) return;
  const port = await freePort();
  const r = await execFileP(SIDELIGHT_BIN, ['map', '--address', `127.0.0.1:${port}`]).then(
    () => ({ code: 0, stderr: '' }),
    (e: { code: number; stderr: string }) => e,
  );
  t.is(r.code, 1);
  t.regex(r.stderr, new RegExp(`sidelight map: cannot reach the agent at http://127\\.0\\.0\\.1:${port}/map: ECONNREFUSED`));
});
