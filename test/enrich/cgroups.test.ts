// cgroups.ts: cgroup v2 id → container/pod for processes gone from /proc. The index logic
// runs on a directory tree in a temp dir (ids are directory inodes there too); the last test
// uses a real cgroup created in the machine's cgroup2 hierarchy and a process moved into it.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { cgroup2Root } from '../../src/agent.js';
import { CgroupIndex } from '../../src/enrich/cgroups.js';
import { ProcessCache } from '../../src/enrich/process.js';
import { need } from '../helpers/kernel.js';

const CID = 'a'.repeat(60) + '1234';
const POD = '0f1e2d3c-4b5a-6978-8a9b-acbdcedfe0f1';

function tree(): { root: string; ino: (rel: string) => bigint } {
  const root = mkdtempSync(join(tmpdir(), 'sl-cgroups-'));
  const dirs = [
    `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD.replaceAll('-', '_')}.slice/cri-containerd-${CID}.scope`,
    '/system.slice/ssh.service',
    '/user.slice/user-0.slice',
  ];
  for (const d of dirs) mkdirSync(`${root}${d}`, { recursive: true });
  return { root, ino: (rel) => statSync(`${root}${rel}`, { bigint: true }).ino };
}

test('an id of a container cgroup resolves to its container and pod; others to nothing', (t) => {
  const { root, ino } = tree();
  const idx = new CgroupIndex({ root });
  const scope = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD.replaceAll('-', '_')}.slice/cri-containerd-${CID}.scope`;
  t.deepEqual(idx.container(ino(scope)), { containerId: CID, runtime: 'containerd', podUid: POD });
  // the pod slice itself names the pod
  t.deepEqual(idx.container(ino(scope.replace(/\/cri-containerd-.*$/, ''))), { podUid: POD });
  t.is(idx.container(ino('/system.slice/ssh.service')), undefined);
  t.is(idx.container(0n), undefined);
  t.is(idx.stats.walks, 1, 'one walk indexed everything; later misses are rate limited');
  t.is(idx.stats.hits, 2);
  t.is(idx.stats.misses, 1);
});

test('a cgroup created after the first walk is found by a later walk, rate limited', (t) => {
  const { root } = tree();
  let now = 0;
  const idx = new CgroupIndex({ root, minRescanMs: 1000, now: () => now });
  idx.walk();
  const late = `/system.slice/docker-${'b'.repeat(64)}.scope`;
  mkdirSync(`${root}${late}`);
  const id = statSync(`${root}${late}`, { bigint: true }).ino;
  now = 500;
  t.is(idx.container(id), undefined, 'within minRescanMs: no walk');
  t.is(idx.stats.walks, 1);
  now = 1500;
  t.deepEqual(idx.container(id), { containerId: 'b'.repeat(64), runtime: 'docker' });
  t.is(idx.stats.walks, 2);
});

test('bounded: entries evicted oldest first, walks stop at maxDirs and maxDepth (counted)', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'sl-cgroups-'));
  for (let i = 0; i < 10; i++) mkdirSync(`${root}/docker-${i.toString(16).padStart(64, '0')}.scope`);
  const idx = new CgroupIndex({ root, maxEntries: 4 });
  idx.walk();
  t.is(idx.size, 4);
  t.is(idx.stats.evicted, 6);
  const small = new CgroupIndex({ root, maxDirs: 3 });
  small.walk();
  t.is(small.stats.dirsVisited, 3);
  t.is(small.stats.truncatedWalks, 1);
  mkdirSync(`${root}/a/b/c`, { recursive: true });
  const shallow = new CgroupIndex({ root, maxDepth: 1 });
  shallow.walk();
  t.is(shallow.stats.truncatedWalks, 1);
});

test('ProcessCache: a process gone from /proc gets container.id from its cgroup id', (t) => {
  const { root, ino } = tree();
  const emptyProc = mkdtempSync(join(tmpdir(), 'sl-proc-'));
  const cache = new ProcessCache({ maxProcesses: 10, procRoot: emptyProc, cgroups: new CgroupIndex({ root }) });
  const scope = `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${POD.replaceAll('-', '_')}.slice/cri-containerd-${CID}.scope`;
  // first seen without a cgroup id (as threadsUntrusted does), then with it
  t.is(cache.threadsUntrusted(4242), false);
  const r = cache.resource({ tgid: 4242, tid: 4242, comm: 'curl', cgroupId: ino(scope) });
  t.is(r.attributes['container.id'], CID);
  t.is(r.attributes['service.name'], 'curl');
  t.deepEqual(cache.info({ tgid: 4242, tid: 4242, comm: 'curl', cgroupId: ino(scope) }).container, { containerId: CID, runtime: 'containerd', podUid: POD });
});

test('real cgroup v2: the id of a container-named cgroup holding a real process resolves', async (t) => {
  if (!need(t, process.geteuid?.() === 0 ? undefined : 'needs root (creates a cgroup)')) return;
  const root = cgroup2Root();
  const name = `sidelight-test-${process.pid}`;
  const scope = `/${name}/cri-containerd-${CID}.scope`;
  mkdirSync(`${root}${scope}`, { recursive: true });
  const child = spawn('sleep', ['30'], { stdio: 'ignore' });
  try {
    writeFileSync(`${root}${scope}/cgroup.procs`, String(child.pid));
    const v2 = readFileSync(`/proc/${child.pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
    const id = statSync(`${root}${scope}`, { bigint: true }).ino;
    const idx = new CgroupIndex({ root });
    const c = idx.container(id);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    t.is(v2, `0::${scope}`);
    t.deepEqual(c, { containerId: CID, runtime: 'containerd' });
  } finally {
    child.kill('SIGKILL');
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(`${root}${scope}`);
        rmdirSync(`${root}/${name}`);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
});
