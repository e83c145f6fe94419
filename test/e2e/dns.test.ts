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
import { createNetns, type Netns } from '../helpers/netns.js';
import { NODE } from '../helpers/servers.js';

const unavailable = kernelUnavailable();
const seen: Array<{ span: SidelightSpan; resource: Resource }> = [];
let agent: Agent | undefined;
let ns: Netns | undefined;
const tmp = mkdtempSync(join(tmpdir(), 'sl-dns-'));

const HOSTS = ['getent', 'py', 'curl', 'nlookup', 'nresolve', 'dig', 'digtcp', 'go', 'srv', 'nsrv'];
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
  await waitFor(() => servers().length >= 6 && dnsSpans('srv.sl.test', 'A').length >= 7, 'server + lookup spans');
  const bySpanId = new Map(servers().map((x) => [x.span.spanId!, x.span]));
  const lookups = dnsSpans('srv.sl.test', 'A').filter((x) => x.span.parentSpanId && bySpanId.has(x.span.parentSpanId));
  t.true(lookups.length >= 6, `${lookups.length} lookups under /r* requests`);
  for (const l of lookups) {
    const parent = bySpanId.get(l.span.parentSpanId!)!;
    t.is(l.span.traceId, parent.traceId);
    t.is(l.span.process.tid, parent.process.tid, 'the lookup ran on the thread serving its parent');
  }
  // one lookup per request: no request has two
  t.is(new Set(lookups.map((l) => l.span.parentSpanId)).size, lookups.length);
});
