/**
 * Pickup of existing connections (issue 10 item 5), end to end: `bin/sidelight run` started
 * while real keep-alive connections are open (a Python http.server and two Python
 * http.client clients, each connection carrying a request before the agent exists). The
 * iter/tcp pickup at start seeds their roles from the kernel, and the requests made on the
 * same connections afterwards come out as SERVER and CLIENT spans of the right processes.
 *
 * The hard case: one connection is in the middle of a long chunked response when the agent
 * starts. Its first bytes after the start are dozens of chunk-data writes that say nothing
 * about roles; from bytes alone the connection would be given up as not HTTP after 8 of them
 * and its later requests never traced (test/receiver/pickup.test.ts shows that without the
 * seed). With the seeded role the tail is skipped and the next request is parsed.
 * The agent's /healthz and /metrics say what the pickup found, exactly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import test from 'ava';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { collectorBinary, startCollector, type CollectorSpan, type RunningCollector } from '../helpers/collector.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { parsePrometheus } from '../helpers/prom.js';
import { freePort, waitForPort } from '../helpers/servers.js';

const unavailable = kernelUnavailable() ?? (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)');

/** HTTP/1.1 keep-alive server; /stream sends chunks every 50 ms until the GO file exists, then 30 more every 30 ms. */
const SERVER_PY = `
import http.server, os, sys, time
GO = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *a):
        pass
    def do_GET(self):
        if self.path.startswith('/stream'):
            self.send_response(200)
            self.send_header('Transfer-Encoding', 'chunked')
            self.send_header('Content-Type', 'text/plain')
            self.end_headers()
            i = 0
            def chunk():
                nonlocal i
                b = b'part-%06d' % i
                i += 1
                self.wfile.write(b'%x\\r\\n%s\\r\\n' % (len(b), b))
            while not os.path.exists(GO):
                chunk()
                time.sleep(0.05)
            for _ in range(30):
                chunk()
                time.sleep(0.03)
            self.wfile.write(b'0\\r\\n\\r\\n')
            return
        body = b'ok ' + self.path.encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
`;

/** One keep-alive connection; each stdin line is a path to GET on it; one JSON line per answer. */
const CLIENT_PY = `
import http.client, json, sys
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[1]))
for line in sys.stdin:
    path = line.strip()
    c.request('GET', path)
    r = c.getresponse()
    body = r.read()
    print(json.dumps({'path': path, 'status': r.status, 'len': len(body), 'lport': c.sock.getsockname()[1]}), flush=True)
`;

interface Answer {
  path: string;
  status: number;
  len: number;
  lport: number;
}

class PyClient {
  readonly proc: ChildProcess;
  private readonly answers: Answer[] = [];
  private waiters: (() => void)[] = [];

  constructor(port: number) {
    this.proc = spawn('python3', ['-c', CLIENT_PY, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.proc.stdout! }).on('line', (l) => {
      this.answers.push(JSON.parse(l) as Answer);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  send(path: string): void {
    this.proc.stdin!.write(`${path}\n`);
  }

  /** Wait for the answer to `path` (sent with send()). */
  async answer(path: string, timeoutMs = 15_000): Promise<Answer> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const a = this.answers.find((x) => x.path === path);
      if (a) return a;
      if (Date.now() > end) throw new Error(`no answer for ${path} within ${timeoutMs} ms`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 200);
      });
    }
  }

  async get(path: string): Promise<Answer> {
    this.send(path);
    return this.answer(path);
  }

  stop(): void {
    this.proc.kill('SIGKILL');
  }
}

const SERVER_KIND = 2;
const CLIENT_KIND = 3;

test.serial('keep-alive connections open before the agent: pickup seeds roles; later requests are SERVER and CLIENT spans, even after a response tail', async (t) => {
  if (!need(t, unavailable)) return;
  const dir = mkdtempSync(join(tmpdir(), 'sl-pickup-'));
  const go = join(dir, 'go');
  const port = await freePort();
  const server = spawn('python3', ['-c', SERVER_PY, String(port), go], { stdio: ['ignore', 'ignore', 'inherit'] });
  let collector: RunningCollector | undefined;
  let agent: AgentProcess | undefined;
  const plain = new PyClient(port);
  const streaming = new PyClient(port);
  let spans: CollectorSpan[] = [];
  let health: { pickup: Record<string, number>; connections: Record<string, number>; caches: Record<string, { hits?: number; misses?: number; size?: number }> } | undefined;
  let prom = '';
  const answers: Answer[] = [];
  try {
    await waitForPort(port);
    // before the agent: one request on each connection, and a response left streaming
    answers.push(await plain.get('/plain-before'));
    answers.push(await streaming.get('/warmup'));
    streaming.send('/stream');
    await new Promise((r) => setTimeout(r, 300));
    collector = await startCollector();
    writeFileSync(join(dir, 'c.yaml'), `filter:\n  ports:\n    include: [${port}]\nexport:\n  batch:\n    delayMs: 100\n`);
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, ['--config', join(dir, 'c.yaml')]);
    // the agent sees more of the tail, then the stream ends (30 more chunk writes)
    await new Promise((r) => setTimeout(r, 400));
    writeFileSync(go, '');
    answers.push(await streaming.answer('/stream'));
    answers.push(await plain.get('/plain-after1'));
    answers.push(await streaming.get('/next1'));
    answers.push(await plain.get('/plain-after2'));
    answers.push(await streaming.get('/next2'));
    const ours = (s: CollectorSpan): boolean => s.attributes['server.port'] === port;
    // on a timeout the assertions below say which span is missing
    await collector.waitForSpans((all) => all.filter(ours).length >= 8, 20_000).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 600)); // anything extra would show up by now
    spans = (await collector.spans()).filter(ours);
    health = (await (await fetch(`${agent.healthUrl}/healthz`)).json()) as typeof health;
    prom = await (await fetch(`${agent.healthUrl}/metrics`)).text();
  } finally {
    await agent?.stop();
    await collector?.stop();
    plain.stop();
    streaming.stop();
    server.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }

  // the peers: every answer 200, each client on one connection throughout
  t.true(answers.every((a) => a.status === 200), JSON.stringify(answers));
  const byPath = new Map(answers.map((a) => [a.path, a]));
  t.is(byPath.get('/plain-after2')!.lport, byPath.get('/plain-before')!.lport);
  t.is(byPath.get('/next2')!.lport, byPath.get('/warmup')!.lport);
  t.true(byPath.get('/stream')!.len > 30 * 11, 'the stream went on after the agent started');

  const pathOf = (s: CollectorSpan): string => String(s.attributes['url.path'] ?? new URL(String(s.attributes['url.full'])).pathname);
  const label = (s: CollectorSpan): string => `${s.kind === SERVER_KIND ? 'SERVER' : s.kind === CLIENT_KIND ? 'CLIENT' : s.kind} ${pathOf(s)}`;
  // The plain connection's server thread was already blocked in recv() when the agent
  // attached: receives are described at their exit alone (no entry record needed), so
  // /plain-after1 as the server read it is a SERVER span too.
  const seen = spans.map(label).sort();
  t.deepEqual(seen, [
    'CLIENT /next1',
    'CLIENT /next2',
    'CLIENT /plain-after1',
    'CLIENT /plain-after2',
    'SERVER /next1',
    'SERVER /next2',
    'SERVER /plain-after1',
    'SERVER /plain-after2',
  ]);
  // the owners, learnt from the first syscall on each seeded connection
  for (const s of spans) {
    const want = s.kind === SERVER_KIND ? server.pid : pathOf(s).startsWith('/plain') ? plain.proc.pid : streaming.proc.pid;
    t.is(s.resource['process.pid'], want, `${s.kind} ${pathOf(s)}`);
  }

  // what the pickup found: the listener, two accepted children, two clients, all seeded
  t.like(health!.pickup, { runs: 1, failed: 0, truncated: 0, listeners: 1, seen: 4, seededServer: 2, seededClient: 2, skippedKnown: 0, skippedClosing: 0, skippedRoleUnsure: 0, skippedTableFull: 0 });
  t.is(health!.connections['pickedUp'], 4);
  t.true(health!.connections['pickupTailChunks']! >= 2 * 30, `tail chunks skipped: ${health!.connections['pickupTailChunks']}`);
  t.is(health!.connections['notHttp'], 0);
  // the per-event caches report their use
  const c = health!.caches;
  t.true(c['decode']!.hits! + c['decode']!.misses! > 0 && c['httpIntern']!.hits! + c['httpIntern']!.misses! > 0 && c['httpHeads']!.hits! + c['httpHeads']!.misses! > 0 && c['otlpKeys']!.size! > 0, JSON.stringify(c));
  const m = parsePrometheus(prom);
  const metric = (name: string, labels: Record<string, string> = {}): number | undefined =>
    m.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
  t.is(metric('sidelight_pickup_sockets_total', { outcome: 'seeded_server' }), 2);
  // ... and /metrics exports them: the decode cache served these requests' repeated fields
  t.true((metric('sidelight_cache_lookups_total', { cache: 'decode', outcome: 'hit' }) ?? 0) > 0, 'decode cache hits exported');
  t.true((metric('sidelight_cache_entries', { cache: 'otlp_keys' }) ?? 0) > 0, 'otlp key cache entries exported');
  t.is(metric('sidelight_pickup_sockets_total', { outcome: 'seeded_client' }), 2);
  t.is(metric('sidelight_pickup_sockets_total', { outcome: 'role_unsure' }), 0);
  t.is(metric('sidelight_pickup_listeners_total'), 1);
  t.is(metric('sidelight_pickup_failures_total'), 0);
});
