/**
 * Reliability (issue #10, item 6): process churn. Thousands of short-lived processes (a shell
 * loop of curl, and of python3 -c connects) each open a connection to a real nginx and exit,
 * while the agent (`bin/sidelight run`, limits.processes 64) traces it. Sizes are sampled every
 * 500 ms — connection table, process cache, the BPF hash maps, RSS — and must stay within
 * their bounds throughout, then settle: the connection table and the in-flight syscall map
 * empty, the process cache at or under its bound with every eviction counted, RSS flat.
 *
 * Metrics are exported to a real Collector (every 500 ms, workloads idle 1 s expire; series per
 * workload 16, since nginx sees a new path per request and its file would grow huge): each
 * short-lived process is a metric workload of its own (process.pid), so the per-workload
 * metric stores must stay within limits.processes and then empty once everything is idle,
 * every dropped workload counted (healthz and GET /metrics). The V8 heap is sampled too: the
 * RSS growth this test was written for (155 → 286 MiB at 20 000 processes) was V8's young
 * generation growing to 2 × 64 MiB with the live heap flat, and glibc's main heap fragmenting;
 * bin/sidelight caps the first (16 MiB semi-spaces) and mmaps large buffers.
 *
 * CI size: 800 processes (600 curl, 200 python); `SIDELIGHT_RELIABILITY_FULL=1` (`make reliability`): 20 000.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { startAgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector } from '../helpers/collector.js';
import { mapsHeldBy } from '../helpers/bpf.js';
import { healthz, rssBytes } from '../helpers/hostile.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { startNginx } from '../helpers/servers.js';

const FULL = process.env.SIDELIGHT_RELIABILITY_FULL === '1';
const PROCESSES = FULL ? 20_000 : 800;
const MAX_PROCESSES = 64;
/** metric export interval; workloads expire after two (at full size fewer rounds: the Collector writes every point to a file) */
const INTERVAL_MS = FULL ? 2000 : 500;
const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

interface Sample {
  t: number;
  connections: number;
  processes: number;
  evicted: number;
  procsMap: number;
  procsMapMax: number;
  rssMiB: number;
  /** V8 heap reserved (process.memoryUsage().heapTotal) */
  heapMiB: number;
  /** its young generation (reserved) */
  youngMiB: number;
  /** workloads held by the request and TCP metric stores */
  metricWorkloads: number;
  tcpWorkloads: number;
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
  const collector = await startCollector();
  const dir = mkdtempSync(join(tmpdir(), 'sl-churn-'));
  writeFileSync(join(dir, 'a.yaml'), `filter:\n  ports:\n    include: [${nginx.port}]\nlimits:\n  processes: ${MAX_PROCESSES}\nexport:\n  metricsIdleMs: ${2 * INTERVAL_MS}\n  maxSeries: 16\n`);
  // metrics only (spans stay on the console, as before): OTLP/gRPC to the Collector
  const agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: collector.grpcEndpoint, OTEL_METRIC_EXPORT_INTERVAL: String(INTERVAL_MS) }, ['--config', join(dir, 'a.yaml')]);
  const samples: Sample[] = [];
  const sample = async (): Promise<Sample> => {
    const h = await healthz(agent.healthUrl);
    const maps = mapsHeldBy(agent.pid);
    const s: Sample = {
      t: Date.now(),
      connections: h.connections.size,
      processes: h.processes.size,
      evicted: h.processes.evicted,
      procsMap: maps.sl_procs?.entries ?? -1,
      procsMapMax: maps.sl_procs?.maxEntries ?? -1,
      rssMiB: Math.round(rssBytes(agent.pid) / 2 ** 20),
      heapMiB: Math.round(h.memory.heapTotal / 2 ** 20),
      youngMiB: Math.round(h.memory.youngGeneration / 2 ** 20),
      metricWorkloads: h.metrics.workloads,
      tcpWorkloads: h.tcp.metrics.workloads,
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
    while (Date.now() < end && last.connections > 0) {
      await new Promise((r) => setTimeout(r, 500));
      last = await sample();
    }
    // metric workloads: all idle now; expired once idle for metricsIdleMs (two intervals), after a last export
    const idleEnd = Date.now() + 5 * INTERVAL_MS + 5_000;
    while (Date.now() < idleEnd && (last.metricWorkloads > 0 || last.tcpWorkloads > 0)) {
      await new Promise((r) => setTimeout(r, 500));
      last = await sample();
    }
    sampling = false;
    await sampler;
    const h = await healthz(agent.healthUrl);
    const prom = await (await fetch(`${agent.healthUrl}/metrics`)).text();
    const promValue = (line: string): number => Number(prom.split('\n').find((l) => l.startsWith(`${line} `))?.slice(line.length + 1) ?? NaN);
    // the curl workloads whose request duration reached the Collector (cumulative points, one per export)
    const exportedPids = new Set((await collector.metrics()).filter((m) => m.name === 'http.client.request.duration').map((m) => m.resource['process.pid']));
    const peak = (k: keyof Sample): number => Math.max(...samples.map((s) => s[k]));
    t.log(`${PROCESSES} processes in ${((last.t - base.t) / 1000).toFixed(1)} s; ${samples.length} samples`);
    t.log(`connections: peak ${peak('connections')}, last ${last.connections}; opened ${h.connections.opened}, closed ${h.connections.closed}`);
    t.log(`process cache: peak ${peak('processes')} (bound ${MAX_PROCESSES}), evicted ${h.processes.evicted}, lookups ${h.processes.lookups}, procReads ${h.processes.procReads}, fromKernel ${h.processes.fromKernel}`);
    const inflightType = mapsHeldBy(agent.pid).sl_inflight?.type;
    t.log(`sl_inflight: ${inflightType} (an entry per thread, freed with it); sl_procs: ${base.procsMap} → ${last.procsMap} (max ${last.procsMapMax}, LRU: one entry per process seen, kept until evicted)`);
    t.log(`rss: first ${samples[0]!.rssMiB} MiB, peak ${peak('rssMiB')} MiB, last ${last.rssMiB} MiB`);
    t.log(`server spans: ${h.connections.http.spans}; trace tables ${JSON.stringify(h.connections.trace)}; dns pending ${h.dns.pending}`);
    t.log(`V8 heap reserved: first ${samples[0]!.heapMiB} MiB, peak ${peak('heapMiB')} MiB, last ${last.heapMiB} MiB; young generation peak ${peak('youngMiB')} MiB`);
    t.log(`metric workloads: peak ${peak('metricWorkloads')} (bound ${MAX_PROCESSES}), last ${last.metricWorkloads}; evicted ${h.metrics.workloadsEvicted}, expired ${h.metrics.workloadsExpired}; series ${h.metrics.series}; exports ${h.metrics.exports}, failures ${h.metrics.failures}`);
    t.log(`tcp metric workloads: peak ${peak('tcpWorkloads')}, last ${last.tcpWorkloads}; evicted ${h.tcp.metrics.workloadsEvicted}, expired ${h.tcp.metrics.workloadsExpired}`);
    t.log(`client workloads exported to the Collector: ${exportedPids.size} distinct pids`);

    t.true(peak('processes') <= MAX_PROCESSES, 'the process cache never exceeds limits.processes');
    t.true(h.processes.evicted >= PROCESSES - MAX_PROCESSES, `every process beyond the bound is an eviction, counted (${h.processes.evicted})`);
    t.is(last.connections, 0, 'the connection table is empty once every process is gone');
    t.is(inflightType, 'task_storage', 'in-flight syscalls live in task-local storage: an entry dies with its thread, so none can be left behind');
    t.true(samples.every((s) => s.procsMap <= s.procsMapMax), 'sl_procs within its bound');
    t.true(last.procsMap - base.procsMap <= PROCESSES + 16, 'sl_procs: at most one entry per process');
    t.true(h.connections.http.spans >= PROCESSES, `every request became a span (${h.connections.http.spans})`);
    // RSS: after the churn within 64 MiB of the highest point reached in the first quarter
    const warm = samples.slice(0, Math.max(2, Math.floor(samples.length / 4)));
    const warmPeak = Math.max(...warm.map((s) => s.rssMiB));
    t.true(last.rssMiB <= warmPeak + 64, `RSS flat: last ${last.rssMiB} MiB vs ${warmPeak} MiB early`);
    // the young generation is capped by bin/sidelight (2 x 16 MiB semi-spaces; uncapped it grew to 128 MiB)
    t.true(peak('youngMiB') <= 32, `V8 young generation capped: peak ${peak('youngMiB')} MiB`);
    // per-workload metric state: bounded throughout, empty once idle, every dropped workload counted
    t.true(peak('metricWorkloads') <= MAX_PROCESSES && peak('tcpWorkloads') <= MAX_PROCESSES, 'metric workloads within limits.processes');
    t.is(last.metricWorkloads, 0, 'every idle workload expired');
    t.is(last.tcpWorkloads, 0, 'every idle TCP workload expired');
    t.is(h.metrics.series, 0, 'no series left');
    const dropped = h.metrics.workloadsEvicted + h.metrics.workloadsExpired;
    t.true(dropped >= PROCESSES, `one workload per process, each dropped once and counted (${dropped})`);
    t.true(h.metrics.workloadsExpired > 0, 'idle workloads expired (not only evicted)');
    t.is(h.metrics.failures, 0, 'metric exports succeeded');
    // With 64 workloads held, how long a workload stays in the store before it is evicted is
    // 64 / (processes per second): the share exported first depends on the machine's speed
    // (here ~80% at CI size, ~25% at full size). Asserted: exports keep up with churn at all;
    // every drop is counted above.
    t.true(exportedPids.size >= PROCESSES / 10, `short-lived workloads were exported before being dropped (${exportedPids.size})`);
    t.is(promValue('sidelight_metrics_workloads{store="requests"}'), 0);
    t.is(promValue('sidelight_metrics_workloads_dropped_total{store="requests",reason="evicted"}'), h.metrics.workloadsEvicted);
    t.is(promValue('sidelight_metrics_workloads_dropped_total{store="requests",reason="expired"}'), h.metrics.workloadsExpired);
    t.true(promValue('sidelight_memory_heap_size_bytes') > 0);
  } finally {
    sampling = false;
    await sampler;
    await agent.stop();
    await nginx.stop();
    await collector.stop();
  }
});
