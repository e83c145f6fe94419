/**
 * Reliability under a backend outage and under overload (issue 10, items 1 and 2), with
 * `bin/sidelight run`, a real Collector, real servers and a real load generator.
 *
 *  - Outage: the Collector is down for OUTAGE_S (CI 12 s; `make reliability` 60 s) while
 *    steady traffic runs; the agent's RSS is sampled against the DaemonSet's memory limit
 *    (deploy/kubernetes/sidelight.yaml, 512 MiB); after the Collector returns, the spans it
 *    holds are exactly those created minus those the agent counts as dropped.
 *  - Overload: the agent is held to 2% of one CPU (a cgroup v1 cpu controller quota), so a
 *    constant 5,000 requests/s against nginx (10,000 spans/s) is over 10x what it can process
 *    and export (asserted: exported ≤ a tenth of the spans the traffic makes); throughout, its
 *    health endpoint answers within the DaemonSet's liveness-probe timeout (probed every 2 s:
 *    batches are processed in time slices, so I/O keeps its turn); its RSS
 *    stays within the budget, the losses are counted (ring buffer) and exported on /metrics,
 *    and the application's throughput holds (rategen, bench/tools).
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { repoRoot } from '../../src/paths.js';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector, type CollectorSpan, type RunningCollector } from '../helpers/collector.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { startNginx, startPythonServer } from '../helpers/servers.js';
import { parsePrometheus } from '../helpers/prom.js';

const FULL = process.env.SIDELIGHT_RELIABILITY_FULL === '1';
const OUTAGE_S = FULL ? 60 : 12;
const OVERLOAD_S = FULL ? 60 : 10;
const RSS_BUDGET_MIB = 512; // the DaemonSet's memory limit
const CPU_CG = '/sys/fs/cgroup/cpu';
/** the DaemonSet's livenessProbe timeoutSeconds (deploy/kubernetes/sidelight.yaml) */
const PROBE_TIMEOUT_S = 5;

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

function config(lines: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'sl-outage-'));
  writeFileSync(join(dir, 'c.yaml'), lines);
  return join(dir, 'c.yaml');
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

async function metrics(agent: AgentProcess): Promise<(name: string, labels?: Record<string, string>) => number> {
  const r = await fetch(`${agent.healthUrl}/metrics`, { signal: AbortSignal.timeout(20_000) });
  const samples = parsePrometheus(await r.text());
  return (name, labels = {}) => samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}

const DROPS = ['queue_full', 'queue_bytes_full', 'export_failed', 'rejected_by_backend'];

/** Steady keep-alive HTTP requests from this process at ~rps until stop() (Node fetch). */
function steadyTraffic(port: number, rps: number): { stop: () => Promise<number> } {
  let sent = 0;
  let running = true;
  const loop = (async () => {
    const start = Date.now();
    while (running) {
      const due = start + (sent * 1000) / rps;
      const wait = due - Date.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      sent++;
      await fetch(`http://127.0.0.1:${port}/hello.txt`).then((r) => r.arrayBuffer()).catch(() => undefined);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return sent;
    },
  };
}

test.serial(`Collector down ${OUTAGE_S} s under steady traffic: RSS within budget; afterwards delivered = created - dropped, exactly`, async (t) => {
  if (!need(t, unavailable)) return;
  let collector: RunningCollector = await startCollector();
  const ports = { grpc: Number(new URL(collector.grpcEndpoint).port), http: Number(new URL(collector.httpEndpoint).port) };
  const srv = await startPythonServer();
  // a queue budget smaller than the outage's spans: some are kept, the rest dropped (counted)
  const QUEUE = 600;
  const agent = await startAgentProcess(
    { OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
    ['--config', config(`filter:\n  ports:\n    include: [${srv.port}]\nexport:\n  batch:\n    maxSpans: 100\n    queueSpans: ${QUEUE}\n    delayMs: 200\n  retry:\n    initialMs: 200\n    maxMs: 2000\n    maxElapsedMs: ${(OUTAGE_S + 120) * 1000}\n`)],
  );
  const ours = (s: CollectorSpan): boolean => s.attributes['server.port'] === srv.port;
  let peak = 0;
  let alive = true;
  let spans: CollectorSpan[] = [];
  let m: Awaited<ReturnType<typeof metrics>> | undefined;
  let sent = 0;
  let beforeOutage = 0;
  try {
    const traffic0 = steadyTraffic(srv.port, 60);
    await new Promise((r) => setTimeout(r, 2000));
    await collector.stop();
    // what the first Collector acknowledged before it went (nothing is exported while it is down)
    beforeOutage = (await metrics(agent))('sidelight_spans_exported_total');
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, rssMiB(agent.pid));
      } catch {
        alive = false;
      }
    }, 500);
    await new Promise((r) => setTimeout(r, OUTAGE_S * 1000));
    sent = await traffic0.stop();
    clearInterval(sampler);
    collector = await startCollector({ ports });
    // drained: every created span is exported or counted as dropped
    const end = Date.now() + 60_000;
    for (;;) {
      m = await metrics(agent);
      const done = m('sidelight_spans_exported_total') + DROPS.reduce((a, r) => a + m!('sidelight_drops_total', { reason: r }), 0);
      if ((done === m('sidelight_spans_created_total') && m('sidelight_export_queue_spans') === 0) || Date.now() > end) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    // the Collector writes its file in batches: wait for what the agent says it exported since
    const exported = m!('sidelight_spans_exported_total') - beforeOutage;
    const second = collector;
    spans = (await second.waitForSpans((all) => all.filter(ours).length >= exported, 20_000).catch(() => second.spans())).filter(ours);
    alive = alive && (await fetch(`${agent.healthUrl}/healthz`)).status === 200;
  } finally {
    await agent.stop();
    await collector.stop();
    await srv.stop();
  }
  const created = m!('sidelight_spans_created_total');
  const dropped = DROPS.reduce((a, r) => a + m!('sidelight_drops_total', { reason: r }), 0);
  t.log(`outage ${OUTAGE_S} s: requests ${sent}, spans created ${created}, exported ${m!('sidelight_spans_exported_total')}, delivered ${beforeOutage} before + ${spans.length} after, dropped ${dropped} (queue_full ${m!('sidelight_drops_total', { reason: 'queue_full' })}), peak RSS ${peak.toFixed(0)} MiB`);
  t.true(alive, 'the agent stayed up and healthy');
  t.true(peak > 0 && peak <= RSS_BUDGET_MIB, `peak RSS ${peak.toFixed(0)} MiB within ${RSS_BUDGET_MIB} MiB`);
  t.true(created >= sent * 2 * 0.95, `both ends of (nearly) every request became spans: ${created} for ${sent} requests`);
  t.true(dropped > 0, 'the outage produced more spans than the queue budget: some were dropped');
  t.is(beforeOutage + spans.length, created - dropped, 'acknowledged before the outage + delivered after recovery = created - dropped, exactly');
  t.true(spans.length >= QUEUE, `at least the queue budget was kept and delivered after recovery (${spans.length} >= ${QUEUE})`);
});

test.serial(`overload: the agent held to 2% of a CPU under 5,000 requests/s for ${OVERLOAD_S} s: health answers throughout, bounded, losses counted and exported, the app unaffected`, async (t) => {
  if (!need(t, unavailable ?? (existsSync(`${CPU_CG}/cpu.cfs_quota_us`) ? undefined : 'no cgroup v1 cpu controller to hold the agent'))) return;
  const rategen = join(repoRoot(), 'bench', '.build', 'rategen');
  if (!existsSync(rategen) || statSync(rategen).mtimeMs < statSync(join(repoRoot(), 'bench/tools/rategen.c')).mtimeMs) {
    mkdirSync(join(repoRoot(), 'bench', '.build'), { recursive: true });
    execFileSync('cc', ['-O2', '-o', rategen, join(repoRoot(), 'bench/tools/rategen.c')]);
  }
  const collector = await startCollector();
  const nginx = await startNginx();
  const cg = `${CPU_CG}/sidelight-overload-${process.pid}`;
  mkdirSync(cg, { recursive: true });
  writeFileSync(`${cg}/cpu.cfs_period_us`, '100000');
  writeFileSync(`${cg}/cpu.cfs_quota_us`, '2000');
  const RATE = 5000;
  // asynchronous, so the RSS sampler keeps running while the load does
  const load = async (): Promise<{ achievedRps: number; completed: number; errors: number; sentTotal: number }> => {
    const p = spawn(rategen, ['-p', String(nginx.port), '-r', String(RATE), '-d', String(OVERLOAD_S), '-c', '16', '-w', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((r) => p.once('exit', r));
    if (code !== 0) throw new Error(`rategen exited ${code}: ${err}`);
    return JSON.parse(out) as { achievedRps: number; completed: number; errors: number; sentTotal: number };
  };
  let agent: AgentProcess | undefined;
  let peak = 0;
  let m: Awaited<ReturnType<typeof metrics>> | undefined;
  let res: Awaited<ReturnType<typeof load>> | undefined;
  let alive = false;
  const probes: { ok: boolean; ms: number }[] = [];
  try {
    agent = await startAgentProcess(
      { OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
      ['--config', config(`filter:\n  ports:\n    include: [${nginx.port}]\ncapture:\n  ringBufferBytes: 1048576\n`)],
    );
    writeFileSync(`${cg}/cgroup.procs`, String(agent.pid));
    const a = agent;
    const sampler = setInterval(() => {
      try {
        peak = Math.max(peak, rssMiB(a.pid));
      } catch {
        /* gone: asserted below */
      }
    }, 500);
    // the liveness probe's view: /healthz every 2 s while the load runs (as the kubelet does:
    // on a period, whether or not the last one has answered)
    const inFlight: Promise<void>[] = [];
    const probe = (): void => {
      const t0 = Date.now();
      inFlight.push(
        fetch(`${a.healthUrl}/healthz`, { signal: AbortSignal.timeout(PROBE_TIMEOUT_S * 1000) })
          .then((r) => r.status === 200)
          .catch(() => false)
          .then((ok) => void probes.push({ ok, ms: Date.now() - t0 })),
      );
    };
    const prober = setInterval(probe, 2000);
    res = await load();
    clearInterval(prober);
    await Promise.all(inFlight);
    clearInterval(sampler);
    alive = (await fetch(`${agent.healthUrl}/healthz`, { signal: AbortSignal.timeout(20_000) })).status === 200;
    m = await metrics(agent);
  } finally {
    await agent?.stop();
    await nginx.stop();
    await collector.stop();
    for (let i = 0; i < 50; i++) {
      try {
        rmdirSync(cg);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  const lost = m!('sidelight_drops_total', { reason: 'ringbuf_full' }) + m!('sidelight_drops_total', { reason: 'queue_full' }) + m!('sidelight_drops_total', { reason: 'queue_bytes_full' });
  t.log(`overload: app ${res!.achievedRps.toFixed(0)} rps of ${RATE} (errors ${res!.errors}); kernel events ${m!('sidelight_kernel_events_total')}, received ${m!('sidelight_events_received_total')}, spans created ${m!('sidelight_spans_created_total')}; exported ${m!('sidelight_spans_exported_total')} of ${res!.sentTotal * 2} demanded; lost ${lost} (ring buffer ${m!('sidelight_drops_total', { reason: 'ringbuf_full' })}); peak RSS ${peak.toFixed(0)} MiB`);
  t.log(`health probes during the overload: ${probes.filter((p) => p.ok).length} of ${probes.length} answered; slowest ${Math.max(...probes.map((p) => p.ms))} ms`);
  t.true(probes.length >= OVERLOAD_S / 2 - 1, `probed ${probes.length} times`);
  t.true(probes.every((p) => p.ok), `every probe answered within ${PROBE_TIMEOUT_S} s: ${JSON.stringify(probes)}`);
  t.true(alive, 'the agent answers /healthz after the overload');
  t.true(peak > 0 && peak <= RSS_BUDGET_MIB, `peak RSS ${peak.toFixed(0)} MiB within ${RSS_BUDGET_MIB} MiB`);
  t.true(lost > 0, 'what the agent could not process is counted as dropped, and exported on /metrics');
  const demanded = res!.sentTotal * 2; // a SERVER and a CLIENT span per request
  t.true(m!('sidelight_spans_exported_total') * 10 <= demanded, `over 10x what the agent exports: ${m!('sidelight_spans_exported_total')} exported of ${demanded} spans`);
  t.true(res!.achievedRps >= RATE * 0.95, `the application kept its rate: ${res!.achievedRps.toFixed(0)} of ${RATE} rps`);
  t.is(res!.errors, 0);
});
