import { spawn, type ChildProcess } from 'node:child_process';
import test from 'ava';
import { parseResourceAttributes, ProcessCache } from '../../src/enrich/process.js';
import type { ProcessRef } from '../../src/receiver/span.js';

const children: ChildProcess[] = [];
test.after.always(() => children.forEach((c) => c.kill('SIGKILL')));

function sleeper(env: NodeJS.ProcessEnv): ProcessRef {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
  const c = spawn('sleep', ['30'], { env: { ...clean, ...env }, stdio: 'ignore' });
  children.push(c);
  return { tgid: c.pid!, tid: c.pid!, comm: 'sleep', cgroupId: 0n };
}

test('service.name from the process own OTEL_SERVICE_NAME, plus its OTEL_RESOURCE_ATTRIBUTES', (t) => {
  const cache = new ProcessCache({ maxProcesses: 10, hostName: 'node-1' });
  const p = sleeper({ OTEL_SERVICE_NAME: 'checkout', OTEL_RESOURCE_ATTRIBUTES: 'service.version=1.2.3,deployment.environment.name=prod%20eu' });
  const r = cache.resource(p);
  t.like(r.attributes, {
    'service.name': 'checkout',
    'service.version': '1.2.3',
    'deployment.environment.name': 'prod eu',
    'process.pid': p.tgid,
    'process.executable.name': 'sleep',
    'host.name': 'node-1',
    'telemetry.distro.name': 'sidelight',
  });
  t.regex(String(r.attributes['process.executable.path']), /\/sleep$/);
  t.is(cache.resource(p), r, 'one Resource object per process');
});

test('service.name from OTEL_RESOURCE_ATTRIBUTES when OTEL_SERVICE_NAME is absent; else the executable', (t) => {
  const cache = new ProcessCache({ maxProcesses: 10 });
  t.is(cache.info(sleeper({ OTEL_RESOURCE_ATTRIBUTES: 'service.name=from-attrs' })).serviceName, 'from-attrs');
  t.is(cache.resource(sleeper({})).attributes['service.name'], 'sleep');
});

test('configured attributes apply to every process; the process own win', (t) => {
  const cache = new ProcessCache({ maxProcesses: 10, extraAttributes: { 'k8s.cluster.name': 'c1', 'service.version': 'agent-default' } });
  const r = cache.resource(sleeper({ OTEL_RESOURCE_ATTRIBUTES: 'service.version=9' }));
  t.is(r.attributes['k8s.cluster.name'], 'c1');
  t.is(r.attributes['service.version'], '9');
});

test('a process that is already gone: the event comm names it, counted', (t) => {
  const cache = new ProcessCache({ maxProcesses: 10 });
  const r = cache.resource({ tgid: 2 ** 22 + 12345, tid: 1, comm: 'curl', cgroupId: 0n });
  t.is(r.attributes['service.name'], 'curl');
  t.is(r.attributes['process.executable.name'], 'curl');
  t.is(cache.stats.procMissing, 1);
});

test('the cache is bounded, the oldest evicted and counted', (t) => {
  const cache = new ProcessCache({ maxProcesses: 3 });
  for (let i = 0; i < 8; i++) cache.info({ tgid: 2 ** 22 + i, tid: 1, comm: `p${i}`, cgroupId: 0n });
  t.is(cache.size, 3);
  t.is(cache.stats.evicted, 5);
});

test('OTEL_RESOURCE_ATTRIBUTES parsing: percent-decoding, junk skipped', (t) => {
  t.deepEqual(parseResourceAttributes('a=1, b = two%2Cthree ,bad,=x,c=%E2%9C%93,d=%zz'), { a: '1', b: 'two,three', c: '✓', d: '%zz' });
});

test("a process gone from /proc is described by the kernel's record (exe name, its OTEL_* env)", (t) => {
  const cache = new ProcessCache({ maxProcesses: 10 });
  const pid = 2 ** 22 + 777;
  const env = Buffer.from('PATH=/bin\0OTEL_SERVICE_NAME=batch-job\0SECRET=x\0OTEL_RESOURCE_ATTRIBUTES=service.version=3\0');
  cache.hint(pid, 'node', env);
  const r = cache.resource({ tgid: pid, tid: pid, comm: 'MainThread', cgroupId: 0n });
  t.like(r.attributes, { 'service.name': 'batch-job', 'service.version': '3', 'process.executable.name': 'node', 'process.pid': pid });
  t.false('SECRET' in r.attributes);
  t.is(cache.stats.fromKernel, 1);
  // no hint: the comm is all there is
  t.is(cache.resource({ tgid: pid + 1, tid: 1, comm: 'MainThread', cgroupId: 0n }).attributes['service.name'], 'MainThread');
});

test('environ unreadable (CAP_SYS_PTRACE without CAP_DAC_READ_SEARCH) but exe readable: the kernel record environment stands in', async (t) => {
  const { mkdtempSync, mkdirSync, symlinkSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const root = mkdtempSync(join(tmpdir(), 'proc-'));
  mkdirSync(join(root, '4242'));
  symlinkSync('/usr/bin/sleep', join(root, '4242', 'exe'));
  mkdirSync(join(root, '4242', 'environ')); // reading it fails (EISDIR), as EACCES would
  const cache = new ProcessCache({ maxProcesses: 10, procRoot: root });
  cache.hint(4242, 'sleep', new TextEncoder().encode('OTEL_SERVICE_NAME=from-kernel\0OTHER=x\0'));
  const r = cache.resource({ tgid: 4242, tid: 4242, comm: 'sleep', cgroupId: 0n });
  t.is(r.attributes['service.name'], 'from-kernel');
  t.is(r.attributes['process.executable.path'], '/usr/bin/sleep');
});
