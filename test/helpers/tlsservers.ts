/**
 * tlsservers.ts (test helper) — real TLS peers on loopback, each a separate process: nginx
 * (HTTP/1.1 and h2 over TLS), a python3 ssl + http.server server, a Node `https` server,
 * and a python3 urllib client; plus a self-signed certificate made with the openssl CLI.
 * Every server listens on a port chosen by the caller (tests restrict the agent to their
 * ports before the servers start) and is stopped by its stop(). Temp dirs are removed by
 * stop()/cleanup().
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { NODE, waitForPort, type RunningServer } from './servers.js';

const execFileP = promisify(execFile);

export interface Cert {
  dir: string;
  cert: string;
  key: string;
  cleanup(): void;
}

/** A self-signed certificate for 127.0.0.1 / localhost (openssl req -x509). */
export async function makeCert(): Promise<Cert> {
  const dir = mkdtempSync(join(tmpdir(), 'sl-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await execFileP('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
  ]);
  return { dir, cert, key, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

async function stopChild(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 5000);
  await done;
  clearTimeout(t);
}

async function startChild(cmd: string, args: string[], port: number, env: NodeJS.ProcessEnv = {}): Promise<RunningServer> {
  const p = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  try {
    await waitForPort(port);
  } catch (e) {
    p.kill('SIGKILL');
    throw new Error(`${cmd} did not start: ${(e as Error).message}\n${stderr}`);
  }
  return { port, pid: p.pid ?? 0, stop: () => stopChild(p) };
}

/** nginx with TLS on `port`: HTTP/1.1 and h2 (ALPN); 200 on / and /api/*, 404 elsewhere. */
export async function startTlsNginx(port: number, cert: Cert): Promise<RunningServer> {
  const dir = mkdtempSync(join(tmpdir(), 'sl-nginx-tls-'));
  mkdirSync(join(dir, 'logs'));
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
  server {
    listen 127.0.0.1:${port} ssl http2;
    ssl_certificate ${cert.cert};
    ssl_certificate_key ${cert.key};
    location = / { return 200 "nginx tls ok\\n"; }
    location /api/ { return 200 "api\\n"; }
    location / { return 404; }
  }
}`;
  writeFileSync(join(dir, 'nginx.conf'), conf);
  const nginx = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p)) ?? 'nginx';
  const s = await startChild(nginx, ['-p', dir, '-c', join(dir, 'nginx.conf')], port);
  return { ...s, stop: async () => (await s.stop(), rmSync(dir, { recursive: true, force: true })) };
}

const PY_SERVER = `
import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def do_GET(self):
        ok = self.path.startswith('/hello')
        body = b'hello from python tls\\n' if ok else b'no\\n'
        self.send_response(200 if ok else 404)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
srv = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[2], sys.argv[3])
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
`;

/** python3 http.server behind ssl.SSLContext.wrap_socket: 200 on /hello*, 404 elsewhere. */
export async function startTlsPython(port: number, cert: Cert, env: NodeJS.ProcessEnv = {}): Promise<RunningServer> {
  return startChild('python3', ['-c', PY_SERVER, String(port), cert.cert, cert.key], port, env);
}

/** Node `https` server (OpenSSL linked into the node executable): 200 on /hello*, 404 elsewhere. */
export async function startTlsNode(port: number, cert: Cert, env: NodeJS.ProcessEnv = {}): Promise<RunningServer> {
  const src = `
    const https = require('node:https');
    const fs = require('node:fs');
    https.createServer({ cert: fs.readFileSync(${JSON.stringify(cert.cert)}), key: fs.readFileSync(${JSON.stringify(cert.key)}) }, (req, res) => {
      const ok = req.url.startsWith('/hello');
      res.writeHead(ok ? 200 : 404, { 'content-type': 'text/plain' });
      res.end(ok ? 'hello from node tls\\n' : 'no\\n');
    }).listen(${port}, '127.0.0.1');`;
  return startChild(NODE, ['-e', src], port, env);
}

const PY_CLIENT = `
import ssl, sys, urllib.request, urllib.error
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
for u in sys.argv[1:]:
    try:
        with urllib.request.urlopen(u, context=ctx, timeout=10) as r: print(r.status)
    except urllib.error.HTTPError as e: print(e.code)
`;

/** python3 urllib GETs (one connection each, certificate not verified); returns the statuses. */
export async function pythonGet(urls: string[], env: NodeJS.ProcessEnv = {}): Promise<number[]> {
  const { stdout } = await execFileP('python3', ['-c', PY_CLIENT, ...urls], { env: { ...process.env, ...env }, timeout: 20_000 });
  return stdout.trim().split('\n').map(Number);
}

/** Node `https.get` requests in sequence on one keep-alive connection (certificate not verified); returns the statuses. */
export async function nodeHttpsGet(urls: string[], env: NodeJS.ProcessEnv = {}): Promise<number[]> {
  const src = `
    const https = require('node:https');
    const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false });
    (async () => {
      for (const u of process.argv.slice(1)) {
        await new Promise((resolve, reject) => https.get(u, { agent }, (res) => { res.resume(); res.on('end', () => { console.log(res.statusCode); resolve(); }); }).on('error', reject));
      }
      agent.destroy();
    })().catch((e) => { console.error(e); process.exit(1); });`;
  const { stdout } = await execFileP(NODE, ['-e', src, ...urls], { env: { ...process.env, ...env }, timeout: 20_000 });
  return stdout.trim().split('\n').map(Number);
}
