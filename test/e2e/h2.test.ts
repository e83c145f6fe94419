/**
 * HTTP/2 (h2c, prior knowledge) and gRPC on the real kernel: Node http2 server and client,
 * a grpc-js server and client (unary calls, OK and an error status), as child processes;
 * assertions on the spans and on the link between both ends.
 */
import { spawn, type ChildProcess, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import test from 'ava';
import type { Resource } from '@opentelemetry/resources';
import { Agent } from '../../src/agent.js';
import { loadConfig } from '../../src/config.js';
import { repoRoot } from '../../src/paths.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { freePort, NODE, waitForPort } from '../helpers/servers.js';

const execFileP = promisify(execFile);
const unavailable = kernelUnavailable();
const seen: Array<{ span: SidelightSpan; resource: Resource }> = [];
const children: ChildProcess[] = [];
let agent: Agent | undefined;
let h2Port = 0;
let grpcPort = 0;

const H2_SERVER = (port: number) => `
const http2 = require('node:http2');
http2.createServer((req, res) => {
  if (req.url === '/h2/fail') { res.statusCode = 500; res.end('no'); return; }
  res.setHeader('content-type', 'text/plain'); res.end('h2 ok ' + req.url);
}).listen(${port}, '127.0.0.1');`;

const H2_CLIENT = (port: number) => `
const http2 = require('node:http2');
const s = http2.connect('http://127.0.0.1:${port}');
const get = (p) => new Promise((res, rej) => { const r = s.request({ ':path': p }); let st; r.on('response', (h) => st = h[':status']); r.on('data', () => {}); r.on('end', () => res(st)); r.on('error', rej); r.end(); });
(async () => { const a = await get('/h2/ok'); const b = await get('/h2/fail'); console.log(a, b); s.close(); })();`;

const GRPC_DEF = `
const grpc = require(${JSON.stringify(`${repoRoot()}/node_modules/@grpc/grpc-js`)});
const id = (b) => b;
const def = {
  Say: { path: '/demo.Echo/Say', requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
  Missing: { path: '/demo.Echo/Missing', requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
};`;

const GRPC_SERVER = (port: number) => `${GRPC_DEF}
const server = new grpc.Server();
server.addService(def, {
  Say: (call, cb) => cb(null, Buffer.concat([Buffer.from('echo:'), call.request])),
  Missing: (call, cb) => cb({ code: grpc.status.NOT_FOUND, details: 'no such thing' }),
});
server.bindAsync('127.0.0.1:${port}', grpc.ServerCredentials.createInsecure(), () => {});`;

const GRPC_CLIENT = (port: number) => `${GRPC_DEF}
const Client = grpc.makeGenericClientConstructor(def, 'Echo');
const c = new Client('127.0.0.1:${port}', grpc.credentials.createInsecure());
c.Say(Buffer.from('hi'), (e, r) => {
  if (e) throw e;
  c.Missing(Buffer.from('x'), (e2) => { console.log(String(r), e2 && e2.code); c.close(); });
});`;

test.before(async () => {
  if (unavailable) return;
  h2Port = await freePort();
  grpcPort = await freePort();
  const config = loadConfig({ env: { SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0' } });
  config.export.console = 'never';
  config.capture.pollIntervalMs = 20;
  config.filter.ports.include = [h2Port, grpcPort]; // only this test's traffic
  agent = new Agent(config);
  agent.onSpan = (span, resource) => seen.push({ span, resource });
  await agent.start();
  for (const [src, port, name] of [[H2_SERVER(h2Port), h2Port, 'h2-server'], [GRPC_SERVER(grpcPort), grpcPort, 'grpc-server']] as const) {
    const p = spawn(NODE, ['-e', src], { stdio: 'ignore', env: { ...process.env, OTEL_SERVICE_NAME: name } });
    children.push(p);
    await waitForPort(port);
  }
});

test.after.always(async () => {
  for (const c of children) c.kill('SIGKILL');
  await agent?.stop();
});

async function waitFor(pred: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (Date.now() < end) {
    if (pred()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}; saw ${seen.length}: ${seen.slice(0, 20).map((x) => `${x.span.kind} ${x.span.name} ${String(x.span.attributes['server.port'])}`).join(' | ')}; stats ${JSON.stringify((agent?.stats() as { connections: unknown }).connections)}`);
}

const at = (port: number, kind: string) => seen.filter((x) => x.span.kind === kind && x.span.attributes['server.port'] === port);

test.serial('h2c: Node http2 client and server, spans on both ends, linked', async (t) => {
  if (!need(t, unavailable)) return;
  const { stdout } = await execFileP(NODE, ['-e', H2_CLIENT(h2Port)], { env: { ...process.env, OTEL_SERVICE_NAME: 'h2-client' } });
  t.is(stdout.trim(), '200 500');
  await waitFor(() => at(h2Port, 'server').length >= 2 && at(h2Port, 'client').length >= 2, 'h2 spans');
  const server = at(h2Port, 'server').find((x) => x.span.attributes['url.path'] === '/h2/ok')!;
  const client = at(h2Port, 'client').find((x) => String(x.span.attributes['url.full']).endsWith('/h2/ok'))!;
  t.is(server.span.name, 'GET');
  t.like(server.span.attributes, { 'http.request.method': 'GET', 'http.response.status_code': 200, 'network.protocol.version': '2', 'url.scheme': 'http' });
  t.is(client.span.attributes['url.full'], `http://127.0.0.1:${h2Port}/h2/ok`);
  t.is(server.resource.attributes['service.name'], 'h2-server');
  t.is(client.resource.attributes['service.name'], 'h2-client');
  t.is(server.span.traceId, client.span.traceId);
  t.is(server.span.parentSpanId, client.span.spanId);
  const fail = at(h2Port, 'server').find((x) => x.span.attributes['url.path'] === '/h2/fail')!;
  t.is(fail.span.attributes['error.type'], '500');
  t.is(fail.span.status.code, 'error');
});

test.serial('gRPC (grpc-js): method, status from trailers, errors by side, linked', async (t) => {
  if (!need(t, unavailable)) return;
  const { stdout } = await execFileP(NODE, ['-e', GRPC_CLIENT(grpcPort)], { env: { ...process.env, OTEL_SERVICE_NAME: 'grpc-client' } });
  t.is(stdout.trim(), 'echo:hi 5');
  await waitFor(() => at(grpcPort, 'server').length >= 2 && at(grpcPort, 'client').length >= 2, 'grpc spans');
  const sOk = at(grpcPort, 'server').find((x) => x.span.name === 'demo.Echo/Say')!;
  const cOk = at(grpcPort, 'client').find((x) => x.span.name === 'demo.Echo/Say')!;
  t.like(sOk.span.attributes, { 'rpc.system.name': 'grpc', 'rpc.method': 'demo.Echo/Say', 'rpc.status_code': 'OK', 'network.protocol.version': '2' });
  t.is(sOk.span.status.code, 'unset');
  t.is(sOk.span.parentSpanId, cOk.span.spanId);
  t.is(sOk.resource.attributes['service.name'], 'grpc-server');
  const sMiss = at(grpcPort, 'server').find((x) => x.span.name === 'demo.Echo/Missing')!;
  const cMiss = at(grpcPort, 'client').find((x) => x.span.name === 'demo.Echo/Missing')!;
  t.is(sMiss.span.attributes['rpc.status_code'], 'NOT_FOUND');
  t.is(sMiss.span.status.code, 'unset', 'NOT_FOUND is not a server error');
  t.is(cMiss.span.attributes['error.type'], 'NOT_FOUND');
  t.is(cMiss.span.status.code, 'error', 'every non-OK code is a client error');
});
