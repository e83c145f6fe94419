/**
 * report.ts (bench) — renders results.md and machine.md from the results object bench.ts
 * writes as results.json. Pure functions of that object.
 */
import type { AgentSummary, Arm, ArmRun, Results } from '../bench.js';

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

  L.push(`# Sidelight benchmark — ${r.meta.date.slice(0, 10)} (${r.meta.sha}, ${r.meta.mode} run)`);
  L.push('');
  L.push(
    `Issue 9's benchmark: ${c.rounds} interleaved round(s) of arms A B C D on ${r.machine.nproc} vCPU (${r.machine.cpuModel}), ` +
      `loopback, nginx \`return 200\` (one worker, keep-alive). Throughput: wrk -t${c.threads} -c${c.conns}, ${c.seconds} s per arm. ` +
      `Latency: constant ${f(r.meta.fixedRate)} rps (50% of A's median throughput), ${c.rateSeconds} s per arm (first ${c.rateWarmupSeconds} s not recorded), ` +
      `${c.conns} connections, measured from each request's intended send time. **Ratios are from this one run; absolute numbers ` +
      `from different runs are not comparable** (shared, noisy vCPUs: ${f(s.steal.percent, 1)}% steal during the rounds). ` +
      `Machine: [machine.md](${linkPrefix}machine.md); raw numbers: [results.json](${linkPrefix}results.json). Run time ${f(r.meta.wallSeconds)} s.`,
  );
  L.push('');
  if (r.meta.chart) L.push(`![throughput and latency per arm](${linkPrefix}${r.meta.chart})`, '');
  else L.push(`_${r.meta.chartNote}_`, '');

  L.push('## Arms (medians over rounds)');
  L.push('');
  L.push('| arm | | throughput (rps) | ratio to A | p50 at fixed rate (µs) | vs A | p99 at fixed rate (µs) | vs A | achieved fixed rate | origin nginx CPU µs/req |');
  L.push('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const a of ARMS) {
    const x = s.arms[a];
    L.push(
      `| ${a} | ${NAMES[a]} | ${f(x.rpsMedian)} | ${ratio(x.rpsRatio)} | ${f(x.p50UsMedian)} | ${a === 'A' ? '' : pct(x.p50Ratio)} | ${f(x.p99UsMedian)} | ${a === 'A' ? '' : pct(x.p99Ratio)} | ${f(x.fixedAchievedMedian)}${x.fixedUnsent ? ` (${f(x.fixedUnsent)} unsent)` : ''} | ${f(x.originCpuUsPerRequest, 1)} |`,
    );
  }
  L.push('');
  const cProxy = s.arms.C.proxyCpuUsPerRequest;
  L.push(
    `Sidecar cost (C/A): throughput ${ratio(s.arms.C.rpsRatio)}, p50 ${pct(s.arms.C.p50Ratio)}, p99 ${pct(s.arms.C.p99Ratio)}` +
      (cProxy !== null ? `, plus ${f(cProxy, 1)} µs of proxy CPU per request.` : '.') +
      ` Sidelight (B/A): throughput ${ratio(B.rpsRatio)}, p50 ${pct(B.p50Ratio)}, p99 ${pct(B.p99Ratio)}. ` +
      `Tracepoint tax alone (D/A): throughput ${ratio(s.arms.D.rpsRatio)}, p99 ${pct(s.arms.D.p99Ratio)}.`,
  );
  L.push('');

  L.push('## The agent (arms B and D)');
  L.push('');
  L.push('| | B, max load (wrk) | B, fixed rate | D, max load | D, fixed rate |');
  L.push('|---|---:|---:|---:|---:|');
  const cols: AgentSummary[] = [bT, bF, s.agent.D.throughput, s.agent.D.fixed];
  const row = (label: string, get: (a: AgentSummary) => string): void => {
    L.push(`| ${label} | ${cols.map(get).join(' | ')} |`);
  };
  row('agent CPU per request (µs)', (a) => f(a.cpuUsPerRequest, 2));
  row('agent CPU per exported span (µs)', (a) => f(a.cpuUsPerSpan, 2));
  row('BPF time per request (ns, all probes, system-wide)', (a) => f(a.bpfNsPerRequest));
  row('BPF time per probe run (ns)', (a) => f(a.bpfNsPerRun));
  row('agent RSS steady (MiB, median of 2nd half)', (a) => f(a.rssSteadyMiB, 1));
  row('agent RSS max sampled / VmHWM (MiB)', (a) => `${f(a.rssMaxMiB, 1)} / ${f(a.hwmMiB, 1)}`);
  row('ring buffer full (records lost)', (a) => f(a.ringbufFull));
  row('export queue full / export failed (spans)', (a) => `${f(a.droppedQueueFull)} / ${f(a.droppedExportFailed)}`);
  row('requests sent (wrk / rategen)', (a) => f(a.requests));
  row('spans exported', (a) => f(a.exported));
  row('spans exported per request (expect 2: nginx SERVER + wrk CLIENT)', (a) => f(a.spansPerRequest, 3));
  row('Collector CPU per request (µs)', (a) => f(a.collectorCpuUsPerRequest, 2));
  L.push('');
  L.push(
    'Agent CPU: utime+stime of the agent process from /proc/<pid>/stat, from just before the load to when the agent has drained ' +
      '(its queue empty and its counters still), divided by requests sent. BPF time: the sum of run_time_ns over the agent\'s probes ' +
      '(it enables bpf stats itself), same window; it counts every syscall of the machine that enters the probes, not only the ' +
      'benchmark\'s. Both ends of each request are on this machine, so each request is two spans (wrk is an HTTP/1 client over TCP too).',
  );
  L.push('');

  L.push('## Targets (issue 9)');
  L.push('');
  L.push('| measure | target | measured | |');
  L.push('|---|---|---|---|');
  L.push(`| throughput B/A | ≥ 0.95 | ${ratio(B.rpsRatio)} | ${met(Number.isFinite(B.rpsRatio) ? B.rpsRatio >= 0.95 : undefined)} |`);
  L.push(`| p99 at fixed 50% load, B vs A | ≤ +3% | ${pct(B.p99Ratio)} (${f(B.p99UsMedian)} vs ${f(s.arms.A.p99UsMedian)} µs) | ${met(Number.isFinite(B.p99Ratio) ? B.p99Ratio <= 1.03 : undefined)} |`);
  L.push(`| BPF time per HTTP request | ≤ 0.5 µs | ${f(bT.bpfNsPerRequest)} ns at max load, ${f(bF.bpfNsPerRequest)} ns at fixed rate | ${met(Number.isFinite(bT.bpfNsPerRequest) ? Math.max(bT.bpfNsPerRequest, bF.bpfNsPerRequest) <= 500 : undefined)} |`);
  L.push(`| agent CPU per exported span | ≤ 10 µs | ${f(bF.cpuUsPerSpan, 2)} µs at fixed rate, ${f(bT.cpuUsPerSpan, 2)} µs at max load | ${met(Number.isFinite(bF.cpuUsPerSpan) ? Math.max(bF.cpuUsPerSpan, bT.cpuUsPerSpan) <= 10 : undefined)} |`);
  const ceiling = k.drain?.recordsPerSec;
  L.push(`| kernel → JS ceiling | ≥ 1 M events/s | ${ceiling !== undefined ? `${f(ceiling / 1e6, 2)} M records/s` : `failed: ${k.error ?? '?'}`} | ${met(ceiling !== undefined ? ceiling >= 1e6 : undefined)} |`);
  const rssRun = s.targets.find((t) => t.rate?.rate === 10_000) ?? t10;
  L.push(
    `| agent RSS steady at 10k rps | ≤ 100 MiB | ${rssRun?.agent ? `${f(rssRun.agent.rssSteadyMiB, 1)} MiB at ${f(rssRun.rate?.rate)} rps (max ${f(rssRun.agent.rssMaxMiB, 1)})` : '–'} | ${met(rssRun?.agent ? rssRun.agent.rssSteadyMiB <= 100 : undefined)} |`,
  );
  const dropRun = s.targets.find((t) => t.rate?.rate === 20_000) ?? t20;
  const dr = dropRun?.agent;
  L.push(
    `| drops at 20k rps | 0 (and counted when not) | ${dr ? `${f(dr.drops)} at ${f(dropRun?.rate?.rate)} rps (ring ${f(dr.kernel.ringbuf_full ?? 0)}, queue ${f(dr.droppedQueueFull)}, export ${f(dr.droppedExportFailed)}); achieved ${f(dropRun?.rate?.achievedRps)} rps` : '–'} | ${met(dr ? dr.drops === 0 : undefined)} |`,
  );
  const delayP99 = Math.max(...s.targets.map((t) => t.delay?.p99Ms ?? NaN));
  L.push(
    `| span visible at the sink after request end | p99 ≤ 2 s | ${s.targets.map((t) => `p99 ${f(t.delay?.p99Ms)} ms (p50 ${f(t.delay?.p50Ms)}) at ${f(t.rate?.rate)} rps`).join('; ')} | ${met(Number.isFinite(delayP99) ? delayP99 <= 2000 : undefined)} |`,
  );
  L.push(`| sidecar comparison C/A | reported | throughput ${ratio(s.arms.C.rpsRatio)}, p99 ${pct(s.arms.C.p99Ratio)} | |`);
  L.push('');
  if (s.targets.length) {
    L.push('Targets phase (arm B alone, exporting to the Collector\'s file exporter so arrival can be timed):');
    L.push('');
    L.push('| rate | achieved | agent CPU µs/span | RSS steady / max (MiB) | drops | SERVER spans | CLIENT spans | requests | visible after end p50 / p99 / max (ms) |');
    L.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const t of s.targets) {
      const a = t.agent!;
      const d = t.delay!;
      L.push(
        `| ${f(t.rate?.rate)} | ${f(t.rate?.achievedRps)} | ${f(a.cpuUsPerSpan, 2)} | ${f(a.rssSteadyMiB, 1)} / ${f(a.rssMaxMiB, 1)} | ${f(a.drops)} | ${f(d.serverSpans)} | ${f(d.clientSpans)} | ${f(t.requests)} | ${f(d.p50Ms)} / ${f(d.p99Ms)} / ${f(d.maxMs)} |`,
      );
    }
    L.push('');
    L.push(
      'Visible after end = the time the Collector\'s file exporter output covered the span (file size sampled every 20 ms; ' +
        'the exporter flushes every 20 ms) minus the span\'s end time. It includes the agent\'s poll interval (100 ms), its batching ' +
        '(512 spans or 1 s), the gRPC export and the Collector; it overstates by up to ~40 ms.',
    );
    L.push('');
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
      protobuf: 'OTLP protobuf (ProtobufTraceSerializer), bytes discarded',
      'protobuf+gzip': 'OTLP protobuf + gzip, bytes discarded',
    };
    for (const [key, v] of Object.entries(p.variants)) {
      L.push(`| ${label[key] ?? key} | ${f(v.spansPerSec)} | ${f(v.cpuUsPerSpan, 2)} | ${f(v.bytesPerSpan)} | ${f(v.droppedQueueFull)} |`);
    }
  } else L.push(`Receiver → export: failed: ${p.error}`);
  L.push('');

  if (r.profile) {
    const pr = r.profile;
    L.push('## Where the agent spends its CPU');
    L.push('');
    L.push(
      `\`node --cpu-prof dist/cli.js run\` (arm B's config) under ${f(pr.rate)} rps for ${pr.seconds} s: ${f(pr.totalMs - pr.idleMs)} ms busy ` +
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
  L.push(...roundsTable(r.runs, 'fixed', `p50 at ${f(r.meta.fixedRate)} rps (µs)`, (x) => f(x.rate?.p50Us)));

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
