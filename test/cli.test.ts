/**
 * The CLI as users run it (bin/sidelight): --version, --help, bad config and bad env
 * rejected with a message naming the key (exit 2, nothing attached), and `check`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { repoRoot } from '../src/paths.js';
import { SIDELIGHT_BIN } from './helpers/agentproc.js';
import { kernelUnavailable, need } from './helpers/kernel.js';
import { existsSync } from 'node:fs';

const built = existsSync(`${repoRoot()}/dist/cli.js`) ? undefined : 'dist not built (make setup)';

function run(args: string[], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(SIDELIGHT_BIN, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('--version prints the package version', (t) => {
  if (!need(t, built)) return;
  const r = run(['--version']);
  t.is(r.code, 0);
  t.regex(r.out.trim(), /^\d+\.\d+\.\d+$/);
});

test('--help lists the commands', (t) => {
  if (!need(t, built)) return;
  const r = run(['--help']);
  t.is(r.code, 0);
  t.regex(r.out, /run/);
  t.regex(r.out, /check/);
});

test('an unknown key in the config file: exit 2, the key named', (t) => {
  if (!need(t, built)) return;
  const dir = mkdtempSync(join(tmpdir(), 'sl-cli-'));
  const file = join(dir, 'bad.yaml');
  writeFileSync(file, 'capture:\n  bites: 10\n');
  const r = run(['run', '--config', file]);
  t.is(r.code, 2);
  t.regex(r.err, /capture\.bites/);
});

test('a bad env value: exit 2, the variable named', (t) => {
  if (!need(t, built)) return;
  const r = run(['run'], { OTEL_EXPORTER_OTLP_PROTOCOL: 'carrier-pigeon' });
  t.is(r.code, 2);
  t.regex(r.err, /OTEL_EXPORTER_OTLP_PROTOCOL/);
  t.regex(r.err, /carrier-pigeon/);
});

test('check: every probe attaches here, exit 0', (t) => {
  if (!need(t, built ?? kernelUnavailable())) return;
  const r = run(['check']);
  t.is(r.code, 0, r.out + r.err);
  t.regex(r.out, /ok\s+probe sl_sys_enter\s+attaches/);
  t.regex(r.out, /ok\s+probe sl_sys_exit\s+attaches/);
  t.regex(r.out, /sidelight can run here/);
  const j = run(['check', '--json']);
  const report = JSON.parse(j.out) as { canRun: boolean; items: Array<{ name: string; ok: boolean }> };
  t.true(report.canRun);
});

test('check without capabilities says what is missing, exit 1', (t) => {
  if (!need(t, built ?? (process.geteuid?.() === 0 ? undefined : 'needs root to drop privileges'))) return;
  // setpriv (util-linux): same uid, every capability dropped from the bounding set
  const r = spawnSync('setpriv', ['--bounding-set=-all', '--inh-caps=-all', '--no-new-privs', SIDELIGHT_BIN, 'check'], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  t.is(r.status, 1, r.stdout + r.stderr);
  t.regex(r.stdout, /FAIL\s+privileges\s+need CAP_BPF and CAP_PERFMON/);
});

test('run without capabilities fails before attaching, saying what is missing, exit 1', (t) => {
  if (!need(t, built ?? (process.geteuid?.() === 0 ? undefined : 'needs root to drop privileges'))) return;
  const r = spawnSync('setpriv', ['--bounding-set=-all', '--inh-caps=-all', '--no-new-privs', SIDELIGHT_BIN, 'run'], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, SIDELIGHT_HEALTH_ADDR: '127.0.0.1:0' },
  });
  t.is(r.status, 1, r.stdout + r.stderr);
  t.regex(r.stderr, /cannot start: load: .*Operation not permitted/);
  t.regex(r.stderr, /permission denied: run as root, or grant CAP_BPF, CAP_PERFMON/);
});
