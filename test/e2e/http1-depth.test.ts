/**
 * HTTP protocol depth on the real kernel, asserted on a real Collector's output: curl against
 * the Go net/http h2c server (golang.org/x/net/http2/h2c, built by scripts/peers.sh) over
 * HTTP/1.1, h2c Upgrade (`--http2`) and prior knowledge (`--http2-prior-knowledge`), with
 * 200/404/500; a server that resets the connection mid-request; requests that never get an
 * answer (client gives up and closes; left open past http.requestTimeoutMs); body-size and
 * duration metrics.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import test from 'ava';
import type { CollectorSpan } from '../helpers/collector.js';
import { need } from '../helpers/kernel.js';
import { attrs, H2C_SERVER, onPort, peersUnavailable, SPAN_KIND_CLIENT, SPAN_KIND_SERVER, startPeer, startRig, STATUS_ERROR, waitMetric, type Rig } from '../helpers/peers.js';
import { freePort, NODE } from '../helpers/servers.js';

const execFileP = promisify(execFile);
const unavailable = peersUnavailable();
const TIMEOUT_MS = 1500;
let rig: Rig | undefined;
let goPort = 0;
let resetPort = 0;
let silentPort = 0;

/** Node server: reads a request head, then resets the connection (RST) without answering. */
const RESET_SERVER = (port: number) => `
require('node:net').createServer((s) => s.once('data', () => setTimeout(() => s.resetAndDestroy(), 100))).listen(${port}, '127.0.0.1');`;

/** Python server: reads, never answers; closes when the client does. */
const SILENT_SERVER = (port: number) => `
import socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(('127.0.0.1', ${port})); srv.listen(16)
def serve(c):
    while c.recv(65536): pass
    c.close()
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()`;

/** Node client: one GET, no answer awaited; closes after holdMs. */
const HOLD_CLIENT = (port: number, path: string, holdMs: number) => `
const s = require('node:net').connect(${port}, '127.0.0.1', () => s.write('GET ${path} HTTP/1.1\\r\\nHost: 127.0.0.1:${port}\\r\\n\\r\\n'));
s.on('data', () => {}); setTimeout(() => s.end(), ${holdMs});`;

test.before(async () => {
  if (unavailable) return;
  goPort = await freePort();
  resetPort = await freePort();
  silentPort = await freePort();
  rig = await startRig([goPort, resetPort, silentPort], TIMEOUT_MS);
  await startPeer(rig, H2C_SERVER, [`127.0.0.1:${goPort}`], goPort, 'go-h2c');
  await startPeer(rig, NODE, ['-e', RESET_SERVER(resetPort)], resetPort, 'reset-server');
  await startPeer(rig, 'python3', ['-c', SILENT_SERVER(silentPort)], silentPort, 'silent-server');
});

test.after.always(async () => {
  await rig?.stop();
});

const SERVER_KEYS = ['http.request.method', 'url.path', 'url.scheme', 'http.response.status_code', 'network.protocol.version', 'error.type', 'server.port'];
const CLIENT_KEYS = ['http.request.method', 'url.full', 'http.response.status_code', 'network.protocol.version', 'error.type', 'server.address', 'server.port'];

async function spansOf(port: number, pred: (s: CollectorSpan) => boolean, n: number): Promise<CollectorSpan[]> {
  const all = await rig!.collector.waitForSpans((ss) => ss.filter(pred).length >= n, 20_000);
  return all.filter(pred);
}

async function curlStatus(args: string[]): Promise<string> {
  const { stdout } = await execFileP('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{http_version}', '--max-time', '10', ...args]);
  return stdout;
}

test.serial('curl → Go server: HTTP/1.1, h2c Upgrade (101 → stream 1) and prior knowledge; 200/404/500 and body sizes', async (t) => {
  if (!need(t, unavailable)) return;
  const base = `http://127.0.0.1:${goPort}`;
  t.is(await curlStatus([`${base}/ok`]), '200 1.1');
  t.is(await curlStatus(['--http2', `${base}/big?n=3000`]), '200 2', 'curl upgraded to h2c');
  t.is(await curlStatus(['--http2-prior-knowledge', `${base}/missing`]), '404 2');
  t.is(await curlStatus(['--http2-prior-knowledge', `${base}/fail`]), '500 2');
  const server = await spansOf(goPort, onPort(goPort, SPAN_KIND_SERVER), 4);
  const client = await spansOf(goPort, onPort(goPort, SPAN_KIND_CLIENT), 4);
  const byPath = (p: string) => server.find((s) => s.attributes['url.path'] === p);
  const byUrl = (p: string) => client.find((s) => s.attributes['url.full'] === `${base}${p}` || s.attributes['url.full'] === `${base}${p.replace(/\?.*/, '')}`);
  t.is(server.length, 4, 'one SERVER span per request (the 101 is not a span of its own)');
  t.is(client.length, 4);
  t.deepEqual(attrs(byPath('/ok'), SERVER_KEYS), {
    'http.request.method': 'GET', 'url.path': '/ok', 'url.scheme': 'http', 'http.response.status_code': 200,
    'network.protocol.version': '1.1', 'error.type': undefined, 'server.port': goPort,
  });
  // the upgraded request: its response came as HTTP/2 stream 1
  t.deepEqual(attrs(byPath('/big'), SERVER_KEYS), {
    'http.request.method': 'GET', 'url.path': '/big', 'url.scheme': 'http', 'http.response.status_code': 200,
    'network.protocol.version': '2', 'error.type': undefined, 'server.port': goPort,
  });
  t.deepEqual(attrs(byUrl('/big'), CLIENT_KEYS), {
    'http.request.method': 'GET', 'url.full': `${base}/big`, 'http.response.status_code': 200,
    'network.protocol.version': '2', 'error.type': undefined, 'server.address': '127.0.0.1', 'server.port': goPort,
  });
  t.is(byPath('/big')!.parentSpanId, byUrl('/big')!.spanId, 'the upgraded request keeps its trace link');
  t.is(byPath('/big')!.name, 'GET');
  const missing = byPath('/missing')!;
  t.deepEqual(attrs(missing, SERVER_KEYS), {
    'http.request.method': 'GET', 'url.path': '/missing', 'url.scheme': 'http', 'http.response.status_code': 404,
    'network.protocol.version': '2', 'error.type': undefined, 'server.port': goPort,
  });
  t.not(missing.status.code, STATUS_ERROR, '404 is not a server error');
  t.is(byUrl('/missing')!.attributes['error.type'], '404');
  t.is(byUrl('/missing')!.status.code, STATUS_ERROR, '404 is a client error');
  t.is(byPath('/fail')!.attributes['error.type'], '500');
  t.is(byPath('/fail')!.status.code, STATUS_ERROR);
  t.is(byUrl('/fail')!.attributes['error.type'], '500');
  for (const s of [...server, ...client]) t.true(BigInt(s.endTimeUnixNano) > BigInt(s.startTimeUnixNano));

  // metrics: durations and body sizes
  const c = rig!.collector;
  const dur = await waitMetric(c, 'http.server.request.duration', { 'http.request.method': 'GET', 'http.response.status_code': 500, 'network.protocol.version': '2' });
  t.is(dur.unit, 's');
  t.deepEqual(dur.explicitBounds, [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10]);
  t.is(dur.attributes['error.type'], '500');
  const big = await waitMetric(c, 'http.server.response.body.size', { 'http.response.status_code': 200, 'network.protocol.version': '2' });
  t.is(big.unit, 'By');
  t.is(big.count, 1);
  t.is(big.sum, 3000);
  const ok = await waitMetric(c, 'http.client.response.body.size', { 'http.response.status_code': 200, 'network.protocol.version': '1.1', 'server.port': goPort });
  t.is(ok.sum, 2, '"ok"');
  const reqBody = await waitMetric(c, 'http.server.request.body.size', { 'http.response.status_code': 200, 'network.protocol.version': '1.1' });
  t.is(reqBody.sum, 0);
});

test.serial('a POST body is measured on both ends', async (t) => {
  if (!need(t, unavailable)) return;
  t.is(await curlStatus(['-X', 'POST', '--data-binary', 'x'.repeat(1234), `http://127.0.0.1:${goPort}/ok`]), '200 1.1');
  const c = rig!.collector;
  const s = await waitMetric(c, 'http.server.request.body.size', { 'http.request.method': 'POST' });
  t.is(s.sum, 1234);
  const cl = await waitMetric(c, 'http.client.request.body.size', { 'http.request.method': 'POST', 'server.port': goPort });
  t.is(cl.sum, 1234);
});

test.serial('the server resets the connection mid-request: the client span ends with connection_reset', async (t) => {
  if (!need(t, unavailable)) return;
  await t.throwsAsync(curlStatus([`http://127.0.0.1:${resetPort}/doomed`]));
  const [client] = await spansOf(resetPort, onPort(resetPort, SPAN_KIND_CLIENT), 1);
  const [server] = await spansOf(resetPort, onPort(resetPort, SPAN_KIND_SERVER), 1);
  t.deepEqual(attrs(client, CLIENT_KEYS), {
    'http.request.method': 'GET', 'url.full': `http://127.0.0.1:${resetPort}/doomed`, 'http.response.status_code': undefined,
    'network.protocol.version': '1.1', 'error.type': 'connection_reset', 'server.address': '127.0.0.1', 'server.port': resetPort,
  });
  t.is(client!.status.code, STATUS_ERROR);
  t.is(client!.name, 'GET');
  // the server closed it itself (SO_LINGER 0): for it the request ended with the connection
  t.deepEqual(attrs(server, SERVER_KEYS), {
    'http.request.method': 'GET', 'url.path': '/doomed', 'url.scheme': 'http', 'http.response.status_code': undefined,
    'network.protocol.version': '1.1', 'error.type': 'connection_closed', 'server.port': resetPort,
  });
  t.is(server!.status.code, STATUS_ERROR);
  const m = await waitMetric(rig!.collector, 'http.client.request.duration', { 'error.type': 'connection_reset', 'server.port': resetPort });
  t.is(m.count, 1);
  t.is(m.attributes['http.response.status_code'], undefined);
});

test.serial('no answer, the client gives up and closes: both spans end at the close with connection_closed', async (t) => {
  if (!need(t, unavailable)) return;
  await t.throwsAsync(execFileP('curl', ['-sS', '--max-time', '0.5', `http://127.0.0.1:${silentPort}/never`]));
  const pred = (kind: number) => (s: CollectorSpan) => onPort(silentPort, kind)(s) && String(s.attributes['url.path'] ?? s.attributes['url.full']).endsWith('/never');
  const [client] = await spansOf(silentPort, pred(SPAN_KIND_CLIENT), 1);
  const [server] = await spansOf(silentPort, pred(SPAN_KIND_SERVER), 1);
  t.is(client!.attributes['error.type'], 'connection_closed');
  t.is(client!.status.code, STATUS_ERROR);
  t.is(server!.attributes['error.type'], 'connection_closed');
  const ms = (s: CollectorSpan) => Number(BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano)) / 1e6;
  t.true(ms(client!) >= 400 && ms(client!) < TIMEOUT_MS, `client span lasted until curl gave up (${ms(client!)} ms)`);
  t.is(server!.parentSpanId, client!.spanId);
});

test.serial('no answer and the connection left open: both spans end after http.requestTimeoutMs with error.type timeout', async (t) => {
  if (!need(t, unavailable)) return;
  await execFileP(NODE, ['-e', HOLD_CLIENT(silentPort, '/held', TIMEOUT_MS + 1500)], { env: { ...process.env, OTEL_SERVICE_NAME: 'hold-client' } });
  const pred = (kind: number) => (s: CollectorSpan) => onPort(silentPort, kind)(s) && String(s.attributes['url.path'] ?? s.attributes['url.full']).endsWith('/held');
  const [client] = await spansOf(silentPort, pred(SPAN_KIND_CLIENT), 1);
  const [server] = await spansOf(silentPort, pred(SPAN_KIND_SERVER), 1);
  for (const s of [client!, server!]) {
    t.is(s.attributes['error.type'], 'timeout');
    t.is(s.attributes['http.response.status_code'], undefined);
    t.is(s.status.code, STATUS_ERROR);
    t.is(BigInt(s.endTimeUnixNano) - BigInt(s.startTimeUnixNano), BigInt(TIMEOUT_MS) * 1_000_000n, 'ends exactly at the timeout');
  }
  // the close that followed does not end them a second time
  await new Promise((r) => setTimeout(r, 1000));
  const again = (await rig!.collector.spans()).filter((s) => pred(SPAN_KIND_SERVER)(s) || pred(SPAN_KIND_CLIENT)(s));
  t.is(again.length, 2);
  const m = await waitMetric(rig!.collector, 'http.server.request.duration', { 'error.type': 'timeout' });
  t.is(m.count, 1);
});
