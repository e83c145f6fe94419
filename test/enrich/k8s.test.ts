import { readFileSync } from 'node:fs';
import test, { type ExecutionContext } from 'ava';
import { parseAllDocuments } from 'yaml';
import {
  describePeer,
  k8sResourceAttributes,
  mergeAbsent,
  podForContainer,
} from '../../src/enrich/k8s-resource.js';
import {
  inCluster,
  KubernetesMetadata,
  nodeNameFromEnv,
  resolveK8sOptions,
  validateK8sOptions,
  type K8sMetadataOptions,
  type PodInfo,
} from '../../src/enrich/k8s.js';
import { endpointSlice, FakeK8s, job, pod, replicaSet, service } from '../helpers/fakek8s.js';

const NODE = 'node-a';
const cid = (c: string): string => c.repeat(64);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until `fn` is truthy (informer events are asynchronous), or fail with `what`. */
async function eventually(t: ExecutionContext, what: string, fn: () => unknown, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > end) {
      t.fail(`timed out waiting for: ${what}`);
      throw new Error(`timed out waiting for: ${what}`);
    }
    await sleep(20);
  }
}

interface Setup {
  f: FakeK8s;
  m: KubernetesMetadata;
  errors: string[];
}

/** A fake API server (seeded by `seed`) and a started KubernetesMetadata on it, torn down after the test. */
async function setup(t: ExecutionContext, seed: (f: FakeK8s) => void, opts: Partial<K8sMetadataOptions> = {}, start = true): Promise<Setup> {
  const f = await FakeK8s.start();
  seed(f);
  const errors: string[] = [];
  const m = new KubernetesMetadata({
    nodeName: NODE,
    client: f.kubeConfig(),
    backoffInitialMs: 50,
    backoffMaxMs: 200,
    ownerRetryMs: 200,
    requestTimeoutMs: 5000,
    syncTimeoutMs: 5000,
    logger: { warn: (e) => errors.push(e), info: (e) => errors.push(`info: ${e}`) },
    ...opts,
  });
  t.teardown(async () => {
    await m.stop();
    await f.close();
  });
  if (start) {
    await m.start();
    // start() resolves once listed; the watches follow at once
    const feeds = opts.peers === false ? 1 : 3;
    await eventually(t, 'watches open', () => f.openWatches() === feeds);
  }
  return { f, m, errors };
}

const RS_OWNER = { kind: 'ReplicaSet', name: 'web-5d9f8c', uid: 'rs-uid' };

function seedShop(f: FakeK8s): void {
  f.apply(replicaSet('shop', 'web-5d9f8c', 'rs-uid', { name: 'web', uid: 'deploy-uid' }));
  f.apply(job('batch', 'report-28911', 'job-uid', { name: 'report', uid: 'cron-uid' }));
  f.apply(
    pod({
      namespace: 'shop',
      name: 'web-5d9f8c-x1',
      uid: 'uid-web-1',
      ip: '10.1.0.11',
      labels: { 'app.kubernetes.io/name': 'web' },
      annotations: { 'kubectl.kubernetes.io/last-applied-configuration': '{"big":"json"}', team: 'shop' },
      containers: { app: `containerd://${cid('a')}`, sidecar: `containerd://${cid('b')}` },
      initContainers: { migrate: `containerd://${cid('c')}` },
      owner: RS_OWNER,
    }),
  );
  f.apply(pod({ namespace: 'shop', name: 'web-5d9f8c-x2', uid: 'uid-web-2', ip: '10.1.0.12', containers: { app: `cri-o://${cid('d')}` }, owner: RS_OWNER }));
  f.apply(pod({ namespace: 'batch', name: 'report-28911-q', uid: 'uid-job', ip: '10.1.0.13', containers: { run: `containerd://${cid('e')}` }, owner: { kind: 'Job', name: 'report-28911', uid: 'job-uid' } }));
  f.apply(pod({ namespace: 'db', name: 'pg-0', uid: 'uid-pg', ip: '10.1.0.14', containers: { pg: `containerd://${cid('f')}` }, owner: { kind: 'StatefulSet', name: 'pg', uid: 'sts-uid' } }));
  f.apply(pod({ namespace: 'kube-system', name: 'proxy-abc', uid: 'uid-ds', ip: '10.0.0.1', hostNetwork: true, containers: { proxy: `containerd://${'1'.repeat(64)}` }, owner: { kind: 'DaemonSet', name: 'kube-proxy', uid: 'ds-uid' } }));
  f.apply(pod({ namespace: 'shop', name: 'elsewhere', uid: 'uid-other-node', nodeName: 'node-b', ip: '10.2.0.5' }));
}

// ------------------------------------------------------------------------ informer sync

test('sync: pods of this node only (fieldSelector), found by uid, container id and ip', async (t) => {
  const { f, m } = await setup(t, seedShop, { peers: false });
  t.true(m.ready);
  t.is(m.stats.pods, 5);
  const pods = f.requests.filter((r) => r.path === '/api/v1/pods');
  t.true(pods.length >= 2);
  for (const r of pods) t.is(r.query.get('fieldSelector'), `spec.nodeName=${NODE}`);
  t.deepEqual(pods.map((r) => r.watch), [false, true]);

  await eventually(t, 'owners resolved', () => m.podByUid('uid-web-1')?.owners.deployment);
  const web = m.podByUid('uid-web-1');
  t.deepEqual(web, {
    namespace: 'shop',
    name: 'web-5d9f8c-x1',
    uid: 'uid-web-1',
    ip: '10.1.0.11',
    ips: ['10.1.0.11'],
    nodeName: NODE,
    hostNetwork: false,
    phase: 'Running',
    labels: { 'app.kubernetes.io/name': 'web' },
    annotations: { team: 'shop' },
    containers: [
      { name: 'app', id: cid('a'), runtime: 'containerd' },
      { name: 'sidecar', id: cid('b'), runtime: 'containerd' },
      { name: 'migrate', id: cid('c'), runtime: 'containerd', init: true },
    ],
    owners: { replicaset: 'web-5d9f8c', deployment: 'web' },
  });
  t.true(Object.isFrozen(web));
  t.is(m.stats.annotationsDropped, 1, 'last-applied-configuration is not kept');
  t.is(m.podByContainerId(cid('b')), web);
  t.is(m.podByContainerId(`containerd://${cid('c')}`), web, 'init container, prefix accepted');
  t.is(m.podByContainerId(cid('d'))?.name, 'web-5d9f8c-x2');
  t.is(m.podByContainerId(cid('d'))?.containers[0]?.runtime, 'cri-o');
  t.is(m.podByIp('10.1.0.11'), web);
  t.is(m.podByUid('uid-other-node'), undefined, 'pods of other nodes are not watched');
  t.is(m.podByIp('10.2.0.5'), undefined);
  // host-network pods share the node IP: never by IP, still by uid and container
  t.is(m.podByIp('10.0.0.1'), undefined);
  t.is(m.podByContainerId('1'.repeat(64))?.owners.daemonset, 'kube-proxy');
  t.is(m.podByUid('nope'), undefined);
  t.is(m.podByContainerId(cid('9')), undefined);
});

test('static pods: found by the config hash their cgroups carry', async (t) => {
  const hash = '2053dbbf6ec7135c4e994d3464c478db';
  const { m } = await setup(
    t,
    (f) => f.apply(pod({ namespace: 'kube-system', name: `etcd-${NODE}`, uid: 'mirror-uid', annotations: { 'kubernetes.io/config.mirror': hash }, containers: { etcd: '' } })),
    { peers: false },
  );
  t.is(m.podByUid(hash)?.name, `etcd-${NODE}`);
  t.is(m.podByUid('mirror-uid')?.mirrorUid, hash);
  t.deepEqual(m.podByUid(hash)?.containers, [{ name: 'etcd' }], 'a container not started yet has no id');
  // the process side: cgroup → pod
  t.is(podForContainer(m, { podUid: hash })?.pod.name, `etcd-${NODE}`);
});

test('owners: Deployment ← ReplicaSet ← Pod and CronJob ← Job ← Pod, each owner fetched once', async (t) => {
  const { f, m } = await setup(t, seedShop, { peers: false });
  await eventually(t, 'both owner chains', () => m.podByUid('uid-web-2')?.owners.deployment && m.podByUid('uid-job')?.owners.cronjob);
  t.deepEqual(m.podByUid('uid-web-1')?.owners, { replicaset: 'web-5d9f8c', deployment: 'web' });
  t.deepEqual(m.podByUid('uid-web-2')?.owners, { replicaset: 'web-5d9f8c', deployment: 'web' });
  t.deepEqual(m.podByUid('uid-job')?.owners, { job: 'report-28911', cronjob: 'report' });
  t.deepEqual(m.podByUid('uid-pg')?.owners, { statefulset: 'pg' });
  t.deepEqual(m.podByUid('uid-ds')?.owners, { daemonset: 'kube-proxy' });
  t.is(f.count('GET', '/apis/apps/v1/namespaces/shop/replicasets/web-5d9f8c'), 1, 'two pods, one GET');
  t.is(f.count('GET', '/apis/batch/v1/namespaces/batch/jobs/report-28911'), 1);
  t.is(f.count('GET', /^\/apis\/(apps|batch)\/v1\/namespaces\//), 2, 'StatefulSet and DaemonSet owners need no GET');
  t.is(m.stats.ownerLookups, 2);

  // a change to a pod: a new info object, owners from the cache, no new GET
  const before = m.podByUid('uid-web-1');
  f.apply(pod({ namespace: 'shop', name: 'web-5d9f8c-x1', uid: 'uid-web-1', ip: '10.1.0.11', labels: { v: '2' }, owner: RS_OWNER }));
  await eventually(t, 'update seen', () => m.podByUid('uid-web-1')?.labels.v === '2');
  t.not(m.podByUid('uid-web-1'), before, 'a changed pod is a new object');
  t.is(m.podByUid('uid-web-1')?.owners.deployment, 'web');
  t.is(f.count('GET', '/apis/apps/v1/namespaces/shop/replicasets/web-5d9f8c'), 1);
  t.true(m.stats.ownerCacheHits >= 1);
});

test('owners: a bare ReplicaSet, a missing one (404) and a recreated one (other uid) give no Deployment', async (t) => {
  const { f, m } = await setup(
    t,
    (f) => {
      f.apply(replicaSet('a', 'bare', 'bare-uid'));
      f.apply(replicaSet('a', 'recreated', 'new-uid', { name: 'dep', uid: 'd' }));
      f.apply(pod({ namespace: 'a', name: 'p1', uid: 'u1', owner: { kind: 'ReplicaSet', name: 'bare', uid: 'bare-uid' }, containers: { c: '' } }));
      f.apply(pod({ namespace: 'a', name: 'p2', uid: 'u2', owner: { kind: 'ReplicaSet', name: 'gone', uid: 'gone-uid' }, containers: { c: '' } }));
      f.apply(pod({ namespace: 'a', name: 'p3', uid: 'u3', owner: { kind: 'ReplicaSet', name: 'recreated', uid: 'old-uid' }, containers: { c: '' } }));
    },
    { peers: false },
  );
  await eventually(t, 'three lookups done', () => m.stats.ownerLookups === 3 && m.stats.owners === 3);
  t.deepEqual(m.podByUid('u1')?.owners, { replicaset: 'bare' });
  t.deepEqual(m.podByUid('u2')?.owners, { replicaset: 'gone' });
  t.deepEqual(m.podByUid('u3')?.owners, { replicaset: 'recreated' });
  t.is(m.stats.ownerNotFound, 2);
  t.is(m.stats.ownerLookupErrors, 0);
  t.is(f.count('GET', '/apis/apps/v1/namespaces/a/replicasets/gone'), 1);
});

test('owner cache: bounded by maxOwners (evictions counted); an entry older than ownerCacheTtlMs is fetched again', async (t) => {
  const { f, m } = await setup(
    t,
    (f) => {
      for (let i = 0; i < 18; i++) {
        f.apply(replicaSet('a', `rs${i}`, `rs-uid-${i}`, { name: `dep${i}`, uid: `d${i}` }));
        f.apply(pod({ namespace: 'a', name: `p${i}`, uid: `u${i}`, owner: { kind: 'ReplicaSet', name: `rs${i}`, uid: `rs-uid-${i}` } }));
      }
    },
    { peers: false, maxOwners: 16, ownerCacheTtlMs: 1000 },
  );
  await eventually(t, 'all resolved', () => Array.from({ length: 18 }, (_, i) => m.podByUid(`u${i}`)?.owners.deployment).every(Boolean));
  t.is(m.stats.ownerLookups, 18);
  t.is(m.stats.owners, 16);
  t.is(m.stats.ownerEvicted, 2);
  // resolved owners stay on the pods; a pod change after the TTL fetches its ReplicaSet again
  await sleep(1100);
  f.apply(pod({ namespace: 'a', name: 'p17', uid: 'u17', labels: { v: '2' }, owner: { kind: 'ReplicaSet', name: 'rs17', uid: 'rs-uid-17' } }));
  await eventually(t, 'update seen', () => m.podByUid('u17')?.labels.v === '2');
  t.is(m.podByUid('u17')?.owners.deployment, 'dep17', 'the old answer serves while it is fetched again');
  await eventually(t, 'fetched again', () => f.count('GET', '/apis/apps/v1/namespaces/a/replicasets/rs17') === 2);
  t.is(m.podByUid('u17')?.owners.deployment, 'dep17');
  t.is(m.podByUid('u0')?.owners.deployment, 'dep0');
});

test('owners: a failed lookup (5xx) is retried later', async (t) => {
  const { f, m } = await setup(t, (f) => f.apply(replicaSet('shop', 'web-5d9f8c', 'rs-uid', { name: 'web', uid: 'd' })), { peers: false });
  f.failNext(1, 503);
  f.apply(pod({ namespace: 'shop', name: 'w', uid: 'uw', owner: RS_OWNER }));
  await eventually(t, 'deployment after a retry', () => m.podByUid('uw')?.owners.deployment === 'web');
  t.is(m.stats.ownerLookupErrors, 1);
  t.is(f.count('GET', '/apis/apps/v1/namespaces/shop/replicasets/web-5d9f8c'), 2);
  t.true(m.ready, 'owner lookups do not affect readiness');
});

// ----------------------------------------------------------------------- watch events

test('a pod added after start appears; deleted, it disappears', async (t) => {
  const { f, m } = await setup(t, () => {}, { peers: false, deletedPodRetentionMs: 0 });
  t.is(m.podByUid('late'), undefined);
  f.apply(pod({ name: 'late', uid: 'late', ip: '10.1.0.50', containers: { app: `containerd://${cid('7')}` } }));
  await eventually(t, 'added pod', () => m.podByUid('late'));
  t.is(m.podByIp('10.1.0.50')?.name, 'late');
  t.is(m.podByContainerId(cid('7'))?.name, 'late');
  // scheduled elsewhere first, then bound to this node: enters the field selector → ADDED
  f.apply(pod({ name: 'bound-later', uid: 'bl', nodeName: '' }));
  await sleep(100);
  t.is(m.podByUid('bl'), undefined);
  f.apply(pod({ name: 'bound-later', uid: 'bl', nodeName: NODE }));
  await eventually(t, 'pod bound to this node', () => m.podByUid('bl'));

  t.true(f.remove('Pod', 'default', 'late'));
  await eventually(t, 'deleted pod gone', () => m.podByUid('late') === undefined);
  t.is(m.podByIp('10.1.0.50'), undefined);
  t.is(m.podByContainerId(cid('7')), undefined);
  t.is(m.stats.pods, 1);
  t.is(m.stats.podsRetained, 0);
});

test('a deleted pod is still found by uid and container id for deletedPodRetentionMs, never by IP', async (t) => {
  const { f, m } = await setup(t, (f) => f.apply(pod({ name: 'old', uid: 'old', ip: '10.1.0.60', containers: { app: `containerd://${cid('6')}` } })), {
    peers: false,
    deletedPodRetentionMs: 1500,
  });
  f.remove('Pod', 'default', 'old');
  await eventually(t, 'delete seen', () => m.stats.pods === 0);
  t.is(m.podByUid('old')?.name, 'old');
  t.is(m.podByContainerId(cid('6'))?.name, 'old');
  t.is(m.podByIp('10.1.0.60'), undefined, 'a deleted pod IP can be reused at once');
  t.is(m.stats.podsRetained, 1);
  // same name, new uid (StatefulSet pod recreated): the new one takes the IP
  f.apply(pod({ name: 'old', uid: 'new', ip: '10.1.0.60', containers: { app: `containerd://${cid('5')}` } }));
  await eventually(t, 'recreated pod', () => m.podByUid('new'));
  t.is(m.podByIp('10.1.0.60')?.uid, 'new');
  await eventually(t, 'retention over', () => m.podByUid('old') === undefined, 3000);
  t.is(m.podByContainerId(cid('6')), undefined);
  t.is(m.stats.podsRetained, 0);
  t.is(m.podByUid('new')?.name, 'old');
});

test('a finished pod is not found by IP (the IP is free for others)', async (t) => {
  const { m } = await setup(t, (f) => f.apply(pod({ name: 'done', uid: 'done', ip: '10.1.0.70', phase: 'Succeeded' })), { peers: false });
  t.is(m.podByUid('done')?.phase, 'Succeeded');
  t.is(m.podByIp('10.1.0.70'), undefined);
});

// ------------------------------------------------------------------------- resilience

test('410 Gone: a watch resumed after compaction relists, counted; state is current', async (t) => {
  const { f, m } = await setup(t, (f) => f.apply(pod({ name: 'keep', uid: 'keep' })), { peers: false });
  t.is(m.stats.lists, 1);
  // compaction ends the watch; the changes below happen before the informer is back
  f.compact();
  f.apply(pod({ name: 'while-away', uid: 'wa' }));
  f.remove('Pod', 'default', 'keep');
  await eventually(t, 'relisted', () => m.podByUid('wa') && m.stats.relists === 1);
  t.is(m.stats.expired, 1);
  t.is(m.stats.lists, 2);
  // deleted during the gap: the relist says so (retained a while for its last spans, off the live set)
  await eventually(t, 'deleted during the gap', () => m.stats.pods === 1 && m.stats.podsRetained === 1);
  t.true(m.ready);
  // and the new watch delivers again
  f.apply(pod({ name: 'after', uid: 'after' }));
  await eventually(t, 'event after relist', () => m.podByUid('after'));

  // a 410 status on the next watch: the same recovery
  f.expireNextWatch();
  f.closeWatches();
  await eventually(t, 'second relist', () => m.stats.relists === 2);
  t.is(m.stats.expired, 2);
  // and a watch request answered 410 (HTTP status, not an event)
  await eventually(t, 'watching again', () => f.openWatches() === 1);
  f.failNext(1, 410);
  f.closeWatches();
  await eventually(t, 'third relist', () => m.stats.relists === 3);
  t.is(m.stats.expired, 3);
  t.is(f.requests.filter((r) => r.watch && r.status === 410).length, 1);
  t.is(m.stats.apiErrors, 0, 'a 410 is not a failure');
  t.true(m.ready);
});

test('a watch closed by the server resumes from its resourceVersion without a relist', async (t) => {
  const { f, m } = await setup(t, () => {}, { peers: false });
  f.closeWatches();
  f.apply(pod({ name: 'p', uid: 'p' }));
  await eventually(t, 'event after the reconnect', () => m.podByUid('p'));
  t.is(m.stats.lists, 1);
  t.is(m.stats.relists, 0);
  t.is(m.stats.expired, 0);
  t.true(m.stats.watches >= 2);
});

test('API server down: lookups answered from the last state, ready false and counted; recovers', async (t) => {
  const { f, m, errors } = await setup(t, seedShop, { peers: false });
  await eventually(t, 'owners', () => m.podByUid('uid-web-1')?.owners.deployment);
  const web = m.podByUid('uid-web-1');
  await f.down();
  await eventually(t, 'not ready', () => !m.ready);
  t.is(m.podByUid('uid-web-1'), web, 'served from cache');
  t.is(m.podByIp('10.1.0.12')?.uid, 'uid-web-2');
  t.is(m.stats.notReady, 1);
  await eventually(t, 'a few failed reconnects', () => m.stats.apiErrors >= 3);
  t.true(m.stats.restarts >= 2);
  t.true(errors.some((e) => e.includes('API server unreachable')));
  t.true(errors.some((e) => /pods list\/watch failed \((ECONNREFUSED|UND_ERR_SOCKET)\)/.test(e)), errors.join('\n'));
  // changes while the agent cannot see them
  f.apply(pod({ name: 'during-outage', uid: 'dur' }));
  f.remove('Pod', 'db', 'pg-0');
  await f.up();
  await eventually(t, 'ready again', () => m.ready);
  await eventually(t, 'missed events replayed', () => m.podByUid('dur') && m.podByIp('10.1.0.14') === undefined);
  t.is(m.stats.relists, 0, 'resumed from the resourceVersion, no relist');
  t.is(m.stats.notReady, 1);
  t.true(errors.includes('info: kubernetes: API server reachable again; metadata is current'));
  t.is(m.stats.internalErrors, 0);
});

test('start() with the API server down: resolves after syncTimeoutMs not ready; syncs when it comes up', async (t) => {
  const { f, m } = await setup(t, seedShop, { peers: false, syncTimeoutMs: 300 }, false);
  await f.down();
  const t0 = Date.now();
  await m.start();
  t.true(Date.now() - t0 >= 290);
  t.false(m.ready);
  t.is(m.podByUid('uid-web-1'), undefined);
  await f.up();
  await eventually(t, 'synced', () => m.ready);
  t.is(m.podByUid('uid-web-1')?.name, 'web-5d9f8c-x1');
  t.is(m.stats.lists - m.stats.apiErrors, 1, 'exactly one list succeeded');
});

test('5xx on list: retried with backoff until it works, every failure counted', async (t) => {
  const { f, m } = await setup(t, seedShop, { peers: false }, false);
  f.failNext(2, 500);
  await m.start();
  t.true(m.ready);
  t.is(m.stats.apiErrors, 2);
  t.is(m.stats.restarts, 2);
  t.is(m.stats.lists, 3);
  t.is(f.count('GET', '/api/v1/pods'), 3);
});

test('a slow API server: a list slower than requestTimeoutMs is abandoned and retried', async (t) => {
  const { f, m } = await setup(t, seedShop, { peers: false, requestTimeoutMs: 150, syncTimeoutMs: 0 }, false);
  f.delayMs = 400;
  await m.start();
  await eventually(t, 'a timeout', () => m.stats.apiErrors >= 1);
  t.false(m.ready);
  f.delayMs = 0;
  await eventually(t, 'synced once fast again', () => m.ready);
  t.is(m.podByUid('uid-pg')?.name, 'pg-0');
});

test('stop(): idempotent, no watch left open on the server', async (t) => {
  const { f, m } = await setup(t, seedShop);
  t.is(f.openWatches(), 3);
  await m.stop();
  await m.stop();
  t.false(m.ready);
  await eventually(t, 'watches closed', () => f.openWatches() === 0);
  const n = f.requests.length;
  await sleep(300);
  t.is(f.requests.length, n, 'nothing reconnects after stop');
});

// --------------------------------------------------------------------------- bounds

test('bounds: pods, services, endpoints beyond their maximum are dropped and counted; lists are paged', async (t) => {
  const { f, m } = await setup(
    t,
    (f) => {
      for (let i = 0; i < 20; i++) f.apply(pod({ name: `p${String(i).padStart(2, '0')}`, uid: `u${i}`, ip: `10.1.1.${i}` }));
      f.apply(service('a', 's1', '10.96.0.1'));
      f.apply(service('a', 's2', '10.96.0.2'));
      f.apply(service('a', 's3', '10.96.0.3'));
      f.apply(endpointSlice('a', 's1', 's1-x', [1, 2, 3, 4, 5].map((i) => ({ ip: `10.3.0.${i}` }))));
    },
    { maxPods: 16, maxServices: 2, maxEndpoints: 3, listPageSize: 10 },
  );
  t.is(m.stats.pods, 16);
  t.is(m.stats.podsDropped, 4);
  t.is(f.count('GET', '/api/v1/pods'), 2, '20 pods in pages of 10');
  t.truthy(f.requests.find((r) => r.path === '/api/v1/pods' && r.query.get('continue')));
  t.is(m.stats.services, 2);
  t.is(m.stats.servicesDropped, 1);
  t.is(m.serviceByIp('10.96.0.3'), undefined);
  t.is(m.stats.endpoints, 3);
  t.is(m.stats.endpointsDropped, 2);
  t.is(m.endpointByIp('10.3.0.3')?.service.name, 's1');
  t.is(m.endpointByIp('10.3.0.4'), undefined);
  // beyond the bound through the watch as well
  f.apply(service('a', 's4', '10.96.0.4'));
  await eventually(t, 'dropped on watch', () => m.stats.servicesDropped === 2);
  t.is(m.serviceByIp('10.96.0.4'), undefined);
  // an update of a stored one is not a new object: kept
  f.apply(service('a', 's1', '10.96.0.11'));
  await eventually(t, 'updated service', () => m.serviceByIp('10.96.0.11')?.name === 's1');
  t.is(m.serviceByIp('10.96.0.1'), undefined, 'the old ClusterIP is unindexed');
});

// --------------------------------------------------------------------------- peers

test('services and endpointslices: describePeer for ClusterIPs, endpoints and pods', async (t) => {
  const { f, m } = await setup(t, (f) => {
    seedShop(f);
    f.apply(service('shop', 'web', '10.96.0.10', [80]));
    f.apply(service('shop', 'web-admin', '10.96.0.11', [9090]));
    f.apply(service('shop', 'web-headless', 'None'));
    f.apply(endpointSlice('shop', 'web', 'web-a1', [{ ip: '10.1.0.11', pod: { name: 'web-5d9f8c-x1', uid: 'uid-web-1' } }, { ip: '10.2.0.5', pod: { name: 'elsewhere', uid: 'uid-other-node' } }], [8080]));
    f.apply(endpointSlice('shop', 'web-admin', 'web-admin-b2', [{ ip: '10.1.0.11', pod: { name: 'web-5d9f8c-x1', uid: 'uid-web-1' } }], [9090]));
    f.apply(endpointSlice('ext', 'legacy', 'legacy-1', [{ ip: '192.168.7.7' }], [5432]));
  });
  t.is(m.stats.services, 3);
  t.is(m.stats.endpointSlices, 3);
  t.is(m.stats.endpoints, 4);
  await eventually(t, 'owners', () => m.podByUid('uid-web-1')?.owners.deployment && m.podByUid('uid-pg'));

  t.deepEqual(m.describePeer('10.96.0.10', 80), {
    'sidelight.peer.service': 'web',
    'sidelight.peer.namespace': 'shop',
    serverAddress: 'web.shop.svc.cluster.local',
  });
  // an endpoint of two services: the port picks the slice
  t.deepEqual(m.describePeer('10.1.0.11', 8080), {
    'sidelight.peer.service': 'web',
    'sidelight.peer.namespace': 'shop',
    'sidelight.peer.pod': 'web-5d9f8c-x1',
    'sidelight.peer.workload': 'web',
    'sidelight.peer.workload.kind': 'Deployment',
  });
  t.is(m.describePeer('10.1.0.11', 9090)?.['sidelight.peer.service'], 'web-admin');
  t.is(m.describePeer('10.1.0.11')?.['sidelight.peer.service'], 'web', 'no port: the smallest service name');
  // a pod on another node: its name from the endpoint; it has no controller (fetched once to know)
  t.deepEqual(m.describePeer('10.2.0.5', 8080), {
    'sidelight.peer.service': 'web',
    'sidelight.peer.namespace': 'shop',
    'sidelight.peer.pod': 'elsewhere',
  });
  await eventually(t, 'remote pod fetched', () => m.stats.remotePods === 1);
  t.is(m.describePeer('10.2.0.5', 8080)?.['sidelight.peer.workload'], undefined);
  // a local pod behind no Service: named as its own spans are
  t.deepEqual(m.describePeer('10.1.0.14', 5432), {
    'sidelight.peer.service': 'pg',
    'sidelight.peer.namespace': 'db',
    'sidelight.peer.pod': 'pg-0',
    'sidelight.peer.workload': 'pg',
    'sidelight.peer.workload.kind': 'StatefulSet',
  });
  // an endpoint that is no pod (a manually managed slice), a service not in the cache
  t.deepEqual(m.describePeer('192.168.7.7', 5432), { 'sidelight.peer.service': 'legacy', 'sidelight.peer.namespace': 'ext' });
  t.deepEqual(m.endpointByIp('192.168.7.7'), { service: { namespace: 'ext', name: 'legacy', clusterIPs: [], ports: [] } });
  t.is(m.describePeer('8.8.8.8', 53), undefined);
  t.is(m.serviceByIp('None'), undefined);
  t.deepEqual(m.serviceByIp('10.96.0.10'), { namespace: 'shop', name: 'web', uid: m.serviceByIp('10.96.0.10')!.uid, type: 'ClusterIP', clusterIPs: ['10.96.0.10'], ports: [{ name: 'p80', port: 80, protocol: 'TCP' }] });

  // changes stream in
  f.remove('Service', 'shop', 'web');
  f.remove('EndpointSlice', 'shop', 'web-a1');
  await eventually(t, 'service gone', () => m.serviceByIp('10.96.0.10') === undefined && m.stats.endpoints === 2);
  t.is(m.describePeer('10.1.0.11', 8080)?.['sidelight.peer.service'], 'web-admin', 'the remaining slice');
  t.is(m.endpointByIp('10.2.0.5'), undefined);
});

test('peers on other nodes: the workload of an endpoint pod elsewhere, from its ownerReferences (pod, then ReplicaSet, fetched once)', async (t) => {
  const { f, m } = await setup(t, (f) => {
    seedShop(f);
    f.apply(replicaSet('pay', 'api-6c7d8', 'rs-pay-uid', { name: 'api', uid: 'dep-pay-uid' }));
    f.apply(pod({ namespace: 'pay', name: 'api-6c7d8-zz', uid: 'uid-pay-1', nodeName: 'node-b', ip: '10.2.0.9', owner: { kind: 'ReplicaSet', name: 'api-6c7d8', uid: 'rs-pay-uid' } }));
    f.apply(pod({ namespace: 'pay', name: 'ledger-0', uid: 'uid-ledger-0', nodeName: 'node-c', ip: '10.3.0.4', owner: { kind: 'StatefulSet', name: 'ledger', uid: 'sts-l' } }));
    f.apply(endpointSlice('pay', 'api', 'api-x', [{ ip: '10.2.0.9', nodeName: 'node-b', pod: { name: 'api-6c7d8-zz', uid: 'uid-pay-1' } }, { ip: '10.3.0.4', nodeName: 'node-c', pod: { name: 'ledger-0', uid: 'uid-ledger-0' } }, { ip: '10.3.0.5', pod: { name: 'gone-pod', uid: 'uid-gone' } }], [8443]));
  });
  // first sight: named by the endpoint only, the lookups start in the background
  t.deepEqual(m.describePeer('10.2.0.9', 8443), { 'sidelight.peer.service': 'api', 'sidelight.peer.namespace': 'pay', 'sidelight.peer.pod': 'api-6c7d8-zz' });
  m.describePeer('10.3.0.4', 8443);
  m.describePeer('10.3.0.5', 8443);
  await eventually(t, 'workloads', () => m.describePeer('10.2.0.9', 8443)?.['sidelight.peer.workload'] === 'api' && m.describePeer('10.3.0.4', 8443)?.['sidelight.peer.workload'] !== undefined);
  t.deepEqual(m.describePeer('10.2.0.9', 8443), {
    'sidelight.peer.service': 'api',
    'sidelight.peer.namespace': 'pay',
    'sidelight.peer.pod': 'api-6c7d8-zz',
    'sidelight.peer.workload': 'api',
    'sidelight.peer.workload.kind': 'Deployment',
  });
  t.like(m.describePeer('10.3.0.4', 8443), { 'sidelight.peer.workload': 'ledger', 'sidelight.peer.workload.kind': 'StatefulSet' });
  t.is(m.describePeer('10.3.0.5', 8443)?.['sidelight.peer.workload'], undefined, 'a pod the API does not know (404): no workload');
  // each pod and the ReplicaSet fetched once, however often the peer is named
  for (let i = 0; i < 20; i++) m.describePeer('10.2.0.9', 8443);
  t.is(f.count('GET', '/api/v1/namespaces/pay/pods/api-6c7d8-zz'), 1);
  t.is(f.count('GET', '/api/v1/namespaces/pay/pods/ledger-0'), 1);
  t.is(f.count('GET', '/apis/apps/v1/namespaces/pay/replicasets/api-6c7d8'), 1);
  t.is(m.stats.remotePods, 3);
  t.is(m.stats.remotePodLookups, 3);
});

test('peers: false watches pods only', async (t) => {
  const { f, m } = await setup(t, seedShop, { peers: false });
  t.is(f.count('GET', '/api/v1/services'), 0);
  t.is(f.count('GET', '/apis/discovery.k8s.io/v1/endpointslices'), 0);
  t.is(m.describePeer('10.1.0.11', 80)?.['sidelight.peer.pod'], 'web-5d9f8c-x1');
});

// ------------------------------------------------------------------ resource attributes

function podInfo(p: Partial<PodInfo> = {}): PodInfo {
  return {
    namespace: 'shop',
    name: 'web-5d9f8c-x1',
    uid: 'uid-1',
    ip: '10.1.0.11',
    ips: ['10.1.0.11'],
    nodeName: NODE,
    hostNetwork: false,
    labels: {},
    annotations: {},
    containers: [{ name: 'app', id: cid('a'), runtime: 'containerd' }],
    owners: {},
    ...p,
  };
}

const FULL_OWNERS = { deployment: 'dep', replicaset: 'rs', statefulset: 'sts', daemonset: 'ds', cronjob: 'cj', job: 'jb' };

/** [case, pod, process service name, expected service.name] — the semconv precedence, in order */
const SERVICE_NAME_CASES: [string, PodInfo, string | undefined, string][] = [
  [
    'process OTEL_SERVICE_NAME first',
    podInfo({ annotations: { 'resource.opentelemetry.io/service.name': 'ann' }, labels: { 'app.kubernetes.io/instance': 'inst', 'app.kubernetes.io/name': 'nm' }, owners: FULL_OWNERS }),
    'from-env',
    'from-env',
  ],
  ['then the annotation', podInfo({ annotations: { 'resource.opentelemetry.io/service.name': 'ann' }, labels: { 'app.kubernetes.io/instance': 'inst' }, owners: FULL_OWNERS }), undefined, 'ann'],
  ['then app.kubernetes.io/instance', podInfo({ labels: { 'app.kubernetes.io/instance': 'inst', 'app.kubernetes.io/name': 'nm' }, owners: FULL_OWNERS }), undefined, 'inst'],
  ['then app.kubernetes.io/name', podInfo({ labels: { 'app.kubernetes.io/name': 'nm' }, owners: FULL_OWNERS }), undefined, 'nm'],
  ['then the deployment', podInfo({ owners: FULL_OWNERS }), undefined, 'dep'],
  ['then the replicaset', podInfo({ owners: { replicaset: 'rs', statefulset: 'sts', daemonset: 'ds', cronjob: 'cj', job: 'jb' } }), undefined, 'rs'],
  ['then the statefulset', podInfo({ owners: { statefulset: 'sts', daemonset: 'ds', cronjob: 'cj', job: 'jb' } }), undefined, 'sts'],
  ['then the daemonset', podInfo({ owners: { daemonset: 'ds', cronjob: 'cj', job: 'jb' } }), undefined, 'ds'],
  ['then the cronjob', podInfo({ owners: { cronjob: 'cj', job: 'jb' } }), undefined, 'cj'],
  ['then the job', podInfo({ owners: { job: 'jb' } }), undefined, 'jb'],
  ['then the pod', podInfo(), undefined, 'web-5d9f8c-x1'],
  ['then the container name', podInfo({ name: '' }), undefined, 'app'],
  ['blank values are skipped', podInfo({ annotations: { 'resource.opentelemetry.io/service.name': '  ' }, labels: { 'app.kubernetes.io/instance': '' }, owners: { job: 'jb' } }), ' ', 'jb'],
];

for (const [name, p, env, expected] of SERVICE_NAME_CASES) {
  test(`service.name precedence: ${name}`, (t) => {
    t.is(k8sResourceAttributes(p, 'app', env)['service.name'], expected);
  });
}

test('k8sResourceAttributes: the full attribute set', (t) => {
  const p = podInfo({ owners: { deployment: 'web', replicaset: 'web-5d9f8c' }, labels: { 'app.kubernetes.io/version': '1.4.2' } });
  t.deepEqual(k8sResourceAttributes(p, 'app', undefined, { clusterName: 'prod-eu' }), {
    'k8s.namespace.name': 'shop',
    'k8s.pod.name': 'web-5d9f8c-x1',
    'k8s.pod.uid': 'uid-1',
    'k8s.pod.ip': '10.1.0.11',
    'k8s.container.name': 'app',
    'k8s.node.name': NODE,
    'k8s.deployment.name': 'web',
    'k8s.replicaset.name': 'web-5d9f8c',
    'k8s.cluster.name': 'prod-eu',
    'container.id': cid('a'),
    'service.name': 'web',
    'service.namespace': 'shop',
    'service.instance.id': 'shop.web-5d9f8c-x1.app',
    'service.version': '1.4.2',
  });
  const all = k8sResourceAttributes(podInfo({ owners: FULL_OWNERS }), undefined, 'svc', { containerId: cid('e') });
  t.like(all, {
    'k8s.statefulset.name': 'sts',
    'k8s.daemonset.name': 'ds',
    'k8s.cronjob.name': 'cj',
    'k8s.job.name': 'jb',
    'container.id': cid('e'),
    'service.instance.id': 'shop.web-5d9f8c-x1',
  });
  t.false('k8s.container.name' in all);
  t.false('k8s.cluster.name' in all);
  t.false('service.version' in all);
});

test('k8sResourceAttributes: annotations win for service.namespace, service.instance.id and service.version', (t) => {
  const a = k8sResourceAttributes(
    podInfo({
      annotations: {
        'resource.opentelemetry.io/service.namespace': 'checkout',
        'resource.opentelemetry.io/service.instance.id': 'web-1',
        'resource.opentelemetry.io/service.version': '2.0.0',
      },
      labels: { 'app.kubernetes.io/version': '1.0.0' },
    }),
    'app',
  );
  t.like(a, { 'service.namespace': 'checkout', 'service.instance.id': 'web-1', 'service.version': '2.0.0' });
  // no IP yet, no node: attributes absent, not empty
  const bare = k8sResourceAttributes(podInfo({ ip: undefined, ips: [], nodeName: undefined, containers: [] }), 'app');
  t.false('k8s.pod.ip' in bare);
  t.false('k8s.node.name' in bare);
  t.false('container.id' in bare);
});

test('mergeAbsent never overwrites; podForContainer by container id, else by pod uid', (t) => {
  t.deepEqual(mergeAbsent<string>({ 'service.name': 'mine', a: '1' }, { 'service.name': 'k8s', b: '2' }), { 'service.name': 'mine', a: '1', b: '2' });
  const p = podInfo();
  const meta = { podByContainerId: (id: string) => (id === cid('a') ? p : undefined), podByUid: (uid: string) => (uid === 'uid-1' ? p : undefined) };
  t.deepEqual(podForContainer(meta, { containerId: cid('a'), podUid: 'x', runtime: 'containerd' }), { pod: p, containerName: 'app', containerId: cid('a') });
  t.deepEqual(podForContainer(meta, { containerId: cid('9'), podUid: 'uid-1' }), { pod: p, containerId: cid('9') });
  t.deepEqual(podForContainer(meta, { podUid: 'uid-1' }), { pod: p });
  t.is(podForContainer(meta, {}), undefined);
});

test('describePeer over any K8sMetadata: ClusterIP uses the configured cluster domain', (t) => {
  const svc = { namespace: 'n', name: 's', clusterIPs: ['10.96.1.1'], ports: [] };
  const meta = { serviceByIp: (ip: string) => (ip === '10.96.1.1' ? svc : undefined), endpointByIp: () => undefined, podByIp: () => undefined };
  t.is(describePeer(meta, '10.96.1.1', 80, { clusterDomain: 'corp.internal' })?.serverAddress, 's.n.svc.corp.internal');
  t.is(describePeer(meta, '10.96.1.2', 80), undefined);
});

// ------------------------------------------------------------------------------ options

test('options: defaults, and every problem reported at once with the allowed values', (t) => {
  const o = resolveK8sOptions({ nodeName: 'node-a' });
  t.like(o, { maxPods: 1024, maxServices: 10_000, ownerCacheTtlMs: 600_000, clusterDomain: 'cluster.local', peers: true });
  t.deepEqual(validateK8sOptions({ nodeName: 'Node_A', maxPods: 3, ownerConcurrency: 1.5, backoffInitialMs: 5000, backoffMaxMs: 1000 }), [
    'k8s.nodeName: "Node_A" is not allowed: must be the node\'s name (a DNS subdomain); set NODE_NAME from the downward API (fieldRef spec.nodeName)',
    'k8s.maxPods: 3 is not allowed: must be an integer from 16 to 65536',
    'k8s.ownerConcurrency: 1.5 is not allowed: must be an integer from 1 to 64',
    'k8s.backoffInitialMs: 5000 is not allowed: must be at most backoffMaxMs (1000)',
  ]);
  t.throws(() => new KubernetesMetadata({ nodeName: '' }), { message: /^k8s\.nodeName: "" is not allowed/ });
  t.is(nodeNameFromEnv({ NODE_NAME: 'n1' }), 'n1');
  t.is(nodeNameFromEnv({ NODE_NAME: 'n1', K8S_NODE_NAME: 'n2' }), 'n2');
  t.is(nodeNameFromEnv({ NODE_NAME: ' ' }), undefined);
  t.false(inCluster({}, '/nonexistent'));
  t.false(inCluster({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, '/nonexistent/token'));
});

test('start() outside a cluster without a kubeconfig fails with the reason', async (t) => {
  const m = new KubernetesMetadata({ nodeName: 'node-a' });
  const saved = process.env.KUBERNETES_SERVICE_HOST;
  delete process.env.KUBERNETES_SERVICE_HOST;
  try {
    await t.throwsAsync(() => m.start(), { message: /not running in a cluster .* and no kubeconfig given/ });
  } finally {
    if (saved !== undefined) process.env.KUBERNETES_SERVICE_HOST = saved;
    await m.stop();
  }
  await t.throwsAsync(() => new KubernetesMetadata({ nodeName: 'node-a', kubeconfig: '/nonexistent/kubeconfig' }).start(), {
    message: /^kubernetes: cannot load kubeconfig \/nonexistent\/kubeconfig/,
  });
});

// ------------------------------------------------------------------------------ deploy

test('deploy/kubernetes/sidelight.yaml: valid YAML; RBAC is exactly what k8s.ts reads; the DaemonSet is as documented', (t) => {
  const text = readFileSync(new URL('../../deploy/kubernetes/sidelight.yaml', import.meta.url), 'utf8');
  const docs = parseAllDocuments(text);
  for (const d of docs) t.deepEqual(d.errors, [], d.errors.map((e) => e.message).join('\n'));
  const objs = docs.map((d) => d.toJS() as Record<string, any>).filter(Boolean);
  t.deepEqual(objs.map((o) => o.kind), ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'DaemonSet']);
  const role = objs[2]!;
  const rules = (role.rules as { apiGroups: string[]; resources: string[]; verbs: string[] }[]).map((r) => ({ ...r, resources: [...r.resources].sort() }));
  t.deepEqual(rules, [
    { apiGroups: [''], resources: ['pods', 'services'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['apps'], resources: ['replicasets'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: ['batch'], resources: ['jobs'], verbs: ['get', 'list', 'watch'] },
  ]);
  const ds = objs[4]!;
  const spec = ds.spec.template.spec;
  t.true(spec.hostPID);
  t.true(spec.hostNetwork);
  t.is(spec.dnsPolicy, 'ClusterFirstWithHostNet');
  t.deepEqual(spec.tolerations, [{ operator: 'Exists' }]);
  const c = spec.containers[0];
  t.deepEqual(c.securityContext.capabilities, { add: ['BPF', 'PERFMON', 'SYS_PTRACE', 'DAC_READ_SEARCH'], drop: ['ALL'] });
  t.false(c.securityContext.privileged);
  t.true(c.securityContext.readOnlyRootFilesystem);
  const env = Object.fromEntries((c.env as { name: string }[]).map((e) => [e.name, e]));
  t.deepEqual(env.NODE_NAME, { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
  t.truthy(env.OTEL_EXPORTER_OTLP_ENDPOINT);
  t.is(c.livenessProbe.httpGet.path, '/healthz');
  t.is(c.readinessProbe.httpGet.path, '/readyz');
  t.is(c.livenessProbe.httpGet.port, 13133);
  const mounts = Object.fromEntries((c.volumeMounts as { mountPath: string; readOnly?: boolean }[]).map((v) => [v.mountPath, v.readOnly]));
  t.deepEqual(mounts, { '/sys/kernel/btf': true, '/sys/fs/cgroup': true, '/tmp': undefined });
  t.truthy(c.resources.requests.memory);
  t.truthy(c.resources.limits.memory);
});

test('deploy/chart: Chart.yaml and values.yaml are valid YAML; templates cover the same objects', (t) => {
  const chart = new URL('../../deploy/chart/sidelight/', import.meta.url);
  for (const f of ['Chart.yaml', 'values.yaml']) {
    const d = parseAllDocuments(readFileSync(new URL(f, chart), 'utf8'));
    t.deepEqual(d.flatMap((x) => x.errors.map((e) => e.message)), [], f);
  }
  const values = parseAllDocuments(readFileSync(new URL('values.yaml', chart), 'utf8'))[0]!.toJS() as Record<string, any>;
  t.deepEqual(values.securityContext.capabilities.add, ['BPF', 'PERFMON', 'SYS_PTRACE', 'DAC_READ_SEARCH']);
  const templates = ['serviceaccount.yaml', 'clusterrole.yaml', 'clusterrolebinding.yaml', 'daemonset.yaml'].map((n) => readFileSync(new URL(`templates/${n}`, chart), 'utf8'));
  t.deepEqual(templates.map((x) => /^kind: (\w+)$/m.exec(x)?.[1]), ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'DaemonSet']);
  // templates are YAML once the {{ }} actions are blanked (a syntax check, not a render)
  for (const x of templates) {
    const blanked = x.replace(/^\s*\{\{-?[^}]*-?\}\}\s*$/gm, '').replace(/\{\{-?[^}]*-?\}\}/g, 'x');
    t.deepEqual(parseAllDocuments(blanked).flatMap((d) => d.errors.map((e) => e.message)), []);
  }
});
