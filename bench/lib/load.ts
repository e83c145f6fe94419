/**
 * load.ts (bench) — the two load generators, loopback only:
 *  - wrk (Debian) for maximum throughput: fixed duration, closed loop, keep-alive; a Lua done()
 *    hook prints its summary as JSON;
 *  - rategen (bench/tools/rategen.c, built by bench/run) for latency at a fixed rate, measured
 *    from each request's intended send time (coordinated omission accounted for).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runToEnd } from './util.js';

export interface WrkResult {
  requests: number;
  seconds: number;
  rps: number;
  errors: number;
  non2xx: number;
  latencyP50Us: number;
  latencyP99Us: number;
}

const WRK_LUA = `
-- written by bench/run: print wrk's summary as one JSON line
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"durationUs":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
`;

export async function runWrk(workDir: string, port: number, seconds: number, conns: number, threads: number): Promise<WrkResult> {
  const script = join(workDir, 'wrk-summary.lua');
  writeFileSync(script, WRK_LUA);
  const out = await runToEnd('wrk', [
    `-t${threads}`,
    `-c${conns}`,
    `-d${seconds}s`,
    '--timeout',
    '5s',
    '-s',
    script,
    `http://127.0.0.1:${port}/`,
  ]);
  const line = out.split('\n').find((l) => l.startsWith('{"requests"'));
  if (!line) throw new Error(`wrk printed no summary:\n${out}`);
  const j = JSON.parse(line) as Record<string, number>;
  const secs = j.durationUs! / 1e6;
  return {
    requests: j.requests!,
    seconds: secs,
    rps: j.requests! / secs,
    errors: j.connect! + j.read! + j.write! + j.timeout!,
    non2xx: j.status!,
    latencyP50Us: j.p50!,
    latencyP99Us: j.p99!,
  };
}

export interface RateResult {
  rate: number;
  conns: number;
  seconds: number;
  due: number;
  completed: number;
  errors: number;
  non2xx: number;
  unsent: number;
  late: number;
  achievedRps: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
  meanUs: number;
  /** every request sent / completed, warm-up included (what the server and the agent saw) */
  sentTotal: number;
  completedTotal: number;
}

export async function runRategen(
  binary: string,
  port: number,
  rate: number,
  seconds: number,
  conns: number,
  warmupSeconds: number,
): Promise<RateResult> {
  const out = await runToEnd(binary, ['-p', String(port), '-r', String(rate), '-d', String(seconds), '-c', String(conns), '-w', String(warmupSeconds)]);
  return JSON.parse(out.trim().split('\n').pop()!) as RateResult;
}
