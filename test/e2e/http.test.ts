/**
 * End to end on the real kernel: the agent (in this process) attached with its real BPF
 * object; real servers (python3 http.server, Node http, nginx) and real clients (curl,
 * Node fetch) as child processes; assertions on the spans the agent assembles.
 */
import test from 'ava';
import type { Resource } from '@opentelemetry/resources';
import { Agent } from '../../src/agent.js';
import { loadConfig } from '../../src/config.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, nodeFetch, startNginx, startNodeServer, startPythonServer } from '../helpers/servers.js';

interface Seen {
  span: SidelightSpan;
  resource: Resource;
}

const seen: Seen[] = [];
let agent: Agent | undefined;
const unavailable = kernelUnavailable();

test.before(async () => {
  if (unavailable) return;
  const config = loadConfig({ env: { SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0' } });
  config.export.console = 'never';
  config.capture.pollIntervalMs = 20;
  agent = new Agent(config);
  agent.onSpan = (span, resource) => seen.push({ span, resource });
  await agent.start();
});

test.after.always(async () => {
  await agent?.stop();
});

async function waitFor(pred: (s: Seen[]) => boolean, what: string, timeoutMs = 10_000): Promise<Seen[]> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (pred(seen)) return seen;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; saw ${seen.length} spans: ${seen.map((x) => `${x.span.kind} ${x.span.name} ${String(x.span.attributes['url.path'] ?? x.span.attributes['url.full'])} ${String(x.span.attributes['server.port'])}`).join(' | ')}`);
}

const onPort = (port: number, kind: 'server' | 'client') => (x: Seen) =>
  x.span.kind === kind && (kind === 'server' ? x.span.attributes['network.local.port'] === port : x.span.attributes['network.peer.port'] === port);

test.serial('IPv6 loopback: python http.server on ::1 + curl: both spans carry the IPv6 addresses and ports', async (t) => {
  if (!need(t, unavailable)) return;
  const srv = await startPythonServer({}, '::1');
  try {
    const body = await curl(['-g', `http://[::1]:${srv.port}/hello.txt`]);
    t.is(body, 'hello from python\n');
    await waitFor((s) => s.some(onPort(srv.port, 'server')) && s.some(onPort(srv.port, 'client')), 'IPv6 spans');
    const server = seen.find(onPort(srv.port, 'server'))!;
    const client = seen.find(onPort(srv.port, 'client'))!;
    t.like(server.span.attributes, { 'url.path': '/hello.txt', 'http.response.status_code': 200, 'network.local.port': srv.port, 'client.address': '::1' });
    t.is(server.span.process.tgid, srv.pid);
    t.like(client.span.attributes, { 'server.address': '::1', 'server.port': srv.port, 'http.response.status_code': 200 });
    t.is(client.resource.attributes['service.name'], 'curl');
    t.true(client.span.startUnixNs <= server.span.startUnixNs);
  } finally {
    await srv.stop();
  }
});

test.serial('python http.server + curl: SERVER and CLIENT spans with method, path, status, peers, service names', async (t) => {
  if (!need(t, unavailable)) return;
  const srv = await startPythonServer();
  try {
    const body = await curl([`http://127.0.0.1:${srv.port}/hello.txt?secret=1`]);
    t.is(body, 'hello from python\n');
    await waitFor((s) => s.some(onPort(srv.port, 'server')) && s.some(onPort(srv.port, 'client')), 'python spans');
    const server = seen.find(onPort(srv.port, 'server'))!;
    const client = seen.find(onPort(srv.port, 'client'))!;
    t.like(server.span.attributes, {
      'http.request.method': 'GET',
      'url.path': '/hello.txt',
      'url.scheme': 'http',
      'http.response.status_code': 200,
      'server.port': srv.port,
      'network.local.port': srv.port,
      'client.address': '127.0.0.1',
    });
    t.false('url.query' in server.span.attributes);
    t.is(server.span.process.tgid, srv.pid);
    t.regex(String(server.resource.attributes['service.name']), /^python3/);
    t.is(server.resource.attributes['process.pid'], srv.pid);
    t.is(server.resource.attributes['telemetry.distro.name'], 'sidelight');

    t.like(client.span.attributes, {
      'http.request.method': 'GET',
      'url.full': `http://127.0.0.1:${srv.port}/hello.txt`,
      'server.address': '127.0.0.1',
      'server.port': srv.port,
      'http.response.status_code': 200,
    });
    t.is(client.resource.attributes['service.name'], 'curl');
    // the client span encloses the server span (its end within the few µs by which a client can
    // finish reading before the server's write returns: see test/e2e/jaeger.test.ts); both have real durations
    t.true(server.span.endUnixNs > server.span.startUnixNs);
    t.true(client.span.startUnixNs <= server.span.startUnixNs);
    t.true(client.span.endUnixNs + 100_000n >= server.span.endUnixNs, `client end ${client.span.endUnixNs}, server end ${server.span.endUnixNs}`);
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    t.true(nowNs - client.span.endUnixNs < 60_000_000_000n, 'wall-clock timestamps');
    t.true(client.span.endUnixNs <= nowNs + 1_000_000_000n);
  } finally {
    await srv.stop();
  }
});

test.serial('Node http server + Node fetch: keep-alive, chunked, POST body, 404 and 503, OTEL_SERVICE_NAME', async (t) => {
  if (!need(t, unavailable)) return;
  const srv = await startNodeServer({ OTEL_SERVICE_NAME: 'node-api' });
  try {
    const base = `http://127.0.0.1:${srv.port}`;
    const urls = [...Array.from({ length: 20 }, (_, i) => `${base}/ok/${i}`), `${base}/missing`, `${base}/fail`];
    const statuses = await nodeFetch(urls, { OTEL_SERVICE_NAME: 'node-client' });
    t.deepEqual(statuses, [...Array(20).fill(200), 404, 503]);
    const posted = await nodeFetch([`${base}/echo`], { OTEL_SERVICE_NAME: 'node-client' }, 'POST', 'x'.repeat(3000));
    t.deepEqual(posted, [200]);
    await waitFor((s) => s.filter(onPort(srv.port, 'server')).length >= 23 && s.filter(onPort(srv.port, 'client')).length >= 23, 'node spans');
    const byStart = (a: Seen, b: Seen): number => (a.span.startUnixNs < b.span.startUnixNs ? -1 : 1);
    const servers = seen.filter(onPort(srv.port, 'server')).sort(byStart);
    const clients = seen.filter(onPort(srv.port, 'client')).sort(byStart);
    t.is(servers.length, 23);
    t.is(clients.length, 23);
    t.deepEqual(
      servers.map((x) => [x.span.attributes['url.path'], x.span.attributes['http.response.status_code']]),
      [...Array.from({ length: 20 }, (_, i) => [`/ok/${i}`, 200]), ['/missing', 404], ['/fail', 503], ['/echo', 200]],
    );
    for (const x of servers) t.is(x.resource.attributes['service.name'], 'node-api');
    for (const x of clients) t.is(x.resource.attributes['service.name'], 'node-client');
    const s404 = servers.find((x) => x.span.attributes['url.path'] === '/missing')!;
    t.deepEqual(s404.span.status, { code: 'unset' }, '4xx is not an error on the server');
    const s503 = servers.find((x) => x.span.attributes['url.path'] === '/fail')!;
    t.deepEqual(s503.span.status, { code: 'error' });
    t.is(s503.span.attributes['error.type'], '503');
    const c404 = clients.find((x) => String(x.span.attributes['url.full']).endsWith('/missing'))!;
    t.deepEqual(c404.span.status, { code: 'error' }, '4xx is an error on the client');
    const post = clients.find((x) => x.span.attributes['http.request.method'] === 'POST')!;
    t.is(post.span.attributes['http.response.status_code'], 200);
    // keep-alive: undici's pool carried the 22 fetches on far fewer connections
    const ports = new Set(clients.slice(0, 22).map((x) => x.span.attributes['network.local.port']));
    t.true(ports.size < 5, `${ports.size} connections`);
  } finally {
    await srv.stop();
  }
});

test.serial('nginx + curl with several URLs on one connection', async (t) => {
  if (!need(t, unavailable)) return;
  const srv = await startNginx();
  try {
    const base = `http://127.0.0.1:${srv.port}`;
    await curl([`${base}/`, `${base}/api/users`, `${base}/nope`, '-o', '/dev/null', '-o', '/dev/null', '-o', '/dev/null']);
    await waitFor((s) => s.filter(onPort(srv.port, 'server')).length >= 3 && s.filter(onPort(srv.port, 'client')).length >= 3, 'nginx spans');
    const servers = seen.filter(onPort(srv.port, 'server'));
    t.deepEqual(
      servers.map((x) => [x.span.attributes['url.path'], x.span.attributes['http.response.status_code']]),
      [['/', 200], ['/api/users', 200], ['/nope', 404]],
    );
    t.is(servers[0]!.resource.attributes['service.name'], 'nginx');
    const clients = seen.filter(onPort(srv.port, 'client'));
    t.deepEqual(clients.map((x) => x.span.attributes['url.full']), [`${base}/`, `${base}/api/users`, `${base}/nope`]);
  } finally {
    await srv.stop();
  }
});

test.serial('the agent counts what it saw and lost nothing at this rate', (t) => {
  if (!need(t, unavailable)) return;
  const st = agent!.stats() as { kernel: Record<string, number>; decode: { malformed: number }; probes: Array<{ runCount: number }> };
  t.true(st.kernel.events! > 0);
  t.is(st.kernel.ringbuf_full, 0);
  t.is(st.decode.malformed, 0);
  t.true(st.probes.length >= 2);
});
