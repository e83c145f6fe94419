/**
 * Reliability (issue #10, item 6): process churn. Thousands of short-lived processes (a shell
 * loop of curl, and of python3 -c connects) each open a connection to a real nginx and exit,
 * while the agent (`bin/sidelight run`, limits.processes 64) traces it. Sizes are sampled every
 * 500 ms — connection table, process cache, the BPF hash maps, RSS — and must stay within
 * their bounds throughout, then settle: the connection table and the in-flight syscall map
 * empty, the process cache at or under its bound with every eviction counted, RSS flat.
 *
 * CI size: 800 processes (600 curl, 200 python); `SIDELIGHT_RELIABILITY_FULL=1` (`make reliability`): 20 000.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { startAgentProcess } from '../helpers/agentproc.js';
import { mapsHeldBy } from '../helpers/bpf.js';
import { healthz, rssBytes } from '../helpers/hostile.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { startNginx } from '../helpers/servers.js';

const FULL = process.env.SIDELIGHT_RELIABILITY_FULL === '1';
const PROCESSES = FULL ? 20_000 : 800;
const MAX_PROCESSES = 64;
const unavailable = kernelUnavailable();

interface Sample {
  t: number;
  connections: number;
  processes: number;
  evicted: number;
  inflight: number;
  procsMap: number;
  procsMapMax: number;
  rssMiB: number;
}

function shell(script: string): Promise<number | null> {
  return new Promise((resolve) => {
    const p = spawn('bash', ['-c', script], { stdio: 'ignore' });
    p.on('exit', (code) => resolve(code));
  });
}

test.serial(`${PROCESSES} short-lived processes, one connection each: tables bounded throughout, settled after`, async (t) => {
  if (!need(t, unavailable)) return;
  t.timeout(FULL ? 1_800_000 : 120_000);
  const nginx = await startNginx();
  const dir = mkdtempSync(join(tmpdir(), 'sl-churn-'));
  writeFileSync(join(dir, 'a.yaml'), `filter:\n  ports:\n    include: [${nginx.port}]\nlimits:\n  processes: ${MAX_PROCESSES}\n`);
  const agent = await startAgentProcess({}, ['--config', join(dir, 'a.yaml')]);
  const samples: Sample[] = [];
  const sample = async (): Promise<Sample> => {
    const h = await healthz(agent.healthUrl);
    const maps = mapsHeldBy(agent.pid);
    const s: Sample = {
      t: Date.now(),
      connections: h.connections.size,
      processes: h.processes.size,
      evicted: h.processes.evicted,
      inflight: maps.sl_inflight?.entries ?? -1,
      procsMap: maps.sl_procs?.entries ?? -1,
      procsMapMax: maps.sl_procs?.maxEntries ?? -1,
      rssMiB: Math.round(rssBytes(agent.pid) / 2 ** 20),
    };
    samples.push(s);
    return s;
  };
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await sample();
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  try {
    const base = await sample();
    const curls = (PROCESSES * 3) / 4;
    const pythons = PROCESSES - curls;
    // curl: 16 at a time; python: a connect, one request line, exit (slower to start: a quarter)
    const curlCode = await shell(`for i in $(seq ${curls}); do curl -s -o /dev/null http://127.0.0.1:${nginx.port}/p$i & if (( i % 16 == 0 )); then wait; fi; done; wait`);
    const pyCode = await shell(
      `for i in $(seq ${pythons}); do /usr/bin/python3 -S -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",${nginx.port})); s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n"); s.recv(100); s.close()' & if (( i % 8 == 0 )); then wait; fi; done; wait`,
    );
    t.is(curlCode, 0);
    t.is(pyCode, 0);
    // settle: the last spans assembled, the closes processed
    let last = await sample();
    const end = Date.now() + 10_000;
    while (Date.now() < end && (last.connections > 0 || last.inflight > 2)) {
      await new Promise((r) => setTimeout(r, 500));
      last = await sample();
    }
    sampling = false;
    await sampler;
    const h = await healthz(agent.healthUrl);
    const peak = (k: keyof Sample): number => Math.max(...samples.map((s) => s[k]));
    t.log(`${PROCESSES} processes in ${((last.t - base.t) / 1000).toFixed(1)} s; ${samples.length} samples`);
    t.log(`connections: peak ${peak('connections')}, last ${last.connections}; opened ${h.connections.opened}, closed ${h.connections.closed}`);
    t.log(`process cache: peak ${peak('processes')} (bound ${MAX_PROCESSES}), evicted ${h.processes.evicted}, lookups ${h.processes.lookups}, procReads ${h.processes.procReads}, fromKernel ${h.processes.fromKernel}`);
    t.log(`sl_inflight: peak ${peak('inflight')}, last ${last.inflight}; sl_procs: ${base.procsMap} → ${last.procsMap} (max ${last.procsMapMax}, LRU: one entry per process seen, kept until evicted)`);
    t.log(`rss: first ${samples[0]!.rssMiB} MiB, peak ${peak('rssMiB')} MiB, last ${last.rssMiB} MiB`);
    t.log(`server spans: ${h.connections.http.spans}; trace tables ${JSON.stringify(h.connections.trace)}; dns pending ${h.dns.pending}`);

    t.true(peak('processes') <= MAX_PROCESSES, 'the process cache never exceeds limits.processes');
    t.true(h.processes.evicted >= PROCESSES - MAX_PROCESSES, `every process beyond the bound is an eviction, counted (${h.processes.evicted})`);
    t.is(last.connections, 0, 'the connection table is empty once every process is gone');
    t.true(last.inflight <= 2, `the in-flight syscall map is empty again (${last.inflight})`);
    t.true(samples.every((s) => s.procsMap <= s.procsMapMax), 'sl_procs within its bound');
    t.true(last.procsMap - base.procsMap <= PROCESSES + 16, 'sl_procs: at most one entry per process');
    t.true(h.connections.http.spans >= PROCESSES, `every request became a span (${h.connections.http.spans})`);
    // RSS: after the churn within 64 MiB of the highest point reached in the first quarter
    const warm = samples.slice(0, Math.max(2, Math.floor(samples.length / 4)));
    const warmPeak = Math.max(...warm.map((s) => s.rssMiB));
    t.true(last.rssMiB <= warmPeak + 64, `RSS flat: last ${last.rssMiB} MiB vs ${warmPeak} MiB early`);
  } finally {
    sampling = false;
    await sampler;
    await agent.stop();
    await nginx.stop();
  }
});
