/**
 * util.ts (bench) — small helpers shared by the benchmark: child processes that are always
 * cleaned up, /proc readers (CPU time, RSS), statistics, ports.
 *
 * Owns the set of children started through spawnTracked(); killAllTracked() (called on exit
 * and on SIGINT/SIGTERM by bench.ts) signals only those, by pid. Single-threaded.
 */
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { cpus } from 'node:os';
import { performance } from 'node:perf_hooks';

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Wall-clock Unix time in nanoseconds (millisecond resolution). Date.now(), not
 * performance.timeOrigin + now(): the latter does not follow steps of the system clock, which a
 * VM's clock takes, and the agent stamps spans with the system clock.
 */
export function wallNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

const tracked = new Set<ChildProcess>();

export interface Tracked {
  child: ChildProcess;
  pid: number;
  /** last 64 KiB of stdout+stderr (unless stdio was redirected elsewhere) */
  output(): string;
  exited: Promise<number | null>;
  /** SIGTERM, SIGKILL after graceMs; resolves the exit code */
  stop(graceMs?: number): Promise<number | null>;
}

export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions = {}): Tracked {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  tracked.add(child);
  let out = '';
  const keep = (d: Buffer): void => {
    out = (out + d.toString()).slice(-65536);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code, sig) => {
      tracked.delete(child);
      resolve(code ?? (sig ? 128 : null));
    });
    child.once('error', (e) => {
      tracked.delete(child);
      out += `\nspawn error: ${e.message}`;
      resolve(null);
    });
  });
  const stop = async (graceMs = 10_000): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const code = await exited;
    clearTimeout(t);
    return code;
  };
  return { child, pid: child.pid ?? 0, output: () => out, exited, stop };
}

/** Grandchildren we started indirectly (nginx workers): pid → the command name it must still have. */
const trackedPids = new Map<number, string>();

export function trackPid(pid: number, comm: string): void {
  if (pid > 0) trackedPids.set(pid, comm);
}

/**
 * SIGKILL every child still running, then the tracked grandchildren (exit path). nginx workers
 * outlive a SIGKILLed master, hence the second list; a pid is signalled only while its
 * /proc/<pid>/comm is still the one recorded (not a reused pid).
 */
export function killAllTracked(): void {
  for (const c of tracked) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  tracked.clear();
  for (const [pid, comm] of trackedPids) {
    try {
      if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm) process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  trackedPids.clear();
}

/** Run to completion; resolve stdout, reject with the output on a non-zero exit. */
export async function runToEnd(cmd: string, args: string[], opts: SpawnOptions = {}): Promise<string> {
  const t = spawnTracked(cmd, args, opts);
  let stdout = '';
  t.child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  const code = await t.exited;
  if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}:\n${t.output().slice(-4000)}`);
  return stdout;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

export async function waitForPort(port: number, timeoutMs = 15_000, alive: () => boolean = () => true): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect({ port, host: '127.0.0.1' }, () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!alive()) throw new Error(`process exited before listening on 127.0.0.1:${port}`);
    if (Date.now() > end) throw new Error(`nothing listening on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

let clkTck: number | undefined;
function ticksPerSecond(): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/** utime+stime of a whole process (all threads), in microseconds; 10 ms resolution (USER_HZ). */
export function cpuMicros(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields after "(comm)": state=0 ... utime=11 stime=12 (stat(5) fields 14 and 15)
  return ((Number(f[11]) + Number(f[12])) / ticksPerSecond()) * 1e6;
}

/** VmRSS and VmHWM of a process in bytes. */
export function memory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** CPU ticks (utime + stime) of each thread of a process, summed by thread name (comm). */
export function threadTicks(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(comm, (out.get(comm) ?? 0) + Number(f[11]) + Number(f[12]));
    } catch {
      /* thread gone */
    }
  }
  return out;
}

/** CPU µs per thread name between two threadTicks() snapshots. */
export function threadCpuMicros(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of after) out[k] = ((v - (before.get(k) ?? 0)) / ticksPerSecond()) * 1e6;
  return out;
}

/**
 * Resident memory of a process by kind of mapping (/proc/PID/smaps), bytes: the BPF maps it
 * has mmapped (the ring buffer: its data pages are mapped twice, so they count twice), other
 * file-backed mappings (the node binary and shared libraries: shared, read-only text), and
 * anonymous memory (V8's heap, malloc).
 */
export function rssByMapping(pid: number): { bpfMaps: number; files: number; anonymous: number } {
  const out = { bpfMaps: 0, files: 0, anonymous: 0 };
  let kind: keyof typeof out = 'anonymous';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      const inode = Number(head[1]);
      const name = head[2] ?? '';
      kind = name.startsWith('anon_inode:bpf') ? 'bpfMaps' : inode !== 0 ? 'files' : 'anonymous';
      continue;
    }
    if (line.startsWith('Rss:')) out[kind] += Number(line.split(/\s+/)[1]) * 1024;
  }
  return out;
}

interface ProcSample {
  ppid: number;
  /** utime + stime */
  cpuTicks: number;
  /** cutime + cstime: reaped children */
  childTicks: number;
  kthread: boolean;
}

function procSnapshot(): Map<number, ProcSample> {
  const out = new Map<number, ProcSample>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // after "(comm)": state=0 ppid=1 ... flags=6 ... utime=11 stime=12 cutime=13 cstime=14
      const flags = Number(f[6]);
      out.set(Number(name), {
        ppid: Number(f[1]),
        cpuTicks: Number(f[11]) + Number(f[12]),
        childTicks: Number(f[13]) + Number(f[14]),
        kthread: (flags & 0x00200000) !== 0, // PF_KTHREAD
      });
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

/** user + nice + system ticks of the whole machine (/proc/stat; irq, softirq, steal, idle excluded). */
function machineBusyTicks(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0);
}

/**
 * CPU used by other people's work between start() and stop(), as a percentage of the whole
 * machine: the machine's user+system time minus that of this process and its descendants
 * (reaped children included) and of kernel threads. Processes born and gone inside the window
 * are counted (that is why it is a difference, not a sum over other processes).
 */
export class ForeignCpu {
  private before = new Map<number, ProcSample>();
  private busy0 = 0;
  private t0 = 0;
  start(): void {
    this.before = procSnapshot();
    this.busy0 = machineBusyTicks();
    this.t0 = performance.now();
  }
  stop(): number {
    const busy = machineBusyTicks() - this.busy0;
    const after = procSnapshot();
    const secs = (performance.now() - this.t0) / 1000;
    const mine = (pid: number): boolean => {
      for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
        if (p === process.pid) return true;
        p = after.get(p)?.ppid ?? this.before.get(p)?.ppid ?? 0;
      }
      return false;
    };
    let ours = 0;
    for (const [pid, a] of after) {
      if (!a.kthread && !mine(pid)) continue;
      const b = this.before.get(pid);
      ours += a.cpuTicks - (b?.cpuTicks ?? 0);
      if (pid === process.pid) ours += a.childTicks - (b?.childTicks ?? 0);
    }
    const foreign = Math.max(0, busy - ours);
    return ((foreign / ticksPerSecond()) / (secs * Math.max(1, cpus().length))) * 100;
  }
}

export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

/** Nearest-rank percentile (p in 0..1) of an unsorted array. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil(p * v.length) - 1))]!;
}

export const MiB = 1024 * 1024;

/** Round to n significant-ish decimals for JSON/markdown. */
export function round(x: number, digits = 2): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function log(msg: string): void {
  const t = new Date().toISOString().slice(11, 19);
  process.stderr.write(`[bench ${t}] ${msg}\n`);
}
