/**
 * End to end, the whole chain pid → cgroup → container → pod → resource for real: two
 * "pods" are real cgroups created under this machine's cgroup v2 hierarchy, named the way
 * the kubelet (systemd driver) and containerd name them; a real python3 server runs in one
 * and short-lived curl clients in the other. `bin/sidelight run` watches a Kubernetes API
 * stand-in that speaks the real protocol (test/helpers/fakek8s.ts, through the real client
 * library) and exports to a real Collector; the assertions are on the Collector's output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { cgroup2Root } from '../../src/agent.js';
import { startAgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector, type CollectorSpan } from '../helpers/collector.js';
import { endpointSlice, FakeK8s, job, pod, replicaSet } from '../helpers/fakek8s.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { freePort, waitForPort } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

const NODE = 'node-a';
const SERVER_IP = '127.0.0.55'; // stands for the server pod's IP (loopback: no CNI here)
const SRV = { uid: '5e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b', cid: 'c0ffee'.repeat(10) + 'beef' };
const CLI = { uid: '7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c2d', cid: 'decade'.repeat(10) + 'f00d' };

/** /kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope */
function podCgroup(qos: string, uid: string, cid: string): string {
  return `/kubepods.slice/kubepods-${qos}.slice/kubepods-${qos}-pod${uid.replaceAll('-', '_')}.slice/cri-containerd-${cid}.scope`;
}

/** Run argv inside the cgroup (the shell moves itself in, then execs). */
function inCgroup(cgroup: string, argv: string[], cwd?: string): ChildProcess {
  const procs = `${cgroup2Root()}${cgroup}/cgroup.procs`;
  return spawn('sh', ['-c', `echo $$ > ${procs} && exec "$@"`, 'sh', ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...(cwd ? { cwd } : {}) });
}

async function run(p: ChildProcess): Promise<{ code: number | null; out: string }> {
  let out = '';
  p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((r) => p.once('exit', r));
  return { code, out };
}

function removeCgroups(paths: string[]): void {
  for (const p of paths) {
    // innermost first: the scope, then each parent slice the test created
    const parts = p.split('/').filter(Boolean);
    for (let i = parts.length; i > 0; i--) {
      try {
        rmdirSync(`${cgroup2Root()}/${parts.slice(0, i).join('/')}`);
      } catch {
        /* still in use by the other pod's path, or gone */
      }
    }
  }
}

test.serial('spans of processes in kubelet/containerd-named cgroups carry their pod, owners and service; the peer is named', async (t) => {
  if (!need(t, unavailable)) return;
  const srvCg = podCgroup('burstable', SRV.uid, SRV.cid);
  const cliCg = podCgroup('besteffort', CLI.uid, CLI.cid);
  for (const cg of [srvCg, cliCg]) mkdirSync(`${cgroup2Root()}${cg}`, { recursive: true });

  const k8s = await FakeK8s.start();
  k8s.apply(replicaSet('shop', 'orders-7d9f8', 'rs-uid-1', { name: 'orders', uid: 'dep-uid-1' }));
  k8s.apply(job('batch', 'report-29345', 'job-uid-1', { name: 'report', uid: 'cj-uid-1' }));
  const port = await freePort();
  k8s.apply(
    pod({
      namespace: 'shop', name: 'orders-7d9f8-x2x4k', uid: SRV.uid, nodeName: NODE, ip: SERVER_IP,
      labels: { 'app.kubernetes.io/name': 'orders', 'app.kubernetes.io/version': '2.4.1' },
      containers: { api: `containerd://${SRV.cid}` },
      owner: { kind: 'ReplicaSet', name: 'orders-7d9f8', uid: 'rs-uid-1' },
    }),
  );
  k8s.apply(
    pod({
      namespace: 'batch', name: 'report-29345-8xk2p', uid: CLI.uid, nodeName: NODE, ip: '127.0.0.56',
      containers: { fetch: `containerd://${CLI.cid}` },
      owner: { kind: 'Job', name: 'report-29345', uid: 'job-uid-1' },
    }),
  );
  k8s.apply(endpointSlice('shop', 'orders', 'orders-abcde', [{ ip: SERVER_IP, nodeName: NODE, pod: { name: 'orders-7d9f8-x2x4k', uid: SRV.uid } }], [port]));

  const dir = mkdtempSync(join(tmpdir(), 'sl-k8s-'));
  writeFileSync(join(dir, 'hello.txt'), 'hello from the orders pod\n');
  writeFileSync(join(dir, 'kubeconfig'), k8s.kubeConfig().exportConfig());
  const cfg = join(dir, 'sidelight.yaml');
  writeFileSync(cfg, `filter:\n  ports:\n    include: [${port}]\nk8s:\n  enabled: true\n  nodeName: ${NODE}\n  clusterName: ci-cluster\n  kubeconfig: ${join(dir, 'kubeconfig')}\n`);

  const collector = await startCollector();
  const server = inCgroup(srvCg, ['python3', '-m', 'http.server', String(port), '--bind', SERVER_IP], dir);
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  let spans: CollectorSpan[] = [];
  let curls: Array<{ code: number | null; out: string }> = [];
  try {
    await waitForPort(port, 15_000, SERVER_IP);
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, ['--config', cfg]);
    // the agent traces from the start, while its pod informer syncs and the owners of this
    // node's pods (ReplicaSet → Deployment, Job → CronJob) are fetched; spans made before
    // that lack what is not known yet. This test is about complete metadata: wait for both.
    const a = agent;
    const synced = async (): Promise<boolean> => {
      const h = (await (await fetch(`${a.healthUrl}/healthz`)).json()) as { k8s?: { ready: boolean; owners: number } };
      return h.k8s?.ready === true && h.k8s.owners >= 2;
    };
    for (let end = Date.now() + 15_000; !(await synced()); ) {
      if (Date.now() > end) throw new Error('the agent did not sync pods and owners within 15 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    // short-lived clients: each curl is gone long before its span is exported
    for (let i = 0; i < 3; i++) curls.push(await run(inCgroup(cliCg, ['curl', '-sS', `http://${SERVER_IP}:${port}/hello.txt`])));
    const ours = (s: CollectorSpan): boolean => s.attributes['server.port'] === port;
    spans = await collector.waitForSpans((all) => all.filter((s) => ours(s) && s.kind === 2).length >= 3 && all.filter((s) => ours(s) && s.kind === 3).length >= 3, 30_000);
    spans = spans.filter(ours);
  } finally {
    await agent?.stop();
    server.kill('SIGTERM');
    await new Promise((r) => (server.exitCode !== null ? r(null) : server.once('exit', r)));
    await collector.stop();
    await k8s.close();
    removeCgroups([srvCg, cliCg]);
  }
  t.deepEqual(curls.map((c) => c.out), Array(3).fill('hello from the orders pod\n'));
  const servers = spans.filter((s) => s.kind === 2);
  const clients = spans.filter((s) => s.kind === 3);
  for (const s of servers) {
    t.like(s.resource, {
      'k8s.namespace.name': 'shop',
      'k8s.pod.name': 'orders-7d9f8-x2x4k',
      'k8s.pod.uid': SRV.uid,
      'k8s.pod.ip': SERVER_IP,
      'k8s.container.name': 'api',
      'k8s.node.name': NODE,
      'k8s.replicaset.name': 'orders-7d9f8',
      'k8s.deployment.name': 'orders',
      'k8s.cluster.name': 'ci-cluster',
      'container.id': SRV.cid,
      'service.name': 'orders',
      'service.namespace': 'shop',
      'service.version': '2.4.1',
    });
    t.regex(String(s.resource['process.executable.name']), /^python3/);
    t.like(s.attributes, { 'http.request.method': 'GET', 'url.path': '/hello.txt', 'http.response.status_code': 200 });
  }
  for (const c of clients) {
    t.like(c.resource, {
      'k8s.namespace.name': 'batch',
      'k8s.pod.name': 'report-29345-8xk2p',
      'k8s.pod.uid': CLI.uid,
      'k8s.container.name': 'fetch',
      'k8s.job.name': 'report-29345',
      'k8s.cronjob.name': 'report',
      'container.id': CLI.cid,
      'service.name': 'report',
      'process.executable.name': 'curl',
    });
    // the peer: an endpoint of Service shop/orders, a pod of Deployment orders on this node
    t.like(c.attributes, {
      'server.address': SERVER_IP,
      'sidelight.peer.service': 'orders',
      'sidelight.peer.namespace': 'shop',
      'sidelight.peer.pod': 'orders-7d9f8-x2x4k',
      'sidelight.peer.workload': 'orders',
      'sidelight.peer.workload.kind': 'Deployment',
    });
  }
  // each client span is the parent of its server span (both ends on this node)
  for (const s of servers) t.true(clients.some((c) => c.spanId === s.parentSpanId && c.traceId === s.traceId));
});
