/**
 * traceparent injection across "nodes" (http.inject.enabled), with the real kernel and a real
 * Collector: two network namespaces joined by a veth pair stand for two nodes, each with its
 * own cgroup and its own agent (bin/sidelight run, traced and injecting only its cgroup). A
 * Node server on node 1 calls a python server on node 2 over HTTP/1; the trace must cross as
 * one tree with injection on, and stay two traces with it off. Also: a request that already
 * carries traceparent is left exactly as written, and the inserted header does not disturb
 * the request's framing (a POST body arrives intact, the responses are right).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { cgroup2Root } from '../../src/agent.js';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector, type CollectorSpan, type RunningCollector } from '../helpers/collector.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { createNetns, type Netns } from '../helpers/netns.js';
import { freePort, NODE } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

const SERVER = 2;
const CLIENT = 3;
const tag = `${process.pid % 100000}`;
const IP1 = '10.211.7.1';
const IP2 = '10.211.7.2';
const OWN_TP = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

/** node 2: answers with the traceparent it received and the request body it read. */
const PY = `
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def reply(self, body):
        out = json.dumps({'path': self.path, 'traceparent': self.headers.get('traceparent'), 'tpCount': len(self.headers.get_all('traceparent') or []), 'body': body}).encode()
        self.send_response(200); self.send_header('Content-Type', 'application/json'); self.send_header('Content-Length', str(len(out))); self.end_headers(); self.wfile.write(out)
    def do_GET(self): self.reply(None)
    def do_POST(self): self.reply(self.rfile.read(int(self.headers['Content-Length'])).decode())
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('0.0.0.0', int(sys.argv[1])), H).serve_forever()
`;

/**
 * node 1: forwards each request to node 2 (its own traceparent on /own), relays the answer.
 * A new connection per call (agent: false): a keep-alive connection made before the agents
 * started would never be injected (its socket joined no sockhash).
 */
const NODE_SRV = (port: number, target: string): string => `
const http = require('node:http');
http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks);
    const headers = req.url.startsWith('/own') ? { traceparent: '${OWN_TP}' } : {};
    if (req.method === 'POST') headers['content-length'] = body.length;
    const out = http.request('${target}' + req.url, { method: req.method, headers, agent: false }, (r) => {
      const got = [];
      r.on('data', (c) => got.push(c));
      r.on('end', () => {
        const t = Buffer.concat(got);
        res.setHeader('content-length', t.length);
        res.end(t);
      });
    });
    out.end(req.method === 'POST' ? body : undefined);
  });
}).listen(${port}, '0.0.0.0');`;

/** A raw HTTP/1 client (node 1): a head split over two writes, and a TraceParent in another case. */
const RAW_CLIENT = `
import json, socket, sys, time
def req(parts):
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    for i, p in enumerate(parts):
        if i: time.sleep(0.05)
        s.sendall(p.encode())
    data = b''
    while b'\\r\\n\\r\\n' not in data: data += s.recv(65536)
    head, _, body = data.partition(b'\\r\\n\\r\\n')
    n = int([l.split(b':')[1] for l in head.split(b'\\r\\n') if l.lower().startswith(b'content-length')][0])
    while len(body) < n: body += s.recv(65536)
    s.close()
    return json.loads(body)
print(json.dumps([
    req(['GET /split HTTP/1.1\\r\\nHost: x\\r\\n', '\\r\\n']),
    req(['GET /case HTTP/1.1\\r\\nHost: x\\r\\nTraceParent: ${OWN_TP}\\r\\n\\r\\n']),
]))
`;

interface World {
  ns1: Netns;
  ns2: Netns;
  cg1: string;
  cg2: string;
  p1: number;
  p2: number;
  children: ChildProcess[];
  collector: RunningCollector;
}
let world: World | undefined;

/** argv that runs cmd in cgroup `cg` (a path under the cgroup2 mount) and namespace ns. */
function inCgroupAndNs(cg: string, ns: Netns, cmd: string, args: string[]): ChildProcess {
  return spawn('sh', ['-c', `echo $$ > ${cgroup2Root()}${cg}/cgroup.procs && exec "$@"`, 'sh', ...ns.exec, cmd, ...args], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

async function waitUp(ns: Netns, url: string): Promise<void> {
  const end = Date.now() + 15_000;
  while (ns.run('curl', ['-s', '-o', '/dev/null', '--max-time', '1', url]).status !== 0) {
    if (Date.now() > end) throw new Error(`${url} not up in ${ns.name}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** curl on node 1, in node 1's cgroup; resolves stdout. */
function curlOnNode1(args: string[]): Promise<string> {
  return onNode1('curl', ['-sS', '--max-time', '10', ...args]);
}

/** A command on node 1, in node 1's cgroup; resolves stdout. */
function onNode1(cmd: string, args: string[]): Promise<string> {
  const w = world!;
  return new Promise((resolve, reject) => {
    const p = spawn('sh', ['-c', `echo $$ > ${cgroup2Root()}${w.cg1}/cgroup.procs && exec "$@"`, 'sh', ...w.ns1.exec, cmd, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`curl exited ${code}: ${err}`))));
  });
}

function agentConfig(cg: string, inject: boolean, port: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'sl-inject-'));
  const file = join(dir, 'c.yaml');
  writeFileSync(
    file,
    `capture:\n  pollIntervalMs: 20\nfilter:\n  cgroups:\n    include: [${cg}]\nhttp:\n  inject:\n    enabled: ${inject}\n    cgroup: ${cg}\n    ports: [${port}]\nexport:\n  batch:\n    delayMs: 100\n`,
  );
  return file;
}

async function startAgents(inject: boolean): Promise<AgentProcess[]> {
  const w = world!;
  const env = { OTEL_EXPORTER_OTLP_ENDPOINT: w.collector.grpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' };
  const a1 = await startAgentProcess(env, ['--config', agentConfig(w.cg1, inject, w.p2)]);
  try {
    return [a1, await startAgentProcess(env, ['--config', agentConfig(w.cg2, inject, w.p2)])];
  } catch (e) {
    await a1.stop();
    throw e;
  }
}

test.before(async () => {
  if (unavailable) return;
  const ns1 = createNetns(`sl-inj1-${tag}`);
  const ns2 = createNetns(`sl-inj2-${tag}`);
  const [v1, v2] = [`sli1-${tag}`, `sli2-${tag}`];
  const sh = (...a: string[]): void => void execFileSync('ip', a, { stdio: 'ignore' });
  sh('link', 'add', v1, 'type', 'veth', 'peer', 'name', v2);
  sh('link', 'set', v1, 'netns', ns1.name);
  sh('link', 'set', v2, 'netns', ns2.name);
  sh('-n', ns1.name, 'addr', 'add', `${IP1}/24`, 'dev', v1);
  sh('-n', ns2.name, 'addr', 'add', `${IP2}/24`, 'dev', v2);
  sh('-n', ns1.name, 'link', 'set', v1, 'up');
  sh('-n', ns2.name, 'link', 'set', v2, 'up');
  const cg1 = `/sl-inject-${tag}-1`;
  const cg2 = `/sl-inject-${tag}-2`;
  mkdirSync(`${cgroup2Root()}${cg1}`, { recursive: true });
  mkdirSync(`${cgroup2Root()}${cg2}`, { recursive: true });
  const [p1, p2] = [await freePort(), await freePort()];
  const collector = await startCollector();
  world = { ns1, ns2, cg1, cg2, p1, p2, children: [], collector };
  world.children.push(inCgroupAndNs(cg2, ns2, 'python3', ['-c', PY, String(p2)]));
  world.children.push(inCgroupAndNs(cg1, ns1, NODE, ['-e', NODE_SRV(p1, `http://${IP2}:${p2}`)]));
  await waitUp(ns2, `http://${IP2}:${p2}/up`);
  await waitUp(ns1, `http://127.0.0.1:${p1}/up`);
});

test.after.always(async () => {
  if (!world) return;
  for (const c of world.children) c.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 200));
  await world.collector.stop();
  world.ns1.remove(); // the veth pair goes with its namespaces
  world.ns2.remove();
  for (const cg of [world.cg1, world.cg2]) {
    try {
      rmdirSync(`${cgroup2Root()}${cg}`);
    } catch {
      /* a process may still be exiting; an empty cgroup is harmless */
    }
  }
});

interface Answer {
  path: string;
  traceparent: string | null;
  tpCount: number;
  body: string | null;
}

/** node 1's SERVER and CLIENT spans and node 2's SERVER span of `path`. */
function hops(spans: CollectorSpan[], path: string) {
  const w = world!;
  return {
    server1: spans.find((s) => s.kind === SERVER && s.attributes['url.path'] === path && s.attributes['server.port'] === w.p1),
    client1: spans.find((s) => s.kind === CLIENT && s.attributes['url.full'] === `http://${IP2}:${w.p2}${path}`),
    server2: spans.find((s) => s.kind === SERVER && s.attributes['url.path'] === path && s.attributes['server.port'] === w.p2),
  };
}

async function waitHops(path: string): Promise<ReturnType<typeof hops>> {
  try {
    const spans = await world!.collector.waitForSpans((all) => Object.values(hops(all, path)).every(Boolean), 20_000);
    return hops(spans, path);
  } catch {
    const seen = (await world!.collector.spans()).map((s) => `${s.kind} ${String(s.attributes['url.full'] ?? s.attributes['url.path'])} :${String(s.attributes['server.port'])}`);
    const missing = Object.entries(hops(await world!.collector.spans(), path)).filter(([, v]) => !v).map(([k]) => k);
    throw new Error(`spans of ${path} missing: ${missing.join(', ')}; the Collector has: ${seen.join('; ')}`);
  }
}

async function injectStats(a: AgentProcess): Promise<Record<string, number>> {
  const r = (await (await fetch(`${a.healthUrl}/healthz`)).json()) as { inject?: Record<string, number> | null; detail?: { inject?: Record<string, number> } };
  return (r.inject ?? r.detail?.inject ?? {}) as Record<string, number>;
}

test.serial('injection on: node 1 → node 2 is one trace tree; requests with traceparent and bodies are untouched', async (t) => {
  if (!need(t, unavailable)) return;
  const w = world!;
  const agents = await startAgents(true);
  let answers: Answer[] = [];
  let stats1: Record<string, number> = {};
  let h: ReturnType<typeof hops> | undefined;
  let own: ReturnType<typeof hops> | undefined;
  try {
    answers.push(JSON.parse(await curlOnNode1([`http://127.0.0.1:${w.p1}/on`])) as Answer);
    answers.push(JSON.parse(await curlOnNode1([`http://127.0.0.1:${w.p1}/own`])) as Answer);
    answers.push(JSON.parse(await curlOnNode1(['-X', 'POST', '--data-binary', 'hello body\r\nwith CRLF', `http://127.0.0.1:${w.p1}/post`])) as Answer);
    answers.push(...(JSON.parse(await onNode1('python3', ['-c', RAW_CLIENT, IP2, String(w.p2)])) as Answer[]));
    h = await waitHops('/on');
    own = await waitHops('/own');
    stats1 = await injectStats(agents[0]!);
  } finally {
    for (const a of agents) await a.stop();
  }
  const [on, ownAnswer, post, split, otherCase] = answers as [Answer, Answer, Answer, Answer, Answer];
  t.is(split.traceparent, null, 'a head split over two writes is left alone');
  t.is(otherCase.traceparent, OWN_TP, '"TraceParent:" (another case) counts as present: left alone');
  t.is(otherCase.tpCount, 1);
  // what node 2 received
  t.regex(on.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/, 'node 2 received an injected traceparent');
  t.is(on.tpCount, 1);
  t.is(ownAnswer.traceparent, OWN_TP, 'a request that carries traceparent reaches node 2 exactly as written');
  t.is(ownAnswer.tpCount, 1, 'and no second one was added');
  t.is(post.body, 'hello body\r\nwith CRLF', 'the POST body arrived intact (Content-Length framing untouched)');
  t.regex(post.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  // the tree, as the Collector received it from the two agents
  const { server1, client1, server2 } = h!;
  const [, trace = '', span = ''] = on.traceparent!.split('-');
  t.is(client1!.traceId, trace, 'node 1 CLIENT span has the injected trace id');
  t.is(client1!.spanId, span, 'node 1 CLIENT span has the injected span id');
  t.is(client1!.parentSpanId, server1!.spanId, 'node 1 CLIENT ← node 1 SERVER');
  t.is(server1!.traceId, trace, 'node 1 SERVER is in the same trace');
  t.is(server2!.traceId, trace, 'node 2 SERVER is in the same trace');
  t.is(server2!.parentSpanId, client1!.spanId, 'node 2 SERVER ← node 1 CLIENT');
  t.regex(String(server2!.resource['service.name']), /^python3/);
  t.regex(String(client1!.resource['service.name']), /node/);
  // the untouched request: node 2's span joins the trace node 1's process wrote itself
  const [, ownTrace = '', ownSpan = ''] = OWN_TP.split('-');
  t.is(own!.server2!.traceId, ownTrace);
  t.is(own!.server2!.parentSpanId, ownSpan);
  t.true((stats1['injected'] ?? 0) >= 2, `agent 1 counted its injections: ${JSON.stringify(stats1)}`);
  t.true((stats1['hasTraceparent'] ?? 0) >= 2, 'agent 1 counted the requests it left alone');
  t.true((stats1['incomplete'] ?? 0) >= 1, 'and the split head');
  t.true((stats1['clientsMatched'] ?? 0) >= 2, JSON.stringify(stats1));
});

test.serial('injection off: the same call is two separate traces and node 2 sees no traceparent', async (t) => {
  if (!need(t, unavailable)) return;
  const w = world!;
  const agents = await startAgents(false);
  let answer: Answer | undefined;
  let h: ReturnType<typeof hops> | undefined;
  let stats1: Record<string, number> | null = null;
  try {
    answer = JSON.parse(await curlOnNode1([`http://127.0.0.1:${w.p1}/off`])) as Answer;
    h = await waitHops('/off');
    const r = (await (await fetch(`${agents[0]!.healthUrl}/healthz`)).json()) as { inject?: unknown; detail?: { inject?: unknown } };
    stats1 = (r.inject ?? r.detail?.inject ?? null) as Record<string, number> | null;
  } finally {
    for (const a of agents) await a.stop();
  }
  t.is(answer!.traceparent, null, 'nothing was added on the wire');
  const { server1, client1, server2 } = h!;
  t.is(client1!.parentSpanId, server1!.spanId, 'node 1 is still one tree (thread parenting)');
  t.not(server2!.traceId, client1!.traceId, 'node 2 starts its own trace');
  t.is(server2!.parentSpanId, '', 'node 2 SERVER has no parent');
  t.is(stats1, null, 'no injection object loaded');
});
