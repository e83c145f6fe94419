/**
 * TLS plaintext end to end: `bin/sidelight run` exporting to a real OpenTelemetry Collector,
 * uprobes on OpenSSL's SSL_read/SSL_write in libssl.so.3 (nginx, python3, curl) and in the
 * node executable (static OpenSSL), real peers on loopback with a self-signed certificate.
 * Asserts the exact spans and duration metrics the Collector wrote: method, path, status,
 * url.scheme https, HTTP/1.1 and h2, the right process, and no span made of ciphertext.
 *
 * nginx starts before the agent (found in /proc); the python and Node servers start after it
 * (the system libssl and the agent's own node executable are probed at start); one more
 * python server, started after the agent, loads a private copy of libssl.so.3
 * (LD_LIBRARY_PATH): only the agent's rescan of new processes can find that one.
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { collectorBinary, startCollector, type CollectorHistogramPoint, type CollectorSpan, type RunningCollector } from '../helpers/collector.js';
import { startAgentProcess, type AgentProcess } from '../helpers/agentproc.js';
import { loadNative, wrapNative } from '../../src/native.js';
import { bpfObjectPath } from '../../src/paths.js';
import { BPF_NAMES, encodeConfig, TLS_PROGRAM_NAMES, TLS_PROGRAMS } from '../../src/receiver/layout.js';
import { TlsAttacher } from '../../src/receiver/tls.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, freePort, type RunningServer } from '../helpers/servers.js';
import { makeCert, nodeHttpsGet, pythonGet, startTlsNginx, startTlsNode, startTlsPython, type Cert } from '../helpers/tlsservers.js';

const LIBSSL = ['/usr/lib/x86_64-linux-gnu/libssl.so.3', '/lib/x86_64-linux-gnu/libssl.so.3', '/usr/lib64/libssl.so.3'].find((p) => existsSync(p));
const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => existsSync(p));
const unavailable =
  kernelUnavailable() ??
  (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)') ??
  (LIBSSL ? undefined : 'no libssl.so.3 on this system') ??
  (NGINX ? undefined : 'nginx not installed');

const SERVER = 2; // SPAN_KIND_SERVER
const CLIENT = 3; // SPAN_KIND_CLIENT

interface Tls {
  binaries: number;
  probes: number;
  attachFailed: number;
}

async function tlsStats(agent: AgentProcess): Promise<Tls & { connections: Record<string, number>; kernel: Record<string, number> }> {
  const body = (await (await fetch(`${agent.healthUrl}/healthz`)).json()) as { tls: Tls; connections: Record<string, number>; kernel: Record<string, number> };
  return { ...body.tls, connections: body.connections, kernel: body.kernel };
}

/** [kind, name, path or url.full, status, scheme, protocol version, service.name] of one span */
function row(s: CollectorSpan): unknown[] {
  return [
    s.kind === SERVER ? 'server' : 'client',
    s.name,
    s.kind === SERVER ? s.attributes['url.path'] : s.attributes['url.full'],
    s.attributes['http.response.status_code'],
    s.attributes['url.scheme'],
    s.attributes['network.protocol.version'],
    s.resource['service.name'],
  ];
}

const byStart = (a: CollectorSpan, b: CollectorSpan): number => (BigInt(a.startTimeUnixNano) < BigInt(b.startTimeUnixNano) ? -1 : 1);

test.serial('TLS plaintext from nginx (h1, h2), python3, Node https, curl, urllib: exact spans and metrics in the Collector', async (t) => {
  if (!need(t, unavailable)) return;
  const ports = { nginx: await freePort(), py: await freePort(), node: await freePort(), late: await freePort() };
  const dir = mkdtempSync(join(tmpdir(), 'sl-tls-e2e-'));
  const cfg = join(dir, 'sidelight.yaml');
  writeFileSync(cfg, `filter:\n  ports:\n    include: [${Object.values(ports).join(', ')}]\ntls:\n  rescanMs: 200\n`);
  const privateLib = join(dir, 'lib');
  mkdirSync(privateLib);
  copyFileSync(LIBSSL!, join(privateLib, 'libssl.so.3'));

  let cert: Cert | undefined;
  let collector: RunningCollector | undefined;
  let agent: AgentProcess | undefined;
  const servers: RunningServer[] = [];
  let spans: CollectorSpan[] = [];
  let metrics: CollectorHistogramPoint[] = [];
  let before: Tls | undefined;
  let after: Awaited<ReturnType<typeof tlsStats>> | undefined;
  let code: number | null = null;
  const out: Record<string, unknown> = {};
  try {
    cert = await makeCert();
    const nginx = await startTlsNginx(ports.nginx, cert); // before the agent
    servers.push(nginx);
    collector = await startCollector();
    agent = await startAgentProcess(
      { OTEL_EXPORTER_OTLP_ENDPOINT: collector.httpEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf', OTEL_METRIC_EXPORT_INTERVAL: '500' },
      ['--config', cfg],
    );
    before = await tlsStats(agent);
    // after the agent: the system libssl and node were probed at start
    const py = await startTlsPython(ports.py, cert, { OTEL_SERVICE_NAME: 'py-tls' });
    servers.push(py);
    const node = await startTlsNode(ports.node, cert, { OTEL_SERVICE_NAME: 'node-tls' });
    servers.push(node);
    // after the agent, with its own copy of libssl: found by the rescan of new processes
    const late = await startTlsPython(ports.late, cert, { OTEL_SERVICE_NAME: 'py-late', LD_LIBRARY_PATH: privateLib });
    servers.push(late);
    const end = Date.now() + 10_000;
    while ((await tlsStats(agent)).binaries <= before.binaries && Date.now() < end) await new Promise((r) => setTimeout(r, 100));

    const n = `https://127.0.0.1:${ports.nginx}`;
    out.h1 = await curl(['-k', '--http1.1', `${n}/`, `${n}/api/users`]);
    out.h2 = await curl(['-k', '--http2', '-o', '/dev/null', '-w', '%{http_version} %{http_code}', `${n}/missing`]);
    out.py = await pythonGet([`https://127.0.0.1:${ports.py}/hello`, `https://127.0.0.1:${ports.py}/nope`], { OTEL_SERVICE_NAME: 'py-client' });
    out.nodeClient = await nodeHttpsGet([`https://127.0.0.1:${ports.py}/hello/node`, `https://127.0.0.1:${ports.py}/hello/again`], { OTEL_SERVICE_NAME: 'node-client' });
    out.node = await curl(['-k', `https://127.0.0.1:${ports.node}/hello`, `https://127.0.0.1:${ports.node}/x`]);
    out.late = await curl(['-k', `https://127.0.0.1:${ports.late}/hello`]);

    const ours = (s: CollectorSpan): boolean => Object.values(ports).includes(Number(s.attributes['server.port'])) && (s.kind === SERVER || s.kind === CLIENT);
    await collector.waitForSpans((all) => all.filter(ours).length >= 20, 20_000).catch(() => []);
    // anything made of ciphertext would come with or after the real spans: give it time
    await new Promise((r) => setTimeout(r, 1500));
    spans = (await collector.spans()).filter(ours).sort(byStart);
    metrics = await collector
      .waitForMetrics((m) => new Set(m.filter((p) => p.name === 'http.server.request.duration' && p.attributes['url.scheme'] === 'https').map((p) => JSON.stringify([p.resource['service.name'], p.attributes]))).size >= 10, 10_000)
      .catch(() => collector!.metrics());
    after = await tlsStats(agent);
  } finally {
    code = (await agent?.stop()) ?? null;
    for (const s of servers) await s.stop();
    await collector?.stop();
    cert?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }

  // the peers themselves worked
  t.is(out.h1, 'nginx tls ok\napi\n');
  t.is(out.h2, '2 404');
  t.deepEqual(out.py, [200, 404]);
  t.deepEqual(out.nodeClient, [200, 200]);
  t.is(out.node, 'hello from node tls\nno\n');
  t.is(out.late, 'hello from python tls\n');

  const on = (port: number, kind: number): unknown[][] => spans.filter((s) => s.kind === kind && s.attributes['server.port'] === port).map(row);
  const nginx = `https://127.0.0.1:${ports.nginx}`;
  t.deepEqual(on(ports.nginx, SERVER), [
    ['server', 'GET', '/', 200, 'https', '1.1', 'nginx'],
    ['server', 'GET', '/api/users', 200, 'https', '1.1', 'nginx'],
    ['server', 'GET', '/missing', 404, 'https', '2', 'nginx'],
  ]);
  t.deepEqual(on(ports.nginx, CLIENT), [
    ['client', 'GET', `${nginx}/`, 200, undefined, '1.1', 'curl'],
    ['client', 'GET', `${nginx}/api/users`, 200, undefined, '1.1', 'curl'],
    ['client', 'GET', `${nginx}/missing`, 404, undefined, '2', 'curl'],
  ]);
  t.deepEqual(on(ports.py, SERVER), [
    ['server', 'GET', '/hello', 200, 'https', '1.1', 'py-tls'],
    ['server', 'GET', '/nope', 404, 'https', '1.1', 'py-tls'],
    ['server', 'GET', '/hello/node', 200, 'https', '1.1', 'py-tls'],
    ['server', 'GET', '/hello/again', 200, 'https', '1.1', 'py-tls'],
  ]);
  t.deepEqual(on(ports.py, CLIENT), [
    ['client', 'GET', `https://127.0.0.1:${ports.py}/hello`, 200, undefined, '1.1', 'py-client'],
    ['client', 'GET', `https://127.0.0.1:${ports.py}/nope`, 404, undefined, '1.1', 'py-client'],
    // Node's TLS uses memory BIOs: its socket is learnt from the read before SSL_read
    ['client', 'GET', `https://127.0.0.1:${ports.py}/hello/node`, 200, undefined, '1.1', 'node-client'],
    ['client', 'GET', `https://127.0.0.1:${ports.py}/hello/again`, 200, undefined, '1.1', 'node-client'],
  ]);
  t.deepEqual(on(ports.node, SERVER), [
    ['server', 'GET', '/hello', 200, 'https', '1.1', 'node-tls'],
    ['server', 'GET', '/x', 404, 'https', '1.1', 'node-tls'],
  ]);
  t.deepEqual(on(ports.node, CLIENT), [
    ['client', 'GET', `https://127.0.0.1:${ports.node}/hello`, 200, undefined, '1.1', 'curl'],
    ['client', 'GET', `https://127.0.0.1:${ports.node}/x`, 404, undefined, '1.1', 'curl'],
  ]);
  t.deepEqual(on(ports.late, SERVER), [['server', 'GET', '/hello', 200, 'https', '1.1', 'py-late']]);
  t.deepEqual(on(ports.late, CLIENT), [['client', 'GET', `https://127.0.0.1:${ports.late}/hello`, 200, undefined, '1.1', 'curl']]);
  // no junk: exactly these 20 spans on our ports, none from ciphertext
  t.is(spans.length, 20, spans.map((s) => JSON.stringify(row(s))).join('\n'));
  // the Node server span is the Node server's process (not the agent's, which runs the same node)
  const nodeServer = spans.find((s) => s.kind === SERVER && s.attributes['server.port'] === ports.node)!;
  t.is(nodeServer.resource['process.pid'], servers[2]!.pid);

  // the agent saw the handshakes as ciphertext, parsed only plaintext, probed the private libssl
  t.true(after!.binaries >= before!.binaries + 1, `binaries ${before!.binaries} → ${after!.binaries}`);
  t.is(after!.attachFailed, 0);
  // 7 client connections (curl h1 keeps one for two URLs; h2; two urllib; one keep-alive Node
  // client; curl to node; curl to the late server), each seen from both ends
  t.is(after!.connections.tlsConnections, 14, JSON.stringify(after!.connections));
  t.true(after!.connections.tlsCiphertextConnections! >= 14);
  t.is((after!.connections.http as unknown as Record<string, number>).parseErrors, 0);
  t.is(after!.kernel.tls_no_socket, 0);
  t.true(after!.kernel.tls_ciphertext_skipped! > 0);

  // duration metrics: one series per server workload, route, status and version, url.scheme
  // https; the Collector holds cumulative points, the largest count is the total
  const serverPoints = metrics.filter((p) => p.name === 'http.server.request.duration' && p.attributes['url.scheme'] === 'https');
  const counts = new Map<string, number>();
  for (const p of serverPoints) {
    const a = p.attributes;
    const k = `${String(p.resource['service.name'])} ${String(a['http.request.method'])} ${String(a['http.route'])} ${String(a['http.response.status_code'])} ${String(a['network.protocol.version'])}`;
    counts.set(k, Math.max(counts.get(k) ?? 0, p.count));
  }
  t.deepEqual(
    [...counts].map(([k, c]) => `${k} x${c}`).sort(),
    [
      'nginx GET / 200 1.1 x1',
      'nginx GET /api/users 200 1.1 x1',
      'nginx GET /missing 404 2 x1',
      'node-tls GET /hello 200 1.1 x1',
      'node-tls GET /x 404 1.1 x1',
      'py-late GET /hello 200 1.1 x1',
      'py-tls GET /hello 200 1.1 x1',
      'py-tls GET /hello/again 200 1.1 x1',
      'py-tls GET /hello/node 200 1.1 x1',
      'py-tls GET /nope 404 1.1 x1',
    ],
  );
  const ourServices = ['nginx', 'py-tls', 'node-tls', 'py-late'];
  t.false(metrics.some((p) => p.name === 'http.server.request.duration' && p.attributes['url.scheme'] !== 'https' && ourServices.includes(String(p.resource['service.name']))));
  t.is(code, 0, 'agent exits 0 on SIGTERM');
});

test.serial('tls.enabled: false: TLS connections are recognised by their bytes and never become spans', async (t) => {
  if (!need(t, unavailable)) return;
  const ports = { nginx: await freePort(), py: await freePort() };
  const dir = mkdtempSync(join(tmpdir(), 'sl-tls-off-'));
  const cfg = join(dir, 'sidelight.yaml');
  writeFileSync(cfg, `filter:\n  ports:\n    include: [${Object.values(ports).join(', ')}]\ntls:\n  enabled: false\n`);
  let cert: Cert | undefined;
  let collector: RunningCollector | undefined;
  let agent: AgentProcess | undefined;
  const servers: RunningServer[] = [];
  let spans: CollectorSpan[] = [];
  let health: { tls: unknown; connections: Record<string, number> } | undefined;
  const out: Record<string, unknown> = {};
  try {
    cert = await makeCert();
    collector = await startCollector();
    agent = await startAgentProcess({ OTEL_EXPORTER_OTLP_ENDPOINT: collector.httpEndpoint, OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, ['--config', cfg]);
    servers.push(await startTlsNginx(ports.nginx, cert));
    servers.push(await startTlsPython(ports.py, cert));
    const n = `https://127.0.0.1:${ports.nginx}`;
    out.h1 = await curl(['-k', '--http1.1', `${n}/`, `${n}/api/users`]);
    out.h2 = await curl(['-k', '--http2', '-o', '/dev/null', '-w', '%{http_code}', `${n}/missing`]);
    out.py = await pythonGet([`https://127.0.0.1:${ports.py}/hello`]);
    // a plain-HTTP request to the TLS port: nginx answers 400, in cleartext: a real span
    out.plain = await curl(['-o', '/dev/null', '-w', '%{http_code}', `http://127.0.0.1:${ports.nginx}/plain`]);
    const ours = (s: CollectorSpan): boolean => Object.values(ports).includes(Number(s.attributes['server.port']));
    await collector.waitForSpans((all) => all.filter(ours).length >= 2, 15_000).catch(() => []);
    await new Promise((r) => setTimeout(r, 1500));
    spans = (await collector.spans()).filter(ours);
    health = (await (await fetch(`${agent.healthUrl}/healthz`)).json()) as typeof health;
  } finally {
    await agent?.stop();
    for (const s of servers) await s.stop();
    await collector?.stop();
    cert?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  }
  t.is(out.h1, 'nginx tls ok\napi\n');
  t.is(out.h2, '404');
  t.deepEqual(out.py, [200]);
  t.is(out.plain, '400');
  // only the cleartext exchange made spans; the 3 TLS connections (6 ends) made none
  // (the span name is left out: a 400 from nginx is the HTTP layer's business, not TLS's)
  t.deepEqual(spans.map((x) => row(x).filter((_, i) => i !== 1)).sort(), [
    ['client', `http://127.0.0.1:${ports.nginx}/plain`, 400, undefined, '1.1', 'curl'],
    ['server', '/plain', 400, 'http', '1.1', 'nginx'],
  ]);
  t.is(health!.tls, null);
  t.is(health!.connections.tlsConnections, 0);
  t.true(health!.connections.tlsCiphertextConnections! >= 6, JSON.stringify(health!.connections));
  t.true(health!.connections.tlsCiphertextChunks! > 0);
  t.is((health!.connections.http as unknown as Record<string, number>).parseErrors, 0);
});

test.serial('attachUprobe/detachUprobe on the real object: a handle per probe, clear errors, nothing left behind', (t) => {
  if (!need(t, kernelUnavailable() ?? (LIBSSL ? undefined : 'no libssl.so.3 on this system'))) return;
  const obj = wrapNative(() =>
    loadNative().open(bpfObjectPath(BPF_NAMES.object), encodeConfig({ selfTgid: process.pid, captureBytes: 512, wakeupBytes: 65536, pidMode: 0, cgroupMode: 0, portMode: 0 }), {}),
  );
  try {
    const h1 = obj.attachUprobe(TLS_PROGRAMS.write, LIBSSL!, 'SSL_write', false);
    const h2 = obj.attachUprobe(TLS_PROGRAMS.ret, LIBSSL!, 'SSL_write', true);
    t.true(h1 > 0 && h2 > h1);
    const missing = t.throws(() => wrapNative(() => obj.attachUprobe(TLS_PROGRAMS.read, LIBSSL!, 'No_such_function', false)));
    t.like(missing, { step: 'attach_uprobe' });
    t.regex(missing.message, /No_such_function/);
    const noFile = t.throws(() => wrapNative(() => obj.attachUprobe(TLS_PROGRAMS.read, '/no/such/libssl.so.3', 'SSL_read', false)));
    t.like(noFile, { step: 'attach_uprobe' });
    const noProg = t.throws(() => wrapNative(() => obj.attachUprobe('no_such_prog', LIBSSL!, 'SSL_read', false)));
    t.like(noProg, { step: 'attach_uprobe', code: 'ENOENT' });
    t.throws(() => obj.attachUprobe(TLS_PROGRAMS.read, LIBSSL!, 'SSL_read', 'yes' as unknown as boolean), { instanceOf: TypeError });
    t.true(obj.detachUprobe(h1));
    t.false(obj.detachUprobe(h1), 'a handle is detached once');
    t.false(obj.detachUprobe(12345));
    // the TLS programs are never attached by SEC(): attach() skips them when asked to
    t.deepEqual(obj.attach(TLS_PROGRAM_NAMES).map((r) => r.name).filter((n) => TLS_PROGRAM_NAMES.includes(n)), []);
  } finally {
    obj.close(); // destroys h2's link too
  }
  t.throws(() => obj.attachUprobe(TLS_PROGRAMS.read, LIBSSL!, 'SSL_read', false), { message: /closed/ });
});

test.serial('TlsAttacher on the real object: probes each OpenSSL file once (by inode), bounded and counted', (t) => {
  if (!need(t, kernelUnavailable() ?? (LIBSSL ? undefined : 'no libssl.so.3 on this system'))) return;
  const obj = wrapNative(() =>
    loadNative().open(bpfObjectPath(BPF_NAMES.object), encodeConfig({ selfTgid: process.pid, captureBytes: 512, wakeupBytes: 65536, pidMode: 0, cgroupMode: 0, portMode: 0 }), {}),
  );
  const warnings: string[] = [];
  const attached: string[] = [];
  const uprobes = {
    attachUprobe: (prog: string, path: string, fn: string, ret: boolean): number => {
      attached.push(`${prog} ${fn}${ret ? ' ret' : ''}`);
      return obj.attachUprobe(prog, path, fn, ret);
    },
    detachUprobe: (h: number): boolean => obj.detachUprobe(h),
  };
  try {
    // one file allowed: the system libssl (probed first, by path); this process's node is over the limit
    const one = new TlsAttacher(uprobes, { maxBinaries: 1, rescanMs: 0, paths: [], warn: (m) => warnings.push(m) });
    one.start();
    t.like(one.stats, { binaries: 1, probes: 9, attachFailed: 0 });
    t.true(one.stats.binariesOverLimit >= 1, 'node (this process) is an OpenSSL user over the limit');
    t.deepEqual(attached.slice().sort(), [
      'sl_ssl_free SSL_free',
      'sl_ssl_read SSL_read',
      'sl_ssl_read_ex SSL_read_ex',
      'sl_ssl_ret SSL_read ret',
      'sl_ssl_ret SSL_read_ex ret',
      'sl_ssl_ret SSL_write ret',
      'sl_ssl_ret SSL_write_ex ret',
      'sl_ssl_write SSL_write',
      'sl_ssl_write_ex SSL_write_ex',
    ]);
    // seen again through a process's maps (another path to the same inode): not probed twice
    one.scanPid(process.pid);
    one.scanAll();
    t.is(one.stats.binaries, 1);
    one.stop();

    // room for more: the node executable of this process (static OpenSSL) is probed as well
    attached.length = 0;
    const more = new TlsAttacher(uprobes, { maxBinaries: 64, rescanMs: 0, paths: ['/etc/hostname', '/no/such/lib.so'], warn: (m) => warnings.push(m) });
    more.start();
    t.true(more.stats.binaries >= 2, JSON.stringify(more.stats));
    t.is(more.stats.attachFailed, 0);
    t.is(more.stats.probes, more.stats.binaries * 9);
    more.stop();
    t.deepEqual(warnings, []);
  } finally {
    obj.close();
  }
});
