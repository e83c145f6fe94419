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
