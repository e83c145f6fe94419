/**
 * servers.ts (test helper) — real servers and clients for end-to-end tests, each a child
 * process on loopback: python3 http.server, a Node http server, nginx (Debian), curl, and a
 * Node fetch client. Every server is stopped by the returned stop(); ports are free ports
 * picked at start.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

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

export async function waitForPort(port: number, timeoutMs = 15_000, host = '127.0.0.1'): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const c = connect({ port, host }, () => {
        c.destroy();
        resolve(true);
      });
      c.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listening on ${host}:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface RunningServer {
  port: number;
  pid: number;
  stop(): Promise<void>;
}

async function stopChild(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 3000);
  await done;
  clearTimeout(t);
}

async function startChild(cmd: string, args: string[], port: number, env: NodeJS.ProcessEnv = {}, cwd?: string, host = '127.0.0.1'): Promise<RunningServer> {
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'], ...(cwd ? { cwd } : {}) });
  let stderr = '';
  p.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  try {
    await waitForPort(port, 15_000, host);
  } catch (e) {
    p.kill('SIGKILL');
    throw new Error(`${cmd} did not start: ${(e as Error).message}\n${stderr}`);
  }
  return { port, pid: p.pid ?? 0, stop: () => stopChild(p) };
}

/** python3 -m http.server serving a directory with hello.txt, on `bind` (127.0.0.1 or ::1) */
export async function startPythonServer(env: NodeJS.ProcessEnv = {}, bind = '127.0.0.1'): Promise<RunningServer> {
  const dir = mkdtempSync(join(tmpdir(), 'sl-py-'));
  writeFileSync(join(dir, 'hello.txt'), 'hello from python\n');
  const port = await freePort();
  const s = await startChild('python3', ['-m', 'http.server', String(port), '--bind', bind], port, env, dir, bind);
  return { ...s, stop: async () => (await s.stop(), rmSync(dir, { recursive: true, force: true })) };
}

/**
 * The Node.js the test peers run on: the project's own (.tools/node, Node 24, what `make test`
 * puts first on PATH), whichever node runs ava; the system's may be older (Debian 12: Node 20,
 * whose libuv pool threads have no names, which the DNS tests rely on).
 */
const PROJECT_NODE = join(import.meta.dirname, '..', '..', '.tools', 'node', 'bin', 'node');
export const NODE = existsSync(PROJECT_NODE) ? PROJECT_NODE : process.execPath;

/** A Node http server: GET /ok → 200 chunked, GET /missing → 404, POST /echo → echo, GET /fail → 503 */
export async function startNodeServer(env: NodeJS.ProcessEnv = {}): Promise<RunningServer> {
  const port = await freePort();
  const src = `
    const http = require('node:http');
    http.createServer((req, res) => {
      if (req.url.startsWith('/ok')) { res.write('ok '); res.end('done'); return; }
      if (req.url === '/fail') { res.statusCode = 503; res.end('unavailable'); return; }
      if (req.url === '/echo') { const b = []; req.on('data', (d) => b.push(d)); req.on('end', () => { res.setHeader('content-length', Buffer.concat(b).length); res.end(Buffer.concat(b)); }); return; }
      res.statusCode = 404; res.end('missing');
    }).listen(${port}, '127.0.0.1');`;
  return startChild(NODE, ['-e', src], port, env);
}

/** nginx from Debian, one worker, keep-alive, `return 200` on / and 404 elsewhere */
export async function startNginx(): Promise<RunningServer> {
  const dir = mkdtempSync(join(tmpdir(), 'sl-nginx-'));
  mkdirSync(join(dir, 'logs'));
  const port = await freePort();
  const conf = `
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/logs/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000000; # never close a busy keep-alive connection (a load generator counts the race as an error)
  server {
    listen 127.0.0.1:${port};
    location = / { return 200 "nginx ok\\n"; }
    location /api/ { return 200 "api\\n"; }
    location / { return 404; }
  }
}`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const nginx = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p)) ?? 'nginx';
  const s = await startChild(nginx, ['-p', dir, '-c', join(dir, 'nginx.conf')], port);
  return { ...s, stop: async () => (await s.stop(), rmSync(dir, { recursive: true, force: true })) };
}

/** curl, as a separate process; returns stdout. */
export async function curl(args: string[]): Promise<string> {
  const { stdout } = await execFileP('curl', ['-sS', '--max-time', '10', ...args]);
  return stdout;
}

/** A Node client doing fetch() requests in sequence (keep-alive), in a child process. */
export async function nodeFetch(urls: string[], env: NodeJS.ProcessEnv = {}, method = 'GET', body?: string): Promise<number[]> {
  const src = `
    const urls = ${JSON.stringify(urls)};
    (async () => {
      const out = [];
      for (const u of urls) {
        const r = await fetch(u, { method: ${JSON.stringify(method)}${body !== undefined ? `, body: ${JSON.stringify(body)}` : ''} });
        await r.text();
        out.push(r.status);
      }
      console.log(JSON.stringify(out));
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const { stdout } = await execFileP(NODE, ['-e', src], { env: { ...process.env, ...env } });
  return JSON.parse(stdout) as number[];
}
