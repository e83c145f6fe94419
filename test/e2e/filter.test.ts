/**
 * The in-kernel filters on the real kernel: include/exclude by port, pid and cgroup v2.
 * Each test runs its own agent with one filter and two real servers, and checks which
 * spans exist and that the kernel counted what it skipped.
 */
import { mkdirSync, rmdirSync, writeFileSync, readFileSync } from 'node:fs';
import test from 'ava';
import { Agent, cgroup2Root } from '../../src/agent.js';
import { loadConfig, type Config } from '../../src/config.js';
import type { SidelightSpan } from '../../src/receiver/span.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, startPythonServer, type RunningServer } from '../helpers/servers.js';

const unavailable = kernelUnavailable();

async function withAgent(
  tweak: (c: Config) => void,
  body: (spans: SidelightSpan[], agent: Agent) => Promise<void>,
): Promise<void> {
  const config = loadConfig({ env: { SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0' } });
  config.export.console = 'never';
  config.capture.pollIntervalMs = 20;
  tweak(config);
  const agent = new Agent(config);
  const spans: SidelightSpan[] = [];
  agent.onSpan = (s) => spans.push(s);
  await agent.start();
  try {
    await body(spans, agent);
  } finally {
    await agent.stop();
  }
}

const localPort = (s: SidelightSpan): unknown => s.attributes['network.local.port'];
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 400));

async function twoServers(): Promise<[RunningServer, RunningServer]> {
  return [await startPythonServer(), await startPythonServer()];
}

test.serial('ports.exclude: a server port excluded in the kernel yields no spans; others do', async (t) => {
  if (!need(t, unavailable)) return;
  const [a, b] = await twoServers();
  try {
    await withAgent(
      (c) => (c.filter.ports.exclude = [a.port]),
      async (spans, agent) => {
        await curl([`http://127.0.0.1:${a.port}/hello.txt`]);
        await curl([`http://127.0.0.1:${b.port}/hello.txt`]);
        await settle();
        t.true(spans.some((s) => s.kind === 'server' && localPort(s) === b.port));
        t.false(spans.some((s) => localPort(s) === a.port || s.attributes['server.port'] === a.port));
        t.true((agent.kernelCounters().filtered ?? 0) > 0, 'the kernel counted skipped syscalls');
      },
    );
  } finally {
    await a.stop();
    await b.stop();
  }
});

test.serial('pids.include: only the listed process is traced', async (t) => {
  if (!need(t, unavailable)) return;
  const [a, b] = await twoServers();
  try {
    await withAgent(
      (c) => (c.filter.pids.include = [a.pid]),
      async (spans) => {
        await curl([`http://127.0.0.1:${a.port}/hello.txt`]);
        await curl([`http://127.0.0.1:${b.port}/hello.txt`]);
        await settle();
        t.true(spans.some((s) => s.kind === 'server' && localPort(s) === a.port));
        t.true(spans.every((s) => s.process.tgid === a.pid), 'curl and the other server are not traced');
      },
    );
  } finally {
    await a.stop();
    await b.stop();
  }
});

test.serial('cgroups.include: only processes in the listed cgroup v2 directory are traced', async (t) => {
  if (!need(t, unavailable)) return;
  const rel = `/sidelight-test-${process.pid}`;
  const dir = `${cgroup2Root()}${rel}`;
  mkdirSync(dir);
  const [a, b] = await twoServers();
  try {
    writeFileSync(`${dir}/cgroup.procs`, String(a.pid));
    t.true(readFileSync(`${dir}/cgroup.procs`, 'utf8').split('\n').includes(String(a.pid)));
    await withAgent(
      (c) => (c.filter.cgroups.include = [rel]),
      async (spans) => {
        await curl([`http://127.0.0.1:${a.port}/hello.txt`]);
        await curl([`http://127.0.0.1:${b.port}/hello.txt`]);
        await settle();
        t.true(spans.some((s) => s.kind === 'server' && localPort(s) === a.port));
        t.true(spans.every((s) => s.process.tgid === a.pid));
        t.true(spans.every((s) => s.process.cgroupId === spans[0]!.process.cgroupId));
      },
    );
  } finally {
    await a.stop();
    await b.stop();
    rmdirSync(dir);
  }
});

test.serial('a cgroup filter naming a missing directory stops start() with the path named', async (t) => {
  if (!need(t, unavailable)) return;
  const config = loadConfig({ env: { SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0' } });
  config.filter.cgroups.include = ['/no/such/sidelight-cgroup'];
  const agent = new Agent(config);
  await t.throwsAsync(() => agent.start(), { message: /filter\.cgroups: \/no\/such\/sidelight-cgroup: no such cgroup v2 directory/ });
  await agent.stop();
});
