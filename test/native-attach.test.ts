/**
 * The addon's attachments beyond auto-attach (native/src/attach_net.cc), on the real kernel
 * with build/inject.bpf.o: a sockops program on a cgroup v2 directory (a bpf_link) and an
 * sk_msg program on a sockhash (bpf_prog_attach); errors name the step; close() undoes both.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync } from 'node:fs';
import test from 'ava';
import { cgroup2Root } from '../src/agent.js';
import { loadNative, SidelightNativeError, wrapNative } from '../src/native.js';
import { bpfObjectPath } from '../src/paths.js';
import { encodeInjectConfig, INJECT_NAMES } from '../src/receiver/inject.js';
import { kernelUnavailable, need } from './helpers/kernel.js';

const obj = bpfObjectPath(INJECT_NAMES.object);
const unavailable = kernelUnavailable() ?? (existsSync(obj) ? undefined : `${obj} not built (make bpf)`);

/** Program ids attached to a cgroup directory, as bpftool reports them. */
function cgroupProgs(path: string): number[] {
  const out = JSON.parse(execFileSync('bpftool', ['-j', 'cgroup', 'show', path], { encoding: 'utf8' }).trim() || '[]') as { id: number }[];
  return out.map((p) => p.id);
}

test.serial('attachCgroup and attachSockMap: attach once, refuse twice, name the step; close() detaches', (t) => {
  if (!need(t, unavailable)) return;
  const cg = `${cgroup2Root()}/sl-native-attach-${process.pid}`;
  mkdirSync(cg, { recursive: true });
  const o = wrapNative(() => loadNative().open(obj, encodeInjectConfig(process.pid, true), {}));
  try {
    const missing = t.throws(() => wrapNative(() => o.attachCgroup(INJECT_NAMES.sockops, '/nonexistent/cgroup')));
    t.true(missing instanceof SidelightNativeError);
    t.like(missing as SidelightNativeError, { step: 'attach_cgroup', code: 'ENOENT' });
    t.like(t.throws(() => wrapNative(() => o.attachCgroup('no_such_prog', cg))) as SidelightNativeError, { step: 'attach_cgroup', code: 'ENOENT' });
    t.throws(() => o.attachCgroup(42 as unknown as string, cg), { instanceOf: TypeError });

    t.deepEqual(cgroupProgs(cg), []);
    o.attachCgroup(INJECT_NAMES.sockops, cg);
    t.is(cgroupProgs(cg).length, 1, 'the sockops program is attached to the cgroup');
    t.like(t.throws(() => wrapNative(() => o.attachCgroup(INJECT_NAMES.sockops, cg))) as SidelightNativeError, { code: 'EEXIST' });

    o.attachSockMap(INJECT_NAMES.msg, INJECT_NAMES.socks);
    t.like(t.throws(() => wrapNative(() => o.attachSockMap(INJECT_NAMES.msg, INJECT_NAMES.socks))) as SidelightNativeError, { step: 'attach_sockmap', code: 'EEXIST' });
    t.like(t.throws(() => wrapNative(() => o.attachSockMap(INJECT_NAMES.msg, 'no_such_map'))) as SidelightNativeError, { step: 'attach_sockmap', code: 'ENOENT' });
  } finally {
    o.close();
  }
  t.deepEqual(cgroupProgs(cg), [], 'close() destroyed the link');
  t.throws(() => wrapNative(() => o.attachCgroup(INJECT_NAMES.sockops, cg)), { instanceOf: SidelightNativeError }, 'closed: EBADF');
  rmdirSync(cg);
});
