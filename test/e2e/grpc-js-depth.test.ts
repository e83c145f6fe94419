/**
 * gRPC depth with @grpc/grpc-js peers (server and client as Node child processes) on the real
 * kernel, asserted on a real Collector's output: streaming calls (server, client and bidi
 * streaming) are one span per call, DEADLINE_EXCEEDED from the client's deadline, and a
 * 100 kB unary reply past the 512-byte capture (on a fresh connection: the server's framing is
 * found again at the trailers' write, whose HPACK block refers to no older entry).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import test from 'ava';
import type { CollectorSpan } from '../helpers/collector.js';
import { need } from '../helpers/kernel.js';
import { attrs, onPort, peersUnavailable, SPAN_KIND_CLIENT, SPAN_KIND_SERVER, startPeer, startRig, STATUS_ERROR, type Rig } from '../helpers/peers.js';
import { repoRoot } from '../../src/paths.js';
import { freePort, NODE } from '../helpers/servers.js';

const execFileP = promisify(execFile);
const unavailable = peersUnavailable();
const KEYS = ['rpc.system.name', 'rpc.method', 'rpc.status_code', 'error.type', 'network.protocol.version', 'server.port'];
let rig: Rig | undefined;
let port = 0;

const DEF = `
const grpc = require(${JSON.stringify(`${repoRoot()}/node_modules/@grpc/grpc-js`)});
const id = (b) => b;
const m = (name, requestStream, responseStream) => ({ path: '/demo.Stream/' + name, requestStream, responseStream, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id });
const def = { List: m('List', false, true), Sum: m('Sum', true, false), Chat: m('Chat', true, true), Big: m('Big', false, false), Slow: m('Slow', false, false) };`;

const SERVER = (p: number) => `${DEF}
const server = new grpc.Server();
server.addService(def, {
  List: (call) => { for (let i = 0; i < 3; i++) call.write(Buffer.from('item' + i)); call.end(); },
  Sum: (call, cb) => { let n = 0; call.on('data', (d) => n += d.length); call.on('end', () => cb(null, Buffer.from(String(n)))); },
  Chat: (call) => { call.on('data', (d) => call.write(d)); call.on('end', () => call.end()); },
  Big: (call, cb) => cb(null, Buffer.alloc(100000, 0x78)),
  Slow: (call, cb) => setTimeout(() => cb(null, Buffer.from('late')), 2000),
});
server.bindAsync('127.0.0.1:${p}', grpc.ServerCredentials.createInsecure(), () => {});`;

const CLIENT = (p: number) => `${DEF}
const Client = grpc.makeGenericClientConstructor(def, 'Stream');
const c = new Client('127.0.0.1:${p}', grpc.credentials.createInsecure());
const out = [];
const list = () => new Promise((res) => { const s = c.List(Buffer.from('x')); let n = 0; s.on('data', () => n++); s.on('end', () => { out.push('list:' + n); res(); }); s.on('error', res); });
const sum = () => new Promise((res) => { const s = c.Sum((e, r) => { out.push('sum:' + String(r)); res(); }); for (let i = 0; i < 4; i++) s.write(Buffer.from('abc')); s.end(); });
const chat = () => new Promise((res) => { const s = c.Chat(); let n = 0; s.on('data', () => n++); s.on('end', () => { out.push('chat:' + n); res(); }); s.write(Buffer.from('a')); s.write(Buffer.from('b')); s.end(); });
// on a connection of its own: after the capture gap only HPACK entries inserted since can be trusted
const c2 = new Client('127.0.0.1:${p}', grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
const big = () => new Promise((res) => c2.Big(Buffer.from('x'), (e, r) => { out.push('big:' + (r ? r.length : e.code)); c2.close(); res(); }));
const slow = () => new Promise((res) => c.Slow(Buffer.from('x'), { deadline: Date.now() + 300 }, (e) => { out.push('slow:' + (e && e.code)); res(); }));
(async () => { await list(); await sum(); await chat(); await big(); await slow(); console.log(out.join(' ')); c.close(); })();`;

test.before(async () => {
  if (unavailable) return;
  port = await freePort();
  rig = await startRig([port], 1500);
  await startPeer(rig, NODE, ['-e', SERVER(port)], port, 'grpcjs-server');
});

test.after.always(async () => {
  await rig?.stop();
});

const expected = (method: string, status: string | undefined, error: string | undefined): Record<string, unknown> => ({
  'rpc.system.name': 'grpc', 'rpc.method': `demo.Stream/${method}`, 'rpc.status_code': status, 'error.type': error, 'network.protocol.version': '2', 'server.port': port,
});

test.serial('grpc-js: server, client and bidi streaming are one span per call; deadline; 100 kB reply', async (t) => {
  if (!need(t, unavailable)) return;
  const { stdout } = await execFileP(NODE, ['-e', CLIENT(port)], { env: { ...process.env, OTEL_SERVICE_NAME: 'grpcjs-client' } });
  t.is(stdout.trim(), 'list:3 sum:12 chat:2 big:100000 slow:4');
  const all = await rig!.collector.waitForSpans((ss) => ss.filter(onPort(port, SPAN_KIND_SERVER)).length >= 5 && ss.filter(onPort(port, SPAN_KIND_CLIENT)).length >= 5, 20_000);
  const server = all.filter(onPort(port, SPAN_KIND_SERVER));
  const client = all.filter(onPort(port, SPAN_KIND_CLIENT));
  t.is(server.length, 5, 'one SERVER span per call, not per message');
  t.is(client.length, 5);
  const s = (m: string): CollectorSpan | undefined => server.find((x) => x.name === `demo.Stream/${m}`);
  const c = (m: string): CollectorSpan | undefined => client.find((x) => x.name === `demo.Stream/${m}`);
  for (const m of ['List', 'Sum', 'Chat']) {
    t.deepEqual(attrs(s(m), KEYS), expected(m, 'OK', undefined), `server ${m}`);
    t.deepEqual(attrs(c(m), KEYS), expected(m, 'OK', undefined), `client ${m}`);
    t.is(s(m)!.parentSpanId, c(m)!.spanId, `${m} linked`);
  }
  // 100 kB: Node writes the trailers in a write of their own, where the server direction's
  // framing is found again; the client's reads split anywhere. OK or unknown, never wrong.
  for (const x of [s('Big')!, c('Big')!]) {
    const status = x.attributes['rpc.status_code'];
    t.deepEqual(attrs(x, KEYS), expected('Big', status === undefined ? undefined : 'OK', undefined));
    t.log(`100 kB reply, ${x.kind === SPAN_KIND_SERVER ? 'server' : 'client'}: status ${String(status ?? 'unknown')}`);
  }
  t.is(s('Big')!.parentSpanId, c('Big')!.spanId, 'Big linked');
  t.deepEqual(attrs(c('Slow'), KEYS), expected('Slow', 'DEADLINE_EXCEEDED', 'DEADLINE_EXCEEDED'));
  t.is(c('Slow')!.status.code, STATUS_ERROR);
  t.deepEqual(attrs(s('Slow'), KEYS), expected('Slow', 'DEADLINE_EXCEEDED', 'DEADLINE_EXCEEDED'));
});
