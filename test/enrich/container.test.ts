import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { parseCgroup, readContainer, type CgroupContainer } from '../../src/enrich/container.js';

const DIR = new URL('../testdata/cgroup/', import.meta.url);
const data = (name: string): string => readFileSync(new URL(`${name}.txt`, DIR), 'utf8');

// ids in the files (sha256 of the runtime's name, so they look like real ones)
const CONTAINERD = '2397d068a8d1552a4c3f9147ba9c94e086bfd66fb2acb5bbaf47197105127d5f';
const CRIO = 'c64064614423cb790e88b3e5492ff5ccf673b25ae823089f7a60c65cda24d809';
const DOCKER = 'd548c5b83fa61d8e3bd86ad42a7ffea9b7c86e3f9d8095c1577d3e1270bb9420';
const PODMAN = '2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9';
const PAUSE = '6210c0bf05396716df932f0729df69de0533933e5ad9871fd07b61811c4c28df';
const NERDCTL = 'aa470170773aae4a69e6e0a509eb8c1f304140b1fea1a2d55ec93a07a78e497c';
const ECS = 'd940b56413af584806504ea58f1f7c0b6da2a1ea2dc6733d32117427c7c83936';
const POD = '0f2c4d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f';
const STATIC_POD = '2053dbbf6ec7135c4e994d3464c478db';

const containerd = { containerId: CONTAINERD, runtime: 'containerd', podUid: POD } as const;
const crio = { containerId: CRIO, runtime: 'cri-o', podUid: POD } as const;

/** file name (test/testdata/cgroup/<name>.txt) → exactly what parseCgroup must return */
const CASES: Record<string, CgroupContainer> = {
  containerd_systemd_v2: containerd,
  containerd_systemd_v1_hybrid: containerd,
  containerd_systemd_guaranteed_v2: containerd,
  containerd_systemd_v1_colon: containerd,
  containerd_cgroupfs_v1: containerd,
  containerd_cgroupfs_v2: containerd,
  containerd_cgroupfs_guaranteed_v2: containerd,
  containerd_pause_sandbox_v2: { containerId: PAUSE, runtime: 'containerd', podUid: POD },
  static_pod_systemd_v2: { containerId: CONTAINERD, runtime: 'containerd', podUid: STATIC_POD },
  kind_nested_v2: containerd,
  // read from inside a container with its own cgroup namespace (hostPID agent): paths above its root are `/..`
  cgroupns_private_relative_v2: containerd,
  crio_systemd_v2: crio,
  crio_systemd_v1: crio,
  crio_cgroupfs_v1: crio,
  crio_conmon_v2: { podUid: POD },
  docker_systemd_v2: { containerId: DOCKER, runtime: 'docker' },
  docker_systemd_v1: { containerId: DOCKER, runtime: 'docker' },
  docker_cgroupfs_v1: { containerId: DOCKER, runtime: 'docker' },
  docker_cgroupfs_v2: { containerId: DOCKER, runtime: 'docker' },
  docker_systemd_init_scope_v2: { containerId: DOCKER, runtime: 'docker' },
  podman_systemd_v2: { containerId: PODMAN, runtime: 'podman' },
  podman_systemd_container_subgroup_v2: { containerId: PODMAN, runtime: 'podman' },
  podman_rootless_v2: { containerId: PODMAN, runtime: 'podman' },
  podman_cgroupfs_v1: { containerId: PODMAN, runtime: 'podman' },
  podman_conmon_v2: {},
  nerdctl_systemd_v2: { containerId: NERDCTL, runtime: 'containerd' },
  bare_id_unknown_parent_v2: { containerId: ECS, runtime: 'unknown' },
  host_service_v2: {},
  host_session_v1: {},
  containerd_daemon_v2: {},
  cgroupns_root_v2: {},
  junk: {},
  empty: {},
};

for (const [name, expected] of Object.entries(CASES)) {
  test(`parseCgroup: ${name}`, (t) => {
    t.deepEqual(parseCgroup(data(name)), expected);
  });
}

test('every file in testdata/cgroup is in the table', (t) => {
  const files = readdirSync(DIR).map((f) => f.replace(/\.txt$/, '')).sort();
  t.deepEqual(files, Object.keys(CASES).sort());
});

test('parseCgroup: the cgroup v2 line wins over v1 lines that disagree', (t) => {
  const text = `4:memory:/docker/${DOCKER}\n0::/kubepods/burstable/pod${POD}/${CONTAINERD}\n`;
  t.deepEqual(parseCgroup(text), containerd);
});

test('parseCgroup: systemd pod UID underscores become dashes; uppercase is not an id', (t) => {
  t.is(parseCgroup(`0::/kubepods.slice/kubepods-pod${POD.replaceAll('-', '_')}.slice\n`).podUid, POD);
  t.deepEqual(parseCgroup(`0::/kubepods/pod${POD.toUpperCase()}/${CONTAINERD.toUpperCase()}\n`), {});
});

test('parseCgroup: bounded, never throws on junk', (t) => {
  // a real line after 1 MiB of junk is beyond the bound: ignored
  const big = `${'x'.repeat(1 << 20)}\n0::/docker/${DOCKER}\n`;
  t.deepEqual(parseCgroup(big), {});
  // thousands of lines: only the first MAX_CGROUP_LINES are read
  t.deepEqual(parseCgroup(`${'1:cpu:/\n'.repeat(5000)}0::/docker/${DOCKER}\n`), {});
  for (const junk of ['\0\0\0', ':::::', '0::', '0::/' + '/'.repeat(10000), '0:' + ':'.repeat(1000), '\uD800', String(null)]) {
    t.deepEqual(parseCgroup(junk), {}, JSON.stringify(junk.slice(0, 20)));
  }
  t.deepEqual(parseCgroup(undefined as unknown as string), {});
  t.deepEqual(parseCgroup(42 as unknown as string), {});
  // a segment named like an Object.prototype key before an id does not confuse the runtime
  t.deepEqual(parseCgroup(`0::/constructor/${DOCKER}\n`), { containerId: DOCKER, runtime: 'unknown' });
});

test('readContainer: reads <procRoot>/<pid>/cgroup; {} when missing or invalid', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'sidelight-proc-'));
  try {
    mkdirSync(join(root, '4242'));
    writeFileSync(join(root, '4242', 'cgroup'), data('crio_systemd_v2'));
    t.deepEqual(readContainer(4242, root), crio);
    t.deepEqual(readContainer(4243, root), {});
    t.deepEqual(readContainer(-1, root), {});
    t.deepEqual(readContainer(1.5, root), {});
    // the real /proc: this process is somewhere (a container or not); it must not throw
    const self = readContainer(process.pid);
    t.true(typeof self === 'object');
    if (self.containerId !== undefined) t.regex(self.containerId, /^[0-9a-f]{64}$/);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
