/**
 * traceparent injection on one node, through a real chain with name lookups:
 * curl → A (python ThreadingHTTPServer: resolves a name, calls B with urllib) → B (Node http:
 * calls C with fetch) → C (Go net/http, pure-Go resolver: resolves a name). All run in one
 * network namespace with dnsmasq as its resolver; one agent (in-process) with injection on.
 * The receiving side's own capture sees the injected header, so the tree must be exactly the
 * one the both-ends links give (B's SERVER under A's CLIENT, C's under B's), with the CLIENT
 * spans carrying the injected ids, and lookups under the request whose thread made them (none
 * for Go, whose goroutines move between threads).
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { Agent } from '../../src/agent.js';
import { loadConfig } from '../../src/config.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
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
const unavailable = kernelUnavailable() ?? goMissing;

const spans: SidelightSpan[] = [];
let agent: Agent | undefined;
let ns: Netns | undefined;
const children: ChildProcess[] = [];
let portA = 0;

const PY_A = `
import http.server, socket, sys, urllib.request
B = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        rid = self.path.rsplit('/', 1)[-1]
        socket.getaddrinfo('a-dep.sl.test', 80, socket.AF_INET)
        body = urllib.request.urlopen(f'http://127.0.0.1:{B}/b/{rid}').read()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
`;
const NODE_B = (port: number, c: number): string => `
require('node:http').createServer(async (req, res) => {
  const id = req.url.split('/').pop();
  const r = await fetch('http://127.0.0.1:${c}/c/' + id);
  const t = await r.text();
  res.setHeader('content-length', Buffer.byteLength(t));
  res.end(t);
}).listen(${port}, '127.0.0.1');`;
const GO_C = `package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		addrs, err := net.LookupHost("c-dep.sl.test")
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

async function waitUp(url: string): Promise<void> {
  const end = Date.now() + 20_000;
  while (ns!.run('curl', ['-s', '-o', '/dev/null', '--max-time', '1', url]).status !== 0) {
    if (Date.now() > end) throw new Error(`${url} not up`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test.before(async () => {
  if (unavailable) return;
  const tmp = mkdtempSync(join(tmpdir(), 'sl-chain-'));
  writeFileSync(join(tmp, 'go.mod'), 'module chainc\n\ngo 1.21\n');
  writeFileSync(join(tmp, 'main.go'), GO_C);
  execFileSync('go', ['build', '-o', join(tmp, 'chainc'), '.'], { cwd: tmp, env: { ...process.env, CGO_ENABLED: '0' } });
  const [a, b, c] = [await freePort(), await freePort(), await freePort()];
  portA = a;
  const config = loadConfig({ env: { SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0' } });
  config.export.console = 'never';
  config.capture.pollIntervalMs = 20;
  config.filter.ports.include = [53, a, b, c];
  config.http.inject = { enabled: true, cgroup: '/', ports: [b, c] };
  agent = new Agent(config);
  agent.onSpan = (s) => spans.push(s);
  await agent.start();
  ns = createNetns(`sl-chain-${process.pid}`, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  ns.spawn('dnsmasq', [
    '--no-daemon', '--port=53', '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts',
    `--pid-file=${tmp}/dnsmasq.pid`, '--user=root', '--local=/sl.test/',
    '--host-record=a-dep.sl.test,10.9.1.1', '--host-record=c-dep.sl.test,10.9.1.3',
  ]);
  children.push(ns.spawn(join(tmp, 'chainc'), [String(c)], { GODEBUG: 'netdns=go' }));
  children.push(ns.spawn(NODE, ['-e', NODE_B(b, c)]));
  children.push(ns.spawn('python3', ['-c', PY_A, String(a), String(b)]));
  const end = Date.now() + 10_000;
  while (Date.now() < end && ns.run('dig', ['+short', '+time=1', '+tries=1', 'a-dep.sl.test']).stdout.trim() !== '10.9.1.1') await new Promise((r) => setTimeout(r, 100));
  await waitUp(`http://127.0.0.1:${c}/up`);
  await waitUp(`http://127.0.0.1:${b}/up`);
  await waitUp(`http://127.0.0.1:${a}/a/up`);
  await new Promise((r) => setTimeout(r, 300));
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  ns?.remove();
  await agent?.stop();
});

function hops(id: string) {
  const find = (kind: string, path: string): SidelightSpan | undefined =>
    spans.find((s) => s.kind === kind && (s.attributes['url.path'] === path || String(s.attributes['url.full']).endsWith(path)));
  const dns = (name: string, after: SidelightSpan | undefined): SidelightSpan | undefined =>
    after && spans.find((s) => s.name.startsWith('DNS ') && s.attributes['dns.question.name'] === name && s.startUnixNs >= after.startUnixNs && s.endUnixNs <= after.endUnixNs);
  const a = find('server', `/a/${id}`);
  const c = find('server', `/c/${id}`);
  return {
    curl: find('client', `/a/${id}`),
    a,
    aDns: dns('a-dep.sl.test', a),
    aOut: find('client', `/b/${id}`),
    b: find('server', `/b/${id}`),
    bOut: find('client', `/c/${id}`),
    c,
    cDns: dns('c-dep.sl.test', c),
  };
}

test.serial('injection on, one node: A → B → C is the exact tree, CLIENT spans carry the injected ids', async (t) => {
  if (!need(t, unavailable)) return;
  const out = ns!.run('curl', ['-sS', '--max-time', '10', `http://127.0.0.1:${portA}/a/chain1`]);
  t.is(out.stdout, 'c:/c/chain1:10.9.1.3', out.stderr);
  const end = Date.now() + 15_000;
  while (Date.now() < end && !Object.values(hops('chain1')).every(Boolean)) await new Promise((r) => setTimeout(r, 50));
  const h = hops('chain1');
  const missing = Object.entries(h).filter(([, v]) => !v).map(([k]) => k);
  t.deepEqual(missing, [], 'every span of the chain was emitted');
  if (missing.length > 0) return;
  const inject = (agent!.stats() as { inject: Record<string, number> }).inject;
  t.is(h.curl!.parentSpanId, undefined, 'curl starts the trace');
  t.is(h.a!.parentSpanId, h.curl!.spanId, 'A server ← curl client (both ends on this node)');
  t.is(h.aDns!.parentSpanId, h.a!.spanId, 'A lookup ← A server (thread per request)');
  t.is(h.aOut!.parentSpanId, h.a!.spanId, 'A client ← A server');
  t.is(h.b!.parentSpanId, h.aOut!.spanId, 'B server ← A client: the injected header names the span A exported');
  t.is(h.bOut!.parentSpanId, h.b!.spanId, 'B client ← B server (event loop, one request)');
  t.is(h.c!.parentSpanId, h.bOut!.spanId, 'C server ← B client');
  const tree = [h.curl, h.a, h.aDns, h.aOut, h.b, h.bOut, h.c];
  t.is(new Set(tree.map((s) => s!.traceId)).size, 1, 'one trace');
  // Go: the lookup's thread says nothing about the request; never a wrong parent
  t.true(h.cDns!.parentSpanId === undefined || h.cDns!.parentSpanId === h.c!.spanId, 'C lookup: no parent or C server');
  t.true((inject['injected'] ?? 0) >= 2, JSON.stringify(inject));
  t.true((inject['clientsMatched'] ?? 0) >= 2, JSON.stringify(inject));
  t.is(inject['parentMismatch'], 0);
  // C (Go) is marked in the kernel: its calls would get a new trace id, never the one of the
  // request last read on their thread
  t.true((inject['untrustedProcesses'] ?? 0) >= 1, JSON.stringify(inject));
});
