/**
 * Traces across hops with an SDK-instrumented service in the middle (issue #5), real kernel,
 * real Collector, injection on:
 *
 *   curl → A (python ThreadingHTTPServer: resolves a name, calls B with urllib)
 *        → B (Node, @opentelemetry/sdk-node + instrumentation-http, exporting OTLP/HTTP
 *             traces to the same Collector; calls C with http.get)
 *        → C (Go net/http, pure-Go resolver: resolves a name)
 *
 * each lookup answered by dnsmasq in the node's network namespace. A sends no traceparent of
 * its own: B's SDK SERVER span joins A's trace only through Sidelight's injected header. B is
 * seen exporting traces (POST /v1/traces in its traffic, through a port forwarder into the
 * Collector), so Sidelight drops its own SERVER/CLIENT spans of B (sdk.dedup). From the
 * Collector's output every request's tree is rebuilt and checked exactly:
 *
 *   curl CLIENT → A SERVER → { A DNS, A CLIENT → B SERVER (SDK) → B CLIENT (SDK) → C SERVER → C DNS }
 *
 * (the Go lookup may have no parent, never a wrong one): zero wrong parents, zero merged
 * traces, no Sidelight span of B. Run twice: one node (one netns, one cgroup, one agent), and
 * two nodes (two netns joined by a veth pair, curl and A on node 1, B and C on node 2, each
 * with its own cgroup and its own agent restricted to it). Agents are `bin/sidelight run`.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { cgroup2Root } from '../../src/agent.js';
import { repoRoot } from '../../src/paths.js';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector, type CollectorSpan, type RunningCollector } from '../helpers/collector.js';
import { lossCounters } from '../helpers/counters.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { createNetns, type Netns } from '../helpers/netns.js';
import { freePort, NODE } from '../helpers/servers.js';

const goMissing = (() => {
  try {
    execFileSync('go', ['version'], { stdio: 'ignore' });
    return undefined;
  } catch {
    return 'go toolchain not installed';
  }
})();
const unavailable = kernelUnavailable() ?? goMissing ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

const SERVER = 2;
const CLIENT = 3;
const CONCURRENT = 20;
const tag = `${process.pid % 100000}`;
const IP1 = '10.213.7.1';
const IP2 = '10.213.7.2';

const PY_A = `
import http.server, socket, sys, urllib.request
B = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        rid = self.path.rsplit('/', 1)[-1]
        socket.getaddrinfo(f'a-{rid}.sl.test', 80, socket.AF_INET)
        body = urllib.request.urlopen(f'http://{B}/b/{rid}').read()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    request_queue_size = 128
S(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
`;

/** B: the real Node SDK, configured by OTEL_* only; a new connection per call to C. */
const NODE_B = (port: number, c: number): string => `
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { HttpInstrumentation } = require('@opentelemetry/instrumentation-http');
const sdk = new NodeSDK({ instrumentations: [new HttpInstrumentation()] });
sdk.start();
const http = require('http');
http.createServer((req, res) => {
  const id = req.url.split('/').pop();
  http.get({ host: '127.0.0.1', port: ${c}, path: '/c/' + id, agent: false }, (r) => {
    const got = [];
    r.on('data', (d) => got.push(d));
    r.on('end', () => {
      const t = Buffer.concat(got);
      res.setHeader('content-length', t.length);
      res.end(t);
    });
  }).on('error', (e) => {
    res.statusCode = 502;
    res.end(String(e));
  });
}).listen(${port}, '0.0.0.0');
process.on('SIGTERM', () => sdk.shutdown().finally(() => process.exit(0)));`;

const GO_C = `package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
		addrs, err := net.LookupHost("c-" + id + ".sl.test")
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintf(w, "c:%s:%s", r.URL.Path, addrs[0])
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		panic(err)
	}
}
`;

/**
 * A TCP forwarder listening on 127.0.0.1:<port> inside a network namespace and connecting to
 * 127.0.0.1:<target> in the host's (where the Collector listens): the listening socket is made
 * after setns() into the namespace, the main thread then returns to the host's namespace.
 */
const FORWARDER = `
import ctypes, os, socket, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
host = os.open('/proc/self/ns/net', os.O_RDONLY)
target = os.open(sys.argv[1], os.O_RDONLY)
if libc.setns(target, CLONE_NEWNET) != 0: raise OSError(ctypes.get_errno(), 'setns into ' + sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', int(sys.argv[2]))); srv.listen(64)
if libc.setns(host, CLONE_NEWNET) != 0: raise OSError(ctypes.get_errno(), 'setns back')
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    finally:
        try: b.shutdown(socket.SHUT_WR)
        except OSError: pass
print('ready', flush=True)
while True:
    c, _ = srv.accept()
    u = socket.create_connection(('127.0.0.1', int(sys.argv[3])))
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    threading.Thread(target=pipe, args=(u, c), daemon=True).start()
`;

let collector: RunningCollector | undefined;
let chainC = '';

test.before(async () => {
  if (unavailable) return;
  const tmp = mkdtempSync(join(tmpdir(), 'sl-chainsdk-'));
  writeFileSync(join(tmp, 'go.mod'), 'module chainc\n\ngo 1.21\n');
  writeFileSync(join(tmp, 'main.go'), GO_C);
  chainC = join(tmp, 'chainc');
  execFileSync('go', ['build', '-o', chainC, '.'], { cwd: tmp, env: { ...process.env, CGO_ENABLED: '0' } });
  collector = await startCollector();
});

test.after.always(async () => {
  await collector?.stop();
});

/** A node of the test: its network namespace and cgroup. */
interface Node {
  ns: Netns;
  cg: string;
}

function makeCgroup(name: string): string {
  const cg = `/${name}`;
  mkdirSync(`${cgroup2Root()}${cg}`, { recursive: true });
  return cg;
}

/** cmd in the node's cgroup and namespace (resolv.conf of the namespace); stderr kept for errors. */
function spawnOn(node: Node, cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess & { err: () => string } {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
  const p = spawn('sh', ['-c', `echo $$ > ${cgroup2Root()}${node.cg}/cgroup.procs && exec "$@"`, 'sh', ...node.ns.exec, cmd, ...args], {
    env: { ...clean, ...env },
    cwd: repoRoot(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  p.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  p.stdout.resume();
  return Object.assign(p, { err: () => err });
}

/** A command on the node (its cgroup and namespace); resolves stdout. */
function runOn(node: Node, cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn('sh', ['-c', `echo $$ > ${cgroup2Root()}${node.cg}/cgroup.procs && exec "$@"`, 'sh', ...node.ns.exec, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    // 'close', not 'exit': exit can come before the last of stdout was read
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}: ${err}`))));
  });
}

async function waitUp(ns: Netns, url: string, what: () => string): Promise<void> {
  const end = Date.now() + 20_000;
  while (ns.run('curl', ['-s', '-o', '/dev/null', '--max-time', '2', url]).status !== 0) {
    if (Date.now() > end) throw new Error(`${url} not up in ${ns.name}: ${what()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function agentConfig(cg: string, injectPorts: number[]): string {
  const file = join(mkdtempSync(join(tmpdir(), 'sl-chainsdk-')), 'c.yaml');
  writeFileSync(
    file,
    `capture:\n  pollIntervalMs: 20\nfilter:\n  cgroups:\n    include: [${cg}]\nhttp:\n  inject:\n    enabled: true\n    cgroup: ${cg}\n    ports: [${injectPorts.join(', ')}]\nexport:\n  batch:\n    delayMs: 100\nsdk:\n  dedup: true\n`,
  );
  return file;
}

async function healthz(a: AgentProcess): Promise<Record<string, unknown>> {
  const r = (await (await fetch(`${a.healthUrl}/healthz`)).json()) as Record<string, unknown> & { detail?: Record<string, unknown> };
  return r.detail ?? r;
}

interface SdkStats {
  dedup: boolean;
  processes: number;
  exportsSeen: number;
  markedTraffic: number;
  markedReceiver: number;
  deduplicated: number;
}

interface Run {
  ids: string[];
  bodies: Map<string, string>;
  spans: CollectorSpan[];
  loadStartNs: bigint;
  sdk: SdkStats;
  inject: Record<string, number>[];
  /** each agent's non-zero loss and trace-stitching counters (test/helpers/counters.ts), for the log */
  counters: Record<string, number>[];
}

/**
 * Sets up the chain (`twoNodes`: curl and A on node 1, B and C on node 2), starts the agents,
 * waits until B's first export marked it, sends CONCURRENT requests at once, and collects what
 * the Collector received. Tears everything down before returning (or throwing).
 */
async function runChain(prefix: string, twoNodes: boolean): Promise<Run> {
  const c = collector!;
  const collectorHttpPort = Number(new URL(c.httpEndpoint).port);
  const cleanup: (() => void | Promise<void>)[] = [];
  try {
    const dns = 'nameserver 127.0.0.1\noptions timeout:1 attempts:2\n';
    const ns1 = createNetns(`sl-csdk1-${tag}`, dns);
    cleanup.push(() => ns1.remove());
    const ns2 = twoNodes ? createNetns(`sl-csdk2-${tag}`, dns) : ns1;
    if (twoNodes) cleanup.push(() => ns2.remove());
    const cg1 = makeCgroup(`sl-csdk-${tag}-${prefix}-1`);
    const cg2 = twoNodes ? makeCgroup(`sl-csdk-${tag}-${prefix}-2`) : cg1;
    cleanup.push(() => {
      for (const cg of new Set([cg1, cg2])) {
        try {
          rmdirSync(`${cgroup2Root()}${cg}`);
        } catch {
          /* a process may still be exiting; an empty cgroup is harmless */
        }
      }
    });
    const node1: Node = { ns: ns1, cg: cg1 };
    const node2: Node = { ns: ns2, cg: cg2 };
    let bHost = '127.0.0.1';
    if (twoNodes) {
      const [v1, v2] = [`slc1-${tag}`, `slc2-${tag}`];
      const sh = (...a: string[]): void => void execFileSync('ip', a, { stdio: 'ignore' });
      sh('link', 'add', v1, 'type', 'veth', 'peer', 'name', v2);
      sh('link', 'set', v1, 'netns', ns1.name);
      sh('link', 'set', v2, 'netns', ns2.name);
      sh('-n', ns1.name, 'addr', 'add', `${IP1}/24`, 'dev', v1);
      sh('-n', ns2.name, 'addr', 'add', `${IP2}/24`, 'dev', v2);
      sh('-n', ns1.name, 'link', 'set', v1, 'up');
      sh('-n', ns2.name, 'link', 'set', v2, 'up');
      bHost = IP2;
    }
    const [pA, pB, pC, pFwd] = [await freePort(), await freePort(), await freePort(), await freePort()];

    // the agents first: every connection of the chain is then made while they watch
    const env = { OTEL_EXPORTER_OTLP_ENDPOINT: c.grpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' };
    const agents: AgentProcess[] = [];
    cleanup.push(async () => {
      for (const a of agents) await a.stop();
    });
    if (twoNodes) {
      agents.push(await startAgentProcess(env, ['--config', agentConfig(cg1, [pB])]));
      agents.push(await startAgentProcess(env, ['--config', agentConfig(cg2, [pB, pC])]));
    } else {
      agents.push(await startAgentProcess(env, ['--config', agentConfig(cg1, [pB, pC])]));
    }
    const agentOfB = agents.at(-1)!;

    const children: ChildProcess[] = [];
    cleanup.push(async () => {
      for (const ch of children) ch.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 200));
    });
    for (const ns of new Set([ns1, ns2])) {
      ns.spawn('dnsmasq', [
        '--no-daemon', '--port=53', '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts',
        `--pid-file=${mkdtempSync(join(tmpdir(), 'sl-chainsdk-'))}/dnsmasq.pid`, '--user=root', '--local=/sl.test/', '--address=/sl.test/10.9.1.1',
      ]);
    }
    // B's OTLP endpoint: 127.0.0.1:pFwd in node 2's namespace, forwarded to the Collector
    const fwd = spawn('python3', ['-c', FORWARDER, `/var/run/netns/${ns2.name}`, String(pFwd), String(collectorHttpPort)], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(fwd);
    await new Promise<void>((resolve, reject) => {
      fwd.stdout.once('data', () => resolve());
      fwd.once('exit', (code) => reject(new Error(`forwarder exited ${code}`)));
    });
    const cProc = spawnOn(node2, chainC, [String(pC)], { GODEBUG: 'netdns=go' });
    const bProc = spawnOn(node2, NODE, ['-e', NODE_B(pB, pC)], {
      OTEL_SERVICE_NAME: `chain-b-${prefix}`,
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${pFwd}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf',
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_METRICS_EXPORTER: 'none',
      OTEL_LOGS_EXPORTER: 'none',
      OTEL_BSP_SCHEDULE_DELAY: '200',
      OTEL_SEMCONV_STABILITY_OPT_IN: 'http',
    });
    const aProc = spawnOn(node1, 'python3', ['-c', PY_A, String(pA), `${bHost}:${pB}`]);
    children.push(cProc, bProc, aProc);
    await waitUp(ns2, `http://127.0.0.1:${pC}/c/up`, () => cProc.err());
    await waitUp(ns2, `http://127.0.0.1:${pB}/b/up`, () => bProc.err());
    await waitUp(ns1, `http://127.0.0.1:${pA}/a/up`, () => `${aProc.err()} ${bProc.err()}`);

    // B's first export (its spans of the warm-up requests) marks it as SDK-instrumented
    const end = Date.now() + 20_000;
    let sdk = (await healthz(agentOfB))['sdk'] as SdkStats;
    while (sdk.markedTraffic < 1) {
      if (Date.now() > end) throw new Error(`B was never seen exporting: ${JSON.stringify(sdk)}; B: ${bProc.err()}`);
      await new Promise((r) => setTimeout(r, 100));
      sdk = (await healthz(agentOfB))['sdk'] as SdkStats;
    }

    const ids = Array.from({ length: CONCURRENT }, (_, i) => `${prefix}${i}`);
    const loadStartNs = BigInt(Date.now()) * 1_000_000n;
    const bodies = new Map<string, string>();
    // -i: the status line and headers too, to say what went wrong
    await Promise.all(ids.map(async (id) => bodies.set(id, await runOn(node1, 'curl', ['-sS', '-i', '--max-time', '20', `http://127.0.0.1:${pA}/a/${id}`]))));

    const complete = (all: CollectorSpan[]): boolean =>
      ids.every((id) => {
        const h = classify(all, id);
        return !!(h.curl && h.aSrv && h.aDns.length > 0 && h.aOut && h.bSrv && h.bOut && h.cSrv && h.cDns.length > 0);
      });
    try {
      await c.waitForSpans(complete, 30_000);
    } catch {
      /* reported below: the assertions name what is missing */
    }
    // give a duplicate time to show up before counting
    await new Promise((r) => setTimeout(r, 1500));
    const spans = await c.spans();
    const final = await healthz(agentOfB);
    const inject: Record<string, number>[] = [];
    const counters: Record<string, number>[] = [];
    for (const a of agents) {
      const h = await healthz(a);
      inject.push((h['inject'] ?? {}) as Record<string, number>);
      counters.push(lossCounters({ ...h, inject: undefined })); // inject: logged whole
    }
    return { ids, bodies, spans, loadStartNs, sdk: final['sdk'] as SdkStats, inject, counters };
  } finally {
    for (const f of cleanup.reverse()) {
      try {
        await f();
      } catch {
        /* best effort */
      }
    }
  }
}

const isSidelight = (s: CollectorSpan): boolean => s.resource['telemetry.distro.name'] === 'sidelight';
const isSdk = (s: CollectorSpan): boolean => s.resource['telemetry.sdk.language'] === 'nodejs' && !isSidelight(s);
const target = (s: CollectorSpan): string => String(s.attributes['url.path'] ?? s.attributes['url.full'] ?? s.attributes['http.target'] ?? s.attributes['http.url'] ?? '');
const endsAt = (s: CollectorSpan, path: string): boolean => target(s).endsWith(path);

/** The spans of request `id`, by hop. `dupes`: Sidelight spans of B's hop (must be none). */
function classify(all: CollectorSpan[], id: string) {
  const one = (pred: (s: CollectorSpan) => boolean): CollectorSpan | undefined => all.find(pred);
  const dnsOf = (name: string): CollectorSpan[] => all.filter((s) => isSidelight(s) && s.attributes['dns.question.name'] === name);
  return {
    curl: one((s) => isSidelight(s) && s.kind === CLIENT && endsAt(s, `/a/${id}`)),
    aSrv: one((s) => isSidelight(s) && s.kind === SERVER && endsAt(s, `/a/${id}`)),
    aDns: dnsOf(`a-${id}.sl.test`),
    aOut: one((s) => isSidelight(s) && s.kind === CLIENT && endsAt(s, `/b/${id}`)),
    bSrv: one((s) => isSdk(s) && s.kind === SERVER && endsAt(s, `/b/${id}`)),
    bOut: one((s) => isSdk(s) && s.kind === CLIENT && endsAt(s, `/c/${id}`)),
    cSrv: one((s) => isSidelight(s) && s.kind === SERVER && endsAt(s, `/c/${id}`)),
    cDns: dnsOf(`c-${id}.sl.test`),
    dupes: all.filter((s) => isSidelight(s) && ((s.kind === SERVER && endsAt(s, `/b/${id}`)) || (s.kind === CLIENT && endsAt(s, `/c/${id}`)))),
  };
}

interface Verdict {
  missing: string[];
  wrongParents: string[];
  merged: string[];
  duplicates: string[];
  parented: number;
  parentable: number;
  goDnsWithoutParent: number;
  bSidelightSpans: number;
}

/** Rebuilds every request's tree from the Collector's spans and compares it with the expected one. */
function judge(run: Run): Verdict {
  const v: Verdict = { missing: [], wrongParents: [], merged: [], duplicates: [], parented: 0, parentable: 0, goDnsWithoutParent: 0, bSidelightSpans: 0 };
  const traceOwners = new Map<string, Set<string>>();
  const own = (s: CollectorSpan, id: string): void => {
    const set = traceOwners.get(s.traceId) ?? new Set<string>();
    set.add(id);
    traceOwners.set(s.traceId, set);
  };
  let bPid: unknown;
  for (const id of run.ids) {
    const h = classify(run.spans, id);
    for (const [k, val] of Object.entries(h)) if (k !== 'dupes' && (val === undefined || (Array.isArray(val) && val.length === 0))) v.missing.push(`${id}:${k}`);
    for (const d of h.dupes) v.duplicates.push(`${id}: ${d.kind === SERVER ? 'SERVER' : 'CLIENT'} ${target(d)} pid ${String(d.resource['process.pid'])}`);
    bPid ??= h.bSrv?.resource['process.pid'];
    const expect = (name: string, s: CollectorSpan | undefined, parent: CollectorSpan | undefined): void => {
      if (!s) return;
      own(s, id);
      v.parentable++;
      if (s.parentSpanId === '') return;
      if (parent && s.parentSpanId === parent.spanId && s.traceId === parent.traceId) v.parented++;
      else v.wrongParents.push(`${id}:${name} parent ${s.parentSpanId} (want ${parent?.spanId ?? '?'})`);
    };
    if (h.curl) {
      own(h.curl, id);
      if (h.curl.parentSpanId !== '') v.wrongParents.push(`${id}:curl has parent ${h.curl.parentSpanId}`);
    }
    expect('aSrv', h.aSrv, h.curl);
    for (const d of h.aDns) expect('aDns', d, h.aSrv);
    expect('aOut', h.aOut, h.aSrv);
    expect('bSrv', h.bSrv, h.aOut);
    expect('bOut', h.bOut, h.bSrv);
    expect('cSrv', h.cSrv, h.bOut);
    for (const d of h.cDns) {
      if (d.parentSpanId === '') v.goDnsWithoutParent++;
      expect('cDns', d, h.cSrv);
    }
    // every hop but C's (Go) lookups must have its parent: a missing one is a miss, not just uncounted
    for (const [name, s] of [['aSrv', h.aSrv], ['aOut', h.aOut], ['bSrv', h.bSrv], ['bOut', h.bOut], ['cSrv', h.cSrv], ...h.aDns.map((d) => ['aDns', d] as const)] as const) {
      if (s && s.parentSpanId === '') v.wrongParents.push(`${id}:${name} has no parent`);
    }
  }
  for (const [trace, ids] of traceOwners) if (ids.size > 1) v.merged.push(`${trace}: ${[...ids].join(',')}`);
  // Sidelight's own spans of B after it was marked: none (its hops, and its export calls)
  v.bSidelightSpans = run.spans.filter((s) => isSidelight(s) && bPid !== undefined && s.resource['process.pid'] === bPid && BigInt(s.startTimeUnixNano) >= run.loadStartNs).length;
  return v;
}

function check(t: ExecutionContext, run: Run, label: string): void {
  for (const id of run.ids) {
    const full = run.bodies.get(id) ?? '';
    t.is(full.slice(full.indexOf('\r\n\r\n') + 4), `c:/c/${id}:10.9.1.1`, `${label}: response of ${id}: ${JSON.stringify(full)}`);
  }
  const v = judge(run);
  t.log(
    `${label}: ${run.ids.length} concurrent requests; ${v.parented}/${v.parentable} spans got their expected parent (${v.goDnsWithoutParent} Go lookups without a parent), ` +
      `${v.wrongParents.length} wrong parents, ${v.merged.length} merged traces; sdk ${JSON.stringify(run.sdk)}; inject ${JSON.stringify(run.inject)}; counters ${JSON.stringify(run.counters)}`,
  );
  t.deepEqual(v.missing, [], `${label}: every span of every request reached the Collector`);
  t.deepEqual(v.wrongParents, [], `${label}: zero wrong parents`);
  t.deepEqual(v.merged, [], `${label}: zero merged traces`);
  t.deepEqual(v.duplicates, [], `${label}: no Sidelight SERVER/CLIENT span of B (the SDK reports those hops)`);
  t.is(v.bSidelightSpans, 0, `${label}: no Sidelight span of B at all once it was seen exporting`);
  t.true(run.sdk.dedup);
  t.true(run.sdk.markedTraffic >= 1 && run.sdk.markedReceiver === 0, `${label}: B detected from its traffic: ${JSON.stringify(run.sdk)}`);
  t.true(run.sdk.deduplicated >= 2 * run.ids.length, `${label}: B's SERVER and CLIENT spans of each request were suppressed: ${JSON.stringify(run.sdk)}`);
  for (const st of run.inject) t.is(st['parentMismatch'] ?? 0, 0, `${label}: ${JSON.stringify(st)}`);
  t.is(v.parented + v.goDnsWithoutParent, v.parentable, `${label}: every span but Go's lookups has its parent`);
}

test.serial('one node: curl → A (python) → B (Node SDK) → C (Go), 20 in flight: exact trees, B once per hop', async (t) => {
  if (!need(t, unavailable)) return;
  check(t, await runChain('one', false), 'one node');
});

test.serial('two nodes (netns + veth, an agent each): the same trees across the nodes', async (t) => {
  if (!need(t, unavailable)) return;
  check(t, await runChain('two', true), 'two nodes');
});
