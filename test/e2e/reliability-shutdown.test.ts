/**
 * Reliability (issue #10, item 10): graceful shutdown. `bin/sidelight run` with spans waiting
 * in its export queue (the batch delay set far beyond the test) gets SIGTERM: it must deliver
 * every queued span to the real Collector, exit 0 within the stop deadline (5 s for the
 * queue, plus the final metric export), and leave nothing in the kernel — every BPF program and
 * map it held is freed. With the Collector unreachable it must still exit within the deadline,
 * dropping (and saying so) rather than hanging.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { startAgentProcess } from '../helpers/agentproc.js';
import { mapsHeldBy, progIdsHeldBy, stillLoaded } from '../helpers/bpf.js';
import { collectorBinary, startCollector } from '../helpers/collector.js';
import { healthz } from '../helpers/hostile.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { freePort, nodeFetch, startNodeServer } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');
/** the agent's stop deadline for the span queue (Agent.stop default) plus the metric flush, and slack */
const EXIT_DEADLINE_MS = 5000 + 5000 + 1500;
const REQUESTS = 150;

function config(port: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'sl-shutdown-'));
  // nothing is exported on its own during the test: only the shutdown flush can deliver
  writeFileSync(join(dir, 'a.yaml'), `filter:\n  ports:\n    include: [${port}]\nexport:\n  batch:\n    delayMs: 60000\n    maxSpans: 8192\n`);
  return join(dir, 'a.yaml');
}

/** Map ids of `ids` that still exist after waiting up to 5 s for the kernel to free them. */
async function mapsStillThere(ids: number[]): Promise<number[]> {
  const end = Date.now() + 5000;
  for (;;) {
    const left = ids.filter((id) => {
      try {
        execFileSync('bpftool', ['map', 'show', 'id', String(id)], { stdio: 'ignore' });
        return true;
      } catch {
        return false;
      }
    });
    if (left.length === 0 || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

test.serial(`SIGTERM with ${REQUESTS * 2} spans queued: all delivered, exit 0 within the deadline, every program and map freed`, async (t) => {
  if (!need(t, unavailable)) return;
  const collector = await startCollector();
  const srv = await startNodeServer();
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  try {
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint }, ['--config', config(srv.port)]);
    const progs = progIdsHeldBy(agent.pid);
    const maps = Object.values(mapsHeldBy(agent.pid)).map((m) => m.id);
    t.true(progs.size >= 2 && maps.length >= 3, `the agent holds programs (${progs.size}) and maps (${maps.length})`);
    const statuses = await nodeFetch(Array.from({ length: REQUESTS }, (_, i) => `http://127.0.0.1:${srv.port}/ok/shutdown${i}`));
    t.is(statuses.length, REQUESTS);
    // wait until the agent has every span in its queue (none exported yet: the batch delay is 60 s)
    const end = Date.now() + 15_000;
    let depth = 0;
    while (Date.now() < end) {
      const h = await healthz(agent.healthUrl);
      depth = h.export.depth as number;
      if (depth >= REQUESTS * 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    t.is(depth, REQUESTS * 2, 'every span queued before SIGTERM');
    t.is((await collector.spans()).length, 0, 'nothing exported before SIGTERM');

    const t0 = Date.now();
    const code = await agent.stop(); // SIGTERM
    const took = Date.now() - t0;
    t.log(`SIGTERM → exit ${code} in ${took} ms with ${depth} spans queued`);
    t.is(code, 0, agent.output());
    t.true(took < EXIT_DEADLINE_MS, `exited in ${took} ms < ${EXIT_DEADLINE_MS} ms`);
    const spans = await collector.waitForSpans((s) => s.filter((x) => String(x.attributes['url.path'] ?? x.attributes['url.full']).includes('/ok/shutdown')).length >= REQUESTS * 2, 5000);
    const ours = spans.filter((x) => String(x.attributes['url.path'] ?? x.attributes['url.full']).includes('/ok/shutdown'));
    t.is(ours.length, REQUESTS * 2, 'every queued span delivered by the shutdown flush');
    t.deepEqual(await stillLoaded(progs), [], 'every BPF program freed');
    t.deepEqual(await mapsStillThere(maps), [], 'every BPF map freed');
    t.regex(agent.output(), /SIGTERM: flushing and detaching/);
    t.regex(agent.output(), new RegExp(`span export at stop: received ${REQUESTS * 2}, exported ${REQUESTS * 2}, dropped 0 \\(queue full\\) \\+ 0 `));
  } finally {
    await agent?.stop();
    await srv.stop();
    await collector.stop();
  }
});

test.serial('SIGTERM with the Collector unreachable: exits within the deadline, drops and counts, frees everything', async (t) => {
  if (!need(t, unavailable)) return;
  const srv = await startNodeServer();
  const deadPort = await freePort(); // nothing listens here
  let agent: Awaited<ReturnType<typeof startAgentProcess>> | undefined;
  try {
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${deadPort}` }, ['--config', config(srv.port)]);
    const progs = progIdsHeldBy(agent.pid);
    await nodeFetch(Array.from({ length: 20 }, (_, i) => `http://127.0.0.1:${srv.port}/ok/dead${i}`));
    const end = Date.now() + 15_000;
    while (Date.now() < end && ((await healthz(agent.healthUrl)).export.depth as number) < 40) await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    const code = await agent.stop();
    const took = Date.now() - t0;
    t.log(`SIGTERM with the collector down → exit ${code} in ${took} ms; last output: ${agent.output().trim().split('\n').slice(-3).join(' | ')}`);
    t.is(code, 0, agent.output());
    t.true(took < EXIT_DEADLINE_MS, `exited in ${took} ms < ${EXIT_DEADLINE_MS} ms`);
    // nothing delivered, every queued span accounted for as dropped
    const m = /span export at stop: received (\d+), exported 0, dropped 0 \(queue full\) \+ (\d+) \(export failed or shutdown deadline\), left (\d+)/.exec(agent.output());
    t.truthy(m, 'the agent says what it dropped at stop');
    if (m) t.is(Number(m[2]) + Number(m[3]), Number(m[1]), 'every received span is dropped-and-counted or reported as left');
    t.deepEqual(await stillLoaded(progs), [], 'every BPF program freed');
  } finally {
    await agent?.stop();
    await srv.stop();
  }
});
