/**
 * agentproc.ts (test helper) — runs the built agent as users do (`bin/sidelight run`) in a
 * child process with a given environment, waits for /readyz, and stops it with SIGTERM,
 * reporting its exit code and output.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { repoRoot } from '../../src/paths.js';
import { freePort } from './servers.js';

export interface AgentProcess {
  healthUrl: string;
  pid: number;
  output(): string;
  stdout(): string;
  /** SIGTERM, wait for exit; resolves the exit code */
  stop(): Promise<number | null>;
}

export const SIDELIGHT_BIN = `${repoRoot()}/bin/sidelight`;

export async function startAgentProcess(env: NodeJS.ProcessEnv, args: string[] = []): Promise<AgentProcess> {
  const port = await freePort();
  const healthUrl = `http://127.0.0.1:${port}`;
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
  const p: ChildProcess = spawn(SIDELIGHT_BIN, ['run', ...args], {
    env: { ...clean, SIDELIGHT_HEALTH_ADDR: `127.0.0.1:${port}`, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let stdout = '';
  p.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    stdout += d.toString();
  });
  p.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  const end = Date.now() + 30_000;
  for (;;) {
    if (p.exitCode !== null) throw new Error(`agent exited with ${p.exitCode} before ready:\n${out}`);
    try {
      const r = await fetch(`${healthUrl}/readyz`);
      if (r.status === 200) break;
    } catch {
      /* not listening yet */
    }
    if (Date.now() > end) {
      p.kill('SIGKILL');
      throw new Error(`agent not ready after 30 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    healthUrl,
    pid: p.pid ?? 0,
    output: () => out,
    stdout: () => stdout,
    stop: async () => {
      if (p.exitCode === null) p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
