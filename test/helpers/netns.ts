/**
 * netns.ts (test helper) — a network namespace made by the test, with loopback up and its
 * own /etc/netns/<name>/resolv.conf (which `ip netns exec` bind-mounts over /etc/resolv.conf
 * for the commands it runs), and a way to start processes in it. remove() deletes both.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';

export interface Netns {
  name: string;
  /** argv prefix that runs a command inside the namespace */
  exec: string[];
  spawn(cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess;
  run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): { status: number | null; stdout: string; stderr: string };
  remove(): void;
}

export function createNetns(name: string, resolvConf?: string): Netns {
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    /* not there */
  }
  execFileSync('ip', ['netns', 'add', name]);
  execFileSync('ip', ['netns', 'exec', name, 'ip', 'link', 'set', 'lo', 'up']);
  const etc = `/etc/netns/${name}`;
  if (resolvConf !== undefined) {
    mkdirSync(etc, { recursive: true });
    writeFileSync(`${etc}/resolv.conf`, resolvConf);
  }
  const exec = ['ip', 'netns', 'exec', name];
  const children: ChildProcess[] = [];
  return {
    name,
    exec,
    spawn(cmd, args, env = {}) {
      const c = spawn(exec[0]!, [...exec.slice(1), cmd, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
      children.push(c);
      return c;
    },
    run(cmd, args, env = {}) {
      try {
        const stdout = execFileSync(exec[0]!, [...exec.slice(1), cmd, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] });
        return { status: 0, stdout, stderr: '' };
      } catch (e) {
        const x = e as { status: number | null; stdout?: string; stderr?: string };
        return { status: x.status, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
      }
    },
    remove() {
      for (const c of children) c.kill('SIGKILL');
      try {
        execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
      } catch {
        /* already gone */
      }
      rmSync(etc, { recursive: true, force: true });
    },
  };
}
