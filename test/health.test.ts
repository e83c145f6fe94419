// Tests for src/health.ts: a real server on 127.0.0.1:0 per test. Checks the
// /healthz and /readyz status transitions and bodies, 404/405, HEAD, bind
// conflicts, address parsing, and that close() is prompt even with a
// keep-alive client attached. Every server is closed in t.teardown.

import test from 'ava';
import { request, Agent } from 'node:http';
import { connect, createServer } from 'node:net';
import { parseHostPort, startHealthServer, type HealthServer, type HealthState } from '../src/health.js';

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

function call(address: string, method: string, path: string, agent?: Agent): Promise<Reply> {
  const { host, port } = parseHostPort(address)!;
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, agent: agent ?? false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function start(t: { teardown: (fn: () => Promise<void>) => void }, state: HealthState, address = '127.0.0.1:0'): Promise<HealthServer> {
  const server = await startHealthServer(address, state);
  t.teardown(() => server.close());
  return server;
}

test('reports the bound address with the real port', async (t) => {
  const server = await start(t, { live: true, ready: true, detail: () => ({}) });
  t.regex(server.address, /^127\.0\.0\.1:\d+$/);
  t.not(parseHostPort(server.address)?.port, 0);
});

test('/healthz follows state.live: 200 ok, then 503 unavailable, then 200 again', async (t) => {
  const state: HealthState = { live: true, ready: false, detail: () => ({ probes: 2, uptimeS: 7 }) };
  const server = await start(t, state);

  let r = await call(server.address, 'GET', '/healthz');
  t.is(r.status, 200);
  t.is(r.body, '{"status":"ok","probes":2,"uptimeS":7}\n');
  t.is(r.headers['content-type'], 'application/json; charset=utf-8');
  t.is(r.headers['cache-control'], 'no-store');

  state.live = false;
  r = await call(server.address, 'GET', '/healthz');
  t.is(r.status, 503);
  t.is(r.body, '{"status":"unavailable","probes":2,"uptimeS":7}\n');

  state.live = true;
  t.is((await call(server.address, 'GET', '/healthz')).status, 200);
});

test('/readyz follows state.ready independently of live', async (t) => {
  const state: HealthState = { live: true, ready: false, detail: () => ({ attached: false }) };
  const server = await start(t, state);

  let r = await call(server.address, 'GET', '/readyz');
  t.is(r.status, 503);
  t.is(r.body, '{"status":"unavailable","attached":false}\n');
  t.is((await call(server.address, 'GET', '/healthz')).status, 200);

  state.ready = true;
  state.detail = () => ({ attached: true });
  r = await call(server.address, 'GET', '/readyz');
  t.is(r.status, 200);
  t.is(r.body, '{"status":"ok","attached":true}\n');
});

test('a query string does not change the route', async (t) => {
  const server = await start(t, { live: true, ready: true, detail: () => ({}) });
  t.is((await call(server.address, 'GET', '/readyz?verbose=1')).status, 200);
});

test('detail() cannot override the status, and a throwing detail() does not change the answer', async (t) => {
  const state: HealthState = { live: false, ready: true, detail: () => ({ status: 'ok', x: 1 }) };
  const server = await start(t, state);
  let r = await call(server.address, 'GET', '/healthz');
  t.is(r.status, 503);
  t.is(r.body, '{"status":"unavailable","x":1}\n');

  state.detail = () => {
    throw new Error('boom');
  };
  r = await call(server.address, 'GET', '/readyz');
  t.is(r.status, 200);
  t.is(r.body, '{"status":"ok","detailError":"boom"}\n');
});

test('HEAD answers with the status and no body', async (t) => {
  const state: HealthState = { live: true, ready: false, detail: () => ({}) };
  const server = await start(t, state);
  let r = await call(server.address, 'HEAD', '/healthz');
  t.is(r.status, 200);
  t.is(r.body, '');
  t.is(r.headers['content-length'], String('{"status":"ok"}\n'.length));
  r = await call(server.address, 'HEAD', '/readyz');
  t.is(r.status, 503);
  t.is(r.body, '');
});

test('unknown paths are 404', async (t) => {
  const server = await start(t, { live: true, ready: true, detail: () => ({}) });
  for (const path of ['/', '/health', '/healthz/', '/readyz/x', '/metrics']) {
    const r = await call(server.address, 'GET', path);
    t.is(r.status, 404, path);
    t.is(r.body, '{"status":"not found","paths":["/healthz","/readyz"]}\n');
  }
});

test('methods other than GET and HEAD are 405 with Allow', async (t) => {
  const server = await start(t, { live: true, ready: true, detail: () => ({}) });
  for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
    const r = await call(server.address, method, '/healthz');
    t.is(r.status, 405, method);
    t.is(r.headers['allow'], 'GET, HEAD');
    t.is(r.body, '{"status":"method not allowed","allowed":["GET","HEAD"]}\n');
  }
});

test('a port already in use is rejected with a message naming the address', async (t) => {
  const first = await start(t, { live: true, ready: true, detail: () => ({}) });
  const err = await t.throwsAsync(startHealthServer(first.address, { live: true, ready: true, detail: () => ({}) }));
  t.is(err?.message, `health server: cannot listen on ${first.address}: address already in use (EADDRINUSE)`);
  t.is((err as NodeJS.ErrnoException).code, 'EADDRINUSE');
});

test('a port held by another (non-HTTP) listener is also a bind conflict', async (t) => {
  const other = createServer();
  await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => other.close(() => resolve())));
  const port = (other.address() as { port: number }).port;
  await t.throwsAsync(startHealthServer(`127.0.0.1:${port}`, { live: true, ready: true, detail: () => ({}) }), {
    message: `health server: cannot listen on 127.0.0.1:${port}: address already in use (EADDRINUSE)`,
  });
});

test('an invalid address is rejected before binding', async (t) => {
  await t.throwsAsync(startHealthServer('localhost', { live: true, ready: true, detail: () => ({}) }), {
    message: 'health server: invalid address "localhost": must be host:port or [ipv6]:port with a port from 0 to 65535, e.g. 127.0.0.1:13133, 0.0.0.0:13133 or [::1]:13133',
  });
});

test('listens on [::1] when IPv6 loopback is available', async (t) => {
  let server: HealthServer;
  try {
    server = await startHealthServer('[::1]:0', { live: true, ready: true, detail: () => ({}) });
  } catch (err) {
    t.regex((err as Error).message, /^health server: cannot listen on \[::1\]:0: /);
    t.log('IPv6 loopback not available here; checked the error message only');
    return;
  }
  t.teardown(() => server.close());
  t.regex(server.address, /^\[::1\]:\d+$/);
  t.is((await call(server.address, 'GET', '/healthz')).status, 200);
});

test('close() is prompt with a keep-alive client and a half-sent request attached, and can be called twice', async (t) => {
  const server = await startHealthServer('127.0.0.1:0', { live: true, ready: true, detail: () => ({}) });
  const agent = new Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  t.is((await call(server.address, 'GET', '/healthz', agent)).status, 200);
  // An active (not idle) connection: server.close() alone would wait for it until headersTimeout.
  const { host, port } = parseHostPort(server.address)!;
  const slow = connect(port, host);
  t.teardown(() => slow.destroy());
  await new Promise<void>((resolve) => slow.once('connect', () => resolve()));
  slow.on('error', () => {});
  slow.write('GET /healthz HTTP/1.1\r\nHost: x\r\n');
  await new Promise((resolve) => setTimeout(resolve, 50));

  const began = Date.now();
  await Promise.all([server.close(), server.close()]);
  const took = Date.now() - began;
  t.true(took < 1000, `close took ${took} ms`);
  await server.close();
  await t.throwsAsync(call(server.address, 'GET', '/healthz'), { code: 'ECONNREFUSED' });
});

const ADDRESSES: [string, { host: string; port: number } | null][] = [
  ['127.0.0.1:13133', { host: '127.0.0.1', port: 13133 }],
  ['0.0.0.0:0', { host: '0.0.0.0', port: 0 }],
  ['localhost:65535', { host: 'localhost', port: 65535 }],
  ['agent-1.example.com:80', { host: 'agent-1.example.com', port: 80 }],
  ['[::1]:13133', { host: '::1', port: 13133 }],
  ['[::]:9', { host: '::', port: 9 }],
  ['[fe80::1%eth0]:1', { host: 'fe80::1%eth0', port: 1 }],
  ['localhost', null],
  [':13133', null],
  ['127.0.0.1:', null],
  ['127.0.0.1:65536', null],
  ['127.0.0.1:-1', null],
  ['127.0.0.1:80x', null],
  ['::1:13133', null],
  ['[::1]13133', null],
  ['[nope]:1', null],
  ['999.1.1.1:80', null],
  ['1.2.3:80', null],
  ['-bad-.com:80', null],
  ['http://127.0.0.1:80', null],
  [' 127.0.0.1:80', null],
];

for (const [input, want] of ADDRESSES) {
  test(`parseHostPort(${JSON.stringify(input)})`, (t) => {
    t.deepEqual(parseHostPort(input), want);
  });
}

test('GET /metrics serves the Prometheus text the state renders, per request; HEAD has no body; a throwing renderer is a 500', async (t) => {
  let n = 0;
  const server = await start(t, { live: true, ready: false, detail: () => ({}), metrics: () => `sidelight_scrapes_total ${++n}\n` });
  let r = await call(server.address, 'GET', '/metrics');
  t.is(r.status, 200, 'served even when not ready');
  t.is(r.headers['content-type'], 'text/plain; version=0.0.4; charset=utf-8');
  t.is(r.body, 'sidelight_scrapes_total 1\n');
  r = await call(server.address, 'GET', '/metrics?x=1');
  t.is(r.body, 'sidelight_scrapes_total 2\n', 'rendered per request');
  r = await call(server.address, 'HEAD', '/metrics');
  t.is(r.status, 200);
  t.is(r.body, '');
  r = await call(server.address, 'POST', '/metrics');
  t.is(r.status, 405);
  const broken = await start(t, { live: true, ready: true, detail: () => ({}), metrics: () => { throw new Error('no counters'); } });
  r = await call(broken.address, 'GET', '/metrics');
  t.is(r.status, 500);
  t.is(r.body, '{"status":"error","error":"no counters"}\n');
});
