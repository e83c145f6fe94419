/**
 * k8s-scale.ts — what Kubernetes metadata costs the agent on a large cluster: sync time,
 * retained heap and lookup speed of src/enrich/k8s.ts against the API stand-in
 * (test/helpers/fakek8s.ts, the real list/watch protocol through @kubernetes/client-node).
 *
 * The parent process runs the API stand-in seeded with a cluster; a child process (its own
 * heap, `--expose-gc`) starts KubernetesMetadata against it and reports, so the stand-in's
 * memory is not counted. Scenarios:
 *   cluster   10,000 pods (110 on this node), 2,000 Services, one EndpointSlice each with
 *             5 endpoints (10,000 endpoints): what every agent of such a cluster holds
 *   node-10k  the same, with all 10,000 pods on this node (an upper bound; kubelet's
 *             default limit is 110 pods per node)
 * Prints a Markdown table on stdout; bench/results/k8s-scale.md keeps the last run.
 *
 *   node --import tsx bench/k8s-scale.ts
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { KubeConfig } from '@kubernetes/client-node';
import { KubernetesMetadata } from '../src/enrich/k8s.js';
import { endpointSlice, FakeK8s, pod, replicaSet, service } from '../test/helpers/fakek8s.js';

const NODE = 'node-a';
const PODS = 10_000;
const SERVICES = 2_000;
const PER_SLICE = 5;

interface Report {
  scenario: string;
  syncMs: number;
  heapMiB: number;
  rssMiB: number;
  rssBaseMiB: number;
  pods: number;
  services: number;
  endpoints: number;
  lookupsPerSec: number;
}

function ip(i: number): string {
  return `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
}

function seed(f: FakeK8s, onNode: (i: number) => boolean): void {
  for (let r = 0; r < SERVICES; r++) f.apply(replicaSet('shop', `app${r}-5d9f8c`, `rs-${r}`, { name: `app${r}`, uid: `dep-${r}` }));
  for (let i = 0; i < PODS; i++) {
    const r = i % SERVICES;
    f.apply(
      pod({
        namespace: 'shop',
        name: `app${r}-5d9f8c-${i}`,
        uid: `pod-${i}`,
        nodeName: onNode(i) ? NODE : `node-${i % 90}`,
        ip: ip(i + 1),
        labels: { 'app.kubernetes.io/name': `app${r}`, 'pod-template-hash': '5d9f8c' },
        annotations: { 'kubectl.kubernetes.io/restartedAt': '2026-11-01T00:00:00Z' },
        containers: { app: `containerd://${i.toString(16).padStart(64, '0')}` },
        owner: { kind: 'ReplicaSet', name: `app${r}-5d9f8c`, uid: `rs-${r}` },
      }),
    );
  }
  for (let s = 0; s < SERVICES; s++) {
    f.apply(service('shop', `app${s}`, `10.96.${s >> 8}.${s & 255}`, [80]));
    const eps = [];
    for (let k = 0; k < PER_SLICE; k++) {
      const i = s + k * SERVICES;
      eps.push({ ip: ip(i + 1), nodeName: `node-${i % 90}`, pod: { name: `app${s}-5d9f8c-${i}`, uid: `pod-${i}` } });
    }
    f.apply(endpointSlice('shop', `app${s}`, `app${s}-x`, eps, [8080]));
  }
}

async function child(server: string, token: string, scenario: string): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) throw new Error('run with --expose-gc');
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server, skipTLSVerify: true }],
    users: [{ name: 'u', token }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'u' }],
    currentContext: 'fake',
  });
  // load the client library before the baseline, so only the data is measured
  await import('@kubernetes/client-node');
  gc();
  const before = process.memoryUsage().heapUsed;
  const rssBaseMiB = process.memoryUsage().rss / 2 ** 20;
  const m = new KubernetesMetadata({ nodeName: NODE, client: kc, maxPods: 16_384, syncTimeoutMs: 120_000, requestTimeoutMs: 120_000 });
  const t0 = performance.now();
  await m.start();
  const syncMs = performance.now() - t0;
  // owners resolve in the background: let them finish
  await new Promise((r) => setTimeout(r, 2000));
  gc();
  const heapMiB = (process.memoryUsage().heapUsed - before) / 2 ** 20;
  const rssMiB = process.memoryUsage().rss / 2 ** 20;
  let n = 0;
  const t1 = performance.now();
  while (performance.now() - t1 < 1000) {
    for (let k = 0; k < 1000; k++) m.describePeer(ip(((n + k) % PODS) + 1), 8080);
    n += 1000;
  }
  const lookupsPerSec = n / ((performance.now() - t1) / 1000);
  const r: Report = { scenario, syncMs, heapMiB, rssMiB, rssBaseMiB, pods: m.stats.pods, services: m.stats.services, endpoints: m.stats.endpoints, lookupsPerSec };
  await m.stop();
  process.stdout.write(JSON.stringify(r) + '\n');
}

async function runScenario(scenario: string, onNode: (i: number) => boolean): Promise<Report> {
  const f = await FakeK8s.start({ historyLimit: 100 });
  seed(f, onNode);
  const kc = f.kubeConfig();
  const cluster = kc.getCurrentCluster()!;
  const token = kc.getCurrentUser()!.token!;
  const p = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), 'child', cluster.server, token, scenario], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => p.once('exit', r));
  await f.close();
  if (code !== 0) throw new Error(`${scenario}: child exited ${code}`);
  return JSON.parse(out.trim().split('\n').at(-1)!) as Report;
}

async function main(): Promise<void> {
  if (process.argv[2] === 'child') return child(process.argv[3]!, process.argv[4]!, process.argv[5]!);
  const rows = [
    await runScenario('cluster', (i) => i % 91 === 0 && i < 91 * 110),
    await runScenario('node-10k', () => true),
  ];
  const lines = [
    `Kubernetes metadata at scale (bench/k8s-scale.ts, ${new Date().toISOString().slice(0, 10)}, Node ${process.version}):`,
    `${PODS} pods, ${SERVICES} Services, ${SERVICES} EndpointSlices × ${PER_SLICE} endpoints.`,
    '',
    '| scenario | pods of this node held | services | endpoints | sync (list+watch) | retained heap | RSS before → after | describePeer lookups/s |',
    '|---|---|---|---|---|---|---|---|',
    ...rows.map(
      (r) =>
        `| ${r.scenario} | ${r.pods} | ${r.services} | ${r.endpoints} | ${(r.syncMs / 1000).toFixed(2)} s | ${r.heapMiB.toFixed(1)} MiB | ${r.rssBaseMiB.toFixed(0)} → ${r.rssMiB.toFixed(0)} MiB | ${(r.lookupsPerSec / 1e6).toFixed(2)} M |`,
    ),
  ];
  process.stdout.write(lines.join('\n') + '\n');
}

await main();
