/**
 * The overhead benchmark (bench/run, issue 9) as a smoke test: the whole pipeline — nginx, the
 * sidecar proxy, the Collector, the agent in arms B and D, the fixed-rate generator, the targets
 * phase and the micro-benchmarks — in one short round, into a temp dir. It checks that every
 * part produced numbers, never how fast anything was: benchmarks are not timed tests.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { repoRoot } from '../src/paths.js';
import { kernelUnavailable, need } from './helpers/kernel.js';

const ROOT = repoRoot();
const collectorMissing = existsSync(join(ROOT, '.tools', 'otelcol')) ? undefined : 'collector not built (bash scripts/collector.sh)';

interface Run {
  arm: string;
  phase: string;
  rps: number;
  requests: number;
  agent?: { exported: number; cpuUsPerRequest: number; bpfNsPerRequest: number };
  rate?: { p50Us: number; p99Us: number };
  delay?: { spans: number };
}
interface Results {
  meta: { mode: string; fixedRate: number };
  runs: Run[];
  summary: { agent: { B: { throughput: { exported: number } } } };
  micro: { kernelToJs: { drain?: { recordsPerSec: number }; error?: string }; pipeline: Record<string, { spansPerSec?: number }> & { error?: string } };
}

function run(cmd: string, args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (d: Buffer): void => {
      output = (output + d.toString()).slice(-20_000);
    };
    p.stdout.on('data', keep);
    p.stderr.on('data', keep);
    p.once('close', (code) => resolve({ code, output }));
  });
}

test.serial('bench/run --smoke: four arms with throughput, B exports spans, results table written', async (t) => {
  t.timeout(150_000);
  if (!need(t, kernelUnavailable() ?? collectorMissing)) return;
  const out = mkdtempSync(join(tmpdir(), 'sl-bench-test-'));
  t.teardown(() => rmSync(out, { recursive: true, force: true }));

  const { code, output } = await run(join(ROOT, 'bench', 'run'), ['--smoke', '--no-setup', '--out', out]);
  t.is(code, 0, output);

  const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Results;
  t.is(results.meta.mode, 'smoke');
  t.true(results.meta.fixedRate > 0, 'a fixed rate was derived from arm A');
  for (const arm of ['A', 'B', 'C', 'D']) {
    const tp = results.runs.filter((r) => r.arm === arm && r.phase === 'throughput');
    const fx = results.runs.filter((r) => r.arm === arm && r.phase === 'fixed');
    t.true(tp.length >= 1 && tp.every((r) => r.rps > 0 && r.requests > 0), `arm ${arm}: throughput > 0`);
    t.true(fx.length >= 1 && fx.every((r) => r.rps > 0 && (r.rate?.p99Us ?? 0) > 0), `arm ${arm}: fixed-rate latency measured`);
    if (arm === 'B' || arm === 'D') t.true(tp.every((r) => r.agent !== undefined), `arm ${arm}: agent metrics collected`);
  }
  t.true(results.summary.agent.B.throughput.exported > 0, 'arm B exported spans to the Collector');
  const b = results.runs.find((r) => r.arm === 'B' && r.phase === 'throughput')!;
  t.true(b.agent!.cpuUsPerRequest > 0 && b.agent!.bpfNsPerRequest > 0, 'agent CPU and BPF time measured');
  t.true(results.runs.some((r) => r.phase === 'target' && (r.delay?.spans ?? 0) > 0), 'spans reached the file sink in the targets phase');
  t.true((results.micro.kernelToJs.drain?.recordsPerSec ?? 0) > 0, `kernel → JS micro-benchmark: ${results.micro.kernelToJs.error ?? ''}`);
  t.true((results.micro.pipeline.null?.spansPerSec ?? 0) > 0, `pipeline micro-benchmark: ${results.micro.pipeline.error ?? ''}`);

  const md = readFileSync(join(out, 'results.md'), 'utf8');
  t.regex(md, /^\| arm \| \| throughput \(rps\) \| ratio to A \|/m, 'the arms table');
  for (const arm of ['A', 'B', 'C', 'D']) t.regex(md, new RegExp(`^\\| ${arm} \\| .+ \\| [0-9,]+ \\| [0-9.]+ \\|`, 'm'), `a row for arm ${arm}`);
  t.regex(md, /^## Targets \(issue 9\)/m);
  t.true(existsSync(join(out, 'machine.md')), 'machine.md written');
});
