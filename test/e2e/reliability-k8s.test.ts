/**
 * Reliability (issue #10, item 7): Kubernetes API faults seen by the running agent process.
 * `bin/sidelight run` watches the fake API server (test/helpers/fakek8s.ts: the real list/watch
 * protocol through the real client library) and exports to a real Collector, while two real
 * python servers run in kubelet/containerd-named cgroups. The API goes down: spans keep flowing
 * (with the last known pod metadata), /healthz says k8s is not ready. A pod created meanwhile is
 * unknown; the API comes back answering 5xx first, then works: the agent relists, the new pod's
 * spans get their metadata. Then a compaction (410 Gone on resume): relisted, still exporting.
 * (Slow responses and each fault in isolation: test/enrich/k8s.test.ts.)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { cgroup2Root } from '../../src/agent.js';
import { startAgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector, type CollectorSpan } from '../helpers/collector.js';
import { FakeK8s, pod } from '../helpers/fakek8s.js';
import { healthz } from '../helpers/hostile.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, freePort, waitForPort } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');
const NODE = 'node-a';
const A = { uid: '1a2b3c4d-0000-4000-8000-00000000000a', cid: 'a1'.repeat(32), ip: '127.0.0.61', name: 'alpha-0' };
const B = { uid: '1a2b3c4d-0000-4000-8000-00000000000b', cid: 'b2'.repeat(32), ip: '127.0.0.62', name: 'beta-0' };

function podCgroup(uid: string, cid: string): string {
  return `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid.replaceAll('-', '_')}.slice/cri-containerd-${cid}.scope`;
}

function inCgroup(cgroup: string, argv: string[], cwd: string): ChildProcess {
  const procs = `${cgroup2Root()}${cgroup}/cgroup.procs`;
  return spawn('sh', ['-c', `echo $$ > ${procs} && exec "$@"`, 'sh', ...argv], { stdio: 'ignore', cwd });
}

function removeCgroup(p: string): void {
  const parts = p.split('/').filter(Boolean);
  for (let i = parts.length; i > 0; i--) {
    try {
      rmdirSync(`${cgroup2Root()}/${parts.slice(0, i).join('/')}`);
    } catch {
      /* in use by the other pod's path, or gone */
    }
  }
}

const podOf = (p: typeof A) =>
  pod({ namespace: 'faults', name: p.name, uid: p.uid, nodeName: NODE, ip: p.ip, containers: { app: `containerd://${p.cid}` } });

test.serial('API down, 5xx, 410: the agent keeps exporting throughout; metadata recovers', async (t) => {
  if (!need(t, unavailable)) return;
  t.timeout(120_000);
  const cgA = podCgroup(A.uid, A.cid);
  const cgB = podCgroup(B.uid, B.cid);
  for (const cg of [cgA, cgB]) mkdirSync(`${cgroup2Root()}${cg}`, { recursive: true });
  const k8s = await FakeK8s.start();
  k8s.apply(podOf(A));
  const [portA, portB] = [await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'sl-k8sfault-'));
  writeFileSync(join(dir, 'kubeconfig'), k8s.kubeConfig().exportConfig());
  writeFileSync(join(dir, 'a.yaml'), `filter:\n  ports:\n    include: [${portA}, ${portB}]\nk8s:\n  enabled: true\n  nodeName: ${NODE}\n  kubeconfig: ${join(dir, 'kubeconfig')}\nexport:\n  batch:\n    delayMs: 200\n`);
  const collector = await startCollector();
  const srvA = inCgroup(cgA, ['python3', '-m', 'http.server', String(portA), '--bind', A.ip], dir);
  let srvB: ChildProcess | undefined;
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  const spanFor = async (ip: string, port: number, path: string): Promise<CollectorSpan> => {
    await curl([`http://${ip}:${port}${path}`]);
    const mine = (s: CollectorSpan): boolean => s.kind === 2 && s.attributes['url.path'] === path;
    return (await collector.waitForSpans((all) => all.some(mine), 20_000)).find(mine)!;
  };
  const waitK8s = async (pred: (k: Record<string, any>) => boolean, what: string): Promise<Record<string, any>> => {
    const end = Date.now() + 30_000;
    for (;;) {
      const h = await healthz(agent!.healthUrl);
      if (pred(h.k8s)) return h.k8s;
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}: k8s ${JSON.stringify(h.k8s)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  try {
    await waitForPort(portA, 15_000, A.ip);
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint }, ['--config', join(dir, 'a.yaml')]);
    await waitK8s((k) => k.ready === true, 'k8s ready');
    const s1 = await spanFor(A.ip, portA, '/before');
    t.is(s1.resource['k8s.pod.name'], A.name, 'metadata while the API is up');

    // the API server goes away; a new pod starts meanwhile
    await k8s.down();
    k8s.apply(podOf(B));
    srvB = inCgroup(cgB, ['python3', '-m', 'http.server', String(portB), '--bind', B.ip], dir);
    await waitForPort(portB, 15_000, B.ip);
    const down = await waitK8s((k) => k.ready === false, 'k8s not ready while the API is down');
    t.log(`API down: /healthz k8s ${JSON.stringify(down)}`);
    const s2 = await spanFor(A.ip, portA, '/while-down');
    t.is(s2.resource['k8s.pod.name'], A.name, 'spans keep flowing, with the last known metadata');
    const s3 = await spanFor(B.ip, portB, '/new-pod-while-down');
    t.false('k8s.pod.name' in s3.resource, 'a pod the agent could not learn about has no pod metadata (not a guess)');
    t.is(s3.resource['container.id'], B.cid, 'but its container id, from its cgroup');

    // back, but answering 500 at first
    k8s.failNext(3, 500);
    await k8s.up();
    const up = await waitK8s((k) => k.ready === true, 'k8s ready again');
    t.log(`API back: /healthz k8s ${JSON.stringify(up)}`);
    const end = Date.now() + 20_000;
    let s4 = await spanFor(B.ip, portB, '/new-pod-after-0');
    for (let i = 1; s4.resource['k8s.pod.name'] !== B.name && Date.now() < end; i++) {
      await new Promise((r) => setTimeout(r, 500));
      s4 = await spanFor(B.ip, portB, `/new-pod-after-${i}`);
    }
    t.is(s4.resource['k8s.pod.name'], B.name, 'metadata recovers: the pod created while the API was down is known');

    // compaction: the resumed watch gets 410 Gone and relists
    k8s.compact();
    const s5 = await spanFor(A.ip, portA, '/after-410');
    t.is(s5.resource['k8s.pod.name'], A.name);
    const last = await waitK8s((k) => k.ready === true, 'k8s ready after 410');
    t.log(`after 410: /healthz k8s ${JSON.stringify(last)}`);
    const exp = (await healthz(agent.healthUrl)).export as Record<string, number>;
    t.is((exp.droppedQueueFull ?? 0) + (exp.droppedExportFailed ?? 0), 0, 'no span lost to the API faults');
  } finally {
    await agent?.stop();
    for (const p of [srvA, srvB]) {
      if (!p) continue;
      p.kill('SIGTERM');
      await new Promise((r) => (p.exitCode !== null ? r(null) : p.once('exit', r)));
    }
    await collector.stop();
    await k8s.close();
    removeCgroup(cgA);
    removeCgroup(cgB);
  }
});
