/**
 * profile.ts (bench) — summarises a V8 .cpuprofile (node --cpu-prof) by self time: the hottest
 * functions (name, file:line) and the share of (garbage collector), (program) and (idle).
 * Pure; reads one file.
 */
import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

export interface HotFunction {
  function: string;
  location: string;
  selfMs: number;
  /** share of non-idle samples, percent */
  percent: number;
}

export interface ProfileSummary {
  totalMs: number;
  idleMs: number;
  gcMs: number;
  programMs: number;
  top: HotFunction[];
  /** self time by top-level area: src/receiver, src/otlp, node_modules/@grpc, node:internal, ... */
  byArea: { area: string; selfMs: number; percent: number }[];
}

function area(url: string, root: string): string {
  if (!url) return '(native/V8)';
  const path = url.startsWith('file://') ? new URL(url).pathname : url;
  if (path.startsWith('node:')) return 'node: internals';
  const rel = relative(root, path);
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(rel);
  if (nm) return `node_modules/${nm[1]}`;
  const m = /^(dist|src)\/([^/]+)(\/|$)/.exec(rel);
  if (m) return m[3] === '/' ? `${m[1]}/${m[2]}/` : `${m[1]}/${m[2]}`;
  return rel.startsWith('..') ? path : rel;
}

export function summarizeProfile(file: string, root: string, topN = 20): ProfileSummary {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>(); // node id → µs
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    // timeDeltas[i] is the time before sample i; attribute the time after it to sample i
    const dt = deltas[i + 1] ?? 0;
    self.set(samples[i]!, (self.get(samples[i]!) ?? 0) + Math.max(0, dt));
  }
  const byFn = new Map<string, { fn: string; loc: string; us: number }>();
  const byArea = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  let program = 0;
  let total = 0;
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    total += us;
    const cf = n.callFrame;
    if (cf.functionName === '(idle)') {
      idle += us;
      continue;
    }
    if (cf.functionName === '(garbage collector)') gc += us;
    if (cf.functionName === '(program)') program += us;
    const path = cf.url.startsWith('file://') ? relative(root, new URL(cf.url).pathname) : cf.url;
    const loc = path ? `${path}:${cf.lineNumber + 1}` : '';
    const key = `${cf.functionName}|${loc}`;
    const e = byFn.get(key) ?? { fn: cf.functionName || '(anonymous)', loc, us: 0 };
    e.us += us;
    byFn.set(key, e);
    const a = cf.functionName.startsWith('(') ? cf.functionName : area(cf.url, root);
    byArea.set(a, (byArea.get(a) ?? 0) + us);
  }
  const busy = Math.max(1, total - idle);
  return {
    totalMs: total / 1e3,
    idleMs: idle / 1e3,
    gcMs: gc / 1e3,
    programMs: program / 1e3,
    top: [...byFn.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, topN)
      .map((e) => ({ function: e.fn, location: e.loc, selfMs: e.us / 1e3, percent: (e.us / busy) * 100 })),
    byArea: [...byArea.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([a, us]) => ({ area: a, selfMs: us / 1e3, percent: (us / busy) * 100 })),
  };
}
