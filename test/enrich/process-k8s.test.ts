import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { ProcessCache } from '../../src/enrich/process.js';
import type { PodInfo } from '../../src/enrich/k8s.js';

const CID = 'a'.repeat(64);
function fakeProc(pid: number, env: string, cgroup: string): string {
  const root = mkdtempSync(join(tmpdir(), 'proc-'));
  mkdirSync(join(root, String(pid)));
  symlinkSync('/usr/bin/sleep', join(root, String(pid), 'exe'));
  writeFileSync(join(root, String(pid), 'environ'), env);
  writeFileSync(join(root, String(pid), 'cgroup'), cgroup);
  return root;
}
const pod: PodInfo = {
  namespace: 'shop', name: 'web-1', uid: 'u1', ip: '10.1.0.1', ips: ['10.1.0.1'], nodeName: 'n', hostNetwork: false,
  labels: {}, annotations: {}, containers: [{ name: 'app', id: CID }], owners: { replicaset: 'web-5', deployment: 'web' },
};
const cg = `0::/kubepods.slice/kubepods-pod0f2c4d3e_5a6b_4c7d_8e9f_0a1b2c3d4e5f.slice/cri-containerd-${CID}.scope\n`;

test('k8s pod resource; env wins; pod found later rebuilds; docker container id', (t) => {
  let known: PodInfo | undefined;
  const k8s = { podByContainerId: (id: string) => (id === CID ? known : undefined), podByUid: () => undefined };
  const root = fakeProc(4242, 'OTEL_RESOURCE_ATTRIBUTES=service.namespace=mine\0', cg);
  const cache = new ProcessCache({ maxProcesses: 10, procRoot: root, hostName: 'h', k8s, extraAttributes: { 'k8s.cluster.name': 'c1' } });
  const ref = { tgid: 4242, tid: 4242, comm: 'sleep', cgroupId: 0n };
  const r0 = cache.resource(ref);
  t.is(r0.attributes['service.name'], 'sleep');
  t.is(r0.attributes['container.id'], CID);
  known = pod;
  const r1 = cache.resource(ref);
  t.not(r1, r0);
  t.like(r1.attributes, { 'service.name': 'web', 'service.namespace': 'mine', 'k8s.cluster.name': 'c1', 'k8s.deployment.name': 'web', 'k8s.container.name': 'app', 'container.id': CID, 'service.instance.id': 'shop.web-1.app', 'process.pid': 4242 });
  t.is(cache.resource(ref), r1, 'same pod object: same resource');
  const root2 = fakeProc(4243, 'OTEL_SERVICE_NAME=checkout\0', cg);
  const c2 = new ProcessCache({ maxProcesses: 10, procRoot: root2, k8s });
  t.is(c2.resource({ tgid: 4243, tid: 1, comm: 'x', cgroupId: 0n }).attributes['service.name'], 'checkout');
  const root3 = fakeProc(4244, '', `0::/system.slice/docker-${'d'.repeat(64)}.scope\n`);
  const c3 = new ProcessCache({ maxProcesses: 10, procRoot: root3 });
  t.like(c3.resource({ tgid: 4244, tid: 1, comm: 'x', cgroupId: 0n }).attributes, { 'service.name': 'sleep', 'container.id': 'd'.repeat(64) });
});
