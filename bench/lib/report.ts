/**
 * report.ts (bench) — renders results.md and machine.md from the results object bench.ts
 * writes as results.json. Pure functions of that object.
 */
import type { AgentSummary, Arm, ArmRun, LatencySummary, Results } from '../bench.js';
import type { FloorPair, HookFloor } from './floor.js';
import { median } from './util.js';

const ARMS: Arm[] = ['A', 'B', 'C', 'D'];
const NAMES: Record<Arm, string> = {
  A: 'no agent',
  B: 'Sidelight, 100% of spans exported',
  C: 'sidecar-style L7 proxy (nginx + access log)',
  D: 'Sidelight attached, server filtered out',
};

function f(x: number | null | undefined, digits = 0): string {
  if (x === null || x === undefined || !Number.isFinite(x)) return '–';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
function ratio(x: number): string {
  return Number.isFinite(x) ? x.toFixed(3) : '–';
}
function pct(r: number): string {
  if (!Number.isFinite(r)) return '–';
  if (r >= 10) return `×${f(r)}`;
  const p = (r - 1) * 100;
  return `${p >= 0 ? '+' : ''}${p.toFixed(1)}%`;
}
function met(ok: boolean | undefined): string {
  return ok === undefined ? 'not measured' : ok ? '**met**' : '**not met**';
}

interface KernelToJs {
  drain?: Record<string, number>;
  live?: Record<string, number>;
  error?: string;
}
type PipelineMicro = { error?: string; variants: Record<string, Record<string, number>> };

export function renderResults(r: Results, linkPrefix: string): string {
  const s = r.summary;
  const c = r.meta.config;
  const L: string[] = [];
  const t10 = s.targets[0];
  const t20 = s.targets.at(-1);
  const k = r.micro.kernelToJs as KernelToJs;
  const pm = r.micro.pipeline as Record<string, unknown>;
  const p: PipelineMicro = typeof pm.error === 'string' ? { error: pm.error, variants: {} } : { variants: pm as Record<string, Record<string, number>> };
  const B = s.arms.B;
  const bT = s.agent.B.throughput;
  const bF = s.agent.B.fixed;
  const bL = s.agent.B.low;
  // absent in results.json written before the hook floor existed; { error } if it failed
  const hf = r.micro.hookFloor;
  const floor: HookFloor | undefined = hf && !('error' in hf) ? hf : undefined;
  // tail phase (absent before it existed): B's p99 at lowRate with the agent and the Collector in an idle cgroup
  const tail = r.runs.filter((x) => x.phase === 'tail' && x.rate && x.agent);
  const idleRuns = tail.filter((x) => x.sched === 'idle');
  const idleP99 = idleRuns.length ? median(idleRuns.map((x) => x.rate!.p99Us)) : undefined;

  L.push(`# Sidelight benchmark — ${r.meta.date.slice(0, 10)} (${r.meta.sha}, ${r.meta.mode} run)`);
  L.push('');
  if (r.meta.mode === 'smoke') {
    L.push('_Smoke run: a check that every part of the benchmark works, with a light load and one short round. Its numbers are not measurements._', '');
  }
  L.push(
    `Issue 9's benchmark: ${c.rounds} interleaved round(s) of arms A B C D on ${r.machine.nproc} vCPU (${r.machine.cpuModel}), ` +
      `loopback, nginx \`return 200\` (one worker, keep-alive). Throughput: wrk -t${c.threads} -c${c.conns}, ${c.seconds} s per arm. ` +
      `Latency: constant ${f(r.meta.fixedRate)} rps (50% of A's median throughput${r.meta.mode === 'smoke' ? ', capped at 5,000 in a smoke run' : ''}) and ${f(c.lowRate)} rps, ${c.rateSeconds} s per arm (first ${c.rateWarmupSeconds} s not recorded), ` +
      `${c.conns} connections, measured from each request's intended send time. **Ratios are from this one run; absolute numbers ` +
      `from different runs are not comparable** (shared, noisy vCPUs: ${f(s.steal.percent, 1)}% steal during the rounds; other processes used up to ` +
      `${f(Math.max(0, ...r.runs.map((x) => x.foreignCpuPercent ?? 0)), 1)}% of the machine during an arm, see Rounds). ` +
      `Machine: [machine.md](${linkPrefix}machine.md); raw numbers: [results.json](${linkPrefix}results.json). Run time ${f(r.meta.wallSeconds)} s.`,
  );
  L.push('');
  for (const e of r.errors ?? []) L.push(`**Failed:** ${e.split('\n')[0]}`, '');
  if (r.meta.chart) L.push(`![throughput and latency per arm](${linkPrefix}${r.meta.chart})`, '');
  else L.push(`_${r.meta.chartNote}_`, '');

  const lat = (x: LatencySummary): string => (x.sustained ? '' : ' ⚠');
  L.push('## Arms (medians over rounds)');
  L.push('');
  L.push(
    `| arm | | throughput (rps) | ratio to A | p50 at ${f(r.meta.fixedRate)} rps (µs) | vs A | p99 at ${f(r.meta.fixedRate)} rps (µs) | vs A | ` +
      `p50 at ${f(c.lowRate)} rps (µs) | vs A | p99 at ${f(c.lowRate)} rps (µs) | vs A |`,
  );
  L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const a of ARMS) {
    const x = s.arms[a];
    const vs = (v: number): string => (a === 'A' ? '' : pct(v));
    L.push(
      `| ${a} | ${NAMES[a]} | ${f(x.rpsMedian)} | ${ratio(x.rpsRatio)} | ` +
        `${f(x.fixed.p50UsMedian)}${lat(x.fixed)} | ${vs(x.fixed.p50Ratio)} | ${f(x.fixed.p99UsMedian)}${lat(x.fixed)} | ${vs(x.fixed.p99Ratio)} | ` +
        `${f(x.low.p50UsMedian)}${lat(x.low)} | ${vs(x.low.p50Ratio)} | ${f(x.low.p99UsMedian)}${lat(x.low)} | ${vs(x.low.p99Ratio)} |`,
    );
  }
  L.push('');
  const unsustained = ARMS.flatMap((a) =>
    (['fixed', 'low'] as const)
      .filter((ph) => !s.arms[a][ph].sustained)
      .map((ph) => `${a} at ${f(s.arms[a][ph].rate)} rps (achieved ${f(s.arms[a][ph].achievedMedian)}${s.arms[a][ph].unsent ? `, ${f(s.arms[a][ph].unsent)} never sent` : ''})`),
  );
  L.push(
    `Fixed rates: ${f(r.meta.fixedRate)} rps is issue 9's 50% of A's median throughput; ${f(c.lowRate)} rps is a second rate every arm should sustain here. ` +
      (unsustained.length
        ? `⚠ = the arm could not sustain the rate (its capacity on these 2 vCPUs is below it): requests queue, and latency measured from the intended send time grows with the length of the run, so those figures say "saturated", not how slow: ${unsustained.join('; ')}.`
        : 'Every arm sustained both rates.'),
  );
  L.push('');
  const cProxy = s.arms.C.proxyCpuUsPerRequest;
  L.push(
    `Sidecar cost (C/A): throughput ${ratio(s.arms.C.rpsRatio)}, p50 ${pct(s.arms.C.low.p50Ratio)} and p99 ${pct(s.arms.C.low.p99Ratio)} at ${f(c.lowRate)} rps` +
      (cProxy !== null ? `, plus ${f(cProxy, 1)} µs of proxy CPU per request.` : '.') +
      ` Sidelight (B/A): throughput ${ratio(B.rpsRatio)}, p50 ${pct(B.low.p50Ratio)} and p99 ${pct(B.low.p99Ratio)} at ${f(c.lowRate)} rps. ` +
      `Tracepoint tax alone (D/A): throughput ${ratio(s.arms.D.rpsRatio)}, p99 ${pct(s.arms.D.low.p99Ratio)} at ${f(c.lowRate)} rps. ` +
      `CPU of the origin nginx worker per request (max load): ${ARMS.map((a) => `${a} ${f(s.arms[a].originCpuUsPerRequest, 1)} µs`).join(', ')} ` +
      '(in B and D the probes run in the context of nginx and wrk, so their time shows up here).',
  );
  L.push('');

  L.push('## The agent (arms B and D)');
  L.push('');
  L.push(`| | B, max load (wrk) | B, ${f(r.meta.fixedRate)} rps | B, ${f(c.lowRate)} rps | D, max load | D, ${f(r.meta.fixedRate)} rps | D, ${f(c.lowRate)} rps |`);
  L.push('|---|---:|---:|---:|---:|---:|---:|');
  const cols: AgentSummary[] = [bT, bF, bL, s.agent.D.throughput, s.agent.D.fixed, s.agent.D.low];
  const row = (label: string, get: (a: AgentSummary) => string): void => {
    L.push(`| ${label} | ${cols.map(get).join(' | ')} |`);
  };
  row('agent CPU per request (µs)', (a) => f(a.cpuUsPerRequest, 2));
  row('agent CPU per exported span (µs)', (a) => f(a.cpuUsPerSpan, 2));
  row('BPF time per request (ns, all probe runs, system-wide)', (a) => f(a.bpfNsPerRequest));
  row('BPF time per probe run (ns)', (a) => f(a.bpfNsPerRun));
  row('agent RSS steady (MiB, median of 2nd half)', (a) => f(a.rssSteadyMiB, 1));
  row('agent RSS max sampled / VmHWM (MiB)', (a) => `${f(a.rssMaxMiB, 1)} / ${f(a.hwmMiB, 1)}`);
  row('ring buffer full (records lost)', (a) => f(a.ringbufFull));
  row('export queue full / export failed (spans)', (a) => `${f(a.droppedQueueFull)} / ${f(a.droppedExportFailed)}`);
  row('requests sent (all rounds)', (a) => f(a.requests));
  row('spans exported (all rounds)', (a) => f(a.exported));
  row('spans exported per request (2 expected: nginx SERVER + wrk CLIENT)', (a) => f(a.spansPerRequest, 3));
  row('Collector CPU per request (µs)', (a) => f(a.collectorCpuUsPerRequest, 2));
  L.push('');
  const overflowing = (
    [
      ['B at max load', bT],
      [`B at ${f(r.meta.fixedRate)} rps`, bF],
      [`B at ${f(c.lowRate)} rps`, bL],
    ] as const
  ).filter(([, a]) => a.spansPerRequest < 1.9);
  if (overflowing.length) {
    L.push(
      `Spans lost (all counted): ${overflowing.map(([n, a]) => `${n} ${f(a.exported)} of ~${f(a.requests * 2)} spans exported`).join('; ')}. ` +
        'There the agent cannot keep up and its export queue overflows, so CPU per *exported* span is its CPU divided by a small ' +
        'number; the steady-state cost is the column where every span was exported.',
    );
    L.push('');
  }
  L.push(
    'Agent CPU: utime+stime of the agent process (all threads) from /proc/<pid>/stat, from just before the load until the agent ' +
      'has drained (no new records or spans, almost nothing queued), divided by requests sent. BPF time: the sum of run_time_ns over the ' +
      "agent's probes (it enables BPF stats itself) over the same window; it counts every syscall of the machine that enters the " +
      "probes, not only the benchmark's. Both ends of each request run here, so a request is two spans (wrk is an HTTP/1 client " +
      'over TCP too, traced like any other). Requests = wrk\'s count, or every request rategen sent (warm-up included).',
  );
  L.push('');

  L.push('## Targets (issue 9)');
  L.push('');
  L.push('| measure | target | measured | |');
  L.push('|---|---|---|---|');
  L.push(`| throughput B/A | ≥ 0.95 | ${ratio(B.rpsRatio)} (${f(B.rpsMedian)} vs ${f(s.arms.A.rpsMedian)} rps) | ${met(Number.isFinite(B.rpsRatio) ? B.rpsRatio >= 0.95 : undefined)} |`);
  L.push(
    `| p99 at fixed 50% load, B vs A | ≤ +3% | ${pct(B.fixed.p99Ratio)} (${f(B.fixed.p99UsMedian)} vs ${f(s.arms.A.fixed.p99UsMedian)} µs at ${f(r.meta.fixedRate)} rps${B.fixed.sustained ? '' : `; B saturated: achieved ${f(B.fixed.achievedMedian)} rps`}); at ${f(c.lowRate)} rps ${pct(B.low.p99Ratio)}${idleP99 !== undefined ? ` (${pct(idleP99 / s.arms.A.low.p99UsMedian)} with the agent and the Collector in an idle cgroup: see "Where B's tail latency comes from")` : ''} | ${met(Number.isFinite(B.fixed.p99Ratio) ? B.fixed.p99Ratio <= 1.03 : undefined)} |`,
  );
  const bpfMax = Math.max(bT.bpfNsPerRequest, bF.bpfNsPerRequest);
  L.push(`| BPF time per HTTP request | ≤ 0.5 µs | ${f(bT.bpfNsPerRequest)} ns at max load, ${f(bF.bpfNsPerRequest)} ns at ${f(r.meta.fixedRate)} rps, ${f(bL.bpfNsPerRequest)} ns at ${f(c.lowRate)} rps (D, nothing recorded: ${f(s.agent.D.throughput.bpfNsPerRequest)} ns)${floor ? `; floor with empty programs: ${f(floor.empty.nsPerRequest)} ns at ${f(floor.rate)} rps (see Micro-benchmarks)` : ''} | ${met(Number.isFinite(bpfMax) ? bpfMax <= 500 : undefined)} |`);
  const cpuMax = Math.max(bT.cpuUsPerSpan, bF.cpuUsPerSpan, bL.cpuUsPerSpan);
  // the verdict stays with the rounds (a fresh agent per run); the targets phase's steady figures are shown beside them
  const steady = s.targets.filter((t) => t.agent && t.rate).map((t) => `${f(t.agent!.cpuUsPerSpan, 2)} µs at ${f(t.rate!.rate)} rps`);
  L.push(
    `| agent CPU per exported span | ≤ 10 µs | ${f(bL.cpuUsPerSpan, 2)} µs at ${f(c.lowRate)} rps, ${f(bF.cpuUsPerSpan, 2)} µs at ${f(r.meta.fixedRate)} rps, ${f(bT.cpuUsPerSpan, 2)} µs at max load (rounds: a fresh agent per run)${steady.length ? `; steady (targets phase${c.targetWarmupSeconds ? ', after its warm-up' : ''}): ${steady.join(', ')}` : ''} | ${met(Number.isFinite(cpuMax) ? cpuMax <= 10 : undefined)} |`,
  );
  const ceiling = k.drain?.recordsPerSec;
  L.push(`| kernel → JS ceiling | ≥ 1 M events/s | ${ceiling !== undefined ? `${f(ceiling / 1e6, 2)} M records/s (drain), ${f((k.live?.recordsPerSec ?? NaN) / 1e6, 2)} M/s live with one producer` : `failed: ${k.error ?? '?'}`} | ${met(ceiling !== undefined ? ceiling >= 1e6 : undefined)} |`);
  const rssRun = s.targets.find((t) => t.rate?.rate === 10_000) ?? t10;
  L.push(
    `| agent RSS steady at 10k rps | ≤ 100 MiB | ${rssRun?.agent ? `${f(rssRun.agent.rssSteadyMiB, 1)} MiB at ${f(rssRun.rate?.rate)} rps (max ${f(rssRun.agent.rssMaxMiB, 1)}); ${f(s.agent.D.low.rssSteadyMiB, 1)} MiB with nothing recorded (arm D)` : '–'} | ${met(rssRun?.agent ? rssRun.agent.rssSteadyMiB <= 100 : undefined)} |`,
  );
  const dropRun = s.targets.find((t) => t.rate?.rate === 20_000) ?? t20;
  const dr = dropRun?.agent;
  L.push(
    `| drops at 20k rps | 0 (and counted when not) | ${dr ? `${f(dr.drops)} at ${f(dropRun?.rate?.rate)} rps (ring buffer ${f(dr.kernel.ringbuf_full ?? 0)} records, export queue ${f(dr.droppedQueueFull)}, export failed ${f(dr.droppedExportFailed)} spans); all counted in /healthz` : '–'} | ${met(dr ? dr.drops === 0 : undefined)} |`,
  );
  const delayP99 = Math.max(...s.targets.map((t) => t.delay?.p99Ms ?? NaN));
  L.push(
    `| span visible at the sink after request end | p99 ≤ 2 s | ${s.targets.map((t) => `p99 ${f(t.delay?.p99Ms)} ms (p50 ${f(t.delay?.p50Ms)}) at ${f(t.rate?.rate)} rps`).join('; ')} | ${met(Number.isFinite(delayP99) ? delayP99 <= 2000 : undefined)} |`,
  );
  L.push(`| sidecar comparison C/A | reported | throughput ${ratio(s.arms.C.rpsRatio)}; p99 ${pct(s.arms.C.low.p99Ratio)} at ${f(c.lowRate)} rps, ${pct(s.arms.C.fixed.p99Ratio)} at ${f(r.meta.fixedRate)} rps | |`);
  L.push('');
  if (s.targets.length) {
    L.push(
      `Targets phase (arm B alone, one agent for both rates, exporting to the Collector's file exporter so arrival can be timed${c.targetWarmupSeconds ? `; the agent first ran ${c.targetWarmupSeconds} s at the first rate, not measured, so V8's one-time compilation of the hot paths is not charged to its spans (the rounds above start a fresh agent per run and include it)` : ''}):`,
    );
    L.push('');
    L.push('| rate | achieved | p99 (µs) | agent CPU µs/span | RSS steady / max (MiB) | drops | SERVER spans | CLIENT spans | requests | visible after end p50 / p99 / max (ms) |');
    L.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const t of s.targets) {
      const a = t.agent!;
      const d = t.delay!;
      L.push(
        `| ${f(t.rate?.rate)} | ${f(t.rate?.achievedRps)} | ${f(t.rate?.p99Us)} | ${f(a.cpuUsPerSpan, 2)} | ${f(a.rssSteadyMiB, 1)} / ${f(a.rssMaxMiB, 1)} | ${f(a.drops)} | ${f(d.serverSpans)} | ${f(d.clientSpans)} | ${f(t.requests)} | ${f(d.p50Ms)} / ${f(d.p99Ms)} / ${f(d.maxMs)} |`,
      );
    }
    L.push('');
    L.push(
      "Visible after end = when the Collector's file exporter output first covered the span (file size sampled every 20 ms; " +
        "the exporter flushes every 20 ms) minus the span's end time: the agent's ring-buffer poll (100 ms) and batching (2048 spans, 2 MiB " +
        'or 1 s), the gRPC export and the Collector; it overstates by up to ~40 ms. SERVER/CLIENT spans count those whose server.port is the origin.',
    );
    L.push('');
  }

  // where the agent's CPU and memory go (targets phase), and why the targets cannot all hold here
  const withThreads = s.targets.filter((t) => t.threadsUs && t.agent);
  if (withThreads.length) {
    const group = (name: string): string =>
      name === 'MainThread' || name === 'node' ? 'main thread (JS)' : name.startsWith('V8Worker') || name.startsWith('V8 ') ? 'V8 workers (GC)' : name.startsWith('libuv-worker') ? 'libuv pool' : name === 'sl-ringbuf' ? 'ring-buffer poll thread' : 'other threads';
    const groups = ['main thread (JS)', 'V8 workers (GC)', 'libuv pool', 'ring-buffer poll thread', 'other threads'];
    L.push("Where the agent's CPU goes (targets phase, per exported span, by thread, over the whole run: load, drain and the sink wait):");
    L.push('');
    L.push(`| rate | ${groups.join(' | ')} | total |`);
    L.push(`|---:|${groups.map(() => '---:').join('|')}|---:|`);
    for (const t of withThreads) {
      const by: Record<string, number> = {};
      for (const [k, v] of Object.entries(t.threadsUs!)) by[group(k)] = (by[group(k)] ?? 0) + v;
      const spans = Math.max(1, t.agent!.exported);
      const total = Object.values(by).reduce((a, b) => a + b, 0);
      L.push(`| ${f(t.rate?.rate)} | ${groups.map((g) => f((by[g] ?? 0) / spans, 2)).join(' | ')} | ${f(total / spans, 2)} |`);
    }
    L.push('');
  }
  const withMem = s.targets.filter((t) => t.memoryEnd);
  if (withMem.length) {
    L.push("The agent's resident memory at the end of each targets run, by kind of mapping (/proc/PID/smaps), MiB:");
    L.push('');
    L.push('| rate | node binary and shared libraries (file-backed, shared text) | BPF maps mmapped (the ring buffer, its pages mapped twice) | anonymous (V8 heap, malloc) | of which V8 heap reserved (young generation) | total |');
    L.push('|---:|---:|---:|---:|---:|---:|');
    for (const t of withMem) {
      const m = t.memoryEnd!;
      const mb = (x: number | undefined): string => (x === undefined ? '–' : f(x / 1048576, 1));
      L.push(`| ${f(t.rate?.rate)} | ${mb(m.files)} | ${mb(m.bpfMaps)} | ${mb(m.anonymous)} | ${mb(m.heapTotal)} (${mb(m.youngGeneration)}) | ${mb(m.files + m.bpfMaps + m.anonymous)} |`);
    }
    L.push('');
  }
  {
    // B/A bounds from this run's own numbers: at saturation the two vCPUs are busy with the load
    // generator, nginx and the kernel, so every µs the agent (or its probes) adds per request
    // comes out of the same budget
    const budgetUs = (r.machine.nproc * 1e6) / s.arms.A.rpsMedian;
    const bound = (extraUs: number): number => budgetUs / (budgetUs + extraUs);
    const floorUs = floor ? floor.empty.nsPerRequest / 1000 : NaN;
    const measuredUs = bL.bpfNsPerRequest / 1000 + 2 * bL.cpuUsPerSpan;
    L.push('### Why these targets cannot all hold on this machine (from this run\'s numbers)');
    L.push('');
    L.push(
      `At A's saturation the ${r.machine.nproc} vCPUs are spent on wrk, nginx and the kernel: ${f(budgetUs, 1)} µs of CPU per request. ` +
        'Whatever the agent adds per request (its probes run inside nginx and wrk; its own threads share the same CPUs) comes out of that budget, ' +
        'so B/A ≤ budget / (budget + added):',
    );
    L.push('');
    L.push('| added per request | µs | B/A at best |');
    L.push('|---|---:|---:|');
    if (floor) L.push(`| the empty tp_btf programs alone (hook floor; nothing recorded, nothing exported) | ${f(floorUs, 2)} | ${ratio(bound(floorUs))} |`);
    if (floor) L.push(`| the floor + 2 spans at the 10 µs/span target | ${f(floorUs + 20, 2)} | ${ratio(bound(floorUs + 20))} |`);
    L.push(`| measured at ${f(c.lowRate)} rps: BPF ${f(bL.bpfNsPerRequest / 1000, 2)} µs + 2 spans × ${f(bL.cpuUsPerSpan, 2)} µs | ${f(measuredUs, 2)} | ${ratio(bound(measuredUs))} (measured: ${ratio(B.rpsRatio)}${bT.spansPerRequest < 1.95 ? `, exporting ${f(bT.spansPerRequest, 2)} of the 2 spans per request: the rest were lost, counted, when the agent fell behind` : ''}) |`);
    L.push('');
    L.push(
      `So B/A ≥ 0.95 needs the agent's whole cost under ${f(budgetUs * (1 / 0.95 - 1), 2)} µs per request, ` +
        `${floor && floorUs > budgetUs * (1 / 0.95 - 1) ? 'less than the hook floor alone' : 'less than one span at the CPU target'}: ` +
        `the throughput, p99-at-50%-load and CPU-per-span targets contradict each other on ${r.machine.nproc} vCPUs where the agent ` +
        `exports every span of a ${f(s.arms.A.rpsMedian)}-rps server. At the fixed ${f(r.meta.fixedRate)} rps, exporting every span at the measured cost takes ` +
        `${f((r.meta.fixedRate * 2 * bL.cpuUsPerSpan) / 1e6, 2)} CPUs on top of the application's. ` +
        (floor && floor.empty.nsPerRequest > 500
          ? `The BPF target (≤ 0.5 µs) is below the hook floor itself (${f(floor.empty.nsPerRequest)} ns: ${f(floor.empty.runsPerRequest, 1)} program runs per request × ${f(floor.empty.nsPerRun, 1)} ns). `
          : `The BPF target (≤ 0.5 µs) leaves ${floor ? `${f(500 - floor.empty.nsPerRequest)} ns above the hook floor (${f(floor.empty.nsPerRequest)} ns: ${f(floor.empty.runsPerRequest, 1)} program runs per request × ${f(floor.empty.nsPerRun, 1)} ns) ` : 'little above the hook floor '}` +
            `for deciding per syscall whether to record it and recording it; with nothing recorded (arm D: every syscall filtered out) the probes already cost ${f(s.agent.D.throughput.bpfNsPerRequest)} ns per request at max load. `) +
        'The RSS target (≤ 100 MiB) is below the file-backed node binary plus the double-mapped 16 MiB ring buffer plus a V8 heap (table above).',
    );
    L.push('');
    if (tail.length) {
      const of = (sched: 'normal' | 'idle'): ArmRun[] => tail.filter((x) => x.sched === sched);
      const med = (xs: ArmRun[], g: (x: ArmRun) => number): number => (xs.length ? median(xs.map(g)) : NaN);
      const row = (label: string, xs: ArmRun[]): string =>
        `| ${label} | ${xs.length} | ${f(med(xs, (x) => x.rate!.p50Us))} | ${f(med(xs, (x) => x.rate!.p99Us))} | ${f(med(xs, (x) => x.agent!.cpuUsPerSpan ?? NaN), 2)} | ${f(med(xs, (x) => x.agent!.spansPerRequest), 3)} | ${f(med(xs, (x) => x.cpuUsPerRequest.collector ?? NaN), 2)} |`;
      const [n, i] = [of('normal'), of('idle')];
      L.push(`**Where B's tail latency comes from** (tail phase: B at ${f(c.lowRate)} rps, a fresh agent per run, interleaved; medians):`);
      L.push('');
      L.push('| run | runs | p50 (µs) | p99 (µs) | agent CPU µs/span | spans exported per request | Collector CPU µs/request |');
      L.push('|---|---:|---:|---:|---:|---:|---:|');
      L.push(`| A, no agent (the rounds) | ${s.arms.A.rounds} | ${f(s.arms.A.low.p50UsMedian)} | ${f(s.arms.A.low.p99UsMedian)} | – | – | – |`);
      L.push(row('B as in the rounds', n));
      L.push(row('B with the agent and the Collector in a cgroup with cpu.idle = 1', i));
      L.push('');
      L.push(
        'The same spans are recorded and exported either way. In an idle cgroup a waking application thread takes the CPU at once instead of ' +
          'waiting out the time slice of a running agent or Collector thread, so the p99 difference between the two B rows is CPU contention on the ' +
          `${r.machine.nproc} vCPUs (the agent and the Collector share them with the load generator and nginx), not time spent in the probes. ` +
          'A deployment gets the same by running the agent in an idle cgroup (systemd: `CPUWeight=idle`; Kubernetes has no setting for it). ' +
          "It is the operator's choice, not a default, because on a saturated node an idle agent falls behind and loses spans (counted) instead of slowing the application.",
      );
      L.push('');
    }
  }

  L.push('## Micro-benchmarks');
  L.push('');
  if (k.drain && k.live) {
    L.push(
      `**Kernel → JS through the addon** (real \`syscalls.bpf.o\`, default capture settings, records decoded by \`decodeBatch\`; ` +
        `producer: \`bench/tools/sockpump\` doing 100-byte write()+read() on a loopback TCP connection):`,
    );
    L.push('');
    L.push('| mode | records | records/s | MB/s | reader CPU ns/record | ring buffer drops |');
    L.push('|---|---:|---:|---:|---:|---:|');
    L.push(`| drain (ring filled first, then read: the reader's ceiling) | ${f(k.drain.recordsDecoded)} | ${f(k.drain.recordsPerSec)} | ${f(k.drain.MBPerSec, 1)} | ${f(k.drain.readerCpuNsPerRecord)} | ${f(k.drain.ringbufDrops)} |`);
    L.push(`| live (one producer and the reader together, ${f(k.live.seconds, 1)} s) | ${f(k.live.recordsDecoded)} | ${f(k.live.recordsPerSec)} | – | ${f(((k.live.readerCpuPercent ?? 0) / 100) * 1e9 / Math.max(1, k.live.recordsPerSec ?? 1))} | ${f(k.live.ringbufDrops)} |`);
    L.push('');
    L.push(`Live is bounded by the producer: ${f(k.live.pumpSyscallsPerSec)} socket syscalls/s with the probes attached.`);
  } else L.push(`Kernel → JS: failed: ${k.error ?? 'unknown'}`);
  L.push('');
  if (!p.error) {
    L.push(
      '**Receiver → export, no kernel** (synthetic ring-buffer batches of keep-alive HTTP/1.1, 4 records and 2 spans per request, ' +
        'through decodeBatch → ConnectionTable → ProcessCache → ExportPipeline → sink, one thread):',
    );
    L.push('');
    L.push('| sink | spans/s | CPU µs/span | bytes/span | queue drops |');
    L.push('|---|---:|---:|---:|---:|');
    const label: Record<string, string> = {
      receiver: 'none (spans counted as emitted by the connection table)',
      null: 'null (ExportPipeline → discard)',
      protobuf: 'OTLP protobuf (src/otlp/encode.ts), bytes discarded',
      'protobuf+gzip': 'OTLP protobuf + gzip, bytes discarded',
    };
    for (const [key, v] of Object.entries(p.variants)) {
      L.push(`| ${label[key] ?? key} | ${f(v.spansPerSec)} | ${f(v.cpuUsPerSpan, 2)} | ${f(v.bytesPerSpan)} | ${f(v.droppedQueueFull)} |`);
    }
  } else L.push(`Receiver → export: failed: ${p.error}`);
  L.push('');
  if (floor) {
    L.push(
      `**Hook floor: empty tp_btf sys_enter/sys_exit programs** (\`bench/tools/floor.bpf.c\`, loaded with the addon, BPF run-time stats on; ` +
        `load: rategen at ${f(floor.rate)} rps, ${floor.conns} connections → origin nginx, ${floor.loadSeconds} s per pair, one pair attached at a time):`,
    );
    L.push('');
    L.push('| programs | requests | syscalls per request (sys_enter runs) | runs per request (both) | ns per run | ns per request |');
    L.push('|---|---:|---:|---:|---:|---:|');
    const fr = (label: string, x: FloorPair): void => {
      L.push(`| ${label} | ${f(x.requests)} | ${f(x.syscallsPerRequest, 1)} | ${f(x.runsPerRequest, 1)} | ${f(x.nsPerRun, 1)} | ${f(x.nsPerRequest)} |`);
    };
    fr('empty (`return 0`): **the floor**', floor.empty);
    fr('syscall-number filter (compare with the socket syscalls, count matches)', floor.filter);
    L.push('');
    L.push(
      `Any design hooking these two tracepoints pays at least the empty row's ns per request on this machine, before doing anything; ` +
        `the agent measured ${f(bL.bpfNsPerRequest)} ns (B) and ${f(s.agent.D.low.bpfNsPerRequest)} ns (D) per request at ${f(c.lowRate)} rps. ` +
        'Like the agent\'s figure, it counts every syscall of the machine in the window and includes the kernel\'s bpf_stats accounting ' +
        `(a clock read before and after each run). Other work on the machine made ${f(floor.empty.backgroundSyscallsPerSecond)} syscalls/s in an idle ` +
        `${floor.idleSeconds} s window just before the load; net of it, ~${f(floor.empty.netSyscallsPerRequest, 1)} syscalls per request ` +
        '(the per-request figures move with that other work; ns per run is the steadier one).',
    );
    L.push('');
  } else if (hf && 'error' in hf) {
    L.push(`Hook floor: failed: ${hf.error}`, '');
  }

  if (r.profile) {
    const pr = r.profile;
    L.push('## Where the agent spends its CPU');
    L.push('');
    L.push(
      `The agent (arm B's config, \`node --inspect dist/cli.js run\`) profiled by V8's sampling profiler (1 ms) over the inspector, started once ` +
        `the agent was ready — \`--cpu-prof\` from process start makes the BPF program load fail (EAGAIN: the profiler's SIGPROF ` +
        `interrupts the verifier). Load: ${f(pr.rate)} rps for ${pr.seconds} s, then the drain: ${f(pr.totalMs - pr.idleMs)} ms busy ` +
        `on the main thread out of ${f(pr.totalMs)} ms (GC ${f((pr.gcMs / Math.max(1, pr.totalMs - pr.idleMs)) * 100, 1)}% of busy). ` +
        `Profile: \`agent.cpuprofile.gz\` (open in Chrome DevTools or speedscope).`,
    );
    L.push('');
    L.push('| self time by area | ms | % of busy |');
    L.push('|---|---:|---:|');
    for (const a of pr.byArea.slice(0, 12)) L.push(`| ${a.area} | ${f(a.selfMs)} | ${f(a.percent, 1)} |`);
    L.push('');
    L.push('| hottest functions (self time) | where | ms | % of busy |');
    L.push('|---|---|---:|---:|');
    for (const h of pr.top.slice(0, 20)) L.push(`| \`${h.function}\` | ${h.location || '–'} | ${f(h.selfMs)} | ${f(h.percent, 1)} |`);
    L.push('');
  }

  L.push('## Rounds');
  L.push('');
  L.push(...roundsTable(r.runs, 'throughput', 'throughput (rps)', (x) => f(x.rps)));
  L.push(...roundsTable(r.runs, 'fixed', `p99 at ${f(r.meta.fixedRate)} rps (µs)`, (x) => f(x.rate?.p99Us)));
  L.push(...roundsTable(r.runs, 'low', `p50 at ${f(c.lowRate)} rps (µs)`, (x) => f(x.rate?.p50Us)));
  L.push(...roundsTable(r.runs, 'low', `p99 at ${f(c.lowRate)} rps (µs)`, (x) => f(x.rate?.p99Us)));

  const phases = ['throughput', 'fixed', 'low', 'target'] as const;
  L.push('| CPU used by other processes during the arm (% of the machine, max over rounds) | ' + phases.join(' | ') + ' |');
  L.push(`|---|${phases.map(() => '---:').join('|')}|`);
  for (const a of ARMS) {
    L.push(
      `| ${a} | ${phases
        .map((ph) => {
          const v = r.runs.filter((x) => x.arm === a && x.phase === ph).map((x) => x.foreignCpuPercent);
          return v.length ? f(Math.max(...v), 1) : '–';
        })
        .join(' | ')} |`,
    );
  }
  L.push('');
  L.push(
    "Other processes = the machine's user+system CPU time (/proc/stat) during the load minus that of the benchmark's own " +
      'processes (this one and its descendants, reaped children included) and of kernel threads: other people\'s builds and ' +
      'tests on a shared machine. ' +
      `An arm during which they used more than ${r.meta.config.maxForeignPercent}% was repeated after waiting for quiet, ` +
      `at most ${r.meta.config.retries} times; ${r.discarded.length} attempt(s) were discarded` +
      (r.discarded.length ? ` (${r.discarded.map((d) => `${d.phase} r${d.round} ${d.arm}: ${f(d.foreignCpuPercent)}%`).join(', ')}); they are in results.json under \`discarded\`.` : '.') +
      ' Values still above the threshold are arms that stayed busy after the last retry.',
  );
  L.push('');

  L.push('## Method');
  L.push('');
  L.push(`- Interleaving: ${r.meta.interleaving}.`);
  L.push(`- Sink: ${r.meta.sink}.`);
  L.push(
    '- Arm C: a second nginx (one worker) as reverse proxy with keep-alive to the origin and a per-request access log ' +
      '(combined format, unbuffered) — the work a sidecar proxy adds, without mTLS.',
  );
  L.push(`- Arm D: the same agent with \`filter.ports.exclude: [${r.meta.originPort}]\`: every syscall still enters the probes, none of the benchmark's traffic is recorded.`);
  L.push(
    '- Latency at a fixed rate: `bench/tools/rategen` (C, epoll, one thread) sends request i at t0 + i/rate on a free keep-alive connection; ' +
      'latency runs from that intended time to the end of the response, so a stalled server is charged for the requests it delayed ' +
      '(coordinated omission). Timer slack 1 µs.',
  );
  L.push(
    '- Noise: 2 shared vCPUs. The load generator, nginx, the agent and the Collector compete for the same two CPUs; p99 at a fixed rate ' +
      'moves by tens of percent between rounds of the same arm (see Rounds), so a ±3% p99 target is below what this machine can resolve.',
  );
  L.push('');
  return `${L.join('\n')}\n`;
}

function roundsTable(runs: ArmRun[], phase: ArmRun['phase'], title: string, cell: (r: ArmRun) => string): string[] {
  const rs = runs.filter((x) => x.phase === phase);
  const rounds = [...new Set(rs.map((x) => x.round))].sort((a, b) => a - b);
  if (rounds.length === 0) return [];
  const out = [`| ${title} | ${rounds.map((n) => `round ${n}`).join(' | ')} |`, `|---|${rounds.map(() => '---:').join('|')}|`];
  for (const a of ARMS) {
    out.push(`| ${a} | ${rounds.map((n) => {
      const x = rs.find((y) => y.arm === a && y.round === n);
      return x ? cell(x) : '–';
    }).join(' | ')} |`);
  }
  out.push('');
  return out;
}

export function renderMachine(r: Results): string {
  const m = r.machine;
  return `# Machine (${r.meta.date.slice(0, 10)}, ${r.meta.sha})

| | |
|---|---|
| vCPUs (nproc) | ${m.nproc} |
| CPU model | ${m.cpuModel} |
| memory | ${m.memTotalGiB.toFixed(1)} GiB |
| virtualization | ${m.virtualization} |
| kernel | ${m.kernel} |
| OS | ${m.os} (Debian ${m.debian}) |
| Node.js | ${m.node} |
| nginx | ${m.nginx} |
| wrk | ${m.wrk} |
| Collector | ${m.collector} |
| CPU steal during the rounds | ${m.stealPercentDuringRun !== undefined ? `${m.stealPercentDuringRun.toFixed(1)}%` : '–'} |
| CPU busy just before the run (other work) | ${m.backgroundBusyPercent !== undefined ? `${m.backgroundBusyPercent.toFixed(1)}%` : '–'} |

Everything ran on loopback on this one machine: load generator, nginx, the proxy, the agent and the Collector share the ${m.nproc} vCPUs.
`;
}
