/**
 * DNS on the real kernel with a real resolver: dnsmasq serving a test zone inside a network
 * namespace whose resolv.conf points at it; clients glibc (getent, python, curl), Node
 * (dns.lookup, dns.resolve4), dig (UDP, TCP, TC → TCP retry), a pure-Go resolver; a black
 * hole that never answers; servers doing a lookup per request, under concurrency.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { Resource } from '@opentelemetry/resources';
import { Agent } from '../../src/agent.js';
import { loadConfig } from '../../src/config.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { collectorBinary, startCollector, type CollectorHistogramPoint, type RunningCollector } from '../helpers/collector.js';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { createNetns, type Netns } from '../helpers/netns.js';
import { NODE } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');
let collector: RunningCollector | undefined;
let exporter: AgentProcess | undefined;
const seen: Array<{ span: SidelightSpan; resource: Resource }> = [];
let agent: Agent | undefined;
let ns: Netns | undefined;
const tmp = mkdtempSync(join(tmpdir(), 'sl-dns-'));

const HOSTS = ['getent', 'py', 'curl', 'nlookup', 'nresolve', 'dig', 'digtcp', 'go', 'srv', 'nsrv', 'nsrvres'];
const bigTxt = Array.from({ length: 6 }, (_, i) => `"${String.fromCharCode(97 + i).repeat(200)}"`).join(',');

test.before(async () => {
  if (unavailable) return;
  const config = loadConfig({ env: { SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0' } });
  config.export.console = 'never';
  config.capture.pollIntervalMs = 20;
  config.dns.ports = [53, 5354];
  config.dns.timeoutMs = 1500;
  agent = new Agent(config);
  agent.onSpan = (span, resource) => seen.push({ span, resource });
  await agent.start();
  // a second agent, as users run it, exporting to a real Collector (only DNS and the test servers)
  collector = await startCollector();
  writeFileSync(join(tmp, 'agent.yaml'), 'dns:\n  ports: [53, 5354]\n  timeoutMs: 1500\nfilter:\n  ports:\n    include: [53, 5354, 18181, 18182]\n');
  exporter = await startAgentProcess(
    { OTEL_EXPORTER_OTLP_ENDPOINT: collector.httpEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_METRIC_EXPORT_INTERVAL: '500' },
    ['--config', join(tmp, 'agent.yaml')],
  );
  ns = createNetns(`sl-dns-${process.pid}`, 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n');
  const args = [
    '--no-daemon', '--port=53', '--listen-address=127.0.0.1', '--bind-interfaces', '--no-resolv', '--no-hosts',
    `--pid-file=${tmp}/dnsmasq.pid`, '--user=root', '--local=/sl.test/',
    ...HOSTS.map((h, i) => `--host-record=${h}.sl.test,10.9.0.${i + 1},fd00::${i + 1}`),
    '--cname=alias.sl.test,py.sl.test',
    `--txt-record=big.sl.test,${bigTxt}`,
  ];
  ns.spawn('dnsmasq', args);
  // a black hole on 5354: takes queries, never answers
  ns.spawn('python3', ['-c', "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('127.0.0.1',5354))\nwhile True: s.recvfrom(4096)"]);
  const end = Date.now() + 10_000;
  while (Date.now() < end && ns.run('dig', ['+short', '+time=1', '+tries=1', 'getent.sl.test']).stdout.trim() !== '10.9.0.1') await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 200));
  seen.length = 0; // the readiness probe's lookups are not under test
});

test.after.always(async () => {
  ns?.remove();
  await exporter?.stop();
  await collector?.stop();
  await agent?.stop();
});

const dnsSpans = (name: string, type?: string) =>
  seen.filter((x) => x.span.name.startsWith('DNS ') && x.span.attributes['dns.question.name'] === name && (!type || x.span.attributes['dns.question.type'] === type));

async function waitFor(pred: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; DNS spans: ${seen.filter((x) => x.span.name.startsWith('DNS')).map((x) => `${x.span.name} ${String(x.resource.attributes['service.name'])}`).join(' | ')}`);
}

test.serial('glibc getaddrinfo (getent): A and AAAA sent together, both spans with answers', async (t) => {
  if (!need(t, unavailable)) return;
  t.regex(ns!.run('getent', ['ahosts', 'getent.sl.test']).stdout, /10\.9\.0\.1/);
  await waitFor(() => dnsSpans('getent.sl.test', 'A').length > 0 && dnsSpans('getent.sl.test', 'AAAA').length > 0, 'getent A+AAAA');
  const a = dnsSpans('getent.sl.test', 'A')[0]!;
  const aaaa = dnsSpans('getent.sl.test', 'AAAA')[0]!;
  t.is(a.span.name, 'DNS A getent.sl.test');
  t.deepEqual(a.span.attributes['dns.answers'], ['10.9.0.1']);
  t.deepEqual(aaaa.span.attributes['dns.answers'], ['fd00::1']);
  t.like(a.span.attributes, { 'network.transport': 'udp', 'server.address': '127.0.0.1', 'server.port': 53, 'dns.response_code': 'NOERROR' });
  t.is(a.resource.attributes['service.name'], 'getent');
  t.is(a.span.kind, 'client');
});

test.serial('python socket.getaddrinfo through a CNAME; curl', async (t) => {
  if (!need(t, unavailable)) return;
  ns!.run('python3', ['-c', "import socket; socket.getaddrinfo('alias.sl.test', 80)"]);
  ns!.run('curl', ['-sS', '--max-time', '2', 'http://curl.sl.test:9/']);
  await waitFor(() => dnsSpans('alias.sl.test', 'A').length > 0 && dnsSpans('curl.sl.test', 'A').length > 0, 'python and curl lookups');
  const py = dnsSpans('alias.sl.test', 'A')[0]!;
  t.deepEqual(py.span.attributes['sidelight.dns.cnames'], ['py.sl.test']);
  t.deepEqual(py.span.attributes['dns.answers'], ['10.9.0.2']);
  t.regex(String(py.resource.attributes['service.name']), /^python3/);
  t.is(dnsSpans('curl.sl.test', 'A')[0]!.resource.attributes['service.name'], 'curl');
});

test.serial('Node dns.lookup (libuv pool, glibc) and dns.resolve4 (c-ares)', async (t) => {
  if (!need(t, unavailable)) return;
  const r = ns!.run(NODE, ['-e', "const d=require('node:dns');d.lookup('nlookup.sl.test',{family:4},(e,a)=>{if(e)throw e;d.resolve4('nresolve.sl.test',(e2,b)=>{if(e2)throw e2;console.log(a,b[0])})})"], { OTEL_SERVICE_NAME: 'node-dns' });
  t.regex(r.stdout, /10\.9\.0\.4 10\.9\.0\.5/, r.stderr);
  await waitFor(() => dnsSpans('nlookup.sl.test', 'A').length > 0 && dnsSpans('nresolve.sl.test', 'A').length > 0, 'node lookups');
  for (const n of ['nlookup.sl.test', 'nresolve.sl.test']) t.is(dnsSpans(n, 'A')[0]!.resource.attributes['service.name'], 'node-dns');
});

test.serial('dig over UDP and TCP; a TC answer retried over TCP; NXDOMAIN', async (t) => {
  if (!need(t, unavailable)) return;
  ns!.run('dig', ['+time=1', '+tries=1', 'dig.sl.test']);
  ns!.run('dig', ['+tcp', '+time=1', '+tries=1', 'digtcp.sl.test']);
  ns!.run('dig', ['+noedns', '+time=2', '+tries=1', 'big.sl.test', 'TXT']);
  ns!.run('dig', ['+time=1', '+tries=1', 'nope.sl.test']);
  await waitFor(() => dnsSpans('big.sl.test').length >= 2 && dnsSpans('nope.sl.test').length > 0 && dnsSpans('digtcp.sl.test').length > 0 && dnsSpans('dig.sl.test').length > 0, 'dig lookups');
  t.is(dnsSpans('dig.sl.test')[0]!.span.attributes['network.transport'], 'udp');
  t.is(dnsSpans('digtcp.sl.test')[0]!.span.attributes['network.transport'], 'tcp');
  t.deepEqual(dnsSpans('digtcp.sl.test')[0]!.span.attributes['dns.answers'], ['10.9.0.7']);
  const big = dnsSpans('big.sl.test');
  t.deepEqual(big.map((x) => [x.span.attributes['network.transport'], x.span.attributes['sidelight.dns.truncated'] ?? false]), [
    ['udp', true],
    ['tcp', false],
  ]);
  const nx = dnsSpans('nope.sl.test')[0]!;
  t.is(nx.span.attributes['error.type'], 'NXDOMAIN');
  t.is(nx.span.status.code, 'error');
  t.is(dnsSpans('dig.sl.test')[0]!.resource.attributes['service.name'], 'dig');
});

test.serial('a pure-Go resolver (GODEBUG=netdns=go)', async (t) => {
  if (!need(t, unavailable)) return;
  const dir = mkdtempSync(join(tmp, 'go-'));
  writeFileSync(join(dir, 'go.mod'), 'module resolver\n\ngo 1.21\n');
  writeFileSync(join(dir, 'main.go'), 'package main\nimport ("fmt"; "net")\nfunc main() { a, err := net.LookupHost("go.sl.test"); if err != nil { panic(err) }; fmt.Println(a) }\n');
  execFileSync('go', ['build', '-o', join(dir, 'goresolver'), '.'], { cwd: dir, env: { ...process.env, CGO_ENABLED: '0' } });
  const r = ns!.run(join(dir, 'goresolver'), [], { GODEBUG: 'netdns=go' });
  t.regex(r.stdout, /10\.9\.0\.8/, r.stderr);
  await waitFor(() => dnsSpans('go.sl.test', 'A').length > 0, 'go lookup');
  t.is(dnsSpans('go.sl.test', 'A')[0]!.resource.attributes['service.name'], 'goresolver');
});

test.serial('a resolver that never answers: the span ends with error.type timeout', async (t) => {
  if (!need(t, unavailable)) return;
  ns!.run('dig', ['@127.0.0.1', '-p', '5354', '+time=1', '+tries=1', 'lost.sl.test']);
  await waitFor(() => dnsSpans('lost.sl.test').length > 0, 'timeout span', 8000);
  const s = dnsSpans('lost.sl.test')[0]!.span;
  t.is(s.attributes['error.type'], 'timeout');
  t.is(s.attributes['server.port'], 5354);
  t.is(s.endUnixNs - s.startUnixNs, 1_500_000_000n);
});

test.serial('lookups made while serving a request are children of that request (python threads, concurrent)', async (t) => {
  if (!need(t, unavailable)) return;
  const py = `
import http.server, socket, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        socket.getaddrinfo('srv.sl.test', 80, socket.AF_INET)
        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(('127.0.0.1', 18181), H).serve_forever()
`;
  ns!.spawn('python3', ['-c', py]);
  const end = Date.now() + 10_000;
  while (Date.now() < end && ns!.run('curl', ['-s', 'http://127.0.0.1:18181/warm']).status !== 0) await new Promise((r) => setTimeout(r, 100));
  // nscd-less glibc: every request looks the name up again; 6 at once
  const urls = Array.from({ length: 6 }, (_, i) => `http://127.0.0.1:18181/r${i}`);
  ns!.run('curl', ['-s', '--parallel', '--parallel-immediate', ...urls.flatMap((u) => [u, '-o', '/dev/null'])]);
  const servers = () => seen.filter((x) => x.span.kind === 'server' && String(x.span.attributes['url.path']).startsWith('/r'));
  const underRequests = () => {
    const ids = new Set(servers().map((x) => x.span.spanId));
    return dnsSpans('srv.sl.test', 'A').filter((x) => x.span.parentSpanId && ids.has(x.span.parentSpanId));
  };
  // wait for what is asserted (a count of all lookups can be reached early: a resent query is a
  // lookup span too), then say what was seen if it is not there
  const until = Date.now() + 10_000;
  while (Date.now() < until && !(servers().length >= 6 && underRequests().length >= 6)) await new Promise((r) => setTimeout(r, 50));
  const bySpanId = new Map(servers().map((x) => [x.span.spanId!, x.span]));
  const lookups = underRequests();
  t.true(
    lookups.length >= 6,
    `${lookups.length} lookups under /r* requests; servers: ${servers().map((x) => `${String(x.span.attributes['url.path'])} tid ${x.span.process.tid}`).join(', ')}; ` +
      `lookups: ${dnsSpans('srv.sl.test', 'A').map((x) => `tid ${x.span.process.tid} parent ${x.span.parentSpanId ?? '-'}`).join(', ')}`,
  );
  for (const l of lookups) {
    const parent = bySpanId.get(l.span.parentSpanId!)!;
    t.is(l.span.traceId, parent.traceId);
    t.is(l.span.process.tid, parent.process.tid, 'the lookup ran on the thread serving its parent');
  }
  // one lookup per request: no request has two
  t.is(new Set(lookups.map((l) => l.span.parentSpanId)).size, lookups.length);
});

test.serial('Node server: dns.lookup (libuv pool) and dns.resolve4 (main thread), each under its request', async (t) => {
  if (!need(t, unavailable)) return;
  const src = `
const http = require('node:http'); const dns = require('node:dns');
http.createServer((req, res) => {
  if (req.url.startsWith('/lookup')) dns.lookup('nsrv.sl.test', { family: 4 }, () => res.end('ok'));
  else dns.resolve4('nsrvres.sl.test', () => res.end('ok'));
}).listen(18182, '127.0.0.1');`;
  ns!.spawn(NODE, ['-e', src], { OTEL_SERVICE_NAME: 'node-dns-server' });
  const end = Date.now() + 10_000;
  while (Date.now() < end && ns!.run('curl', ['-s', 'http://127.0.0.1:18182/warm']).status !== 0) await new Promise((r) => setTimeout(r, 100));
  for (const path of ['/lookup/1', '/resolve/1', '/lookup/2']) ns!.run('curl', ['-s', `http://127.0.0.1:18182${path}`]);
  const servers = () => seen.filter((x) => x.span.kind === 'server' && x.span.attributes['network.local.port'] === 18182);
  await waitFor(() => dnsSpans('nsrv.sl.test', 'A').length >= 2 && dnsSpans('nsrvres.sl.test', 'A').length >= 2 && servers().length >= 4, 'node server lookups');
  const byId = new Map(servers().map((x) => [x.span.spanId!, x.span]));
  for (const [name, path] of [['nsrv.sl.test', '/lookup/'], ['nsrvres.sl.test', '/resolve/']] as const) {
    const under = dnsSpans(name, 'A').filter((x) => String(byId.get(x.span.parentSpanId ?? '')?.attributes['url.path'] ?? '').startsWith(path));
    t.true(under.length >= (path === '/lookup/' ? 2 : 1), `${name} lookups under ${path} requests: ${under.length}`);
    for (const l of under) t.is(l.span.traceId, byId.get(l.span.parentSpanId!)!.traceId);
  }
  // the pool lookups ran on a libuv worker, not on the thread serving the request
  const pool = dnsSpans('nsrv.sl.test', 'A').find((x) => x.span.parentSpanId && byId.has(x.span.parentSpanId))!;
  t.not(pool.span.process.tid, byId.get(pool.span.parentSpanId!)!.process.tid);
});

test.serial("every client's lookups reach the real Collector as spans and dns.lookup.duration points", async (t) => {
  if (!need(t, unavailable)) return;
  const expected: Array<[string, RegExp]> = [
    ['getent.sl.test', /^getent$/],
    ['alias.sl.test', /^python3/],
    ['curl.sl.test', /^curl$/],
    ['nlookup.sl.test', /^node-dns$/],
    ['nresolve.sl.test', /^node-dns$/],
    ['dig.sl.test', /^dig$/],
    ['digtcp.sl.test', /^dig$/],
    ['big.sl.test', /^dig$/],
    ['nope.sl.test', /^dig$/],
    ['go.sl.test', /^goresolver$/],
    ['lost.sl.test', /^dig$/],
    ['srv.sl.test', /^python3/],
    ['nsrv.sl.test', /^node-dns-server$/],
  ];
  const spans = await collector!.waitForSpans((all) => expected.every(([n]) => all.some((s) => s.attributes['dns.question.name'] === n)), 20_000);
  for (const [name, service] of expected) {
    // (the set-up's readiness probe also looked some names up with dig)
    const s = spans.find((x) => x.attributes['dns.question.name'] === name && service.test(String(x.resource['service.name'])));
    t.truthy(s, `${name} from ${String(service)}: ${spans.filter((x) => x.attributes['dns.question.name'] === name).map((x) => String(x.resource['service.name'])).join(',')}`);
    t.is(s?.kind, 3, `${name} is a CLIENT span`);
    t.is(s?.name.split(' ')[0], 'DNS');
  }
  t.is(spans.find((x) => x.attributes['dns.question.name'] === 'nope.sl.test')!.attributes['error.type'], 'NXDOMAIN');
  t.is(spans.find((x) => x.attributes['dns.question.name'] === 'lost.sl.test')!.attributes['error.type'], 'timeout');
  const point = (m: CollectorHistogramPoint[], name: string, service: RegExp) =>
    m.filter((p) => p.name === 'dns.lookup.duration' && p.attributes['dns.question.name'] === name && service.test(String(p.resource['service.name']))).at(-1);
  const points = await collector!.waitForMetrics((m) => expected.every(([n, s]) => point(m, n, s)), 20_000);
  for (const [name, service] of expected) {
    const p = point(points, name, service)!;
    t.is(p.unit, 's');
    t.true(p.count >= 1, `${name} metric`);
  }
});
