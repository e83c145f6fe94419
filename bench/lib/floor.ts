/**
 * floor.ts (bench) — the "hook floor" micro-benchmark (issue 9): the BPF time per HTTP request
 * that ANY design hooking tp_btf/sys_enter + tp_btf/sys_exit (what bpf/syscalls.bpf.c hooks)
 * pays on this machine, whatever its programs do. Loads bench/.build/floor.bpf.o (built by
 * bench/run from bench/tools/floor.bpf.c) with the project's addon, turns on BPF run-time
 * stats (bpf_enable_stats, the same accounting the agent's "BPF time per request" uses), and
 * attaches one pair of programs at a time under the benchmark's fixed-rate load (rategen →
 * origin nginx), reading run_cnt/run_time_ns of both programs before and after:
 *  - empty:  both programs `return 0` — the hook and the stats accounting alone (the floor);
 *  - filter: both read the syscall number and compare it with the socket syscalls (the least a
 *    real tracer does before it can drop a syscall).
 * Like the agent's figure, the sums cover every syscall of the machine in the window, not only
 * nginx's and rategen's; an idle window of the same kind before the load measures that
 * background (its runs/s), reported next to the raw figures.
 *
 * Owns one addon object at a time (opened, measured, closed before the next pair: links and the
 * stats fd go with it). Single-threaded, called once per run from bench.ts micro().
 */
import { loadNative, wrapNative, type NativeObject } from '../../src/native.js';
import { runRategen, type RateResult } from './load.js';
import { sleep } from './util.js';

/** The program pairs of floor.bpf.c: [sys_enter, sys_exit]. */
export const FLOOR_PAIRS = {
  empty: ['floor_enter_empty', 'floor_exit_empty'],
  filter: ['floor_enter_filter', 'floor_exit_filter'],
} as const;
export type FloorPairName = keyof typeof FLOOR_PAIRS;

export interface FloorProgram {
  name: string;
  runs: number;
  ns: number;
}

export interface FloorPair {
  pair: FloorPairName;
  enter: FloorProgram;
  exit: FloorProgram;
  /** requests rategen completed in the window (warm-up included, as for the arms) */
  requests: number;
  /** wall time of the load window (rategen's warm-up + measurement + its start/stop) */
  seconds: number;
  achievedRps: number;
  errors: number;
  /** runs of sys_enter per request: the syscalls the machine made per request */
  syscallsPerRequest: number;
  /** runs of both programs per request (≈ 2 × syscallsPerRequest) */
  runsPerRequest: number;
  /** run time of both programs ÷ their runs */
  nsPerRun: number;
  /** run time of both programs ÷ requests: for the empty pair, the floor */
  nsPerRequest: number;
  /** sys_enter runs per second in an idle window just before the load (other work on the machine) */
  backgroundSyscallsPerSecond: number;
  /** syscallsPerRequest minus that background, scaled to the load window */
  netSyscallsPerRequest: number;
}

export interface HookFloor {
  object: string;
  rate: number;
  loadSeconds: number;
  idleSeconds: number;
  conns: number;
  /** bpf_enable_stats result (not ok is fine when the sysctl kernel.bpf_stats_enabled is 1; no runs counted throws) */
  stats: { ok: boolean; errno: number };
  empty: FloorPair;
  filter: FloorPair;
}

export interface FloorOptions {
  object: string;
  rategen: string;
  port: number;
  rate: number;
  seconds: number;
  warmupSeconds: number;
  idleSeconds: number;
  conns: number;
}

function programStats(obj: NativeObject, names: readonly [string, string]): [FloorProgram, FloorProgram] {
  const all = obj.programStats();
  const one = (name: string): FloorProgram => {
    const s = all.find((p) => p.name === name);
    if (!s) throw new Error(`floor: program ${name} missing from ${all.map((p) => p.name).join(', ')}`);
    return { name, runs: Number(s.runCount), ns: Number(s.runTimeNs) };
  };
  return [one(names[0]), one(names[1])];
}

function delta(a: FloorProgram, b: FloorProgram): FloorProgram {
  return { name: a.name, runs: b.runs - a.runs, ns: b.ns - a.ns };
}

async function measurePair(o: FloorOptions, pair: FloorPairName): Promise<{ result: FloorPair; stats: { ok: boolean; errno: number } }> {
  const native = loadNative();
  const obj = wrapNative(() => native.open(o.object, null, {}));
  try {
    const stats = obj.enableStats();
    const names = FLOOR_PAIRS[pair];
    const others = Object.values(FLOOR_PAIRS).flat().filter((n) => !(names as readonly string[]).includes(n));
    const attached = obj.attach(others);
    const failed = attached.filter((r) => !r.ok);
    if (failed.length) throw new Error(`floor: attach failed: ${JSON.stringify(failed)}`);
    if (attached.length !== 2) throw new Error(`floor: expected 2 programs attached, got ${attached.map((r) => r.name).join(', ')}`);
    await sleep(100);
    const [i0] = programStats(obj, names);
    const ti0 = process.hrtime.bigint();
    await sleep(o.idleSeconds * 1000);
    const [i1] = programStats(obj, names);
    const idleSecs = Number(process.hrtime.bigint() - ti0) / 1e9;
    const [e0, x0] = programStats(obj, names);
    const t0 = process.hrtime.bigint();
    const rate: RateResult = await runRategen(o.rategen, o.port, o.rate, o.seconds, o.conns, o.warmupSeconds);
    const secs = Number(process.hrtime.bigint() - t0) / 1e9;
    const [e1, x1] = programStats(obj, names);
    const enter = delta(e0, e1);
    const exit = delta(x0, x1);
    // run_cnt is counted only while BPF stats are on (bpf_enable_stats or the sysctl)
    if (enter.runs === 0 || exit.runs === 0) {
      throw new Error(`floor: no runs counted for ${names.join(', ')} (bpf_enable_stats: ${JSON.stringify(stats)}): are BPF run-time stats available?`);
    }
    const requests = rate.completedTotal;
    const bgPerSec = (i1.runs - i0.runs) / idleSecs;
    const result: FloorPair = {
      pair,
      enter,
      exit,
      requests,
      seconds: secs,
      achievedRps: rate.achievedRps,
      errors: rate.errors + rate.non2xx,
      syscallsPerRequest: enter.runs / requests,
      runsPerRequest: (enter.runs + exit.runs) / requests,
      nsPerRun: (enter.ns + exit.ns) / Math.max(1, enter.runs + exit.runs),
      nsPerRequest: (enter.ns + exit.ns) / requests,
      backgroundSyscallsPerSecond: bgPerSec,
      netSyscallsPerRequest: (enter.runs - bgPerSec * secs) / requests,
    };
    return { result, stats };
  } finally {
    obj.close();
  }
}

/** Measure the empty pair, then the filter pair, each under its own load window. */
export async function measureHookFloor(o: FloorOptions): Promise<HookFloor> {
  const empty = await measurePair(o, 'empty');
  const filter = await measurePair(o, 'filter');
  return {
    object: o.object,
    rate: o.rate,
    loadSeconds: o.seconds,
    idleSeconds: o.idleSeconds,
    conns: o.conns,
    stats: empty.stats,
    empty: empty.result,
    filter: filter.result,
  };
}
