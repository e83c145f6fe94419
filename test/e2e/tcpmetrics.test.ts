/**
 * End to end: TCP connection metrics (tp_btf/inet_sock_set_state summaries) with real
 * traffic on this kernel, read back from a real Collector. A Node TCP client (service
 * `tcp-client`) opens three connections to a Node TCP server (`tcp-server`); on each it
 * sends exactly 1000 bytes, the server answers exactly 2500 and both close; then two
 * connects to a port nobody listens on fail with ECONNREFUSED. Every counter is exact.
 * Retransmits: in a test network namespace, a tc cls_bpf filter (test/fixtures/tc_drop.bpf.c;
 * this kernel has no netem) loses every 4th data segment of a 200 kB answer.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { collectorBinary, startCollector, type CollectorHistogramPoint, type CollectorSumPoint } from '../helpers/collector.js';
import { startAgentProcess } from '../helpers/agentproc.js';
import { repoRoot } from '../../src/paths.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { createNetns } from '../helpers/netns.js';
import { freePort, NODE, waitForPort } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

const SERVER = (port: number, reply = 2500): string => `
require('node:net').createServer((s) => {
  let got = 0;
  s.on('data', (d) => { got += d.length; if (got === 1000) s.end(Buffer.alloc(${reply}, 0x62)); });
  s.on('error', () => {});
}).listen(${port}, '127.0.0.1');`;

/** One connection: send 1000 bytes, read \`reply\` bytes, close. */
const ONE_CLIENT = (port: number, reply: number): string => `
const c = require('node:net').connect(${port}, '127.0.0.1', () => c.write(Buffer.alloc(1000, 0x61)));
let got = 0;
c.on('data', (d) => (got += d.length));
c.on('end', () => c.end());
c.on('close', () => { process.stdout.write(String(got)); });
c.on('error', (e) => { console.error(e); process.exit(1); });`;

const CLIENT = (port: number, closed: number): string => `
const net = require('node:net');
const one = () => new Promise((resolve, reject) => {
  const c = net.connect(${port}, '127.0.0.1', () => c.write(Buffer.alloc(1000, 0x61)));
  let got = 0;
  c.on('data', (d) => (got += d.length));
  c.on('end', () => { c.end(); });
  c.on('close', () => (got === 2500 ? resolve() : reject(new Error('got ' + got))));
  c.on('error', reject);
});
const refused = () => new Promise((resolve) => {
  const c = net.connect(${closed}, '127.0.0.1');
  c.on('error', (e) => resolve(e.code));
});
(async () => {
  for (let i = 0; i < 3; i++) await one();
  const codes = [await refused(), await refused()];
  process.stdout.write(JSON.stringify(codes));
})().catch((e) => { console.error(e); process.exit(1); });`;

function run(src: string, env: NodeJS.ProcessEnv): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(NODE, ['-e', src], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`client exited ${code}: ${err}`))));
  });
}

type Point = { name: string; resource: Record<string, unknown>; attributes: Record<string, unknown> };

/** The last exported point (cumulative: the total) per (service, metric, attributes). */
function latest<T extends Point>(points: T[]): Map<string, T> {
  const out = new Map<string, T>();
  for (const p of points) {
    const attrs = Object.entries(p.attributes).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${String(v)}`).join(',');
    out.set(`${String(p.resource['service.name'])} ${p.name} ${attrs}`, p);
  }
  return out;
}

test.serial('TCP connection metrics from real connections: opened, failed, bytes, duration, rtt, retransmits', async (t) => {
  if (!need(t, unavailable)) return;
  const collector = await startCollector();
  const [port, closed] = [await freePort(), await freePort()];
  const server = spawn(NODE, ['-e', SERVER(port)], { env: { ...process.env, OTEL_SERVICE_NAME: 'tcp-server' }, stdio: 'ignore' });
  const dir = mkdtempSync(join(tmpdir(), 'sl-tcp-'));
  writeFileSync(join(dir, 'c.yaml'), `filter:\n  ports:\n    include: [${port}, ${closed}]\n`);
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  let sums = new Map<string, CollectorSumPoint>();
  let hists = new Map<string, CollectorHistogramPoint>();
  let codes = '';
  let health: Record<string, unknown> = {};
  try {
    await waitForPort(port);
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_METRIC_EXPORT_INTERVAL: '500' }, ['--config', join(dir, 'c.yaml')]);
    codes = await run(CLIENT(port, closed), { OTEL_SERVICE_NAME: 'tcp-client' });
    const done = (): boolean =>
      [...sums.values()].some((p) => p.name === 'sidelight.tcp.connect.failures' && p.value === 2) &&
      [...hists.values()].filter((h) => h.name === 'sidelight.tcp.connection.duration').reduce((n, h) => n + h.count, 0) === 6;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      sums = latest(await collector.sums());
      hists = latest(await collector.metrics());
      if (done()) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    health = (await (await fetch(`${agent.healthUrl}/healthz`)).json()) as Record<string, unknown>;
  } finally {
    server.kill('SIGKILL');
    await agent?.stop();
    await collector.stop();
  }
  t.is(codes, '["ECONNREFUSED","ECONNREFUSED"]');
  const sum = (key: string): number | undefined => sums.get(key)?.value;
  const peerC = `network.peer.address=127.0.0.1,server.port=${port}`;
  const peerS = `network.peer.address=127.0.0.1,server.port=${port}`;
  t.log(JSON.stringify(health['tcp']), JSON.stringify(health['kernel']));
  t.is(sum(`tcp-client sidelight.tcp.connections.opened ${peerC},sidelight.tcp.role=client`), 3);
  t.is(sum(`tcp-server sidelight.tcp.connections.opened ${peerS},sidelight.tcp.role=server`), 3);
  t.is(sum(`tcp-client sidelight.tcp.connect.failures error.type=ECONNREFUSED,network.peer.address=127.0.0.1,server.port=${closed}`), 2);
  // Node connects without blocking (EINPROGRESS): the attempts count as opened, then as failed
  t.is(sum(`tcp-client sidelight.tcp.connections.opened network.peer.address=127.0.0.1,server.port=${closed},sidelight.tcp.role=client`), 2);
  t.is(sum(`tcp-client sidelight.tcp.bytes network.io.direction=transmit,network.peer.address=127.0.0.1,server.port=${closed},sidelight.tcp.role=client`), undefined, 'a failed connect has no bytes');
  t.is(sum(`tcp-client sidelight.tcp.bytes ${peerC.replace('network.peer', 'network.io.direction=transmit,network.peer')},sidelight.tcp.role=client`), 3000);
  t.is(sum(`tcp-client sidelight.tcp.bytes ${peerC.replace('network.peer', 'network.io.direction=receive,network.peer')},sidelight.tcp.role=client`), 7500);
  t.is(sum(`tcp-server sidelight.tcp.bytes ${peerS.replace('network.peer', 'network.io.direction=transmit,network.peer')},sidelight.tcp.role=server`), 7500);
  t.is(sum(`tcp-server sidelight.tcp.bytes ${peerS.replace('network.peer', 'network.io.direction=receive,network.peer')},sidelight.tcp.role=server`), 3000);
  t.is(sum(`tcp-client sidelight.tcp.retransmits ${peerC},sidelight.tcp.role=client`), 0);
  t.is(sum(`tcp-server sidelight.tcp.retransmits ${peerS},sidelight.tcp.role=server`), 0);
  for (const [svc, role] of [['tcp-client', 'client'], ['tcp-server', 'server']] as const) {
    const d = hists.get(`${svc} sidelight.tcp.connection.duration ${peerC},sidelight.tcp.role=${role}`);
    t.is(d?.count, 3, `${svc} duration count`);
    t.is(d?.unit, 's');
    t.true((d?.sum ?? 0) > 0 && (d?.sum ?? 99) < 10, `${svc} duration sum ${d?.sum}`);
    const rtt = hists.get(`${svc} sidelight.tcp.rtt ${peerC},sidelight.tcp.role=${role}`);
    t.is(rtt?.count, 3, `${svc} rtt count`);
    t.true((rtt?.sum ?? 0) > 0 && (rtt?.sum ?? 1) < 0.1, `${svc} loopback rtt sum ${rtt?.sum}`);
  }
  const tcp = health['tcp'] as { unattributed: number; malformed: number };
  t.is(tcp.malformed, 0);
  t.is(tcp.unattributed, 0, 'every server summary found the process that accepted it');
});

test.serial('retransmits: segments dropped by a tc filter in a test network namespace are counted; bytes stay exact', async (t) => {
  if (!need(t, unavailable)) return;
  const dir = mkdtempSync(join(tmpdir(), 'sl-tcpdrop-'));
  const port = await freePort();
  const REPLY = 200_000;
  // tc with a cls_bpf program at lo's ingress (no netem/gact on this kernel): every 4th data segment of the server is lost
  execFileSync('clang', ['-g', '-O2', '-target', 'bpf', '-D__TARGET_ARCH_x86', `-DPORT=${port}`, '-DDROP_EVERY=4', '-Wall', '-Werror', '-I', join(repoRoot(), 'build'), '-c', join(repoRoot(), 'test/fixtures/tc_drop.bpf.c'), '-o', join(dir, 'drop.o')]);
  const ns = createNetns(`sltcp${process.pid % 100000}`);
  const collector = await startCollector();
  writeFileSync(join(dir, 'c.yaml'), `filter:\n  ports:\n    include: [${port}]\n`);
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  let sums = new Map<string, CollectorSumPoint>();
  let got = '';
  try {
    for (const args of [['ip', 'link', 'set', 'lo', 'mtu', '1500'], ['tc', 'qdisc', 'add', 'dev', 'lo', 'clsact'], ['tc', 'filter', 'add', 'dev', 'lo', 'ingress', 'bpf', 'da', 'obj', join(dir, 'drop.o'), 'sec', 'tc']]) {
      const r = ns.run(args[0]!, args.slice(1));
      if (r.status !== 0) throw new Error(`${args.join(' ')}: ${r.stderr}`);
    }
    ns.spawn(NODE, ['-e', SERVER(port, REPLY)], { OTEL_SERVICE_NAME: 'tcp-server' });
    const deadline0 = Date.now() + 10_000;
    while (ns.run('bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`]).status !== 0 && Date.now() < deadline0) await new Promise((r) => setTimeout(r, 100));
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_METRIC_EXPORT_INTERVAL: '500' }, ['--config', join(dir, 'c.yaml')]);
    got = ns.run(NODE, ['-e', ONE_CLIENT(port, REPLY)], { OTEL_SERVICE_NAME: 'tcp-client' }).stdout;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      sums = latest(await collector.sums());
      const keys = [...sums.keys()];
      if (['tcp-client', 'tcp-server'].every((svc) => keys.some((k) => k.startsWith(`${svc} sidelight.tcp.retransmits`)))) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    ns.remove();
    await agent?.stop();
    await collector.stop();
  }
  t.is(got, String(REPLY));
  t.log(JSON.stringify([...sums.values()].filter((p) => p.name.startsWith('sidelight.tcp')).map((p) => [p.resource['service.name'], p.name, p.attributes, p.value])));
  const peer = `network.peer.address=127.0.0.1,server.port=${port}`;
  const at = (svc: string, metric: string, attrs: string): number | undefined => sums.get(`${svc} ${metric} ${attrs}`)?.value;
  const retransmits = at('tcp-server', 'sidelight.tcp.retransmits', `${peer},sidelight.tcp.role=server`) ?? 0;
  t.true(retransmits >= 5, `server retransmitted ${retransmits} segments (every 4th of ~140 dropped)`);
  t.is(at('tcp-client', 'sidelight.tcp.retransmits', `${peer},sidelight.tcp.role=client`), 0);
  t.is(at('tcp-server', 'sidelight.tcp.bytes', `network.io.direction=transmit,${peer},sidelight.tcp.role=server`), REPLY, 'retransmissions are not counted twice');
  t.is(at('tcp-client', 'sidelight.tcp.bytes', `network.io.direction=receive,${peer},sidelight.tcp.role=client`), REPLY);
});

/** Server for a connection that predates the agent: 2500 bytes back after each 1000 received, then closes after the second. */
const OLD_SERVER = (port: number): string => `
require('node:net').createServer((s) => {
  let got = 0;
  s.on('data', (d) => {
    const before = got;
    got += d.length;
    if (before < 1000 && got >= 1000) s.write(Buffer.alloc(2500, 0x62));
    if (before < 2000 && got >= 2000) s.end(Buffer.alloc(2500, 0x63));
  });
  s.on('error', () => {});
}).listen(${port}, '127.0.0.1');`;

/**
 * One connection: 1000 bytes out and 2500 in, "ready", then on "go" (stdin) 1000 out and 2500
 * in, closed by the server. It lives on a moment after: a process that predates the agent has
 * not been described by the kernel (no connect or accept since), and its name and environment
 * come from /proc when its first event after the pickup is processed.
 */
const OLD_CLIENT = (port: number): string => `
const c = require('node:net').connect(${port}, '127.0.0.1', () => c.write(Buffer.alloc(1000, 0x61)));
let got = 0;
c.on('data', (d) => { got += d.length; if (got === 2500) process.stdout.write('ready\\n'); });
process.stdin.once('data', () => c.write(Buffer.alloc(1000, 0x61)));
c.on('end', () => c.end());
c.on('close', () => { process.stdout.write('got ' + got + '\\n'); setTimeout(() => process.exit(got === 5000 ? 0 : 1), 1500); });
c.on('error', (e) => { console.error(e); process.exit(1); });`;

test.serial('a connection open before the agent started: its summary counts what passed since the pickup, for the processes that closed it, with no duration', async (t) => {
  if (!need(t, unavailable)) return;
  const collector = await startCollector();
  const port = await freePort();
  const server = spawn(NODE, ['-e', OLD_SERVER(port)], { env: { ...process.env, OTEL_SERVICE_NAME: 'tcp-old-server' }, stdio: 'ignore' });
  const dir = mkdtempSync(join(tmpdir(), 'sl-tcp-old-'));
  writeFileSync(join(dir, 'c.yaml'), `filter:\n  ports:\n    include: [${port}]\n`);
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  let sums = new Map<string, CollectorSumPoint>();
  let hists = new Map<string, CollectorHistogramPoint>();
  let health: Record<string, unknown> = {};
  let code: number | null = null;
  let client: ReturnType<typeof spawn> | undefined;
  let out = '';
  let err = '';
  try {
    await waitForPort(port);
    client = spawn(NODE, ['-e', OLD_CLIENT(port)], { env: { ...process.env, OTEL_SERVICE_NAME: 'tcp-old-client' }, stdio: ['pipe', 'pipe', 'pipe'] });
    client.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    client.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const c = client;
    const clientExit = new Promise<number | null>((resolve) => c.on('exit', resolve));
    for (const end = Date.now() + 10_000; !out.includes('ready'); ) {
      if (Date.now() > end) throw new Error(`client not ready: ${out} ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    // the first exchange is over before the agent starts: the pickup finds the connection open
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_METRIC_EXPORT_INTERVAL: '500' }, ['--config', join(dir, 'c.yaml')]);
    client.stdin!.write('go\n');
    code = await clientExit;
    const key = (svc: string, role: string, dir2: string): string =>
      `${svc} sidelight.tcp.bytes network.io.direction=${dir2},network.peer.address=127.0.0.1,server.port=${port},sidelight.tcp.role=${role}`;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      sums = latest(await collector.sums());
      hists = latest(await collector.metrics());
      if (sums.has(key('tcp-old-client', 'client', 'receive')) && sums.has(key('tcp-old-server', 'server', 'receive'))) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    health = (await (await fetch(`${agent.healthUrl}/healthz`)).json()) as Record<string, unknown>;
    t.log(JSON.stringify(health['tcp']), JSON.stringify(health['pickup']));
    if (!sums.has(key('tcp-old-client', 'client', 'receive'))) t.log([...sums.keys(), ...hists.keys()].filter((k) => k.includes('sidelight.tcp')).join('\n'));
    t.is(code, 0, `client: ${out} ${err}`);
    t.is(sums.get(key('tcp-old-client', 'client', 'transmit'))?.value, 1000, 'the client sent 1000 bytes while the agent watched (1000 before)');
    t.is(sums.get(key('tcp-old-client', 'client', 'receive'))?.value, 2500);
    t.is(sums.get(key('tcp-old-server', 'server', 'transmit'))?.value, 2500);
    t.is(sums.get(key('tcp-old-server', 'server', 'receive'))?.value, 1000);
    const peer = `network.peer.address=127.0.0.1,server.port=${port}`;
    for (const [svc, role] of [['tcp-old-client', 'client'], ['tcp-old-server', 'server']] as const) {
      t.is(hists.get(`${svc} sidelight.tcp.connection.duration ${peer},sidelight.tcp.role=${role}`), undefined, `${svc}: no duration (its start is unknown)`);
      t.is(hists.get(`${svc} sidelight.tcp.rtt ${peer},sidelight.tcp.role=${role}`)?.count, 1, `${svc} rtt`);
      t.is(sums.get(`${svc} sidelight.tcp.connections.opened ${peer},sidelight.tcp.role=${role}`), undefined, `${svc}: not opened while the agent watched`);
    }
    const tcp = health['tcp'] as { picked: number; unattributed: number; pickedUp: number };
    t.is(tcp.picked, 2, 'both ends reported as picked up');
    t.is(tcp.unattributed, 0);
    t.is(tcp.pickedUp, 0, 'nothing left waiting');
  } finally {
    client?.kill('SIGKILL');
    server.kill('SIGKILL');
    await agent?.stop();
    await collector.stop();
  }
});
