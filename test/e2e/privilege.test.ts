/**
 * Least privilege, on the real kernel: the agent (dist/cli.js, what bin/sidelight runs) started
 * through util-linux `setpriv` as `nobody` (and as uid 0 the way the DaemonSet runs it) with
 * exactly the documented capability set (check.ts CAPABILITY_NEEDS) in its inheritable, ambient
 * and bounding sets: it attaches, a root-owned python server and curl produce spans that reach a
 * real OpenTelemetry Collector with full process metadata. Then each capability is taken away in
 * turn: `sidelight check` names it (FAIL for the two needed to attach, warn for the two /proc
 * ones), `run` refuses without a required one, and without an optional one the metadata it
 * stands for is really lost — so the set is minimal as well as sufficient. Last, the DaemonSet
 * and the chart grant that set and nothing else, not `privileged`.
 *
 * Why not bin/sidelight itself: it runs .tools/node, a link into /root (mode 0700) that `nobody`
 * cannot traverse; the test runs a copy of the same node binary from a world-readable temp dir.
 */
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import test from 'ava';
import { parse, parseAllDocuments } from 'yaml';
import { CAPABILITY_NEEDS, CAPS } from '../../src/check.js';
import { repoRoot } from '../../src/paths.js';
import { collectorBinary, startCollector, type CollectorSpan, type RunningCollector } from '../helpers/collector.js';
import { kernelUnavailable, need } from '../helpers/kernel.js';
import { curl, freePort, startPythonServer, type RunningServer } from '../helpers/servers.js';

const ROOT = repoRoot();
const CLI = join(ROOT, 'dist', 'cli.js');
const NOBODY = 65534;
const DOCUMENTED = CAPABILITY_NEEDS.map((c) => c.cap);

/*
 * `nobody` must be able to reach the checkout: a clone in a 0700 directory (mktemp -d, a CI
 * workspace) is not traversable by other users. For the length of this file, the directories
 * above the checkout that lack search permission for others get it (o+x only: nothing becomes
 * listable or readable), and get their modes back afterwards.
 */
const opened: Array<[string, number]> = [];
test.before(() => {
  for (let dir = ROOT; ; dir = dirname(dir)) {
    const mode = statSync(dir).mode & 0o7777;
    if ((mode & 0o001) === 0) {
      chmodSync(dir, mode | 0o001);
      opened.push([dir, mode]);
    }
    if (dirname(dir) === dir) break;
  }
});
test.after.always(() => {
  for (const [dir, mode] of opened.reverse()) chmodSync(dir, mode);
});

function hasSetpriv(): boolean {
  return spawnSync('setpriv', ['--version']).status === 0;
}

const unavailable =
  kernelUnavailable() ??
  (collectorBinary() ? undefined : 'collector not built (bash scripts/collector.sh)') ??
  (hasSetpriv() ? undefined : 'setpriv (util-linux) not installed') ??
  (existsSync(CLI) ? undefined : 'dist/cli.js not built (make setup)');

/** The node binary, copied where any user can execute it (cached by size and mtime). */
function worldNode(): string {
  const src = process.execPath;
  const st = statSync(src);
  const dir = join(tmpdir(), `sidelight-node-${process.version}-${st.size}-${Math.floor(st.mtimeMs)}`);
  const dst = join(dir, 'node');
  if (!existsSync(dst)) {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    const tmp = `${dst}.${process.pid}`;
    copyFileSync(src, tmp);
    chmodSync(tmp, 0o755);
    spawnSync('mv', [tmp, dst]);
  }
  chmodSync(dir, 0o755);
  return dst;
}

/** setpriv arguments giving exactly `caps` (names like CAP_BPF) to a process running as `uid`. */
function setprivArgs(uid: number, caps: readonly string[]): string[] {
  const list = ['-all', ...caps.map((c) => `+${c.slice(4).toLowerCase()}`)].join(',');
  const who = uid === 0 ? [] : [`--reuid=${uid}`, `--regid=${uid}`, '--init-groups'];
  return [...who, `--inh-caps=${list}`, `--ambient-caps=${list}`, `--bounding-set=${list}`];
}

function mask(caps: readonly string[]): bigint {
  return caps.reduce((m, c) => m | (1n << BigInt(CAPS[c as keyof typeof CAPS])), 0n);
}

function runCheck(uid: number, caps: readonly string[]): { code: number | null; out: string } {
  const r = spawnSync('setpriv', [...setprivArgs(uid, caps), worldNode(), CLI, 'check'], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, out: r.stdout + r.stderr };
}

interface PrivAgent {
  pid: number;
  output(): string;
  stop(): Promise<number | null>;
}

/** `sidelight run` under setpriv, exporting to the collector, tracing only `port`; waits for /readyz. */
async function startPrivAgent(uid: number, caps: readonly string[], collector: RunningCollector, port: number): Promise<PrivAgent> {
  const hport = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'sl-priv-'));
  chmodSync(dir, 0o755);
  const cfg = join(dir, 'c.yaml');
  writeFileSync(cfg, `filter:\n  ports:\n    include: [${port}]\n`);
  chmodSync(cfg, 0o644);
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OTEL_')));
  const p = spawn('setpriv', [...setprivArgs(uid, caps), worldNode(), '--enable-source-maps', CLI, 'run', '--config', cfg], {
    env: { ...clean, HOME: dir, SIDELIGHT_HEALTH_ADDR: `127.0.0.1:${hport}`, OTEL_EXPORTER_OTLP_ENDPOINT: collector.grpcEndpoint },
    cwd: dir,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  p.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  const end = Date.now() + 30_000;
  for (;;) {
    if (p.exitCode !== null) throw new Error(`agent exited with ${p.exitCode} before ready:\n${out}`);
    const ok = await fetch(`http://127.0.0.1:${hport}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (Date.now() > end) {
      p.kill('SIGKILL');
      throw new Error(`agent not ready after 30 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    pid: p.pid ?? 0,
    output: () => out,
    stop: async () => {
      if (p.exitCode === null) p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** Uid line and capability sets of a running process, from /proc/<pid>/status. */
function procCreds(pid: number): { uids: number[]; eff: bigint; prm: bigint; bnd: bigint; amb: bigint } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hex = (k: string): bigint => BigInt(`0x${new RegExp(`^${k}:\\s*([0-9a-f]+)$`, 'm').exec(s)![1]}`);
  const uids = /^Uid:\s*(.*)$/m.exec(s)![1]!.trim().split(/\s+/).map(Number);
  return { uids, eff: hex('CapEff'), prm: hex('CapPrm'), bnd: hex('CapBnd'), amb: hex('CapAmb') };
}

/**
 * A python http.server run as root whose OTEL_SERVICE_NAME sits after a 2 KiB variable, beyond the
 * environment prefix the kernel record carries: only /proc/<pid>/environ can tell its name.
 */
function rootPython(name: string): Promise<RunningServer> {
  return startPythonServer({ SL_PAD: 'x'.repeat(2048), OTEL_SERVICE_NAME: name });
}

/** One GET through the agent; the SERVER span the collector received for it. */
async function serverSpan(collector: RunningCollector, srv: RunningServer, path: string): Promise<CollectorSpan> {
  await curl([`http://127.0.0.1:${srv.port}${path}`]);
  const mine = (s: CollectorSpan): boolean => s.kind === 2 && s.attributes['url.path'] === path && s.attributes['network.local.port'] === srv.port;
  const spans = await collector.waitForSpans((all) => all.some(mine), 20_000);
  return spans.find(mine)!;
}

for (const uid of [NOBODY, 0]) {
  const who = uid === 0 ? 'uid 0 (as the DaemonSet runs it)' : 'nobody';
  test.serial(`as ${who} with exactly ${DOCUMENTED.join(', ')}: attaches, exports, reads every process's metadata`, async (t) => {
    if (!need(t, unavailable)) return;
    const collector = await startCollector();
    const srv = await rootPython(`priv-py-${uid}`);
    let agent: PrivAgent | undefined;
    try {
      agent = await startPrivAgent(uid, DOCUMENTED, collector, srv.port);
      const creds = procCreds(agent.pid);
      t.deepEqual(creds.uids, [uid, uid, uid, uid], 'real, effective, saved and fs uid');
      t.is(creds.eff.toString(16), mask(DOCUMENTED).toString(16), 'CapEff is exactly the documented set');
      t.is(creds.prm.toString(16), mask(DOCUMENTED).toString(16), 'CapPrm is exactly the documented set');
      t.is(creds.bnd.toString(16), mask(DOCUMENTED).toString(16), 'CapBnd is exactly the documented set');

      const span = await serverSpan(collector, srv, `/priv-${uid}`);
      t.is(span.attributes['http.response.status_code'], 404);
      t.is(span.resource['process.pid'], srv.pid);
      t.is(span.resource['service.name'], `priv-py-${uid}`, 'OTEL_SERVICE_NAME read from /proc/<pid>/environ of a root process');
      t.regex(String(span.resource['process.executable.path']), /python/, 'executable path read from /proc/<pid>/exe');

      const check = runCheck(uid, DOCUMENTED);
      for (const cap of DOCUMENTED) t.regex(check.out, new RegExp(`ok\\s+cap ${cap}\\s+.*granted`), check.out);
      t.regex(check.out, /ok\s+privileges\s/);
      t.regex(check.out, /ok\s+probe sl_sys_enter\s+attaches/);
      t.regex(check.out, /ok\s+probe sl_sys_exit\s+attaches/);
      const code = await agent.stop();
      agent = undefined;
      t.is(code, 0, 'SIGTERM as an unprivileged user: flush, detach, exit 0');
    } finally {
      const out = agent?.output();
      await agent?.stop();
      await srv.stop();
      await collector.stop();
      if (out !== undefined) t.log(out.slice(-2000));
    }
  });
}

for (const need_ of CAPABILITY_NEEDS.filter((c) => c.required)) {
  test.serial(`without ${need_.cap}: check FAILs naming it, run refuses to start`, async (t) => {
    if (!need(t, unavailable)) return;
    const caps = DOCUMENTED.filter((c) => c !== need_.cap);
    const check = runCheck(NOBODY, caps);
    t.is(check.code, 1, check.out);
    t.regex(check.out, new RegExp(`FAIL\\s+cap ${need_.cap}\\s+MISSING ${need_.cap} \\(uid ${NOBODY}`));
    t.regex(check.out, new RegExp(`FAIL\\s+privileges\\s+need CAP_BPF and CAP_PERFMON.*missing ${need_.cap};`));
    t.regex(check.out, new RegExp(`permission denied: grant ${need_.cap} `));
    for (const other of caps) t.regex(check.out, new RegExp(`ok\\s+cap ${other}\\s`));

    const dir = mkdtempSync(join(tmpdir(), 'sl-priv-'));
    const r = spawnSync('setpriv', [...setprivArgs(NOBODY, caps), worldNode(), CLI, 'run'], {
      encoding: 'utf8',
      timeout: 60_000,
      cwd: dir,
      env: { ...process.env, SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0' },
    });
    t.is(r.status, 1, r.stdout + r.stderr);
    t.regex(r.stderr, /cannot start: load: .*Operation not permitted/);
  });
}

for (const need_ of CAPABILITY_NEEDS.filter((c) => !c.required)) {
  test.serial(`without ${need_.cap}: check warns naming it, the agent runs and loses exactly that metadata`, async (t) => {
    if (!need(t, unavailable)) return;
    const caps = DOCUMENTED.filter((c) => c !== need_.cap);
    const check = runCheck(NOBODY, caps);
    t.regex(check.out, new RegExp(`warn\\s+cap ${need_.cap}\\s+MISSING ${need_.cap} \\(uid ${NOBODY}.*grant ${need_.cap} to`));
    t.regex(check.out, new RegExp(`ok\\s+privileges\\s+uid ${NOBODY}.*missing ${need_.cap} `));
    t.regex(check.out, /ok\s+probe sl_sys_enter\s+attaches/);

    const collector = await startCollector();
    const srv = await rootPython('priv-py-partial');
    let agent: PrivAgent | undefined;
    try {
      agent = await startPrivAgent(NOBODY, caps, collector, srv.port);
      const span = await serverSpan(collector, srv, `/without-${need_.cap}`);
      t.is(span.resource['process.pid'], srv.pid, 'spans still flow');
      // the service name sits past the kernel's environment prefix: only /proc/<pid>/environ has it,
      // which needs both the ptrace check (CAP_SYS_PTRACE) and DAC read access (CAP_DAC_READ_SEARCH)
      t.not(span.resource['service.name'], 'priv-py-partial', `without ${need_.cap} environ of a root process is unreadable`);
      t.regex(String(span.resource['service.name']), /^python3/, 'falls back to the executable name');
      if (need_.cap === 'CAP_SYS_PTRACE') {
        t.false('process.executable.path' in span.resource, 'without CAP_SYS_PTRACE /proc/<pid>/exe is unreadable');
      } else {
        t.regex(String(span.resource['process.executable.path']), /python/, 'CAP_SYS_PTRACE alone still reads /proc/<pid>/exe');
      }
    } finally {
      await agent?.stop();
      await srv.stop();
      await collector.stop();
    }
  });
}

test('the DaemonSet and the Helm chart grant exactly the documented capabilities, not privileged', (t) => {
  const expected = DOCUMENTED.map((c) => c.slice(4)).sort();
  const manifests = parseAllDocuments(readFileSync(join(ROOT, 'deploy/kubernetes/sidelight.yaml'), 'utf8')).map((d) => d.toJSON() as Record<string, unknown>);
  const ds = manifests.find((m) => m?.kind === 'DaemonSet') as { spec: { template: { spec: { containers: Array<{ securityContext: Record<string, unknown> }> } } } } | undefined;
  t.truthy(ds, 'a DaemonSet in deploy/kubernetes/sidelight.yaml');
  const values = parse(readFileSync(join(ROOT, 'deploy/chart/sidelight/values.yaml'), 'utf8')) as { securityContext: Record<string, unknown> };
  for (const [where, sc] of [
    ['deploy/kubernetes/sidelight.yaml', ds!.spec.template.spec.containers[0]!.securityContext],
    ['deploy/chart/sidelight/values.yaml', values.securityContext],
  ] as const) {
    const caps = sc.capabilities as { add: string[]; drop: string[] };
    t.deepEqual([...caps.add].sort(), expected, `${where}: capabilities.add`);
    t.deepEqual(caps.drop, ['ALL'], `${where}: capabilities.drop`);
    t.not(sc.privileged, true, `${where}: not privileged`);
    t.is(sc.allowPrivilegeEscalation, false, `${where}: no privilege escalation`);
  }
  t.regex(readFileSync(join(ROOT, 'deploy/chart/sidelight/templates/daemonset.yaml'), 'utf8'), /toYaml \.Values\.securityContext/);
});
